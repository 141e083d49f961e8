"""A seeded chaos run: the guarantees checked on random histories, not only on chosen cases.

    python -m bench.chaos --seed 1 --seeds 20 --minutes 3

For each seed (S, S+1, ... S+N-1), on a test server of its own behind a fault proxy:

- a workload (from the seed) creates orders and moves them through the statuses, delivers
  them live and late (stamps hours in the past), corrects delivered ones (address, items),
  sends some back out and delivers them again, cancels and deletes undelivered ones, inserts
  invalid delivered ones, edits clients and deletes couriers, at --rate operations a second;
- the processes: two `watch --token-store mongo` under one name (leader and standby), a
  cron-like loop of `batch --run` (some --full, some --purge-source), `verify --repair` now
  and then, all through the proxy, as the command line a user runs;
- faults at random times (from the seed): kill -9 and SIGTERM of any process (restarted),
  a watcher paused (SIGSTOP) past its lease, the server stopped and restarted, every
  connection cut, new ones refused, the server hanging (accepting, answering nothing);
- then a quiet end: faults off, the workload stopped, `batch --run --full`, the watchers
  settled and stopped, and the oracle: the archive holds exactly the valid orders ever
  delivered, each in its last delivered version (the fingerprint of the order as the source
  held it); no numero twice; no source order gone that the workload did not delete unless the
  archive holds its last version; the rejects list is the invalid delivered orders; `verify`
  agrees; no process left; every exit code one the README documents.

One line per seed, then `chaos: S seeds, V violations`; on a violation, the first broken
invariant, the order's history and the command that replays the seed. Exit 0 only when no
seed broke anything. The seed fixes the workload's operations and the fault schedule; the
interleaving with the processes is the machine's (a replay is the same history, not the same
timing).

The workload writes straight to the server (never through the proxy) and waits while the
server is down, so that the model holds every version the source held: an order's versions
are read back atomically (findOneAndUpdate, the document after). Delivered orders are never
deleted or cancelled by the workload (the platform deletes drafts): an order deleted after
its delivery and before any archiver saw it cannot be archived by anyone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import ReturnDocument

# Run as a file (python bench/chaos.py), Python puts bench/ first on the path, not the project's
# folder that python -m bench.chaos starts from: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.orders.enrichment import source_hash
from order_archiver.settings import ENV_VARS, Settings
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import Dataset, generate_dataset, strip_markers
from teststand.fault_proxy import FaultProxy
from teststand.nx_server import NxServer

ROOT = Path(__file__).resolve().parent.parent

DB = "chaos"
DELIVERED = "livrée"
LEASE_TTL_S = 4  # short: a paused leader's standby takes over within seconds
DOCUMENTED_EXIT_CODES = {0, 1, 2, 3}
SETTLE_S = 120  # the quiet end: how long the archive may take to agree with the model


# --- the model: every version of every order the workload wrote -------------------------------


@dataclass
class History:
    order_id: ObjectId
    valid: bool  # False: rejected by design (no numero_commande)
    versions: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    deleted: bool = False  # by the workload (never after a delivery)
    gone: bool = False  # the workload's update found nothing: purged

    @property
    def last(self) -> dict[str, Any]:
        return self.versions[-1][2]

    @property
    def last_delivered(self) -> dict[str, Any] | None:
        return next((doc for _, _, doc in reversed(self.versions) if doc.get("status") == DELIVERED), None)

    def lines(self) -> list[str]:
        out = [f"order {self.order_id} (valid: {self.valid}, deleted: {self.deleted}, purged: {self.gone})"]
        for moment, what, doc in self.versions:
            out.append(f"  {moment:8.2f}s {what:<12} status={doc.get('status')} hash={source_hash(doc)}")
        return out


@dataclass
class Model:
    orders: dict[ObjectId, History] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    refused: str = ""  # the numero the archive refuses: rejected, listed, never archived
    operations: Counter[str] = field(default_factory=Counter)

    def record(
        self, order_id: ObjectId, what: str, document: dict[str, Any] | None, valid: bool = True
    ) -> None:
        if document is not None and document.get("numero_commande") == self.refused:
            valid = False
        history = self.orders.setdefault(order_id, History(order_id, valid))
        self.operations[what] += 1
        if document is None:
            history.gone = True  # purged before this operation reached it
            return
        history.versions.append((time.monotonic() - self.started, what, document))


# --- the workload -------------------------------------------------------------------------


class Workload:
    """Operations from the seed, at ``rate`` a second, straight to the server."""

    def __init__(
        self, database: Any, pool: list[dict[str, Any]], model: Model, seed: int, rate: float
    ) -> None:
        self.orders = database["Commande"]
        self.database = database
        self.pool = pool[::-1]  # generated orders not inserted yet: pop() takes the lowest numbers first
        self.model = model
        self.rng = random.Random(f"{seed}:workload")
        self.rate = rate
        self.stop = threading.Event()
        self.gate = threading.Lock()  # held during each operation: a server restart waits for it
        self.thread = threading.Thread(target=self._run, name="workload", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.deliver_sent_back()

    def deliver_sent_back(self) -> None:
        """An order sent back is delivered again later (``send_back``); one sent back in the
        workload's last moments is delivered again now. Otherwise the oracle would expect an order
        that was delivered only for an instant, maybe while every archiver was down (a kill -9)
        and none could see it, as it expects nothing of an order deleted in that instant."""
        for history in list(self.model.orders.values()):
            if not history.gone and history.versions and history.versions[-1][1] == "send-back":
                self._update(history, "deliver", {"$set": {"status": DELIVERED}})

    def _run(self) -> None:
        operations: list[tuple[Callable[[], None], float]] = [
            (self.create, 3),
            (self.advance, 4),
            (self.deliver_live, 4),
            (self.deliver_late, 1.5),
            (self.correct, 2),
            (self.send_back, 0.7),
            (self.cancel, 0.5),
            (self.delete, 0.5),
            (self.invalid, 0.2),
            (self.edit_reference, 0.3),
        ]
        actions, weights = zip(*operations, strict=True)
        try:
            while not self.stop.wait(1 / self.rate):
                with self.gate:
                    self.rng.choices(actions, weights)[0]()
        except BaseException as exc:  # reported with the seed: the workload must not fail quietly
            self.error = exc

    def _pick(self, statuses: tuple[str, ...]) -> History | None:
        found = [
            h
            for h in self.model.orders.values()
            if not h.deleted and not h.gone and h.versions and h.last.get("status") in statuses and h.valid
        ]
        return self.rng.choice(found) if found else None

    def _update(self, history: History, what: str, change: dict[str, Any]) -> None:
        after = self.orders.find_one_and_update(
            {"_id": history.order_id}, change, return_document=ReturnDocument.AFTER
        )
        self.model.record(history.order_id, what, after)

    def create(self) -> None:
        if not self.pool:
            return
        order = self.pool.pop()
        valid = "numero_commande" in order
        order.update(status="en_attente", date_commande=datetime.now(UTC))
        order.pop("date_livraison", None)
        self.orders.insert_one(order)
        self.model.record(order["_id"], "create", self.orders.find_one({"_id": order["_id"]}), valid)

    def advance(self) -> None:
        steps = {"en_attente": "en_preparation", "en_preparation": "en_livraison"}
        history = self._pick(tuple(steps))
        if history is not None:
            self._update(history, "advance", {"$set": {"status": steps[history.last["status"]]}})

    def deliver_live(self) -> None:
        history = self._pick(("en_livraison",))
        if history is not None:
            self._update(
                history, "deliver", {"$set": {"status": DELIVERED, "date_livraison": datetime.now(UTC)}}
            )

    def deliver_late(self) -> None:
        """A delivery synced hours late: its stamp is in the past."""
        history = self._pick(("en_livraison", "en_preparation"))
        if history is not None:
            stamp = datetime.now(UTC) - timedelta(hours=self.rng.uniform(1, 8))
            self._update(history, "deliver-late", {"$set": {"status": DELIVERED, "date_livraison": stamp}})

    def correct(self) -> None:
        """A delivered order corrected: a new address, or one more of a dish."""
        history = self._pick((DELIVERED,))
        if history is None:
            return
        items = history.last.get("items")
        if (
            self.rng.random() < 0.5
            or not isinstance(items, list)
            or not items
            or not isinstance(items[0], dict)
        ):
            change = {"$set": {"adresse_livraison": f"{self.rng.randint(1, 200)} rue du Chaos, Lyon"}}
        else:
            # The whole list set again (nx-27017 ignores a path into an array, items.0.quantite:
            # MongoDB applies it; the application rewrites its items anyway).
            first = {**items[0], "quantite": (items[0].get("quantite") or 0) + 1}
            change = {"$set": {"items": [first, *items[1:]]}}
        self._update(history, "correct", change)

    def send_back(self) -> None:
        """Delivered, then out again (a wrong delivery): delivered again later, corrected."""
        history = self._pick((DELIVERED,))
        if history is not None:
            self._update(history, "send-back", {"$set": {"status": "en_livraison"}})

    def cancel(self) -> None:
        history = self._pick(("en_attente", "en_preparation"))
        if history is not None:
            self._update(history, "cancel", {"$set": {"status": "annulée"}})

    def delete(self) -> None:
        history = self._pick(("en_attente", "annulée"))
        if history is not None:
            self.orders.delete_one({"_id": history.order_id})
            history.deleted = True
            self.model.operations["delete"] += 1

    def invalid(self) -> None:
        """An invalid order, delivered at once: rejected, listed, never archived."""
        if not self.pool:
            return
        order = self.pool.pop()
        order.pop("numero_commande", None)
        order.update(status=DELIVERED, date_livraison=datetime.now(UTC))
        self.orders.insert_one(order)
        self.model.record(order["_id"], "invalid", self.orders.find_one({"_id": order["_id"]}), valid=False)

    def edit_reference(self) -> None:
        """A client renamed, or a courier deleted: the enrichment changes, the order does not."""
        if self.rng.random() < 0.7:
            self.database["Client"].update_one({}, {"$set": {"nom": f"Renommé {self.rng.randint(1, 999)}"}})
        else:
            self.database["Livreur"].delete_one({})
        self.model.operations["reference"] += 1


# --- the processes ---------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    process: subprocess.Popen[str]
    log: Path
    signalled: int | None = None  # the fault sent to it, if any


class Processes:
    """The command line as a user runs it, through the proxy; every exit recorded."""

    def __init__(self, folder: Path, uri: str) -> None:
        self.folder = folder
        self.env = {k: v for k, v in os.environ.items() if k not in ENV_VARS} | {
            "MONGODB_URI": uri,
            "MONGODB_DATABASE": DB,
            "LOG_DIR": "",
            "MONGODB_TIMEOUT_MS": "2000",
            "WATCH_LEASE_TTL_S": str(LEASE_TTL_S),
            "WATCH_LEASE_RENEW_S": "1",
            "WATCH_HEARTBEAT_S": "2",
        }
        self.running: dict[str, Run] = {}
        self.exits: list[tuple[str, int, int | None]] = []  # name, code, fault signal
        self.lock = threading.Lock()
        self.count = 0

    def start(self, name: str, *args: str) -> Run:
        with self.lock:
            self.count += 1
            log = self.folder / f"{name}-{self.count}.log"
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), *args],
            env=self.env,
            cwd=self.folder,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        run = Run(name, process, log)
        with self.lock:
            self.running[name] = run
        return run

    def reap(self) -> None:
        """Record the exits of the processes that ended."""
        with self.lock:
            for name, run in list(self.running.items()):
                code = run.process.poll()
                if code is not None:
                    self.exits.append((name, code, run.signalled))
                    del self.running[name]

    def signal(self, name: str, sig: int) -> None:
        with self.lock:
            run = self.running.get(name)
        if run is not None and run.process.poll() is None:
            run.signalled = sig
            run.process.send_signal(sig)

    def stop_all(self, timeout: float = 30) -> list[str]:
        """SIGTERM (and SIGCONT) to every process; the names of those still running after it."""
        with self.lock:
            runs = list(self.running.values())
        for run in runs:
            if run.process.poll() is None:
                run.process.send_signal(signal.SIGCONT)
                run.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        left = []
        for run in runs:
            try:
                run.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                left.append(run.name)
                run.process.kill()
                run.process.wait()
        self.reap()
        return left


class Server:
    """The seed's test server, restarted on the same port and data (the proxy stays)."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env  # the server's fault knobs (teststand/nx_launcher.py), kept across restarts
        # A replica set (the default, said here): a standalone refuses change streams (40573);
        # the proxy's URI connects directly, so the member's own address does not bypass it.
        self.current = NxServer(folder, env=env, replica_set="rs0").start()
        self.port = self.current.port
        self.uri = self.current.uri

    def restart(self, down_s: float) -> None:
        self.current.stop()
        time.sleep(down_s)
        self.current = NxServer(self.folder, port=self.port, env=self.env, replica_set="rs0").start()

    @staticmethod
    def wait_for(client: Any) -> None:
        """The client's pool holds the old server's connections: one failed ping clears it."""
        for _ in range(50):
            try:
                client.admin.command("ping")
                return
            except pymongo.errors.AutoReconnect:
                time.sleep(0.1)

    def stop(self) -> None:
        self.current.stop()


