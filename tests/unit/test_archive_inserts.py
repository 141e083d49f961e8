"""The archive's write path inserts first (#34 item 6): each write is one unordered ``insert``,
and what MongoDB refuses in it is told apart by the write error alone, as pymongo hands it
(``BulkWriteError.details``, pymongo/bulk_shared.py): a duplicate ``_id`` (``keyPattern:
{_id: 1}``, MongoDB's ``DuplicateKeyErrorInfo``, 4.4 to 8.0) is an order archived meanwhile,
compared as an upsert that matched; a duplicate ``numero_commande`` rejects the order; a
document over 16 MB is 2 BadValue "object to insert too large" (``fixDocumentForInsert``), not
an upsert's 17420; a duplicate without ``keyPattern`` (an older or odd server) is written by
the upsert, never guessed. The archive here is mongomock behind ``MongoDBArchive``, which
answers an insert as MongoDB does (mongomock's own write errors carry no ``keyPattern``). At
the wire: tests/e2e/test_archive_inserts_e2e.py."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import InsertOne
from pymongo.errors import AutoReconnect, BulkWriteError, DocumentTooLarge

from order_archiver.mongodb.storage import ArchiveWriter
from order_archiver.orders.enrichment import finish_archive_document

NOW = datetime(2026, 12, 1, tzinfo=UTC)
HUGE = "CMD-HUGE"  # its archive document is over 16 MB (the server says so; it is not built here)


def archived(numero: str, **extra: Any) -> dict[str, Any]:
    """An archive document as the finishing step builds it."""
    order = {
        "_id": ObjectId(),
        "numero_commande": numero,
        "status": "livrée",
        "date_commande": NOW - timedelta(days=2),
        "date_livraison": NOW - timedelta(days=1),
        "client_id": ObjectId(),
        "livreur_id": ObjectId(),
        "restaurant_id": ObjectId(),
        "items": [],
        "adresse_livraison": "3 rue des Lilas",
        **extra,
        "_x_client": [],
        "_x_livreur": [],
        "_x_restaurant": [],
        "_x_menus": [],
    }
    return finish_archive_document(order, archived_by="batch", archived_at=NOW)


class MongoDBArchive:
    """A mongomock collection answering ``insert`` (``InsertOne`` bulks) as MongoDB does: each
    document refused alone, the others inserted, one write error per refusal in MongoDB's shape.
    ``named``: False for a server that does not send ``keyPattern``/``keyValue``. Every bulk's
    statement kinds are kept in ``sent``, every ``find`` in ``finds``."""

    def __init__(self, collection: Any, *, named: bool = True) -> None:
        self.collection, self.named = collection, named
        self.sent: list[list[str]] = []
        self.finds = 0
        self.lost_replies = 0  # the next N bulks are applied and their reply lost (a cut)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        self.finds += 1
        return self.collection.find(*args, **kwargs)

    def bulk_write(self, requests: list[Any], ordered: bool) -> Any:
        self.sent.append(["insert" if isinstance(r, InsertOne) else "update" for r in requests])
        if not all(isinstance(r, InsertOne) for r in requests):
            return self._updates(requests, ordered)
        errors, inserted = [], 0
        for index, request in enumerate(requests):
            error = self._refusal(request._doc)
            if error is None:
                self.collection.insert_one(request._doc)
                inserted += 1
            else:
                errors.append({"index": index, **error, "op": request._doc})
        self._reply_lost()
        if errors:
            raise BulkWriteError(
                {
                    "writeErrors": errors,
                    "writeConcernErrors": [],
                    "nInserted": inserted,
                    "nUpserted": 0,
                    "nMatched": 0,
                    "nModified": 0,
                    "nRemoved": 0,
                    "upserted": [],
                }
            )
        return type("Result", (), {"inserted_count": inserted})()

    def _updates(self, requests: list[Any], ordered: bool) -> Any:
        """Upserts and revisions: an upsert of the huge order is MongoDB's 17420."""
        huge = [
            i for i, r in enumerate(requests) if r._doc.get("$setOnInsert", {}).get("numero_commande") == HUGE
        ]
        if not huge:
            return self.collection.bulk_write(requests, ordered=ordered)
        kept = [r for i, r in enumerate(requests) if i not in huge]
        result = self.collection.bulk_write(kept, ordered=ordered) if kept else None
        raise BulkWriteError(
            {
                "writeErrors": [
                    {
                        "index": i,
                        "code": 17420,
                        "errmsg": "Resulting document after update is larger than 16777216",
                    }
                    for i in huge
                ],
                "writeConcernErrors": [],
                "nInserted": 0,
                "nUpserted": result.upserted_count if result else 0,
                "nMatched": 0,
                "nModified": 0,
                "nRemoved": 0,
                "upserted": [],
            }
        )

    def _refusal(self, document: dict[str, Any]) -> dict[str, Any] | None:
        """MongoDB's write error for one document of an insert (write_ops_exec.cpp), or None."""
        if document["numero_commande"] == HUGE:
            return {
                "code": 2,
                "errmsg": "object to insert too large. size in bytes: 16777300, max size: 16777216",
            }
        for key, index in (("_id", "_id_"), ("numero_commande", "numero_commande_1")):
            if self.collection.find_one({key: document[key]}, {"_id": 1}) is not None:
                named = {"keyPattern": {key: 1}, "keyValue": {key: document[key]}} if self.named else {}
                message = f"E11000 duplicate key error collection: db.archive index: {index} dup key: "
                return {"code": 11000, **named, "errmsg": message + f"{{ {key}: {document[key]!r} }}"}
        return None

    def _reply_lost(self) -> None:
        if self.lost_replies:
            self.lost_replies -= 1
            raise AutoReconnect("connection closed")


