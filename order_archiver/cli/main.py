"""order-archiver's command line: parse, build settings, dispatch; map errors to exit codes.

Exit codes: 0 done; 1 failed (server unreachable, authentication, write failure after
retries); 2 bad usage or configuration; 3 finished but some orders were rejected as invalid.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from order_archiver import __version__
from order_archiver.cli import definition
from order_archiver.context import RunContext, StopGrace, ThreadFaults
from order_archiver.errors import (
    ArchiverError,
    ConfigError,
    ExitCode,
    FatalError,
    TransientError,
    storage_error,
)
from order_archiver.logs import FILE_ONLY, get_logger, printable, redact, setup_logging
from order_archiver.orders.partition import Partition
from order_archiver.reporting.liveness import BeatingStop, Liveness
from order_archiver.retry import Retry
from order_archiver.settings import (
    MongoUriMissing,
    Settings,
    check_log_dir,
    check_output_paths,
    check_watch_liveness,
    load_settings,
)

if TYPE_CHECKING:
    from order_archiver.batch.report import BatchReport
    from order_archiver.batch.throttle import CommandLimits
    from order_archiver.mongodb.connection import Clients
    from order_archiver.reporting.metrics import WatchMetrics

R = TypeVar("R", bound="Report")


def build_parser() -> argparse.ArgumentParser:
    """``python main.py``: every command, as order_archiver/cli/definition.py declares them."""
    return definition.build_parser(HANDLERS, __version__)


def build_simulate_parser() -> argparse.ArgumentParser:
    return definition.build_simulate_parser(cmd_simulate)


def _open_clients(
    args: argparse.Namespace, settings: Settings, context: RunContext, **options: Any
) -> Clients:
    """The source's client and, with ARCHIVE_MONGODB_URI, the archive's: every command opens
    them here (with --simulation, the embedded database its --count and --seed make)."""
    from order_archiver.mongodb.connection import open_clients

    if getattr(args, "count", None) is not None:
        options.update(simulation_count=args.count, simulation_seed=args.seed)
    return open_clients(settings, stop_event=context.stop, **options)


@contextmanager
def _connected(
    args: argparse.Namespace, settings: Settings, context: RunContext, **options: Any
) -> Iterator[Clients]:
    clients = _open_clients(args, settings, context, **options)
    try:
        yield clients
    finally:
        clients.close()


def _recorded(clients: Clients, settings: Settings, context: RunContext) -> Settings:
    """The cold tier's record (``cold/record.py``), read once before a command that reads or
    writes the archive does anything: a process whose ARCHIVE_COLD_URL is unset or names another
    place is refused (``ConfigError``, exit 2); the settings given the recorded boundary, below
    which no order is archived again."""
    from order_archiver.cold.record import recorded_cold_tier
    from order_archiver.mongodb.storage import Collections

    collections = Collections.of(clients.source, settings, clients.archive)
    on_archive = context.on(collections.archive_side)
    record = recorded_cold_tier(collections.checkpoints, settings.archive_cold_url, on_archive)
    return settings.with_overrides(cold_moved_before=record.moved_before if record is not None else None)


def _json_value(value: Any) -> Any:
    """JSON for what reports hold: ISO-8601 datetimes with their offset (naive ones are UTC,
    as every date here is), and str() for ObjectIds and the like."""
    if isinstance(value, datetime):
        from order_archiver.orders.enrichment import as_utc

        return as_utc(value).isoformat()
    return str(value)


def _say(text: str) -> None:
    """A report on stdout. A reader that closed it (`rejects --all | head -1`) had what it
    wanted: the rest goes nowhere, quietly, and the command keeps its exit code (stdout is
    pointed at /dev/null so that no later write, nor the flush at exit, fails)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    """After the reader closed stdout: what is still written goes nowhere (the flush at exit too)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _print_json(data: Any) -> None:
    _say(json.dumps(data, ensure_ascii=False, default=_json_value))


def _print_report(
    report: Any, as_json: bool, *, error: str | None = None, **line_options: bool | str
) -> None:
    """Every command's report: one JSON object (with the error, if the command failed after
    doing something), or its lines for a person."""
    if as_json:
        data = report.as_dict()
        if error is not None:
            data["error"] = redact(error)
        _print_json(data)
    else:
        _say("\n".join(printable(line) for line in report.lines(**line_options)))


# --- commands: each returns an exit code ---------------------------------------------------


class Report(Protocol):
    """What a command's operation returns: its report, for a person or as JSON."""

    def as_dict(self) -> dict[str, object]: ...

    def lines(self) -> list[str]: ...


