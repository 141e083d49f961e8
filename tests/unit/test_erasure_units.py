"""An erasure that holds, and personal data by allow-list (#31 items 1 to 4), on mongomock and
pure: what one erasure does to a document, the allow-list under ARCHIVE_PII and in print, the
writer's respect of the record (before a write, and after one that raced a `forget`), a
revision's mark, the finisher's erasure by age, the purge's comparison of an erased copy. At
the wire and end to end: tests/e2e/test_erasure_holds_e2e.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from bson import ObjectId

from order_archiver.batch.writing import ChunkWriting
from order_archiver.context import RunContext
from order_archiver.errors import ConfigError
from order_archiver.mongodb.forgotten import ForgottenPersons, RespectedErasures
from order_archiver.mongodb.purge import held_as_it_is
from order_archiver.mongodb.step import ArchivingStep
from order_archiver.mongodb.storage import ArchiveWriter, Held
from order_archiver.orders.enrichment import finish_archive_document, source_hash
from order_archiver.orders.erasing import BY_AGE, BY_REQUEST, Erasure
from order_archiver.orders.finishing import Finisher
from order_archiver.orders.pii import OrderFields, PiiPolicy, mask_pii
from order_archiver.settings import load_settings

NOW = datetime(2026, 12, 1, tzinfo=UTC)
CLIENT_ID, COURIER_ID = ObjectId(), ObjectId()


def enriched(**extra: Any) -> dict[str, Any]:
    """An enriched order (what the pipeline hands the finishing step)."""
    return {
        "_id": ObjectId(),
        "numero_commande": "CMD-1",
        "status": "livrée",
        "date_commande": NOW - timedelta(days=2),
        "date_livraison": NOW - timedelta(days=1),
        "client_id": CLIENT_ID,
        "livreur_id": COURIER_ID,
        "restaurant_id": ObjectId(),
        "items": [{"menu_id": 1, "quantite": 2, "note": "sans oignons, Mme Morvan"}],
        "adresse_livraison": "3 rue des Lilas",
        "instructions_livraison": "Digicode 4821, 06 11 22 33 44",
        "canal": "app",
        **extra,
        "_x_client": [{"nom": "Morvan", "prenom": "Anne", "email": "a@m.fr", "telephone": "0611223344"}],
        "_x_livreur": [{"nom": "Bouvet", "prenom": "Paul"}],
        "_x_restaurant": [{"nom": "Chez Léon", "type_cuisine": "bistrot"}],
        "_x_menus": [{"_id": 1, "nom": "Plat", "prix": 10.0}],
    }


def archived(policy: PiiPolicy | None = None, **extra: Any) -> dict[str, Any]:
    return finish_archive_document(enriched(**extra), archived_by="batch", archived_at=NOW, pii=policy)


CANAL = OrderFields.parse(["canal"])


def test_a_clients_erasure_leaves_nothing_of_them_and_no_digest_of_it():
    document = archived()
    erased = Erasure(client=True, courier=False, by=BY_REQUEST, at=NOW, fields=CANAL)(document)
    assert erased["client"] == {
        "id": CLIENT_ID,
        "nom": None,
        "prenom": None,
        "email": None,
        "telephone": None,
    }
    assert erased["adresse_livraison"] is None
    source = erased["source"]
    assert (source["adresse_livraison"], source["instructions_livraison"]) == (None, None)
    assert source["items"] == [{"menu_id": 1, "quantite": 2, "note": None}]  # an item's undeclared field
    assert (source["canal"], source["client_id"], source["numero_commande"]) == ("app", CLIENT_ID, "CMD-1")
    assert erased["source_hash"] == source_hash(source) != document["source_hash"]
    assert (erased["forgotten_by"], erased["forgotten_at"]) == (BY_REQUEST, NOW)
    assert erased["livreur"] == document["livreur"]  # the courier is not the client
    again = Erasure(client=True, courier=False, by=BY_REQUEST, at=NOW + timedelta(days=1), fields=CANAL)
    assert again(erased) == erased  # idempotent: the first date stays
    assert not again.holds(erased)
    assert again.holds(document)


def test_a_couriers_erasure_and_one_by_age():
    document = archived()
    courier = Erasure(client=False, courier=True, by=BY_REQUEST, at=NOW)(document)
    assert courier["livreur"] == {"id": COURIER_ID, "nom": None, "prenom": None, "forgotten_at": NOW}
    assert courier["client"] == document["client"]
    assert "forgotten_by" not in courier  # the client's data is not erased
    assert courier["source"]["instructions_livraison"] is None  # an undeclared field may be theirs
    assert courier["source_hash"] == source_hash(courier["source"])
    by_age = Erasure(client=True, courier=True, by=BY_AGE, at=NOW)(courier)
    assert by_age["forgotten_by"] == BY_AGE
    assert (by_age["livreur"]["nom"], by_age["client"]["email"]) == (None, None)
    # An erasure by age over one on request: it names itself (the range no longer holds it).
    assert Erasure(client=True, courier=False, by=BY_REQUEST, at=NOW)(by_age)["forgotten_by"] == BY_AGE


@pytest.mark.parametrize(
    "values",
    [
        {},  # the personal values as generated
        {
            "adresse_livraison": "",
            "instructions_livraison": "",
            "canal": True,
            "items": [{"menu_id": 1, "quantite": 2}],
        },
    ],
)
def test_an_erasure_without_its_marks_never_makes_a_document_larger(values):
    """What ``ArchiveWriter.erase`` sends a document within bytes of 16 MB that cannot take the
    marks (MongoDB's 17419): each personal value made null, the fingerprint one of the same
    length: never larger, whoever is erased, and no personal data left; with short or empty
    personal values, the marked erasure is larger than the document (why MongoDB refused it)."""
    document = archived(**values)
    document["client"] = {"id": CLIENT_ID, "nom": "", "prenom": "", "email": "", "telephone": ""}
    document["livreur"] = {"id": COURIER_ID, "nom": "Li", "prenom": ""}
    size = len(bson.encode(document))
    for erasure in (
        Erasure(client=True, courier=False, by=BY_REQUEST, at=NOW),
        Erasure(client=False, courier=True, by=BY_REQUEST, at=NOW),
        Erasure(client=True, courier=True, by=BY_AGE, at=NOW),
    ):
        unmarked = erasure(document, marked=False)
        assert len(bson.encode(unmarked)) <= size
        assert not erasure.holds(unmarked)
        assert "forgotten_at" not in unmarked
        assert unmarked["source_hash"] == source_hash(unmarked["source"])
    if values:  # short or empty values: the marks make the erasure larger (what MongoDB refuses near 16 MB)
        assert len(bson.encode(Erasure(client=True, courier=True, by=BY_AGE, at=NOW)(document))) > size


@pytest.mark.parametrize("mode", ["hash", "drop"])
def test_a_field_the_contract_does_not_name_is_personal_under_archive_pii(mode):
    policy = PiiPolicy(mode, "k" * 16 if mode == "hash" else None, CANAL)  # type: ignore[arg-type]
    source = archived(policy)["source"]
    assert source["canal"] == "app"  # declared
    for value in (source["instructions_livraison"], source["items"][0]["note"], source["adresse_livraison"]):
        assert value is None if mode == "drop" else value.startswith("hmac-sha256:")
    assert (source["items"][0]["quantite"], source["numero_commande"]) == (2, "CMD-1")


def test_a_printed_document_masks_every_undeclared_field_of_its_source_copy():
    shown = mask_pii(archived(), CANAL)
    assert shown["source"]["instructions_livraison"] == "***"
    assert shown["source"]["items"][0]["note"] == "***"
    assert shown["source"]["canal"] == "app"
    assert shown["adresse_livraison"] == "***"
    assert shown["client"]["email"] == "***"
    assert mask_pii(archived())["source"]["canal"] == "***"  # undeclared: personal


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("adresse_livraison", "ARCHIVE_NON_PERSONAL_FIELDS: adresse_livraison is the delivery address"),
        ("canal,client.nom", "ARCHIVE_NON_PERSONAL_FIELDS: 'client.nom' is not an order field"),
        ("items.a.b", "ARCHIVE_NON_PERSONAL_FIELDS: 'items.a.b': only an order's fields and its items'"),
        ("$where", "ARCHIVE_NON_PERSONAL_FIELDS: '$where' is not an order field"),
    ],
)
def test_a_field_that_cannot_be_declared_non_personal_is_a_config_error(value, message):
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={"MONGODB_URI": "mongodb://h", "ARCHIVE_NON_PERSONAL_FIELDS": value})
    assert str(refused.value).startswith(message)
    settings, _ = load_settings(
        environ={"MONGODB_URI": "mongodb://h", "ARCHIVE_NON_PERSONAL_FIELDS": " canal, items.x "}
    )
    assert settings.pii_policy.fields.declared == {"canal", "items.x"}


def test_the_writer_writes_a_forgotten_persons_orders_erased(mongo):
    record = ForgottenPersons(mongo["db"]["archiver_forgotten"])
    record.record("client", CLIENT_ID, NOW)
    writer = ArchiveWriter(mongo["db"]["archive"], erasures=RespectedErasures(record))
    document = archived()
    assert writer.write([document]).archived == 1
    written = mongo["db"]["archive"].find_one({"_id": document["_id"]})
    assert (written["client"]["email"], written["forgotten_by"]) == (None, BY_REQUEST)
    assert written["livreur"]["nom"] == "Bouvet"  # the courier was not forgotten
    assert list(mongo["db"]["archiver_forgotten"].find({}, {"_id": 1})) == [{"_id": f"client:{CLIENT_ID}"}]


def test_a_forget_recorded_while_the_writer_writes_is_applied_after_the_write(mongo):
    """forget records the person, then walks the archive: a write whose look-up came before the
    record and whose write came after the walk's read would leave the data. The writer looks
    again after it writes and erases what it wrote."""
    record = ForgottenPersons(mongo["db"]["archiver_forgotten"])
    writer = ArchiveWriter(mongo["db"]["archive"], erasures=RespectedErasures(record))
    document = archived()

    original_insert = writer.insert

    def insert(documents: Any) -> Any:
        outcome = original_insert(documents)
        record.record("livreur", COURIER_ID, NOW)  # recorded after the look-up, during the write
        return outcome

    writer.insert = insert  # type: ignore[method-assign]
    writer.write([document])
    written = mongo["db"]["archive"].find_one({"_id": document["_id"]})
    assert (written["livreur"]["nom"], written["livreur"]["prenom"]) == (None, None)


def test_a_correction_of_an_order_erased_by_age_is_archived_erased_whatever_the_writers_settings(mongo):
    """Review of d585069, defect 3: a watcher without ARCHIVE_PII_RETENTION in its environment
    revised an order erased by age with its personal data, and took the mark off. An erasure
    is a state of the order: the version the archive holds says it."""
    archive = mongo["db"]["archive"]
    writer = ArchiveWriter(archive)  # no record, no retention setting: what it holds decides
    document = archived()
    writer.write([document])
    erased = Erasure(client=True, courier=True, by=BY_AGE, at=NOW)(document)
    archive.replace_one({"_id": document["_id"]}, erased)
    corrected = archived(remboursement=4.5)
    corrected["_id"] = document["_id"]
    assert writer.write([corrected]).revised == 1
    revised = archive.find_one({"_id": document["_id"]})
    assert revised["source"]["remboursement"] is None  # undeclared: personal, erased
    assert revised["source"]["date_livraison"] == corrected["source"]["date_livraison"]
    assert (revised["client"]["email"], revised["livreur"]["nom"], revised["forgotten_by"]) == (
        None,
        None,
        BY_AGE,
    )
    assert writer.write([corrected]).already_archived == 1  # and it stays as it is


def test_a_correction_racing_a_forget_is_revised_not_lost(mongo):
    """Review of d585069, defect 1: forget's walk recomputed the fingerprint between a
    revision's read and its update; the update matched nothing and the correction was lost
    (watch's token moved on). The writer tries once more, against what the archive holds now."""
    from order_archiver.mongodb.erasure import erase_personal_data
    from order_archiver.mongodb.forgotten import orders_of

    archive = mongo["db"]["archive"]
    record = ForgottenPersons(mongo["db"]["archiver_forgotten"])
    writer = ArchiveWriter(archive, erasures=RespectedErasures(record))
    document = archived()
    writer.write([document])
    corrected = finish_archive_document(
        enriched(date_livraison=NOW - timedelta(hours=1)) | {"_id": document["_id"]},
        archived_by="batch",
        archived_at=NOW,
    )
    original = writer.archived_hashes
    raced = {"done": False}

    def read_then_forget(ids: Any) -> Any:
        held = original(ids)
        if not raced["done"]:  # forget --run lands between the revision's read and its update
            raced["done"] = True
            record.record("client", CLIENT_ID, NOW)
            erasure = Erasure(client=True, courier=False, by=BY_REQUEST, at=NOW)
            erase_personal_data(archive, orders_of("client", CLIENT_ID), erasure, context=RunContext())
        return held

    writer.archived_hashes = read_then_forget  # type: ignore[method-assign]
    writer.write([corrected])
    revised = archive.find_one({"_id": document["_id"]})
    assert revised["date_livraison"] == corrected["date_livraison"]  # not lost
    assert (revised["client"]["email"], revised["forgotten_by"]) == (None, BY_REQUEST)  # and erased


def test_an_earlier_versions_erasures_are_recorded_and_made_again_once(mongo):
    """Review of d585069, defect 2: clients forgotten before the record were not in it (a
    correction wrote their data back), and documents erased before kept the fingerprint of the
    order before erasure (the 10-of-10 guess). batch --run makes them again, once."""
    from order_archiver.mongodb.erasure import UPGRADE_DONE, upgrade_erasures

    archive = mongo["db"]["archive"]
    old_style = archived()
    for name in ("nom", "prenom", "email", "telephone"):
        old_style["client"][name] = None
    old_style |= {"adresse_livraison": None, "forgotten_by": BY_REQUEST, "forgotten_at": NOW}
    old_style["source"] = old_style["source"] | {"adresse_livraison": None}  # source_hash left as it was
    before_hash = old_style["source_hash"]
    archive.insert_one(old_style)
    record = ForgottenPersons(mongo["db"]["archiver_forgotten"])
    assert upgrade_erasures(archive, record, CANAL, RunContext()) == 1
    upgraded = archive.find_one({"_id": old_style["_id"]})
    assert upgraded["source_hash"] == source_hash(upgraded["source"]) != before_hash
    assert upgraded["source"]["instructions_livraison"] is None
    assert record.among([upgraded]).clients == {CLIENT_ID}  # recorded: a correction respects it
    assert record.noted(UPGRADE_DONE)
    archive.update_one({"_id": old_style["_id"]}, {"$set": {"source_hash": before_hash}})
    assert upgrade_erasures(archive, record, CANAL, RunContext()) == 0  # once: later runs read the note only


def test_an_order_past_archive_pii_retention_is_finished_erased():
    finisher = Finisher("batch", PiiPolicy(), erase_after=timedelta(days=30))
    old = finisher.one(enriched(date_livraison=NOW - timedelta(days=40)), NOW)
    assert isinstance(old, dict)
    assert (old["forgotten_by"], old["client"]["email"], old["livreur"]["nom"]) == (BY_AGE, None, None)
    recent = finisher.one(enriched(), NOW)
    assert isinstance(recent, dict)
    assert (recent["client"]["email"], recent.get("forgotten_by")) == ("a@m.fr", None)


def test_the_purge_recognises_an_unchanged_order_whose_archived_copy_was_erased():
    raw = enriched()
    order = {k: v for k, v in raw.items() if not k.startswith("_x_")}
    document = finish_archive_document(raw, archived_by="batch", archived_at=NOW)
    erased = Erasure(client=True, courier=False, by=BY_REQUEST, at=NOW)(document)
    held = Held(erased["source_hash"], forgotten_by=BY_REQUEST)
    assert held_as_it_is(PiiPolicy(), held, order)
    assert not held_as_it_is(PiiPolicy(), Held(held.source_hash), order)
    corrected = {**order, "date_livraison": NOW}
    assert not held_as_it_is(PiiPolicy(), held, corrected)


def test_a_change_of_the_declared_fields_is_said_as_such_not_as_a_correction(mongo, caplog):
    """A new user's try: after a run with other ARCHIVE_NON_PERSONAL_FIELDS, the next said
    "revised 1 (corrected since archived)" of an order nobody had touched. The policy's tag
    names the declared fields; a revision under another tag says so."""
    import logging

    assert PiiPolicy("drop", fields=CANAL).tag.startswith("drop;fields:")
    assert PiiPolicy("drop").tag == "drop"
    archive = mongo["db"]["archive"]
    writer = ArchiveWriter(archive)
    raw = enriched()
    writer.write([finish_archive_document(raw, archived_by="batch", archived_at=NOW, pii=PiiPolicy("drop"))])
    again = finish_archive_document(
        raw, archived_by="batch", archived_at=NOW, pii=PiiPolicy("drop", fields=CANAL)
    )
    with caplog.at_level(logging.INFO):
        assert writer.write([again]).revised == 1
    said = [r.getMessage() for r in caplog.records]
    assert any("archived again under ARCHIVE_PII drop;fields:" in line for line in said), said
    assert not any("corrected at the source" in line for line in said)


class CountedReads:
    """The record's collection, its reads counted (``find``: one read of the record)."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.reads = 0

    def find(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return self.collection.find(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)


def chunk_writing(mongo: Any) -> tuple[ChunkWriting, CountedReads, list[list[dict[str, Any]]]]:
    """A batch's chunk writing (the pass's read skipped archived orders: nothing asked), its
    record's reads counted, and the documents each write (its insert) sent."""
    counted = CountedReads(mongo["db"]["archiver_forgotten"])
    writer = ArchiveWriter(mongo["db"]["archive"], erasures=RespectedErasures(ForgottenPersons(counted)))  # type: ignore[arg-type]
    sent: list[list[dict[str, Any]]] = []
    original_insert = writer.insert

    def insert(documents: Any) -> Any:
        sent.append(documents)
        return original_insert(documents)

    writer.insert = insert  # type: ignore[method-assign]
    step = ArchivingStep(writer, record=lambda rejections: None)
    return ChunkWriting(writer, step, skipped_on_read=lambda: True), counted, sent


def test_the_read_after_a_chunks_write_serves_as_the_read_before_the_next_ones(mongo):
    """#34 item 6: with the next chunk read already, the read of the record after a chunk's
    write reads it for the next chunk's orders too, and the next write does not read it
    before: one read a chunk, not two. A person recorded before that read is written erased
    (the insert sends the erased document: the data never reaches the archive)."""
    writing, counted, sent = chunk_writing(mongo)
    forgotten_client = ObjectId()
    ForgottenPersons(mongo["db"]["archiver_forgotten"]).record("client", forgotten_client, NOW)
    first = [archived(numero_commande="CMD-1")]
    second = [archived(numero_commande="CMD-2", client_id=forgotten_client)]
    writing.write(first, [], second)
    writing.write(second, [])
    assert counted.reads == 3  # before the first write; after it (and before the second); after the second
    assert (sent[1][0]["client"]["email"], sent[1][0]["forgotten_by"]) == (None, BY_REQUEST)
    written = mongo["db"]["archive"].find_one({"_id": second[0]["_id"]})
    assert (written["client"]["email"], written["adresse_livraison"]) == (None, None)
    assert mongo["db"]["archive"].find_one({"_id": first[0]["_id"]})["client"]["email"] == "a@m.fr"


def test_a_person_recorded_between_that_read_and_the_next_write_is_erased_after_it(mongo):
    """The erasure holds when a forget records a person after the read that served the next
    chunk, before that chunk is written (its walk of the archive finds nothing of it yet): the
    read after that write finds them and erases what it wrote. A chunk other than the one the
    read was for (the same orders, another list) is read for again before its write."""
    writing, counted, sent = chunk_writing(mongo)
    record = ForgottenPersons(mongo["db"]["archiver_forgotten"])
    late_client, other_client = ObjectId(), ObjectId()
    first = [archived(numero_commande="CMD-1")]
    second = [archived(numero_commande="CMD-2", client_id=late_client)]
    writing.write(first, [], second)
    record.record("client", late_client, NOW)  # a forget between the read and the next write
    writing.write(second, [])
    written = mongo["db"]["archive"].find_one({"_id": second[0]["_id"]})
    assert (written["client"]["email"], written["forgotten_by"]) == (None, BY_REQUEST)
    assert counted.reads == 3

    third = [archived(numero_commande="CMD-3", client_id=other_client)]
    writing.write([archived(numero_commande="CMD-4")], [], third)
    record.record("client", other_client, NOW)
    reads = counted.reads
    writing.write(list(third), [])  # not the list read for: read again before the write
    assert counted.reads == reads + 2
    assert sent[-1][0]["client"]["email"] is None  # written erased, not erased after


def test_simulates_mark_is_no_personal_data():
    """A new user's try: forget, purge, then restore put a simulated order back with
    `_generated_by_simulate: None` (erased as an undeclared field, masked "***" in samples), and
    simulate then refused the database as holding documents it did not generate."""
    document = archived(_generated_by_simulate=True)
    erased = Erasure(client=True, courier=False, by=BY_REQUEST, at=NOW, fields=CANAL)(document)
    assert erased["source"]["_generated_by_simulate"] is True
    assert mask_pii(document)["source"]["_generated_by_simulate"] is True
