"""The archive's retention: ARCHIVE_RETENTION (MongoDB expires archived orders) and
ARCHIVE_PII_RETENTION (their personal data erased), both applied by ``batch --run``.

ARCHIVE_RETENTION is a TTL index of MongoDB's own, ``archive_retention`` on the archive's
``date_livraison``: MongoDB's TTL monitor (once a minute, on the primary; replicated as
deletes) removes each document that long after its delivery. ``batch --run`` creates the index
(without a time limit, as every index: ``indexes.py``; a build still running is "pending"),
changes its age with ``collMod`` (every version since 4.4 changes a TTL index's age in place; no
rebuild), and drops it when the setting is unset: the index is the setting, and nothing else of
the archive's indexes is touched. Creating or shortening it deletes at once every archived order
already past it: the dry run and the run's log say how many first (``at_once``).

An archived order without a ``date_livraison`` (dirty data: null in the archive) is never
expired by a TTL index; it counts from its order date instead (``enrichment.retention_date``):
each ``batch --run`` deletes those ordered longer ago (``UndatedRetention``; the archive's
``date_commande`` index), and ARCHIVE_PII_RETENTION erases them by the same date.

Before any write of the run it reads the archive's indexes: an index of another name on the
same key (which MongoDB would refuse beside it: 85) or an index named
``archive_retention`` that is not this one is a configuration problem, exit 2.

ARCHIVE_PII_RETENTION: each ``batch --run`` erases, as ``forget`` does (``erasure.py``), the
personal data of the archived orders delivered longer ago, the client's and the courier's, on
the server's clock. The walk is the index range ``{forgotten_by: missing or "forget",
date_livraison < cutoff}`` of the archive's ``{forgotten_by, date_livraison}`` index (and its
``date_livraison: null`` point, filtered on ``date_commande``): only the orders not yet erased
by age, so a run costs the orders that crossed the limit since the last one, not the archive's
history. The mark says what a document holds: every write keeps it so (a revision written with
personal data loses its mark: ``storage._revision``; a correction of an order already past the
limit is written erased: ``source.Finisher``), and an order a client asked to be forgotten still
has its courier's name until the limit (``forgotten_by: "forget"`` is in the range)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pymongo import ASCENDING
from pymongo.errors import OperationFailure

from order_archiver.context import RunContext
from order_archiver.documents import int_or_none, mapping_or_empty
from order_archiver.errors import ArchiverError, ConfigError, FatalError, describe
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.erasure import CHUNK as ERASURE_CHUNK
from order_archiver.mongodb.erasure import (
    UPGRADE_DONE,
    erase_personal_data,
    finish_unfinished_in_archive,
    upgrade_erasures,
)
from order_archiver.mongodb.forgotten import ForgottenPersons
from order_archiver.mongodb.indexes import IndexBuild, WantedIndex, build_options, listed_indexes, wait_for
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.orders.erasing import BY_AGE, BY_REQUEST, Erasure
from order_archiver.orders.pii import CONTRACT_FIELDS, OrderFields
from order_archiver.retry import Retry
from order_archiver.settings import Duration, Settings

log = get_logger("batch")

RETENTION_INDEX = "archive_retention"
RETENTION_KEY = {"date_livraison": ASCENDING}
INDEX_NOT_FOUND = 27  # dropping an index a retried drop already dropped
INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict

Action = Literal["none", "create", "change", "drop", "keep", "pending", "unknown"]
DONE: dict[Action, str] = {"create": "created", "change": "changed", "drop": "dropped"}  # what a run did


class RetentionReport(Protocol):
    """Where a run reports the retention's state and work (``batch.report.BatchReport``)."""

    retention: dict[str, object] | None
    warnings: list[str]
    undated_expired: int
    pii_erased: int
    forgotten_finished: int
    would_erase_pii: int | None
    would_erase_pii_expiring: int | None
    would_expire_undated: int | None


