"""Batch archiving benchmark: this archiver beside its baselines, on one nx-27017, in one run.

    python -m bench.batch --orders 20000 [--batch-size 100] [--naive-sample 2000]

Measures, on the same server and data, orders/second of:
  (a) the naive script the archiver replaces: per order one find, four find_ones, one insert_one
      (measured on the first --naive-sample delivered orders: it is slow);
  (b) a raw, unenriched copy: stream the delivered orders, insert_many them elsewhere;
  (e) the enrichment aggregation drained with no Python work;
  (u) unordered bulk upserts of as many archive documents, --batch-size per bulk;
  L = 1 / (1/e + 1/u): the floor of any enriched archive that reads then writes;
  (e') the product's own read drained: the same aggregation sorted on _id (what a checkpoint
      needs), as the run sends it (OrderSource.stream), with no Python work;
  (u') the same upserts into a collection with the archive's indexes (indexes.ARCHIVE_INDEXES:
      what forget, restore, status and retention need), not the unique one alone;
  L' = 1 / (1/e' + 1/u'): the floor of the server work this archiver must have done;
  with --archive-server, M = min(e', u'): the slower of the two sides, what a run whose
      reads and writes overlap approaches, where L' is their sum;
  (c) this archiver: `main.py batch --run` as a subprocess (its peak RSS is reported, and its
      own CPU seconds per 1,000 orders: the client's work, which on a machine of 2 cores takes
      CPU from the test server, and which the machine's other load hardly changes).
Figures from nx-27017 are not MongoDB's: read the ratios, measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pymongo
from pymongo import InsertOne, UpdateOne

# Run as a file (python bench/batch.py), Python puts bench/ first on the path, not the project's
# folder that python -m bench.batch starts from: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.mongodb.source import OrderSource
from order_archiver.orders.enrichment import (
    CollectionNames,
    build_enrichment_pipeline,
    finish_archive_document,
)
from order_archiver.settings import Settings
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import generate_dataset
from teststand.devserver import DevServer

ROOT = Path(__file__).resolve().parent.parent

DB = "bench"
SMALL_RUN = 20_000  # --archiver-only: the baseline run's --limit


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


class ServerWork:
    """The CPU seconds the test servers spent in each phase (Linux's /proc; none elsewhere):
    the work a phase gave them, which the machine's other load inflates far less than wall
    time (nx-27017 is Python on one core: its CPU time is its work)."""

    def __init__(self, *servers: DevServer | None) -> None:
        self.pids = [s.process.pid for s in servers if s is not None and s.process is not None]
        self.phases: dict[str, list[float]] = {}

    def used(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return 0.0
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def measure(self, phase: str, work):
        before = self.used()
        result = work()
        self.phases.setdefault(phase, []).append(self.used() - before)
        return result

    def mean(self, phase: str) -> float:
        runs = self.phases.get(phase) or [0.0]
        return sum(runs) / len(runs)


def naive(database, settings: Settings, sample: int) -> tuple[int, float]:
    """The seed's script: everything one order at a time."""
    target = database["bench_naive"]
    started = time.perf_counter()
    done = 0
    for order in (
        database[settings.orders_collection].find({"status": settings.delivered_status}).limit(sample)
    ):
        client = database[settings.clients_collection].find_one({"_id": order.get("client_id")})
        courier = database[settings.couriers_collection].find_one({"_id": order.get("livreur_id")})
        restaurant = database[settings.restaurants_collection].find_one({"_id": order.get("restaurant_id")})
        dish_ids = [item.get("menu_id") for item in order.get("items") or []]
        dishes = list(database[settings.menu_collection].find({"_id": {"$in": dish_ids}}))
        order.update(client=client, livreur=courier, restaurant=restaurant, plats=dishes)
        target.insert_one(order)
        done += 1
    return done, time.perf_counter() - started


def raw_copy(database, settings: Settings) -> tuple[int, float]:
    target = database["bench_raw"]
    started = time.perf_counter()
    batch, done = [], 0
    for order in database[settings.orders_collection].find(
        {"status": settings.delivered_status}, batch_size=1000
    ):
        batch.append(InsertOne(order))
        if len(batch) == 1000:
            target.bulk_write(batch, ordered=False)
            done, batch = done + len(batch), []
    if batch:
        target.bulk_write(batch, ordered=False)
        done += len(batch)
    return done, time.perf_counter() - started


def drain_enrichment(database, settings: Settings, batch_size: int) -> tuple[list, float]:
    pipeline = build_enrichment_pipeline(
        {"status": settings.delivered_status}, CollectionNames.from_settings(settings)
    )
    started = time.perf_counter()
    raw = list(database[settings.orders_collection].aggregate(pipeline, batchSize=batch_size))
    return raw, time.perf_counter() - started


def drain_product_read(database, settings: Settings) -> tuple[int, float, float]:
    """(e'): the run's own aggregation (sorted on _id, OrderSource.stream), drained; and the
    time its first batch took (nx-27017 computes the whole result before it answers)."""
    source = OrderSource(
        database[settings.orders_collection],
        CollectionNames.from_settings(settings),
        settings.delivered_status,
        None,
        None,
        archived_ids=lambda ids: set(),
    )
    started = time.perf_counter()
    first, count = 0.0, 0
    for _ in source.stream(None, None):
        count += 1
        first = first or time.perf_counter() - started
    return count, time.perf_counter() - started, first


def bulk_upserts(
    database, documents: list, batch_size: int, *, all_indexes: bool = False
) -> tuple[int, float]:
    """(u), or (u') with ``all_indexes``: into a collection with the archive's indexes."""
    target = database["bench_upserts"]
    for keys, extra in ARCHIVE_INDEXES if all_indexes else [("numero_commande", {"unique": True})]:
        target.create_index(keys, **extra)
    started = time.perf_counter()
    for start in range(0, len(documents), batch_size):
        chunk = documents[start : start + batch_size]
        target.bulk_write(
            [UpdateOne({"_id": d["_id"]}, {"$setOnInsert": d}, upsert=True) for d in chunk], ordered=False
        )
    return len(documents), time.perf_counter() - started


def archiver_subprocess(
    server: DevServer,
    settings: Settings,
    batch_size: int,
    archive_database: str | None,
    *,
    limit: int | None = None,
    archive_collection: str = "bench_archive",
    archive_uri: str | None = None,
):
    env = {
        **os.environ,
        "MONGODB_URI": server.uri,
        "MONGODB_DATABASE": DB,
        "ARCHIVE_COLLECTION": archive_collection,
        "BATCH_SIZE": str(batch_size),
        "LOG_DIR": "",
        # nx-27017 can stall for seconds (Python, one process) while it computes a large
        # aggregation; a heartbeat that times out makes pymongo interrupt the connections in
        # use (SDAM), which would send the run to its page-by-page path. MongoDB answers
        # heartbeats whatever its load: the benchmark gives the stand-in more time.
        "MONGODB_TIMEOUT_MS": "120000",
    }
    if archive_database:
        env["ARCHIVE_DATABASE"] = archive_database
    if archive_uri:
        env["ARCHIVE_MONGODB_URI"] = archive_uri
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "batch", "--run", "--json", "-q"]
        + ([] if limit is None else ["--limit", str(limit)]),
        env=env,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the archiver's (the servers are not reaped)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode not in (0, 3):
        raise SystemExit(f"archiver failed ({result.returncode}): {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    report["client_cpu_s"] = cpu  # the whole process: start-up and imports included
    # The archiver reports its own peak (VmHWM): ru_maxrss of children would count this
    # process's memory, which a child maps between fork and exec.
    return report, wall, report["peak_rss_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--naive-sample", type=int, default=2_000)
    parser.add_argument("--p-delivered", type=float, default=0.6)
    parser.add_argument("--archive-database", help="archive in another database (no server-side anti-join)")
    parser.add_argument(
        "--archive-server",
        action="store_true",
        help="the archive on a second nx-27017 (ARCHIVE_MONGODB_URI): (u) and (c) write there",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--archiver-only", action="store_true", help="scale run: seed, then (c) alone (no baselines)"
    )
    args = parser.parse_args()

    settings = Settings(mongodb_uri="mongodb://unused", mongodb_database=DB)
    with tempfile.TemporaryDirectory(prefix="bench-nx-") as data_dir:
        server = DevServer(Path(data_dir)).start()
        second = DevServer(Path(data_dir) / "archive").start() if args.archive_server else None
        try:
            client = pymongo.MongoClient(server.uri, tz_aware=True)
            database = client[DB]
            archive_client = pymongo.MongoClient(second.uri, tz_aware=True) if second else None
            # Where (u) and (c) write: the archive's own server with --archive-server.
            target = archive_client[DB] if archive_client is not None else database
            archive_uri = second.uri if second else None
            started = time.perf_counter()
            dataset = generate_dataset(args.orders, seed=1, p_delivered=args.p_delivered, p_anomalies=0.02)
            fill_database(database, dataset, settings, chunk_size=2000)
            BatchArchiver(
                client,
                settings.with_overrides(archive_collection="bench_archive"),
                BatchOptions(),
                archive_client=archive_client,
            ).ensure_indexes()
            delivered = sum(1 for o in dataset.orders if o["status"] == settings.delivered_status)
            print(
                f"seeded {args.orders} orders ({delivered} delivered), {len(dataset.clients)} clients, "
                f"{len(dataset.couriers)} couriers, {len(dataset.restaurants)} restaurants, "
                f"{len(dataset.menus)} dishes in {time.perf_counter() - started:.1f}s",
                flush=True,
            )
            del dataset

            if args.archiver_only:
                # The same archiver on the first 20,000 delivered orders of the same server
                # first (its own archive collection, dropped after): the memory baseline.
                small, _, small_peak = archiver_subprocess(
                    server,
                    settings,
                    args.batch_size,
                    args.archive_database,
                    limit=SMALL_RUN,
                    archive_collection="bench_archive_small",
                )
                database.drop_collection("bench_archive_small")
                small_rate = rate(small["scanned"], small["seconds"])
                print(
                    f"(c) first {SMALL_RUN}{small['scanned']:>8} orders {small['seconds']:8.2f}s "
                    f"{small_rate:9.0f}/s (peak RSS {small_peak:.0f} MiB)",
                    flush=True,
                )
                report, wall, peak_mib = archiver_subprocess(
                    server, settings, args.batch_size, args.archive_database
                )
                c_rate = rate(report["scanned"], report["seconds"])
                print(
                    f"(c) all        {report['scanned']:>8} orders {report['seconds']:8.2f}s "
                    f"{c_rate:9.0f}/s (process wall {wall:.2f}s, peak RSS {peak_mib:.0f} MiB); "
                    f"archived {report['archived']}, rejected {report['rejected']}, "
                    f"read failures gone through {report['read_retries']}",
                    flush=True,
                )
                print(
                    f"ratios: peak RSS all/first {SMALL_RUN} = {peak_mib / small_peak:.2f}, "
                    f"rate all/first {SMALL_RUN} = {c_rate / small_rate:.2f}",
                    flush=True,
                )
                assert report["scanned"] == delivered, (report["scanned"], delivered)
                if args.json:
                    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.json).write_text(
                        json.dumps(
                            {
                                "orders": args.orders,
                                "delivered": delivered,
                                "batch_size": args.batch_size,
                                "c_seconds": report["seconds"],
                                "c_wall_seconds": wall,
                                "c_per_s": c_rate,
                                "c_peak_rss_mib": peak_mib,
                                "small_run_orders": small["scanned"],
                                "small_run_per_s": small_rate,
                                "small_run_peak_rss_mib": small_peak,
                                "archived": report["archived"],
                                "rejected": report["rejected"],
                                "read_retries": report["read_retries"],
                            },
                            indent=2,
                        )
                    )
                return
            # Each baseline's output is dropped after it is measured: every phase then runs
            # against the same database (a bigger SQLite file is slower on nx-27017).
            a_n, a_s = naive(database, settings, args.naive_sample)
            database.drop_collection("bench_naive")
            print(f"(a) naive        {a_n:>8} orders {a_s:8.2f}s {rate(a_n, a_s):9.0f}/s", flush=True)
            b_n, b_s = raw_copy(database, settings)
            database.drop_collection("bench_raw")
            print(f"(b) raw copy     {b_n:>8} orders {b_s:8.2f}s {rate(b_n, b_s):9.0f}/s", flush=True)
            # (e) and (u) are measured before and after (c), and L uses their means: the
            # server slows as its files grow, and (c) should not profit nor suffer from order.
            e_runs, u_runs, e2_runs, u2_runs, first_runs = [], [], [], [], []
            work = ServerWork(server, second)
            for round_number in (1, 2):
                raw, e_s = work.measure("e", lambda: drain_enrichment(database, settings, args.batch_size))
                e_n = len(raw)
                e_runs.append(rate(e_n, e_s))
                print(f"(e) aggregation  {e_n:>8} orders {e_s:8.2f}s {e_runs[-1]:9.0f}/s", flush=True)
                e2_n, e2_s, first_s = work.measure("e'", lambda: drain_product_read(database, settings))
                e2_runs.append(rate(e2_n, e2_s))
                first_runs.append(first_s)
                print(
                    f"(e') run's read  {e2_n:>8} orders {e2_s:8.2f}s {e2_runs[-1]:9.0f}/s "
                    f"(first batch after {first_s:.2f}s)",
                    flush=True,
                )
                now = _utc(time.time())
                documents = []
                for doc in raw:
                    try:
                        documents.append(finish_archive_document(doc, archived_by="batch", archived_at=now))
                    except Exception:
                        continue
                del raw
                u_n, u_s = work.measure(
                    "u", lambda docs=documents: bulk_upserts(target, docs, args.batch_size)
                )
                target.drop_collection("bench_upserts")
                u_runs.append(rate(u_n, u_s))
                print(f"(u) bulk upserts {u_n:>8} orders {u_s:8.2f}s {u_runs[-1]:9.0f}/s", flush=True)
                u2_n, u2_s = work.measure(
                    "u'", lambda docs=documents: bulk_upserts(target, docs, args.batch_size, all_indexes=True)
                )
                target.drop_collection("bench_upserts")
                u2_runs.append(rate(u2_n, u2_s))
                print(f"(u') + indexes   {u2_n:>8} orders {u2_s:8.2f}s {u2_runs[-1]:9.0f}/s", flush=True)
                del documents
                if round_number == 1:
                    report, wall, peak_mib = work.measure(
                        "c",
                        lambda: archiver_subprocess(
                            server, settings, args.batch_size, args.archive_database, archive_uri=archive_uri
                        ),
                    )
                    target.drop_collection("bench_archive")
                    c_rate = rate(report["scanned"], report["seconds"])
                    client_cpu = 1000 * report["client_cpu_s"] / max(report["scanned"], 1)
                    print(
                        f"(c) this archiver{report['scanned']:>8} orders {report['seconds']:8.2f}s "
                        f"{c_rate:9.0f}/s (process wall {wall:.2f}s, peak RSS {peak_mib:.0f} MiB, "
                        f"client CPU {report['client_cpu_s']:.2f}s: {client_cpu:.3f}s per 1,000 orders)",
                        flush=True,
                    )
            e_rate, u_rate = sum(e_runs) / 2, sum(u_runs) / 2
            floor = 1 / (1 / e_rate + 1 / u_rate)
            print(
                f"    L = 1/(1/e + 1/u) with mean e {e_rate:.0f}/s, mean u {u_rate:.0f}/s: {floor:9.0f}/s",
                flush=True,
            )
            e2_rate, u2_rate = sum(e2_runs) / 2, sum(u2_runs) / 2
            own_floor = 1 / (1 / e2_rate + 1 / u2_rate)
            print(
                f"    L' = 1/(1/e' + 1/u') with mean e' {e2_rate:.0f}/s, mean u' {u2_rate:.0f}/s: {own_floor:9.0f}/s",
                flush=True,
            )
            served = {phase: work.mean(phase) for phase in ("e", "u", "e'", "u'", "c")}
            floor_work, own_work = served["e"] + served["u"], served["e'"] + served["u'"]
            print(
                "    servers' CPU: "
                + ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in served.items())
                + f"; c/(e+u) {served['c'] / max(floor_work, 1e-9):.2f}, "
                + f"c/(e'+u') {served['c'] / max(own_work, 1e-9):.2f}",
                flush=True,
            )
            ratios = {
                "c/a": c_rate / rate(a_n, a_s),
                "c/L": c_rate / floor,
                "c/L'": c_rate / own_floor,
                "c/b": c_rate / rate(b_n, b_s),
            }
            if args.archive_server:
                # Reads on one server, writes on the other: a run that overlaps them approaches
                # the slower side (M), one that takes turns their sum (L').
                slower = min(e2_rate, u2_rate)
                print(f"    M = min(e', u'), the slower side alone:        {slower:9.0f}/s", flush=True)
                ratios["c/M"] = c_rate / slower
                # nx-27017 answers an aggregation only once it has computed all of it: no write
                # can overlap that first wait. O: the best any overlap can do here.
                first = sum(first_runs) / 2
                read_s, write_s = e2_n / e2_rate, e2_n / u2_rate
                overlap = e2_n / (first + max(read_s - first, write_s))
                print(f"    O = n/(first batch + max(rest of e', u')):     {overlap:9.0f}/s", flush=True)
                ratios["c/O"] = c_rate / overlap
            print("ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
            assert report["archived"] + report["rejected"] == e_n, report
            figures = {
                "orders": args.orders,
                "delivered": e_n,
                "batch_size": args.batch_size,
                "archive_database": args.archive_database,
                "archive_server": bool(args.archive_server),
                "a_per_s": rate(a_n, a_s),
                "b_per_s": rate(b_n, b_s),
                "e_per_s": e_runs,
                "u_per_s": u_runs,
                "L_per_s": floor,
                "e2_per_s": e2_runs,
                "u2_per_s": u2_runs,
                "L2_per_s": own_floor,
                "server_cpu_s": served,
                "c_per_s": c_rate,
                "c_seconds": report["seconds"],
                "c_peak_rss_mib": peak_mib,
                "c_client_cpu_s": report["client_cpu_s"],
                "c_client_cpu_s_per_1000": client_cpu,
                **ratios,
            }
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(figures, indent=2))
            client.close()
        finally:
            if second is not None:
                second.stop()
            server.stop()


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


if __name__ == "__main__":
    main()