def _reported(
    args: argparse.Namespace,
    context: RunContext,
    operation: Callable[[Clients, Settings], R],
    *,
    ok: Callable[[R], bool] = lambda _: True,
    otherwise: int = ExitCode.INCOMPLETE,
    recorded: bool = True,
) -> int:
    """The one way a command that reports runs: its settings, its connections, the operation,
    its report printed (text or JSON), its exit code (0, or ``otherwise`` when not ``ok``). A
    failure is an exception, mapped to its exit code by ``dispatch``. ``recorded``: the cold
    tier's record checked first (``_recorded``)."""
    settings = _settings(args)
    with _connected(args, settings, context) as clients:
        if recorded:
            settings = _recorded(clients, settings, context)
        report = operation(clients, settings)
    _print_report(report, args.json)
    return ExitCode.OK if ok(report) else otherwise


def _settings(
    args: argparse.Namespace,
    outputs: dict[str, str | None] | None = None,
    *,
    token_file: bool = False,
    healthz: bool = False,
    **overrides: Any,
) -> Settings:
    """The settings, with every file the command will write checked before any work
    (``token_file``: RESUME_TOKEN_FILE too, watch's file store; ``healthz``: watch's
    WATCH_LIVENESS_S against MongoDB's timeouts)."""
    overrides.setdefault("archive_mongodb_uri", getattr(args, "archive_uri", None))
    try:
        settings, warnings = load_settings(args.env_file, overrides)
    except MongoUriMissing as missing:
        if hasattr(args, "simulation"):  # the command takes --simulation: the other way
            raise
        raise missing.without_simulation() from None
    outputs = dict(outputs or {})
    if token_file:
        outputs["RESUME_TOKEN_FILE"] = settings.resume_token_file
    # Each refused before the log folder is made: a refusal writes nothing.
    check_output_paths(settings, outputs, args.env_file)
    if healthz:
        check_watch_liveness(settings)
    warnings += _stop_file_warnings(getattr(args, "stop_file", None))
    warnings += check_log_dir(settings.log_dir)
    setup_logging(settings, verbosity=1 if args.verbose else -1 if args.quiet else 0)
    for warning in warnings:
        get_logger().warning(warning)
    return settings


def _samples_wanted(args: argparse.Namespace) -> int:
    """A dry run shows a few samples; a run keeps none unless asked (its report goes to cron
    mails and log collectors), or for ``--export-samples``."""
    from order_archiver.batch.report import DEFAULT_SAMPLES

    if args.samples is not None:
        return int(args.samples)
    return DEFAULT_SAMPLES if not args.run or args.export_samples else 0


def _stop_file_warnings(path: str | None) -> list[str]:
    """``--stop-file``, checked with the settings: its folder must exist (a typo would never
    stop the run), and it names a file, not a folder (which exists already: every run would
    stop at once). One left behind by an earlier stop is said (the warning returned): this run
    stops before it writes anything, and so will the next."""
    if path is None:
        return []
    from order_archiver.batch.limits import REFUSED_HERE, stop_file_there

    there = stop_file_there(path, ConfigError, REFUSED_HERE)  # on a stale mount: exit 2, said
    where = Path(path).expanduser()
    if not where.parent.is_dir():
        raise ConfigError(f"--stop-file {path}: the folder {where.parent} does not exist")
    if where.is_dir():
        raise ConfigError(f"--stop-file {path}: a folder; name a file in it (the run stops once it exists)")
    if there:
        return [f"--stop-file {path} exists already: this run writes nothing; remove it to let runs go on"]
    return []


def _partition(args: argparse.Namespace, settings: Settings) -> Partition | None:
    """``--partition``, else BATCH_PARTITION (a Job's pods each given their own K)."""
    given: Partition | None = args.partition
    if given is not None:
        return given
    return Partition(*settings.batch_partition) if settings.batch_partition else None