@dataclass
class RetentionState:
    """ARCHIVE_RETENTION against the archive's TTL index, and what ``batch --run`` does about it."""

    setting: str | None  # ARCHIVE_RETENTION (None: unset)
    index_seconds: int | None  # the TTL index's age now (None: no such index)
    action: Action
    problem: str | None = None  # why a run could not do the action (it goes on; the next tries again)
    at_once: int | None = None  # create, or change to a shorter age: archived orders deleted at once

    @property
    def index_age(self) -> str | None:
        return None if self.index_seconds is None else str(Duration(seconds=self.index_seconds))

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "index": RETENTION_INDEX, "index_age": self.index_age}

    def line(self) -> str:
        index = f"TTL index {RETENTION_INDEX}"
        text = {
            "none": "archive retention: none (ARCHIVE_RETENTION unset): archived orders are kept",
            "keep": f"archive retention: {self.setting} after delivery ({index}, MongoDB expires them)",
            "create": f"archive retention: ARCHIVE_RETENTION {self.setting}, no {index} yet: the next "
            "batch --run creates it",
            "change": f"archive retention: ARCHIVE_RETENTION {self.setting}, {index} says {self.index_age}: "
            "the next batch --run changes it (collMod)",
            "drop": f"archive retention: ARCHIVE_RETENTION unset, {index} still expires orders after "
            f"{self.index_age}: the next batch --run drops it",
            "pending": f"archive retention: ARCHIVE_RETENTION {self.setting}, {index} being built on the "
            "server: MongoDB expires archived orders once it is ready",
            "unknown": f"archive retention: ARCHIVE_RETENTION {self.setting}, not applied: {self.problem}",
        }
        return text[self.action] + self.at_once_text()

    def at_once_text(self) -> str:
        if self.at_once is None or self.action not in ("create", "change"):
            return ""
        return (
            f"; MongoDB then deletes at once the {plural(self.at_once, 'archived order')} delivered longer "
            f"ago than {self.setting}"
        )


def retention_state(archive: MongoCollection, settings: Settings, context: RunContext) -> RetentionState:
    """Read the archive's indexes (a missing archive has none); refuse an index that stands
    where the TTL index must (ConfigError, before anything is written). Indexes the user may
    not list (no ``listIndexes``: deploy/mongodb-roles.js grants it) leave the retention
    ``unknown`` when it is set, a warning, and ``none`` when it is not: nothing to manage."""
    wanted = settings.archive_retention
    try:
        listed = context.retrying(lambda: listed_indexes(archive))
    except FatalError as exc:
        problem = f"the archive's indexes cannot be read ({exc}); the next batch --run tries again"
        return (
            RetentionState(str(wanted), None, "unknown", problem)
            if wanted
            else RetentionState(None, None, "none")
        )
    indexes = [spec for spec, _ in listed]
    building = {str(spec.get("name")) for spec, ready in listed if not ready}
    ours = next((ix for ix in indexes if ix.get("name") == RETENTION_INDEX), None)
    if ours is not None and (
        dict(mapping_or_empty(ours.get("key"))) != RETENTION_KEY or "expireAfterSeconds" not in ours
    ):
        raise ConfigError(
            f"the archive's index {RETENTION_INDEX!r} is not the TTL index on date_livraison this tool "
            f"manages ({dict(ours)}): drop or rename it"
        )
    if wanted is not None and ours is None:
        other = next((ix for ix in indexes if dict(mapping_or_empty(ix.get("key"))) == RETENTION_KEY), None)
        if other is not None:
            raise ConfigError(
                f"ARCHIVE_RETENTION needs a TTL index on the archive's date_livraison, and the index "
                f"{other.get('name')!r} already holds that key (MongoDB allows one): drop it"
            )
    seconds = None if ours is None else int_or_none(ours["expireAfterSeconds"])
    action = _action(wanted, seconds)
    if wanted is not None and RETENTION_INDEX in building:
        action = "pending"  # neither collMod nor a second build: the server finishes this one
    return RetentionState(str(wanted) if wanted else None, seconds, action)


