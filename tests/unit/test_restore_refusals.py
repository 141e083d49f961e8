"""`restore` (#30 item 5) when the source refuses part of its unordered insert: MongoDB inserts
every document it does not refuse and answers a ``BulkWriteError`` whose ``writeErrors`` name
each refused one (``index`` into the command, ``code``, ``errmsg``; ``keyPattern``/``keyValue``
for a duplicate key since 4.4; ``errInfo`` for a validator since 5.0). The product is handed
exactly that (mongomock inserts the rest, as the server does), and must: mark ``restored_at``
before the insert, keep it only on what the source holds as archived afterwards, count a
duplicate key as "already there" only on ``_id`` with the same BSON, and report each refusal.
The same at the wire: tests/e2e/test_restore_e2e.py (NX_FAULT_REFUSE_INSERT)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import mongomock
import pytest
from bson import ObjectId
from pymongo.errors import BulkWriteError

from order_archiver.operations.restore import RestoreSelection, restore

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def order(numero: str, **fields: Any) -> dict[str, Any]:
    return {"_id": ObjectId(), "numero_commande": numero, "status": "livrée", "quantite": 1, **fields}


@pytest.fixture
def db(mongo, settings):
    return mongo[settings.mongodb_database]


def archive(db, settings, *orders: dict[str, Any], restored_at: datetime | None = None) -> None:
    db[settings.archive_collection].insert_many(
        [
            {
                "_id": o["_id"],
                "numero_commande": o["numero_commande"],
                "date_commande": NOW,
                "source": o,
                **({"restored_at": restored_at} if restored_at else {}),
            }
            for o in orders
        ]
    )


def server_refusing(monkeypatch, settings, refusals: dict[str, dict[str, Any]], before=None):
    """The orders collection answers an unordered insert as MongoDB does when it refuses the
    documents whose numero is in ``refusals`` with that write error: the rest inserted, one
    ``BulkWriteError`` with pymongo's ``details`` (``op`` is the document, as pymongo adds it).
    ``before(documents)`` runs first: another writer at work between the restore's read and
    its insert."""
    original = mongomock.collection.Collection.insert_many

    def insert_many(self, documents, ordered=True, *args, **kwargs):
        if self.name != settings.orders_collection:
            return original(self, documents, ordered, *args, **kwargs)
        documents = list(documents)
        if before is not None:
            before(self, documents)
        refused = {
            i: refusals[d["numero_commande"]]
            for i, d in enumerate(documents)
            if d["numero_commande"] in refusals
        }
        kept = [d for i, d in enumerate(documents) if i not in refused]
        if kept:
            original(self, kept, ordered=False)
        if refused:
            raise BulkWriteError(
                {
                    "writeErrors": [
                        {"index": i, **error, "op": documents[i]} for i, error in refused.items()
                    ],
                    "writeConcernErrors": [],
                    "nInserted": len(kept),
                    "nUpserted": 0,
                    "nMatched": 0,
                    "nModified": 0,
                    "nRemoved": 0,
                    "upserted": [],
                }
            )
        return None

    monkeypatch.setattr(mongomock.collection.Collection, "insert_many", insert_many)


def duplicate(key: str, value: Any, db_name: str = "livraison") -> dict[str, Any]:
    """MongoDB's write error for a duplicate key (4.4+: ``keyPattern`` and ``keyValue``)."""
    index = "_id_" if key == "_id" else f"{key}_1"
    return {
        "code": 11000,
        "keyPattern": {key: 1},
        "keyValue": {key: value},
        "errmsg": f"E11000 duplicate key error collection: {db_name}.Commande index: {index} dup key: "
        f'{{ {key}: "{value}" }}',
    }


VALIDATION = {  # MongoDB 5.0+ (SERVER-20547); 4.4 sends no errInfo
    "code": 121,
    "errInfo": {
        "failingDocumentId": ObjectId(),
        "details": {"operatorName": "$jsonSchema", "schemaRulesNotSatisfied": []},
    },
    "errmsg": "Document failed validation",
}


