"""Test helpers shared by unit, integration and end-to-end tests."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from config import Settings
from generator import Dataset, generate_dataset, strip_markers
from simulation import fill_database

ANCHOR = datetime(2026, 11, 26, tzinfo=UTC)


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