# --- the faults -----------------------------------------------------------------------------


class Faults:
    """Faults at random times from the seed; the watchers restarted after each."""

    KINDS = ("kill9", "term", "pause", "restart", "cut", "refuse", "hang")
    WEIGHTS = (3, 2, 1, 1, 2, 1, 1)

    def __init__(
        self, seed: int, processes: Processes, proxy: FaultProxy, server: Server, workload: Workload
    ) -> None:
        self.rng = random.Random(f"{seed}:faults")
        self.processes = processes
        self.proxy = proxy
        self.server = server
        self.workload = workload
        self.injected: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="faults", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.proxy.holding = False
        self.proxy.refuse_until = 0.0

    def _run(self) -> None:
        while not self.stop.wait(self.rng.expovariate(1 / 6)):
            kind = self.rng.choices(self.KINDS, self.WEIGHTS)[0]
            self.injected[kind] += 1
            getattr(self, f"_{kind}")()

    def _victim(self) -> str | None:
        with self.processes.lock:
            names = sorted(self.processes.running)
        return self.rng.choice(names) if names else None

    def _kill9(self) -> None:
        victim = self._victim()
        if victim:
            self.processes.signal(victim, signal.SIGKILL)

    def _term(self) -> None:
        victim = self._victim()
        if victim:
            self.processes.signal(victim, signal.SIGTERM)

    def _pause(self) -> None:
        """A leader paused past its lease: the standby takes over; woken, it must write nothing."""
        name = self.rng.choice(("watch-a", "watch-b"))
        self.processes.signal(name, signal.SIGSTOP)
        self.stop.wait(LEASE_TTL_S * 2)
        self.processes.signal(name, signal.SIGCONT)

    def _restart(self) -> None:
        """Between two of the workload's operations (so that the model misses no version)."""
        with self.workload.gate:
            self.server.restart(self.rng.uniform(0.5, 3))
            self.server.wait_for(self.workload.database.client)

    def _cut(self) -> None:
        self.proxy.cut_all()

    def _refuse(self) -> None:
        self.proxy.refuse_for(self.rng.uniform(1, 4))

    def _hang(self) -> None:
        self.proxy.holding = True
        self.stop.wait(self.rng.uniform(1, 4))
        self.proxy.holding = False


