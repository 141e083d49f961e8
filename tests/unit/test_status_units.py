"""`status` on mongomock: what it reports of the watchers' checkpoints and leases."""

from datetime import UTC, datetime

from order_archiver.mongodb.storage import Collections
from order_archiver.operations.status import collect_status

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_each_watcher_shows_its_own_lease_leader(mongo, settings, tmp_path):
    settings = settings.with_overrides(resume_token_file=str(tmp_path / "none.json"))
    checkpoints = Collections.of(mongo, settings).checkpoints
    for name in ("ha", "solo"):
        checkpoints.insert_one({"_id": f"watch:{name}", "kind": "watch", "saved_at": NOW, "namespace": "x.y"})
    checkpoints.insert_one({"_id": "lease:ha", "owner": "host:42:ab", "term": 3, "expires_at": NOW})
    checkpoints.insert_one({"_id": "lease:other", "owner": "host:7:cd", "term": 9, "expires_at": NOW})
    report = collect_status(mongo, settings, now=NOW)
    leaders = {w["name"]: w.get("leader") for w in report.watchers}
    assert leaders == {"ha": {"owner": "host:42:ab", "term": 3, "expires_at": NOW}, "solo": None}
    assert any(line.endswith("leader host:42:ab (term 3)") for line in report.lines())


def test_a_watcher_in_its_catch_up_is_said_to_be_catching_up(mongo, settings, tmp_path):
    """A watcher saves where its stream starts before its catch-up, marked ``catching_up`` (a
    successor resumes from it and catches up again), and again while it lasts (its heartbeat):
    ``status`` said "token saved 1m ago, last event none yet", as for a quiet stream, though
    hours of catch-up may remain."""
    settings = settings.with_overrides(resume_token_file=str(tmp_path / "none.json"))
    checkpoints = Collections.of(mongo, settings).checkpoints
    for name, catching_up in (("busy", True), ("live", False)):
        checkpoints.insert_one(
            {"_id": f"watch:{name}", "kind": "watch", "saved_at": NOW, "catching_up": catching_up}
        )
    report = collect_status(mongo, settings, now=NOW)
    assert {w["name"]: w.get("catching_up") for w in report.watchers} == {"busy": True, "live": False}
    lines = [line for line in report.lines() if line.startswith("watcher ")]
    assert [line for line in lines if "catching up" in line] == [
        next(line for line in lines if line.startswith("watcher busy "))
    ]


def test_a_watcher_in_its_catch_up_says_how_far_it_got(mongo, settings, tmp_path):
    """A catch-up saves how far it got with its starting point (``catch_up``: the last _id it
    archived through; a restart goes on from there): ``status`` says it, in its line and in
    ``--json`` (``catch_up_through``); nothing for a watcher past its catch-up, nor for one
    whose catch-up has written nothing yet."""
    settings = settings.with_overrides(resume_token_file=str(tmp_path / "none.json"))
    checkpoints = Collections.of(mongo, settings).checkpoints
    mark = {"version": 1, "token": "82AB", "identity": "catch-up:x", "through_id": 1234}
    for name, catching_up, saved_mark in (("busy", True, mark), ("early", True, None), ("live", False, mark)):
        record = {"_id": f"watch:{name}", "kind": "watch", "saved_at": NOW, "catching_up": catching_up}
        checkpoints.insert_one({**record, **({"catch_up": saved_mark} if saved_mark else {})})
    report = collect_status(mongo, settings, now=NOW)
    assert {w["name"]: w.get("catch_up_through") for w in report.watchers} == {
        "busy": "1234",
        "early": None,
        "live": None,
    }
    busy = next(line for line in report.lines() if line.startswith("watcher busy "))
    assert "catching up (archiving the orders delivered before it started, through _id 1234 so far)" in busy
    assert not [
        line for line in report.lines() if "through _id" in line and not line.startswith("watcher busy ")
    ]


def test_a_catch_up_mark_with_a_long_id_is_shown_cut(mongo, settings, tmp_path):
    """A string _id of a kilobyte (the most a mark keeps: ``rejection.ID_KEPT_BYTES``) is shown
    cut, with its length, not as a line of its size (a review: 65,506 characters at test scale)."""
    settings = settings.with_overrides(resume_token_file=str(tmp_path / "none.json"))
    long_id = "I" * 1_000
    mark = {"version": 1, "token": "82AB", "identity": "catch-up:x", "through_id": long_id}
    record = {"_id": "watch:busy", "kind": "watch", "saved_at": NOW, "catching_up": True, "catch_up": mark}
    Collections.of(mongo, settings).checkpoints.insert_one(record)
    report = collect_status(mongo, settings, now=NOW)
    (shown,) = [w.get("catch_up_through") for w in report.watchers]
    assert shown is not None
    assert shown.startswith("I" * 60)
    assert "(1,000 characters)" in shown
    assert max(len(line) for line in report.lines()) < 500


