"""ARCHIVE_PII_RETENTION benchmark: an erasure costs the orders that crossed the limit, not the
archive's history.

    python -m bench.pii_retention [--sizes 20000 100000] [--new 500]

On one nx-27017 (teststand/devserver.py), in one run, for each N:
  H: an archive of N orders delivered long ago whose personal data an earlier run erased,
     plus K orders that crossed the limit since (personal data still there); one erasure
     (``retention.PiiRetention.erase``, what ``batch --run`` calls) timed;
  S: the K orders alone, the same erasure timed.
H/S is the cost of the history; the target is H/S <= 1.5 at every N (the erasure reads the
``{forgotten_at, date_livraison}`` index range of the orders not erased yet). The archive's
indexes are the ones ``batch --run`` builds. Figures from nx-27017 are not MongoDB's: read the
ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
from bson import ObjectId

# Run as a file (python bench/pii_retention.py), Python puts bench/ first on the path, not the project's
# folder that python -m bench.pii_retention starts from: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.context import RunContext
from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.mongodb.retention import PiiRetention
from order_archiver.settings import Duration
from teststand.devserver import DevServer

NOW = datetime.now(UTC)
LENGTH = Duration(days=365)


def order(n: int, delivered: datetime, erased: bool) -> dict[str, Any]:
    person = None if erased else f"person-{n}"
    return {
        "_id": ObjectId(),
        "numero_commande": f"CMD-{n:07d}",
        "date_livraison": delivered,
        "client": {
            "id": ObjectId(),
            "nom": person,
            "prenom": person,
            "email": None if erased else f"{n}@example.org",
            "telephone": None if erased else f"+33 6 {n:08d}",
        },
        "adresse_livraison": None if erased else f"{n} rue de la Paix",
        "source": {"adresse_livraison": None if erased else f"{n} rue de la Paix"},
        "montant_total": 20.0,
        **(
            {"forgotten_at": NOW - timedelta(days=30), "forgotten_by": "ARCHIVE_PII_RETENTION"}
            if erased
            else {}
        ),
    }


def fill(archive: Any, history: int, new: int) -> None:
    for keys, extra in ARCHIVE_INDEXES:
        archive.create_index(keys, **extra)
    old = NOW - LENGTH - timedelta(days=400)
    crossed = NOW - LENGTH - timedelta(days=1)
    for start in range(0, history, 5000):
        archive.insert_many([order(n, old, True) for n in range(start, min(start + 5000, history))])
    archive.insert_many([order(history + n, crossed, False) for n in range(new)])


def timed_erasure(archive: Any) -> tuple[float, int]:
    retention = PiiRetention(archive, LENGTH, lambda: NOW, RunContext())
    started = time.perf_counter()
    erased = retention.erase()
    return time.perf_counter() - started, erased


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--new", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pii-") as folder:
        server = DevServer(Path(folder)).start()
        try:
            with pymongo.MongoClient(server.uri, tz_aware=True) as client:
                alone, erased_alone = 0.0, 0
                for label, history in [("S", 0), *((f"H{n}", n) for n in args.sizes)]:
                    archive = client[f"bench_{label.lower()}"]["Commande_archive"]
                    fill(archive, history, args.new)
                    seconds, erased = timed_erasure(archive)
                    assert erased == args.new, (label, erased)
                    if history == 0:
                        alone, erased_alone = seconds, erased
                        print(f"S: {erased_alone} orders to erase, no history: {seconds:.3f}s")
                        continue
                    print(
                        f"H: {history} erased before + {erased} to erase: {seconds:.3f}s, H/S = {seconds / alone:.2f}"
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