# --- one seed --------------------------------------------------------------------------------


def scheduler(processes: Processes, seed: int, stop: threading.Event) -> threading.Thread:
    """The services kept running, and batch runs and verifications now and then."""
    rng = random.Random(f"{seed}:schedule")

    def loop() -> None:
        next_batch = time.monotonic() + rng.uniform(2, 6)
        next_verify = time.monotonic() + rng.uniform(10, 30)
        while not stop.wait(0.2):
            processes.reap()
            for name in ("watch-a", "watch-b"):
                if name not in processes.running:
                    processes.start(name, "watch", "--token-store", "mongo", "--name", "chaos", "-q")
            now = time.monotonic()
            if now >= next_batch and "batch" not in processes.running:
                flags = [f for f, p in (("--full", 0.2), ("--purge-source", 0.3)) if rng.random() < p]
                processes.start("batch", "batch", "--run", "-q", *flags)
                next_batch = now + rng.uniform(3, 12)
            if now >= next_verify and "verify" not in processes.running:
                processes.start("verify", "verify", "--repair", "-q")
                next_verify = now + rng.uniform(15, 40)

    thread = threading.Thread(target=loop, name="scheduler", daemon=True)
    thread.start()
    return thread


@dataclass
class Outcome:
    seed: int
    operations: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    archived: int = 0
    refused: int = 0  # orders the archive refused (the NX_FAULT_REFUSE_NUMERO knob), rejected
    retried_writes: int = 0  # archive writes retried after a failure (rolled back, cut...)
    violations: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        faults = " ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        return (
            f"seed {self.seed}: {self.operations} operations, faults {faults}, "
            f"{self.archived} orders archived, {self.refused} refused, {self.retried_writes} archive "
            f"writes retried, {len(self.violations)} violations"
        )