@dataclasses.dataclass
class BatchOutcome:
    """What ``--metrics-file`` says of a run: its report so far, and whether it succeeded."""

    report: BatchReport
    succeeded: bool = False


def cmd_batch(args: argparse.Namespace, context: RunContext) -> int:
    """The run, and ``--metrics-file`` written whatever its end: a run refused before it began
    (a bad setting, exit 2) or failed (exit 1) says ``success 0`` there too; the previous run's
    ``success 1`` stood for up to 26 h (OrderArchiverBatchFailed's window) otherwise."""
    from order_archiver.batch.report import BatchReport

    outcome = BatchOutcome(BatchReport(dry_run=not args.run))
    try:
        return _run_batch(args, context, outcome)
    finally:
        if args.metrics_file:
            _write_batch_metrics(args.metrics_file, outcome)


def _write_batch_metrics(path: str, outcome: BatchOutcome) -> None:
    """After a success, a failure to write the file is the run's (exit 1); after a failure,
    the run's own error is the one line to say (the file may be what was refused:
    ``--metrics-file`` in a folder that does not exist), the file's only in the log file (DEBUG)."""
    from order_archiver.reporting.metrics import write_batch_metrics

    if outcome.succeeded:
        write_batch_metrics(path, outcome.report, True)
        return
    try:
        write_batch_metrics(path, outcome.report, False)
    except OSError as exc:
        get_logger().debug("--metrics-file %s not written (%s)", path, exc.strerror or exc, extra=FILE_ONLY)


def _run_batch(args: argparse.Namespace, context: RunContext, outcome: BatchOutcome) -> int:
    from order_archiver.batch.job import BatchArchiver, BatchOptions
    from order_archiver.batch.report import rejected_exit_line
    from order_archiver.orders.selection import check_window
    from order_archiver.reporting.progress import progress_mode

    check_window(args.date_from, args.date_to)
    settings = _settings(
        args,
        {"--metrics-file": args.metrics_file, "--export-samples": args.export_samples},
        batch_size=args.batch_size,
        simulation=args.simulation or None,
    )
    partition = _partition(args, settings)
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
        max_runtime=args.max_runtime,
        stop_file=args.stop_file,  # checked with the settings (_stop_file_warnings)
        max_rate=args.max_rate or settings.batch_max_rate,
        max_lag=args.max_lag or settings.batch_max_lag,
        partition=partition,
        # "batch 1/4 done": which of N lines in a shell's output
        name=f"batch {partition}" if partition else "batch",
    )
    from order_archiver.cold.tier import check_cold_tier

    # The folder or bucket, before anything is written; a dry run too (what --run would do is
    # stop here): it leaves nothing there either (the probe file is removed at once).
    check_cold_tier(settings, context)
    report = outcome.report
    try:
        with _connected(args, settings, context) as clients:
            settings = _recorded(clients, settings, context)
            archiver = BatchArchiver(
                clients.source, settings, options, context=context, archive_client=clients.archive
            )
            report = outcome.report = archiver.report
            report.listed = not settings.simulation  # its list dies with its in-memory database
            archiver.run()
            context.faults.raise_first()  # stopped by a thread's fault (its share's lease): exit 1
            from order_archiver.cold.tier import move_to_cold, would_move

            # The cold tier's move takes the whole archive's months: not a share's (N of them
            # at once would write the same months); the run without --partition makes it. A dry
            # run says what --run does: a share's says nothing of a move.
            moves = options.partition is None
            if moves and options.run and report.completed:
                # Its writes and deletes meet the run's limits too (archiver.context.gate): one
                # that ends the move ends the run there, cleanly; the next run goes on with it.
                with archiver.throttle.until_a_limit(report):
                    moving = functools.partial(setattr, report, "cold")
                    move_to_cold(clients.source, settings, archiver.context, clients.archive, moving)
                context.faults.raise_first()  # the cold tier's lease's
                report.completed = report.ended == "completed"
            elif moves and not options.run and report.ended in (None, "completed"):
                # As --run: a dry run a limit ended counts nothing of the cold tier, and its
                # count of the cold files meets the limits (and a signal) a file at a time.
                with archiver.throttle.until_a_limit(report):
                    report.cold = would_move(clients.source, settings, archiver.context, clients.archive)
            outcome.succeeded = True
    except ConfigError:
        raise  # refused before the run: no counts to tell, only the one line
    except ArchiverError as raised:
        # A thread's fault stops the run as a signal does (its "interrupted"), but it is the error.
        error = context.faults.first or raised
        report.ended = "signal" if context.stopped and context.faults.first is None else "error"
        report.completed = False  # the pass may have (the cold tier's move then failed or was stopped)
        # An interrupted run says what it did before the error line, zeros included (a Ctrl-C
        # before the first chunk: "scanned 0, archived 0" is its answer). A failed one says it
        # when it did something; one that failed before (unreachable, refused at its start) has
        # only the error line to say.
        did_something = report.scanned or report.purged or report.undated_expired or report.pii_erased
        if args.json or context.stopped or did_something:
            _print_report(
                report,
                args.json,
                error=str(error),
                show_samples=not args.quiet,
                show_pii=args.show_pii,
                program=definition.program_name(command=True),
            )
        context.faults.raise_first()  # the thread's fault, not the "interrupted" it caused
        raise
    # -q (cron mails whatever a job prints): nothing unless there is news, a new rejected order
    # (an error was printed above, with the counts so far).
    if not args.quiet or args.json or report.rejected_new:
        _print_report(
            report,
            args.json,
            show_samples=not args.quiet,
            show_pii=args.show_pii,
            list_indexes=args.verbose,
            program=definition.program_name(command=True),
        )
    # 3: this run found invalid orders nobody had been told about (listed: `main.py rejects`);
    # the last line says so, where the shell's prompt shows the exit code.
    if report.rejected_new and not args.json:
        program = definition.program_name(command=True)
        _say(rejected_exit_line(report, program, simulation=settings.simulation))
    return ExitCode.NEW_REJECTED_ORDERS if report.rejected_new else ExitCode.OK