@pytest.fixture
def archive(mongo):
    collection = mongo["db"]["archive"]
    collection.create_index("numero_commande", unique=True)
    return MongoDBArchive(collection)


def test_an_order_archived_meanwhile_as_it_is_is_counted_already_archived(archive):
    held, new = archived("CMD-1"), archived("CMD-2")
    archive.collection.insert_one(dict(held))  # a watcher archived it first
    outcome = ArchiveWriter(archive).write([held, new])
    assert (outcome.archived, outcome.already_archived, outcome.revised, outcome.rejections) == (1, 1, 0, [])
    assert archive.sent == [["insert", "insert"]]  # one insert; nothing sent again for the one held


def test_an_order_archived_meanwhile_in_another_version_is_revised(archive):
    older = archived("CMD-1", adresse_livraison="3 rue des Lilas")
    archive.collection.insert_one({**older, "archived_at": NOW - timedelta(hours=1)})
    corrected = archived("CMD-1", _id=older["_id"], adresse_livraison="5 rue des Lilas")  # a correction
    outcome = ArchiveWriter(archive).write([corrected])
    assert (outcome.archived, outcome.already_archived, outcome.revised) == (0, 0, 1)
    written = archive.collection.find_one({"_id": older["_id"]})
    assert written["source_hash"] == corrected["source_hash"] != older["source_hash"]
    assert (written["archived_at"], written["revised_at"]) == (NOW - timedelta(hours=1), NOW)
    assert archive.sent == [["insert"], ["update"]]  # the insert, then the revision


def test_another_orders_numero_rejects_the_order_without_a_read_to_decide(archive):
    archive.collection.insert_one(dict(archived("CMD-1")))  # another order holds CMD-1
    reused = archived("CMD-1")
    outcome = ArchiveWriter(archive).write([reused, archived("CMD-2")])
    assert outcome.archived == 1
    assert [(r.order_id, r.reason) for r in outcome.rejections] == [
        (reused["_id"], "numero_commande already archived for another order")
    ]
    # Told by keyPattern alone: no read by _id after the error (a document the cold move or the
    # TTL index deleted meanwhile would read as another order's number).
    assert (archive.sent, archive.finds) == ([["insert", "insert"]], 0)


def test_an_order_over_16_mb_is_rejected_as_too_large(archive):
    huge, fine = archived(HUGE), archived("CMD-2")
    outcome = ArchiveWriter(archive).write([huge, fine])
    assert outcome.archived == 1
    assert [(r.order_id, r.reason) for r in outcome.rejections] == [
        (huge["_id"], "archive write refused: code 2 BadValue (object to insert too large: over 16 MB)")
    ]
    assert archive.collection.find_one({"_id": huge["_id"]}) is None


def test_a_duplicate_the_server_does_not_name_is_written_by_the_upsert(mongo):
    """A server whose write error has no ``keyPattern``: the order goes through the upsert,
    which matches an order archived meanwhile (compared) and inserts nothing twice."""
    collection = mongo["db"]["archive"]
    collection.create_index("numero_commande", unique=True)
    archive = MongoDBArchive(collection, named=False)
    held, new = archived("CMD-1"), archived("CMD-2")
    collection.insert_one(dict(held))
    outcome = ArchiveWriter(archive).write([held, new])
    assert (outcome.archived, outcome.already_archived, outcome.rejections) == (1, 1, [])
    assert archive.sent == [["insert", "insert"], ["update"]]  # the one not named: upserted
    assert collection.count_documents({}) == 2


