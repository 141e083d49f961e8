"""The pure and mongomock-level pieces behind a new user's first hour: redaction of malformed
URIs, collection roles, output files, connection diagnoses, status forms, the rejects list,
counts that add up, readable logs."""

from __future__ import annotations

import logging
import unicodedata
from datetime import UTC, datetime

import pytest
from bson import ObjectId

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.errors import ConfigError
from order_archiver.logs import STATS, TextFormatter
from order_archiver.mongodb.connection import _network_reason
from order_archiver.mongodb.rejects import RejectStore
from order_archiver.orders.enrichment import is_status, status_forms, status_match
from order_archiver.orders.pii import mask_pii
from order_archiver.orders.rejection import Rejection
from order_archiver.settings import (
    Settings,
    check_collection_roles,
    check_output_file,
    redact_uri,
    uri_password,
)
from tests.helpers import delivered_rejects, expected_archive_ids, seed_database

NFD = unicodedata.normalize("NFD", "livrée")


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb:/bob:pw-42@h/",
        "MONGODB://bob:pw-42@h/",
        "bob:pw-42@h",
        "mongodb//bob:pw-42@h",
        "mongodb://bob:p@w-42@h/",
        "see mongodb+srv://bob:pw-42@cluster.example.net/?x=1 here",
    ],
)
def test_redaction_masks_the_password_of_malformed_uris(uri):
    assert "pw-42" not in redact_uri(uri)
    assert "w-42" not in redact_uri(uri)
    assert uri_password(uri.removeprefix("see ").split(" ")[0]) in ("pw-42", "p@w-42")


def test_no_collection_plays_two_roles():
    check_collection_roles(Settings())  # the defaults are fine
    check_collection_roles(Settings(archive_database="other", archive_collection="Commande"))
    for changes, names in [
        ({"archive_collection": "Commande"}, "ARCHIVE_COLLECTION and ORDERS_COLLECTION"),
        ({"archive_collection": "Menu"}, "ARCHIVE_COLLECTION and MENU_COLLECTION"),
        ({"rejects_collection": "archiver_checkpoints"}, "REJECTS_COLLECTION and CHECKPOINT_COLLECTION"),
        ({"clients_collection": "Livreur"}, "COURIERS_COLLECTION and CLIENTS_COLLECTION"),
        (
            {"archive_database": "LIVRAISON", "checkpoint_collection": "Restaurants"},
            "CHECKPOINT_COLLECTION and RESTAURANTS_COLLECTION",
        ),
    ]:
        with pytest.raises(ConfigError, match=names):
            check_collection_roles(Settings(**changes))


def test_output_files(tmp_path):
    assert check_output_file(str(tmp_path / "x.prom"), "--metrics-file") == tmp_path / "x.prom"
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_file(str(tmp_path), "--metrics-file")
    with pytest.raises(ConfigError, match="does not exist"):
        check_output_file(str(tmp_path / "no" / "x"), "--metrics-file")
    with pytest.raises(ConfigError, match="not a usable file path"):
        check_output_file("bad\x00name", "--export-samples")


@pytest.mark.parametrize(
    ("error", "expected", "lasting"),
    [
        ("h:1: [Errno 111] Connection refused (configured timeouts: x)", "connection refused", False),
        ("h:1: [Errno -2] Name or service not known (configured timeouts: x)", "host name not found", True),
        ("h:1: [Errno -3] Temporary failure in name resolution", "host name not found", True),
        (
            "SSL handshake failed: h:1: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
            "TLS",
            True,
        ),
        ("SSL handshake failed: h:1: _ssl.c:989: The handshake operation timed out", "TLS", False),
        ("h:1: timed out (configured timeouts: x)", "no answer within MONGODB_TIMEOUT_MS", False),
    ],
)
def test_network_reasons_in_words(error, expected, lasting):
    reason, permanent = _network_reason(Exception(error))
    assert expected in reason
    assert "configured timeouts" not in reason
    assert permanent is lasting


def test_the_delivered_status_in_both_unicode_forms():
    assert status_forms("livrée") == ["livr\u00e9e", NFD]
    assert status_match("delivered") == "delivered"
    assert is_status(NFD, "livrée")
    assert is_status("livrée", NFD)
    assert not is_status("livree", "livrée")
    assert not is_status(None, "livrée")


def test_mask_pii_keeps_the_fields_hides_the_values():
    document = {
        "client": {"nom": "Dupont", "email": "a@b.fr", "telephone": "0601", "prenom": "Ana", "id": 7},
        "livreur": {"nom": "Petit", "prenom": "Hugo", "id": 8},
        "adresse_livraison": "1 rue de la Paix",
        "source": {"adresse_livraison": "1 rue de la Paix", "client_id": 7},
        "numero_commande": "CMD-1",
    }
    shown = mask_pii(document)
    assert shown["client"] == {"nom": "***", "email": "***", "telephone": "***", "prenom": "***", "id": 7}
    assert shown["livreur"] == {"nom": "***", "prenom": "***", "id": 8}
    assert shown["adresse_livraison"] == "***"
    assert shown["source"] == {"adresse_livraison": "***", "client_id": 7}
    assert shown["numero_commande"] == "CMD-1"
    assert document["client"]["email"] == "a@b.fr"  # a copy
    assert mask_pii({"client": None}) == {"client": None}