def _stop_on_file(path: str | None, context: RunContext) -> None:
    """``watch --stop-file``: the file's appearance stops the watcher as SIGTERM does (the same
    handler: the micro-batch in hand finished, its token saved, exit 0; the same watchdog),
    looked for every second. One that cannot be looked for any more (its folder's NFS mount gone
    stale, its folder replaced by a file or a symbolic link loop, or unreadable) stops it too,
    as batch's run (``limits.stop_file_there``): whoever set it may have put it there, and a
    watcher that went on could not be stopped by it. That stop is an error: the micro-batch in
    hand finished and its token saved, then one line naming the file, exit 1."""
    if path is None:
        return
    from order_archiver.batch.limits import WATCHER_STOPS_HERE, stop_file_there

    def look() -> None:
        try:
            while not context.stop.wait(1.0):
                if stop_file_there(path, FatalError, WATCHER_STOPS_HERE):
                    get_logger().info("stop file %s found: stopping as on SIGTERM", Path(path).expanduser())
                    signal.raise_signal(signal.SIGTERM)
                    return
        except Exception as exc:  # a thread that died here would leave the watcher unstoppable by it
            context.fail(f"--stop-file {path}: the look for it", exc)

    threading.Thread(target=look, name="stop-file", daemon=True).start()


def cmd_watch(args: argparse.Namespace, context: RunContext) -> int:
    file_store = args.token_store == "file"
    settings = _settings(
        args, token_file=file_store, healthz=bool(args.metrics_port), resume_token_file=args.token_file
    )
    from order_archiver.batch.limits import REFUSED_HERE, stop_file_there

    if args.stop_file and stop_file_there(args.stop_file, ConfigError, REFUSED_HERE):
        # There at the start (said with the settings: "this run writes nothing"): the watcher
        # does not start, as batch does not (pt-archiver's sentinel). Its thread first looks a
        # second from now: the watcher had connected, saved a token and caught up by then.
        get_logger().info("stop file %s found: not starting", Path(args.stop_file).expanduser())
        return ExitCode.OK
    _stop_on_file(args.stop_file, context)  # checked with the settings
    if not file_store:
        return _watch(args, settings, context)  # the mongo store's lease decides who writes
    from order_archiver.mongodb.token_lock import TokenFileLock

    # One watcher per token file, for this process's life (the wait for the server included):
    # a second one refuses at once, exit 2, naming the first one's pid.
    with TokenFileLock(settings.resume_token_file, "watch"):
        return _watch(args, settings, context)


