"""What a batch run checks of the source before its pass, and says after a pass that found
nothing: each a read or two, apart from the job's own work."""

from __future__ import annotations

import threading

from order_archiver.batch.report import BatchOptions, BatchReport
from order_archiver.context import RunContext
from order_archiver.errors import ArchiverError, ConfigError
from order_archiver.logs import get_logger
from order_archiver.mongodb.source import missing_source, unknown_status_hint
from order_archiver.mongodb.statuses import StatusIndexMissing, read_near_misses
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.retry import Retry, retrying

log = get_logger("batch")


def check_source(
    orders: MongoCollection, options: BatchOptions, report: BatchReport, stop: threading.Event
) -> bool:
    """Whether the orders collection is there. Missing: a configuration error for a batch run
    (a misspelt name), a warning for the watcher's catch-up (it may be created later), and then
    nothing is created where nothing was."""
    problem = retrying(lambda: missing_source(orders), stop_event=stop)
    if problem and options.require_source:
        raise ConfigError(problem)
    if problem:
        log.warning("%s; nothing to catch up until it exists", problem)
        report.warnings.append(problem)
    return problem is None


def say_why_nothing_was_found(
    orders: MongoCollection, delivered_status: str, report: BatchReport, stop: threading.Event
) -> None:
    """A pass that found no delivered order at all: the statuses the orders do hold, when the
    delivered one looks misspelt (DELIVERED_STATUS)."""
    if report.delivered != 0 or report.scanned != 0:
        return
    try:  # it only informs, after the pass's writes: a fault here is said, not the run's failure
        hint = retrying(
            lambda: unknown_status_hint(orders, delivered_status), purpose=Retry.INFORM, stop_event=stop
        )
    except ArchiverError as exc:
        log.info("why nothing was found was not looked for (%s)", exc)
        return
    if hint:
        log.warning(hint)
        report.warnings.append(hint)


def say_near_misses(
    orders: MongoCollection, delivered_status: str, report: BatchReport, context: RunContext
) -> None:
    """The status values that read as DELIVERED_STATUS but are not it (``Livrée`` for ``livrée``):
    their orders are never archived, and no run reads them. Said on every run, as a warning: one
    distinct scan of the status index (a seek per value, whatever the history) and, only when
    there is one, a count per near miss stopped at a bound (mongodb/statuses.py)."""
    try:
        line = read_near_misses(orders, delivered_status, context).line()
    except StatusIndexMissing:  # a dry run before the first --run (which builds it): nothing to say
        log.debug("near misses of DELIVERED_STATUS not looked for: no index led by status yet")
        return
    except ArchiverError as exc:  # it only informs: a refusal, a fault: said, not fatal
        log.info(
            "the orders' status values were not read (%s): near misses of DELIVERED_STATUS not looked for",
            exc,
        )
        return
    if line is not None:
        log.warning(line)
        report.warnings.append(line)


def say_what_no_run_archives(
    orders: MongoCollection, delivered_status: str, report: BatchReport, context: RunContext
) -> None:
    """After a pass: why it found nothing at all (a misspelt DELIVERED_STATUS), and the orders
    whose status only nearly is it."""
    say_why_nothing_was_found(orders, delivered_status, report, context.stop)
    say_near_misses(orders, delivered_status, report, context)