def restored_at(db, settings, o: dict[str, Any]) -> Any:
    return db[settings.archive_collection].find_one({"_id": o["_id"]}).get("restored_at")


def in_source(db, settings, o: dict[str, Any]) -> dict[str, Any] | None:
    return db[settings.orders_collection].find_one({"_id": o["_id"]})


def run_restore(mongo, settings, *orders: dict[str, Any]):
    return restore(mongo, settings, RestoreSelection(tuple(o["numero_commande"] for o in orders)), run=True)


def test_the_mark_is_written_before_the_insert(mongo, db, settings, monkeypatch):
    """A purge that runs between the insert and the mark must find the order held: the
    archive document carries ``restored_at`` when the insert reaches the source."""
    orders = [order("CMD-1"), order("CMD-2")]
    archive(db, settings, *orders)
    seen: dict[Any, Any] = {}

    def look(collection, documents):
        for document in documents:
            seen[document["_id"]] = restored_at(db, settings, document)

    server_refusing(monkeypatch, settings, {}, before=look)
    report = run_restore(mongo, settings, *orders)
    assert report.restored == 2
    assert all(isinstance(seen[o["_id"]], datetime) for o in orders), seen


def test_a_duplicate_numero_is_refused_and_reported_not_counted_as_present(mongo, db, settings, monkeypatch):
    """A reused numero_commande under a unique index: 11000 on ``numero_commande_1``. The order
    is not in the source: refused (exit 3), its mark taken back; the others restored, marked."""
    first, reused, third = order("CMD-1"), order("CMD-2"), order("CMD-3")
    archive(db, settings, first, reused, third)
    server_refusing(monkeypatch, settings, {"CMD-2": duplicate("numero_commande", "CMD-2")})
    report = run_restore(mongo, settings, first, reused, third)
    assert (report.restored, report.already_there, report.refused) == (2, 0, 1)
    assert not report.complete  # exit 3
    (refusal,) = report.refused_orders
    assert (refusal.numero, refusal.code) == ("CMD-2", 11000)
    assert "index: numero_commande_1 dup key" in refusal.reason
    assert in_source(db, settings, reused) is None
    assert restored_at(db, settings, reused) is None  # taken back
    assert isinstance(restored_at(db, settings, first), datetime)
    assert isinstance(restored_at(db, settings, third), datetime)
    assert report.lines()[-1].startswith(
        "1 refused by the source collection, not restored: CMD-2 (code 11000: E11000 duplicate key error"
    )


def test_a_duplicate_id_is_present_only_when_the_order_read_back_is_the_archived_one(
    mongo, db, settings, monkeypatch
):
    """Another writer put two orders back between the restore's read and its insert: one as
    archived, one with other content (``quantite`` 1.0, a double, where the archive keeps the
    int 1: Python's == says equal, BSON does not). Both answer 11000 on ``_id``."""
    same, other = order("CMD-1"), order("CMD-2")
    archive(db, settings, same, other)

    def another_writer(collection, documents):
        collection.database[settings.orders_collection].insert_one(dict(same))
        collection.database[settings.orders_collection].insert_one({**other, "quantite": 1.0})

    server_refusing(
        monkeypatch,
        settings,
        {"CMD-1": duplicate("_id", same["_id"]), "CMD-2": duplicate("_id", other["_id"])},
        before=another_writer,
    )
    report = run_restore(mongo, settings, same, other)
    assert (report.restored, report.already_there, report.conflicts, report.refused) == (0, 1, 1, 0)
    assert report.conflict_examples == ["CMD-2"]
    assert isinstance(restored_at(db, settings, same), datetime)  # in the source as archived: held
    assert restored_at(db, settings, other) is None  # not ours: not held
    assert bson.encode(in_source(db, settings, other)) != bson.encode(other)  # left alone


