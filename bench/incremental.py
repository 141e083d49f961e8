"""Incremental batch benchmark: a scheduled run costs what is new, not what has piled up.

    python -m bench.incremental [--sizes 20000 200000] [--deliveries 1000]

On one nx-27017, in one run, for each N:
  H: N orders, all delivered ones archived by a first `batch --run` (a full pass), then D
     deliveries: a third late (orders created before the first run, delivered now), two
     thirds new orders delivered now; then the second `batch --run` (incremental) is timed;
  S: the same D delivered orders alone (with the reference collections), and one
     `batch --run` timed.
H/S is the cost of the history; the target is H/S <= 1.5 at every N. Each run is
`main.py batch --run --json` as a subprocess: its own `seconds` (start-up excluded) and the
process wall time are printed. Figures from nx-27017 are not MongoDB's: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pymongo

# Run as a file (python bench/incremental.py), Python puts bench/ first on the path, not the project's
# folder that python -m bench.incremental starts from: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.settings import Settings
from order_archiver.simulation.database import fill_database
from order_archiver.simulation.generator import generate_dataset, strip_markers
from teststand.devserver import DevServer

ROOT = Path(__file__).resolve().parent.parent

REFERENCES = ("Client", "Livreur", "Restaurants", "Menu")


def batch_run(uri: str, database: str, *flags: str) -> tuple[dict, float]:
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DATABASE": database, "LOG_DIR": ""}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "batch", "--run", "--json", "-q", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode not in (0, 3):
        raise SystemExit(f"batch failed ({result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout), wall


def deliver_d(database, dataset, count: int) -> list:
    """``count`` deliveries now: a third late (existing pending orders), the rest new orders."""
    now = datetime.now(UTC)
    late = [o["_id"] for o in dataset.orders if o["status"] != "livrée" and "_dirty" not in o][: count // 3]
    database["Commande"].update_many(
        {"_id": {"$in": late}}, {"$set": {"status": "livrée", "date_livraison": now}}
    )
    template = strip_markers(next(o for o in dataset.orders if "_dirty" not in o))
    template.pop("_id")
    new = (
        database["Commande"]
        .insert_many(
            [
                {
                    **template,
                    "numero_commande": f"NEW-{n:06d}",
                    "status": "livrée",
                    "date_commande": now,
                    "date_livraison": now,
                }
                for n in range(count - len(late))
            ]
        )
        .inserted_ids
    )
    return late + list(new)


def one_size(client, uri: str, size: int, deliveries: int, seed: int) -> dict:
    settings = Settings(mongodb_uri=uri, mongodb_database=f"h{size}", log_dir="")
    history = client[f"h{size}"]
    started = time.perf_counter()
    dataset = generate_dataset(size, seed=seed, p_delivered=0.6, p_anomalies=0.0)
    fill_database(history, dataset, settings)
    print(f"N={size}: seeded in {time.perf_counter() - started:.1f}s", flush=True)
    first, first_wall = batch_run(uri, f"h{size}")
    print(
        f"  H first run ({first['mode']}): {first['archived']} archived in {first['seconds']:.2f}s "
        f"(wall {first_wall:.2f}s)",
        flush=True,
    )
    ids = deliver_d(history, dataset, deliveries)
    # S: the same D delivered orders alone, with the references they point to.
    alone = client[f"s{size}"]
    for name in REFERENCES:
        alone[name].insert_many(list(history[name].find()))
    alone["Commande"].insert_many(list(history["Commande"].find({"_id": {"$in": ids}})))
    h, h_wall = batch_run(uri, f"h{size}")
    s, s_wall = batch_run(uri, f"s{size}")
    assert h["archived"] == s["archived"] == deliveries, (h, s)
    # For reference, what every run cost before: the full walk (--full), nothing new to archive.
    full, _ = batch_run(uri, f"h{size}", "--full")
    ratio, wall_ratio = h["seconds"] / s["seconds"], h_wall / s_wall
    print(
        f"  H second run ({h['mode']}, since {h['since']}): {h['archived']} archived, "
        f"{h['scanned']} read, {h['seconds']:.3f}s (wall {h_wall:.2f}s)\n"
        f"  S run ({s['mode']}): {s['archived']} archived, {s['scanned']} read, {s['seconds']:.3f}s "
        f"(wall {s_wall:.2f}s)\n"
        f"  H/S = {ratio:.2f} (wall {wall_ratio:.2f}); target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'}\n"
        f"  reference, H with --full (the walk every run made before): {full['scanned']} read, "
        f"{full['seconds']:.2f}s = {full['seconds'] / h['seconds']:.1f} x the incremental run",
        flush=True,
    )
    return {
        "N": size,
        "D": deliveries,
        "first_seconds": first["seconds"],
        "H_seconds": h["seconds"],
        "S_seconds": s["seconds"],
        "H_wall": h_wall,
        "S_wall": s_wall,
        "H/S": ratio,
        "H/S_wall": wall_ratio,
        "H_full_seconds": full["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as temp:
        server = DevServer(Path(temp) / "nx").start()
        try:
            with pymongo.MongoClient(server.uri, tz_aware=True) as client:
                figures = [one_size(client, server.uri, n, args.deliveries, args.seed) for n in args.sizes]
        finally:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