def run_seed(seed: int, minutes: float, rate: float, folder: Path) -> Outcome:
    outcome = Outcome(seed)
    knobs = random.Random(f"{seed}:knobs")
    dataset = generate_dataset(
        200 + int(minutes * 60 * rate) + 500, seed=seed, p_delivered=0.5, p_anomalies=0.02
    )
    # One delivered order the archive refuses (17420, an archive document over 16 MB): rejected.
    delivered = [
        o["numero_commande"] for o in dataset.orders[:200] if o["status"] == DELIVERED and "_dirty" not in o
    ]
    refused = knobs.choice(delivered)
    server = Server(
        folder / "nx",
        {
            # every N-th archive write acknowledged, then rolled back (writeConcernError 64)
            "NX_FAULT_WRITE_CONCERN": f"Commande_archive:{knobs.randint(15, 40)}",
            "NX_FAULT_REFUSE_NUMERO": refused,
        },
    )
    model = Model(refused=refused)
    try:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(server.uri, tz_aware=True)
        database = client[DB]
        pool = _seed_database(database, dataset, model)
        with FaultProxy(server.port) as proxy:
            processes = Processes(folder, proxy.uri)
            workload = Workload(database, pool, model, seed, rate)
            faults = Faults(seed, processes, proxy, server, workload)
            stop_schedule = threading.Event()
            schedule = scheduler(processes, seed, stop_schedule)
            workload.start()
            faults.start()
            time.sleep(minutes * 60)
            faults.finish()
            workload.finish()
            stop_schedule.set()
            schedule.join(10)
            processes.reap()
            _quiet_end(processes, database, model, outcome)
            outcome.faults = faults.injected
            if workload.error is not None:
                outcome.violations.append(f"the workload failed: {workload.error!r}")
        outcome.operations = sum(model.operations.values())
        _check(database, model, processes, outcome, server.uri)
        client.close()
    finally:
        server.stop()
    return outcome