def _action(wanted: Duration | None, seconds: int | None) -> Action:
    if wanted is None:
        return "none" if seconds is None else "drop"
    if seconds is None:
        return "create"
    return "keep" if seconds == int(wanted.total_seconds()) else "change"


def apply_retention(
    archive: MongoCollection,
    settings: Settings,
    context: RunContext,
    server_clock: Callable[[], datetime] | None = None,
) -> RetentionState:
    """Bring the TTL index to ARCHIVE_RETENTION: create, change (``collMod``) or drop it; first
    say how many archived orders a new or shorter age deletes at once (with ``server_clock``)."""
    state = retention_state(archive, settings, context)
    if state.action == "unknown":
        log.warning("archive retention: %s", state.problem)
        return state
    if state.action not in DONE:
        return state
    if server_clock is not None:
        state.at_once = deleted_at_once(archive, state, settings, server_clock, context)
        if state.at_once:
            verb = {"create": "creating", "change": "shortening"}[state.action]
            log.warning(
                "archive retention: %s the TTL index %s (ARCHIVE_RETENTION %s)%s",
                verb,
                RETENTION_INDEX,
                state.setting,
                state.at_once_text(),
            )
    seconds = int(settings.archive_retention.total_seconds()) if settings.archive_retention else 0
    if state.action == "create":
        return _create(archive, state, seconds, settings.index_build_wait_s, context)
    steps: dict[Action, Callable[[], Any]] = {
        "change": lambda: archive.database.command(
            {"collMod": archive.name, "index": {"name": RETENTION_INDEX, "expireAfterSeconds": seconds}}
        ),
        "drop": functools.partial(_drop, archive),
    }
    done = DONE[state.action]
    try:
        context.retrying(
            functools.partial(_conflicts_refused, steps[state.action], state.action), purpose=Retry.COMMAND
        )
    except ConfigError:
        raise
    except ArchiverError as exc:
        # Not a reason to stop archiving (a missing privilege): the next run tries again.
        return _not_done(state, f"the TTL index {RETENTION_INDEX} was not {done} ({exc})")
    _done(state)
    return state


def _create(
    archive: MongoCollection,
    state: RetentionState,
    seconds: int,
    wait_s: float,
    context: RunContext,
) -> RetentionState:
    """The TTL index built as every index is (no time limit; after ``wait_s`` it is pending)."""
    wanted = WantedIndex(
        archive,
        "archive",
        list(RETENTION_KEY.items()),
        {"name": RETENTION_INDEX, "expireAfterSeconds": seconds},
    )
    build = IndexBuild([wanted], build_options(archive, context.stop), context.stop).start()
    wait_for([build], wait_s, context.stop, context.gate.ended)  # a limit of the run ends it (#34)
    if not build.done.is_set():
        state.action = "pending"
        log.info("%s", state.line())
        return state
    if build.error is not None:
        cause = build.error.__cause__
        if isinstance(cause, OperationFailure) and cause.code in INDEX_CONFLICTS:
            raise ConfigError(
                f"cannot create the archive's TTL index {RETENTION_INDEX!r}: {describe(cause)}"
            ) from None
        return _not_done(state, f"the TTL index {RETENTION_INDEX} was not created ({build.error})")
    _done(state)
    return state


def _not_done(state: RetentionState, why: str) -> RetentionState:
    state.problem = f"{why}; the next batch --run tries again"
    log.warning("archive retention: %s", state.problem)
    return state


def _done(state: RetentionState) -> None:
    log.info(
        "archive retention: TTL index %s %s (ARCHIVE_RETENTION %s)",
        RETENTION_INDEX,
        DONE[state.action],
        state.setting or "unset",
    )


