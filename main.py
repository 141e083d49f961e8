"""order-archiver's command line: parse, build settings, dispatch; map errors to exit codes.

Exit codes: 0 done; 1 failed (server unreachable, authentication, write failure after
retries); 2 bad usage or configuration; 3 finished but some orders were rejected as invalid.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

from config import (
    check_log_dir,
    check_output_paths,
    load_settings,
    parse_command_line_uri,
    parse_date_bound,
    parse_duration,
    parse_name,
    parse_port,
    parse_positive_int,
    parse_probability,
)
from logger import FILE_ONLY, get_logger, redact, setup_logging
from order_archiver.errors import ArchiverError, Attempts, ConfigError, ExitCode, TransientError

__version__ = "0.1.0"

EPILOG_SIMULATE = """examples:
  python simulate.py --count 1000 --seed 42 --p-delivered 0.4 --reset
  python simulate.py --simulation --count 5000  write samples.json instead of a database
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(ExitCode.USAGE)


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a parser that raises ValueError with its reason."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.replace("parse_", "")
    return convert


def _non_negative_int(text: str) -> int:
    value = int(text) if text.strip().lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _common_arguments()
    parser = OneLineParser(
        prog="main.py",
        description="Archive delivered food-delivery orders out of MongoDB, enriched, exactly once.",
        epilog="Run `python main.py COMMAND --help` for a command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"order-archiver {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    commands.required = True
    for add_parser in (
        add_doctor_parser,
        add_batch_parser,
        add_watch_parser,
        add_status_parser,
        add_verify_parser,
        add_rejects_parser,
        add_retire_watcher_parser,
        add_simulate_parser,
    ):
        add_parser(commands, common)
    return parser


SIMULATE_DESCRIPTION = "Fill the source database with realistic generated data (Faker, fr_FR)."


def _add_command(
    commands: Any, common: argparse.ArgumentParser, name: str, **texts: str
) -> argparse.ArgumentParser:
    """A subcommand: the common flags, its help, description and examples as written."""
    return commands.add_parser(
        name, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter, **texts
    )


def _date_window_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--date-from", metavar="D", type=_argument(parse_date_bound), help="date_commande >= D"
    )
    parser.add_argument("--date-to", metavar="D", type=_argument(parse_date_bound), help="date_commande < D")


def _json_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print the {what} as one JSON object")


def _common_arguments() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    common.add_argument("--env-file", metavar="F", help="read settings from F instead of ./.env")
    common.add_argument(
        "--archive-uri",
        metavar="URI",
        type=_argument(parse_command_line_uri),
        help="the archive's own deployment (ARCHIVE_MONGODB_URI); default: the source's",
    )
    return common


def add_simulate_arguments(simulate: argparse.ArgumentParser) -> None:
    simulate.add_argument(
        "--count", metavar="N", type=_argument(parse_positive_int), default=1000, help="orders"
    )
    simulate.add_argument("--seed", metavar="S", type=int, help="same seed, same data")
    simulate.add_argument(
        "--p-delivered", metavar="P", type=_argument(parse_probability), default=0.6, help="share delivered"
    )
    simulate.add_argument(
        "--p-anomalies",
        metavar="P",
        type=_argument(parse_probability),
        default=0.02,
        help="share of dirty orders",
    )
    simulate.add_argument(
        "--days", metavar="N", type=_argument(parse_positive_int), default=30, help="date window"
    )
    simulate.add_argument("--reset", action="store_true", help="drop the five collections first")
    simulate.add_argument(
        "--simulation", action="store_true", help="write samples.json (Extended JSON) instead of a database"
    )
    simulate.add_argument("--samples-file", metavar="PATH", default="samples.json", help="with --simulation")
    simulate.set_defaults(func=cmd_simulate, command="simulate")


def build_simulate_parser() -> argparse.ArgumentParser:
    """``python simulate.py``: the simulate subcommand as a program of its own."""
    parser = OneLineParser(
        prog="simulate.py",
        parents=[_common_arguments()],
        description=SIMULATE_DESCRIPTION + " The same as `python main.py simulate`.",
        epilog=EPILOG_SIMULATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_simulate_arguments(parser)
    return parser


def _simulation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--simulation", action="store_true", help="run on an embedded database of generated data"
    )
    parser.add_argument(
        "--count",
        metavar="N",
        type=_argument(parse_positive_int),
        default=1000,
        help="with --simulation: orders",
    )
    parser.add_argument("--seed", metavar="S", type=int, default=42, help="with --simulation: generator seed")


@contextmanager
def _connected(settings: Any, stop_event: threading.Event, **options: Any) -> Iterator[Any]:
    """The source's client and, with ARCHIVE_MONGODB_URI, the archive's (``connection.Clients``)."""
    from order_archiver.mongodb.connection import open_clients

    clients = open_clients(settings, stop_event=stop_event, **options)
    try:
        yield clients
    finally:
        clients.close()


def _json_value(value: Any) -> Any:
    """JSON for what reports hold: ISO-8601 datetimes with their offset (naive ones are UTC,
    as every date here is), and str() for ObjectIds and the like."""
    if isinstance(value, datetime):
        from order_archiver.orders.enrichment import as_utc

        return as_utc(value).isoformat()
    return str(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, default=_json_value))


