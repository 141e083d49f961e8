"""A client's orders beside a large archive: ``forget --client`` and ``restore --client`` cost the
client's orders, not the archive's history.

    python -m bench.client_selections [--sizes 100000 1000000] [--orders 20]

On one nx-27017 (teststand/devserver.py), in one run, for each N:
  H: an archive of N orders of other clients plus the K orders of two clients (A, B);
  S: the same 2K orders alone.
On each, timed: ``forget`` dry run (the median of 5), ``forget --run``, ``restore`` dry run (the
median of 5), ``restore --run``; first *before* this change (at ``--before-sizes`` only: it
scans the whole archive, minutes at 1,000,000; once each) (the archive's indexes as a batch
built them before: no ``{client.id}``, no ``{source.client_id}``; forget as it was: two
``count_documents`` and the erasure's walk), on client A; then the two indexes built and the
code as it is, on client B. H/S is the cost of the history. The archive's documents are
minimal but shaped as the archiver writes them (client reference, address, source copy).
Figures from nx-27017 are not MongoDB's: read the ratios (nx-27017 reads a
``count_documents`` aggregate over the whole collection, index or not: the "before" forget).
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
from bson import ObjectId

# Run as a file (python bench/client_selections.py), Python puts bench/ first on the path, not the project's
# folder that python -m bench.client_selections starts from: the product and teststand are imported from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_archiver.context import RunContext
from order_archiver.mongodb.erasure import erase_personal_data
from order_archiver.mongodb.forgotten import orders_of, still_holding
from order_archiver.mongodb.indexes import ARCHIVE_INDEXES
from order_archiver.operations.forget import Person, forget_person
from order_archiver.operations.restore import RestoreSelection, restore
from order_archiver.orders.erasing import CLIENT
from order_archiver.settings import Settings
from teststand.devserver import DevServer

NEW_INDEXES = {"client.id", "source.client_id"}  # what this change adds to ARCHIVE_INDEXES
FILL_CHUNK = 5000
REPEATS = 5
START = datetime(2024, 1, 1, tzinfo=UTC)


def archived(n: int, order_id: ObjectId, client_id: ObjectId) -> dict[str, Any]:
    when = START + timedelta(minutes=n)
    address = f"{n} rue de la Paix"
    return {
        "_id": order_id,
        "numero_commande": f"CMD-{n:08d}",
        "status": "livrée",
        "date_commande": when,
        "date_livraison": when + timedelta(minutes=40),
        "client": {
            "id": client_id,
            "nom": f"nom-{n}",
            "prenom": "p",
            "email": f"{n}@example.org",
            "telephone": "+33",
        },
        "adresse_livraison": address,
        "montant_total": 20.0,
        "pii_policy": "keep",
        "archived_at": when + timedelta(hours=1),
        "source": {
            "_id": order_id,
            "numero_commande": f"CMD-{n:08d}",
            "status": "livrée",
            "client_id": client_id,
            "adresse_livraison": address,
            "date_commande": when,
        },
    }


def fill(archive: Any, history: int, clients: list[ObjectId], per_client: int, seed: int) -> None:
    """``history`` orders of other clients, and ``per_client`` of each of ``clients`` spread
    among them (in ``_id`` order too); every index but the two this change adds."""
    rng = random.Random(seed)
    total = history + per_client * len(clients)
    owners: dict[int, ObjectId] = {}
    for client_id in clients:
        for position in rng.sample([p for p in range(total) if p not in owners], per_client):
            owners[position] = client_id
    for start in range(0, total, FILL_CHUNK):
        archive.insert_many(
            [
                archived(n, ObjectId(), owners.get(n) or ObjectId())
                for n in range(start, min(start + FILL_CHUNK, total))
            ],
            ordered=False,
        )
    for keys, extra in ARCHIVE_INDEXES:
        if keys[0][0] not in NEW_INDEXES:
            archive.create_index(keys, **extra)


def build_new_indexes(archive: Any) -> None:
    for keys, extra in ARCHIVE_INDEXES:
        if keys[0][0] in NEW_INDEXES:
            archive.create_index(keys, **extra)


def previous_forget(client: Any, settings: Settings, client_id: ObjectId, run: bool) -> tuple[int, int]:
    """forget as it was before this change: two counts, then the erasure's walk."""
    archive = client[settings.mongodb_database][settings.archive_collection]
    selection = orders_of(CLIENT, client_id)
    orders = archive.count_documents(selection)
    erased = archive.count_documents(still_holding(CLIENT, client_id))
    if run and erased:
        erasure = Person(CLIENT, client_id).erasure(settings)
        erase_personal_data(archive, selection, erasure, context=RunContext())
    return orders, erased