def deleted_at_once(
    archive: MongoCollection,
    state: RetentionState,
    settings: Settings,
    server_clock: Callable[[], datetime],
    context: RunContext,
) -> int | None:
    """How many archived orders the TTL index deletes as soon as it is created or shortened
    (None: neither). One count, once per change of the setting (on a create, the archive has
    no index on date_livraison yet: a scan, as the build that follows is)."""
    wanted = settings.archive_retention
    if wanted is None:
        return None
    shorter = state.index_seconds is not None and wanted.total_seconds() < state.index_seconds
    if state.action != "create" and not (state.action == "change" and shorter):
        return None
    cutoff = context.retrying(server_clock) - wanted
    chosen = {"date_livraison": {"$lt": cutoff}}
    return int(context.retrying(lambda: archive.count_documents(chosen), purpose=Retry.INFORM))


def _conflicts_refused(step: Callable[[], Any], action: str) -> Any:
    """The step; an index the server says conflicts (another name on the key, created since
    the indexes were read) is a configuration problem, not a failure to retry."""
    try:
        return step()
    except OperationFailure as exc:
        if exc.code not in INDEX_CONFLICTS:
            raise
        raise ConfigError(
            f"cannot {action} the archive's TTL index {RETENTION_INDEX!r}: {describe(exc)}"
        ) from None


def _drop(archive: MongoCollection) -> None:
    try:
        archive.drop_index(RETENTION_INDEX)
    except OperationFailure as exc:
        if exc.code != INDEX_NOT_FOUND:  # a retry of a drop that was done
            raise


# --- ARCHIVE_PII_RETENTION -----------------------------------------------------------------


def undated_before(cutoff: datetime) -> dict[str, object]:
    """Archived orders without a ``date_livraison`` (null or absent) ordered before ``cutoff``:
    past a retention by their order date (``enrichment.retention_date``)."""
    return {"date_livraison": None, "date_commande": {"$lt": cutoff}}


def past_pii_retention(cutoff: datetime) -> dict[str, object]:
    """Archived orders delivered (ordered, without a delivery date) before ``cutoff`` whose
    personal data is not erased by age yet (not erased, or only their client's on request): two
    ranges of the ``{forgotten_by, date_livraison}`` index, the second its ``date_livraison:
    null`` point filtered on ``date_commande``."""
    not_erased = {"forgotten_by": {"$in": [None, BY_REQUEST]}}
    # A rooted $or: MongoDB plans each clause on the index on its own.
    return {
        "$or": [{**not_erased, "date_livraison": {"$lt": cutoff}}, {**not_erased, **undated_before(cutoff)}]
    }


@dataclass(frozen=True)
class UndatedRetention:
    """ARCHIVE_RETENTION for the archived orders a TTL index never expires (no
    ``date_livraison``): each ``batch --run`` deletes those ordered longer ago."""

    archive: MongoCollection
    length: Duration
    server_clock: Callable[[], datetime]
    context: RunContext

    def selection(self) -> dict[str, object]:
        return undated_before(self.context.retrying(self.server_clock) - self.length)

    def pending(self) -> int:
        chosen = self.selection()
        return int(self.context.retrying(lambda: self.archive.count_documents(chosen)))

    def expire(self, counted: Callable[[int], None] = lambda _: None) -> int:
        """Delete them ``CHUNK`` at a time (their ids read, then deleted under the same selection),
        each chunk meeting the run's limits (``context.gate``: #34's rate, lag, time and stop
        file): one ``delete_many`` over the whole range was one delete no limit could pace, hold
        or stop. No cursor stays open across a wait (a lag hold outlasts a cursor's 10 minutes)."""
        chosen = self.selection()
        deleted = 0
        while ids := self._next_ids(chosen):
            self.context.gate.before()
            one = functools.partial(self.archive.delete_many, {"_id": {"$in": ids}, **chosen})
            left = functools.partial(self.archive.count_documents, {"_id": {"$in": ids}, **chosen})
            done = self.context.deleted(one, len(ids), left)  # an election may kill it mid-way
            deleted += done
            counted(done)  # a run a limit ends says what it deleted before
            self.context.gate.after(len(ids))
            if not done or self.context.stopped:  # none left that this run can delete
                break
        if deleted:
            log.info(
                "ARCHIVE_RETENTION %s: deleted %s without a date_livraison, ordered longer ago",
                self.length,
                plural(deleted, "archived order"),
            )
        return deleted

    def _next_ids(self, chosen: dict[str, object]) -> list[object]:
        found = self.context.retrying(
            lambda: list(self.archive.find(chosen, {"_id": 1}).limit(ERASURE_CHUNK)), purpose=Retry.READ
        )
        return [document["_id"] for document in found]