def _print_report(report: Any, as_json: bool, *, error: str | None = None, **line_options: bool) -> None:
    """Every command's report: one JSON object (with the error, if the command failed after
    doing something), or its lines for a person."""
    if as_json:
        data = report.as_dict()
        if error is not None:
            data["error"] = redact(error)
        _print_json(data)
    else:
        print("\n".join(report.lines(**line_options)))


# --- commands: each returns an exit code ---------------------------------------------------


def _settings(
    args: argparse.Namespace, outputs: dict[str, str | None] | None = None, **overrides: Any
) -> Any:
    """The settings, with every file the command will write checked before any work."""
    overrides.setdefault("archive_mongodb_uri", getattr(args, "archive_uri", None))
    settings, warnings = load_settings(args.env_file, overrides)
    check_log_dir(settings.log_dir)
    check_output_paths(settings, outputs or {}, args.env_file)
    setup_logging(settings, verbosity=1 if args.verbose else -1 if args.quiet else 0)
    for warning in warnings:
        get_logger().warning(warning)
    return settings


EPILOG_BATCH = """examples:
  python main.py batch                          report what would be archived (writes nothing)
  python main.py batch --run                    archive every delivered order not yet archived
  python main.py batch --run --date-from yesterday --date-to today
  python main.py batch --run --date-from 7d --purge-source
  python main.py batch --run --full             every delivered order, not only the new ones
  python main.py batch --run --simulation       the whole job on an embedded database
"""


def add_batch_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    batch = _add_command(
        commands,
        common,
        "batch",
        help="archive delivered orders in bulk (dry run unless --run)",
        description="Archive every delivered order not yet archived, enriched, in bulk, idempotently.",
        epilog=EPILOG_BATCH,
    )
    mode = batch.add_mutually_exclusive_group()
    mode.add_argument("--run", action="store_true", help="write the archive (default: dry run)")
    mode.add_argument("--dry-run", action="store_true", help="report what would be archived; write nothing")
    _date_window_arguments(batch)
    batch.add_argument(
        "--limit", metavar="N", type=_argument(parse_positive_int), help="archive at most N orders"
    )
    batch.add_argument(
        "--batch-size",
        metavar="N",
        type=_argument(parse_positive_int),
        help="orders per bulk write (BATCH_SIZE)",
    )
    batch.add_argument(
        "--export-samples", metavar="FILE", help="write sample archive documents as Extended JSON"
    )
    batch.add_argument(
        "--samples",
        metavar="N",
        type=_argument(_non_negative_int),
        default=None,
        help="sample documents to keep (a dry run or --export-samples: 3; --run: none unless given)",
    )
    batch.add_argument(
        "--purge-source", action="store_true", help="delete source orders once their archive is confirmed"
    )
    batch.add_argument("--restart", action="store_true", help="ignore the checkpoint of an interrupted run")
    batch.add_argument(
        "--full",
        action="store_true",
        help="walk every delivered order of the window, not only those delivered since the last run",
    )
    _json_argument(batch, "report")
    batch.add_argument(
        "--show-pii",
        action="store_true",
        help="show the samples' names, e-mail, phone and address (masked by default, text and JSON)",
    )
    batch.add_argument(
        "--metrics-file", metavar="PATH", help="write the run's figures for the Prometheus textfile collector"
    )
    _simulation_arguments(batch)
    batch.set_defaults(func=cmd_batch)


