"""The archive's retention: ARCHIVE_RETENTION (MongoDB expires archived orders) and
ARCHIVE_PII_RETENTION (their personal data erased), both applied by ``batch --run``.

ARCHIVE_RETENTION is a TTL index of MongoDB's own, ``archive_retention`` on the archive's
``date_livraison``: MongoDB's TTL monitor (once a minute, on the primary; replicated as
deletes) removes each document that long after its delivery; a document whose
``date_livraison`` is null never expires. ``batch --run`` creates the index, changes its age
with ``collMod`` (every version since 4.4 changes a TTL index's age in place; no rebuild), and
drops it when the setting is unset: the index is the setting, and nothing else of the archive's
indexes is touched. Before any write of the run it reads the archive's indexes: an index of
another name on the same key (which MongoDB would refuse beside it: 85) or an index named
``archive_retention`` that is not this one is a configuration problem, exit 2.

ARCHIVE_PII_RETENTION: each ``batch --run`` erases, as ``forget`` does (``erasure.py``), the
personal data of the archived orders delivered longer ago, on the server's clock. The walk is
the index range ``{forgotten_at: missing, date_livraison < cutoff}`` of the archive's
``{forgotten_at, date_livraison}`` index: only the orders not yet erased, so a run costs the
orders that crossed the limit since the last one, not the archive's history."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from pymongo import ASCENDING, IndexModel
from pymongo.errors import OperationFailure

from config import Duration, Settings
from logger import get_logger, plural
from order_archiver.errors import ArchiverError, ConfigError, FatalError, describe
from order_archiver.mongodb.erasure import BY_AGE, erase_personal_data
from order_archiver.mongodb.indexes import build_options
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.retry import Retry, named_side, retrying

log = get_logger("batch")

RETENTION_INDEX = "archive_retention"
RETENTION_KEY = {"date_livraison": ASCENDING}
INDEX_NOT_FOUND = 27  # dropping an index a retried drop already dropped
INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict

Action = Literal["none", "create", "change", "drop", "keep", "unknown"]
DONE: dict[Action, str] = {"create": "created", "change": "changed", "drop": "dropped"}  # what a run did


@dataclass
class RetentionState:
    """ARCHIVE_RETENTION against the archive's TTL index, and what ``batch --run`` does about it."""

    setting: str | None  # ARCHIVE_RETENTION (None: unset)
    index_seconds: int | None  # the TTL index's age now (None: no such index)
    action: Action
    problem: str | None = None  # why a run could not do the action (it goes on; the next tries again)

    @property
    def index_age(self) -> str | None:
        return None if self.index_seconds is None else str(Duration(seconds=self.index_seconds))

    def as_dict(self) -> dict[str, Any]:
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
            "unknown": f"archive retention: ARCHIVE_RETENTION {self.setting}, not applied: {self.problem}",
        }
        return text[self.action]


def retention_state(
    archive: MongoCollection, settings: Settings, stop_event: threading.Event | None
) -> RetentionState:
    """Read the archive's indexes (a missing archive has none); refuse an index that stands
    where the TTL index must (ConfigError, before anything is written). Indexes the user may
    not list (no ``listIndexes``: deploy/mongodb-roles.js grants it) leave the retention
    ``unknown`` when it is set, a warning, and ``none`` when it is not: nothing to manage."""
    wanted = settings.archive_retention
    try:
        indexes = retrying(lambda: list(archive.list_indexes()), stop_event=stop_event)
    except FatalError as exc:
        problem = f"the archive's indexes cannot be read ({exc}); the next batch --run tries again"
        return (
            RetentionState(str(wanted), None, "unknown", problem)
            if wanted
            else RetentionState(None, None, "none")
        )
    ours = next((ix for ix in indexes if ix.get("name") == RETENTION_INDEX), None)
    if ours is not None and (
        dict(ours.get("key") or {}) != RETENTION_KEY or "expireAfterSeconds" not in ours
    ):
        raise ConfigError(
            f"the archive's index {RETENTION_INDEX!r} is not the TTL index on date_livraison this tool "
            f"manages ({dict(ours)}): drop or rename it"
        )
    if wanted is not None and ours is None:
        other = next((ix for ix in indexes if dict(ix.get("key") or {}) == RETENTION_KEY), None)
        if other is not None:
            raise ConfigError(
                f"ARCHIVE_RETENTION needs a TTL index on the archive's date_livraison, and the index "
                f"{other.get('name')!r} already holds that key (MongoDB allows one): drop it"
            )
    seconds = None if ours is None else int(ours["expireAfterSeconds"])
    return RetentionState(str(wanted) if wanted else None, seconds, _action(wanted, seconds))


