"""A short tour of order-archiver on the embedded database (no server needed): ``python demo.py``.

Generates orders, shows a dry run and one archive document, archives, runs again to show
that nothing is archived twice, then purges the source. (The full demo, with its own
MongoDB-protocol server, live deliveries in watch mode, status and verify, is issue #5.)
"""

from __future__ import annotations

import sys

from bson import json_util

from archiver import BatchOptions, run_batch
from config import Settings
from generator import generate_dataset
from simulation import fill_database, new_client


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def demo() -> int:
    settings = Settings(simulation=True, log_dir="")
    client = new_client()
    database = client[settings.mongodb_database]
    orders = database[settings.orders_collection]
    archive = database[settings.archive_collection]

    step("Generate 500 orders (seed 7, 60% delivered, 3% dirty) into an in-process database")
    fill_database(database, generate_dataset(500, seed=7, p_anomalies=0.03), settings)
    print(
        f"{orders.count_documents({})} orders, {orders.count_documents({'status': settings.delivered_status})} delivered"
    )

    step("Dry run: what would be archived (nothing is written)")
    report = run_batch(client, settings, BatchOptions(run=False, samples=1))
    print(report.summary_line())
    print("one archive document:")
    print(
        json_util.dumps(
            report.samples[0], indent=2, ensure_ascii=False, json_options=json_util.RELAXED_JSON_OPTIONS
        )
    )

    step("Archive")
    print(run_batch(client, settings, BatchOptions(run=True)).summary_line())

    step("Run again: every order is already archived, nothing is written twice")
    print(run_batch(client, settings, BatchOptions(run=True)).summary_line())
    print(f"archive: {archive.count_documents({})} documents")

    step("Purge the source of what is confirmed archived")
    print(run_batch(client, settings, BatchOptions(run=True, purge_source=True)).summary_line())
    print(f"source: {orders.count_documents({})} orders left (not delivered, or rejected as invalid)")
    return 0


if __name__ == "__main__":
    sys.exit(demo())