def _samples_wanted(args: argparse.Namespace) -> int:
    """A dry run shows a few samples; a run keeps none unless asked (its report goes to cron
    mails and log collectors), or for ``--export-samples``."""
    from order_archiver.batch.report import DEFAULT_SAMPLES

    if args.samples is not None:
        return int(args.samples)
    return DEFAULT_SAMPLES if not args.run or args.export_samples else 0


def cmd_batch(args: argparse.Namespace, stop_event: threading.Event) -> int:
    from archiver import BatchArchiver, BatchOptions
    from order_archiver.mongodb.connection import open_clients
    from order_archiver.orders.selection import check_window
    from order_archiver.reporting.progress import progress_mode

    check_window(args.date_from, args.date_to)
    settings = _settings(
        args,
        {"--metrics-file": args.metrics_file, "--export-samples": args.export_samples},
        batch_size=args.batch_size,
        simulation=args.simulation or None,
    )
    options = BatchOptions(
        run=args.run,
        date_from=args.date_from,
        date_to=args.date_to,
        limit=args.limit,
        batch_size=settings.batch_size,
        export_samples=args.export_samples,
        samples=_samples_wanted(args),
        show_pii=args.show_pii,
        purge_source=args.purge_source,
        resume=not args.restart,
        progress=progress_mode(args.quiet or args.json),
        full=args.full,
    )
    clients = open_clients(
        settings, stop_event=stop_event, simulation_count=args.count, simulation_seed=args.seed
    )
    archiver = BatchArchiver(
        clients.source, settings, options, stop_event=stop_event, archive_client=clients.archive
    )
    succeeded = False
    try:
        archiver.run()
        succeeded = True
    except ArchiverError as error:
        # An interrupted or failed run still says what it did before the error line.
        _print_report(
            archiver.report, args.json, error=str(error), show_samples=not args.quiet, show_pii=args.show_pii
        )
        raise
    finally:
        clients.close()
        if args.metrics_file:
            from order_archiver.reporting.metrics import write_batch_metrics

            write_batch_metrics(args.metrics_file, archiver.report, succeeded)
    # -q (cron mails whatever a job prints): nothing unless there is news, a new rejected order
    # (an error was printed above, with the counts so far).
    if not args.quiet or args.json or archiver.report.rejected_new:
        _print_report(archiver.report, args.json, show_samples=not args.quiet, show_pii=args.show_pii)
    # 3: this run found invalid orders nobody had been told about (listed: `main.py rejects`).
    return ExitCode.NEW_REJECTED_ORDERS if archiver.report.rejected_new else ExitCode.OK


EPILOG_WATCH = """examples:
  python main.py watch                           archive each delivery as it happens (token in a file)
  python main.py watch --token-store mongo --name eu-1 --metrics-port 9108
                                                 token in MongoDB; start a second one for a hot standby
  python main.py watch --from-now                a first start that skips the catch-up of the past
"""


