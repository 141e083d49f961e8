"""A restored order archived again under ``ARCHIVE_PII=hash`` (on mongomock): ``restore`` puts
back the source copy as the archive keeps it, its personal fields as their keyed hashes
(``hmac-sha256:<key id>:<hex>``, commands.md "Personal data in the archive"). The next write
of that order (watch on the insert event, an incremental batch reading the change stream, a
full pass with the archive in another database) must find the archive holding it as it is:
hashing a pseudonym again replaced every personal field of the archived order by a hash of
its hash (equal values no longer comparable with the other orders'), stamped ``revised_at``
though nothing had changed, and the purge then deleted the restored order as "that version".
The same at the wire, through the change stream: tests/e2e/test_restore_e2e.py."""

from __future__ import annotations

from datetime import UTC, datetime

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.context import RunContext
from order_archiver.operations.restore import RestoreSelection, restore
from order_archiver.orders.pii import PiiPolicy, pseudonymise
from order_archiver.settings import Duration, Settings
from tests.helpers import seed_database

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
KEY, OTHER_KEY = "k" * 20, "o" * 20


def hashed_settings(settings: Settings, key: str = KEY) -> Settings:
    # The archive in its own database: a full pass reads every order again and revises what
    # changed (what watch and an incremental pass do for the restore's inserts, which mongomock,
    # without change streams, cannot show).
    return settings.with_overrides(archive_pii="hash", archive_pii_key=key, archive_database="archives")


def run(mongo, settings: Settings, **options):
    return BatchArchiver(
        mongo,
        settings,
        BatchOptions(run=True, batch_size=25, **options),
        context=RunContext(clock=lambda: NOW),
        server_clock=lambda: NOW,
    ).run()


def test_a_restored_order_archived_again_keeps_its_archived_pseudonyms(mongo, settings):
    settings = hashed_settings(settings)
    seed_database(mongo[settings.mongodb_database], settings, 120, p_anomalies=0.35)
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    archive = mongo[settings.archive_db_name][settings.archive_collection]
    first = run(mongo, settings, purge_source=True)
    kept = {d["_id"]: d for d in archive.find()}
    purged = list(kept)
    assert first.purged == len(purged) > 20

    every = RestoreSelection(date_from=datetime(1970, 1, 1, tzinfo=UTC))
    restored = restore(mongo, settings, every, run=True, confirmed=True)
    assert restored.restored == first.purged
    assert restored.without_personal_data == restored.restored  # hashed, and said so
    assert any(
        str(o.get("adresse_livraison", "")).startswith("hmac-sha256:") for o in orders.find()
    )  # what the source holds now: the archive's pseudonyms

    again = run(mongo, settings, full=True)
    assert again.revised == 0  # nothing changed at the source
    for document in archive.find():
        assert document.pop("restored_at") is not None  # restore's own mark, and nothing else:
        assert document == kept.pop(document["_id"])  # not a hash of the hash, no revised_at
    assert kept == {}

    released = run(mongo, settings.with_overrides(restore_hold=Duration(0)), purge_source=True)
    assert released.purged == first.purged  # the archive holds each one as it is in the source
    assert orders.count_documents({"_id": {"$in": purged}}) == 0


def test_a_pseudonym_is_not_hashed_again_whatever_the_key():
    order = {"_id": 1, "numero_commande": "CMD-1", "adresse_livraison": "3 rue des Lilas", "note": 12}
    policy = PiiPolicy("hash", KEY)
    once = policy.apply_order(order)
    assert once["adresse_livraison"] == pseudonymise("3 rue des Lilas", KEY)
    assert once["note"] == pseudonymise(12, KEY)  # a number is hashed as its text
    assert policy.apply_order(once) == once
    # A copy restored from a document written under the key before a rotation keeps its
    # hashes (their key id says which key made them), rather than a hash of them under the new key.
    assert PiiPolicy("hash", OTHER_KEY).apply_order(once) == once
    # What only looks like one (another digest length, upper case) is a value like any other.
    for text in ("hmac-sha256:1234abcd:beef", once["adresse_livraison"].upper()):
        assert policy.apply_order({"adresse_livraison": text})["adresse_livraison"] == pseudonymise(text, KEY)
