"""The development server's answer to ``replSetGetStatus`` and ``replSetGetConfig``, as a replica
set's primary gives them, with a secondary that lags as long as a test says (see ``devserver.py``;
shown in ``tests/integration/test_max_lag_nx.py``).

MongoDB (the manual's "replSetGetStatus" and "replSetGetConfig"): on a member of a replica set,
``replSetGetStatus`` lists every member with its ``state`` (1 PRIMARY, 2 SECONDARY, ...) and
``optimeDate``, the date of the last operation it applied (a secondary's from the heartbeats);
``replSetGetConfig`` gives the configuration, each member's ``host`` and, for a delayed member,
``secondaryDelaySecs`` (5.0 on; ``slaveDelay`` before). A standalone server answers both
``76 NoReplicationEnabled`` ("not running with --replSet").

nx-27017 has no replication and knew neither command. Here: without ``NX_REPLICA_SET``, 76;
with it, the primary (``NX_HOST``, its ``optimeDate`` now) and, when
``NX_SECONDARY_LAG_FILE=PATH`` is set, one secondary ``SECONDARY_HOST`` whose ``optimeDate`` is
the number of seconds the file holds behind the primary's (read at every command, so that a
test makes the lag come and go during a run; no file, or an empty one: 0 s behind). Its delay
in the configuration is ``NX_SECONDARY_DELAY_S`` (default 0: not a delayed member). The
secondary is not in ``hello``'s ``hosts``: no driver should try to reach a member that does not
exist."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import Int64, Timestamp
from nx_27017.handler import NeoSQLiteHandler

from teststand import mongodb_definitions as definitions

SECONDARY_HOST = "nx-secondary.invalid:27017"
_COMMANDS = ("replSetGetStatus", "replSetGetConfig")
_NO_REPLICATION = {
    "ok": 0.0,
    "code": 76,
    "codeName": "NoReplicationEnabled",
    "errmsg": "not running with --replSet",
}


def secondary_lag_s() -> float | None:
    """The lagging secondary's seconds behind (``NX_SECONDARY_LAG_FILE``), None without one."""
    path = os.environ.get("NX_SECONDARY_LAG_FILE", "").strip()
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except OSError:
        return 0.0
    return float(text or 0)


def _member(member_id: int, host: str, state: int, applied: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "_id": member_id,
        "name": host,
        "health": 1.0,
        "state": state,
        "stateStr": "PRIMARY" if state == 1 else "SECONDARY",
        "optime": {"ts": Timestamp(int(applied.timestamp()), 1), "t": Int64(1)},
        "optimeDate": applied,
        **extra,
    }


def status(replica_set: str, now: datetime) -> dict[str, Any]:
    me = os.environ.get("NX_HOST", "127.0.0.1:27017")
    members = [_member(0, me, 1, now, self=True)]
    lag = secondary_lag_s()
    if lag is not None:
        members.append(_member(1, SECONDARY_HOST, 2, now - timedelta(seconds=lag)))
    return {
        "set": replica_set,
        "date": now,
        "myState": 1,
        "term": Int64(1),
        "heartbeatIntervalMillis": Int64(2000),
        "members": members,
        "ok": 1.0,
    }


def config(replica_set: str, version: definitions.Version) -> dict[str, Any]:
    me = os.environ.get("NX_HOST", "127.0.0.1:27017")
    members: list[dict[str, Any]] = [{"_id": 0, "host": me, "priority": 1.0, "votes": 1}]
    if secondary_lag_s() is not None:
        delay = int(float(os.environ.get("NX_SECONDARY_DELAY_S") or 0))
        delay_field = "secondaryDelaySecs" if version >= (5, 0) else "slaveDelay"
        members.append(
            {"_id": 1, "host": SECONDARY_HOST, "priority": 0.0 if delay else 1.0, delay_field: delay}
        )
    return {"config": {"_id": replica_set, "version": 1, "members": members}, "ok": 1.0}


def fix_replica_set_status(
    version: definitions.Version, folded_body: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> None:
    """Answer ``replSetGetStatus`` and ``replSetGetConfig`` as the module docstring says."""
    replica_set = os.environ.get("NX_REPLICA_SET", "").strip()
    command = NeoSQLiteHandler.handle_command

    @functools.wraps(command)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = folded_body(msg) or {}
        name = definitions.command_name(body) if body else ""
        if name not in _COMMANDS:
            return command(self, msg)
        if body.get("$db") != "admin":  # MongoDB: Unauthorized, whoever asks
            refusal = {"ok": 0.0, "code": 13, "codeName": "Unauthorized"}
            return msg.get("request_id", 0), {
                **refusal,
                "errmsg": f"{name} may only be run against the admin database.",
            }
        if not replica_set:
            return msg.get("request_id", 0), dict(_NO_REPLICATION)
        if name == "replSetGetConfig":
            return msg.get("request_id", 0), config(replica_set, version)
        return msg.get("request_id", 0), status(replica_set, datetime.now(UTC))

    NeoSQLiteHandler.handle_command = handle_command
