"""What a batch run is asked (``BatchOptions``) and what it did (``BatchReport``)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from bson import json_util

from order_archiver.batch.limits import Ended
from order_archiver.cold.move import ColdMoveReport
from order_archiver.logs import plural
from order_archiver.mongodb.retention import DONE
from order_archiver.mongodb.step import ArchiveCounts
from order_archiver.orders.finishing import utc_now
from order_archiver.orders.partition import Partition
from order_archiver.reporting.progress import ProgressMode
from order_archiver.settings import about

DEFAULT_SAMPLES = 1  # a dry run's sample documents, printed after its summary (--samples N)
T = TypeVar("T")
# A clean end before the pass's (exit 0), as the summary says it.
PAUSES = {"max_runtime": "at its time limit (--max-runtime)", "stop_file": "on its stop file (--stop-file)"}


@dataclass(frozen=True)
class BatchOptions:
    run: bool = False
    date_from: datetime | None = None
    date_to: datetime | None = None
    limit: int | None = None
    batch_size: int = 100
    export_samples: str | None = None
    samples: int = DEFAULT_SAMPLES
    purge_source: bool = False
    resume: bool = True
    archived_by: str = "batch"  # the watcher's catch-up archives as "watch"
    # Who the rejects list says met them (``RejectStore.record``'s source), when not
    # ``archived_by``: verify --repair's pass, which leaves the news to the next batch run.
    rejects_source: str | None = None
    require_source: bool = True  # a missing orders collection is an error (watch: a warning)
    progress: ProgressMode = "off"
    full: bool = False  # walk every delivered order of the window (--full), not only the new ones
    full_reason: str = "--full"  # why ``full``, as the log and the report say it
    max_runtime: timedelta | None = None  # --max-runtime: end cleanly at the next chunk after this long
    stop_file: str | None = None  # --stop-file: end cleanly at the next chunk once it exists
    max_rate: float | None = None  # --max-rate: at most this many orders a second
    max_lag: timedelta | None = None  # --max-lag: wait before a chunk while a secondary is this far behind
    partition: Partition | None = None  # --partition K/N: only share K of N (orders/partition.py)
    name: str = "batch"  # what the summary calls the run: the watcher's catch-up, verify's repair
    # Read the orders from the primary whatever the URI's readPreference: the watcher's
    # catch-up (a secondary behind the stream's start would hide deliveries no later event
    # shows). An incremental pass always does (see _begin_pass).
    read_primary: bool = False
    show_pii: bool = False  # samples unmasked (--show-pii)
    # Build the indexes and apply ARCHIVE_RETENTION / ARCHIVE_PII_RETENTION (batch --run). The
    # watcher's catch-up does not: its role has no createIndex, collMod, dropIndex nor remove on
    # the archive (a TTL index made with its credentials could delete the archive); it only
    # checks that the archive's unique index is ready (docs/deployment.md, "Roles per command").
    maintain: bool = True
    # The watcher's catch-up: its look at the archive's unique index before each chunk written
    # (``indexes.UniqueIndexCheck.still_there``: a catch-up can last hours).
    before_write: Callable[[], None] | None = None
    # The watcher's catch-up, written as its stream writes: ``fence`` (its lease's check) before
    # each chunk written (a watcher that lost its lease writes nothing more), and with
    # ``as_read`` no archived copy replaced unless read before its order: one the chunk's write
    # meets in another version (maybe newer: a correction its successor archived while it was
    # paused past its lease) is read again after it (``readings.Readings``).
    fence: Callable[[], None] | None = None
    as_read: bool = False
    # The watcher's catch-up, gone on from where it had got to (``tokens.CatchUpMark``, tied to
    # its stream's start): the pass starts after ``after_id`` (None: the first ``_id``), and
    # ``written`` is told each chunk's last ``_id`` once its writes, and those before, are acknowledged.
    after_id: object = None
    written: Callable[[object], None] | None = None


def pii_erasure_text(dry_run: bool, erased: int, would_erase: int | None, expiring: int | None) -> str:
    """ARCHIVE_PII_RETENTION's erasure in a run's summary. A dry run's figure holds the orders
    ARCHIVE_RETENTION removes too (``expiring``): the run deletes the undated ones before it
    erases, MongoDB's TTL monitor the others in the background (every 60 s, ``ttlMonitorSleepSecs``),
    so the run's erasure meets them or not: "up to", and how many of them, not a figure the
    server decides."""
    if not dry_run:
        return f", erased the personal data of {erased} archived (ARCHIVE_PII_RETENTION)" if erased else ""
    if not would_erase:
        return ""
    if not expiring:
        return f", would erase the personal data of {would_erase} archived (ARCHIVE_PII_RETENTION)"
    return (
        f", would erase the personal data of up to {would_erase} archived (ARCHIVE_PII_RETENTION), "
        f"{expiring} of which are past ARCHIVE_RETENTION too: deleted before the erasure (by the run, "
        "those without date_livraison; by MongoDB's TTL monitor, in the background every 60 s, the "
        "others) or erased if not yet"
    )


@dataclass
class BatchReport:
    """What a run did. Without ``--limit``, a completed run's counts add up:
    ``scanned + past_retention + past_cold_after + outside_window == delivered`` (the orders
    its pass went through)."""

    dry_run: bool = True
    listed: bool = True  # False: --simulation, whose rejects list dies with it (not in --json)
    mode: Literal["incremental", "full"] = "full"  # the pass: new deliveries only, or all
    since: datetime | None = None  # incremental: deliveries stamped from here on
    pass_reason: str = ""  # why this kind of pass (first run, full sweep due, --full...)
    # An incremental pass that read by delivery stamp alone, without the change stream: why (a
    # standalone server...). An order delivered before ``since`` but added or delivered since
    # (a backfill, a later simulate.py) then waits for the full sweep, due by ``full_sweep_due``.
    stamps_only: str | None = None
    full_sweep_due: datetime | None = None  # an incremental pass: when the next full one is due
    completed: bool = False
    # Why the run ended: completed, max_runtime, stop_file (a clean end at a chunk boundary: the
    # next run goes on from there), signal, error.
    ended: Ended | None = None
    delivered: int | None = None  # delivered orders the pass selected when the run started
    # The orders of the pass this run went through: archived + already_archived (examined, or
    # skipped by the read as archived) + revised + rejected, in every kind of pass.
    scanned: int = 0
    archived: int = 0
    already_archived: int = 0
    rejected: int = 0
    rejected_new: int = 0  # never listed before, or for another reason: these make exit 3
    outside_window: int = 0  # string dates that turned out to be outside the window
    past_retention: int = 0  # delivered longer ago than ARCHIVE_RETENTION: not archived, left in the source
    past_cold_after: int = 0  # delivered longer ago than ARCHIVE_COLD_AFTER (the cold tier's): not archived
    revised: int = 0  # archive documents replaced by a corrected version of their order
    changes_read: int | None = None  # an incremental pass: change events read since the last run
    purge_ran: bool = False  # --purge-source ran (after a complete pass)
    purged: int = 0  # --purge-source: orders deleted from the source
    purge_walked: int = 0  # --purge-source: the delivered orders it went through (what --max-rate paces)
    purge_seconds: float | None = None  # the purge alone: its rate's time (the pass's rate leaves it out)
    purge_kept: int = 0  # archived, but left in the source: changed since (see purge)
    purge_kept_cold: int = 0  # of purge_kept, a cold file's alone: the change held in the source alone
    purge_held: int = 0  # archived, but left in the source: restored within RESTORE_HOLD
    retention: dict[str, object] | None = None  # ARCHIVE_RETENTION's TTL index (retention.RetentionState)
    indexes: list[dict[str, object]] = field(default_factory=list)  # those not ready (indexes.IndexStatus)
    indexes_built: list[dict[str, object]] = field(
        default_factory=list
    )  # built by this run (IndexStatus.named)
    pii_erased: int = 0  # ARCHIVE_PII_RETENTION: archived orders whose personal data this run erased
    # Forgotten persons whose erasure in the archive a forget left unfinished, finished by this run
    forgotten_finished: int = 0
    would_erase_pii: int | None = None  # a dry run with ARCHIVE_PII_RETENTION: what --run would erase
    would_erase_pii_expiring: int | None = None  # of those, past ARCHIVE_RETENTION too (pii_erasure_text)
    undated_expired: int = 0  # ARCHIVE_RETENTION: archived orders without date_livraison deleted by age
    would_expire_undated: int | None = None  # a dry run with ARCHIVE_RETENTION: what --run would delete so
    seconds: float = 0.0
    pass_seconds: float | None = None  # the pass alone (reading, finishing, writing): the rate's time
    max_rate: float | None = None  # --max-rate held (orders a second), if set
    paced_s: float = 0.0  # seconds waited to hold it
    max_lag_s: float | None = None  # --max-lag (seconds), if set
    lag_checks: int = 0  # holds before a chunk written or deleted (none: nothing was measured)
    lag_waited_s: float = 0.0  # seconds waited for lagging secondaries
    lag_waited_for: dict[str, float] = field(default_factory=dict)  # member (host:port) -> seconds
    name: str = "batch"  # the run: batch, the watcher's catch-up, verify's repair
    partition: str | None = None  # --partition K/N: the share this run archived ("1/4")
    would_archive: int = 0
    would_purge: int | None = None  # a dry run with --purge-source: what --run would delete
    resumed_from: str | None = None
    read_retries: int = 0  # transient read failures the run went on through
    peak_rss_mib: float | None = None
    rejections: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    samples: list[Mapping[str, object]] = field(default_factory=list)
    cold: ColdMoveReport | None = None  # ARCHIVE_COLD_URL: what moved to the cold tier

    @property
    def orders_per_second(self) -> float:
        """The pass's rate: its orders over its own time, not the run's set-up (index builds,
        the plan) nor what follows it (the purge, the retention)."""
        seconds = self.pass_seconds if self.pass_seconds is not None else self.seconds
        return self.scanned / seconds if seconds > 0 else 0.0

    def add_written(self, counts: Any) -> None:
        """What the archiving step wrote (``step.ArchiveCounts``; its rejections are counted
        when listed)."""
        self.archived += counts.archived
        self.already_archived += counts.already_archived
        self.revised += counts.revised

    def counts(self) -> ArchiveCounts:
        """The run's counts as the archiving step's (the watcher's catch-up adds them up)."""
        return ArchiveCounts(self.archived, self.already_archived, self.revised, self.rejected)

    def add_purge(self, counts: Any) -> None:
        """What ``purge.SourcePurge.run`` did (its ``PurgeCounts``)."""
        self.purge_ran = True
        self.purged += counts.purged
        self.purge_walked += counts.walked
        self.purge_kept += counts.kept
        self.purge_kept_cold += len(counts.kept_cold)
        self.purge_held += counts.held

    def _purge_text(self) -> str:
        """What --purge-source did: over every archived order of the window, not the pass's."""
        if not self.purge_ran:
            return ""
        text = f"; purged {self.purged} from the source"
        kept = [
            f"{self.purge_kept} changed since archived{_kept_cold_text(self)}" if self.purge_kept else "",
            f"{self.purge_held} restored within RESTORE_HOLD" if self.purge_held else "",
        ]
        kept = [k for k in kept if k]
        return text + (f", kept {' and '.join(kept)}" if kept else "")

    def _rejected_text(self) -> str:
        if not self.rejected:
            return "0"
        if not self.listed:  # --simulation: its exit line says why nothing is kept
            return f"{self.rejected} ({self.rejected_new} new)"
        # A dry run lists nothing: the new ones are listed by a --run, the others are already.
        listed_later = self.dry_run and self.rejected_new
        where = "listed by main.py rejects after a --run" if listed_later else "list: main.py rejects"
        return f"{self.rejected} ({self.rejected_new} new; {where})"

    def summary_line(self) -> str:
        window = ""
        if self.delivered is not None:
            scope = " in the window"
            if self.since is not None and self.stamps_only is None:  # stamps and the change history
                scope = (
                    f": stamped since {self.since.isoformat()} or changed since the last run "
                    "(incremental, from the change history; --full reads them all)"
                )
            elif self.since is not None:
                scope = f" since {self.since.isoformat()} (incremental, by delivery stamp only)"
            window = f" of {self.delivered} delivered{scope}"
            if self.outside_window:  # why the counts fall short of the delivered ones
                window += (
                    f" ({self.outside_window} outside the window once their string date_commande was read)"
                )
        if self.dry_run:
            head = "dry run"
            if self.ended in PAUSES:
                head = f"dry run ended {PAUSES[self.ended]}, counts so far"
            return (
                f"{head}: {self.scanned} to examine, would archive {self.would_archive}, "
                f"already archived {self.already_archived}, would reject {self._rejected_text()}{window}"
                + (
                    f", would purge {self.would_purge} from the source"
                    if self.would_purge is not None
                    else ""
                )
                + lifecycle_text(self)
                + f" ({self.seconds:.2f}s{self._held_text()}); nothing was written, add --run to archive"
            )
        head = f"{self.name} done" if self.completed else f"{self.name} stopped before the end, counts so far"
        if self.ended in PAUSES:
            head = f"{self.name} ended {PAUSES[self.ended]}, the next run goes on from there; counts so far"
        return (
            f"{head}: scanned {self.scanned}, archived {self.archived}, already archived "
            f"{self.already_archived}"
            + (
                f", revised {self.revised} (corrected since archived, or under another ARCHIVE_PII)"
                if self.revised
                else ""
            )
            + f", rejected {self._rejected_text()}{window}"
            + self._purge_text()
            + f"; {self.seconds:.2f}s ({rates_text(self)})"
            + self._held_text()
            + self._lag_text()
            + (f"; went on through {plural(self.read_retries, 'read failure')}" if self.read_retries else "")
            + lifecycle_text(self)
        )

    def _held_text(self) -> str:
        """--max-rate, and what it counts: every order read (the rate above counts the same), the
        archived ones skipped included; a full sweep reads mostly those."""
        if not self.max_rate:
            return ""
        return (
            f", held to --max-rate {self.max_rate:g} orders read a second, already archived "
            f"ones included (waited {self.paced_s:.1f}s)"
        )

    def _lag_text(self) -> str:
        """--max-lag: how long the run waited, for whom (the member furthest behind at the time)."""
        if self.max_lag_s is None:
            return ""
        members = ", ".join(f"{m} {s:.1f}s" for m, s in sorted(self.lag_waited_for.items()))
        waited = f"waited {self.lag_waited_s:.1f}s for lagging secondaries ({members or 'none lagged'})"
        if not members and any(w.startswith("--max-lag is not applied") for w in self.warnings):
            waited = "not applied (see the warning)"  # nothing measured: "none lagged" would be a claim
        elif not self.lag_checks:
            waited = "nothing written, nothing measured"
        return f", --max-lag {self.max_lag_s:g}s: {waited}"

    def lines(
        self,
        *,
        show_samples: bool = True,
        show_pii: bool = False,
        list_indexes: bool = False,
        program: str = "python main.py",
    ) -> list[str]:
        """For a person: the summary first, the indexes not ready one per line (``list_indexes``),
        the rejections by reason, then a dry run's sample documents (masked when kept unless
        ``show_pii``), under a line that says what they are. ``program``: the command a line
        names, as the user typed it (``definition.program_name``)."""
        stamps_only = stamps_only_line(self, program)
        lines = [self.summary_line()] + ([stamps_only] if stamps_only else [])
        cold = self.cold.line() if self.cold is not None else None
        lines += [cold] if cold else []  # nothing due: nothing said (the log says it at INFO)
        lines += index_lines(self.indexes, self.indexes_built) if list_indexes else []
        if self.rejections:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.rejections.items()))
            lines.append(f"rejected orders by reason: {reasons}")
        if self.dry_run and show_samples and self.samples:
            masked = "" if show_pii else ", personal data masked"
            lines.append(
                f"{plural(len(self.samples), 'sample archive document')} as --run would write "
                f"{'them' if len(self.samples) > 1 else 'it'}{masked} (--samples N for more, 0 for none):"
            )
            lines += [
                json_util.dumps(sample, ensure_ascii=False, json_options=json_util.RELAXED_JSON_OPTIONS)
                for sample in self.samples
            ]
        return lines

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        del data["listed"]  # how the text words it, not a figure
        data["orders_per_second"] = round(self.orders_per_second, 1)
        purge_rate = purge_orders_per_second(self)
        data["purge_orders_per_second"] = None if purge_rate is None else round(purge_rate, 1)
        data["seconds"] = round(self.seconds, 3)
        data["samples"] = json.loads(json_util.dumps(self.samples))
        return data


