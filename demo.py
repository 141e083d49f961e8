"""The whole story in two minutes: ``python demo.py`` (``--auto`` for no pauses).

With no ``MONGODB_URI`` it starts its own nx-27017 (a MongoDB wire-protocol server, from the
dev requirements) on a free port in a temporary folder; with one, it works in a database of
its own that it creates, ``order_archiver_demo`` (``--database``), and never touches yours. It
fills it with generated data, archives it with batch, starts the watcher, delivers orders live
and shows each one archived with its latency, shows `status` and `verify`, and removes
everything it made: the database it created (dropped at the end, Ctrl+C and SIGTERM included),
the server it started. It never drops a database it did not create: one of that name that
exists already, not made by the demo, is refused before anything is written.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from order_archiver.cli.installed import dependencies_installed

with dependencies_installed(__name__):  # outside .venv: one line naming the fix, not a traceback
    from pymongo.database import Database

    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.cli.definition import DATABASE, NON_NEGATIVE, POSITIVE, OneLineParser
    from order_archiver.context import RunContext
    from order_archiver.documents import Client, Document
    from order_archiver.errors import ArchiverError, ConfigError
    from order_archiver.logs import redact, setup_logging
    from order_archiver.mongodb.connection import open_client
    from order_archiver.operations.status import collect_status
    from order_archiver.operations.verify import verify
    from order_archiver.reporting.progress import progress_mode
    from order_archiver.settings import Settings, load_settings
    from order_archiver.simulation.database import fill_database
    from order_archiver.simulation.generator import generate_dataset
    from order_archiver.watch.watcher import Watcher, WatchOptions

DEMO_DATABASE = "order_archiver_demo"
# The collection that says a database is the demo's: written first, before anything else; a
# database without it is someone else's, never written to nor dropped (an earlier demo killed
# with -9 leaves its database with it: the next demo takes it and drops it).
DEMO_MARK = "order_archiver_demo_made_this"


class Demo:
    def __init__(self, auto: bool) -> None:
        self.auto = auto or not sys.stdin.isatty()
        self.step_number = 0

    def step(self, title: str) -> None:
        self.step_number += 1
        print(f"\n=== {self.step_number}. {title}", flush=True)
        if not self.auto:
            input("(Enter to continue) ")


def start_server(folder: Path) -> tuple[str, Any]:
    """A development server of the demo's own (nx-27017 with its known faults fixed)."""
    from teststand.devserver import DevServer

    server = DevServer(
        folder / "nx", replica_set="rs0"
    ).start()  # the watcher needs change streams (a standalone: 40573)
    return server.uri, server


def _archived(archive: Any, order: Mapping[str, object], timeout_s: float = 10.0) -> dict[str, Any]:
    """The order's archive document, as soon as the watcher has written it."""
    deadline = time.perf_counter() + timeout_s
    while (document := archive.find_one({"_id": order["_id"]})) is None:
        if time.perf_counter() > deadline:
            raise SystemExit(f"{order['numero_commande']} was not archived within {timeout_s:g} s")
        time.sleep(0.001)
    return dict(document)


def claim(database: Database[Document]) -> None:
    """The database is the demo's from here on: made now (its mark written first), or made by
    an earlier demo (the mark there). One that holds anything else is refused, exit 2."""
    found = database.list_collection_names()
    if found and DEMO_MARK not in found:
        raise ConfigError(
            f"database {database.name} exists on this server and was not made by the demo, which never "
            "writes to nor drops a database it did not create: name another with --database (one left by "
            "an earlier demo.py without its mark: drop it yourself)"
        )
    database[DEMO_MARK].replace_one({"_id": "demo"}, {"_id": "demo", "by": "demo.py"}, upsert=True)


def drop(client: Client, name: str) -> None:
    """The demo's database, dropped: ``dropDatabase`` (dbAdmin), or with only readWrite, each of
    its collections (``dropCollection``): MongoDB lists no database without a collection."""
    from pymongo.errors import OperationFailure, PyMongoError

    try:
        try:
            client.drop_database(name)
        except OperationFailure as exc:
            if exc.code != 13:  # Unauthorized
                raise
            for collection in client[name].list_collection_names():
                client[name].drop_collection(collection)
    except PyMongoError as exc:  # on the way out (the server gone): said, the rest still stopped
        sys.stderr.write(f"error: database {name} not dropped ({redact(str(exc))}): drop it yourself\n")
        return
    print(f"\ndatabase {name} dropped: the demo made it.", flush=True)