def add_watch_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    watch = _add_command(
        commands,
        common,
        "watch",
        help="archive each delivery as it happens (change streams)",
        description="Archive each order the moment it is delivered, resuming after any restart.",
        epilog=EPILOG_WATCH,
    )
    watch.add_argument("--from-now", action="store_true", help="skip the catch-up of missed deliveries")
    watch.add_argument(
        "--token-store", choices=("file", "mongo"), default="file", help="where the resume token lives"
    )
    watch.add_argument("--token-file", metavar="PATH", help="resume token file (RESUME_TOKEN_FILE)")
    watch.add_argument(
        "--name",
        default="default",
        type=_argument(parse_name),
        help="watcher name (its token in the mongo store)",
    )
    watch.add_argument(
        "--metrics-port",
        metavar="N",
        type=_argument(parse_port),
        help="serve Prometheus metrics on this port",
    )
    watch.add_argument(
        "--metrics-address",
        metavar="ADDR",
        default="127.0.0.1",
        help="metrics bind address (127.0.0.1: this host only; 0.0.0.0 in a container Prometheus scrapes)",
    )
    watch.set_defaults(func=cmd_watch)


def cmd_watch(args: argparse.Namespace, stop_event: threading.Event) -> int:
    from order_archiver.mongodb.connection import open_clients
    from watcher import Watcher, WatchOptions

    settings = _settings(args, resume_token_file=args.token_file)
    if args.token_store == "file":
        check_output_paths(settings, {"RESUME_TOKEN_FILE": settings.resume_token_file}, args.env_file)
    options = WatchOptions(from_now=args.from_now, name=args.name, token_store=args.token_store)
    # A service waits for its server: connecting is retried until it succeeds or is stopped.
    try:
        clients = open_clients(settings, attempts=Attempts.SERVICE, stop_event=stop_event)
    except TransientError:
        if stop_event.is_set():
            return ExitCode.OK  # stopped while waiting for the server: nothing in hand
        raise
    try:
        watcher = Watcher(
            clients.source, settings, options, stop_event=stop_event, archive_client=clients.archive
        )
        if args.metrics_port:
            try:
                watcher.metrics.serve(args.metrics_port, args.metrics_address)
            except OSError as exc:
                raise ConfigError(f"--metrics-port {args.metrics_port}: {exc.strerror}") from None
            get_logger().info("metrics on http://%s:%d/metrics", args.metrics_address, args.metrics_port)
        return watcher.run()
    finally:
        clients.close()


EPILOG_STATUS = """examples:
  python main.py status                          a person's view
  python main.py status --json --max-backlog-age 5m   a probe: exit 0 healthy, 3 not
"""


def add_status_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    status = _add_command(
        commands,
        common,
        "status",
        help="is the archive keeping up? (exit 3 when not: usable as a probe)",
        description="Orders by status, backlog, archive size, watchers' heartbeats. Exit 0 healthy, 3 not.",
        epilog=EPILOG_STATUS,
    )
    _json_argument(status, "report")
    status.add_argument(
        "--max-backlog-age",
        metavar="DURATION",
        type=_argument(parse_duration),
        default="15m",
        help="unhealthy when a delivered order waits longer than this to be archived (15m)",
    )
    status.add_argument(
        "--max-heartbeat-age",
        metavar="DURATION",
        type=_argument(parse_duration),
        default="2m",
        help="unhealthy when a watcher's token is older than this (2m)",
    )
    status.add_argument(
        "--lookback",
        metavar="DURATION",
        type=_argument(parse_duration),
        default="24h",
        help="look for the backlog among the orders of this last period (24h)",
    )
    status.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace, stop_event: threading.Event) -> int:
    from order_archiver.operations.status import collect_status

    settings = _settings(args)
    with _connected(settings, stop_event) as clients:
        report = collect_status(
            clients.source,
            settings,
            archive_client=clients.archive,
            lookback=args.lookback,
            max_backlog_age=args.max_backlog_age,
            max_heartbeat_age=args.max_heartbeat_age,
            stop_event=stop_event,
        )
    _print_report(report, args.json)
    return ExitCode.OK if report.healthy else ExitCode.UNHEALTHY


EPILOG_VERIFY = """examples:
  python main.py verify --date-from 7d
  python main.py verify --repair                 then archive what is missing
"""