def _watch(args: argparse.Namespace, settings: Settings, context: RunContext) -> int:
    from order_archiver.reporting.metrics import WatchMetrics
    from order_archiver.watch.watcher import Watcher, WatchOptions, stopped_idle

    options = WatchOptions(args.from_now, args.name, args.token_store, args.stop_file)
    # --max-rate, --max-lag: the catch-up's (a batch run: watch/archiving.py), over the settings'
    lag, rate = args.max_lag or settings.batch_max_lag, args.max_rate or settings.batch_max_rate
    settings = dataclasses.replace(settings, batch_max_lag=lag, batch_max_rate=rate)
    # /healthz (liveness) from the start: every wait of this run, the first connection's too, beats.
    liveness = Liveness(settings.watch_liveness_s)
    context = dataclasses.replace(context, stop=BeatingStop(context.stop, liveness))
    metrics = WatchMetrics()
    if args.metrics_port:
        _serve_metrics(args, metrics, liveness)
    # A service waits for its server: connecting is retried until it succeeds or is stopped.
    try:
        clients = _open_clients(
            args, settings, context, purpose=Retry.WAIT_FOR_SERVER, on_failure=metrics.lost
        )
    except TransientError:
        if context.stopped:
            context.faults.raise_first()  # stopped by a thread's fault (the stop file's look): exit 1
            return ExitCode.OK  # stopped while waiting for the server: nothing in hand
        raise
    metrics.reached()
    try:
        settings = _recorded(clients, settings, context)
        watcher = Watcher(
            clients.source,
            settings,
            options,
            context=context,
            archive_client=clients.archive,
            metrics=metrics,
        )
        # A stop past its grace with nothing in hand: the watcher's clean stop (context.StopGrace).
        context.grace.idle_when(lambda: stopped_idle(watcher))
        return watcher.run()
    finally:
        clients.close()


def _serve_metrics(args: argparse.Namespace, metrics: WatchMetrics, liveness: Liveness) -> None:
    """``/metrics`` and ``/healthz`` on --metrics-address:--metrics-port, or exit 2."""
    try:
        metrics.serve(args.metrics_port, args.metrics_address, liveness)
    except OSError as exc:
        where = f"--metrics-address {args.metrics_address} --metrics-port {args.metrics_port}"
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    get_logger().info("metrics on http://%s:%d/metrics", args.metrics_address, args.metrics_port)


def cmd_status(args: argparse.Namespace, context: RunContext) -> int:
    from order_archiver.operations.status import StatusThresholds, collect_status

    thresholds = StatusThresholds(args.lookback, args.max_backlog_age, args.max_heartbeat_age)
    settings = _settings(args)
    with _connected(args, settings, context) as clients:
        settings = _recorded(clients, settings, context)
        report = collect_status(
            clients.source,
            settings,
            thresholds,
            archive_client=clients.archive,
            context=context,
            program=definition.program_name(command=True),
        )
    if args.quiet and not args.json:  # -q (a health check every minute): the problems only
        for problem in report.problems:
            _say(printable(f"UNHEALTHY: {problem}"))
    else:
        _print_report(report, args.json)
    return ExitCode.OK if report.healthy else ExitCode.UNHEALTHY


def cmd_verify(args: argparse.Namespace, context: RunContext) -> int:
    from order_archiver.operations.verify import VerifyOptions, VerifyReport, verify
    from order_archiver.orders.selection import check_window
    from order_archiver.reporting.progress import progress_mode

    check_window(args.date_from, args.date_to)
    progress = progress_mode(args.quiet or args.json)

    def run(clients: Clients, settings: Settings) -> VerifyReport:
        limits = _command_limits(args, settings)  # the repair's
        options = VerifyOptions(args.date_from, args.date_to, args.repair, progress, limits)
        return verify(clients.source, settings, options, context=context, archive_client=clients.archive)

    return _reported(args, context, run, ok=lambda r: r.consistent, otherwise=ExitCode.INCONSISTENT)


