"""Leader lease for `watch --name NAME`: one watcher of a name writes, the others wait.

A lease is a document ``{_id: "lease:NAME", owner, term, expires_at}`` in the checkpoint
collection. A watcher takes it when it is free or expired, incrementing ``term`` (the
fencing token); the leader renews it every ``renew_s``; a standby retries at the same pace
and takes over within ``ttl_s`` of the leader's death. The leader holds the lease only
while its own clock says so (renewed less than ``ttl_s - renew_s / 2`` ago: the next
renewal, ``renew_s`` later, lands before that even at the slowest pace the settings allow,
``renew_s = ttl_s / 2``; the rest is the margin for a write in flight) and the server
agrees at each renewal; the token store's writes are conditional on the term, so a leader
that was paused (GC, SIGSTOP, a VM freeze) and wakes up after a takeover cannot overwrite
the new leader's checkpoint. Expiries are written and compared in the *server's* time
(``hello``'s ``localTime``, corrected by half the round trip; through an election, the last
measured offset), so the watchers' hosts may
disagree about the time; each host's own clock only measures its lease's remaining life
(monotonic), which needs no synchronisation.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pymongo import ReturnDocument
from pymongo import errors as pymongo_errors

from order_archiver.documents import Client, MongoCollection, int_or_none
from order_archiver.errors import ArchiverError
from order_archiver.logs import get_logger
from order_archiver.mongodb.deployment import hello
from order_archiver.orders.enrichment import as_utc
from order_archiver.retry import retrying

log = get_logger("lease")


# The last offset measured between each deployment's clock and this host's (see server_time).
_offsets: weakref.WeakKeyDictionary[Client, timedelta] = weakref.WeakKeyDictionary()


def server_time(client: Client) -> datetime:
    """The deployment's current time (UTC), from ``hello``'s ``localTime`` (``isMaster`` before
    4.4.2): one clock for every watcher, whatever its host's. Half the round trip is added (the
    reply was made half-way). When ``hello`` fails (an election, a lost primary) after a first
    measurement, the last measured offset is applied to this host's clock: a lease's expiry
    stays on the server's time through an election instead of jumping to this host's. With no
    measurement yet the error is raised (the caller retries); an in-process simulation, or a
    server whose reply has no ``localTime``, is its own host's clock."""
    sent = time.monotonic()
    try:
        reply = hello(client)
    except NotImplementedError:
        return datetime.now(UTC)
    except pymongo_errors.PyMongoError:
        offset = _offsets.get(client)
        if offset is None:
            raise
        return datetime.now(UTC) + offset
    local = reply.get("localTime")
    if not isinstance(local, datetime):
        return datetime.now(UTC)
    now = as_utc(local) + timedelta(seconds=(time.monotonic() - sent) / 2)
    _offsets[client] = now - datetime.now(UTC)
    return now


def lease_key(name: str) -> str:
    """The ``_id`` of watcher ``name``'s lease in the checkpoint collection."""
    return f"lease:{name}"


class LeaseLost(ArchiverError):
    """This watcher is no longer the leader: stop writing, go back to standby."""