def _seed_database(database: Any, dataset: Dataset, model: Model) -> list[dict[str, Any]]:
    """References and a first set of orders in the database; the rest is the workload's pool."""
    settings = Settings(mongodb_uri="mongodb://unused", mongodb_database=DB, log_dir="")
    first, pool = dataset.orders[:200], dataset.orders[200:]
    dataset.orders = first
    fill_database(database, dataset, settings)
    for order in first:
        stored = database["Commande"].find_one({"_id": order["_id"]})
        valid = order.get("_dirty") != "numero_commande_missing"
        model.record(order["_id"], "seed", stored, valid)
    return [strip_markers(order) for order in pool if order.get("_dirty") != "numero_commande_missing"]


def _quiet_end(processes: Processes, database: Any, model: Model, outcome: Outcome) -> None:
    """Faults off: a full batch, watchers settled, everything stopped."""
    for name in ("watch-a", "watch-b"):
        processes.signal(name, signal.SIGCONT)
        if name not in processes.running:
            processes.start(name, "watch", "--token-store", "mongo", "--name", "chaos", "-q")
    for name in ("batch", "verify"):
        run = processes.running.get(name)
        if run is not None:
            run.process.wait(120)
    processes.reap()
    final = processes.start("batch-final", "batch", "--run", "--full", "-q")
    final.process.wait(300)
    processes.reap()
    expected = _expected_hashes(model)
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline and _archive_hashes(database) != expected:
        time.sleep(0.5)
    left = processes.stop_all()
    if left:
        outcome.violations.append(f"processes still running after SIGTERM: {', '.join(left)}")


def _expected_hashes(model: Model) -> dict[ObjectId, str]:
    return {
        h.order_id: source_hash(h.last_delivered)
        for h in model.orders.values()
        if h.valid and h.last_delivered is not None
    }


def _archive_hashes(database: Any) -> dict[ObjectId, str]:
    return {d["_id"]: d.get("source_hash") for d in database["Commande_archive"].find({}, {"source_hash": 1})}


