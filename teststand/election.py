"""``NX_FAULT_ELECTION``: the test server answers as a primary that steps down in the middle of
a write, then is elected again (teststand/nx_launcher.py's fault knobs).

``NX_FAULT_ELECTION=COLLECTION:N:SECONDS``: the first N write commands on COLLECTION (insert,
update, delete, findAndModify; any database) are served; the next one is the write in flight
when the primary steps down, and for SECONDS after it the server is a secondary of a replica set
with no primary; then it is primary again (re-elected). One election per server.

What each part stands for (MongoDB 4.4 to 8.0; manual, "Replica Set Elections": no primary,
and no writes, for the election's duration, "the median time before a cluster elects a new
primary should not typically exceed 12 seconds"; replSetStepDown, "Behavior"):

- The write in flight is killed (the stepdown kills every user operation that writes,
  ``ReplicationCoordinatorImpl::_killConflictingOpsOnStepUpAndStepDown``) and answered
  ``ok: 0``, code 11602 ``InterruptedDueToReplStateChange``, "operation was interrupted". An
  interrupted write command fails whole, the statements applied before the interruption stay
  applied (``write_ops_exec.cpp`` ``handleError``: "These have always failed the whole batch").
  Applied in part: the first half of its statements (each statement commits alone), and a
  lone multi statement (``multi: true``, ``limit: 0``) on one document only. A retryable write
  (a ``txnNumber``, not in a transaction: what pymongo sends for insert, update_one,
  replace_one, delete_one, find_one_and_*, and a bulk_write without a multi statement) carries
  the ``RetryableWriteError`` label (the server adds it since 4.4, ``getErrorLabels``), and
  its retry (same session, same ``txnNumber``) is answered as MongoDB's transactions table
  answers it: the statements applied before the kill are reported, not applied again; a new
  write (another ``txnNumber``: the application's own retry) applies everything again. A write
  that is not retryable (no ``txnNumber``: update_many, delete_many, a bulk_write with one of
  them) has no label: pymongo raises ``NotPrimaryError`` and never retries it.
- Until the election ends, every write command (and each index or collection change) is
  refused ``ok: 0``, code 10107 (``NotWritablePrimary``; ``NotMaster``, "not master" on 4.4),
  labelled as above; a read that asks for the primary (no ``$readPreference``, or mode
  ``primary``) is refused 13435 (``NotPrimaryNoSecondaryOk``; ``NotMasterNoSlaveOk`` on 4.4);
  ``getMore`` on an open cursor goes on (reads in progress continue across a stepdown since
  4.2, SERVER-38511). ``hello`` (and ``isMaster``) says ``isWritablePrimary: false``,
  ``secondary: true`` and names no ``primary``.
- Connections stay open: since 4.2 a stepdown no longer closes client connections (manual,
  replSetStepDown, "Client Connections"; DOCS-12372). Connections cut are
  ``teststand/fault_proxy.py``'s.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from typing import Any

from nx_27017.handler import NeoSQLiteHandler

from teststand import devserver
from teststand import mongodb_definitions as definitions

# The commands a secondary refuses with NotWritablePrimary (they write, or change the catalog).
WRITE_COMMANDS = frozenset(
    {
        "insert",
        "update",
        "delete",
        "findAndModify",
        "findandmodify",
        "createIndexes",
        "dropIndexes",
        "collMod",
        "create",
        "drop",
        "dropDatabase",
        "renameCollection",
    }
)
# The writes counted towards the election, and where each keeps its statements.
_STATEMENTS = {"insert": "documents", "update": "updates", "delete": "deletes"}
_COUNTED = frozenset({*_STATEMENTS, "findAndModify", "findandmodify"})
# Reads a secondary refuses when they ask for the primary (getMore continues an open cursor).
READ_COMMANDS = frozenset({"find", "aggregate", "count", "distinct", "listIndexes", "listCollections"})
_HELLO = ("hello", "Hello", "isMaster", "ismaster")
STEPPED_DOWN = "NX_FAULT_ELECTION: the primary stepped down"


def _error(code: int, version: definitions.Version, body: dict[str, Any]) -> dict[str, Any]:
    """MongoDB's ``ok: 0`` answer with ``code`` (its 4.4 name where it had another), and the
    ``RetryableWriteError`` label the server puts on a retryable write's failover error."""
    names = {
        11602: ("InterruptedDueToReplStateChange", "operation was interrupted"),
        10107: ("NotWritablePrimary", "not primary"),
        13435: ("NotPrimaryNoSecondaryOk", "not primary and secondaryOk=false"),
    }
    if version[:2] == (4, 4):
        names[10107] = ("NotMaster", "not master")
        names[13435] = ("NotMasterNoSlaveOk", "not master and slaveOk=false")
    name, message = names[code]
    reply: dict[str, Any] = {"ok": 0.0, "code": code, "codeName": name, "errmsg": message}
    if code != 13435 and "txnNumber" in body and "autocommit" not in body:
        reply["errorLabels"] = ["RetryableWriteError"]
    return reply