def run(argv: Sequence[str] | None = None) -> int:
    # The product's parser and types: a usage error is one line, exit 2. The help as plain text:
    # the docstring's backticks are for a reader of the source.
    parser = OneLineParser(
        description=(__doc__ or "").replace("`", ""), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--auto", action="store_true", help="no pauses between steps")
    parser.add_argument("--orders", type=POSITIVE, default=2000, help="orders to generate (2000)")
    parser.add_argument("--deliveries", type=NON_NEGATIVE, default=5, help="orders delivered live (5)")
    parser.add_argument(
        "--database",
        type=DATABASE,
        metavar="NAME",
        default=DEMO_DATABASE,
        help=f"the database the demo creates, works in and drops at its end ({DEMO_DATABASE}); "
        "refused if it exists and the demo did not make it",
    )
    args = parser.parse_args(argv)
    demo = Demo(args.auto)
    user_settings, _ = load_settings(overrides={"simulation": True})

    with tempfile.TemporaryDirectory(prefix="order-archiver-demo-") as temp:
        folder = Path(temp)
        server = None
        uri = user_settings.mongodb_uri
        if uri is None:
            print("No MONGODB_URI: starting a local nx-27017 server for the demo...", flush=True)
            uri, server = start_server(folder)
        settings = Settings(
            mongodb_uri=uri,
            mongodb_database=args.database,
            log_dir="",
            log_level="WARNING",
            resume_token_file=str(folder / "token.json"),
            watch_log_interval_s=3600,
        )
        setup_logging(settings)
        client = open_client(settings)
        stop = threading.Event()
        watcher_thread = None
        claimed = False
        try:
            database = client[args.database]
            claim(database)  # before anything is written
            claimed = True
            orders = database[settings.orders_collection]
            archive = database[settings.archive_collection]

            demo.step(f"Fill {args.database} with {args.orders} generated orders (Faker, fr_FR, 2% dirty)")
            dataset = generate_dataset(args.orders, seed=2026, p_delivered=0.5)
            for name, _ in dataset.by_collection(settings):
                database.drop_collection(name)
            database.drop_collection(settings.archive_collection)
            database.drop_collection(settings.checkpoint_collection)
            database.drop_collection(settings.rejects_collection)
            fill_database(database, dataset, settings)
            delivered = orders.count_documents({"status": settings.delivered_status})
            print(f"{orders.count_documents({})} orders, {delivered} delivered")

            demo.step("batch --run: archive every delivered order (a dry run first would write nothing)")
            options = BatchOptions(run=True, batch_size=200, progress=progress_mode(quiet=False), samples=1)
            report = BatchArchiver(client, settings, options).run()
            print(report.summary_line())
            if report.rejections:
                reasons = ", ".join(f"{reason}: {count}" for reason, count in report.rejections.items())
                print(f"rejected (invalid source data, logged with their _id): {reasons}")

            demo.step("watch: start the watcher, then deliver orders one by one")
            watcher = Watcher(client, settings, WatchOptions(), context=RunContext(stop=stop))
            watcher_thread = threading.Thread(target=watcher.run, name="watcher", daemon=True)
            watcher_thread.start()
            deadline = time.monotonic() + 30
            while not Path(settings.resume_token_file).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            pending = [o for o in dataset.orders if o["status"] == "en_livraison" and "_dirty" not in o]
            for order in pending[: args.deliveries]:
                started = time.perf_counter()
                orders.update_one({"_id": order["_id"]}, {"$set": {"status": settings.delivered_status}})
                document = _archived(archive, order)
                latency = (time.perf_counter() - started) * 1000
                print(
                    f"{order['numero_commande']} delivered -> archived in {latency:.0f} ms "
                    f"({document['restaurant']['nom']}, {document['montant_total']:.2f} €)"
                )

            demo.step("status: is the archive keeping up? (exit 0 healthy, 3 not)")
            print("\n".join(collect_status(client, settings).lines()))

            demo.step("verify: do source and archive agree?")
            print("\n".join(verify(client, settings).lines()))
        finally:
            stop.set()
            if watcher_thread is not None:
                watcher_thread.join(timeout=15)
            if claimed:
                drop(client, args.database)
            client.close()
            if server is not None:
                server.stop()
                print("\nlocal server stopped; everything the demo started is gone.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``run``, its failures as the product's commands say theirs: one line, the exit code
    (a setting to fix: 2; a server that cannot be reached: 1). SIGTERM stops it as Ctrl+C does:
    the server it started is stopped on the way out."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(argv)
    except ArchiverError as exc:
        sys.stderr.write(f"error: {redact(str(exc))}\n")
        return exc.exit_code
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
