"""Cold tier benchmark (#35 item 7): orders a second moved to Parquet, bytes per order beside
the archive's, memory flat with a month's size, and ``find --numero`` across 100 monthly files.

    python -m bench.cold_tier [--months-of 2000 8000] [--find-months 100] [--find-per-month 200]

On one nx-27017 (teststand/devserver.py) and a local folder:
  move: for each size N, a child process fills an archive with one month of N archived orders
        (enriched, with their source copy, as batch writes them) and moves it (``ColdMove``):
        orders/s, the Parquet bytes per order beside the archive documents' BSON bytes per
        order and the archive collection's storage per order before the move (``$collStats``
        ``storageStats``: ``storageSize``, ``totalIndexSize``, what the server says it keeps on
        disk; nx-27017's is SQLite's pages, uncompressed, not WiredTiger's), and the child's
        peak RSS (VmHWM). Flat memory: the RSS barely grows with N.
  find: 100 monthly files of M orders each; ``find_in_cold`` for one numero, timed (median of 5).
Figures from nx-27017 and this machine's disk are not MongoDB's or S3's: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bson
import pymongo
from bson import ObjectId

# Run as a file (python bench/cold_tier.py), Python puts bench/ first on the path, not the
# project's folder: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.batch.report import peak_rss_mib
from order_archiver.cold.move import ColdMove
from order_archiver.cold.search import ColdQuery, find_in_cold
from order_archiver.cold.store import ColdStore, Month
from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from teststand.devserver import DevServer

CUTOFF = datetime(2026, 1, 1, tzinfo=UTC)


def archived(n: int, delivered: datetime) -> dict[str, object]:
    """An archive document as batch writes it: enriched references, items, the source copy."""
    client, courier, restaurant, dish = ObjectId(), ObjectId(), ObjectId(), ObjectId()
    ordered = delivered - timedelta(minutes=40)
    items = [
        {"menu_id": dish, "nom": f"Plat {i}", "prix": 12.5, "quantite": 2, "sous_total": 25.0}
        for i in range(3)
    ]
    source = {
        "_id": ObjectId(),
        "numero_commande": f"CMD-{n:08d}",
        "status": "livrée",
        "date_commande": ordered,
        "date_livraison": delivered,
        "client_id": client,
        "livreur_id": courier,
        "restaurant_id": restaurant,
        "items": [{"menu_id": dish, "quantite": 2} for _ in range(3)],
        "adresse_livraison": f"{n} rue de la République, 69002 Lyon",
    }
    return {
        "_id": source["_id"],
        "numero_commande": source["numero_commande"],
        "status": "livrée",
        "date_commande": ordered,
        "date_livraison": delivered,
        "client": {"id": client, "nom": "Martin", "prenom": "Camille", "email": f"c{n}@example.org"},
        "livreur": {"id": courier, "nom": "Bernard", "prenom": "Luc"},
        "restaurant": {"id": restaurant, "nom": f"Restaurant {n % 50}", "type_cuisine": "lyonnaise"},
        "items": items,
        "adresse_livraison": source["adresse_livraison"],
        "montant_total": 75.0,
        "archived_at": delivered + timedelta(hours=1),
        "revised_at": None,
        "archived_by": "batch",
        "anomalies": [],
        "source": source,
        "source_hash": "0" * 32,
        "pii_policy": "keep",
    }


def fill(archive: pymongo.collection.Collection, month: Month, count: int, first: int = 0) -> int:
    """``count`` archived orders delivered in ``month``; their BSON bytes. The archive's
    indexes are the ones ``batch --run`` builds (the move reads on ``{date_livraison, _id}``)."""
    for keys, extra in ARCHIVE_INDEXES:
        archive.create_index(keys, **extra)
    size = 0
    for start in range(0, count, 2000):
        batch = [
            archived(first + n, month.start + timedelta(minutes=n % 40000))
            for n in range(start, min(start + 2000, count))
        ]
        size += sum(len(bson.encode(d)) for d in batch)
        archive.insert_many(batch)
    return size


def storage_stats(archive: pymongo.collection.Collection) -> dict[str, int]:
    """What the server keeps on disk for the collection: ``$collStats``' ``storageStats`` (4.4 to
    8.0; the ``collStats`` command is deprecated since 6.2): ``storageSize`` (the data, as
    stored: compressed by WiredTiger) and ``totalIndexSize``."""
    [stats] = archive.aggregate([{"$collStats": {"storageStats": {}}}])
    found = stats["storageStats"]
    return {
        "storageSize": int(found.get("storageSize") or 0),
        "totalIndexSize": int(found.get("totalIndexSize") or 0),
    }


def one_month(uri: str, count: int, folder: Path) -> dict[str, float]:
    """The child: one month of ``count`` orders archived, then moved; its figures."""
    with pymongo.MongoClient(uri, tz_aware=True) as client:
        database = client[f"bench_cold_{count}"]
        archive, journal = database["Commande_archive"], database["archiver_checkpoints"]
        bson_bytes = fill(archive, Month(2025, 3), count)
        storage = storage_stats(archive)
        store = ColdStore(f"file://{folder}")
        started = time.perf_counter()
        report = ColdMove(store, archive, journal, CUTOFF).run()
        seconds = time.perf_counter() - started
    assert report.moved == count, report
    return {
        "orders": count,
        "seconds": round(seconds, 2),
        "orders_per_s": round(count / seconds),
        "parquet_bytes_per_order": round(report.bytes / count),
        "bson_bytes_per_order": round(bson_bytes / count),
        "storage_size_bytes_per_order": round(storage["storageSize"] / count),
        "index_bytes_per_order": round(storage["totalIndexSize"] / count),
        "peak_rss_mib": peak_rss_mib() or 0.0,
    }


def find_across_months(uri: str, months: int, per_month: int, folder: Path) -> dict[str, float]:
    with pymongo.MongoClient(uri, tz_aware=True) as client:
        database = client["bench_cold_find"]
        archive, journal = database["Commande_archive"], database["archiver_checkpoints"]
        month = Month(2016, 1)
        for index in range(months):
            fill(archive, month, per_month, first=index * per_month)
            month = month.next()
        store = ColdStore(f"file://{folder}")
        ColdMove(store, archive, journal, CUTOFF).run()
    files = len(store.files())
    wanted = f"CMD-{(months // 2) * per_month + 7:08d}"
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        found = list(find_in_cold(store, ColdQuery(numeros=[wanted])))
        timings.append(time.perf_counter() - started)
        assert len(found) == 1, found
    return {
        "files": files,
        "orders": months * per_month,
        "find_median_s": round(statistics.median(timings), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--months-of", type=int, nargs="+", default=[2000, 8000], help="orders in the month moved"
    )
    parser.add_argument("--find-months", type=int, default=100)
    parser.add_argument("--find-per-month", type=int, default=200)
    parser.add_argument("--child", nargs=3, metavar=("URI", "N", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        uri, count, folder = args.child
        print(json.dumps(one_month(uri, int(count), Path(folder))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as temp:
        server = DevServer(Path(temp) / "db").start()
        try:
            for count in args.months_of:
                folder = Path(temp) / f"cold-{count}"
                folder.mkdir()
                child = [sys.executable, __file__, "--child", server.uri, str(count), str(folder)]
                figures = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
                print(f"move: {json.dumps(figures)}")
            folder = Path(temp) / "cold-find"
            folder.mkdir()
            print(
                f"find: {json.dumps(find_across_months(server.uri, args.find_months, args.find_per_month, folder))}"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