def _check(database: Any, model: Model, processes: Processes, outcome: Outcome, direct: str) -> None:
    """The oracle: each invariant, and on the first broken one the order's history."""
    archive = _archive_hashes(database)
    outcome.archived = len(archive)
    outcome.refused = database["archiver_rejects"].count_documents({"reason": {"$regex": "17420"}})
    outcome.retried_writes = sum(
        log.read_text(errors="replace").count("archive write failed")
        for log in processes.folder.glob("*.log")
    )
    present = {d["_id"] for d in database["Commande"].find({}, {"_id": 1})}
    broken: list[tuple[str, ObjectId | None]] = []
    _check_archive(archive, _expected_hashes(model), broken)
    numeros = [
        d.get("numero_commande") for d in database["Commande_archive"].find({}, {"numero_commande": 1})
    ]
    if len(numeros) != len(set(numeros)):
        broken.append(("a numero_commande is archived twice", None))
    for history in model.orders.values():
        purged = not history.deleted and history.order_id not in present
        if purged and archive.get(history.order_id) != source_hash(history.last):
            broken.append(
                ("a source order was purged in a version the archive does not hold", history.order_id)
            )
    _check_rejects(database, model, present, broken)
    _check_verify(processes, direct, broken)
    for name, code, sent in processes.exits:
        if code not in DOCUMENTED_EXIT_CODES and -code != sent:
            broken.append((f"{name} exited {code}, a code the README does not document", None))
    outcome.violations += [what for what, _ in broken]
    if broken:
        what, order_id = broken[0]
        outcome.details.append(f"first broken invariant: {what}")
        if order_id is not None and order_id in model.orders:
            outcome.details += model.orders[order_id].lines()


def _check_archive(
    archive: dict[ObjectId, str], expected: dict[ObjectId, str], broken: list[tuple[str, ObjectId | None]]
) -> None:
    """Exactly the valid orders ever delivered, each in its last delivered version."""
    for order_id in sorted(set(expected) - set(archive), key=str):
        broken.append(("a delivered valid order is missing from the archive", order_id))
    for order_id in sorted(set(archive) - set(expected), key=str):
        broken.append(("the archive holds an order never validly delivered", order_id))
    for order_id in sorted(set(archive) & set(expected), key=str):
        if archive[order_id] != expected[order_id]:
            broken.append(("an archive document is not its order's last delivered version", order_id))


def _check_rejects(database: Any, model: Model, present: set[Any], broken: list[tuple[str, Any]]) -> None:
    listed = {d["_id"] for d in database["archiver_rejects"].find({}, {"_id": 1})}
    invalid = {
        h.order_id
        for h in model.orders.values()
        if not h.valid and h.order_id in present and h.last.get("status") == DELIVERED
    }
    for order_id in sorted(invalid - listed, key=str):
        broken.append(("an invalid delivered order is not on the rejects list", order_id))
    for order_id in sorted(listed - invalid, key=str):
        broken.append(("the rejects list holds an order that is not an invalid delivered one", order_id))


def _check_verify(processes: Processes, direct: str, broken: list[tuple[str, Any]]) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "verify", "--json", "-q"],
        env={**processes.env, "MONGODB_URI": direct},
        cwd=processes.folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        consistent = json.loads(result.stdout).get("consistent")
    except ValueError:
        consistent = None
    if result.returncode != 0 or consistent is not True:
        broken.append((f"verify disagrees (exit {result.returncode}): {result.stdout.strip()[-300:]}", None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1, help="the first seed")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds, from --seed on")
    parser.add_argument("--minutes", type=float, default=1.0, help="workload and faults, per seed")
    parser.add_argument("--rate", type=float, default=20.0, help="workload operations a second")
    args = parser.parse_args(argv)
    violations = 0
    for seed in range(args.seed, args.seed + args.seeds):
        with tempfile.TemporaryDirectory(prefix=f"chaos-{seed}-") as folder:
            outcome = run_seed(seed, args.minutes, args.rate, Path(folder))
        print(outcome.line(), flush=True)
        if outcome.violations:
            violations += len(outcome.violations)
            for line in outcome.details:
                print(f"  {line}")
            replay = f"python -m bench.chaos --seed {seed} --seeds 1 --minutes {args.minutes:g} --rate {args.rate:g}"
            print(f"  replay: {replay}", flush=True)
    print(f"chaos: {args.seeds} seeds, {violations} violations")
    return 0 if violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
