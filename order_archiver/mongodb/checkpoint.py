"""What a batch remembers between runs: one document per (source, archive, window) in the
checkpoint collection.

A run makes one *pass* over the delivered orders of its window, in ``_id`` order: a full
pass reads them all; an incremental pass only those whose ``date_livraison`` is at or after
``since``, that is the start of the last complete pass (the server's clock) less
``BATCH_OVERLAP`` (application clocks behind the server's, writes in flight when that pass
read past them), plus the orders of the rejects list (fixed at the source since). The
state holds the *high-water mark* (the start of the last complete pass), the start of the
last complete full pass, and the pass in progress (interrupted, or cut short by
``--limit``) with the last ``_id`` whose chunk, and every chunk before it, the archive
acknowledged. It is saved only after the writes it covers, in one document replaced
whole (so a reader never sees half of it), and validated on load: anything else is
ignored with a warning, and the run is a full one.

Two runs at once, or a stale state saved over a newer one, can only move the marks back
(a later run then reads more), never past what a complete pass covered.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from order_archiver.context import RunContext
from order_archiver.documents import OrderId, ResumeToken
from order_archiver.logs import get_logger
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.orders.enrichment import as_utc
from order_archiver.retry import Retry
from order_archiver.settings import Settings

log = get_logger("batch")

CHECKPOINT_EVERY_S = 2.0
FORMAT_VERSION = 2
# A checkpoint of an earlier version (a bare ``last_id``) did not say when its pass began:
# the pass is resumed as a full one that began at the epoch, so the next run is full too.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Pass:
    """One walk over the window's delivered orders in ``_id`` order."""

    since: datetime | None  # deliveries stamped from here on; None: a full pass (all of them)
    started_at: datetime  # the server's time when the pass began
    last_id: OrderId = None  # everything up to this _id is archived (None: nothing yet)
    # Where the orders' change stream stood when the pass began: the next incremental pass
    # reads every change since (late deliveries, corrections), whatever their stamps.
    stream_token: ResumeToken | None = None

    @property
    def full(self) -> bool:
        return self.since is None


@dataclass(frozen=True)
class BatchState:
    high_water: datetime | None = None  # start of the last complete pass
    last_full_at: datetime | None = None  # start of the last complete full pass
    current: Pass | None = None  # a pass in progress: the next run resumes it
    stream_token: ResumeToken | None = None  # the last complete pass's (see Pass)

    def after(self, done: Pass) -> BatchState:
        """The state once ``done`` is complete."""
        return BatchState(
            high_water=done.started_at,
            last_full_at=done.started_at if done.full else self.last_full_at,
            current=None,
            stream_token=done.stream_token,
        )


@dataclass(frozen=True)
class PassPlan:
    pass_: Pass
    reason: str  # why this kind of pass, for the log and the report


def plan_pass(
    state: BatchState,
    now: datetime,
    *,
    overlap: timedelta,
    full_sweep_every: timedelta,
    force_full: bool = False,
    resume: bool = True,
    full_reason: str = "--full",
    own: str = "",
) -> PassPlan:
    """The pass a run makes. Pure: the state, the server's time and the settings decide.
    ``own``: what gives this run a checkpoint of its own (``this window (--date-from D)``:
    ``checkpoint_key``, ``partition.batch_checkpoint_key``), said of its first run: the runs
    without it may have a mark (``status`` shows theirs)."""
    current = state.current
    if resume and current is not None and (current.full or not force_full):
        return PassPlan(current, "resuming an interrupted pass")
    if force_full:
        return PassPlan(Pass(None, now), full_reason)
    if state.high_water is None:
        if own:
            return PassPlan(
                Pass(None, now),
                f"first run of {own}: it keeps its own high-water mark, none yet "
                "(the runs without it keep theirs)",
            )
        return PassPlan(Pass(None, now), "first run: no high-water mark yet")
    if state.high_water > now:
        # The server's clock went back, or the document was edited: trust neither.
        return PassPlan(Pass(None, now), "high-water mark ahead of the server's clock")
    if not full_sweep_every:
        return PassPlan(Pass(None, now), "BATCH_FULL_SWEEP_EVERY=0: every run is full")
    if state.last_full_at is None or now - state.last_full_at >= full_sweep_every:
        return PassPlan(Pass(None, now), "full sweep due (BATCH_FULL_SWEEP_EVERY)")
    return PassPlan(Pass(state.high_water - overlap, now), "incremental")


