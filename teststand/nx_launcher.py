"""The development server (``teststand/devserver.py``) with the tests' fault knobs on top.

Usage (what the ``nx_server`` fixture runs)::

    python -m teststand.nx_launcher --data-dir DIR -p PORT --pid-file DIR/nx.pid [--standalone]

Fault knobs (off by default): conditions of a real cluster that no stand-in has, made at the
wire so that the command line is shown to survive them end to end.

- ``NX_FAULT_WRITE_CONCERN=COLLECTION:N``: every N-th ``update`` or ``insert`` command on
  COLLECTION is applied, then the documents it inserted (upserted) are deleted, and the reply
  carries ``writeConcernError`` code 64 ``WriteConcernTimeout``: what a client sees when a
  primary acknowledges a write that a failover then rolls back.
- ``NX_FAULT_REFUSE_NUMERO=NUMERO[:CODE]``: an upsert whose ``$setOnInsert`` holds that
  ``numero_commande``, or a document of an ``insert`` on the archive (``NX_FAULT_ARCHIVE``,
  default ``Commande_archive``: the source's own inserts are not the document this stands
  for) that holds it, is refused alone; the other statements or documents are applied. CODE
  given: ``writeErrors`` code CODE. By default the document is over 16 MB, and refused as
  MongoDB refuses one: an upsert with 17420 ``DocumentTooLarge`` ("Resulting document after
  update is larger than 16777216"), an insert with 2 ``BadValue`` "object to insert too large"
  (``fixDocumentForInsert``, src/mongo/db/ops/insert.cpp, 4.4 to 8.0).
- ``NX_FAULT_REFUSE_ALL=COLLECTION:CODE``: every statement of every ``update``, and every
  document of every ``insert``, on COLLECTION is refused with ``writeErrors`` code CODE (121
  ``DocumentValidationFailure``: a validator added to the archive, which refuses every order
  alike, inserted or updated: the deployment, not the data).
- ``NX_FAULT_REFUSE_INSERT=COLLECTION:NUMERO=CODE[/KEY],...``: an ``insert`` on COLLECTION
  refuses each document holding one of those ``numero_commande`` and inserts the others, as
  MongoDB answers an unordered insert refused in part (``writeErrors``, one per refused
  document, its ``index`` in the command). CODE 121: ``DocumentValidationFailure`` with the
  ``errInfo`` MongoDB 5.0+ sends (``failingDocumentId``, ``details``: SERVER-20547; 4.4 sends
  none); CODE 11000 with ``keyPattern``/``keyValue`` of KEY (default ``numero_commande``: a
  reused number under a unique index); ``11000/_id``: the document is first inserted as it is
  (another writer was first) and refused on ``_id``; ``11000/_id/older``: the same, the copy
  first inserted an older version of the order (another ``source_hash``: a watcher archived it
  before a correction); a KEY written ``~KEY`` (``11000/~_id``): the same refusal without
  ``keyPattern``/``keyValue``, as a server whose reply lacks ``DuplicateKeyErrorInfo`` sends
  it. Any other CODE: its code and a message.
- ``NX_FAULT_COMMAND_TOO_LARGE=NUMERO``: an ``update`` command holding a statement for that
  ``numero_commande``, or an ``insert`` on the archive (``NX_FAULT_ARCHIVE``) holding a
  document with it, is refused whole, nothing applied, ``ok: 0`` code 10334
  ``BSONObjectTooLarge`` (what MongoDB answers a command past 16 MB + 16 KB).
- ``NX_FAULT_ELECTION=COLLECTION:N:SECONDS``: after N write commands on COLLECTION, the next one
  is the write in flight when the primary steps down (11602, applied in part unless retryable),
  then SECONDS without a primary (writes 10107, primary reads 13435, ``hello`` a secondary's),
  then primary again: ``teststand/election.py``.
- ``NX_SLOW_READS_FILE=PATH``: the file holds ``COLLECTION=SECONDS`` lines; a read of
  COLLECTION (``find``, an ``aggregate`` that is no change stream, ``count``, ``distinct``) and
  each ``getMore`` of a cursor it opened is answered SECONDS late: a server that takes that long
  to fill each batch (a scan without the index it needs, a large collection on a slow disk).
  The file is read at every such command and again while a reply waits: written lower (``0``),
  a reply held by a large value is sent at once (a read hung, then released). No file, or no
  line for a collection: no delay.
- ``NX_DEFAULT_MAX_TIME_DOCS=N``: the time limit MongoDB 8.0's ``defaultMaxTimeMS`` cluster
  parameter (``setClusterParameter: {defaultMaxTimeMS: {readOperations: MS}}``; Atlas sets one
  too) puts on every read that carries no ``maxTimeMS`` of its own, scaled down from time to
  documents returned: a ``find``, or an ``aggregate`` that is no change stream and writes
  nothing (``$out``, ``$merge``: not a read operation to the parameter), sent without
  ``maxTimeMS`` may return N documents in all, across its ``getMore``s (the server rolls a
  cursor's leftover time over to each ``getMore`` of a non-tailable cursor:
  ``getmore_cmd.cpp``, ``setDeadlineAfterNowBy(cursor.getLeftoverMaxTimeMicros(),
  MaxTimeMSExpired)``). The command or ``getMore`` that would return past the N-th fails ``ok: 0``
  with 50 ``MaxTimeMSExpired`` "operation exceeded time limit", returns nothing, and its cursor
  is gone (killed, as MongoDB deletes a cursor whose ``getMore`` failed). An explicit
  ``maxTimeMS`` overrides the default, as the manual says (``0``: no limit). A ``count`` or a
  ``distinct`` answers one value: not scaled.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bson import ObjectId
from nx_27017 import changestream as nx_changestream
from nx_27017.handler import NeoSQLiteHandler

from teststand import devserver, election


def _statements_section(sections: list[Any]) -> tuple[int, str] | None:
    """Where the ``updates`` of an update command are: (section index, key)."""
    for index, (_, doc) in enumerate(sections):
        if isinstance(doc, dict) and isinstance(doc.get("updates"), list):
            return index, "updates"
    return None


def _body(sections: list[Any]) -> dict[str, Any]:
    return next((doc for kind, doc in sections if kind == "body" and isinstance(doc, dict)), {})


def _with_refusals(reply: dict[str, Any], kept: list[int], refused: list[int], code: int) -> dict[str, Any]:
    """The reply to the statements ``kept`` (indexes mapped back), plus a ``code`` for each refused."""
    reply = dict(reply)
    for field in ("upserted", "writeErrors"):
        if kept and reply.get(field):
            reply[field] = [{**e, "index": kept[e["index"]]} for e in reply[field]]
    reply["writeErrors"] = list(reply.get("writeErrors") or []) + [
        {
            "index": i,
            "code": code,
            "codeName": _CODE_NAMES.get(code, ""),
            "errmsg": f"refused: code {code} (nx fault knob)",
        }
        for i in refused
    ]
    return reply


_CODE_NAMES = {17420: "DocumentTooLarge", 121: "DocumentValidationFailure", 13: "Unauthorized"}


def _numero(statement: dict[str, Any]) -> Any:
    return ((statement.get("u") or {}).get("$setOnInsert") or {}).get("numero_commande")


# MongoDB's write error for one document of an insert over 16 MB (``fixDocumentForInsert``;
# mongod's write errors carry no ``codeName``).
_INSERT_TOO_LARGE = {
    "code": 2,
    "errmsg": "object to insert too large. size in bytes: 16777300, max size: 16777216",
}

_TOO_LARGE = {
    "ok": 0.0,
    "code": 10334,
    "codeName": "BSONObjectTooLarge",
    "errmsg": "BSONObj size: 16793600 (0x1004000) is invalid. Size must be between 0 and 16793600(16MB) "
    "(nx fault knob)",
}


class _WriteFaults:
    """The write fault knobs of the module docstring, read from the environment."""

    def __init__(self) -> None:
        concern = os.environ.get("NX_FAULT_WRITE_CONCERN", "")
        self.concern_collection, _, every = concern.partition(":")
        self.concern_every = int(every or 0)
        numero, _, code = os.environ.get("NX_FAULT_REFUSE_NUMERO", "").partition(":")
        self.refused_numero, self.refused_code = numero, int(code) if code else None
        collection, _, code = os.environ.get("NX_FAULT_REFUSE_ALL", "").partition(":")
        self.refuse_all, self.all_code = collection, int(code or 0)
        self.too_large = os.environ.get("NX_FAULT_COMMAND_TOO_LARGE", "")
        self.archive = os.environ.get("NX_FAULT_ARCHIVE", "Commande_archive")
        self.updates = 0  # the write commands (update, insert) on the write concern's collection
        self.lock = threading.Lock()

    def any(self) -> bool:
        return bool(self.concern_every or self.refused_numero or self.refuse_all or self.too_large)

    def refused_by(self, body: dict[str, Any], statement: dict[str, Any]) -> int | None:
        """The code the knobs refuse this statement with, or None."""
        if self.refuse_all and body.get("update") == self.refuse_all:
            return self.all_code
        if self.refused_numero and _numero(statement) == self.refused_numero:
            return self.refused_code or 17420  # DocumentTooLarge: the upserted document over 16 MB
        return None

    def insert_refusal(self, body: dict[str, Any], document: Any) -> dict[str, Any] | None:
        """The write error the knobs refuse this document of an insert with, or None."""
        collection = body.get("insert")
        if self.refuse_all and collection == self.refuse_all:
            return {"code": self.all_code, "errmsg": f"refused: code {self.all_code} (nx fault knob)"}
        if not (self.refused_numero and collection == self.archive and isinstance(document, dict)):
            return None
        if document.get("numero_commande") != self.refused_numero:
            return None
        if self.refused_code is None:
            return dict(_INSERT_TOO_LARGE)
        return {"code": self.refused_code, "errmsg": f"refused: code {self.refused_code} (nx fault knob)"}

    def insert_too_large(self, body: dict[str, Any]) -> bool:
        """An insert on the archive holding the ``NX_FAULT_COMMAND_TOO_LARGE`` order."""
        if not self.too_large or body.get("insert") != self.archive:
            return False
        documents = body.get("documents") or []
        return any(isinstance(d, dict) and d.get("numero_commande") == self.too_large for d in documents)

    def refuse(self, msg: dict[str, Any]) -> tuple[dict[str, Any], list[int], list[int], int]:
        """The message without the refused statements, the kept indexes, the refused ones, their code."""
        sections = list(msg.get("sections", []))
        where = _statements_section(sections)
        if where is None:
            return msg, [], [], 0
        index, key = where
        statements = sections[index][1][key]
        codes = [self.refused_by(_body(sections), st) for st in statements]
        refused = [i for i, c in enumerate(codes) if c is not None]
        if not refused:
            return msg, [], [], 0
        kept = [i for i in range(len(statements)) if i not in refused]
        kind, doc = sections[index]
        sections[index] = (kind, {**doc, key: [statements[i] for i in kept]})
        return {**msg, "sections": sections}, kept, refused, int(codes[refused[0]] or 0)

    def whole_command_too_large(self, msg: dict[str, Any]) -> bool:
        where = _statements_section(list(msg.get("sections", [])))
        if not self.too_large or where is None:
            return False
        index, key = where
        return any(_numero(st) == self.too_large for st in msg["sections"][index][1][key])

    def rolled_back(self, body: dict[str, Any], reply: dict[str, Any]) -> bool:
        collection = body.get("update", body.get("insert"))
        if not self.concern_every or collection != self.concern_collection or not reply.get("ok"):
            return False
        with self.lock:
            self.updates += 1
            return self.updates % self.concern_every == 0


class _InsertRefusals:
    """``NX_FAULT_REFUSE_INSERT``: chosen documents of an insert refused, the rest inserted."""

    def __init__(self, spec: str) -> None:
        self.collection, _, choices = spec.partition(":")
        self.codes: dict[str, tuple[int, str]] = {}
        self.bare: set[str] = set()  # refused without keyPattern/keyValue
        self.older: set[str] = set()  # first inserted as an older version
        for choice in filter(None, choices.split(",")):
            numero, _, refusal = choice.partition("=")
            code, _, key = refusal.partition("/")
            key, _, variant = key.partition("/")
            if key.startswith("~"):
                self.bare.add(numero)
            if variant == "older":
                self.older.add(numero)
            self.codes[numero] = (int(code), key.lstrip("~") or "numero_commande")

    def applies(self, body: dict[str, Any]) -> bool:
        return bool(self.codes) and body.get("insert") == self.collection

    def write_error(self, index: int, document: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """The write error MongoDB sends for this document (``write_ops_exec.cpp``,
        ``DuplicateKeyErrorInfo``, ``doc_validation_error.cpp``)."""
        code, key = self.codes[document["numero_commande"]]
        if code == 121:
            return {
                "index": index,
                "code": 121,
                "errInfo": {
                    "failingDocumentId": document.get("_id"),
                    "details": {
                        "operatorName": "$jsonSchema",
                        "schemaRulesNotSatisfied": [
                            {
                                "operatorName": "required",
                                "specifiedAs": {"required": ["zone"]},
                                "missingProperties": ["zone"],
                            }
                        ],
                    },
                },
                "errmsg": "Document failed validation",
            }
        if code == 11000:
            value = document.get(key)
            shown = (
                f'"{value}"'
                if isinstance(value, str)
                else f"ObjectId('{value}')"
                if isinstance(value, ObjectId)
                else value
            )
            named = (
                {}
                if document["numero_commande"] in self.bare
                else {"keyPattern": {key: 1}, "keyValue": {key: value}}
            )
            return {
                "index": index,
                "code": 11000,
                **named,
                "errmsg": f"E11000 duplicate key error collection: {body.get('$db')}.{self.collection} "
                f"index: {'_id_' if key == '_id' else key + '_1'} dup key: {{ {key}: {shown} }}",
            }
        return {"index": index, "code": code, "errmsg": f"refused: code {code} (nx fault knob)"}

    def handle(self, inner: Any, handler: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = devserver._folded_body(msg) or {}
        documents = list(body.get("documents") or [])
        chosen = [i for i, d in enumerate(documents) if d.get("numero_commande") in self.codes]
        if chosen and body.get("ordered", True):  # an ordered insert stops at its first error
            chosen = chosen[:1]
        for i in chosen:  # 11000 on _id: another writer inserted it first
            numero = documents[i]["numero_commande"]
            if self.codes[numero] == (11000, "_id"):
                copy = dict(documents[i])
                if numero in self.older:  # archived before a correction: another source version
                    copy["source_hash"] = f"older-{copy.get('source_hash')}"
                first = {**body, "documents": [copy], "ordered": True}
                inner(handler, {**msg, "sections": [("body", first)]})
        refusals = {i: self.write_error(i, documents[i], body) for i in chosen}
        return devserver.insert_refusing(handler, inner, msg, refusals)


def _add_insert_refusals() -> None:
    """``NX_FAULT_REFUSE_INSERT``, around the (fixed) insert entry point."""
    refusals = _InsertRefusals(os.environ.get("NX_FAULT_REFUSE_INSERT", ""))
    if not refusals.codes:
        return
    inner = NeoSQLiteHandler.handle_insert

    @functools.wraps(inner)
    def handle_insert(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not refusals.applies(devserver._folded_body(msg) or {}):
            return inner(self, msg)
        return refusals.handle(inner, self, msg)

    NeoSQLiteHandler.handle_insert = handle_insert


def _add_write_fault_knobs() -> None:
    """The write fault knobs, around the (fixed) command entry point."""
    faults = _WriteFaults()
    if not faults.any():
        return
    inner = NeoSQLiteHandler.handle_command

    @functools.wraps(inner)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = _body(msg.get("sections", []))
        if "update" not in body:
            return inner(self, msg)
        if faults.whole_command_too_large(msg):
            return msg.get("request_id", 0), dict(_TOO_LARGE)
        sent, kept, refused, code = faults.refuse(msg)
        if refused and not kept:
            reply: dict[str, Any] = {"ok": 1.0, "n": 0, "nModified": 0}
            request_id = msg.get("request_id", 0)
        else:
            request_id, reply = inner(self, sent)
        if refused:
            reply = _with_refusals(reply, kept, refused, code)
        if faults.rolled_back(body, reply):
            ids = [u["_id"] for u in reply.get("upserted") or []]
            if ids:  # undone: the rollback of a write that never reached a majority
                undo = {
                    "delete": faults.concern_collection,
                    "deletes": [{"q": {"_id": {"$in": ids}}, "limit": 0}],
                    "$db": body.get("$db", "test"),
                }
                inner(self, {**msg, "sections": [("body", undo)]})
            reply = _write_concern_error(reply)
        return request_id, reply

    NeoSQLiteHandler.handle_command = handle_command
    _add_insert_write_faults(faults)


def _write_concern_error(reply: dict[str, Any]) -> dict[str, Any]:
    return {
        **reply,
        "writeConcernError": {
            "code": 64,
            "codeName": "WriteConcernTimeout",
            "errmsg": "waiting for replication timed out (nx fault knob: the write was rolled back)",
        },
    }


def _inserted_ids(body: dict[str, Any], reply: dict[str, Any]) -> list[Any]:
    """The ``_id`` of each document an insert inserted (an ordered one stops at its first error)."""
    documents = list(body.get("documents") or [])
    refused = {int(e["index"]) for e in reply.get("writeErrors") or []}
    if refused and body.get("ordered", True):
        documents = documents[: min(refused)]
    return [
        d["_id"] for i, d in enumerate(documents) if i not in refused and isinstance(d, dict) and "_id" in d
    ]


def _add_insert_write_faults(faults: _WriteFaults) -> None:
    """The same knobs on ``insert`` commands, which nx-27017 serves apart from the others:
    MongoDB refuses a document over 16 MB, a validator's refusal, a command too large, and
    rolls back an unreplicated write, inserted or updated alike."""
    inner = NeoSQLiteHandler.handle_insert

    @functools.wraps(inner)
    def handle_insert(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = dict(devserver._folded_body(msg) or {})  # before the handler: it pops "$db"
        if faults.insert_too_large(body):
            return msg.get("request_id", 0), dict(_TOO_LARGE)
        documents = list(body.get("documents") or [])
        refusals = {
            i: error
            for i, document in enumerate(documents)
            if (error := faults.insert_refusal(body, document)) is not None
        }
        request_id, reply = devserver.insert_refusing(self, inner, msg, refusals)
        if faults.rolled_back(body, reply):
            ids = _inserted_ids(body, reply)
            if ids:  # undone: the rollback of a write that never reached a majority
                undo = {
                    "delete": faults.concern_collection,
                    "deletes": [{"q": {"_id": {"$in": ids}}, "limit": 0}],
                    "$db": body.get("$db", "test"),
                }
                NeoSQLiteHandler.handle_command(self, {**msg, "sections": [("body", undo)]})
            reply = _write_concern_error(reply)
        return request_id, reply

    NeoSQLiteHandler.handle_insert = handle_insert


class _SlowReads:
    """``NX_SLOW_READS_FILE``: the reads of a collection, and the cursors they opened, answered late."""

    READS = ("find", "aggregate", "count", "distinct")

    def __init__(self, path: str) -> None:
        self.path = path
        self.cursors: dict[int, str] = {}  # cursor id -> the collection read
        self.lock = threading.Lock()

    def delay_s(self, collection: str) -> float:
        try:
            text = Path(self.path).read_text(encoding="utf-8")
        except OSError:
            return 0.0
        for line in text.splitlines():
            name, _, seconds = line.partition("=")
            if name.strip() == collection and seconds.strip():
                return float(seconds)
        return 0.0

    def collection_of(self, body: dict[str, Any]) -> str | None:
        """The collection this command reads slowly, or None."""
        if "getMore" in body:
            with self.lock:
                return self.cursors.get(int(body["getMore"]))
        name = next((body[k] for k in self.READS if k in body), None)
        if not isinstance(name, str):
            return None
        if "aggregate" in body and nx_changestream.is_change_stream_pipeline(body.get("pipeline") or []):
            return None  # the change stream is not the read this stands for
        return name if self.delay_s(name) > 0 else None

    def wait(self, collection: str) -> None:
        """Until the file's delay for ``collection`` has passed (read again as it waits)."""
        started = time.monotonic()
        while time.monotonic() - started < self.delay_s(collection):
            time.sleep(0.05)

    def opened(self, collection: str, reply: dict[str, Any]) -> None:
        cursor = reply.get("cursor") if isinstance(reply, dict) else None
        cursor_id = int(cursor.get("id") or 0) if isinstance(cursor, dict) else 0
        if cursor_id:
            with self.lock:
                self.cursors[cursor_id] = collection