def test_rejects_are_new_once_then_known_and_pruned(mongo):
    database = mongo["livraison"]
    store = RejectStore(database["archiver_rejects"])
    kept, fixed, deleted = ObjectId(), ObjectId(), ObjectId()
    database["Commande"].insert_many(
        [
            {"_id": kept, "status": NFD},
            {"_id": fixed, "status": "livrée"},
            {"_id": deleted, "status": "annulée"},
        ]
    )
    rejections = [Rejection(kept, "numero_commande missing"), Rejection(fixed, "x"), Rejection(deleted, "y")]
    assert store.record(rejections, "batch") == 3
    assert store.record(rejections, "batch") == 0  # met again in the same run: told once
    later = RejectStore(database["archiver_rejects"])
    assert later.record(rejections[:1], "watch") == 0  # another run: known
    entry = database["archiver_rejects"].find_one({"_id": kept})
    assert entry["times_seen"] == 3
    assert entry["source"] == "watch"
    assert entry["first_seen"] <= entry["last_seen"]
    database["Commande_archive"].insert_one({"_id": fixed})
    assert [e["_id"] for e in later.current(database["Commande_archive"])].count(fixed) == 0
    assert later.prune(database["Commande"], database["Commande_archive"], status_match("livrée")) == 2
    assert [e["_id"] for e in database["archiver_rejects"].find()] == [kept]


@pytest.mark.parametrize("archive_database", [None, "archives"])
def test_counts_add_up_in_either_database(mongo, archive_database):
    settings = Settings(simulation=True, log_dir="", archive_database=archive_database)
    dataset = seed_database(mongo["livraison"], settings, 400, seed=5, p_anomalies=0.1)
    delivered = sum(1 for o in dataset.orders if o["status"] == "livrée")
    first = BatchArchiver(mongo, settings, BatchOptions(run=True)).run()
    assert first.delivered == delivered
    assert first.completed
    assert first.archived == len(expected_archive_ids(dataset))
    assert first.rejected == first.rejected_new == delivered_rejects(dataset)
    assert first.archived + first.already_archived + first.rejected == delivered
    again = BatchArchiver(mongo, settings, BatchOptions(run=True, full=True)).run()
    assert again.archived == 0
    assert again.rejected_new == 0
    assert again.already_archived == first.archived
    assert again.archived + again.already_archived + again.rejected == delivered
    # An incremental run's counts add up over what it selected: here the rejects list alone.
    incremental = BatchArchiver(mongo, settings, BatchOptions(run=True)).run()
    assert incremental.mode == "incremental"
    assert incremental.delivered == incremental.rejected == first.rejected
    assert incremental.archived == incremental.already_archived == 0


def test_text_logs_do_not_repeat_stats_and_show_iso_times():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "watch: idle", None, None)
    record.__dict__[STATS] = {"events": 3}
    record.__dict__["order_id"] = "abc"
    record.created = datetime(2026, 11, 26, 14, 0, 1, 500000, tzinfo=UTC).timestamp()
    line = TextFormatter("%(asctime)s %(message)s").format(record)
    assert line == "2026-11-26T14:00:01.500+00:00 watch: idle order_id=abc"


def test_counts_read_as_words():
    """``(1 orders/s)`` and ``seen 1 times`` were what a person read."""
    from order_archiver.batch.job import BatchReport
    from order_archiver.logs import plural

    assert [plural(n, "order") for n in (0, 1, 1.2, 2)] == ["0 orders", "1 order", "1 order", "2 orders"]
    report = BatchReport(
        dry_run=False, completed=True, scanned=1, archived=1, seconds=1.0, delivered=3, outside_window=2
    )
    line = report.summary_line()
    assert "(1 order/s)" in line
    assert (
        "of 3 delivered in the window (2 outside the window once their string date_commande was read)" in line
    )


def test_a_dry_run_points_to_the_rejects_list_as_a_run_fills_it():
    """A new user's try: a dry run said "would reject 2 (2 new; list: main.py rejects)", and
    `rejects` then listed none (a dry run writes nothing). It says the list comes with a --run."""
    from order_archiver.batch.job import BatchReport

    dry = BatchReport(dry_run=True, completed=True, scanned=5, rejected=2, rejected_new=2, seconds=1.0)
    assert "would reject 2 (2 new; listed by main.py rejects after a --run)" in dry.summary_line()
    run = BatchReport(dry_run=False, completed=True, scanned=5, rejected=2, rejected_new=2, seconds=1.0)
    assert "rejected 2 (2 new; list: main.py rejects)" in run.summary_line()
    # A new user's try: every dry run said "would reject 2 (0 new; listed by main.py rejects after
    # a --run)" of two orders a run had listed long before: those are on the list now.
    listed = BatchReport(dry_run=True, completed=True, scanned=5, rejected=2, rejected_new=0, seconds=1.0)
    assert "would reject 2 (0 new; list: main.py rejects)" in listed.summary_line()


def test_files_that_hold_orders_are_this_users_alone_and_never_follow_a_link(tmp_path):
    """The log folder was 0755 and its files 0644, --export-samples 0644 and written through a
    symbolic link (it overwrote a 0600 file)."""
    import logging
    import os
    import stat

    from order_archiver.logs import setup_logging
    from order_archiver.settings import Settings, write_private

    setup_logging(Settings(simulation=True, log_dir=str(tmp_path / "logs" / "deep")))
    logging.getLogger("order_archiver").warning("a line")
    folder = tmp_path / "logs" / "deep"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "order-archiver.log").stat().st_mode) == 0o600
    write_private(tmp_path / "samples.json", "{}")
    assert stat.S_IMODE((tmp_path / "samples.json").stat().st_mode) == 0o600
    secret = tmp_path / "secret"
    secret.write_text("kept")
    os.symlink(secret, tmp_path / "link.json")
    with pytest.raises(OSError):  # noqa: PT011 - ELOOP, the platform's wording
        write_private(tmp_path / "link.json", "overwritten?")
    assert secret.read_text() == "kept"
    setup_logging(Settings(simulation=True, log_dir=""))