def _asks_for_primary(body: dict[str, Any]) -> bool:
    preference = body.get("$readPreference")
    return not isinstance(preference, dict) or preference.get("mode", "primary") == "primary"


def _statements(body: dict[str, Any]) -> tuple[str, list[Any]]:
    key = _STATEMENTS.get(definitions.command_name(body), "")
    return key, list(body.get(key) or []) if key else []


def _applied_part(body: dict[str, Any], retryable: bool) -> dict[str, Any] | None:
    """What of a write was applied before it was killed: the first half of its statements (each
    statement of a retryable write commits alone); of a lone multi statement (not retryable),
    one document. None: nothing."""
    key, statements = _statements(body)
    if len(statements) > 1:
        return {**body, key: statements[: len(statements) // 2]}
    if retryable or len(statements) != 1 or not isinstance(statements[0], dict):
        return None
    one = statements[0]
    if key == "updates" and one.get("multi"):
        return {**body, key: [{**one, "multi": False}]}
    if key == "deletes" and one.get("limit") == 0:
        return {**body, key: [{**one, "limit": 1}]}
    return None


def _transaction(body: dict[str, Any]) -> tuple[bytes, int] | None:
    """A retryable write's key in MongoDB's transactions table: its session and ``txnNumber``."""
    lsid = body.get("lsid")
    if "txnNumber" not in body or "autocommit" in body or not isinstance(lsid, dict):
        return None
    return bytes(lsid.get("id", b"")), int(body["txnNumber"])


def _merged(first: dict[str, Any], rest: dict[str, Any], offset: int) -> dict[str, Any]:
    """One reply for a retried write: the statements applied before the kill (``first``, as the
    transactions table remembers them) and the ``rest`` applied by the retry, indexes shifted."""
    reply = {**rest, "n": int(first.get("n", 0)) + int(rest.get("n", 0))}
    if "nModified" in first or "nModified" in rest:
        reply["nModified"] = int(first.get("nModified", 0)) + int(rest.get("nModified", 0))
    for field in ("upserted", "writeErrors"):
        entries = list(first.get(field) or []) + [
            {**e, "index": int(e["index"]) + offset} for e in rest.get(field) or []
        ]
        if entries:
            reply[field] = entries
    return reply


class Election:
    """The knob's state: the writes counted, and until when the server is no primary."""

    def __init__(self, spec: str, version: definitions.Version) -> None:
        collection, after, seconds = [*spec.split(":"), "", "", ""][:3]
        self.collection = collection
        self.after = int(after or 0)
        self.seconds = float(seconds or 12)
        self.version = version
        self.writes = 0
        self.until: float | None = None  # the election's end (monotonic), once it began
        # The retryable write killed in flight: its (session, txnNumber), the statements it
        # applied and their reply (MongoDB's transactions table answers them to its retry).
        self.killed: tuple[tuple[bytes, int], int, dict[str, Any]] | None = None
        self.lock = threading.Lock()

    def electing(self) -> bool:
        return self.until is not None and time.monotonic() < self.until

    def steps_down_on(self, body: dict[str, Any]) -> bool:
        """Count a write on the knob's collection; True for the one in flight at the stepdown."""
        name = definitions.command_name(body)
        if name not in _COUNTED or body.get(name) != self.collection:
            return False
        with self.lock:
            if self.until is not None:
                return False
            self.writes += 1
            if self.writes <= self.after:
                return False
            self.until = time.monotonic() + self.seconds
        # Said on the server's output (server.log): a test checks that its election took place.
        print(
            f"{STEPPED_DOWN} during {name} on {self.collection}: no primary for {self.seconds:g} s",
            file=sys.stderr,
            flush=True,
        )
        return True

    def refusal(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A secondary's answer to a command during the election, or None (served as usual)."""
        if not self.electing():
            return None
        name = definitions.command_name(body)
        if name in WRITE_COMMANDS:
            return _error(10107, self.version, body)
        if name in READ_COMMANDS and _asks_for_primary(body):
            return _error(13435, self.version, body)
        return None

    def hello(self, reply: dict[str, Any]) -> dict[str, Any]:
        """A secondary's ``hello`` during the election: not writable, no primary named."""
        if not self.electing() or not reply.get("ok"):
            return reply
        reply = {**reply, "secondary": True}
        for field in ("isWritablePrimary", "ismaster"):
            if field in reply:
                reply[field] = False
        reply.pop("primary", None)
        return reply

    def answer(self, handler: Any, inner: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = devserver._folded_body(msg) or {}
        request_id = msg.get("request_id", 0)
        refused = self.refusal(body)
        if refused is not None:
            return request_id, refused
        if self.steps_down_on(body):
            return request_id, self.kill(handler, inner, msg, body)
        if self.killed is not None and _transaction(body) == self.killed[0]:
            return request_id, self.retried(handler, inner, msg, body)
        request_id, reply = inner(handler, msg)
        if definitions.command_name(body) in _HELLO and isinstance(reply, dict):
            reply = self.hello(reply)
        return request_id, reply

    def kill(self, handler: Any, inner: Any, msg: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """The write in flight at the stepdown: its applied part, then 11602."""
        transaction = _transaction(body)
        part = _applied_part(body, retryable=transaction is not None)
        reply: dict[str, Any] = {"n": 0}
        if part is not None:  # applied before the kill; its reply is lost with the command
            _, reply = inner(handler, {**msg, "sections": [("body", part)]})
        if transaction is not None:
            self.killed = (transaction, len(_statements(part or {})[1]), reply)
        return _error(11602, self.version, body)

    def retried(self, handler: Any, inner: Any, msg: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """The driver's retry of the killed write (same session, same ``txnNumber``): the
        statements applied before the kill are answered as applied, not applied again."""
        assert self.killed is not None
        _, applied, first = self.killed
        self.killed = None
        key, statements = _statements(body)
        if not applied:
            return inner(handler, msg)[1]
        if applied >= len(statements):
            return {**first, "ok": 1.0}
        _, rest = inner(handler, {**msg, "sections": [("body", {**body, key: statements[applied:]})]})
        return _merged(first, rest, applied)


def add_election_knob() -> None:
    """``NX_FAULT_ELECTION``, outermost: a secondary refuses a command before it parses it."""
    spec = os.environ.get("NX_FAULT_ELECTION", "").strip()
    if not spec:
        return
    election = Election(spec, devserver.server_version())
    command, insert = NeoSQLiteHandler.handle_command, NeoSQLiteHandler.handle_insert

    @functools.wraps(command)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return election.answer(self, command, msg)

    @functools.wraps(insert)
    def handle_insert(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return election.answer(self, insert, msg)

    NeoSQLiteHandler.handle_command = handle_command
    NeoSQLiteHandler.handle_insert = handle_insert