class Lease:
    def __init__(
        self,
        collection: MongoCollection,
        name: str,
        *,
        ttl_s: float = 15.0,
        renew_s: float = 3.0,
        stop_event: threading.Event | None = None,
        owner: str | None = None,
        on_fault: Callable[[BaseException], None] | None = None,
    ) -> None:
        if renew_s * 2 > ttl_s:
            raise ValueError("the lease must be renewed at least twice per ttl")
        self.collection = collection
        self.key = lease_key(name)
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.valid_for = ttl_s - renew_s / 2  # see the module docstring
        self.stop_event = stop_event or threading.Event()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.term: int | None = None
        self._valid_until = 0.0
        self._lost = threading.Event()
        self._renewer: threading.Thread | None = None
        # What the renewal thread does with a fault that is no server's answer (see _keep_renewing).
        self.on_fault = on_fault

    # -- state

    def held(self) -> bool:
        """Leader now: taken, not lost, and renewed recently enough by this process's clock."""
        return self.term is not None and not self._lost.is_set() and time.monotonic() < self._valid_until

    def resumed(self) -> bool:
        """Leader again without a takeover: past this process's validity (its renewals failed:
        MongoDB away for longer than the lease) but its owner and term still the lease's in the
        collection, renewed now. One renewal, fenced by the term as every renewal: a standby
        that took the lease meanwhile made a new term, and this one is then lost."""
        if self.term is None or self._lost.is_set():
            return False
        try:
            renewed = self._renew()
        except pymongo_errors.PyMongoError:
            return False
        if not renewed:
            self._lost.set()
        return renewed

    def held_by_this_process(self) -> bool:
        """The lease's owner in the collection is this process (a lease it could not renew)."""
        found = self.collection.find_one({"_id": self.key}, {"owner": 1})
        return found is not None and found.get("owner") == self.owner

    def check(self) -> None:
        """Raise ``LeaseLost`` unless leader; called before every write."""
        if not self.held():
            raise LeaseLost(f"lease {self.key} lost (term {self.term})")

    # -- acquire, renew, release

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired; True when this watcher is now the leader."""
        started = time.monotonic()

        def take() -> dict[str, object] | None:
            # The server's time inside the retried step: with no measurement yet, hello's
            # failure (a server too busy to answer) is retried and classified like the write's.
            now = self._now()
            return self.collection.find_one_and_update(
                {"_id": self.key, "expires_at": {"$lt": now}},
                {
                    "$set": {"owner": self.owner, "expires_at": now + timedelta(seconds=self.ttl_s)},
                    "$inc": {"term": 1},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )

        try:
            document = retrying(take, stop_event=self.stop_event)
        except ArchiverError as exc:
            if isinstance(exc.__cause__, pymongo_errors.DuplicateKeyError):
                return False  # it exists and has not expired: another watcher leads
            raise
        if document is None or document.get("owner") != self.owner:
            return False
        self.term = int_or_none(document["term"]) or 0
        self._valid_until = started + self.valid_for
        self._lost.clear()
        self._renewer = threading.Thread(target=self._keep_renewing, name="lease-renewer", daemon=True)
        self._renewer.start()
        log.info("leader of %s (term %d, owner %s)", self.key, self.term, self.owner)
        return True

    def _now(self) -> datetime:
        return server_time(self.collection.database.client)

    def _renew(self) -> bool:
        now = self._now()
        started = time.monotonic()
        document = self.collection.find_one_and_update(
            {"_id": self.key, "owner": self.owner, "term": self.term},
            {"$set": {"expires_at": now + timedelta(seconds=self.ttl_s)}},
            return_document=ReturnDocument.AFTER,
        )
        if document is None:
            return False
        self._valid_until = started + self.valid_for
        return True

    def _keep_renewing(self) -> None:
        while not self._lost.is_set() and not self.stop_event.wait(self.renew_s):
            if self._lost.is_set():
                return  # released during the wait: its client may be closed already
            try:
                # (A renewal in flight when the lease is released finds it gone: not a takeover.)
                if not self._renew() and not self._lost.is_set():
                    log.warning("lease %s was taken over (term %s is over)", self.key, self.term)
                    self._lost.set()
            except pymongo_errors.PyMongoError as exc:
                # Unreachable: the lease runs out by this process's clock (held() turns False).
                log.warning("lease %s not renewed (%s)", self.key, type(exc).__name__)
                if time.monotonic() >= self._valid_until:
                    self._lost.set()
            except Exception as exc:
                # No server's answer (a reply the driver cannot decode, a bug): this thread cannot
                # go on, and dying here left a traceback and a watcher whose lease lapsed, taken
                # again by the same process without a renewer, lapsing again, for ever. Handed to
                # the run (watch: it stops, then fails in one line); the lease runs out by this
                # process's clock meanwhile, as when unreachable. (A lease without ``on_fault``,
                # batch's: as before, the thread ends on it, and the lapse fences the run's writes.)
                if self.on_fault is None:
                    raise
                self.on_fault(exc)
                return

    def release(self) -> None:
        """On a clean stop: let a standby take over at once instead of after ``ttl_s``."""
        if self.term is None:
            return
        self._lost.set()
        try:
            self.collection.update_one(
                {"_id": self.key, "owner": self.owner, "term": self.term},
                {"$set": {"expires_at": self._now() - timedelta(seconds=1)}},
            )
        except pymongo_errors.PyMongoError as exc:
            log.warning("lease %s not released (%s): a standby takes over when it expires", self.key, exc)
        self.term = None