def purge_orders_per_second(report: BatchReport) -> float | None:
    """The purge's rate: the orders it walked (deleted or left: each was read, and paid for
    under --max-rate) over its own time; None when no purge ran."""
    if report.purge_seconds is None:
        return None
    return report.purge_walked / report.purge_seconds if report.purge_seconds > 0 else 0.0


def rates_text(report: BatchReport) -> str:
    """The rate, and over what time when it is not the run's (the pass alone: index builds,
    counts and the purge aside), so that the figures printed divide as they say; the purge's
    apart ("1 order/s over its pass of 16.53s" read as the run's, purge of 7,989 included)."""
    rate = f"{plural(report.orders_per_second, 'order')}/s"
    if report.pass_seconds is not None and abs(report.pass_seconds - report.seconds) >= 0.005:
        rate = f"{rate} over its pass of {report.pass_seconds:.2f}s"
    purge_rate = purge_orders_per_second(report)
    if purge_rate is None or report.purge_seconds is None:
        return rate
    return (
        f"{rate}; the purge {plural(purge_rate, 'order')}/s over its {report.purge_seconds:.2f}s, "
        f"{plural(report.purge_walked, 'order')} walked"
    )


def _kept_cold_text(report: BatchReport) -> str:
    """Of the orders the purge kept for a change, those whose only place is a cold file: nothing
    archives the change (``purge.PurgeCounts.kept_cold``)."""
    cold = report.purge_kept_cold
    if not cold:
        return ""
    every = "all" if cold == report.purge_kept else str(cold)
    return f" ({every} of the cold tier: the change held in the source alone, never archived)"