def test_a_refused_order_keeps_the_mark_it_had(mongo, db, settings, monkeypatch):
    """A validator (121) refuses an order restored once before: its earlier ``restored_at``
    comes back, not nothing (that restore's hold may still run) and not this run's."""
    earlier = NOW - timedelta(days=3)
    refused, accepted = order("CMD-1"), order("CMD-2")
    archive(db, settings, refused, accepted, restored_at=earlier)
    server_refusing(monkeypatch, settings, {"CMD-1": VALIDATION})
    report = run_restore(mongo, settings, refused, accepted)
    assert (report.restored, report.refused) == (1, 1)
    assert report.refused_orders[0].reason == "Document failed validation"
    assert restored_at(db, settings, refused).replace(tzinfo=UTC) == earlier
    assert restored_at(db, settings, accepted).replace(tzinfo=UTC) > earlier


def test_a_field_name_the_server_refuses_is_reported_with_its_reason(mongo, db, settings, monkeypatch):
    """MongoDB before 5.0 refuses a top-level field name with a ``$`` prefix in an insert
    (``fixDocumentForInsert``: 2 BadValue); an order stored under 5.0+ and restored into a 4.4
    source meets it. Reported with MongoDB's message, the others restored."""
    odd, plain = order("CMD-1", **{"$note": "x"}), order("CMD-2")
    archive(db, settings, odd, plain)
    refusal = {"code": 2, "errmsg": "Document can't have $ prefixed field names: $note"}
    server_refusing(monkeypatch, settings, {"CMD-1": refusal})
    report = run_restore(mongo, settings, odd, plain)
    assert (report.restored, report.refused) == (1, 1)
    assert (
        report.refused_orders[0].line() == "CMD-1 (code 2: Document can't have $ prefixed field names: $note)"
    )
    assert report.as_dict()["refused_orders"][0]["code"] == 2


def _element(kind: int, name: str, value: bytes = b"") -> bytes:
    return bytes([kind]) + name.encode() + b"\0" + value


def _string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<i", len(data)) + data


def test_deprecated_bson_types_come_back_as_pymongo_reads_them_a_documented_limit(mongo, db, settings):
    """An order holding BSON's deprecated types (``undefined`` 0x06, a symbol 0x0E, a DBPointer
    0x0C) reaches the archiver decoded by pymongo: None, a str, a DBRef. The archive's copy
    holds those, and ``restore`` gives back null (0x0A), a string (0x02) and a DBRef document
    (0x03): not the bytes the source held. Named as a limit in guarantees.md and commands.md."""
    order_id = ObjectId()
    elements = (
        _element(0x07, "_id", order_id.binary)
        + _element(0x02, "numero_commande", _string("CMD-1"))
        + _element(0x06, "undefined_field")
        + _element(0x0E, "symbol_field", _string("livrée"))
        + _element(0x0C, "pointer_field", _string("livraison.Client") + order_id.binary)
    )
    raw = struct.pack("<i", len(elements) + 5) + elements + b"\0"
    as_read = bson.decode(raw)  # what the archiver's client hands it, archive copy included
    archive(db, settings, as_read)
    report = run_restore(mongo, settings, as_read)
    assert report.restored == 1
    back = bson.encode(db[settings.orders_collection].find_one({"_id": order_id}))
    kinds = {name: back[back.index(name.encode() + b"\0") - 1] for name in as_read if name != "_id"}
    assert kinds == {
        "numero_commande": 0x02,
        "undefined_field": 0x0A,
        "symbol_field": 0x02,
        "pointer_field": 0x03,
    }
    assert back != raw
    for page in ("guarantees.md", "commands.md"):
        text = (ROOT / "docs" / page).read_text()
        assert all(name in text for name in ("`undefined`", "symbol", "DBPointer")), page


