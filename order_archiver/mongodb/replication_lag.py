"""``--max-lag``'s measurement: how far each data-bearing secondary of a replica set is behind
its primary, from one ``replSetGetStatus`` (``{replSetGetStatus: 1}`` on ``admin``; the manual,
"replSetGetStatus": each member's ``state`` and ``optimeDate``, the date of the last operation
it applied, from the heartbeats, "several seconds out of date" at most).

Why this command: it is the one that sees every member from one connection (``hello`` tells a
member's own ``lastWrite`` only, so it would need a connection to each member). Its privilege
is the ``replSetGetStatus`` action on the cluster resource, and ``replSetGetConfig`` for the
delays (the manual's "Privilege Actions"; the built-in ``clusterMonitor`` role holds both, a
custom role may hold only them): ``doctor`` checks them when ``BATCH_MAX_LAG`` is set.

A secondary's lag is the primary's ``optimeDate`` minus its own, as ``rs.printSecondaryReplicationInfo()``
computes it; only members in state SECONDARY count (an arbiter holds no data; a member that is
down, recovering or in initial sync serves no reads and would hold a run for as long as it is
away). A delayed member (``secondaryDelaySecs``) is behind by design: its lag counts less its
delay (``replSetGetConfig``, read once), so a backup member an hour behind never holds a run.

Where nothing can be measured (a standalone: 76 NoReplicationEnabled; through ``mongos``, which
answers that ``replSetGetStatus`` is not supported: a sharded cluster's shards are replica sets
the router does not report on; a user without the privilege: 13 Unauthorized; the in-process
simulation) the probe says so once, as a warning, and measures nothing more: a run is never
refused for a limit it cannot watch. A measurement is kept ``CACHE_S``: at most one command per
chunk, and no more than one a second however small the chunks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pymongo import MongoClient
from pymongo import errors as pymongo_errors

from order_archiver.documents import Document
from order_archiver.errors import is_transient
from order_archiver.logs import get_logger
from order_archiver.retry import retrying

log = get_logger("replication_lag")

PRIMARY, SECONDARY = 1, 2  # replSetGetStatus members[].state
CACHE_S = 1.0  # heartbeats come every 2 s (heartbeatIntervalMillis): measuring more often tells nothing new
NO_REPLICATION = 76  # NoReplicationEnabled: a standalone server


LAG_ACTIONS = frozenset({"replSetGetStatus", "replSetGetConfig"})  # on the cluster resource


def lag_actions_missing(privileges: list[dict[str, object]]) -> set[str]:
    """Of ``LAG_ACTIONS``, those ``privileges`` (``connectionStatus``'s
    ``authenticatedUserPrivileges``) do not grant on the cluster (or on any resource)."""
    granted: set[str] = set()
    for privilege in privileges:
        resource, actions = privilege.get("resource"), privilege.get("actions")
        if isinstance(resource, dict) and (resource.get("cluster") or resource.get("anyResource")):
            granted |= set(actions) if isinstance(actions, list) else set()
    return set(LAG_ACTIONS - granted)


@dataclass(frozen=True)
class MemberLag:
    member: str  # host:port, as the replica set's configuration names it
    seconds: float  # behind the primary (less its configured delay)


def _delays(config: Mapping[str, object]) -> dict[str, float]:
    """Each delayed member's delay (``replSetGetConfig``'s ``config.members[]``:
    ``secondaryDelaySecs`` from 5.0, ``slaveDelay`` before)."""
    inner = config.get("config")
    members = inner.get("members") if isinstance(inner, Mapping) else None
    return {
        str(m.get("host")): float(m.get("secondaryDelaySecs", m.get("slaveDelay")) or 0)
        for m in members or []
        if isinstance(m, Mapping)
    }


def secondaries_lag(
    status: Mapping[str, object], delays: Mapping[str, float] | None = None
) -> list[MemberLag]:
    """Pure: each SECONDARY's lag behind the PRIMARY in a ``replSetGetStatus`` reply (none
    without a primary: during an election nothing is written anyway)."""
    listed = status.get("members")
    members = [m for m in listed if isinstance(m, Mapping)] if isinstance(listed, list) else []
    primary = next((m for m in members if m.get("state") == PRIMARY), None)
    if primary is None or not isinstance(primary.get("optimeDate"), datetime):
        return []
    head: datetime = primary["optimeDate"]
    delays = delays or {}
    return [
        MemberLag(
            str(m.get("name")),
            max((head - m["optimeDate"]).total_seconds() - delays.get(str(m.get("name")), 0.0), 0.0),
        )
        for m in members
        if m.get("state") == SECONDARY and isinstance(m.get("optimeDate"), datetime)
    ]


def worst_over(lags: list[MemberLag], limit_s: float) -> MemberLag | None:
    """Pure: the member furthest behind among those more than ``limit_s`` behind, if any."""
    over = [lag for lag in lags if lag.seconds > limit_s]
    return max(over, key=lambda lag: lag.seconds) if over else None


def cannot_measure(exc: BaseException, deployment: str) -> str:
    """Why the lag of ``deployment`` cannot be measured, as one warning (no URI in it)."""
    details = getattr(exc, "details", None) or {}
    code = getattr(exc, "code", None)
    if details.get("info") == "mongos" or "mongos" in str(details.get("errmsg", "")):
        why = (
            "a sharded cluster (mongos does not report its shards' secondaries): each shard's lag "
            "is not watched"
        )
    elif code == NO_REPLICATION:
        why = "a standalone server has no secondaries"
    elif code == 13:
        why = (
            "the user may not run replSetGetStatus or replSetGetConfig (the clusterMonitor role grants both)"
        )
    elif isinstance(exc, NotImplementedError):
        why = "the in-process simulation has no replication"
    else:
        why = f"replSetGetStatus refused (code {code})"
    return f"--max-lag is not applied to the {deployment}: {why}"


@dataclass
class LagProbe:
    """One deployment's secondaries' lag, measured at most every ``CACHE_S``; where it cannot be
    measured: one warning (``warn``), then nothing more is asked."""

    client: MongoClient[Document]
    deployment: str  # "source deployment", "archive deployment": what the warning names
    stop_event: threading.Event
    warn: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    commands: int = 0  # replSetGetStatus sent (the bench's cost per chunk)
    measurable: bool = True
    _delays: dict[str, float] | None = field(default=None, repr=False)
    _measured: tuple[float, list[MemberLag]] | None = field(default=None, repr=False)

    def lags(self) -> list[MemberLag]:
        if not self.measurable:
            return []
        now = self.clock()
        if self._measured is not None and now - self._measured[0] < CACHE_S:
            return self._measured[1]
        reply = retrying(lambda: self._command("replSetGetStatus"), stop_event=self.stop_event)
        if reply is not None and self._delays is None:
            config = retrying(lambda: self._command("replSetGetConfig"), stop_event=self.stop_event)
            self._delays = _delays(config) if config is not None else {}
        if reply is None:
            return []
        self._measured = (now, secondaries_lag(reply, self._delays))
        return self._measured[1]

    def _command(self, name: str) -> dict[str, object] | None:
        """The reply; None (after the one warning) where the server cannot answer it."""
        try:
            self.commands += 1
            return dict(self.client.admin.command(name))
        except pymongo_errors.OperationFailure as exc:
            if is_transient(exc):
                raise  # retried
            self._give_up(exc)
        except NotImplementedError as exc:  # mongomock: "not implemented in Mongomock yet"
            self._give_up(exc)
        return None

    def _give_up(self, exc: BaseException) -> None:
        self.measurable = False
        self.warn(cannot_measure(exc, self.deployment))