def _past_cold_after_text(report: BatchReport) -> str:
    """Why the orders past ARCHIVE_COLD_AFTER were not archived, and where they are: the archive
    takes no order that old (docs/operating.md); a move may have taken them into the cold tier
    earlier, but with a cold tier holding no file they are in the source alone."""
    why = "not archived: older than the archive takes"
    if report.cold is not None and report.cold.holds_none:
        return (
            f"{why}; the cold tier holds no file, so they are in the source alone: docs/operating.md, "
            "orders older than ARCHIVE_COLD_AFTER never archived"
        )
    return f"{why}; in the cold tier if a move took them, else in the source alone"


def lifecycle_text(report: BatchReport) -> str:
    """What ARCHIVE_RETENTION and ARCHIVE_PII_RETENTION did (or would do), if anything."""
    text = ""
    if report.past_retention:
        text += f", {report.past_retention} past ARCHIVE_RETENTION (not archived)"
    if report.past_cold_after:
        text += f", {report.past_cold_after} past ARCHIVE_COLD_AFTER ({_past_cold_after_text(report)})"
    text += pii_erasure_text(
        report.dry_run, report.pii_erased, report.would_erase_pii, report.would_erase_pii_expiring
    )
    if report.forgotten_finished:
        text += (
            f", finished the archive's erasure of {plural(report.forgotten_finished, 'forgotten person')} "
            "a forget left unfinished"
        )
    undated = report.would_expire_undated if report.dry_run else report.undated_expired
    if undated:
        verb = "would delete" if report.dry_run else "deleted"
        text += f", {verb} {undated} archived without date_livraison (ARCHIVE_RETENTION, by order date)"
    retention = report.retention or {}
    action = retention.get("action")
    if action in DONE:
        verb = f"would {action}" if report.dry_run else DONE[action]
        text += f"; {verb} the archive's TTL index (ARCHIVE_RETENTION)"
        if isinstance(at_once := retention.get("at_once"), int) and at_once:
            text += f", which deletes {plural(at_once, 'archived order')} at once"
    if action == "pending":
        text += "; the archive's TTL index is being built (ARCHIVE_RETENTION)"
    return text + built_text(report.indexes_built) + indexes_text(report.indexes, dry_run=report.dry_run)