def add_verify_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    verify = _add_command(
        commands,
        common,
        "verify",
        help="reconcile source and archive (exit 3 when they disagree)",
        description="Delivered orders missing from the archive, archive documents that disagree with the "
        "source, archive documents without a source. Exit 0 consistent, 3 not.",
        epilog=EPILOG_VERIFY,
    )
    _date_window_arguments(verify)
    verify.add_argument("--repair", action="store_true", help="archive the missing orders (the batch path)")
    _json_argument(verify, "report")
    verify.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace, stop_event: threading.Event) -> int:
    from order_archiver.operations.verify import verify
    from order_archiver.orders.selection import check_window
    from order_archiver.reporting.progress import progress_mode

    check_window(args.date_from, args.date_to)
    settings = _settings(args)
    with _connected(settings, stop_event) as clients:
        report = verify(
            clients.source,
            settings,
            archive_client=clients.archive,
            date_from=args.date_from,
            date_to=args.date_to,
            repair=args.repair,
            stop_event=stop_event,
            progress=progress_mode(args.quiet or args.json),
        )
    _print_report(report, args.json)
    return ExitCode.OK if report.consistent else ExitCode.INCONSISTENT


EPILOG_REJECTS = """examples:
  python main.py rejects                         the rejected orders, newest first
  python main.py rejects --json --limit 0        all of them, as JSON
"""


def add_rejects_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    rejects = _add_command(
        commands,
        common,
        "rejects",
        help="list the rejected orders (invalid: never archived until fixed at the source)",
        description="The orders batch or watch rejected as invalid, newest first, with the reason. "
        "An order fixed at the source is archived by the next run and leaves the list.",
        epilog=EPILOG_REJECTS,
    )
    rejects.add_argument(
        "--limit",
        metavar="N",
        type=_argument(_non_negative_int),
        default=50,
        help="show at most N (50; 0: all)",
    )
    _json_argument(rejects, "list")
    rejects.set_defaults(func=cmd_rejects)


def cmd_rejects(args: argparse.Namespace, stop_event: threading.Event) -> int:
    from order_archiver.mongodb.rejects import list_rejects

    settings = _settings(args)
    with _connected(settings, stop_event) as clients:
        report = list_rejects(clients.archive_side, settings, args.limit or None, stop_event)
    _print_report(report, args.json)
    return ExitCode.OK


EPILOG_RETIRE = """examples:
  python main.py retire-watcher eu-1             a mongo-store watcher that will not come back
  python main.py retire-watcher --token-file /data/.resume_token.json
"""


def add_retire_watcher_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    retire = _add_command(
        commands,
        common,
        "retire-watcher",
        help="forget a watcher that will not come back (status stops expecting it)",
        description="Remove a stopped watcher's resume token (and end its lease), so that status no "
        "longer reports it. Refused while it runs. Started again, it would catch up first.",
        epilog=EPILOG_RETIRE,
    )
    retire.add_argument(
        "name", nargs="?", type=_argument(parse_name), help="the watcher's --name (mongo store)"
    )
    retire.add_argument("--token-file", metavar="PATH", help="retire the watcher of this token file instead")
    retire.set_defaults(func=cmd_retire_watcher)


def cmd_retire_watcher(args: argparse.Namespace, stop_event: threading.Event) -> int:
    from order_archiver.mongodb.tokens import retire_watcher

    if bool(args.name) == bool(args.token_file):
        raise ConfigError("retire-watcher: name a watcher (mongo store) or give --token-file, one of the two")
    settings = _settings(args)
    if args.token_file:
        print(retire_watcher(None, settings, None, args.token_file))
        return ExitCode.OK
    with _connected(settings, stop_event) as clients:
        print(retire_watcher(clients.archive_side, settings, args.name, None))
    return ExitCode.OK


EPILOG_DOCTOR = """examples:
  python main.py doctor                          the first command on a new cluster
  python main.py doctor --json                   the same, as one JSON object
"""