def checkpoint_key(
    settings: Settings, archived_by: str, date_from: datetime | None, date_to: datetime | None
) -> str:
    """One checkpoint per (source, archive, window): another window does not resume it."""
    identity = json.dumps(
        [
            settings.mongodb_database,
            settings.orders_collection,
            settings.archive_db_name,
            settings.archive_collection,
            settings.delivered_status,
            archived_by,
            date_from.isoformat() if date_from else None,
            date_to.isoformat() if date_to else None,
        ]
    )
    return "batch:" + hashlib.sha256(identity.encode()).hexdigest()[:16]


# --- the document ------------------------------------------------------------------------


def _date_or_none(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValueError(f"not a date: {value!r}")
    return as_utc(value)


def state_from_document(document: Any) -> BatchState:
    """The state a checkpoint document holds; ValueError when it is not one."""
    if not isinstance(document, dict) or document.get("kind") != "batch":
        raise ValueError("not a batch checkpoint")
    if "version" not in document:
        if "last_id" not in document:
            raise ValueError("no last_id")
        return BatchState(current=Pass(None, EPOCH, document["last_id"]))
    if document["version"] != FORMAT_VERSION:
        raise ValueError(f"unknown version {document['version']!r}")
    current = document.get("pass")
    if current is not None:
        if not isinstance(current, dict) or "last_id" not in current:
            raise ValueError("pass without last_id")
        started_at = _date_or_none(current.get("started_at"))
        if started_at is None:
            raise ValueError("pass without started_at")
        current = Pass(
            _date_or_none(current.get("since")),
            started_at,
            current["last_id"],
            _token_or_none(current.get("stream_token")),
        )
    return BatchState(
        high_water=_date_or_none(document.get("high_water")),
        last_full_at=_date_or_none(document.get("last_full_at")),
        current=current,
        stream_token=_token_or_none(document.get("stream_token")),
    )


def _token_or_none(value: Any) -> dict[str, object] | None:
    """A change stream's resume token as MongoDB gives it (a document with ``_data``)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value.get("_data"):
        raise ValueError(f"not a resume token: {value!r}")
    return dict(value)


def state_document(key: str, state: BatchState, **extra: Any) -> dict[str, object]:
    current = state.current
    return {
        "_id": key,
        "kind": "batch",
        "version": FORMAT_VERSION,
        "high_water": state.high_water,
        "last_full_at": state.last_full_at,
        "pass": None
        if current is None
        else {
            "since": current.since,
            "started_at": current.started_at,
            "last_id": current.last_id,
            "stream_token": current.stream_token,
        },
        "stream_token": state.stream_token,
        **extra,
    }


class BatchCheckpoint:
    """The state's store: load (validated), save (whole, after the writes it covers)."""

    def __init__(
        self,
        collection: MongoCollection,
        key: str,
        window: tuple[datetime | None, datetime | None],
        context: RunContext,
    ) -> None:
        self.collection = collection
        self.key = key
        self.window = window
        self.context = context  # on the archive's side: its errors name it; its clock stamps the saves
        self._saved_at = 0.0

    def load(self) -> BatchState:
        document = self.context.retrying(lambda: self.collection.find_one({"_id": self.key}))
        if document is None:
            return BatchState()
        try:
            return state_from_document(document)
        except ValueError as exc:
            log.warning("checkpoint %s is not valid (%s); this run is a full one", self.key, exc)
            return BatchState()

    def save(self, state: BatchState) -> None:
        record = state_document(
            self.key, state, updated_at=self.context.clock(), date_from=self.window[0], date_to=self.window[1]
        )
        self.context.retrying(
            lambda: self.collection.replace_one({"_id": self.key}, record, upsert=True),
            purpose=Retry.WRITE,
        )
        self._saved_at = time.monotonic()

    def save_now_and_then(self, state: BatchState, first: Callable[[], object]) -> None:
        """Progress within a pass only spares an interrupted run a re-read (writes are
        idempotent), so one write every ``CHECKPOINT_EVERY_S`` is enough. ``first``: what the
        save must follow, the rejections it passes listed (held to be listed together): a run
        killed after the save resumes past their orders, and would never meet them again."""
        if time.monotonic() - self._saved_at >= CHECKPOINT_EVERY_S:
            first()
            self.save(state)


def with_progress(state: BatchState, current: Pass, last_id: OrderId) -> BatchState:
    return replace(state, current=replace(current, last_id=last_id))