@dataclass(frozen=True)
class PiiRetention:
    """ARCHIVE_PII_RETENTION on one archive; the cutoff on the server's clock."""

    archive: MongoCollection
    length: Duration
    server_clock: Callable[[], datetime]
    context: RunContext
    fields: OrderFields = CONTRACT_FIELDS  # the order fields known not to be personal

    def selection(self) -> dict[str, object]:
        now = self.context.retrying(self.server_clock)
        return past_pii_retention(now - self.length)

    def pending(self) -> int:
        """How many archived orders are past it and still hold personal data."""
        chosen = self.selection()
        return int(self.context.retrying(lambda: self.archive.count_documents(chosen)))

    def erase(self, counted: Callable[[int], None] = lambda _: None) -> int:
        selection = self.selection()
        erasure = Erasure(client=True, courier=True, by=BY_AGE, at=datetime.now(UTC), fields=self.fields)
        erased, unerased, unmarked = erase_personal_data(
            self.archive, selection, erasure, context=self.context, counted=counted
        )
        if unmarked:  # each named by the writer: unmarked, it stays in the range, met by each run
            log.info(
                "ARCHIVE_PII_RETENTION %s: %s too large to take the erasure's marks: personal data erased, "
                "unmarked (each run meets them again; counted as still to erase)",
                self.length,
                plural(len(unmarked), "archived order"),
            )
        if unerased:  # each named by the writer; the run goes on, and the next one tries again
            log.warning(
                "ARCHIVE_PII_RETENTION %s: %s too large to take the erasure kept their personal data",
                self.length,
                plural(len(unerased), "archived order"),
            )
        if erased:
            log.info(
                "ARCHIVE_PII_RETENTION %s: personal data erased from %s",
                self.length,
                plural(erased, "archived order"),
            )
        return erased


def earlier_erasures(archive: MongoCollection, forgotten: MongoCollection, context: RunContext) -> int:
    """The archived orders an earlier version erased by ARCHIVE_PII_RETENTION, not yet made again
    as this version erases (``upgrade_erasures``: the first batch --run, then its note in the
    record): before d585069 that erasure kept the courier's name and the source copy's undeclared
    fields, which this version's erases. ``status`` and ``doctor`` count them with the orders
    past ARCHIVE_PII_RETENTION (``verify`` says they hold personal data; the next run erases it).
    One look at the record, then one count on the ``{forgotten_by, date_livraison}`` index."""
    if ForgottenPersons(forgotten, context).noted(UPGRADE_DONE):
        return 0
    return int(context.retrying(lambda: archive.count_documents({"forgotten_by": BY_AGE})))


def _add(report: RetentionReport, name: str, count: int) -> None:
    setattr(report, name, getattr(report, name) + count)