def _action(wanted: Duration | None, seconds: int | None) -> Action:
    if wanted is None:
        return "none" if seconds is None else "drop"
    if seconds is None:
        return "create"
    return "keep" if seconds == int(wanted.total_seconds()) else "change"


def apply_retention(
    archive: MongoCollection, settings: Settings, stop_event: threading.Event | None
) -> RetentionState:
    """Bring the TTL index to ARCHIVE_RETENTION: create, change (``collMod``) or drop it."""
    state = retention_state(archive, settings, stop_event)
    if state.action == "unknown":
        log.warning("archive retention: %s", state.problem)
        return state
    seconds = int(settings.archive_retention.total_seconds()) if settings.archive_retention else 0
    steps: dict[Action, Callable[[], Any]] = {
        "create": lambda: archive.create_indexes(
            [IndexModel(list(RETENTION_KEY.items()), name=RETENTION_INDEX, expireAfterSeconds=seconds)],
            **build_options(archive, stop_event),
        ),
        "change": lambda: archive.database.command(
            {"collMod": archive.name, "index": {"name": RETENTION_INDEX, "expireAfterSeconds": seconds}}
        ),
        "drop": functools.partial(_drop, archive),
    }
    step = steps.get(state.action)
    if step is None:
        return state
    done = DONE[state.action]
    try:
        retrying(
            functools.partial(_conflicts_refused, step, state.action),
            purpose=Retry.COMMAND,
            stop_event=stop_event,
        )
    except ConfigError:
        raise
    except ArchiverError as exc:
        # Not a reason to stop archiving (an index build over a large archive past maxTimeMS,
        # which the server finishes on its own; a missing privilege): the next run tries again.
        state.problem = (
            f"the TTL index {RETENTION_INDEX} was not {done} ({exc}); the next batch --run tries again"
        )
        log.warning("archive retention: %s", state.problem)
        return state
    log.info(
        "archive retention: TTL index %s %s (ARCHIVE_RETENTION %s)",
        RETENTION_INDEX,
        done,
        state.setting or "unset",
    )
    return state


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


def past_pii_retention(cutoff: datetime) -> dict[str, Any]:
    """Archived orders delivered before ``cutoff`` whose personal data is not erased yet (the
    ``{forgotten_at, date_livraison}`` index range)."""
    return {"forgotten_at": {"$exists": False}, "date_livraison": {"$lt": cutoff}}


@dataclass(frozen=True)
class PiiRetention:
    """ARCHIVE_PII_RETENTION on one archive; the cutoff on the server's clock."""

    archive: MongoCollection
    length: Duration
    server_clock: Callable[[], datetime]
    stop_event: threading.Event | None

    def selection(self) -> dict[str, Any]:
        now = retrying(self.server_clock, stop_event=self.stop_event)
        return past_pii_retention(now - self.length)

    def pending(self) -> int:
        """How many archived orders are past it and still hold personal data."""
        chosen = self.selection()
        return int(retrying(lambda: self.archive.count_documents(chosen), stop_event=self.stop_event))

    def erase(self) -> int:
        erased = erase_personal_data(
            self.archive, self.selection(), forgotten_by=BY_AGE, stop_event=self.stop_event
        )
        if erased:
            log.info(
                "ARCHIVE_PII_RETENTION %s: personal data erased from %s",
                self.length,
                plural(erased, "archived order"),
            )
        return erased


@dataclass(frozen=True)
class ArchiveLifecycle:
    """Both settings for one batch run: ``ensure_index`` before its writes, ``apply`` after
    its pass, ``plan`` for a dry run; each fills the run's report (``retention``,
    ``pii_erased``, ``would_erase_pii``). The archive's errors name its deployment."""

    archive: MongoCollection
    settings: Settings
    server_clock: Callable[[], datetime]
    stop_event: threading.Event | None
    side: str = ""

    def _pii(self) -> PiiRetention | None:
        length = self.settings.archive_pii_retention
        return PiiRetention(self.archive, length, self.server_clock, self.stop_event) if length else None

    def ensure_index(self, report: Any) -> None:
        with named_side(self.side):
            state = apply_retention(self.archive, self.settings, self.stop_event)
        report.retention = state.as_dict()
        if state.problem:
            report.warnings.append(f"archive retention: {state.problem}")

    def apply(self, report: Any) -> None:
        pii = self._pii()
        if pii is not None:
            with named_side(self.side):
                report.pii_erased = pii.erase()

    def plan(self, report: Any) -> None:
        with named_side(self.side):
            state = retention_state(self.archive, self.settings, self.stop_event)
            report.retention = state.as_dict()
            if state.problem:
                report.warnings.append(f"archive retention: {state.problem}")
            pii = self._pii()
            report.would_erase_pii = pii.pending() if pii is not None else None
