"""Data generator speed: ``python -m bench.generate [--orders 10000]``.

Times generate_dataset alone, and generation plus a bulk fill of an in-process (mongomock)
database, the way `simulate.py` fills one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run as a file (python bench/generate.py), Python puts bench/ first on the path, not the project's
# folder that python -m bench.generate starts from: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.settings import Settings
from order_archiver.simulation.database import fill_database, new_client
from order_archiver.simulation.generator import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=10_000)
    args = parser.parse_args()
    started = time.perf_counter()
    dataset = generate_dataset(args.orders, seed=42)
    generated = time.perf_counter() - started
    documents = sum(len(docs) for _, docs in dataset.by_collection(Settings()))
    print(
        f"generate: {args.orders} orders ({documents} documents) in {generated:.2f}s "
        f"({args.orders / generated:.0f} orders/s)"
    )
    client = new_client()
    started = time.perf_counter()
    fill_database(client["bench"], dataset, Settings(simulation=True))
    print(f"bulk fill (mongomock): {time.perf_counter() - started:.2f}s")


if __name__ == "__main__":
    main()