def timed(action: Callable[[], Any], repeats: int = 1) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(client: Any, settings: Settings, client_id: ObjectId, before: bool) -> dict[str, float]:
    selection = RestoreSelection(client_id=client_id)
    repeats = 1 if before else REPEATS  # a scan of the whole archive is not noisy
    if before:
        forget_dry = timed(lambda: previous_forget(client, settings, client_id, False), repeats)
        forget_run = timed(lambda: previous_forget(client, settings, client_id, True))
    else:
        forget_dry = timed(lambda: forget_person(client, settings, Person(CLIENT, client_id)), repeats)
        forget_run = timed(lambda: forget_person(client, settings, Person(CLIENT, client_id), run=True))
    restore_dry = timed(lambda: restore(client, settings, selection), repeats)
    restore_run = timed(lambda: restore(client, settings, selection, run=True))
    return {
        "forget": forget_dry,
        "forget --run": forget_run,
        "restore": restore_dry,
        "restore --run": restore_run,
    }


def line(label: str, figures: dict[str, float], alone: dict[str, float] | None) -> str:
    cells = []
    for name, seconds in figures.items():
        ratio = f" (H/S {seconds / alone[name]:.1f})" if alone else ""
        cells.append(f"{name} {seconds * 1000:.0f} ms{ratio}")
    return f"{label}: " + ", ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--orders", type=int, default=20, help="orders of each measured client")
    parser.add_argument(
        "--before-sizes",
        type=int,
        nargs="*",
        default=[100_000],
        help="the sizes at which the previous shape is measured too (it scans: minutes at 1,000,000)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-clients-") as folder:
        server = DevServer(Path(folder)).start()
        try:
            with pymongo.MongoClient(server.uri, tz_aware=True) as client:
                alone: dict[bool, dict[str, float]] = {}
                for history in [0, *args.sizes]:
                    settings = Settings(
                        mongodb_uri=server.uri, mongodb_database=f"bench_{history}", log_dir=""
                    )
                    shapes = (True, False) if not history or history in args.before_sizes else (False,)
                    bench_database(client, settings, history, args.orders, shapes, alone)
        finally:
            server.stop()


def bench_database(
    client: Any,
    settings: Settings,
    history: int,
    per_client: int,
    shapes: tuple[bool, ...],
    alone: dict[bool, dict[str, float]],
) -> None:
    """One database: filled, then measured in each shape (before, after), a client each."""
    archive = client[settings.mongodb_database][settings.archive_collection]
    clients = {True: ObjectId(), False: ObjectId()}  # before's and after's
    started = time.perf_counter()
    fill(archive, history, list(clients.values()), per_client, seed=history)
    label = f"H{history}" if history else "S"
    print(f"{label}: {history} + {2 * per_client} orders built in {time.perf_counter() - started:.0f} s")
    for before in shapes:
        if not before:
            built = timed(functools.partial(build_new_indexes, archive))
            print(f"  {label}: {{client.id}} and {{source.client_id}} built in {built:.1f} s")
        figures = measure(client, settings, clients[before], before)
        if not history:
            alone[before] = figures
        tag = "before (no index, three reads)" if before else "after"
        print(line(f"  {label} {tag}", figures, alone[before] if history else None))


if __name__ == "__main__":
    main()