def test_a_reused_numero_the_server_does_not_name_is_still_rejected(mongo):
    collection = mongo["db"]["archive"]
    collection.create_index("numero_commande", unique=True)
    archive = MongoDBArchive(collection, named=False)
    collection.insert_one(dict(archived("CMD-1")))
    reused = archived("CMD-1")
    outcome = ArchiveWriter(archive).write([reused])
    assert [r.reason for r in outcome.rejections] == ["numero_commande already archived for another order"]
    assert archive.sent == [["insert"], ["update"]]


def test_an_insert_sent_again_after_a_lost_reply_counts_what_it_wrote_as_archived(archive, monkeypatch):
    """The first attempt was applied and its reply lost: the retry meets the orders on their
    ``_id``, written by this very write (``_written_by``): archived, not already archived."""
    monkeypatch.setattr("order_archiver.retry.Backoff.next_delay", lambda self: 0.0)
    archive.lost_replies = 1
    documents = [archived("CMD-1"), archived("CMD-2")]
    outcome = ArchiveWriter(archive).write(documents)
    assert (outcome.archived, outcome.already_archived, outcome.rejections) == (2, 0, [])
    assert archive.sent == [["insert", "insert"], ["insert", "insert"]]


def test_a_number_freed_by_a_correction_in_the_same_write_goes_to_the_new_order(archive):
    """Order A archived as CMD-1, corrected at the source to CMD-9; new order B numbered CMD-1;
    both in one chunk (or one watcher micro-batch). The insert comes first: B's met A's CMD-1
    (11000 on numero_commande) and B was rejected, although A's revision in the same write
    frees it. B is archived, A revised, nothing rejected, and a write of the same chunk again
    changes nothing."""
    first = archived("CMD-1")
    archive.collection.insert_one({**first, "archived_at": NOW - timedelta(hours=1)})
    corrected = archived("CMD-9", _id=first["_id"])  # its numero fixed after delivery
    new = archived("CMD-1")
    for chunk in ([new, corrected], [corrected, new]):  # whatever their order in the chunk
        if archive.collection.find_one({"_id": new["_id"]}) is not None:
            archive.collection.delete_one({"_id": new["_id"]})
            archive.collection.update_one({"_id": first["_id"]}, {"$set": dict(first)})
        outcome = ArchiveWriter(archive).write(chunk)
        assert (outcome.archived, outcome.revised, outcome.rejections) == (1, 1, [])
        assert archive.collection.find_one({"numero_commande": "CMD-1"})["_id"] == new["_id"]
        assert archive.collection.find_one({"numero_commande": "CMD-9"})["_id"] == first["_id"]
    again = ArchiveWriter(archive).write([new, corrected])
    assert (again.archived, again.already_archived, again.revised, again.rejections) == (0, 2, 0, [])
    assert archive.collection.count_documents({}) == 2


def test_a_number_still_held_after_the_writes_revisions_stays_a_rejection(archive):
    """A revision in the write frees another number (CMD-2 to CMD-8): the order refused for
    CMD-1, which a live archived order holds, is written once more, refused again, rejected;
    two new orders sharing a number: one archived, the other rejected."""
    holder, moving = archived("CMD-1"), archived("CMD-2")
    archive.collection.insert_many([dict(holder), {**moving, "archived_at": NOW - timedelta(hours=1)}])
    clash, twin_a, twin_b = archived("CMD-1"), archived("CMD-5"), archived("CMD-5")
    moved = archived("CMD-8", _id=moving["_id"])
    outcome = ArchiveWriter(archive).write([clash, twin_a, twin_b, moved])
    assert (outcome.archived, outcome.revised) == (1, 1)
    assert sorted(r.order_id for r in outcome.rejections) == sorted([clash["_id"], twin_b["_id"]])
    assert archive.collection.find_one({"numero_commande": "CMD-1"})["_id"] == holder["_id"]
    assert archive.collection.find_one({"numero_commande": "CMD-5"})["_id"] == twin_a["_id"]
    assert archive.sent == [["insert"] * 4, ["update"], ["insert", "insert"]]  # once more, the two refused


def test_a_chain_of_corrections_in_one_write_frees_each_number_in_turn(archive):
    """A archived as N1 corrected to N2, B archived as N2 corrected to N3, new C numbered N1, in
    one write: C waits for A's revision, which waits for B's; all three written."""
    a, b = archived("N1"), archived("N2")
    archive.collection.insert_many(
        [{**a, "archived_at": NOW - timedelta(hours=1)}, {**b, "archived_at": NOW - timedelta(hours=1)}]
    )
    c = archived("N1")
    outcome = ArchiveWriter(archive).write([c, archived("N2", _id=a["_id"]), archived("N3", _id=b["_id"])])
    assert (outcome.archived, outcome.revised, outcome.rejections) == (1, 2, [])
    numbers = {d["numero_commande"]: d["_id"] for d in archive.collection.find()}
    assert numbers == {"N1": c["_id"], "N2": a["_id"], "N3": b["_id"]}


