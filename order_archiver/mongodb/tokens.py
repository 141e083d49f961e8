"""Where a watcher's resume token lives, and what it resumes from.

``ResumeState`` is the one typed record of it; ``FileTokenStore`` (a local file, replaced
atomically) and ``MongoTokenStore`` (one document per watcher name in the checkpoint
collection, its saves fenced by the lease's term) keep it; ``retire_watcher`` forgets a
watcher that will not come back.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol, TypedDict

from bson import json_util
from pymongo import errors as pymongo_errors

from order_archiver.documents import Client, MongoCollection, OrderId
from order_archiver.durable import sync_folder
from order_archiver.errors import ArchiverError, ConfigError, FatalError
from order_archiver.logs import get_logger
from order_archiver.mongodb.lease import LeaseLost, lease_key, server_time
from order_archiver.mongodb.token_lock import TokenFileBusy, TokenFileLock
from order_archiver.orders.enrichment import as_utc
from order_archiver.retry import Retry, retrying
from order_archiver.settings import Settings

log = get_logger("tokens")

TOKEN_FILE_VERSION = 1
CATCH_UP_MARK_VERSION = 1

TOKEN_KEY_PREFIX = "watch:"
RECENT_SAVE = timedelta(minutes=2)  # without file locks: a token saved this recently may be a live watcher's


def token_key(name: str) -> str:
    """The ``_id`` of watcher ``name``'s resume token in the checkpoint collection."""
    return f"{TOKEN_KEY_PREFIX}{name}"


def watcher_name(key: str) -> str:
    return key.removeprefix(TOKEN_KEY_PREFIX)


def retire_watcher(
    client: Client | None, settings: Settings, name: str | None, token_file: str | None
) -> str:
    """``main.py retire-watcher``: a watcher of the mongo store by name, or a token file."""
    if token_file or client is None:
        return retire_file_watcher(token_file or "")
    checkpoints = client[settings.archive_db_name][settings.checkpoint_collection]
    return retire_mongo_watcher(checkpoints, name or "default", now=server_time(client))


def retire_mongo_watcher(checkpoints: MongoCollection, name: str, now: datetime | None = None) -> str:
    """Forget watcher ``name`` (mongo store): its token goes, its lease is ended with a new term
    so that a paused old leader can neither renew it nor write under it. Refused while the
    lease is live. If a watcher of that name starts again, it catches up: nothing is lost.
    Retired already: said so, nothing written (exit 0: the watcher is retired, as asked; a
    name no watcher ever had is a typo, exit 2)."""
    now = now or datetime.now(UTC)
    lease = checkpoints.find_one({"_id": lease_key(name)})
    expires = lease.get("expires_at") if lease else None
    if lease is not None and isinstance(expires, datetime) and as_utc(expires) > now:
        raise ConfigError(
            f"watcher {name} is running (lease held by {lease.get('owner')} until {as_utc(expires).isoformat()}); "
            "stop it first"
        )
    removed = checkpoints.delete_one({"_id": token_key(name)}).deleted_count
    if not removed and lease is None:
        raise ConfigError(f"no watcher named {name} in {checkpoints.name} (see `main.py status`)")
    if not removed and lease is not None and lease.get("owner") is None:
        # No token, a lease no watcher owns: only a retire leaves that (a watcher's lease always
        # names its owner). Done already, as asked: exit 0, and no new term (nothing to fence).
        return f"watcher {name} was already retired (no resume token, its lease ended): nothing to do"
    if lease is not None:
        checkpoints.update_one(
            {"_id": lease_key(name)}, {"$set": {"owner": None, "expires_at": now}, "$inc": {"term": 1}}
        )
    return f"watcher {name} retired: its resume token is gone; started again, it would catch up first"