def built_text(built: list[dict[str, object]]) -> str:
    """The summary's part on the indexes this run built, in the dry run's words ("14 indexes
    missing, which batch --run builds"), counted; ``index_lines`` (-v) and ``--json`` name each."""
    if not built:
        return ""
    return f"; built {plural(len(built), 'missing index', 'missing indexes')} (-v lists {'them' if len(built) > 1 else 'it'})"


def indexes_text(indexes: list[dict[str, object]], *, dry_run: bool) -> str:
    """The summary's part on the indexes not ready, counted (a first run lacks them all: their
    names made one 900-character line); ``index_lines`` (-v) and ``--json`` name each."""
    if not indexes:
        return ""
    what = f"{len(indexes)} {'index' if len(indexes) == 1 else 'indexes'}"
    states = Counter(str(index["state"]) for index in indexes)
    if set(states) == {"missing"}:
        return f"; {what} missing{', which batch --run builds' if dry_run else ''} (-v lists them)"
    how = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return f"; {what} not ready: {how} (-v lists them)"


def index_lines(indexes: list[dict[str, object]], built: Sequence[dict[str, object]] = ()) -> list[str]:
    """One line per index built, then per index not ready: which, where it stands, what its
    absence costs."""
    return [f"index built: {i['collection']}.{i['index']}" for i in built] + [
        f"index not ready: {i['collection']}.{i['index']} ({i['state']}); until it is, {i['cost']}"
        for i in indexes
    ]