def _add_slow_reads() -> None:
    path = os.environ.get("NX_SLOW_READS_FILE", "")
    if not path:
        return
    slow = _SlowReads(path)
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = devserver._folded_body(msg)
        collection = slow.collection_of(body) if body is not None else None
        request_id, reply = original(self, msg)
        if collection is not None:
            slow.opened(collection, reply)
            slow.wait(collection)  # the batch is ready; it reaches the client that much later
        return request_id, reply

    NeoSQLiteHandler.handle_command = handle_command


MAX_TIME_EXPIRED = {"ok": 0.0, "code": 50, "codeName": "MaxTimeMSExpired"}
_NOT_READS = ("$out", "$merge")  # an aggregate that writes: not a read to defaultMaxTimeMS


class _DefaultMaxTime:
    """``NX_DEFAULT_MAX_TIME_DOCS``: the reads sent without ``maxTimeMS``, and the documents each
    cursor they opened returned so far (its time spent, scaled down)."""

    def __init__(self, documents: int) -> None:
        self.documents = documents
        self.cursors: dict[int, int] = {}  # cursor id -> documents returned
        self.lock = threading.Lock()

    @staticmethod
    def limited(body: dict[str, Any]) -> bool:
        """A read the default time limit applies to: no ``maxTimeMS`` of its own."""
        if "maxTimeMS" in body:
            return False
        if isinstance(body.get("find"), str):
            return True
        pipeline = body.get("pipeline") or []
        if not isinstance(body.get("aggregate"), (str, int)) or not isinstance(pipeline, list):
            return False
        if nx_changestream.is_change_stream_pipeline(pipeline):
            return False  # a tailable cursor: its getMores wait, no time rolled over
        return not any(isinstance(stage, dict) and set(stage) & set(_NOT_READS) for stage in pipeline)

    def handle(self, original: Any, handler: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = devserver._folded_body(msg)
        if body is None:
            return original(handler, msg)
        if "getMore" in body:
            with self.lock:
                spent = self.cursors.get(int(body["getMore"]))
            if spent is None:
                return original(handler, msg)
            return self._answer(original, handler, msg, body, spent, "getMore")
        if not self.limited(body):
            return original(handler, msg)
        return self._answer(original, handler, msg, body, 0, "find" if "find" in body else "aggregate")

    def _answer(
        self, original: Any, handler: Any, msg: dict[str, Any], body: dict[str, Any], spent: int, name: str
    ) -> tuple[int, dict[str, Any]]:
        request_id, reply = original(handler, msg)
        cursor = reply.get("cursor") if isinstance(reply, dict) and reply.get("ok") else None
        if not isinstance(cursor, dict):
            return request_id, reply
        cursor_id = int(cursor.get("id") or 0)
        returned = spent + len(cursor.get("firstBatch", cursor.get("nextBatch")) or [])
        if returned <= self.documents:
            with self.lock:
                if cursor_id:
                    self.cursors[cursor_id] = returned
                else:
                    self.cursors.pop(int(body.get("getMore") or 0), None)
            return request_id, reply
        with self.lock:
            self.cursors.pop(cursor_id, None)
        if cursor_id:  # the server deletes the cursor of a command that failed
            collection = body.get("collection") or body.get("find") or body.get("aggregate")
            devserver._inner(handler, original, body, {"killCursors": collection, "cursors": [cursor_id]})
        caused = "Executor error during getMore" if name == "getMore" else f"PlanExecutor error during {name}"
        return request_id, {
            **MAX_TIME_EXPIRED,
            "errmsg": f"{caused} :: caused by :: operation exceeded time limit",
        }


def _add_default_max_time() -> None:
    documents = os.environ.get("NX_DEFAULT_MAX_TIME_DOCS", "").strip()
    if not documents:
        return
    limit = _DefaultMaxTime(int(documents))
    original = NeoSQLiteHandler.handle_command

    @functools.wraps(original)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return limit.handle(original, self, msg)

    NeoSQLiteHandler.handle_command = handle_command


if __name__ == "__main__":
    arguments = devserver.choose_topology(sys.argv[1:])
    devserver.apply_fixes()
    _add_write_fault_knobs()
    _add_insert_refusals()
    _add_slow_reads()
    _add_default_max_time()
    election.add_election_knob()  # outermost: a secondary refuses a write before anything parses it
    sys.exit(devserver.serve(arguments))
