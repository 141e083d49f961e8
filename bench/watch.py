"""Watch benchmark: this watcher beside its baselines, on one nx-27017, in one run.

    python -m bench.watch [--singles 1000] [--burst 20000] [--per-event-burst 1000]

Measured on the same server and data, each watcher running in a thread of this process:
  (a) the server's floor: a bare watcher that only receives events;
  (b) a per-event watcher: one enrichment aggregation and one upsert per event;
  (c) this watcher (watcher.Watcher, as `main.py watch` runs it);
  (d) one enrichment aggregation of a single order, alone.
Latency: from `update_one` returning to the event received (a) or the archive write
acknowledged (b, c), over --singles deliveries made one at a time. Burst: time from the first
update of a burst of deliveries to the last one archived. (b)'s burst is smaller (--per-event-burst):
at one aggregation per event it would take many minutes; its rate is what is compared.
Reference collections are modest (a few hundred documents): nx-27017's $lookup reads the
whole foreign collection on every aggregation, which is what dominates (d) here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pymongo
from bson import ObjectId

# Run as a file (python bench/watch.py), Python puts bench/ first on the path, not the project's
# folder that python -m bench.watch starts from: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.context import RunContext
from order_archiver.mongodb.source import build_change_stream_pipeline
from order_archiver.orders.enrichment import (
    CollectionNames,
    build_enrichment_pipeline,
    finish_archive_document,
)
from order_archiver.settings import Settings
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import generate_dataset, strip_markers
from order_archiver.watch.watcher import Watcher, WatchOptions
from teststand.devserver import DevServer

ROOT = Path(__file__).resolve().parent.parent

DB = "benchwatch"


class Signals:
    """Per-order completion flags, set by whichever watcher is measured."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flags: dict[ObjectId, threading.Event] = {}
        self.count = 0
        self.all_done = threading.Event()
        self.expected = 0

    def expect(self, ids: list[ObjectId], expected_total: int | None = None) -> list[threading.Event]:
        with self.lock:
            flags = [self.flags.setdefault(order_id, threading.Event()) for order_id in ids]
            if expected_total is not None:
                self.count, self.expected = 0, expected_total
                self.all_done.clear()
        return flags

    def done(self, ids) -> None:
        with self.lock:
            for order_id in ids:
                flag = self.flags.pop(order_id, None)
                if flag is not None:
                    flag.set()
                    self.count += 1
            if self.expected and self.count >= self.expected:
                self.all_done.set()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99)}


def bare_watcher(orders, signals: Signals, stop: threading.Event) -> None:
    with orders.watch(build_change_stream_pipeline("livrée"), max_await_time_ms=1000) as stream:
        ready.set()
        while not stop.is_set():
            event = stream.try_next()
            if event is not None:
                signals.done([event["documentKey"]["_id"]])


def per_event_watcher(orders, archive, signals: Signals, stop: threading.Event) -> None:
    names = CollectionNames()
    with orders.watch(
        build_change_stream_pipeline("livrée"),
        full_document="updateLookup",
        max_await_time_ms=1000,
    ) as stream:
        ready.set()
        while not stop.is_set():
            event = stream.try_next()
            if event is None:
                continue
            order_id = event["documentKey"]["_id"]
            for raw in orders.aggregate(build_enrichment_pipeline({"_id": order_id}, names)):
                doc = finish_archive_document(raw, archived_by="watch", archived_at=datetime.now(UTC))
                archive.update_one({"_id": order_id}, {"$setOnInsert": doc}, upsert=True)
            signals.done([order_id])


ready = threading.Event()