def test_every_refused_order_is_in_the_log_the_report_lists_the_first(
    mongo, db, settings, monkeypatch, caplog
):
    monkeypatch.setattr("order_archiver.operations.restore.REFUSALS_LISTED", 1)
    orders = [order(f"CMD-{n}") for n in range(3)]
    archive(db, settings, *orders)
    server_refusing(monkeypatch, settings, {o["numero_commande"]: VALIDATION for o in orders})
    with caplog.at_level("WARNING"):
        report = run_restore(mongo, settings, *orders)
    assert (report.refused, len(report.refused_orders)) == (3, 1)
    assert report.lines()[-1].endswith("; and 2 more (each in the log)")
    logged = [r.getMessage() for r in caplog.records if "refused order" in r.getMessage()]
    assert len(logged) == 3
    assert all("(code 121: Document failed validation)" in line for line in logged)


def test_a_numero_asked_for_and_not_in_the_archive_is_named_and_the_restore_is_incomplete(
    db, mongo, settings
):
    """A support agent's typo (``cmd-000042``, an order never archived) read as "0 selected",
    exit 0: nothing said which number was not found."""
    kept = order("CMD-000042")
    archive(db, settings, kept)
    report = restore(mongo, settings, RestoreSelection(("CMD-000042", "cmd-000042", "CMD-999999")), run=True)
    assert (report.selected, report.restored) == (1, 1)
    assert report.not_found == [
        "--numero cmd-000042 (CMD-000042 is archived: numbers match exactly)",
        "--numero CMD-999999",
    ]
    assert not report.complete  # exit 3
    assert (
        "not found among the archived orders (exit 3): --numero cmd-000042 (CMD-000042 is archived: "
        "numbers match exactly); --numero CMD-999999" in report.lines()
    )


def test_an_id_or_a_selection_that_finds_nothing_is_named_and_the_restore_is_incomplete(db, mongo, settings):
    """#32 item 3: an unknown --id, or a --client with no archived order (a courier's id
    typed), printed "restored 0" and exited 0."""
    archive(db, settings, order("CMD-000042"))
    unknown = ObjectId()
    by_id = restore(mongo, settings, RestoreSelection(order_id=unknown), run=True)
    assert (by_id.selected, by_id.not_found, by_id.complete) == (0, [f"--id {unknown}"], False)
    by_client = restore(mongo, settings, RestoreSelection(client_id=unknown), run=True)
    assert (by_client.not_found, by_client.complete) == (["the selection selects no archived order"], False)


def test_a_restore_of_more_than_a_hundred_orders_asks_for_yes(db, mongo, settings):
    """#31 item 9: a window or a client typed wrong put thousands of orders back into the
    application's collection at once. Above 100, ``--run`` asks for ``--yes`` (exit 2, nothing
    written); a dry run and a confirmed run go on."""
    from order_archiver.errors import ConfigError
    from order_archiver.operations.restore import CONFIRM_ABOVE

    orders = [order(f"CMD-{n:06d}") for n in range(CONFIRM_ABOVE + 1)]
    archive(db, settings, *orders)
    everything = RestoreSelection(date_from=NOW - timedelta(days=1))
    assert restore(mongo, settings, everything).restored == CONFIRM_ABOVE + 1  # a dry run
    with pytest.raises(ConfigError, match=f"selects more than {CONFIRM_ABOVE} archived orders"):
        restore(mongo, settings, everything, run=True)
    assert db[settings.orders_collection].count_documents({}) == 0
    assert db[settings.archive_collection].count_documents({"restored_at": {"$exists": True}}) == 0
    confirmed = restore(mongo, settings, everything, run=True, confirmed=True)
    assert confirmed.restored == CONFIRM_ABOVE + 1
    small = RestoreSelection(("CMD-000001",))
    assert restore(mongo, settings, small, run=True).already_there == 1  # at most 100: no --yes needed