def cmd_rejects(args: argparse.Namespace, context: RunContext) -> int:
    from order_archiver.mongodb.rejects import list_rejects

    limit = None if args.all else args.limit
    return _reported(
        args, context, lambda c, s: list_rejects(c.archive_side, s, limit, context), recorded=False
    )


def cmd_retire_watcher(args: argparse.Namespace, context: RunContext) -> int:
    from order_archiver.mongodb.tokens import retire_watcher

    if bool(args.name) == bool(args.token_file):
        raise ConfigError("retire-watcher: name a watcher (mongo store) or give --token-file, one of the two")
    settings = _settings(args)
    if args.token_file:
        _say(retire_watcher(None, settings, None, args.token_file))
        return ExitCode.OK
    with _connected(args, settings, context) as clients:
        _say(retire_watcher(clients.archive_side, settings, args.name, None))
    return ExitCode.OK


def cmd_doctor(args: argparse.Namespace, context: RunContext) -> int:
    from order_archiver.operations.doctor import run_doctor

    return _reported(
        args,
        context,
        lambda c, s: run_doctor(c.source, s, context, archive_client=c.archive, process=args.process),
        ok=lambda r: r.healthy,
        otherwise=ExitCode.UNHEALTHY,
        recorded=False,  # doctor says it, a line of its own (doctor.cold_record_check)
    )


def cmd_forget(args: argparse.Namespace, context: RunContext) -> int:
    from order_archiver.operations.forget import Person, forget_person

    person = (
        Person.of("client", args.client) if args.client is not None else Person.of("livreur", args.courier)
    )
    return _reported(
        args,
        context,
        lambda c, s: forget_person(
            c.source,
            s,
            person,
            run=args.run,
            context=context,
            archive_client=c.archive,
            limits=_command_limits(args, s),
        ),
        ok=lambda r: r.complete,
    )


def cmd_restore(args: argparse.Namespace, context: RunContext) -> int:
    from order_archiver.operations.restore import RestoreSelection, restore
    from order_archiver.orders.selection import check_window

    check_window(args.date_from, args.date_to)
    selection = RestoreSelection(
        tuple(args.numero or ()),
        args.id,
        args.client,  # as typed (checked: 24 hex digits): every form of it is looked for (id_forms)
        date_from=args.date_from,
        date_to=args.date_to,
    )
    selection.archive_filter()  # a missing selection is refused before any connection
    return _reported(
        args,
        context,
        lambda c, s: restore(
            c.source,
            s,
            selection,
            run=args.run,
            context=context,
            archive_client=c.archive,
            confirmed=args.yes,
            limits=_command_limits(args, s),
        ),
        ok=lambda r: r.complete,
    )


def _command_limits(args: argparse.Namespace, settings: Settings) -> CommandLimits:
    """#34's four limits of a command that writes in bulk besides batch: its flags, over the
    settings BATCH_MAX_RATE and BATCH_MAX_LAG (a deployment's limits hold for every writer)."""
    from order_archiver.batch.throttle import CommandLimits

    return CommandLimits(
        max_runtime=args.max_runtime,
        stop_file=args.stop_file,  # checked with the settings (_stop_file_warnings)
        max_rate=args.max_rate or settings.batch_max_rate,
        max_lag=args.max_lag or settings.batch_max_lag,
    )


def cmd_find(args: argparse.Namespace, context: RunContext) -> int:
    from order_archiver.operations.find import FindSelection, find_orders

    selection = FindSelection(tuple(args.numero or ()), args.id, args.client)
    return _reported(
        args,
        context,
        lambda c, s: find_orders(
            c.source, s, selection, show_pii=args.show_pii, context=context, archive_client=c.archive
        ),
        ok=lambda r: r.complete,
    )