def test_the_dry_runs_prediction_is_what_the_write_rejects_whatever_the_order_of_the_chunk(mongo):
    """``numbers_taken`` (what a dry run counts as rejected for a taken number) names exactly the
    orders the write then rejects, for every order of each chunk: A archived as N and corrected
    to M beside a new order numbered N (freed: archived) and a new one numbered M (inserted
    before A's revision, which it refuses: A rejected, the one numbered N too); a chain of
    corrections; a live clash; two new orders sharing a number."""
    import itertools

    from order_archiver.context import RunContext
    from order_archiver.mongodb.storage import numbers_taken

    def case(held: list[dict[str, Any]], chunk: list[dict[str, Any]]) -> None:
        for order in itertools.permutations(chunk):
            collection = mongo["db"][f"dry_{ObjectId()}"]
            collection.create_index("numero_commande", unique=True)
            collection.insert_many([{**d, "archived_at": NOW - timedelta(hours=1)} for d in held])
            # As the dry run asks: what the archive does not hold as it is, then the prediction.
            unwritten = ArchiveWriter(MongoDBArchive(collection)).not_archived_as_they_are(list(order))
            predicted = {d["_id"] for d in numbers_taken(collection, RunContext(), unwritten)}
            outcome = ArchiveWriter(MongoDBArchive(collection)).write(list(order))
            assert predicted == {r.order_id for r in outcome.rejections}, [
                d["numero_commande"] for d in order
            ]

    a, b = archived("N"), archived("N2")
    case([a], [archived("M", _id=a["_id"]), archived("N"), archived("M")])
    case([a], [archived("M", _id=a["_id"]), archived("N")])
    case([a, b], [archived("N2", _id=a["_id"]), archived("N3", _id=b["_id"]), archived("N")])
    case([a], [archived("N"), archived("X"), archived("X")])


OVER_48_MB = "CMD-OVER-48MB"  # its archive document is larger than a whole message (48 MB)


class SentInBatches(MongoDBArchive):
    """pymongo sends an unordered bulk in batches of at most ``maxMessageSizeBytes`` (48 MB): a
    document too large for a message of its own ends the batch before it, which is sent and
    applied; then, first of the next batch, it raises ``DocumentTooLarge`` (pymongo's
    message.py, ``_batched_op_msg_impl``: "Does first document exceed max_message_size?";
    ``_raise_document_too_large``), and the bulk stops there, the applied batch's result (its
    ``nInserted``, its write errors) lost with it."""

    def bulk_write(self, requests: list[Any], ordered: bool) -> Any:
        huge = next((i for i, r in enumerate(requests) if r._doc.get("numero_commande") == OVER_48_MB), None)
        if huge is None:
            return super().bulk_write(requests, ordered)
        if huge:
            # The batch before it, applied; pymongo keeps its errors for the end, which never comes.
            with contextlib.suppress(BulkWriteError):
                super().bulk_write(requests[:huge], ordered)
        raise DocumentTooLarge(
            "BSON document too large (50331700 bytes) - the connected server supports BSON "
            "document sizes up to 16777216 bytes."
        )


def test_orders_applied_before_a_write_refused_whole_for_its_size_count_as_archived(mongo):
    """A chunk whose fourth document is larger than a message: pymongo applied the three before
    it, then raised DocumentTooLarge; the writer splits the chunk in halves, whose inserts meet
    those three on their _id. Written by this very write (its archived_at, its version), they
    are archived by this run, not "already archived"; the huge one is rejected, the rest archived."""
    collection = mongo["db"]["archive"]
    collection.create_index("numero_commande", unique=True)
    archive = SentInBatches(collection)
    before = archived("CMD-0")
    collection.insert_one({**before, "archived_at": NOW - timedelta(days=1)})  # an earlier run's
    chunk = [archived(f"CMD-{n}") for n in (1, 2, 3)] + [archived(OVER_48_MB), archived("CMD-4"), before]
    outcome = ArchiveWriter(archive).write(chunk)
    assert (outcome.archived, outcome.already_archived, outcome.revised) == (4, 1, 0)
    assert [(r.order_id, r.reason) for r in outcome.rejections] == [
        (chunk[3]["_id"], "archive document too large: DocumentTooLarge")
    ]
    assert collection.count_documents({}) == 5