def test_a_number_another_writer_gives_between_the_check_and_the_insert_is_reported_not_silent(
    mongo, db, settings, monkeypatch
):
    """The check before the insert (held_numbers.py) reads the source's numbers; a writer that
    gives CMD-2 to another order after that read and before the insert is not stopped (no
    unique index: MongoDB inserts both). The read after the insert finds it: the restore says
    the number is shared now (exit 3), names both orders, and counts the order as restored."""
    first, raced = order("CMD-1"), order("CMD-2")
    archive(db, settings, first, raced)
    newcomer = order("CMD-2", status="en_attente")

    def another_writer(collection, documents):
        collection.database[settings.orders_collection].insert_one(dict(newcomer))

    server_refusing(monkeypatch, settings, {}, before=another_writer)
    report = run_restore(mongo, settings, first, raced)
    assert (report.restored, report.numero_held, report.numero_shared) == (2, 0, 1)
    assert not report.complete  # exit 3
    assert in_source(db, settings, raced) is not None  # inserted: never deleted by restore
    assert isinstance(restored_at(db, settings, raced), datetime)  # in the source: held
    assert (
        f"1 restored while another writer gave their numero_commande to another order (two orders "
        f"hold it now; the next batch rejects the other): CMD-2 (order {raced['_id']}; held by order "
        f"{newcomer['_id']})"
    ) in report.lines()


def test_two_selected_orders_sharing_a_number_put_back_one_the_other_left_alone(mongo, db, settings):
    """Two archived orders under one number (the cold tier's files may hold a number given
    twice, in different months; here two archive documents, mongomock holding no unique index):
    one chunk, one read of the source finding neither. The first goes back; the second is left
    alone as held by it (exit 3): the source never gets two orders under the number."""
    first, second = order("CMD-7"), order("CMD-7", adresse_livraison="another order")
    archive(db, settings, first, second)
    report = restore(mongo, settings, RestoreSelection(("CMD-7",)), run=True)
    assert (report.restored, report.numero_held, report.numero_shared) == (1, 1, 0)
    assert not report.complete
    assert db[settings.orders_collection].count_documents({"numero_commande": "CMD-7"}) == 1
    [held] = report.numero_held_orders
    assert (held.id, held.held_by, held.restored) == (str(second["_id"]), str(first["_id"]), False)


def test_two_selected_orders_sharing_a_number_another_source_order_holds_are_both_left_alone(
    mongo, db, settings
):
    """Two archived orders under CMD-8 in one chunk, and a third order of the source holding
    CMD-8 already: neither goes back (held by the source's order), the source keeps one order
    under the number. The read before the insert mapped the number to one copy only (the
    last): the first was put back beside the source's order, then reported as 'raced'."""
    first, second = order("CMD-8"), order("CMD-8", adresse_livraison="another order")
    archive(db, settings, first, second)
    holder = order("CMD-8", status="en_attente")
    db[settings.orders_collection].insert_one(dict(holder))
    report = restore(mongo, settings, RestoreSelection(("CMD-8",)), run=True)
    assert (report.restored, report.numero_held, report.numero_shared) == (0, 2, 0)
    assert db[settings.orders_collection].count_documents({"numero_commande": "CMD-8"}) == 1
    assert {h.held_by for h in report.numero_held_orders} == {str(holder["_id"])}


def test_the_restores_log_line_counts_what_it_left_alone(mongo, db, settings, caplog):
    """A new user's try: a restore that left an order alone (its number held by another source
    order) logged "0 restored, 0 already in the source, 0 conflicts, 0 refused" while its
    output said "1 left alone": a check of the log saw nothing."""
    archive(db, settings, order("CMD-9"))
    db[settings.orders_collection].insert_one(dict(order("CMD-9", status="en_attente")))
    with caplog.at_level("INFO"):
        report = restore(mongo, settings, RestoreSelection(("CMD-9",)), run=True)
    assert report.numero_held == 1
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("restore: ")][-1]
    assert "1 left alone (their number held by another order)" in line, line