def test_an_order_placed_days_ago_and_delivered_late_is_backlog(mongo, settings):
    """Its order date is out of the lookback; its delivery stamp (synced late) is in it: two
    hours unarchived is not healthy."""
    from datetime import timedelta

    from bson import ObjectId

    orders = Collections.of(mongo, settings).orders
    orders.insert_one(
        {
            "_id": ObjectId(),
            "numero_commande": "CMD-000001",
            "status": "livrée",
            "date_commande": NOW - timedelta(days=3),
            "date_livraison": NOW - timedelta(hours=2),
        }
    )
    report = collect_status(mongo, settings, now=NOW)
    assert report.backlog == 1
    assert report.backlog_oldest_age_s == 7200
    assert any(
        p.startswith("1 delivered order not archived, the oldest delivered 2h ago (limit 15m)")
        for p in report.problems
    )


def test_status_shows_what_the_next_purge_would_move(mongo):
    """PURGE_AFTER (#25): status counts the delivered orders old enough to leave the source."""
    from datetime import UTC, datetime, timedelta

    from order_archiver.operations.status import collect_status
    from order_archiver.settings import Duration, Settings

    settings = Settings(simulation=True, log_dir="", purge_after=Duration(days=3))
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    orders.insert_many(
        [
            {"_id": 1, "status": "livrée", "date_livraison": now - timedelta(days=5)},
            {"_id": 2, "status": "livrée", "date_livraison": now - timedelta(days=4)},
            {"_id": 3, "status": "livrée", "date_livraison": now - timedelta(days=1)},
            {"_id": 4, "status": "en_livraison"},
        ]
    )
    # The archive's restored_at index, as batch --run builds it (without it, they are not read).
    mongo[settings.archive_db_name][settings.archive_collection].create_index("restored_at", sparse=True)
    report = collect_status(mongo, settings, now=now)
    assert report.purge_movable == 2
    assert (
        "next --purge-source: up to 2 delivered orders old enough to leave the source (PURGE_AFTER 3d)"
        in ("\n".join(report.lines()))
    )
    # A new user's try: the count included restored orders, which RESTORE_HOLD keeps in the source.
    assert "once archived (not those restored within RESTORE_HOLD 30d)" in "\n".join(report.lines())
    assert report.as_dict()["purge_after"] == "3d"


def test_an_empty_database_says_none_where_it_counts_orders(mongo, settings):
    """A new user's try: "orders by status (date_commande in the last 24h): " ended with nothing."""
    lines = collect_status(mongo, settings).lines()
    assert lines[0].endswith("in the last 24h): none"), lines[0]


def test_a_rejected_order_without_a_number_is_shown_without_a_dash():
    """A new user's try: ``6b01… -: numero_commande missing`` (the dash stood for the number)."""
    from datetime import UTC, datetime

    from order_archiver.operations.status import StatusReport

    report = StatusReport(checked_at=datetime.now(UTC), lookback_hours=24.0)
    report.rejected = 2
    report.rejected_examples = [
        {"id": "6b01aa", "numero_commande": None, "reason": "numero_commande missing"},
        {"id": "6b01bb", "numero_commande": "CMD-7", "reason": "client_id missing"},
    ]
    lines = report.lines()
    assert "  6b01aa: numero_commande missing" in lines
    assert "  6b01bb CMD-7: client_id missing" in lines


def test_a_watcher_that_stopped_cleanly_is_not_shown_leading(mongo, settings, tmp_path):
    """A new user's first day (item 12): `status` showed a stopped watcher as "leader ...
    (term 1), stopped cleanly": a clean stop releases the lease (``Watcher.run``: the stop
    marked under its term, then ``Lease.release``), and the watcher leads nothing. A standby
    that takes the lease over leads, and is said so."""
    from order_archiver.watch.watcher import Watcher, WatchOptions

    settings = settings.with_overrides(resume_token_file=str(tmp_path / "none.json"))
    watcher = Watcher(mongo, settings, WatchOptions(token_store="mongo", name="calm"))
    assert watcher.lease is not None
    assert watcher.lease.try_acquire()
    owner, term = watcher.lease.owner, watcher.lease.term
    watcher._save_token({"_data": "t1"})
    watcher._mark_stopped()  # as Watcher.run ends after a signal
    watcher.lease.release()
    report = collect_status(mongo, settings)
    (calm,) = report.watchers
    assert calm["leader"] is None
    assert calm["released_term"] == term
    (line,) = [line for line in report.lines() if line.startswith("watcher calm ")]
    assert "leader" not in line, line
    assert ", stopped cleanly at " in line, line
    assert line.endswith(f": it released its lease (term {term}), no watcher leads"), line
    assert owner not in line

    standby = Watcher(mongo, settings, WatchOptions(token_store="mongo", name="calm"))
    assert standby.lease is not None
    assert standby.lease.try_acquire()
    (line,) = [line for line in collect_status(mongo, settings).lines() if line.startswith("watcher calm ")]
    assert f"leader {standby.lease.owner} (term {term + 1})" in line, line
    standby.lease.release()