def run_phase(name, target, args, singles: list, burst: list, orders, signals: Signals) -> dict:
    stop = threading.Event()
    ready.clear()
    thread = threading.Thread(
        target=target, args=(*args, signals, stop) if name != "c" else args, daemon=True
    )
    thread.start()
    ready.wait(30)
    time.sleep(0.5)
    latencies = []
    for order_id in singles:
        flag = signals.expect([order_id])[0]
        orders.update_one({"_id": order_id}, {"$set": {"status": "livrée"}})
        sent = time.perf_counter()
        if not flag.wait(30):
            raise SystemExit(f"({name}) delivery {order_id} not seen in 30s")
        latencies.append(time.perf_counter() - sent)
    signals.expect(burst, expected_total=len(burst))
    started = time.perf_counter()
    for start in range(0, len(burst), 1000):
        orders.update_many({"_id": {"$in": burst[start : start + 1000]}}, {"$set": {"status": "livrée"}})
    if not signals.all_done.wait(1800):
        raise SystemExit(f"({name}) burst not finished: {signals.count}/{len(burst)}")
    burst_seconds = time.perf_counter() - started
    stop.set()
    if name == "c":
        args[0].stop_event.set()
    thread.join(30)
    figures = {**percentiles(latencies), "burst": len(burst), "burst_s": burst_seconds}
    figures["burst_per_s"] = len(burst) / burst_seconds
    print(
        f"({name}) latency p50 {figures['p50']:7.1f} ms  p95 {figures['p95']:7.1f} ms  p99 {figures['p99']:7.1f} ms"
        f"   burst {len(burst):>6} in {burst_seconds:7.2f}s = {figures['burst_per_s']:8.0f}/s",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--singles", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=20_000)
    parser.add_argument("--per-event-burst", type=int, default=1000)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    settings = Settings(
        mongodb_uri="mongodb://unused", mongodb_database=DB, log_dir="", watch_log_interval_s=3600
    )
    needed = 3 * args.singles + 2 * args.burst + args.per_event_burst

    with tempfile.TemporaryDirectory(prefix="bench-watch-") as folder:
        # A replica set (the default, said here): a standalone refuses change streams (40573).
        server = DevServer(Path(folder) / "nx", replica_set="rs0").start()
        try:
            client = pymongo.MongoClient(server.uri, tz_aware=True)
            database = client[DB]
            orders = database[settings.orders_collection]
            # References of a 2,000-order dataset (a few hundred documents), orders cloned from it.
            base = generate_dataset(2000, seed=3, p_delivered=0.0, p_anomalies=0.0)
            template = [strip_markers(o) for o in base.orders]
            base.orders = []
            fill_database(database, base, settings)
            clones = []
            for n in range(needed):
                order = dict(template[n % len(template)])
                order.update(_id=ObjectId(), numero_commande=f"BW-{n:07d}")
                clones.append(order)
            for start in range(0, len(clones), 5000):
                orders.insert_many(clones[start : start + 5000], ordered=False)
            database[settings.archive_collection].create_index("numero_commande", unique=True)
            ids = [o["_id"] for o in clones]
            del clones
            print(
                f"seeded {needed} pending orders; references: {len(base.clients)} clients, "
                f"{len(base.couriers)} couriers, {len(base.restaurants)} restaurants, {len(base.menus)} dishes",
                flush=True,
            )

            names = CollectionNames.from_settings(settings)
            one = []
            for order_id in ids[:200]:
                started = time.perf_counter()
                list(orders.aggregate(build_enrichment_pipeline({"_id": order_id}, names)))
                one.append(time.perf_counter() - started)
            d = percentiles(one)
            print(
                f"(d) one-order enrichment aggregation: p50 {d['p50']:.1f} ms, p95 {d['p95']:.1f} ms",
                flush=True,
            )

            cursor = 0

            def take(n: int) -> list:
                nonlocal cursor
                cursor += n
                return ids[cursor - n : cursor]

            signals = Signals()
            results = {"d": d}
            results["a"] = run_phase(
                "a", bare_watcher, (orders,), take(args.singles), take(args.burst), orders, signals
            )
            results["b"] = run_phase(
                "b",
                per_event_watcher,
                (orders, database["archive_b"]),
                take(args.singles),
                take(args.per_event_burst),
                orders,
                signals,
            )
            watch_settings = settings.with_overrides(
                archive_collection=settings.archive_collection,
                resume_token_file=str(Path(folder) / "token.json"),
            )
            watcher = Watcher(client, watch_settings, WatchOptions(from_now=True), context=RunContext())
            original_write = watcher.writer.write  # the step's one write (insert, then revise)

            def write_and_signal(documents, **options):
                outcome = original_write(documents, **options)
                signals.done([doc["_id"] for doc in documents])
                return outcome

            watcher.writer.write = write_and_signal
            original_open = watcher._open

            def open_and_signal(*a, **k):
                stream = original_open(*a, **k)
                ready.set()
                return stream

            watcher._open = open_and_signal
            results["c"] = run_phase(
                "c", lambda w: w.run(), (watcher,), take(args.singles), take(args.burst), orders, signals
            )
            a, b, c = results["a"], results["b"], results["c"]
            budget = a["p50"] + d["p50"] + 10
            print(
                f"target: (c) p50 {c['p50']:.1f} ms <= (a) p50 + (d) p50 + 10 ms = {budget:.1f} ms: "
                f"{'met' if c['p50'] <= budget else 'NOT met'}"
            )
            print(
                f"burst throughput: (c)/(b) = {c['burst_per_s'] / b['burst_per_s']:.1f} (target >= 5), "
                f"(c)/(a) = {c['burst_per_s'] / a['burst_per_s']:.2f} of the server's floor; "
                f"archive writes by (c): {watcher.stats.batches} micro-batches"
            )
            results["c"]["micro_batches"] = watcher.stats.batches
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(results, indent=2))
            client.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
