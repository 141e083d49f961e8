"""A first archive shared by N processes (`batch --run --partition K/N`, #34 item 5).

    python -m bench.partitions [--orders 100000] [--partitions 1 2 4] [--batch-size 500]

On one nx-27017: the same ORDERS orders (60 % delivered) in a fresh database per case, then
the backfill timed: one process without --partition (the one-aggregation fast path), one with
--partition 0/1 (the path a share reads: _id pages of the status/_id index, the share kept on
the client, then its orders enriched by _id), and N processes --partition K/N started together
for each N of --partitions above 1. Wall time is from the first start to the last exit; each
archive is checked to hold the same orders as the single process's.

One test server serialises writes (SQLite: one writer at a time; every process's chunk waits
for the others'): no speed-up is expected here, and none is claimed. What N processes give on a
sharded cluster, where the shares' writes land on every shard at once, is worked out on paper
in docs/performance.md ("A first archive in N parts"). Figures from nx-27017 are not MongoDB's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymongo

# Run as a file (python bench/partitions.py), Python puts bench/ first on the path, not the project's
# folder that python -m bench.partitions starts from: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.settings import Settings
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import Dataset, generate_dataset
from teststand.devserver import DevServer

ROOT = Path(__file__).resolve().parent.parent
NO_SPEED_UP = (
    "one test server serialises writes (SQLite, one writer at a time): no speed-up is expected "
    "from N processes here; on a sharded cluster see docs/performance.md"
)


def start(uri: str, database: str, batch_size: int, *flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DATABASE": database, "LOG_DIR": ""}
    command = [sys.executable, str(ROOT / "main.py"), "batch", "--run", "--json", "-q"]
    return subprocess.Popen(
        [*command, "--batch-size", str(batch_size), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_case(
    client, uri: str, dataset: Dataset, label: str, shares: list[list[str]], batch_size: int
) -> dict:
    """``shares``: each process's extra flags. The database is filled fresh, then timed."""
    database = "p_" + "".join(c if c.isalnum() else "_" for c in label)
    client.drop_database(database)
    fill_database(client[database], dataset, Settings(mongodb_uri=uri, mongodb_database=database, log_dir=""))
    started = time.perf_counter()
    processes = [start(uri, database, batch_size, *flags) for flags in shares]
    reports, warnings = [], []
    for process in processes:
        stdout, stderr = process.communicate(timeout=7200)
        if process.returncode not in (0, 3):
            raise SystemExit(f"{label}: batch failed ({process.returncode}): {stderr[-2000:]}")
        reports.append(json.loads(stdout))
        warnings += [line for line in stderr.splitlines() if "WARNING" in line]  # -q: warnings only
    wall = time.perf_counter() - started
    archived = sum(report["archived"] for report in reports)
    # Found in the archive when written: a chunk written again after a write that failed
    # midway and was retried (idempotent), counted "already archived" the second time.
    again = sum(report["already_archived"] for report in reports)
    ids = {d["_id"] for d in client[database]["Commande_archive"].find({}, {"_id": 1})}
    slowest = max(report["seconds"] for report in reports)
    print(
        f"  {label:<22} {len(processes)} process(es): {archived} archived ({again} already), wall {wall:6.1f}s "
        f"({archived / wall:6.0f} orders/s in all), slowest process {slowest:6.1f}s",
        flush=True,
    )
    for line in warnings[:5]:
        print(f"    {line[:200]}", flush=True)
    return {
        "case": label,
        "processes": len(processes),
        "archived": archived,
        "already_archived": again,
        "wall_s": wall,
        "ids": ids,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=100_000, help="orders generated (default 100,000)")
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=34)
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    dataset = generate_dataset(args.orders, seed=args.seed, p_delivered=0.6, p_anomalies=0.0)
    cases: list[tuple[str, list[list[str]]]] = [
        ("one, no --partition", [[]]),
        ("--partition 0/1", [["--partition", "0/1"]]),
    ]
    cases += [
        (f"--partition K/{n}", [["--partition", f"{k}/{n}"] for k in range(n)])
        for n in args.partitions
        if n > 1
    ]
    print(f"backfill of {args.orders} orders (batch size {args.batch_size}); {NO_SPEED_UP}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-partitions-") as temp:
        server = DevServer(Path(temp) / "nx").start()
        try:
            with pymongo.MongoClient(server.uri, tz_aware=True) as client:
                figures = [
                    one_case(client, server.uri, dataset, label, shares, args.batch_size)
                    for label, shares in cases
                ]
        finally:
            server.stop()
    reference = figures[0]
    for figure in figures[1:]:
        same = figure.pop("ids") == reference["ids"]
        figure["same_archive"] = same
        print(f"  {figure['case']}: the same archive as one process: {'yes' if same else 'NO'}")
    reference.pop("ids")
    print(f"note: {NO_SPEED_UP}")
    if args.json:
        Path(args.json).write_text(json.dumps({"orders": args.orders, "cases": figures}, indent=2))


if __name__ == "__main__":
    main()
