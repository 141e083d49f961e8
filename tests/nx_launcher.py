"""The development server (``devserver.py``) with the tests' fault knobs on top.

Usage (what the ``nx_server`` fixture runs)::

    python tests/nx_launcher.py --data-dir DIR -p PORT --pid-file DIR/nx.pid

Fault knobs (off by default): conditions of a real cluster that no stand-in has, made at the
wire so that the command line is shown to survive them end to end.

- ``NX_FAULT_WRITE_CONCERN=COLLECTION:N``: every N-th ``update`` command on COLLECTION is
  applied, then its inserts are undone, and the reply carries ``writeConcernError`` code 64
  ``WriteConcernTimeout``: what a client sees when a primary acknowledges a write that a
  failover then rolls back.
- ``NX_FAULT_REFUSE_NUMERO=NUMERO``: an upsert whose ``$setOnInsert`` holds that
  ``numero_commande`` is refused alone with ``writeErrors`` code 17420 ``DocumentTooLarge``
  (an archive document over 16 MB); the other statements of the command are applied.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the project's modules

from nx_27017.handler import NeoSQLiteHandler

import devserver


def _statements_section(sections: list[Any]) -> tuple[int, str] | None:
    """Where the ``updates`` of an update command are: (section index, key)."""
    for index, (_, doc) in enumerate(sections):
        if isinstance(doc, dict) and isinstance(doc.get("updates"), list):
            return index, "updates"
    return None


def _body(sections: list[Any]) -> dict[str, Any]:
    return next((doc for kind, doc in sections if kind == "body" and isinstance(doc, dict)), {})


def _with_refusals(reply: dict[str, Any], kept: list[int], refused: list[int]) -> dict[str, Any]:
    """The reply to the statements ``kept`` (indexes mapped back), plus a 17420 for each refused."""
    reply = dict(reply)
    for field in ("upserted", "writeErrors"):
        if kept and reply.get(field):
            reply[field] = [{**e, "index": kept[e["index"]]} for e in reply[field]]
    reply["writeErrors"] = list(reply.get("writeErrors") or []) + [
        {
            "index": i,
            "code": 17420,
            "codeName": "DocumentTooLarge",
            "errmsg": "Resulting document after update is larger than 16777216 (nx fault knob)",
        }
        for i in refused
    ]
    return reply


def _add_write_fault_knobs() -> None:
    """The two fault knobs of the module docstring, around the (fixed) command entry point."""
    concern = os.environ.get("NX_FAULT_WRITE_CONCERN", "")
    refused_numero = os.environ.get("NX_FAULT_REFUSE_NUMERO")
    if not concern and not refused_numero:
        return
    concern_collection, _, every = concern.partition(":")
    concern_every = int(every or 0)
    counter = {"updates": 0}
    lock = threading.Lock()
    inner = NeoSQLiteHandler.handle_command

    def refuse(msg: dict[str, Any]) -> tuple[dict[str, Any], list[int], list[int]]:
        """The message without the refused statements, the kept indexes, the refused ones."""
        sections = list(msg.get("sections", []))
        where = _statements_section(sections)
        if where is None or not refused_numero:
            return msg, [], []
        index, key = where
        statements = sections[index][1][key]
        refused = [
            i
            for i, st in enumerate(statements)
            if ((st.get("u") or {}).get("$setOnInsert") or {}).get("numero_commande") == refused_numero
        ]
        if not refused:
            return msg, [], []
        kept = [i for i in range(len(statements)) if i not in refused]
        kind, doc = sections[index]
        sections[index] = (kind, {**doc, key: [statements[i] for i in kept]})
        return {**msg, "sections": sections}, kept, refused

    @functools.wraps(inner)
    def handle_command(self: Any, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = _body(msg.get("sections", []))
        if "update" not in body:
            return inner(self, msg)
        sent, kept, refused = refuse(msg)
        if refused and not kept:
            reply: dict[str, Any] = {"ok": 1.0, "n": 0, "nModified": 0}
            request_id = msg.get("request_id", 0)
        else:
            request_id, reply = inner(self, sent)
        if refused:
            reply = _with_refusals(reply, kept, refused)
        if concern_every and body.get("update") == concern_collection and reply.get("ok"):
            with lock:
                counter["updates"] += 1
                due = counter["updates"] % concern_every == 0
            if due:
                ids = [u["_id"] for u in reply.get("upserted") or []]
                if ids:  # undone: the rollback of a write that never reached a majority
                    undo = {
                        "delete": concern_collection,
                        "deletes": [{"q": {"_id": {"$in": ids}}, "limit": 0}],
                        "$db": body.get("$db", "test"),
                    }
                    inner(self, {**msg, "sections": [("body", undo)]})
                reply = {
                    **reply,
                    "writeConcernError": {
                        "code": 64,
                        "codeName": "WriteConcernTimeout",
                        "errmsg": "waiting for replication timed out (nx fault knob: the write was rolled back)",
                    },
                }
        return request_id, reply

    NeoSQLiteHandler.handle_command = handle_command


if __name__ == "__main__":
    devserver.apply_fixes()
    _add_write_fault_knobs()
    from nx_27017.nx_27017 import main

    sys.exit(main())