def retire_file_watcher(path: str | Path, now: datetime | None = None) -> str:
    """Forget the watcher of a token file: the file goes. Refused for a file that is not a
    token file, or while a watcher holds its lock (``token_lock.py``); the lock is held for
    the removal, so that no watcher starts meanwhile. Where the file system has no locks, a
    file saved in the last two minutes without a clean stop is refused instead."""
    target = Path(path)
    record = _token_file_record(target)
    lock = TokenFileLock(target, "retire-watcher")
    try:
        guarded = lock.acquire()
    except TokenFileBusy as exc:
        raise ConfigError(f"the watcher of {target} is running: {exc.holder}; stop it first") from None
    try:
        if not guarded:
            _refuse_recent_save(target, record, now or datetime.now(UTC))
        target.unlink()
    finally:
        lock.release()
    return f"watcher of {target} retired: the token file is gone; started again, it would catch up first"


def _token_file_record(target: Path) -> dict[str, object]:
    try:
        record = json_util.loads(target.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no resume token file {target}") from None
    except (OSError, ValueError, TypeError):
        record = None
    if not isinstance(record, dict) or "namespace" not in record:
        raise ConfigError(f"{target} is not a resume token file; left as it is")
    return record


def _refuse_recent_save(target: Path, record: Mapping[str, object], now: datetime) -> None:
    saved = record.get("saved_at")
    if (
        isinstance(saved, datetime)
        and now - as_utc(saved) < RECENT_SAVE
        and not isinstance(record.get("stopped_at"), datetime)
    ):
        raise ConfigError(
            f"{target} was saved {(now - as_utc(saved)).seconds}s ago: is its watcher running? stop it first"
        )


class StreamStart(TypedDict, total=False):
    """Where a change stream opens (``Collection.watch``'s keywords): none, or one of them."""

    resume_after: Mapping[str, object]
    start_after: Mapping[str, object]


@dataclass(frozen=True)
class CatchUpMark:
    """How far the catch-up from a stream's start has got: every delivered order up to
    ``through_id`` (in ``_id`` order) is archived, its writes acknowledged before the mark was
    saved. Kept in the token's own record, beside the ``catching_up`` token it belongs to (the
    stream's start, whose ``_data`` it names), for the catch-up of ``identity`` only
    (``watch.archiving.catch_up_identity``: the watcher's name, its source, archive and settings)."""

    through_id: OrderId
    identity: str

    def as_record(self, token: Mapping[str, object]) -> dict[str, object]:
        return {
            "version": CATCH_UP_MARK_VERSION,
            "token": token.get("_data"),
            "identity": self.identity,
            "through_id": self.through_id,
        }


def _checked_mark(
    record: Mapping[str, object], token: Mapping[str, object], origin: str
) -> CatchUpMark | None:
    """The catch-up's mark of a ``catching_up`` record, or None (from the beginning, as before
    marks existed: an older watcher's record has none). One that is not this token's is
    ignored with a warning: a mark only stands for a catch-up from the very token it is saved with."""
    mark = record.get("catch_up")
    if mark is None or record.get("catching_up") is not True:
        return None
    if (
        not isinstance(mark, Mapping)
        or mark.get("version") != CATCH_UP_MARK_VERSION
        or not isinstance(mark.get("identity"), str)
        or "through_id" not in mark
        or mark.get("token") != token.get("_data")
    ):
        log.warning(
            "the catch-up's progress in %s is not this token's; the catch-up starts from the beginning",
            origin,
        )
        return None
    return CatchUpMark(mark["through_id"], str(mark["identity"]))


@dataclass(frozen=True)
class ResumeState:
    """What a watcher resumes from, in one typed record (pymongo's ChangeStream keeps its own
    that way): no token at all (a first start: ``--from-now`` may skip the catch-up), a token
    that cannot be used (catch up, never "now"), or a token, saved after an ``invalidate`` or
    not (which decides how the stream is reopened), or where a stream started whose catch-up is
    not done (``catching_up``: whoever resumes from it catches up again)."""

    kind: Literal["none", "unusable", "token"]
    token: Mapping[str, object] | None = None
    invalidated: bool = False
    last_event_at: datetime | None = None  # the last event the saving watcher archived, kept on
    catching_up: bool = False
    catch_up: CatchUpMark | None = None  # how far that catch-up got (``catching_up`` only)
    # What the record says of its saving, not where to resume (not compared): when (the saving
    # watcher's clock), and its watcher's clean stop after it (None: no clean stop).
    saved_at: datetime | None = field(default=None, compare=False)
    stopped_at: datetime | None = field(default=None, compare=False)

    def reach(self, identity: str) -> OrderId:
        """The ``_id`` the catch-up from this token goes on after: its mark's, if the mark is
        this catch-up's (``identity``: the same watcher, source, archive and settings), else
        None (from the first ``_id``)."""
        mark = self.catch_up
        if mark is None or not self.catching_up:
            return None
        if mark.identity != identity:
            log.warning(
                "the saved catch-up progress is another catch-up's (another watcher name, "
                "source, archive or settings); the catch-up starts from the beginning"
            )
            return None
        return mark.through_id

    @property
    def first_start(self) -> bool:
        return self.kind == "none"

    @property
    def usable(self) -> bool:
        return self.kind == "token"

    def stream_options(self) -> StreamStart:
        """How to open the stream from here: after an invalidate (collection dropped or
        renamed) only ``startAfter`` may pass the token."""
        if self.token is None:
            return {}
        if self.invalidated:
            return {"start_after": self.token}
        return {"resume_after": self.token}


NO_TOKEN = ResumeState("none")
UNUSABLE = ResumeState("unusable")  # a record exists but cannot be used


class TokenStore(Protocol):
    """Where the resume token lives."""

    def load(self) -> ResumeState: ...

    def save(
        self,
        token: Mapping[str, object],
        *,
        invalidated: bool = False,
        last_event_at: datetime | None = None,
        term: int | None = None,
        catching_up: bool = False,
        catch_up: CatchUpMark | None = None,
    ) -> None: ...

    def mark_stopped(self, term: int | None = None, stop_file: str | None = None) -> None:
        """A clean stop: ``status`` shows the watcher stopped, not failing. The next save clears it.
        ``stop_file``: its --stop-file, there at the stop (``status`` says while it stays there)."""


def _checked_token(record: object, namespace: str, origin: str) -> ResumeState:
    """The token of a stored record, or ``UNUSABLE`` (with a warning): never "no token",
    which would let ``--from-now`` skip the catch-up after a corrupt file."""
    if not isinstance(record, Mapping):
        log.warning("resume token in %s is not readable; catching up instead", origin)
        return UNUSABLE
    token = record.get("token")
    if not isinstance(token, Mapping) or "_data" not in token:
        log.warning("resume token in %s is malformed; catching up instead", origin)
        return UNUSABLE
    if record.get("namespace") != namespace:
        log.warning(
            "resume token in %s belongs to %s, not %s; catching up instead",
            origin,
            record.get("namespace"),
            namespace,
        )
        return UNUSABLE
    return ResumeState(
        "token",
        dict(token),
        bool(record.get("invalidated", False)),
        _moment(record.get("last_event_at")),
        bool(record.get("catching_up", False)),
        _checked_mark(record, token, origin),
        saved_at=_moment(record.get("saved_at")),
        stopped_at=_moment(record.get("stopped_at")),
    )


def _moment(value: object) -> datetime | None:
    """A stored time, in UTC (a naive one is UTC: the driver's default); anything else None."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _token_record(
    namespace: str,
    token: Mapping[str, object],
    invalidated: bool,
    last_event_at: datetime | None,
    catching_up: bool = False,
    catch_up: CatchUpMark | None = None,
) -> dict[str, object]:
    """What both stores keep: the token, its stream, and when (``status`` reads the times);
    while catching up, how far the catch-up got (``CatchUpMark``). An older version ignores
    the field it does not know (``_checked_token`` reads the fields it names), and its next
    save, a record replaced whole, drops it: that catch-up then starts again from the beginning."""
    record: dict[str, object] = {
        "namespace": namespace,
        "token": dict(token),
        "invalidated": invalidated,
        "catching_up": catching_up,
        "saved_at": datetime.now(UTC),
        "last_event_at": last_event_at,
    }
    if catching_up and catch_up is not None:
        record["catch_up"] = catch_up.as_record(token)
    return record


class FileTokenStore:
    """A JSON file, replaced atomically: temp file in the same folder, fsync, rename."""

    def __init__(self, path: str | Path, namespace: str) -> None:
        self.path = Path(path)
        self.namespace = namespace

    def load(self) -> ResumeState:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return NO_TOKEN
        except OSError as exc:
            raise FatalError(f"cannot read resume token file {self.path}: {exc.strerror}") from None
        try:
            record = json_util.loads(text)
        except (ValueError, TypeError):
            record = None
        return _checked_token(record, self.namespace, str(self.path))

    def save(
        self,
        token: Mapping[str, object],
        *,
        invalidated: bool = False,
        last_event_at: datetime | None = None,
        term: int | None = None,
        catching_up: bool = False,
        catch_up: CatchUpMark | None = None,
    ) -> None:
        self._write(
            {
                "version": TOKEN_FILE_VERSION,
                **_token_record(self.namespace, token, invalidated, last_event_at, catching_up, catch_up),
            }
        )

    def mark_stopped(self, term: int | None = None, stop_file: str | None = None) -> None:
        try:
            record = json_util.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError, TypeError):
            return  # nothing saved yet, or unreadable: nothing to mark
        if isinstance(record, dict):
            self._write({**record, **stopped_fields(stop_file)})

    def _write(self, record: dict[str, object]) -> None:
        folder = self.path.parent if str(self.path.parent) else Path(".")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(json_util.dumps(record))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, self.path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            sync_folder(folder)  # the rename itself survives a power cut
        except OSError as exc:
            raise FatalError(f"cannot write resume token file {self.path}: {exc.strerror}") from None


class MongoTokenStore:
    """One checkpoint document per watcher name in the checkpoint collection."""

    def __init__(
        self, collection: MongoCollection, name: str, namespace: str, stop_event: threading.Event
    ) -> None:
        self.collection = collection
        self.key = token_key(name)
        self.namespace = namespace
        self.stop_event = stop_event

    def load(self) -> ResumeState:
        record = retrying(lambda: self.collection.find_one({"_id": self.key}), stop_event=self.stop_event)
        if record is None:
            return NO_TOKEN
        return _checked_token(record, self.namespace, f"{self.collection.name} ({self.key})")

    def save(
        self,
        token: Mapping[str, object],
        *,
        invalidated: bool = False,
        last_event_at: datetime | None = None,
        term: int | None = None,
        catching_up: bool = False,
        catch_up: CatchUpMark | None = None,
    ) -> None:
        """With a lease ``term``, the write is conditional on it (fencing): a checkpoint saved
        under a newer term is never overwritten, the save raises ``LeaseLost`` instead."""
        record = {
            "_id": self.key,
            "kind": "watch",
            **_token_record(self.namespace, token, invalidated, last_event_at, catching_up, catch_up),
            "term": term,
        }
        condition: dict[str, object] = {"_id": self.key}
        if term is not None:
            condition["$or"] = [{"term": {"$lte": term}}, {"term": None}]
        try:
            retrying(
                lambda: self.collection.replace_one(condition, record, upsert=True),
                purpose=Retry.WRITE,
                stop_event=self.stop_event,
            )
        except ArchiverError as exc:
            if term is not None and isinstance(exc.__cause__, pymongo_errors.DuplicateKeyError):
                raise LeaseLost(f"checkpoint {self.key} holds a newer term than {term}") from exc
            raise

    def mark_stopped(self, term: int | None = None, stop_file: str | None = None) -> None:
        """Only under this watcher's own term: a stopping old leader never marks its successor."""
        condition: dict[str, object] = {"_id": self.key}
        if term is not None:
            condition["term"] = term
        retrying(
            lambda: self.collection.update_one(condition, {"$set": stopped_fields(stop_file)}),
            purpose=Retry.LAST_WORD,
            stop_event=threading.Event(),  # the stop event is set already: still try
        )


def stopped_fields(stop_file: str | None) -> dict[str, object]:
    """A clean stop's mark: when, and the stop file there then (a leftover keeps it from starting)."""
    return {"stopped_at": datetime.now(UTC), **({"stop_file": stop_file} if stop_file else {})}
