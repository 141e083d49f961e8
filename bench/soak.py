"""Watch soak: ``python -m bench.soak --minutes 10 --rate 20``.

Starts nx-27017 and `main.py watch` (a subprocess, as a service runs it), then delivers
orders at a steady rate for --minutes. Every minute it prints the latency percentiles of
that minute's deliveries and the watcher's RSS: both should stay flat. Latency is the
archive document's ``archived_at`` (set once the micro-batch is enriched, just before its
write) minus the moment the delivery's ``update_one`` returned.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pymongo
from bson import ObjectId

# Run as a file (python bench/soak.py), Python puts bench/ first on the path, not the project's
# folder that python -m bench.soak starts from: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.settings import Settings
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import generate_dataset, strip_markers
from teststand.devserver import DevServer

ROOT = Path(__file__).resolve().parent.parent

DB = "soak"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20, help="deliveries per second")
    args = parser.parse_args()
    needed = int(args.minutes * 60 * args.rate) + 100
    settings = Settings(mongodb_uri="mongodb://unused", mongodb_database=DB, log_dir="")

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as folder:
        # A replica set (the default, said here): a standalone refuses change streams (40573).
        server = DevServer(Path(folder) / "nx", replica_set="rs0").start()
        watcher = None
        try:
            client = pymongo.MongoClient(server.uri, tz_aware=True)
            database = client[DB]
            base = generate_dataset(2000, seed=9, p_delivered=0.0, p_anomalies=0.0)
            template = [strip_markers(o) for o in base.orders]
            base.orders = []
            fill_database(database, base, settings)
            orders = database[settings.orders_collection]
            ids = []
            for start in range(0, needed, 5000):
                batch = []
                for n in range(start, min(start + 5000, needed)):
                    order = dict(template[n % len(template)])
                    order.update(_id=ObjectId(), numero_commande=f"SOAK-{n:08d}")
                    batch.append(order)
                    ids.append(order["_id"])
                orders.insert_many(batch, ordered=False)
            env = {
                **os.environ,
                "MONGODB_URI": server.uri,
                "MONGODB_DATABASE": DB,
                "LOG_DIR": "",
                "RESUME_TOKEN_FILE": str(Path(folder) / "token.json"),
            }
            # A deployment's first batch --run builds the indexes the watcher waits for.
            subprocess.run(
                [sys.executable, str(ROOT / "main.py"), "batch", "--run", "-q"],
                env=env,
                cwd=folder,
                check=True,
            )
            watcher = subprocess.Popen(
                [sys.executable, str(ROOT / "main.py"), "watch", "-q"], env=env, cwd=folder
            )
            while not (Path(folder) / "token.json").exists():
                time.sleep(0.1)
            print(
                f"soak: {args.minutes:g} min at {args.rate:g} deliveries/s; {needed} pending orders",
                flush=True,
            )
            print("minute  deliveries  p50 ms  p95 ms  p99 ms  watcher RSS MiB", flush=True)
            rows: list[tuple[float, float, float]] = []  # p50, p99, RSS of each minute
            archive = database[settings.archive_collection]
            interval = 1.0 / args.rate
            cursor = 0
            started = time.monotonic()
            for minute in range(1, int(args.minutes) + 1):
                sent: dict[ObjectId, datetime] = {}
                minute_end = started + minute * 60
                next_at = time.monotonic()
                while time.monotonic() < minute_end:
                    order_id = ids[cursor]
                    cursor += 1
                    orders.update_one({"_id": order_id}, {"$set": {"status": "livrée"}})
                    sent[order_id] = datetime.now(UTC)
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
                deadline = time.monotonic() + 30
                while archive.count_documents({"_id": {"$in": list(sent)}}) < len(sent):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"minute {minute}: deliveries not archived within 30 s")
                    time.sleep(0.2)
                latencies = [
                    (doc["archived_at"] - sent[doc["_id"]]).total_seconds()
                    for doc in archive.find({"_id": {"$in": list(sent)}}, {"archived_at": 1})
                ]
                rows.append((percentile(latencies, 0.5), percentile(latencies, 0.99), rss_mib(watcher.pid)))
                print(
                    f"{minute:>6}  {len(sent):>10}  {rows[-1][0]:6.1f}  "
                    f"{percentile(latencies, 0.95):6.1f}  {rows[-1][1]:6.1f}  {rows[-1][2]:15.1f}",
                    flush=True,
                )
            if len(rows) >= 2:
                # Flat means the last minute looks like the first (minute 1 includes start-up).
                first, last = rows[0], rows[-1]
                peak_rss = max(row[2] for row in rows)
                print(
                    f"last/first minute: p50 {last[0] / first[0]:.2f}x, p99 {last[1] / first[1]:.2f}x, "
                    f"RSS {last[2] / first[2]:.2f}x (peak {peak_rss:.1f} MiB, "
                    f"{peak_rss / first[2]:.2f}x minute 1)",
                    flush=True,
                )
            client.close()
        finally:
            if watcher is not None:
                watcher.terminate()
                print(f"watcher exit code after SIGTERM: {watcher.wait(30)}")
            server.stop()


if __name__ == "__main__":
    main()
