"""Test helpers shared by unit, integration and end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bson import json_util

from order_archiver.settings import Settings, load_settings
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import Dataset, generate_dataset, strip_markers

ANCHOR = datetime(2026, 11, 26, tzinfo=UTC)
PROJECT = Path(__file__).resolve().parents[1]


def product_files() -> list[Path]:
    """The product's Python files: the design card's top-level modules and the order_archiver
    package (teststand/, tests/ and bench/ are not the product)."""
    return sorted([*PROJECT.glob("*.py"), *PROJECT.glob("order_archiver/**/*.py")])


def seed_database(database: Any, settings: Settings, count: int, **kwargs: Any) -> Dataset:
    kwargs.setdefault("seed", 1)
    kwargs.setdefault("anchor", ANCHOR)
    dataset = generate_dataset(count, **kwargs)
    fill_database(database, dataset, settings)
    return dataset


def expected_archive_ids(
    dataset: Dataset, date_from: datetime | None = None, date_to: datetime | None = None
) -> set:
    """Ids of the delivered orders the archiver must archive: valid, in the window."""
    ids = set()
    for order in dataset.orders:
        if order["status"] != "livrée" or order.get("_dirty") == "numero_commande_missing":
            continue
        when = order["date_commande"]
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        if (date_from and when < date_from) or (date_to and when >= date_to):
            continue
        ids.add(order["_id"])
    return ids


def delivered_rejects(dataset: Dataset) -> int:
    return sum(
        1 for o in dataset.orders if o["status"] == "livrée" and o.get("_dirty") == "numero_commande_missing"
    )


def assert_no_duplicates(archive: Any) -> None:
    numbers = Counter(doc["numero_commande"] for doc in archive.find({}, {"numero_commande": 1}))
    assert not [n for n, c in numbers.items() if c > 1]


def source_orders(dataset: Dataset) -> dict:
    return {o["_id"]: strip_markers(o) for o in dataset.orders}


# --- the watcher as a subprocess (end-to-end tests) ---------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 30.0,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    details = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out waiting for {what}\n{details}")


def unique_index(archive: Any) -> None:
    """The archive's unique index on ``numero_commande``, as the first ``batch --run`` builds it:
    a watcher (its catch-up included) archives nothing without it."""
    from order_archiver.mongodb.indexes import ARCHIVE_INDEXES

    keys, options = ARCHIVE_INDEXES[0]
    archive.create_index(keys, **options)


def build_unique_index(env: dict[str, str], cwd: Path, args: tuple[str, ...] = ()) -> None:
    """The archive's unique index on ``numero_commande``, where ``env``'s settings put the
    archive: what the deployment's first ``batch --run`` builds before the first ``watch``
    (docs/deployment.md, start order). A watcher waits for it (``indexes.wait_for_unique_index``)."""
    import pymongo

    from order_archiver.mongodb.indexes import ARCHIVE_INDEXES

    env_file = args[args.index("--env-file") + 1] if "--env-file" in args else None
    dotenv = cwd / (env_file or ".env")
    settings, _ = load_settings(str(dotenv) if dotenv.is_file() else None, environ=env)
    uri = settings.archive_mongodb_uri or settings.mongodb_uri
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=20000)
    try:
        keys, options = ARCHIVE_INDEXES[0]
        client[settings.archive_db_name][settings.archive_collection].create_index(keys, **options)
    finally:
        client.close()


class WatchProcess:
    """``main.py watch`` as a service, its output in a file. ``unique_index``: build the archive's
    unique index first, as the deployment's first ``batch --run`` does (False: the watcher
    started before any batch, which waits for it)."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str, unique_index: bool = True) -> None:
        if unique_index:
            build_unique_index(env, cwd, args)
        self.log = open(cwd / f"watch-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "watch", *args],
            env={**os.environ, **env},
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.log.close()
        return code


def token_saved(database, tmp_path: Path, store: str, name: str = "default") -> bool:
    """A token saved past the watcher's catch-up: the stream's starting point is saved before
    it too, marked ``catching_up`` (whoever resumes from it catches up again)."""
    if store == "file":
        path = tmp_path / "token.json"
        record = json_util.loads(path.read_text("utf-8")) if path.exists() else None
    else:
        record = database["archiver_checkpoints"].find_one({"_id": f"watch:{name}"})
    return record is not None and not record.get("catching_up", False)


def archived_ids(database) -> set:
    return {d["_id"] for d in database["Commande_archive"].find({}, {"_id": 1})}


def deliver(orders, ids, when=None) -> None:
    """Deliver ``ids`` as the application does: the status, and ``date_livraison`` (now, by
    default; the incremental batch reads deliveries by it)."""
    stamp = when or datetime.now(UTC)
    for order_id in ids:
        orders.update_one({"_id": order_id}, {"$set": {"status": "livrée", "date_livraison": stamp}})


def pending_ids(dataset, count=None) -> list:
    ids = [o["_id"] for o in dataset.orders if o["status"] != "livrée" and "_dirty" not in o]
    return ids[:count] if count else ids


class InProcessResult:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_in_process(
    *args: str, env: dict[str, str], cwd: Path, monkeypatch: Any, capsys: Any, script: str = "main.py"
) -> InProcessResult:
    """A one-shot command the way ``run_cli`` runs it, in this process: the same settings
    (only ``env`` and the folder's files), a second instead of a Python start-up. For
    commands that return; a service (``watch``) runs as a subprocess."""
    from order_archiver.cli.main import main, simulate_main
    from order_archiver.settings import ENV_VARS

    capsys.readouterr()
    with monkeypatch.context() as patch:
        for var in ENV_VARS:
            patch.delenv(var, raising=False)
        for key, value in env.items():
            patch.setenv(key, value)
        patch.chdir(cwd)
        code = (simulate_main if script == "simulate.py" else main)(list(args))
    out, err = capsys.readouterr()
    return InProcessResult(int(code), out, err)


def strings_in(value: Any) -> list[str]:
    """Every string anywhere in a document (a search of the whole archive for a person's data)."""
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings_in(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return [value] if isinstance(value, str) else []


class ManualClock:
    """A monotonic clock that only a wait moves (``WaitMovesClock``): waits measured without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class WaitMovesClock(threading.Event):
    """A stop event whose wait moves ``clock`` on by its timeout, and records each wait."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        self.clock.now += timeout or 0.0
        return self.is_set()


class FakeChangeStream:
    """A change stream from a script, as pymongo's behaves to the product
    (``mongodb.stream.ChangeStream``): each batch is what one getMore brings; ``try_next`` hands
    out its events one at a time (``_cursor._data`` holds those received and not yet handed out,
    which ``stream.buffered`` reads), the resume token following each; an empty batch is a quiet
    getMore (None); once the batches run out ``alive`` is False and ``try_next`` None. Without
    batches: a stream on which nothing happens."""

    def __init__(
        self,
        batches: Iterable[Iterable[Mapping[str, Any]]] = (),
        resume_token: Mapping[str, Any] | None = None,
    ) -> None:
        self.batches = [list(batch) for batch in batches]
        self.alive = True
        self._cursor = SimpleNamespace(_data=[])
        self.resume_token = resume_token if resume_token is not None else {"_data": "start"}

    def try_next(self) -> Mapping[str, Any] | None:
        if not self._cursor._data:
            if not self.batches:
                self.alive = False
                return None
            self._cursor._data = self.batches.pop(0)
            if not self._cursor._data:
                return None
        event = self._cursor._data.pop(0)
        self.resume_token = event["_id"]
        return event

    def close(self) -> None:
        self.alive = False

    def __enter__(self) -> FakeChangeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def self_signed_pem(password: bytes | None = None) -> bytes:
    """A client certificate and its private key in one PEM file, as MONGODB_TLS_CERT_KEY_FILE
    holds them (the key under ``password`` if given)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "order-archiver")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def purged_but_one_cancelled_after_delivery(client, database, settings):
    """30 orders, every delivered one archived and purged (PURGE_AFTER 0d, the default); then one
    left in the source cancelled after its delivery, keeping a date_livraison: no source order
    holds DELIVERED_STATUS while a "delivered" one holds another value. The orders collection."""
    from order_archiver.batch.job import BatchArchiver, BatchOptions

    seed_database(database, settings, 30)
    orders = database[settings.orders_collection]
    delivered = orders.find_one({"status": "livrée"})
    BatchArchiver(client, settings, BatchOptions(run=True, purge_source=True)).run()
    cancelled = orders.find_one({"status": {"$ne": "livrée"}})
    orders.update_one(
        {"_id": cancelled["_id"]},
        {"$set": {"status": "annulée", "date_livraison": delivered["date_livraison"]}},
    )
    return orders


def renewals_fail_in_their_thread(monkeypatch: Any, error: BaseException) -> threading.Event:
    """A lease's renewals made by its renewal thread raise ``error`` (a fault the wire cannot
    make: one out of that thread's body, no PyMongoError) while the returned event is set (it
    is); renewals made elsewhere, and all once it is cleared, renew as usual."""
    from order_archiver.mongodb.lease import Lease

    renew = Lease._renew
    failing = threading.Event()
    failing.set()

    def renew_in_its_thread_fails(self: Lease) -> bool:
        if failing.is_set() and threading.current_thread().name == "lease-renewer":
            raise error
        return renew(self)

    monkeypatch.setattr(Lease, "_renew", renew_in_its_thread_fails)
    return failing