@dataclass(frozen=True)
class ArchiveLifecycle:
    """Both settings for one batch run: ``ensure_index`` before its writes, ``apply`` after
    its pass, ``plan`` for a dry run; each fills the run's report (``retention``,
    ``pii_erased``, ``would_erase_pii`` and ``would_erase_pii_expiring``, ``undated_expired``,
    ``would_expire_undated``). The
    archive's errors name its deployment."""

    archive: MongoCollection
    settings: Settings
    server_clock: Callable[[], datetime]
    context: RunContext  # on the archive's side: its errors name it
    # False: the watcher's catch-up, whose role has neither createIndex, collMod, dropIndex nor
    # remove on the archive: the TTL index and both retentions are batch --run's.
    manage: bool = True

    def _pii(self) -> PiiRetention | None:
        length = self.settings.archive_pii_retention
        if not length:
            return None
        fields = self.settings.pii_policy.fields
        return PiiRetention(self.archive, length, self.server_clock, self.context, fields)

    def _pii_past_retention(self) -> int | None:
        """Of the orders ARCHIVE_PII_RETENTION would erase, those ARCHIVE_RETENTION removes too:
        past both (one count on the same ``{forgotten_by, date_livraison}`` ranges, at the longer
        age). A run deletes the undated ones itself before it erases; the dated ones are the TTL
        index's, which MongoDB's TTL monitor deletes in the background (every 60 s,
        ``ttlMonitorSleepSecs``): the run's erasure meets them or not. None without ARCHIVE_RETENTION."""
        retention, length = self.settings.archive_retention, self.settings.archive_pii_retention
        if not retention or not length:
            return None
        longer = max(retention, length)
        fields = self.settings.pii_policy.fields
        return PiiRetention(self.archive, longer, self.server_clock, self.context, fields).pending()

    def _undated(self) -> UndatedRetention | None:
        length = self.settings.archive_retention
        return UndatedRetention(self.archive, length, self.server_clock, self.context) if length else None

    def ensure_index(self, report: RetentionReport) -> None:
        if not self.manage:
            return
        with self.context.named():
            state = apply_retention(self.archive, self.settings, self.context, self.server_clock)
        report.retention = state.as_dict()
        if state.problem:
            report.warnings.append(f"archive retention: {state.problem}")

    def apply(self, report: RetentionReport) -> None:
        if not self.manage:
            return
        pii, undated = self._pii(), self._undated()
        with self.context.named():
            upgraded = upgrade_erasures(
                self.archive, self._record(), self.settings.pii_policy.fields, self.context
            )
            if upgraded:
                log.info(
                    "erasures of an earlier version made again as they are now: %s",
                    plural(upgraded, "archived order"),
                )
            # The erasures a forget left unfinished in the archive (a limit, a signal): finished.
            report.forgotten_finished = finish_unfinished_in_archive(
                self.archive, self._record(), self.settings.pii_policy.fields, self.context
            )
            if report.forgotten_finished:
                log.info(
                    "the archive's erasure of %s a forget left unfinished finished",
                    plural(report.forgotten_finished, "forgotten person"),
                )
            # Counted a chunk at a time: a run that a limit ends (#34) says what it did before.
            if undated is not None:
                undated.expire(lambda deleted: _add(report, "undated_expired", deleted))
            if pii is not None:
                pii.erase(lambda erased: _add(report, "pii_erased", erased))

    def _record(self) -> ForgottenPersons:
        """The record of forgotten persons beside the archive, written as the archive is."""
        collection = self.archive.database[self.settings.forgotten_collection].with_options(
            write_concern=self.archive.write_concern, read_preference=self.archive.read_preference
        )
        return ForgottenPersons(collection, self.context)

    def plan(self, report: RetentionReport) -> None:
        with self.context.named():
            state = retention_state(self.archive, self.settings, self.context)
            state.at_once = deleted_at_once(
                self.archive, state, self.settings, self.server_clock, self.context
            )
            report.retention = state.as_dict()
            if state.problem:
                report.warnings.append(f"archive retention: {state.problem}")
            pii, undated = self._pii(), self._undated()
            report.would_erase_pii = pii.pending() if pii is not None else None
            report.would_erase_pii_expiring = self._pii_past_retention() if pii is not None else None
            report.would_expire_undated = undated.pending() if undated is not None else None