def add_doctor_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    doctor = _add_command(
        commands,
        common,
        "doctor",
        help="check the server and the user before anything runs (exit 3 when not ready)",
        description="Version, topology, change streams, sharding, write concern, read preference "
        "and the user's privileges, one line each. Writes nothing. Exit 0 ready, 3 not.",
        epilog=EPILOG_DOCTOR,
    )
    _json_argument(doctor, "checks")
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace, stop_event: threading.Event) -> int:
    from order_archiver.operations.doctor import run_doctor

    settings = _settings(args)
    with _connected(settings, stop_event) as clients:
        report = run_doctor(clients.source, settings, stop_event, archive_client=clients.archive)
    _print_report(report, args.json)
    return ExitCode.OK if report.healthy else ExitCode.UNHEALTHY


def add_simulate_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    simulate = _add_command(
        commands,
        common,
        "simulate",
        help="fill a database with generated orders (also: python simulate.py)",
        description=SIMULATE_DESCRIPTION,
        epilog=EPILOG_SIMULATE,
    )
    add_simulate_arguments(simulate)


def cmd_simulate(args: argparse.Namespace, stop_event: threading.Event) -> int:
    from order_archiver.mongodb.connection import simulation_packages
    from order_archiver.reporting.progress import progress_mode

    with simulation_packages():
        from order_archiver.mongodb.simulation import SimulateOptions, simulate_into, simulate_samples

    samples_file = args.samples_file if args.simulation else None
    settings = _settings(args, {"--samples-file": samples_file}, simulation=args.simulation or None)
    options = SimulateOptions(
        count=args.count,
        seed=args.seed,
        p_delivered=args.p_delivered,
        p_anomalies=args.p_anomalies,
        days=args.days,
        reset=args.reset,
        progress=progress_mode(args.quiet),
    )
    if samples_file:
        print(simulate_samples(settings, options, samples_file))
        return ExitCode.OK
    with _connected(settings, stop_event) as clients:
        print(simulate_into(clients.source, settings, options))
    return ExitCode.OK


# --- entry point -------------------------------------------------------------------------


# After SIGTERM/SIGINT, how long the unit of work in hand may take before the process exits
# anyway: a stop is on time (under 10 s, inside the 30 s grace of deploy/) even when the server
# hangs and a read or write never returns.
STOP_GRACE_S = 8.0


def _install_stop_handlers(stop_event: threading.Event, finished: threading.Event) -> None:
    """SIGINT/SIGTERM only set the event: loops finish the unit of work in hand, then stop.
    A watchdog bounds that: ``STOP_GRACE_S`` after the signal, a command still running (a
    server that accepts the connection and answers nothing holds a read or a write, and a
    signal handler runs only between Python's steps) is ended with exit 1. Nothing is lost:
    tokens, checkpoints and marks are saved only after the writes they cover, and writes are
    idempotent; the next run or start takes up the work in hand."""

    def handle(signum: int, _frame: Any) -> None:
        if not stop_event.is_set():
            threading.Thread(target=watchdog, name="stop-watchdog", daemon=True).start()
        stop_event.set()

    def watchdog() -> None:
        if finished.wait(STOP_GRACE_S):
            return
        message = (
            f"error: stopped {STOP_GRACE_S:g} s after the signal with the work in hand unfinished "
            "(the server does not answer); nothing is lost: what it was writing is taken up next time\n"
        )
        sys.stderr.write(message)
        get_logger().error(message.strip(), extra=FILE_ONLY)
        logging.shutdown()
        os._exit(ExitCode.FAILED)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser().parse_args(argv))


def simulate_main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_simulate_parser().parse_args(argv))


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command; the one place where errors become exit codes."""
    stop_event, finished = threading.Event(), threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _install_stop_handlers(stop_event, finished)
    log = get_logger()
    try:
        return args.func(args, stop_event)
    except ArchiverError as exc:
        log.debug("%s failed", args.command, exc_info=True, extra=FILE_ONLY)
        sys.stderr.write(f"error: {redact(str(exc))}\n")
        return exc.exit_code
    except Exception as exc:  # the last line of defence: one line, never a traceback
        log.debug("%s crashed", args.command, exc_info=True, extra=FILE_ONLY)
        first_line = redact(str(exc)).splitlines()[0][:300] if str(exc) else ""
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {first_line}\n")
        return ExitCode.FAILED
    finally:
        finished.set()
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