def cmd_simulate(args: argparse.Namespace, context: RunContext) -> int:
    from order_archiver.mongodb.connection import simulation_packages
    from order_archiver.reporting.progress import progress_mode

    with simulation_packages():
        from order_archiver.simulation.database import SimulateOptions, simulate_into, simulate_samples

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
        _say(simulate_samples(settings, options, samples_file))
        return ExitCode.OK
    with _connected(args, settings, context) as clients:
        _say(simulate_into(clients.source, settings, options))
    return ExitCode.OK


# --- entry point -------------------------------------------------------------------------


# After SIGTERM/SIGINT, how long the unit of work in hand may take before the process exits
# anyway: a stop is on time (under 10 s, inside the 30 s grace of deploy/) even when the server
# hangs and a read or write never returns.
STOP_GRACE_S = 8.0


def _install_stop_handlers(
    stop_event: threading.Event, finished: threading.Event, grace: StopGrace
) -> Callable[[], None]:
    """SIGINT/SIGTERM only set the event: loops finish the unit of work in hand, then stop.
    A watchdog bounds that: ``STOP_GRACE_S`` after the signal, a command still running (a
    server that accepts the connection and answers nothing holds a read or a write, and a
    signal handler runs only between Python's steps) is ended with exit 1. Nothing is lost:
    tokens, checkpoints and marks are saved only after the writes they cover, and writes are
    idempotent; the next run or start takes up the work in hand. A run holding nothing then (a
    watcher between micro-batches, its getMore held by a server down: ``grace``) stops cleanly
    instead: its summary, exit 0. Returned: the same stop, for
    a thread of the run that cannot go on (``context.ThreadFaults``)."""

    def stopping() -> None:
        if not stop_event.is_set():
            threading.Thread(target=watchdog, name="stop-watchdog", daemon=True).start()
        stop_event.set()

    def handle(signum: int, _frame: Any) -> None:
        stopping()

    def watchdog() -> None:
        if finished.wait(STOP_GRACE_S):
            return
        if grace.idle_stop():  # nothing in hand: the run's clean stop said (its summary)
            logging.shutdown()
            os._exit(ExitCode.OK)
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
    return stopping


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser().parse_args(argv))


def simulate_main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_simulate_parser().parse_args(argv))


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command; the one place where errors become exit codes."""
    stop_event, finished = threading.Event(), threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    grace = StopGrace()
    stopping = _install_stop_handlers(stop_event, finished, grace)
    log = get_logger()
    try:
        # One run: its stop, clock, side, and its threads' faults (raised here once it stopped).
        context = RunContext(stop=stop_event, faults=ThreadFaults(stopping), grace=grace)
        code = int(args.func(args, context))
        context.faults.raise_first()  # a command stopped by a thread's fault (a lease's renewal) fails
        return code
    except ArchiverError as exc:
        log.debug("%s failed", args.command, exc_info=True, extra=FILE_ONLY)
        sys.stderr.write(f"error: {redact(str(exc))}\n")
        return exc.exit_code
    except BrokenPipeError:  # a report written elsewhere than ``_say``: as quiet (see there)
        _stdout_to_devnull()
        return ExitCode.OK
    except Exception as exc:  # the last line of defence: one line, never a traceback
        stored = storage_error(exc)  # the cold tier's storage: what to fix, its exit code
        if stored is not None:
            log.debug("%s failed", args.command, exc_info=True, extra=FILE_ONLY)
            sys.stderr.write(f"error: {redact(str(stored))}\n")
            return stored.exit_code
        log.debug("%s crashed", args.command, exc_info=True, extra=FILE_ONLY)
        first_line = redact(str(exc)).splitlines()[0][:300] if str(exc) else ""
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {first_line}\n")
        return ExitCode.FAILED
    finally:
        finished.set()
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, handler)


HANDLERS = {
    "doctor": cmd_doctor,
    "batch": cmd_batch,
    "watch": cmd_watch,
    "status": cmd_status,
    "verify": cmd_verify,
    "rejects": cmd_rejects,
    "retire-watcher": cmd_retire_watcher,
    "forget": cmd_forget,
    "restore": cmd_restore,
    "find": cmd_find,
    "simulate": cmd_simulate,
}


if __name__ == "__main__":
    sys.exit(main())