# --simulation's database is in memory, made anew by each run: no list is kept for `rejects`
# (which takes no --simulation) to show, and the same rejections are news each time.
AFRESH = (
    "--simulation starts afresh each run (its database is in memory): its rejections are new "
    "every time, and none is kept for `rejects` to list"
)


def rejected_exit_line(report: BatchReport, program: str, *, simulation: bool = False) -> str:
    """Why a run exits 3 (the contract's "finished, but some orders were rejected as invalid"),
    and where to see them: a first dry run's 3 came with no word of why. ``simulation``: the
    run's database was made for it alone (``AFRESH``), no list outlives it."""
    orders = plural(report.rejected_new, "order")
    if simulation:
        done = "would be rejected" if report.dry_run else "rejected"
        return f"exit 3: {orders} {done} as invalid (reasons above); {AFRESH}"
    if report.dry_run:
        return (
            f"exit 3: {orders} would be rejected as invalid (never listed before; reasons above); "
            f"`{program} rejects` lists them once a --run has met them"
        )
    return (
        f"exit 3: {orders} newly rejected as invalid (reasons above), not archived: "
        f"`{program} rejects` lists them; fixed in the source, the next run archives them"
    )


def stamps_only_line(report: BatchReport, program: str) -> str | None:
    """An incremental pass by delivery stamp alone: what it cannot see, until when, and the
    command that catches up now (a new user took its '0 delivered' for a bug)."""
    if report.stamps_only is None or report.since is None:
        return None
    due = ""
    if report.full_sweep_due is not None:
        wait = about(max((report.full_sweep_due - utc_now()).total_seconds(), 0.0))
        due = f" due by {report.full_sweep_due.isoformat()} (in {wait}; BATCH_FULL_SWEEP_EVERY)"
    return (
        f"{report.stamps_only}: an order delivered before {report.since.isoformat()} but added "
        f"since (a backfill, a later simulate.py) waits for the full sweep{due}; "
        f"{program} batch --run --full archives it now"
    )


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (Linux ``VmHWM``: unlike ``ru_maxrss`` it does not
    count what the parent held before ``exec``); None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class PassTimer:
    """Times a pass (its chunks, read, finished and written) into ``report.pass_seconds``:
    the time the report's rate is over."""

    def __init__(self, report: BatchReport) -> None:
        self.report = report

    def timed(self, chunks: Iterable[T]) -> Iterator[T]:
        started = time.monotonic()
        try:
            yield from chunks
        finally:
            self.report.pass_seconds = time.monotonic() - started
