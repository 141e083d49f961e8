"""The cold tier (#35) on mongomock and the local disk: the move, its checks, its crash safety,
the files as an analyst reads them (DuckDB), the settings refused before anything is written."""

import os
from datetime import UTC, datetime, timedelta

import bson
import duckdb
import pytest
from pymongo.errors import AutoReconnect

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.cold import files
from order_archiver.cold.move import JOURNAL_KIND, ColdMove
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdStore, Month
from order_archiver.context import RunContext
from order_archiver.errors import ConfigError
from order_archiver.logs import plural
from order_archiver.orders.enrichment import as_utc
from order_archiver.settings import load_settings
from tests.helpers import seed_database

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


class Killed(BaseException):
    """The process dies here: nothing after this point runs (no except Exception catches it)."""


def archive_all(mongo, settings):
    """One batch run, chunks of 50, its clocks at NOW."""
    BatchArchiver(
        mongo,
        settings,
        BatchOptions(run=True, batch_size=50),
        context=RunContext(clock=lambda: NOW),
        server_clock=lambda: NOW,
    ).run()


@pytest.fixture
def archived(mongo, settings):
    seed_database(mongo[settings.mongodb_database], settings, 400, p_anomalies=0.15)
    archive_all(mongo, settings)
    archive = mongo[settings.archive_db_name][settings.archive_collection]
    before = {d["_id"]: d for d in archive.find()}
    assert len(before) > 200
    return archive, before


def local_store(tmp_path):
    (tmp_path / "cold").mkdir(exist_ok=True)
    return ColdStore(f"file://{tmp_path}/cold")


def collections(mongo, settings):
    database = mongo[settings.archive_db_name]
    return database[settings.archive_collection], database[settings.checkpoint_collection]


def a_cutoff(before):
    """A cutoff in the middle of the deliveries: some months cold, the rest in the archive."""
    dates = sorted(d["date_livraison"] for d in before.values())
    return dates[len(dates) // 2]


def cold_documents(store):
    """Every order of every published file: {_id: [(file, document)]}."""
    found = {}
    for cold_file in store.files():
        for batch in files.batches(store, cold_file.path, ["document"]):
            for text in batch["document"]:
                document = document_of(text)
                found.setdefault(document["_id"], []).append((cold_file, document))
    return found


def listed_files(database):
    """The files the list of published files names (verify's: a listed file gone is lost)."""
    return sorted(
        entry["path"]
        for name in database.list_collection_names()
        for entry in database[name].find({"kind": "cold-file"})
    )


def assert_one_place_each(archive, store, before):
    in_archive = {d["_id"] for d in archive.find({}, {"_id": 1})}
    in_cold = cold_documents(store)
    assert not in_archive & set(in_cold), "an order both in the archive and a cold file"
    assert all(len(places) == 1 for places in in_cold.values()), "an order in two cold files"
    assert in_archive | set(in_cold) == set(before), "an order lost"
    assert listed_files(archive.database) == [f.path for f in store.files()], "the list of files is wrong"
    return in_cold


def test_the_move_leaves_each_old_order_in_one_cold_file_of_its_month_as_the_archive_held_it(
    mongo, settings, archived, tmp_path
):
    archive, before = archived
    cutoff = a_cutoff(before)
    store = local_store(tmp_path)
    store.check()
    report = ColdMove(store, *collections(mongo, settings), cutoff).run()
    in_cold = assert_one_place_each(archive, store, before)
    old = {i for i, d in before.items() if d["date_livraison"].replace(tzinfo=UTC) < cutoff}
    assert set(in_cold) == old
    assert report.moved == len(old) > 100
    for order_id, [(cold_file, document)] in in_cold.items():
        assert bson.encode(document) == bson.encode(before[order_id])  # every field, the same BSON types
        assert cold_file.month == Month.of(document["date_livraison"])
    assert report.files == len(store.files()) == len({Month.of(before[i]["date_livraison"]) for i in old})
    assert report.bytes == sum(f.size for f in store.files())
    assert not list(
        mongo[settings.archive_db_name][settings.checkpoint_collection].find({"kind": JOURNAL_KIND})
    )
    # A second run finds nothing more to move and writes no empty file.
    again = ColdMove(store, *collections(mongo, settings), cutoff).run()
    assert (again.moved, again.files, len(store.files())) == (0, 0, report.files)


def test_on_a_local_disk_the_files_and_folders_a_move_creates_are_the_archivers_user_s_alone(
    mongo, settings, archived, tmp_path
):
    """Cold files were written 0644 (Arrow creates 0666 less the umask): names, e-mails and
    addresses readable by every user of the machine, where the log folder is forced to 0700.
    Under the usual umask (022) each file is 0600 from its creation (its partial name), each
    month's folder 0700; the folder of ARCHIVE_COLD_URL, the user's, keeps its mode."""
    import os
    import stat

    _archive, before = archived
    previous = os.umask(0o022)
    try:
        store = local_store(tmp_path)
        opened: list[int] = []

        class Watched:  # the store's file system, noting each new file's mode as it is opened
            def __init__(self, fs):
                self.fs = fs

            def __getattr__(self, name):
                return getattr(self.fs, name)

            def open_output_stream(self, path, *args, **kwargs):
                out = self.fs.open_output_stream(path, *args, **kwargs)
                opened.append(stat.S_IMODE(os.stat(path).st_mode))  # before a byte is written
                return out

        store.fs = Watched(store.fs)  # type: ignore[assignment]
        report = ColdMove(store, *collections(mongo, settings), a_cutoff(before)).run()
    finally:
        os.umask(previous)
    cold = tmp_path / "cold"
    made = sorted(cold.rglob("*"))
    assert report.files > 1
    assert [p for p in made if p.is_file()]
    assert [p for p in made if p.is_dir()]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in made if p.is_file()} == {oct(0o600)}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in made if p.is_dir()} == {oct(0o700)}
    assert opened
    assert set(opened) == {0o600}
    assert stat.S_IMODE(cold.stat().st_mode) == 0o755  # the user's own folder: left as it is


def test_a_file_is_written_a_row_group_at_a_time_and_its_footer_holds_the_checksums(
    mongo, settings, archived, tmp_path, monkeypatch
):
    _archive, before = archived
    monkeypatch.setattr(files, "ROW_GROUP_ROWS", 7)  # read by each writer as it opens
    store = local_store(tmp_path)
    ColdMove(store, *collections(mongo, settings), a_cutoff(before)).run()
    import pyarrow.parquet as pq

    for cold_file in store.files():
        metadata = pq.ParquetFile(cold_file.path).metadata
        assert max(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)) <= 7
        said = files.footer(store, cold_file.path)
        assert said == files.read_back(store, cold_file.path)
        assert said.rows == metadata.num_rows


def test_a_month_larger_than_a_file_goes_into_several_each_order_in_one(
    mongo, settings, archived, tmp_path, monkeypatch
):
    """A move's file stops after the row group that takes it past FILE_MAX_BYTES (1 GiB: far
    below the 5 GB S3 copies in one CopyObject, the publication's step) and the month goes on
    in another file. Scaled down: row groups of 10 rows, a ceiling of 1 byte: 10 orders a file."""
    archive, before = archived
    monkeypatch.setattr(files, "ROW_GROUP_ROWS", 10)
    monkeypatch.setattr(files, "FILE_MAX_BYTES", 1)
    store = local_store(tmp_path)
    report = ColdMove(store, *collections(mongo, settings), a_cutoff(before)).run()
    in_cold = assert_one_place_each(archive, store, before)
    by_month = {}
    for cold_file in store.files():
        by_month.setdefault(str(cold_file.month), []).append(files.footer(store, cold_file.path).rows)
    assert report.files == len(store.files()) > len(by_month)
    assert sorted(report.months) == sorted(by_month)  # each month once
    for rows in by_month.values():  # 10 a file, the month's last file the rest
        assert sorted(rows)[1:] == [10] * (len(rows) - 1)
        assert 0 < min(rows) <= 10
    assert sum(sum(rows) for rows in by_month.values()) == len(in_cold) == report.moved


def test_an_s3_file_over_one_copys_ceiling_is_refused_before_the_copy(tmp_path, monkeypatch):
    """S3 copies at most 5 GB in one CopyObject, and Arrow's S3 move is one CopyObject: a file
    over it is refused before the copy, named, not published. Scaled down: a ceiling of 10
    bytes, on a local folder standing in for the bucket (the check reads the scheme and size)."""
    from pyarrow.fs import LocalFileSystem

    from order_archiver.cold import store as store_module
    from order_archiver.errors import FatalError

    monkeypatch.setattr(store_module, "S3_COPY_MAX_BYTES", 10)
    store = ColdStore("s3://bucket/cold", filesystem=LocalFileSystem(), root=str(tmp_path))
    partial, final = store.new_file(Month(2024, 3))
    store.prepare(Month(2024, 3))
    with store.fs.open_output_stream(partial) as out:
        out.write(b"x" * 100)
    with pytest.raises(FatalError, match=r"100 bytes, over the 5 GB S3 copies in one step"):
        store.publish(partial, final)
    assert not store.exists(final)
    assert store.files() == []


def test_a_file_that_does_not_read_back_as_written_is_removed_and_nothing_leaves_the_archive(
    mongo, settings, archived, tmp_path, monkeypatch
):
    archive, before = archived
    store = local_store(tmp_path)
    real = files.read_back

    def one_row_lost(store, path):
        found = real(store, path)
        return files.FileSummary(found.rows - 1, found.ids_sha256, found.documents_sha256)

    import order_archiver.cold.files as module

    monkeypatch.setattr(module, "read_back", one_row_lost)
    with pytest.raises(Exception, match="does not hold what was written"):
        ColdMove(store, *collections(mongo, settings), a_cutoff(before)).run()
    assert archive.count_documents({}) == len(before)
    assert store.files() == []
    assert not [p for p in (tmp_path / "cold").rglob("*") if p.is_file()]  # no partial file left


def test_a_crash_after_publishing_is_settled_by_the_next_run_each_order_in_one_place(
    mongo, settings, archived, tmp_path
):
    archive, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    move = ColdMove(store, *collections(mongo, settings), cutoff)

    def die():
        raise Killed

    move.after_publish = die
    with pytest.raises(Killed):
        move.run()
    # Dead between the file and the delete: the file's orders are in both places, the journal says so.
    assert len(store.files()) == 1
    journal = list(collections(mongo, settings)[1].find({"kind": JOURNAL_KIND}))
    assert [entry["state"] for entry in journal] == ["published"]
    report = ColdMove(store, *collections(mongo, settings), cutoff).run()
    assert report.recovered == 1
    assert_one_place_each(archive, store, before)
    assert not list(collections(mongo, settings)[1].find({"kind": JOURNAL_KIND}))


def test_a_crash_while_writing_leaves_a_partial_file_that_is_never_read_and_is_removed(
    mongo, settings, archived, tmp_path
):
    archive, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    month = Month.of(min(d["date_livraison"] for d in before.values()))
    partial, final = store.new_file(month)
    store.prepare(month)
    with store.fs.open_output_stream(partial) as out:
        out.write(b"PAR1 half a file")  # what a kill -9 mid-write leaves
    _, journal = collections(mongo, settings)
    journal.insert_one(
        {
            "_id": f"{JOURNAL_KIND}:{final}",
            "kind": JOURNAL_KIND,
            "state": "writing",
            "partial": partial,
            "final": final,
        }
    )
    assert store.files() == []  # a partial file is no cold file
    report = ColdMove(store, archive, journal, cutoff).run()
    assert report.recovered == 1
    assert not store.exists(partial)
    assert_one_place_each(archive, store, before)


def test_duckdb_reads_a_months_revenue_by_restaurant_as_the_archive_held_it(
    mongo, settings, archived, tmp_path
):
    archive, before = archived
    cutoff = a_cutoff(before)
    month = Month.of(min(d["date_livraison"] for d in before.values()))
    expected = {
        row["_id"]: round(row["revenue"], 2)
        for row in archive.aggregate(
            [
                {"$match": {"date_livraison": {"$gte": month.start, "$lt": min(month.next().start, cutoff)}}},
                {"$group": {"_id": "$restaurant.nom", "revenue": {"$sum": "$montant_total"}}},
            ]
        )
    }
    store = local_store(tmp_path)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    rows = duckdb.sql(
        f"""
        SELECT restaurant.nom AS restaurant, round(sum(montant_total), 2) AS revenue
        FROM read_parquet('{tmp_path}/cold/**/*.parquet', hive_partitioning = true)
        WHERE year = {month.year} AND month = {month.month}
        GROUP BY ALL
        """
    ).fetchall()
    assert dict(rows) == expected
    assert len(expected) > 1


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"ARCHIVE_COLD_URL": "ftp://host/cold", "ARCHIVE_COLD_AFTER": "730d"},
            "expected file:///path or s3://",
        ),
        ({"ARCHIVE_COLD_URL": "file://relative/cold", "ARCHIVE_COLD_AFTER": "730d"}, "absolute folder"),
        ({"ARCHIVE_COLD_URL": "s3://key:secret@bucket/x", "ARCHIVE_COLD_AFTER": "730d"}, "never the URL"),
        ({"ARCHIVE_COLD_URL": "file:///tmp/cold"}, "without ARCHIVE_COLD_AFTER"),
        ({"ARCHIVE_COLD_AFTER": "730d"}, "without ARCHIVE_COLD_URL"),
        (
            {"ARCHIVE_COLD_URL": "file:///tmp/cold", "ARCHIVE_COLD_AFTER": "30d", "PURGE_AFTER": "60d"},
            r"ARCHIVE_COLD_AFTER \(30d\) is shorter than PURGE_AFTER \(60d\)",
        ),
        (
            {
                "ARCHIVE_COLD_URL": "file:///tmp/cold",
                "ARCHIVE_COLD_AFTER": "730d",
                "ARCHIVE_RETENTION": "365d",
            },
            r"ARCHIVE_COLD_AFTER \(730d\) is not shorter than ARCHIVE_RETENTION \(365d\)",
        ),
    ],
)
def test_cold_settings_that_cannot_work_are_refused(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={"MONGODB_URI": "mongodb://h", **environ})


@pytest.mark.parametrize(
    ("environ", "line"),
    [
        (
            {"ARCHIVE_COLD_AFTER": "800d", "ARCHIVE_RETENTION": "730d"},
            "error: ARCHIVE_COLD_AFTER (800d) is not shorter than ARCHIVE_RETENTION (730d): MongoDB's TTL "
            "index would delete archived orders before they move to the cold tier; set ARCHIVE_COLD_AFTER "
            "under 730d or ARCHIVE_RETENTION over 800d (the rule: PURGE_AFTER <= ARCHIVE_COLD_AFTER < "
            "ARCHIVE_RETENTION)",
        ),
        (
            {"ARCHIVE_COLD_AFTER": "30d", "PURGE_AFTER": "60d"},
            "error: ARCHIVE_COLD_AFTER (30d) is shorter than PURGE_AFTER (60d): orders would leave the "
            "archive before the source; set ARCHIVE_COLD_AFTER to at least 60d or PURGE_AFTER to at most "
            "30d (the rule: PURGE_AFTER <= ARCHIVE_COLD_AFTER < ARCHIVE_RETENTION)",
        ),
    ],
)
def test_cold_settings_out_of_order_name_both_their_values_and_the_rule(
    environ, line, tmp_path, monkeypatch, capsys
):
    """A new user's try: "ARCHIVE_COLD_AFTER (800d) is not shorter than ARCHIVE_RETENTION
    (730d): ... shorten it": which one, to what? The line names both settings, the bound each
    must cross, and the rule; one line, exit 2, nothing written."""
    from order_archiver.cli.main import main

    monkeypatch.setenv("ARCHIVE_COLD_URL", f"file://{tmp_path}")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["batch", "--simulation", "--run"]) == 2
    out, err = capsys.readouterr()
    assert (out, err.strip().splitlines()) == ("", [line])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("cold", "got 'cold' (no scheme: a folder is file:///absolute/path)"),
        ("/var/lib/cold", "got '/var/lib/cold' (no scheme: a folder is file:///absolute/path)"),
        ("key:secret@bucket/orders", "got a value with no scheme"),
        ("AKIA:SECRET@s3://bucket/orders", "got an unknown scheme"),  # before "://": a credential
    ],
)
def test_a_cold_place_with_no_scheme_is_named_as_such_and_never_echoes_a_credential(
    value, said, tmp_path, monkeypatch, capsys
):
    """A new user's try: ``ARCHIVE_COLD_URL=cold`` was refused with "got the scheme 'cold'"
    (the value had no scheme at all). One line naming the setting, exit 2; a value that may
    hold a credential (a ``:`` or an ``@``) is not shown."""
    from tests.helpers import run_in_process

    env = {"ARCHIVE_COLD_URL": value, "ARCHIVE_COLD_AFTER": "730d"}
    result = run_in_process(
        "batch", "--simulation", env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ARCHIVE_COLD_URL: "), lines[0]
    assert said in lines[0], lines[0]
    assert "the scheme" not in lines[0]
    assert "secret" not in (result.stdout + result.stderr).lower()


FILE_TAKES = (
    "file: URLs take // and an absolute path: file:///absolute/path (file:///var/lib/order-archiver/cold)"
)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("file:u2_cold", FILE_TAKES),
        ("FILE:/var/lib/cold", FILE_TAKES),
        ("s3:bucket/orders", "s3: URLs take // and a bucket: s3://bucket/prefix"),
    ],
)
def test_a_cold_place_with_its_scheme_but_no_slashes_says_what_it_lacks(
    value, said, tmp_path, monkeypatch, capsys
):
    """A new user's try: ``ARCHIVE_COLD_URL=file:u2_cold`` was refused with "got a value with no
    scheme"; it has the file: scheme, and lacks the // and an absolute path. One line saying so,
    exit 2, the value unshown (it may be anything after the scheme), nothing written."""
    from tests.helpers import run_in_process

    env = {"ARCHIVE_COLD_URL": value, "ARCHIVE_COLD_AFTER": "730d"}
    result = run_in_process(
        "batch", "--simulation", "--run", env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: ARCHIVE_COLD_URL: {said}"]
    assert list(tmp_path.iterdir()) == []


def test_good_cold_settings_are_read():
    settings, _ = load_settings(
        environ={
            "MONGODB_URI": "mongodb://h",
            "ARCHIVE_COLD_URL": "s3://bucket/orders/",
            "ARCHIVE_COLD_AFTER": "730d",
        }
    )
    assert (settings.archive_cold_url, str(settings.archive_cold_after)) == ("s3://bucket/orders", "730d")


@pytest.mark.parametrize("mode", [["--run"], [], ["--dry-run"]], ids=["run", "dry run", "--dry-run"])
@pytest.mark.parametrize("problem", ["missing", "unwritable"])
def test_batch_refuses_a_cold_folder_it_cannot_use_before_anything_is_written(
    problem, mode, tmp_path, monkeypatch, capsys
):
    """A dry run too: it tells what `--run` would do, and `--run` would stop there (exit 2,
    the place named), before the server is even asked."""
    from tests.helpers import run_in_process

    folder = tmp_path / "cold"
    if problem == "unwritable":
        folder.mkdir()
        folder.chmod(0o500)
        import os

        if os.access(folder, os.W_OK):  # root writes anywhere: a file where the folder should be
            folder.chmod(0o700)
            folder.rmdir()
            folder.write_text("a file")
    env = {
        "MONGODB_URI": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200",  # nothing listens
        "ARCHIVE_COLD_URL": f"file://{folder}",
        "ARCHIVE_COLD_AFTER": "730d",
        "LOG_DIR": "",
    }
    result = run_in_process("batch", *mode, env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2, result.stderr
    assert f"ARCHIVE_COLD_URL file://{folder}" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_find_says_where_each_order_is_and_masks_it(mongo, settings, archived, tmp_path):
    from order_archiver.operations.find import FindSelection, find_orders

    _archive, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    old = next(d for d in before.values() if d["date_livraison"].replace(tzinfo=UTC) < cutoff and d["client"])
    new = next(d for d in before.values() if d["date_livraison"].replace(tzinfo=UTC) >= cutoff)
    report = find_orders(mongo, with_cold, FindSelection((old["numero_commande"], new["numero_commande"])))
    places = {order_id: [p.where for p in found] for order_id, found in report.orders.items()}
    assert places[str(old["_id"])][-1] == "cold"
    assert "archive" not in places[str(old["_id"])]
    assert places[str(new["_id"])][-1] == "archive"
    [cold_place] = [p for p in report.orders[str(old["_id"])] if p.where == "cold"]
    assert cold_place.file.startswith(f"{store.url}/year=")
    text = "\n".join(report.lines())
    assert old["client"]["email"] not in text
    assert "***" in text
    assert report.complete
    shown = find_orders(mongo, with_cold, FindSelection(order_id=old["_id"]), show_pii=True)
    assert old["client"]["email"] in "\n".join(shown.lines())
    by_client = find_orders(mongo, with_cold, FindSelection(client_id=old["client"]["id"]))
    assert str(old["_id"]) in by_client.orders
    missing = find_orders(mongo, with_cold, FindSelection(("CMD-NOPE",)))
    assert not missing.complete
    assert missing.not_found == ["CMD-NOPE"]


def every_string_in_the_cold_tier(store):
    """Every string of every column of every cold file (the typed view and the documents)."""
    import pyarrow.parquet as pq

    from tests.helpers import strings_in

    found = []
    for cold_file in store.files():
        for row in pq.read_table(store.fs.open_input_file(cold_file.path)).to_pylist():
            # The document column is Extended JSON text (non-ASCII escaped): decoded, its strings.
            found += strings_in(document_of(row.pop("document"))) + strings_in(row)
    return found


def a_client_in_the_cold_tier(before, cutoff):
    old = [d for d in before.values() if d["date_livraison"].replace(tzinfo=UTC) < cutoff and d["client"]]
    return old[0]["client"]


def test_forget_rewrites_every_cold_file_holding_the_clients_orders_without_their_personal_data(
    mongo, settings, archived, tmp_path
):
    from order_archiver.operations.forget import Person, forget_person
    from tests.helpers import strings_in

    _, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    client = a_client_in_the_cold_tier(before, cutoff)
    theirs = {i for i, d in before.items() if (d["client"] or {}).get("id") == client["id"]}
    # Their e-mail and addresses are theirs alone (another client may share a first name: their
    # own orders are checked for the name below).
    secrets = [client["email"]]
    secrets += [
        d["adresse_livraison"] for i, d in before.items() if i in theirs and d.get("adresse_livraison")
    ]
    assert set(secrets) & set(every_string_in_the_cold_tier(store))
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    person = Person("client", client["id"])

    dry = forget_person(mongo, with_cold, person, run=False)
    assert dry.cold.orders > 0
    assert dry.cold.erased == dry.cold.orders
    assert dry.cold.rewritten == 0
    # What a dry run would do, said (a new user read "would rewrite (dry run)": rewrite what?).
    assert dry.lines()[-1].endswith(
        f"would rewrite the {plural(dry.cold.files, 'file')} holding them (dry run: nothing written)"
    )
    files_before = store.files()

    report = forget_person(mongo, with_cold, person, run=True)
    assert report.cold.rewritten == report.cold.files > 0
    assert "cold tier:" in "\n".join(report.lines())
    assert not set(secrets) & set(every_string_in_the_cold_tier(store))
    in_cold = cold_documents(store)
    assert set(in_cold) | {d["_id"] for d in collections(mongo, settings)[0].find()} == set(before)
    for order_id, [(_, document)] in in_cold.items():
        if order_id in theirs:
            assert document["forgotten_by"] == "forget"
            assert not {client["nom"], client["prenom"]} & set(strings_in(document))
            assert document["montant_total"] == before[order_id]["montant_total"]  # accounting kept
        else:
            assert bson.encode(document) == bson.encode(before[order_id])  # the others untouched
    assert len(store.files()) == len(files_before)
    assert report.lines()[-1].endswith(f"{plural(report.cold.rewritten, 'file')} rewritten")
    again = forget_person(mongo, with_cold, person, run=True)
    assert again.cold.erased == 0
    assert again.cold.rewritten == 0
    assert (
        forget_person(mongo, with_cold, person, run=False)
        .lines()[-1]
        .endswith("0 holding personal data; nothing to rewrite")
    )


def test_forget_reaches_a_cold_order_naming_its_client_by_the_text_of_their_id(
    mongo, settings, archived, tmp_path
):
    """Dirty data: an order whose ``client_id`` is the 24-digit text of the client's ObjectId
    joins no client (its reference is null); its source copy names them as text, which the
    cold tier's search looked for as an ObjectId only."""
    from order_archiver.operations.forget import Person, forget_person

    archive, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    client = a_client_in_the_cold_tier(before, cutoff)
    dirty = next(d for d in before.values() if d["date_livraison"].replace(tzinfo=UTC) < cutoff)
    secret = "12 rue du Texte, Dijon"
    archive.update_one(
        {"_id": dirty["_id"]},
        {
            "$set": {
                "client": None,
                "source.client_id": str(client["id"]).upper(),
                "source.adresse_livraison": secret,
            }
        },
    )
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    assert secret in every_string_in_the_cold_tier(store)
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    forget_person(mongo, with_cold, Person("client", client["id"]), run=True)
    assert secret not in every_string_in_the_cold_tier(store)
    [(_, document)] = cold_documents(store)[dirty["_id"]]
    assert document["forgotten_by"] == "forget"


def test_a_crash_between_a_rewrite_and_the_old_files_removal_is_settled(
    mongo, settings, archived, tmp_path, monkeypatch
):
    from order_archiver.operations.forget import Person, forget_person

    _, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    client = a_client_in_the_cold_tier(before, cutoff)
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    old_files = {f.path for f in store.files()}
    real_remove = ColdStore.remove

    def die_removing_an_old_file(self, path):
        if path in old_files:
            raise Killed
        real_remove(self, path)

    monkeypatch.setattr(ColdStore, "remove", die_removing_an_old_file)
    with pytest.raises(Killed):
        forget_person(mongo, with_cold, Person("client", client["id"]), run=True)
    monkeypatch.setattr(ColdStore, "remove", real_remove)
    with pytest.raises(AssertionError, match="two cold files"):
        assert_one_place_each(collections(mongo, settings)[0], store, before)
    report = ColdMove(store, *collections(mongo, settings), cutoff).run()
    assert report.recovered == 1
    in_cold = assert_one_place_each(collections(mongo, settings)[0], store, before)
    assert any(d.get("forgotten_by") == "forget" for [(_, d)] in in_cold.values())
    # The interrupted forget, run again (idempotent), reaches the files it had not reached.
    forget_person(mongo, with_cold, Person("client", client["id"]), run=True)
    assert client["email"] not in every_string_in_the_cold_tier(store)
    assert_one_place_each(collections(mongo, settings)[0], store, before)


def test_a_move_writes_a_forgotten_clients_orders_erased(mongo, settings, archived, tmp_path):
    """The erasure holds: a person forgotten before their orders move never reaches the cold tier."""
    from order_archiver.cold.tier import move_to_cold
    from order_archiver.mongodb.forgotten import ForgottenPersons

    archive, before = archived
    cutoff = a_cutoff(before)
    client = a_client_in_the_cold_tier(before, cutoff)
    store = local_store(tmp_path)
    forgotten = mongo[settings.archive_db_name][settings.forgotten_collection]
    ForgottenPersons(forgotten, RunContext()).record(
        "client", client["id"], NOW
    )  # recorded, archive not yet erased
    days = (datetime.now(UTC) - cutoff).days
    from order_archiver.settings import Duration

    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=Duration(days=days))
    report = move_to_cold(mongo, with_cold, RunContext())
    assert report.moved > 0
    assert client["email"] not in every_string_in_the_cold_tier(store)
    assert_one_place_each(archive, store, before)


def test_status_shows_the_cold_tier(mongo, settings, archived, tmp_path):
    from order_archiver.operations.status import collect_status

    _, before = archived
    store = local_store(tmp_path)
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    empty = collect_status(mongo, with_cold, now=NOW)
    assert (empty.cold.files, empty.cold.orders, empty.cold.oldest_month) == (0, 0, None)
    moved = ColdMove(store, *collections(mongo, settings), a_cutoff(before)).run()
    report = collect_status(mongo, with_cold, now=NOW)
    months = sorted(moved.months)
    assert (report.cold.files, report.cold.orders, report.cold.bytes) == (
        moved.files,
        moved.moved,
        moved.bytes,
    )
    assert (report.cold.oldest_month, report.cold.newest_month) == (months[0], months[-1])
    assert f"{moved.moved} orders in {moved.files} files" in "\n".join(report.lines())
    assert report.as_dict()["cold"]["orders"] == moved.moved
    assert collect_status(mongo, settings, now=NOW).cold is None


def test_a_moved_order_still_in_the_source_is_not_archived_again_by_a_full_pass(
    mongo, settings, archived, tmp_path
):
    """Without --purge-source the source keeps every order: a full pass (or verify --repair, a
    correction) must not bring a moved order back into the archive, a second place."""
    from order_archiver.settings import Duration

    archive, before = archived
    cold_after = Duration(days=10)
    cutoff = NOW - cold_after
    old = {i for i, d in before.items() if d["date_livraison"].replace(tzinfo=UTC) < cutoff}
    assert 0 < len(old) < len(before)
    store = local_store(tmp_path)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=cold_after)
    report = BatchArchiver(
        mongo,
        with_cold,
        BatchOptions(run=True, full=True, batch_size=50),
        context=RunContext(clock=lambda: NOW),
        server_clock=lambda: NOW,
    ).run()
    assert report.archived == 0
    assert (report.past_cold_after, report.past_retention) == (len(old), 0)  # the right reason
    assert f"{len(old)} past ARCHIVE_COLD_AFTER" in report.summary_line()
    assert "ARCHIVE_RETENTION" not in report.summary_line()
    assert_one_place_each(archive, store, before)


def test_orders_held_back_by_archive_cold_after_and_by_archive_retention_are_counted_apart(
    mongo, settings, archived, tmp_path
):
    """The batch summary and verify name the reason each order was not archived: past
    ARCHIVE_RETENTION (MongoDB would expire it) or past ARCHIVE_COLD_AFTER only (the cold
    tier's); an order past both is counted once, past ARCHIVE_RETENTION."""
    from order_archiver.operations.verify import verify
    from order_archiver.settings import Duration

    archive, before = archived
    dates = sorted(d["date_livraison"].replace(tzinfo=UTC) for d in before.values())
    cold_after = Duration(days=(NOW - dates[len(dates) // 2]).days)
    retention = Duration(days=(NOW - dates[len(dates) // 5]).days)
    assert cold_after < retention
    past_retention = sum(1 for d in dates if d < NOW - retention)
    past_cold = sum(1 for d in dates if NOW - retention <= d < NOW - cold_after)
    assert past_retention
    assert past_cold
    archive.delete_many({})  # archived again from nothing: every order meets the sort
    with_both = settings.with_overrides(
        archive_cold_url=local_store(tmp_path).url, archive_cold_after=cold_after, archive_retention=retention
    )
    report = BatchArchiver(
        mongo,
        with_both,
        BatchOptions(run=False, full=True, batch_size=50),
        context=RunContext(clock=lambda: NOW),
        server_clock=lambda: NOW,
    ).run()
    assert (report.past_retention, report.past_cold_after) == (past_retention, past_cold)
    line = report.summary_line()
    assert f"{past_retention} past ARCHIVE_RETENTION" in line
    assert f"{past_cold} past ARCHIVE_COLD_AFTER" in line
    assert report.as_dict()["past_cold_after"] == past_cold
    checked = verify(mongo, with_both)  # on today's clock: the counts differ, the reasons do not
    assert checked.past_cold_after > 0
    assert checked.past_retention > 0
    assert "past ARCHIVE_COLD_AFTER, not expected" in checked.lines()[0]


def purge_run(mongo, settings, **options):
    return BatchArchiver(
        mongo,
        settings,
        BatchOptions(run=True, purge_source=True, batch_size=50, **options),
        context=RunContext(clock=lambda: NOW),
        server_clock=lambda: NOW,
    ).run()


def test_the_purge_deletes_a_source_order_once_its_only_place_is_a_checked_cold_file(
    mongo, settings, archived, tmp_path
):
    """A cold tier set on a history never purged: the orders moved before the purge reached them
    are no longer in the archive; the purge deletes their source copy once their cold file (listed:
    published, read back and checked) holds them in that very version, in one file only. A copy
    changed since, one restored lately (RESTORE_HOLD), one whose file is not listed: kept."""
    from order_archiver.cold.manifest import ColdManifest
    from order_archiver.operations.restore import RestoreSelection, restore
    from order_archiver.settings import Duration

    archive, before = archived
    cold_after = Duration(days=10)
    cutoff = NOW - cold_after
    store = local_store(tmp_path)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    in_cold = cold_documents(store)
    assert len(store.files()) >= 2
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=cold_after)
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    assert orders.count_documents({"_id": {"$in": list(in_cold)}}) == len(in_cold)  # never purged

    unlisted_file = store.files()[-1]
    unlisted = {i for i, [(f, _)] in in_cold.items() if f == unlisted_file}
    manifest = ColdManifest(store, collections(mongo, settings)[1], RunContext())
    manifest.remove(unlisted_file.path)  # as a file copied in by hand: it vouches for nothing
    changed, restored = sorted(set(in_cold) - unlisted, key=str)[:2]
    orders.update_one({"_id": changed}, {"$set": {"adresse_livraison": "1 rue corrigée"}})
    orders.delete_one({"_id": restored})
    numero = before[restored]["numero_commande"]
    assert restore(mongo, with_cold, RestoreSelection((numero,)), run=True).restored == 1  # RESTORE_HOLD: 30d

    dry = BatchArchiver(
        mongo, with_cold, BatchOptions(run=False, purge_source=True, batch_size=50), server_clock=lambda: NOW
    ).run()
    report = purge_run(mongo, with_cold)
    assert dry.would_purge == report.purged > 0
    left = {d["_id"] for d in orders.find({"_id": {"$in": list(in_cold)}}, {"_id": 1})}
    assert left == {changed, restored} | unlisted  # every other moved order left the source
    assert (report.purge_kept, report.purge_held) == (1, 1)
    assert in_cold == cold_documents(store)  # the purge touched no cold file
    assert not set(in_cold) & {d["_id"] for d in archive.find({}, {"_id": 1})}

    manifest.add(unlisted_file.path)  # listed again (what the move does once it is checked)
    purge_run(mongo, with_cold)
    assert {d["_id"] for d in orders.find({"_id": {"$in": list(in_cold)}}, {"_id": 1})} == {changed, restored}


def test_the_purge_removes_the_cold_restore_marks_past_restore_hold_and_keeps_those_that_hold(
    mongo, settings, archived, tmp_path
):
    """Each order restored from the cold tier leaves a mark in the checkpoints collection, which
    nothing removed: one entry per cold restore, forever. The purge removes the marks older than
    a year (``purge.MARKS_KEPT``; RESTORE_HOLD if longer) and only those: restored 400 and 500
    days ago, gone (that order purged); 31 days ago, past RESTORE_HOLD (30 days: that order
    purged) but kept, for a run with a longer RESTORE_HOLD; 1 day ago or exactly 30 days ago,
    held and kept (those orders stay in the source); the collection's other entries untouched; a
    dry run removes nothing. A run with RESTORE_HOLD 0d holds nothing and removes no mark of the
    last year (a one-off shorter hold does not take away what the usual one honours)."""
    from order_archiver.cold.holding import MARK, ColdRestoreMarks
    from order_archiver.settings import Duration

    assert archived  # the history archived, then moved below
    cold_after = Duration(days=10)
    store = local_store(tmp_path)
    checkpoints = collections(mongo, settings)[1]
    ColdMove(store, *collections(mongo, settings), NOW - cold_after).run()
    in_cold = sorted(cold_documents(store), key=str)
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=cold_after)
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    marks = ColdRestoreMarks(checkpoints, RunContext())
    past, month_ago, recent, at_the_edge = in_cold[:4]
    marks.hold([past], NOW - timedelta(days=400))
    marks.hold([month_ago], NOW - timedelta(days=31))
    marks.hold([recent], NOW - timedelta(days=1))
    marks.hold([at_the_edge], NOW - timedelta(days=30))  # held since NOW - 30d: still held
    gone_long_ago = [f"purged-{n}" for n in range(1_500)]  # orders the source no longer holds
    marks.hold(gone_long_ago, NOW - timedelta(days=500))  # more than a chunk of them
    others = {d["_id"] for d in checkpoints.find({"kind": {"$ne": MARK}}, {"_id": 1})}
    assert others  # the move's list of files, at least

    def marked():
        return {d["_id"] for d in checkpoints.find({"kind": MARK}, {"_id": 1})}

    BatchArchiver(
        mongo, with_cold, BatchOptions(run=False, purge_source=True, batch_size=50), server_clock=lambda: NOW
    ).run()
    assert len(marked()) == 4 + len(gone_long_ago)  # a dry run removes nothing

    report = purge_run(mongo, with_cold)
    kept = {marks.key(month_ago), marks.key(recent), marks.key(at_the_edge)}
    assert marked() == kept
    assert report.purge_held == 2
    in_source = {d["_id"] for d in orders.find({"_id": {"$in": in_cold[:4]}}, {"_id": 1})}
    assert in_source == {recent, at_the_edge}
    assert others <= {d["_id"] for d in checkpoints.find({}, {"_id": 1})}

    without_hold = with_cold.with_overrides(restore_hold=Duration(0))
    assert purge_run(mongo, without_hold).purge_held == 0
    assert marked() == kept
    assert orders.count_documents({"_id": {"$in": [recent, at_the_edge]}}) == 0
    assert others <= {d["_id"] for d in checkpoints.find({}, {"_id": 1})}


def test_a_restore_hold_longer_than_a_year_keeps_its_marks_and_their_orders(
    mongo, settings, archived, tmp_path
):
    """RESTORE_HOLD 730d: a cold order restored 400 days ago is still held, so its mark, older
    than ``purge.MARKS_KEPT`` (a year), stays, and the purge leaves the order in the source; one
    restored 800 days ago is neither (review: the "or RESTORE_HOLD if longer" untested)."""
    from order_archiver.cold.holding import MARK, ColdRestoreMarks
    from order_archiver.settings import Duration

    assert archived
    cold_after = Duration(days=10)
    store = local_store(tmp_path)
    checkpoints = collections(mongo, settings)[1]
    ColdMove(store, *collections(mongo, settings), NOW - cold_after).run()
    in_cold = sorted(cold_documents(store), key=str)
    held, gone = in_cold[:2]
    marks = ColdRestoreMarks(checkpoints, RunContext())
    marks.hold([held], NOW - timedelta(days=400))
    marks.hold([gone], NOW - timedelta(days=800))
    two_years = settings.with_overrides(
        archive_cold_url=store.url, archive_cold_after=cold_after, restore_hold=Duration(days=730)
    )
    report = purge_run(mongo, two_years)
    assert report.purge_held == 1
    assert {d["_id"] for d in checkpoints.find({"kind": MARK}, {"_id": 1})} == {marks.key(held)}
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    assert {d["_id"] for d in orders.find({"_id": {"$in": [held, gone]}}, {"_id": 1})} == {held}


def test_archive_retention_removes_the_cold_months_wholly_past_it(mongo, settings, archived, tmp_path):
    _archive, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    months = sorted({f.month for f in store.files()}, key=lambda m: (m.year, m.month))
    assert len(months) >= 2
    # A cutoff inside the second month: the first goes whole, the second stays (partly inside).
    expire_before = months[1].start + (months[1].next().start - months[1].start) / 2
    first_month_orders = sum(files.footer(store, f.path).rows for f in store.files(months[0]))
    report = ColdMove(store, *collections(mongo, settings), cutoff, expire_before=expire_before).run()
    assert report.expired_files == 1
    assert report.expired_orders == first_month_orders > 0
    assert {f.month for f in store.files()} == set(months[1:])
    assert "past ARCHIVE_RETENTION removed" in report.line()


def test_verify_counts_the_cold_tier_and_finds_an_order_in_two_places(mongo, settings, archived, tmp_path):
    from order_archiver.operations.verify import verify
    from order_archiver.settings import Duration

    archive, before = archived
    store = local_store(tmp_path)
    cold_after = Duration(days=(datetime.now(UTC) - a_cutoff(before)).days)
    cutoff = datetime.now(UTC) - cold_after
    moved = ColdMove(store, *collections(mongo, settings), cutoff).run()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=cold_after)
    report = verify(mongo, with_cold)
    assert report.consistent, report.lines()
    assert (report.cold.files, report.cold.orders, report.cold.also_in_archive) == (
        moved.files,
        moved.moved,
        0,
    )
    assert report.missing == 0  # a moved order is not missing from the archive
    assert "cold tier:" in "\n".join(report.lines())

    one = next(iter(cold_documents(store).values()))[0][1]
    archive.insert_one(before[one["_id"]])  # an order back in the archive: two places
    again = verify(mongo, with_cold)
    assert not again.consistent
    assert again.cold.also_in_archive == 1
    assert again.as_dict()["cold"]["also_in_archive"] == 1


def test_verify_finds_the_orders_of_a_cold_file_removed_by_hand_missing(mongo, settings, archived, tmp_path):
    """A file published and then gone (removed by hand, a bucket's lifecycle rule): its orders
    are in no place. verify reads the list of files published (one entry a file) and says so;
    a file replaced by a rewrite (forget) is not taken for a lost one."""
    from order_archiver.operations.forget import Person, forget_person
    from order_archiver.operations.verify import verify
    from order_archiver.settings import Duration

    archive, before = archived
    store = local_store(tmp_path)
    cold_after = Duration(days=(datetime.now(UTC) - a_cutoff(before)).days)
    cutoff = datetime.now(UTC) - cold_after
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=cold_after)
    forget_person(
        mongo, with_cold, Person("client", a_client_in_the_cold_tier(before, cutoff)["id"]), run=True
    )
    report = verify(mongo, with_cold)
    assert report.consistent, report.lines()
    assert report.cold.missing == 0
    assert_one_place_each(archive, store, before)

    gone = store.files()[0]
    rows = files.footer(store, gone.path).rows
    os.remove(gone.path)  # a local store: the path is the file's
    again = verify(mongo, with_cold)
    assert not again.consistent
    assert again.cold.missing == rows > 0
    assert again.cold.missing_files == [store.url_of(gone.path)]
    assert again.as_dict()["cold"]["missing"] == rows
    assert f"missing (their file gone): {rows}" in "\n".join(again.lines())
    # status, the probe run every minute, says so too (a new user's try: it said healthy).
    from order_archiver.operations.status import collect_status

    status = collect_status(mongo, with_cold)
    assert not status.healthy
    assert f"cold tier: 1 published file gone, {rows} orders in no place" in "\n".join(status.problems)


def test_status_lists_the_cold_tier_s_place_once(mongo, settings, archived, tmp_path, monkeypatch):
    """status runs every minute: its summary (files, orders, months) and its lost-files check
    read the one listing of the place (on S3 a listing is a paid request, and a long one on a
    bucket of years of months); it listed the place twice. What it says is unchanged."""
    from order_archiver.cold.store import ColdStore
    from order_archiver.operations.status import collect_status
    from order_archiver.settings import Duration

    _, before = archived
    store = local_store(tmp_path)
    cold_after = Duration(days=(datetime.now(UTC) - a_cutoff(before)).days)
    ColdMove(store, *collections(mongo, settings), datetime.now(UTC) - cold_after).run()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=cold_after)
    gone = store.files()[0]
    rows = files.footer(store, gone.path).rows
    os.remove(gone.path)
    listings = []
    files_of = ColdStore.files  # the one listing of the place (get_file_info of a selector)

    def counted(self, month=None):
        listings.append(month)
        return files_of(self, month)

    monkeypatch.setattr(ColdStore, "files", counted)
    status = collect_status(mongo, with_cold)
    assert len(listings) == 1
    assert status.cold.files == len(files_of(store)) > 0
    assert status.as_dict()["cold"]["files"] == status.cold.files
    assert f"cold tier: 1 published file gone, {rows} orders in no place" in "\n".join(status.problems)
    assert sum(line.startswith("cold tier ") for line in status.lines()) == 1


def test_status_opens_no_cold_file(mongo, settings, archived, tmp_path, monkeypatch):
    """status runs every minute, and the cold tier gains a file or more a month for years: each
    file's orders are read from the list of files published (its rows), not from the file's
    footer (a request each on S3, read again at every probe). A file the list does not have
    (published before the list existed) is still read."""
    from order_archiver.cold import tier
    from order_archiver.operations.status import collect_status
    from order_archiver.settings import Duration

    _, before = archived
    store = local_store(tmp_path)
    cold_after = Duration(days=(datetime.now(UTC) - a_cutoff(before)).days)
    moved = ColdMove(store, *collections(mongo, settings), datetime.now(UTC) - cold_after).run()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=cold_after)
    opened: list[str] = []
    read_footer = files.footer

    def counted(place, path):
        opened.append(path)
        return read_footer(place, path)

    monkeypatch.setattr(tier, "footer", counted)
    status = collect_status(mongo, with_cold)
    assert (status.cold.files, status.cold.orders) == (moved.files, moved.moved)
    assert opened == []
    unlisted = store.files()[0]
    collections(mongo, settings)[-1].delete_one({"path": unlisted.path})  # an entry of the list gone
    status = collect_status(mongo, with_cold)
    assert status.cold.orders == moved.moved
    assert opened == [unlisted.path]


def test_restore_puts_a_moved_order_back_into_the_source_from_its_cold_file(
    mongo, settings, archived, tmp_path
):
    from order_archiver.operations.restore import RestoreSelection, restore

    _, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    old = [d for d in before.values() if d["date_livraison"].replace(tzinfo=UTC) < cutoff][:3]
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    originals = {d["_id"]: orders.find_one({"_id": d["_id"]}) for d in old}
    orders.delete_many({"_id": {"$in": list(originals)}})  # purged long ago
    numeros = tuple(d["numero_commande"] for d in old)

    dry = restore(mongo, with_cold, RestoreSelection(numeros))
    assert (dry.selected, dry.restored, dry.not_found) == (3, 3, [])
    assert orders.count_documents({"_id": {"$in": list(originals)}}) == 0
    report = restore(mongo, with_cold, RestoreSelection(numeros), run=True)
    assert (report.restored, report.complete) == (3, True)
    for order_id, original in originals.items():
        assert bson.encode(orders.find_one({"_id": order_id})) == bson.encode(original)
    assert len(cold_documents(store)) == sum(
        1 for d in before.values() if d["date_livraison"].replace(tzinfo=UTC) < cutoff
    )
    moment = old[0]["date_commande"]  # a window of one second around one moved order
    by_window = restore(
        mongo, with_cold, RestoreSelection(date_from=moment, date_to=moment + timedelta(seconds=1))
    )
    assert by_window.selected >= 1
    assert by_window.already_there >= 1


def test_restore_names_a_moved_order_a_numero_differs_from_only_by_case(mongo, settings, archived, tmp_path):
    """A new user's try: ``restore --numero cmd-000551`` for an order moved to the cold tier said
    "not found among the archived orders: --numero cmd-000551" with no hint, where one in the
    archive collection is named ("CMD-000373 is archived: numbers match exactly", commands.md).
    The hint looks in the cold files too (their numbers' column only)."""
    from order_archiver.operations.restore import RestoreSelection, restore

    with_cold, moved, _ = moved_and_kept(mongo, settings, archived, tmp_path)
    numero = moved["numero_commande"]
    assert numero != numero.lower()
    report = restore(mongo, with_cold, RestoreSelection((numero.lower(), "cmd-999999")))
    assert report.not_found == [
        f"--numero {numero.lower()} ({numero} is archived, in the cold tier: numbers match exactly)",
        "--numero cmd-999999",
    ]
    assert not report.complete  # exit 3
    assert any(f"({numero} is archived, in the cold tier" in line for line in report.lines())


def test_restore_run_asks_for_yes_above_100_orders_counting_the_cold_tiers(
    mongo, settings, archived, tmp_path
):
    """The archive alone held none of the window's orders: a --run of hundreds of moved ones
    went ahead without --yes."""
    from order_archiver.errors import ConfigError
    from order_archiver.operations.restore import CONFIRM_ABOVE, RestoreSelection, restore

    _, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    moved = [d for d in before.values() if d["date_livraison"].replace(tzinfo=UTC) < cutoff]
    first = min(d["date_commande"] for d in moved)
    last = max(d["date_commande"] for d in moved)
    window = RestoreSelection(date_from=first, date_to=last + timedelta(seconds=1))
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    count = orders.count_documents({})
    with pytest.raises(ConfigError, match="add --yes"):
        restore(mongo, with_cold, window, run=True)
    assert orders.count_documents({}) == count  # nothing written
    assert restore(mongo, with_cold, window).selected > CONFIRM_ABOVE  # the dry run counts them


def test_archive_pii_retention_erases_the_cold_orders_past_it_and_stamps_the_months_done(
    mongo, settings, archived, tmp_path
):
    from order_archiver.cold.retention import erase_by_age
    from order_archiver.orders.erasing import BY_AGE, Erasure

    _, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    months = sorted({f.month for f in store.files()}, key=lambda m: (m.year, m.month))
    # The PII cutoff inside the last cold month: the months before it wholly past, that one partly.
    cold_dates = sorted(
        d["date_livraison"] for d in before.values() if d["date_livraison"].replace(tzinfo=UTC) < cutoff
    )
    pii_cutoff = max(
        cold_dates[len(cold_dates) // 2].replace(tzinfo=UTC), months[-1].start + timedelta(hours=1)
    )
    erasure = Erasure(client=True, courier=True, by=BY_AGE, at=NOW)
    _, journal = collections(mongo, settings)
    report = erase_by_age(store, journal, pii_cutoff, erasure, RunContext())
    assert report.orders > 0
    for order_id, [(_, document)] in cold_documents(store).items():
        original = before[order_id]
        if original["date_livraison"].replace(tzinfo=UTC) < pii_cutoff:
            assert not erasure.holds(document), order_id
            assert document["montant_total"] == original["montant_total"]
        else:
            assert bson.encode(document) == bson.encode(original)
    again = erase_by_age(store, journal, pii_cutoff, erasure, RunContext())
    assert (again.files, again.orders) == (0, 0)  # stamped months are not read again


def test_a_person_forgotten_while_their_month_is_written_never_reaches_a_published_file(
    mongo, settings, archived, tmp_path
):
    """forget records the person, then erases the archive, then the cold files: one that runs
    wholly while a month is being written finds no published file to rewrite. The move checks
    the record again before publishing, and writes the month again."""
    from order_archiver.orders.erasing import BY_REQUEST, Erasure

    archive, before = archived
    cutoff = a_cutoff(before)
    client = a_client_in_the_cold_tier(before, cutoff)
    erasure = Erasure(client=True, courier=False, by=BY_REQUEST, at=NOW)
    forgotten: set = set()
    calls = []

    def respect(documents):
        """The record of forgotten persons, as the writer reads it; the client is forgotten just
        after their orders were first read (the record changes under the move)."""
        calls.append(len(documents))
        done = [erasure(d) if (d.get("client") or {}).get("id") in forgotten else d for d in documents]
        forgotten.add(client["id"])
        return done

    store = local_store(tmp_path)
    report = ColdMove(store, *collections(mongo, settings), cutoff, respect=respect).run()
    assert report.moved > 0
    assert client["email"] not in every_string_in_the_cold_tier(store)
    assert_one_place_each(archive, store, before)
    assert not [p for p in (tmp_path / "cold").rglob("*.partial")]


def test_a_forget_between_the_moves_last_check_and_its_deletes_leaves_no_unerased_copy(
    mongo, settings, archived, tmp_path
):
    """The review: forget records the person and erases the archive's copy after the move's
    last look at the record, and finds no published file to rewrite; the move then deleted the
    archive's (erased) copy by its revised_at alone, leaving the file's unerased one the only
    one. The delete matches the file's version (source_hash too): the erased copy stays in the
    archive, the file's goes."""
    from order_archiver.orders.erasing import BY_REQUEST, Erasure

    archive, before = archived
    cutoff = a_cutoff(before)
    client = a_client_in_the_cold_tier(before, cutoff)
    erasure = Erasure(client=True, courier=False, by=BY_REQUEST, at=NOW)
    store = local_store(tmp_path)
    move = ColdMove(store, *collections(mongo, settings), cutoff)
    delete_moved = move._delete_moved

    def forget_then_delete(path):
        for document in archive.find({"client.id": client["id"]}):
            archive.replace_one({"_id": document["_id"]}, erasure(document))  # forget's archive part
        return delete_moved(path)

    move._delete_moved = forget_then_delete
    move.run()
    assert client["email"] not in every_string_in_the_cold_tier(store)
    assert_one_place_each(archive, store, before)
    theirs = list(archive.find({"client.id": client["id"]}))
    assert theirs
    assert all(d["forgotten_by"] == "forget" for d in theirs)


def test_forget_rewrites_cold_files_only_as_the_cold_tiers_one_writer(
    mongo, settings, archived, tmp_path, monkeypatch
):
    """The review: a forget's rewrite of a file and a move's (or retention's) of the same file
    at once each published their own copy of its orders, one of them with the person's data.
    forget now takes the cold tier's lease (the move's): while a move holds it, forget waits,
    then says to run it again, the person recorded."""
    from order_archiver.cold import tier
    from order_archiver.errors import FatalError
    from order_archiver.mongodb.lease import Lease
    from order_archiver.operations.forget import Person, forget_person

    _, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    client = a_client_in_the_cold_tier(before, cutoff)
    with_cold = settings.with_overrides(
        archive_cold_url=store.url,
        archive_cold_after=settings.purge_after,
        watch_lease_ttl_s=2,
        watch_lease_renew_s=1,
    )
    moving = Lease(collections(mongo, settings)[1], tier.MOVE_LEASE, ttl_s=60, renew_s=1)
    assert moving.try_acquire()
    monkeypatch.setattr(tier, "FORGET_WAITS_S", 2.0, raising=False)
    try:
        with pytest.raises(FatalError, match="run forget again"):
            forget_person(mongo, with_cold, Person("client", client["id"]), run=True)
        assert client["email"] in every_string_in_the_cold_tier(store)  # nothing rewritten meanwhile
    finally:
        moving.release()
    report = forget_person(mongo, with_cold, Person("client", client["id"]), run=True)
    assert report.cold.rewritten > 0
    assert client["email"] not in every_string_in_the_cold_tier(store)


def a_move_racing_a_forget(mongo, settings, archived, tmp_path, monkeypatch, race):
    """The archive's oldest month moved by ``tier.move_to_cold`` (its lease, the record of
    forgotten persons), ``race(settings)`` run once at the move's point between its fence (and
    its last look at the record) and its publication (``ColdMove.before_publish``). The
    settings that name the cold tier, the store, the month's orders before the move."""
    from order_archiver.cold import move as move_module
    from order_archiver.cold.tier import move_to_cold
    from order_archiver.settings import Duration

    _, before = archived
    store = local_store(tmp_path)
    month = Month.of(min(d["date_livraison"] for d in before.values()))
    # The move's cutoff half a day before the next month: one month, one file, one publication.
    cold_after = datetime.now(UTC) - (month.next().start - timedelta(hours=12))
    with_cold = settings.with_overrides(
        archive_cold_url=store.url,
        archive_cold_after=Duration(seconds=int(cold_after.total_seconds())),
        watch_lease_ttl_s=2,
        watch_lease_renew_s=1,
    )
    real_init, raced = move_module.ColdMove.__init__, []

    def once():
        if not raced:
            raced.append(True)
            race(with_cold)

    def with_the_race(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.before_publish = once

    monkeypatch.setattr(move_module.ColdMove, "__init__", with_the_race)
    report = move_to_cold(mongo, with_cold, RunContext())
    assert raced
    assert report.moved > 0
    return store, report


def an_order_whose_client_was_forgotten(mongo, settings, before):
    """An order of the archive's oldest month with a client and a courier, its client forgotten
    (the archive's copy erased, its source copy too: a courier's erasure then leaves its
    ``source_hash`` as it is); the order and its courier."""
    from order_archiver.operations.forget import Person, forget_person
    from order_archiver.orders.erasing import CLIENT

    month = Month.of(min(d["date_livraison"] for d in before.values()))
    order = next(
        d
        for d in sorted(before.values(), key=lambda d: d["date_livraison"])
        if Month.of(d["date_livraison"]) == month and d["client"] and d["livreur"]
    )
    forget_person(mongo, settings, Person(CLIENT, order["client"]["id"]), run=True)
    return order, order["livreur"]


def assert_courier_erased_in_the_cold_tier(store, order, courier):
    theirs = [
        document
        for places in cold_documents(store).values()
        for _, document in places
        if (document.get("livreur") or {}).get("id") == courier["id"]
    ]
    assert order["_id"] in {d["_id"] for d in theirs}  # the order itself is in the file now
    assert all(d["livreur"]["nom"] is None and d["livreur"]["prenom"] is None for d in theirs), (
        "a published cold file holds the forgotten courier's name"
    )


def test_a_forget_while_the_move_lost_its_lease_between_its_fence_and_its_rename_reaches_no_file(
    mongo, settings, archived, tmp_path, monkeypatch
):
    """The move checks its lease (the fence) then renames its file into place. A mover paused
    (or cut off from MongoDB) past its lease's life right there lets a forget take the lease:
    the forget records the courier, erases the archive's copies and rewrites the cold files,
    all before the file is published. The move's versioned delete kept the archive's erased
    copy only where the erasure changed ``source_hash``: an order whose client was forgotten
    earlier (its source copy already erased) keeps its hash when its courier is, so the delete
    took the archive's erased copy, and the file kept the courier's name, published after the
    forget looked. The move reads the record again after its publication, before it deletes:
    the file is rewritten with the courier's orders erased."""
    from order_archiver.cold.tier import MOVE_LEASE
    from order_archiver.mongodb.lease import lease_key
    from order_archiver.operations.forget import Person, forget_person
    from order_archiver.orders.erasing import COURIER

    archive, before = archived
    checkpoints = collections(mongo, settings)[1]
    order, courier = an_order_whose_client_was_forgotten(mongo, settings, before)

    def lease_lost_then_forget(with_cold):
        # The mover paused past its lease's life: the lease expires (the owner changed too,
        # as this process's renewer thread, which a real pause stops, would renew it).
        checkpoints.update_one(
            {"_id": lease_key(MOVE_LEASE)},
            {"$set": {"owner": "(paused)", "expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
        )
        forget_person(mongo, with_cold, Person(COURIER, courier["id"]), run=True)

    store, _ = a_move_racing_a_forget(
        mongo, settings, archived, tmp_path, monkeypatch, lease_lost_then_forget
    )
    assert_courier_erased_in_the_cold_tier(store, order, courier)
    assert_one_place_each(archive, store, before)
    assert not list(checkpoints.find({"kind": JOURNAL_KIND}))


def test_a_forget_waiting_for_the_moves_lease_finds_the_order_the_move_published_erased(
    mongo, settings, archived, tmp_path, monkeypatch
):
    """The move holds the cold tier's lease from its first read to its last delete: a forget
    recorded after the move's last look at the record, before its rename, erases the archive,
    then waits for the lease and rewrites the files holding the person's orders. An order naming
    its client by the text of their id in a mix of cases is found by neither of those (ids are
    compared as stored: as given, in lower or in upper case), but it is theirs for the record
    (its keys ignore case), which every later write respects: a move that looks after the
    forget writes it erased. This move published it as it was and deleted the archive's copy:
    nothing looked again. The move reads the record again once its file is out."""
    import threading

    from order_archiver.operations import forget as forget_module
    from order_archiver.operations.forget import Person, forget_person
    from order_archiver.orders.erasing import CLIENT

    archive, before = archived
    month = Month.of(min(d["date_livraison"] for d in before.values()))
    moved = month.next().start - timedelta(days=1)  # well before the move's cutoff: moved
    in_month = sorted(
        (
            d
            for d in before.values()
            if Month.of(d["date_livraison"]) == month and d["date_livraison"].replace(tzinfo=UTC) < moved
        ),
        key=lambda d: d["_id"],
    )
    client = next(d["client"] for d in in_month if d["client"])
    dirty = next(d for d in in_month if d["client"] != client)
    text = str(client["id"])
    mixed = "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(text))
    assert mixed not in (text.lower(), text.upper())
    secret = "7 impasse de la Casse, Nevers"
    archive.update_one(
        {"_id": dirty["_id"]},
        {"$set": {"client": None, "source.client_id": mixed, "source.adresse_livraison": secret}},
    )
    real_writer, waiting, outcome = forget_module.cold_tier_writer, threading.Event(), []

    def lease_awaited(*args, **kwargs):
        waiting.set()  # recorded, the archive erased: now the cold tier, once the move is done
        return real_writer(*args, **kwargs)

    monkeypatch.setattr(forget_module, "cold_tier_writer", lease_awaited)

    def forget(with_cold):
        try:
            outcome.append(forget_person(mongo, with_cold, Person(CLIENT, client["id"]), run=True))
        except BaseException as exc:  # said in the main thread
            outcome.append(exc)
            waiting.set()

    forgetting = []

    def forget_meanwhile(with_cold):
        forgetting.append(threading.Thread(target=forget, args=(with_cold,), daemon=True))
        forgetting[0].start()
        assert waiting.wait(30)

    store, _ = a_move_racing_a_forget(mongo, settings, archived, tmp_path, monkeypatch, forget_meanwhile)
    forgetting[0].join(60)
    [report] = outcome
    assert not isinstance(report, BaseException), report
    assert report.erased > 0  # their other orders: erased in the archive, whose copies the file lost
    assert dirty["_id"] in cold_documents(store)
    assert secret not in every_string_in_the_cold_tier(store), "a published cold file holds their address"
    assert_one_place_each(archive, store, before)


def test_a_crash_after_publishing_a_file_a_forget_reached_too_late_is_settled_erased(
    mongo, settings, archived, tmp_path
):
    """The move is killed once its file is out, a forget recorded (and the archive erased)
    after its last look at the record: the next run, settling the move's journal entry, reads
    the record again before its deletes, as the run it settles would have; the courier's name
    does not stay in the file the delete left their order in."""
    from order_archiver.mongodb.storage import ArchiveWriter, Collections
    from order_archiver.operations.forget import Person, forget_person
    from order_archiver.orders.erasing import COURIER

    archive, before = archived
    order, courier = an_order_whose_client_was_forgotten(mongo, settings, before)
    month = Month.of(order["date_livraison"])
    cutoff = month.next().start - timedelta(hours=12)  # that month alone: one file
    respect = ArchiveWriter.of(Collections.of(mongo, settings), settings).respecting_erasures
    store = local_store(tmp_path)
    move = ColdMove(store, *collections(mongo, settings), cutoff, respect=respect)

    def forget_the_courier():  # its record and the archive (no cold settings: no lease to wait for)
        forget_person(mongo, settings, Person(COURIER, courier["id"]), run=True)

    def die():
        raise Killed

    move.before_publish, move.after_publish = forget_the_courier, die
    with pytest.raises(Killed):
        move.run()
    report = ColdMove(store, *collections(mongo, settings), cutoff, respect=respect).run()
    assert report.recovered == 1
    assert_courier_erased_in_the_cold_tier(store, order, courier)
    assert_one_place_each(archive, store, before)
    assert not list(collections(mongo, settings)[1].find({"kind": JOURNAL_KIND}))


class CutAfter:
    """The archive, its first read cut after ``n`` documents (a failover mid-month): the
    product's own resume (``scan_by_id`` and the month's (date, _id) keyset) goes on."""

    def __init__(self, archive, n):
        self.archive, self.n, self.cuts = archive, n, 0

    def __getattr__(self, name):
        return getattr(self.archive, name)

    def find(self, *args, **kwargs):
        cursor = self.archive.find(*args, **kwargs)
        if self.cuts:
            return cursor
        self.cuts += 1
        return Cut(cursor, self.n)


class Cut:
    """A cursor that loses its connection after ``n`` documents."""

    def __init__(self, cursor, n):
        self.cursor, self.n = cursor, n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cursor.close()

    def __iter__(self):
        for index, document in enumerate(self.cursor):
            if index == self.n:
                raise AutoReconnect("connection closed")
            yield document


def test_a_cut_mid_month_resumes_after_the_last_order_read_none_lost_none_twice(
    mongo, settings, archived, tmp_path
):
    archive, before = archived
    cutoff = a_cutoff(before)
    month = Month.of(min(d["date_livraison"] for d in before.values()))
    in_month = sorted(
        (d for d in before.values() if Month.of(d["date_livraison"]) == month),
        key=lambda d: d["date_livraison"],
    )
    # The month's first half delivered last, all at once: ties on the date (the _id decides),
    # and ids lower than those read before the cut (a resume on the _id alone would skip them).
    assert len(in_month) >= 20
    same = in_month[-1]["date_livraison"]
    ids = [d["_id"] for d in in_month[: len(in_month) // 2]]
    archive.update_many({"_id": {"$in": ids}}, {"$set": {"date_livraison": same}})
    fresh = {d["_id"]: d for d in archive.find()}
    store = local_store(tmp_path)
    _, journal = collections(mongo, settings)
    report = ColdMove(store, CutAfter(archive, len(in_month) // 4), journal, cutoff).run()
    assert report.moved > len(in_month)
    in_cold = assert_one_place_each(archive, store, fresh)
    assert set(in_cold) == {i for i, d in fresh.items() if d["date_livraison"].replace(tzinfo=UTC) < cutoff}


def test_the_moves_index_is_built_only_with_a_cold_tier(mongo, settings, archived, tmp_path):
    """{date_livraison, _id} serves the move's month reads; an archive without a cold tier does
    not pay for it (its disk, and a key more on every write)."""
    archive, _ = archived
    assert "date_livraison_1__id_1" not in archive.index_information()
    cold = settings.with_overrides(archive_cold_url=f"file://{tmp_path}", archive_cold_after=None)
    BatchArchiver(
        mongo, cold, BatchOptions(run=True), context=RunContext(clock=lambda: NOW), server_clock=lambda: NOW
    ).run()
    assert "date_livraison_1__id_1" in archive.index_information()


def test_an_order_corrected_while_its_month_is_moved_stays_in_one_place_its_newest_version(
    mongo, settings, archived, tmp_path
):
    """A correction archived between the file's writing and the archive's delete (watch revising
    an order: a new ``revised_at``) is not deleted (the delete matches the file's version only),
    and the file's older copy goes: the order is in one place, the archive, in its new version,
    and is moved next time."""
    archive, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    move = ColdMove(store, *collections(mongo, settings), cutoff)
    corrected = []

    def correct_one():
        if corrected:
            return
        [(_, document)] = next(iter(cold_documents(store).values()))
        archive.update_one({"_id": document["_id"]}, {"$set": {"revised_at": NOW, "montant_total": 1.0}})
        corrected.append(document["_id"])

    move.after_publish = correct_one
    report = move.run()
    assert report.kept_revised == 1
    in_cold = cold_documents(store)
    assert corrected[0] not in in_cold
    assert archive.find_one({"_id": corrected[0]})["montant_total"] == 1.0
    assert all(len(places) == 1 for places in in_cold.values())
    assert set(in_cold) | {d["_id"] for d in archive.find({}, {"_id": 1})} == set(before)
    assert not list(collections(mongo, settings)[1].find({"kind": JOURNAL_KIND}))


def test_a_crash_while_dropping_a_corrected_orders_older_copy_is_settled_by_the_next_run(
    mongo, settings, archived, tmp_path, monkeypatch
):
    """The rewrite that drops a corrected order's older copy from the new file (the order stays
    in the archive, newer) is killed before its file is published: the move's journal entry
    outlives it, and the next run finds the copy again and drops it: one place, the archive's
    newer version."""
    archive, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    move = ColdMove(store, *collections(mongo, settings), cutoff)
    corrected = []

    def correct_one():
        if not corrected:
            [(_, document)] = next(iter(cold_documents(store).values()))
            archive.update_one({"_id": document["_id"]}, {"$set": {"revised_at": NOW, "montant_total": 1.0}})
            corrected.append(document["_id"])

    real_publish = ColdStore.publish
    published = []

    def die_publishing_the_rewrite(self, partial, final):
        if published:  # the move's file is out: the next publish is the rewrite's
            raise Killed
        published.append(final)
        real_publish(self, partial, final)

    move.after_publish = correct_one
    monkeypatch.setattr(ColdStore, "publish", die_publishing_the_rewrite)
    with pytest.raises(Killed):
        move.run()
    monkeypatch.setattr(ColdStore, "publish", real_publish)
    assert corrected[0] in cold_documents(store)  # the older copy, beside the archive's newer one
    report = ColdMove(store, *collections(mongo, settings), cutoff).run()
    assert report.recovered >= 1
    in_cold = assert_one_place_each(archive, store, before)
    # In one place, in its newer version (this run moved it in turn: it is past the cutoff too).
    [(_, kept)] = in_cold[corrected[0]]
    assert kept["montant_total"] == 1.0
    assert not list(collections(mongo, settings)[1].find({"kind": JOURNAL_KIND}))


def test_one_batch_run_moves_at_a_time_the_other_leaves_the_move_to_it(mongo, settings, archived, tmp_path):
    """Two `batch --run` on two machines (a CronJob overlapping a manual run) would both write a
    month: the move takes a lease first (the watcher's, in the checkpoints collection); a run
    that finds it held moves nothing and says so."""
    from order_archiver.cold.tier import MOVE_LEASE, move_to_cold
    from order_archiver.mongodb.lease import Lease
    from order_archiver.settings import Duration

    archive, before = archived
    store = local_store(tmp_path)
    days = (datetime.now(UTC) - a_cutoff(before)).days
    with_cold = settings.with_overrides(
        archive_cold_url=store.url,
        archive_cold_after=Duration(days=days),
        watch_lease_ttl_s=2,  # how long a run waits for a lease a killed run may have left
        watch_lease_renew_s=1,
    )
    checkpoints = mongo[settings.archive_db_name][settings.checkpoint_collection]
    other = Lease(checkpoints, MOVE_LEASE, ttl_s=60, renew_s=20, owner="another-machine")
    assert other.try_acquire()
    try:
        report = move_to_cold(mongo, with_cold, RunContext())
    finally:
        other.release()
    assert report is not None
    assert (report.skipped, report.moved) == (True, 0)
    assert store.files() == []
    assert archive.count_documents({}) == len(before)
    assert "another batch run" in report.line()
    after = move_to_cold(mongo, with_cold, RunContext())  # released: this run moves
    assert after is not None
    assert after.moved > 0
    assert_one_place_each(archive, store, before)


def test_a_move_that_lost_its_lease_publishes_nothing_and_leaves_the_archive_whole(
    mongo, settings, archived, tmp_path
):
    """A run stalled past its lease's life (another run took it) is fenced before it publishes:
    its checked file is dropped, its journal entry removed, the archive untouched."""
    from pyarrow.fs import FileSelector, FileType

    from order_archiver.mongodb.lease import LeaseLost

    archive, before = archived
    store = local_store(tmp_path)
    move = ColdMove(store, *collections(mongo, settings), a_cutoff(before))

    def lost():
        raise LeaseLost("lease lease:cold-tier/move lost (term 1)")

    move.fence = lost
    with pytest.raises(LeaseLost):
        move.run()
    assert store.files() == []
    left = store.fs.get_file_info(FileSelector(store.root, recursive=True))
    assert [info.path for info in left if info.type == FileType.File] == []  # no partial file either
    assert archive.count_documents({}) == len(before)
    assert not list(collections(mongo, settings)[1].find({"kind": JOURNAL_KIND}))


@pytest.mark.parametrize("scheme", ["S3", "FILE", "File"])
def test_a_schemes_case_does_not_matter(scheme, tmp_path):
    """A URL's scheme is case-insensitive (RFC 3986): S3://b/p is s3://b/p (a new user's try
    crashed on it with an unexpected ArrowInvalid)."""
    where = f"{scheme}://{tmp_path}" if scheme != "S3" else "S3://bucket/orders"
    settings, _ = load_settings(
        environ={"MONGODB_URI": "mongodb://h", "ARCHIVE_COLD_URL": where, "ARCHIVE_COLD_AFTER": "730d"}
    )
    assert settings.archive_cold_url == where.replace(scheme, scheme.lower(), 1)
    if scheme != "S3":
        ColdStore(settings.archive_cold_url).check()


def test_a_cold_url_the_store_cannot_open_is_a_configuration_error_not_a_crash():
    with pytest.raises(ConfigError, match=r"ARCHIVE_COLD_URL gopher://x: cannot be reached"):
        ColdStore("gopher://x")


def test_status_is_unhealthy_when_the_cold_tiers_place_is_gone(mongo, settings, archived, tmp_path):
    """A new user's try: with ARCHIVE_COLD_URL at a folder that is not there, status said
    "healthy" and "0 files"."""
    from order_archiver.operations.status import collect_status

    gone = settings.with_overrides(
        archive_cold_url=f"file://{tmp_path}/not-there", archive_cold_after=settings.purge_after
    )
    report = collect_status(mongo, gone, now=NOW)
    assert not report.healthy
    assert f"ARCHIVE_COLD_URL file://{tmp_path}/not-there: no such folder" in report.lines()[-1]


def test_verify_refuses_a_cold_tier_whose_place_is_gone(mongo, settings, archived, tmp_path):
    """A new user's try: verify said "cold tier: 0 orders in 0 files" and "consistent"."""
    from order_archiver.operations.verify import verify

    gone = settings.with_overrides(
        archive_cold_url=f"file://{tmp_path}/not-there", archive_cold_after=settings.purge_after
    )
    with pytest.raises(ConfigError, match="no such folder"):
        verify(mongo, gone)


def moved_and_kept(mongo, settings, archived, tmp_path):
    """The archive's older months moved to a cold folder: the settings that name it, an order
    moved there and one still in the archive."""
    _, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    moved = next(d for d in before.values() if d["date_livraison"].replace(tzinfo=UTC) < cutoff)
    kept = next(d for d in before.values() if d["date_livraison"].replace(tzinfo=UTC) >= cutoff)
    return with_cold, moved, kept


def test_find_and_restore_refuse_a_cold_tier_that_is_not_there(mongo, settings, archived, tmp_path):
    """A new user's try: the cold folder renamed, `find --numero` said "not found anywhere" and
    `restore` "not found among the archived orders" (exit 3) for a moved order, where doctor,
    status and verify named the missing place. Now both refuse, exit 2, naming it, and restore
    restores nothing (its check comes before any insert)."""
    from order_archiver.errors import ConfigError
    from order_archiver.operations.find import FindSelection, find_orders
    from order_archiver.operations.restore import RestoreSelection, restore

    with_cold, moved, kept = moved_and_kept(mongo, settings, archived, tmp_path)
    (tmp_path / "cold").rename(tmp_path / "cold-lost")
    with pytest.raises(ConfigError, match="no such folder"):
        find_orders(mongo, with_cold, FindSelection((moved["numero_commande"],)))
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    orders.delete_one({"_id": kept["_id"]})  # archived, not in the source: restore would insert it
    with pytest.raises(ConfigError, match="no such folder"):
        restore(mongo, with_cold, RestoreSelection((kept["numero_commande"],)), run=True, confirmed=True)
    assert orders.find_one({"_id": kept["_id"]}) is None


def test_find_names_the_archived_number_a_lower_case_one_differs_from(mongo, settings, archived, tmp_path):
    """A new user's try: `find --numero cmd-000551` said "not found anywhere" with no hint, where
    `restore` names "CMD-000551 is archived, in the cold tier: numbers match exactly". find
    says it too, for an order in the archive and for one moved to the cold tier."""
    from order_archiver.operations.find import FindSelection, find_orders

    with_cold, moved, kept = moved_and_kept(mongo, settings, archived, tmp_path)
    asked = (moved["numero_commande"].lower(), kept["numero_commande"].lower(), "cmd-999999")
    report = find_orders(mongo, with_cold, FindSelection(asked))
    assert report.lines()[-1] == (
        f"not found anywhere (exit 3): {asked[0]} ({moved['numero_commande']} is archived, in the cold "
        f"tier: numbers match exactly), {asked[1]} ({kept['numero_commande']} is archived: numbers "
        "match exactly), cmd-999999"
    )
    assert not report.complete


def killed_after_publishing_the_oldest_month(mongo, settings, archived, tmp_path):
    """A move (the record respected, as ``tier.move_to_cold`` builds it) of the archive's oldest
    month killed once its file is out (its journal entry says "published"), before its deletes:
    the file's orders in the file and in the archive. The store, the cutoff, the published file,
    the order-making ``respect``."""
    from order_archiver.mongodb.storage import ArchiveWriter, Collections

    _, before = archived
    month = Month.of(min(d["date_livraison"] for d in before.values()))
    cutoff = month.next().start - timedelta(hours=12)  # that month alone: one file
    respect = ArchiveWriter.of(Collections.of(mongo, settings), settings).respecting_erasures
    store = local_store(tmp_path)
    move = ColdMove(store, *collections(mongo, settings), cutoff, respect=respect)

    def die():
        raise Killed

    move.after_publish = die
    with pytest.raises(Killed):
        move.run()
    [published] = store.files()
    journal = list(collections(mongo, settings)[1].find({"kind": JOURNAL_KIND}))
    assert [(entry["state"], entry["final"]) for entry in journal] == [("published", published.path)]
    return store, cutoff, published, respect


def test_a_forget_after_a_move_killed_past_its_rename_settles_the_move_first_each_order_in_one_place(
    mongo, settings, archived, tmp_path
):
    """The review: a move killed after its rename (file out, journal "published") and before its
    deletes, then ``forget --run`` before the next batch. The forget rewrote that file under a
    new name and removed the old one; the next run's settle found the move's file gone and
    dropped its entry, the archive still held the orders, and the move wrote them again: each in
    two cold files. forget now settles the interrupted move first, once it holds the cold tier's
    lease (the move's own settle): the orders leave the archive, then the file is erased."""
    from order_archiver.operations.forget import Person, forget_person
    from order_archiver.orders.erasing import CLIENT

    archive, before = archived
    store, cutoff, published, respect = killed_after_publishing_the_oldest_month(
        mongo, settings, archived, tmp_path
    )
    in_file = cold_documents(store)
    client = next(document["client"] for [(_, document)] in in_file.values() if document["client"])
    theirs = {i for i, d in before.items() if (d["client"] or {}).get("id") == client["id"]}
    assert theirs & set(in_file)
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    forget_person(mongo, with_cold, Person(CLIENT, client["id"]), run=True)
    assert not list(collections(mongo, settings)[1].find({"kind": JOURNAL_KIND}))
    assert_one_place_each(archive, store, before)  # the move settled: its orders out of the archive
    assert not store.exists(published.path)  # the file rewritten, erased
    ColdMove(store, *collections(mongo, settings), cutoff, respect=respect).run()
    in_cold = assert_one_place_each(archive, store, before)
    assert set(in_file) - theirs <= set(in_cold)
    assert client["email"] not in every_string_in_the_cold_tier(store)
    assert not list(archive.find({"client.email": client["email"]}))
    for order_id in theirs & set(in_cold):
        [(_, document)] = in_cold[order_id]
        assert document["forgotten_by"] == "forget"


def test_a_forget_settling_an_interrupted_move_says_it_kept_its_own_erasure_not_a_correction(
    mongo, settings, archived, tmp_path, caplog
):
    """A new user's try: a forget run while a stopped move was unsettled said "rewritten without 1
    order corrected meanwhile": nothing had been corrected. What happened: the forget erased
    the archive's copy of the client's order (its ``source_hash`` changed), so its settle of the
    move could not delete that copy in the file's version, kept it in the archive (erased) and
    dropped the file's unerased copy (one place, no personal data left; the next move takes it).
    The data's fate was right, the words were not: the line now says the order was erased by a
    forget meanwhile, and the move's report counts it apart (``kept_erased``), not as corrected."""
    import logging

    from order_archiver.cold.move import ColdMoveReport
    from order_archiver.operations.forget import Person, forget_person
    from order_archiver.orders.erasing import CLIENT

    archive, before = archived
    store, _cutoff, _published, _respect = killed_after_publishing_the_oldest_month(
        mongo, settings, archived, tmp_path
    )
    in_file = cold_documents(store)
    client = next(document["client"] for [(_, document)] in in_file.values() if document["client"])
    theirs = {i for i, d in before.items() if (d["client"] or {}).get("id") == client["id"]} & set(in_file)
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    caplog.set_level(logging.INFO, logger="order_archiver")
    forget_person(mongo, with_cold, Person(CLIENT, client["id"]), run=True)
    said = [r.getMessage() for r in caplog.records if "rewritten without" in r.getMessage()]
    assert said
    assert all("corrected" not in line for line in said), said
    assert any(
        f"{plural(len(theirs), 'order')} erased in the archive meanwhile by a forget" in line for line in said
    )
    # The data: the client's orders of that file in the archive alone, erased; no cold copy of theirs.
    kept = list(archive.find({"_id": {"$in": list(theirs)}}))
    assert len(kept) == len(theirs)
    assert all(d["forgotten_by"] == "forget" for d in kept)
    assert not theirs & set(cold_documents(store))
    assert client["email"] not in every_string_in_the_cold_tier(store)
    assert_one_place_each(archive, store, before)
    # A batch settling the same way counts them apart from the corrections.
    report = ColdMoveReport(kept_revised=3)
    report.kept_by({"erased": 2, "corrected": 1})
    assert (report.kept_revised, report.kept_erased) == (1, 2)
    assert "2 erased by a forget meanwhile, kept in the archive (erased)" in (report.line() or "")


def test_no_rewrite_replaces_a_moves_file_before_its_deletes_the_settle_finds_it_where_it_left_it(
    mongo, settings, archived, tmp_path
):
    """The other side of the settle: a rewrite of a move's file (``ColdRewrite``: forget's, or
    retention's) by a writer that did not settle the move first, as a move still running after
    it lost its lease meets it, left the move's entry naming a file gone, which the settle took
    for "never published" with the orders still in the archive. A rewrite now refuses a move's
    file until the move has deleted its orders from the archive (its entry says "deleted")."""
    from order_archiver.cold.rewrite import ColdRewrite
    from order_archiver.errors import FatalError
    from order_archiver.orders.erasing import BY_REQUEST, Erasure

    archive, before = archived
    store, cutoff, published, respect = killed_after_publishing_the_oldest_month(
        mongo, settings, archived, tmp_path
    )
    in_file = cold_documents(store)
    erasure = Erasure(client=True, courier=False, by=BY_REQUEST, at=NOW)
    rewrite = ColdRewrite(store, collections(mongo, settings)[1], RunContext())
    with pytest.raises(FatalError, match="run batch --run"):
        rewrite.rewrite(published, {str(next(iter(in_file)))}, erasure)
    assert [f.path for f in store.files()] == [published.path]
    assert cold_documents(store) == in_file  # untouched
    report = ColdMove(store, *collections(mongo, settings), cutoff, respect=respect).run()
    assert report.recovered == 1
    in_cold = assert_one_place_each(archive, store, before)
    assert set(in_file) <= set(in_cold)
    # Once the move is done, its files are anyone's to rewrite (under the lease).
    [now] = [f for f in store.files() if f.month == published.month]
    rewrite.rewrite(now, {str(next(iter(in_file)))}, erasure)
    assert_one_place_each(archive, store, before)


def test_an_order_restored_while_its_month_is_moved_stays_held_from_the_purge(
    mongo, settings, archived, tmp_path
):
    """A restore between the move's read of a month and its deletes marks the archive document
    (``restored_at``, RESTORE_HOLD) after the file took its copy: the move's delete, in the
    file's version (``revised_at``, ``source_hash``), took that document all the same, mark and
    all, and the next purge found the restored order in the cold file, in that very version,
    with no mark: deleted from the source again at once. The delete now asks for the file's
    ``restored_at`` too: the marked document stays in the archive (moved next time, its mark in
    its copy) and the file's copy goes, as for a correction."""
    from order_archiver.operations.restore import RestoreSelection, restore
    from order_archiver.settings import Duration

    archive, before = archived
    cold_after = Duration(days=10)
    cutoff = NOW - cold_after
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    chosen = next(
        i
        for i, d in sorted(before.items(), key=lambda item: str(item[0]))
        if as_utc(d["date_livraison"]) < cutoff
    )
    orders.delete_one({"_id": chosen})  # purged earlier
    numero = before[chosen]["numero_commande"]
    restored = []

    def restore_meanwhile():
        if not restored:
            restored.append(restore(mongo, settings, RestoreSelection((numero,)), run=True).restored)

    store = local_store(tmp_path)
    move = ColdMove(store, *collections(mongo, settings), cutoff)
    move.before_publish = restore_meanwhile
    move.run()
    assert restored == [1]
    kept = archive.find_one({"_id": chosen}, {"restored_at": 1})
    assert kept is not None, "the move deleted the archive document a restore had just marked"
    assert kept["restored_at"] is not None  # kept, marked
    assert chosen not in cold_documents(store)  # one place: the archive

    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=cold_after)
    purge_run(mongo, with_cold)
    assert orders.count_documents({"_id": chosen}) == 1  # held by RESTORE_HOLD (30d)


def dirty_orders_moved(mongo, settings, tmp_path, values):
    """120 orders seeded, the two first delivered given ``values[0]`` and ``values[1]`` (``{field:
    value}``, fields beyond the contract), archived, then the archive's older months moved to a
    local cold folder. The two orders' original source documents by id, the archive before the
    move by id, the store, ARCHIVE_COLD_AFTER and the move's report."""
    from order_archiver.settings import Duration

    seed_database(mongo[settings.mongodb_database], settings, 120, p_anomalies=0.0)
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    delivered = sorted(orders.find({"status": settings.delivered_status}), key=lambda d: d["date_livraison"])
    for order, fields in zip(delivered[:2], values, strict=True):
        orders.update_one({"_id": order["_id"]}, {"$set": fields})
    originals = {order["_id"]: orders.find_one({"_id": order["_id"]}) for order in delivered[:2]}
    archive_all(mongo, settings)
    archive, checkpoints = collections(mongo, settings)
    before = {d["_id"]: d for d in archive.find()}
    assert set(originals) <= set(before)
    store = local_store(tmp_path)
    cold_after = Duration(days=(datetime.now(UTC) - a_cutoff(before)).days)
    report = ColdMove(store, archive, checkpoints, datetime.now(UTC) - cold_after).run()
    return originals, before, store, cold_after, report


def test_an_order_holding_a_date_out_of_pythons_range_moves_and_comes_back_byte_for_byte(
    mongo, settings, tmp_path
):
    """Dirty data: a date before year 1 or after 9999 in a field beyond the contract (the client
    decodes it as ``DatetimeMS``, guarantees.md) is archived as it is. Its cold file's document,
    canonical Extended JSON, read back with pymongo's default ``DATETIME`` conversion raised
    InvalidBSON: the move's own read-back failed on that month at every run (nothing moved past
    it), and a file holding one could be neither found, restored nor verified. Read back as the
    client decodes BSON (``DATETIME_AUTO``), it moves, is found, and is restored exactly."""
    from bson.datetime_ms import DatetimeMS

    from order_archiver.operations.find import FindSelection, find_orders
    from order_archiver.operations.restore import RestoreSelection, restore
    from order_archiver.operations.verify import verify

    years = (DatetimeMS(-62135596800001), DatetimeMS(253402300800000))  # year 0, year 10000
    originals, before, store, cold_after, report = dirty_orders_moved(
        mongo, settings, tmp_path, [{"garantie": {"fin": year}} for year in years]
    )
    dirty = list(originals)
    assert all(isinstance(d["garantie"]["fin"], DatetimeMS) for d in originals.values())
    archive, _ = collections(mongo, settings)
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    in_cold = assert_one_place_each(archive, store, before)
    assert set(dirty) <= set(in_cold)
    assert report.moved == len(in_cold)
    for order_id in dirty:
        [(_, document)] = in_cold[order_id]
        assert bson.encode(document) == bson.encode(before[order_id])

    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=cold_after)
    numeros = tuple(d["numero_commande"] for d in originals.values())
    found = find_orders(mongo, with_cold, FindSelection(numeros))
    assert {str(order_id) for order_id in dirty} <= set(found.orders)
    assert verify(mongo, with_cold).consistent
    orders.delete_many({"_id": {"$in": list(dirty)}})  # purged long ago
    restored = restore(mongo, with_cold, RestoreSelection(numeros), run=True)
    assert (restored.restored, restored.complete) == (2, True)
    for order_id, original in originals.items():
        assert bson.encode(orders.find_one({"_id": order_id})) == bson.encode(original)


def test_an_order_a_cold_file_cannot_give_back_as_it_is_stays_in_the_archive(mongo, settings, tmp_path):
    """MongoDB 5.0+ stores field names that begin with "$" at any depth, and an import that
    wrote Extended JSON as it was leaves ``{"paye_le": {"$date": "..."}}`` as a document. A cold
    file's document column is canonical Extended JSON, which reads that back as a date (and
    ``{"$oid": ...}`` as an ObjectId): the move's check compared the text, deleted the archive's
    copy, and restore would have put back another type; ``{"$oid": "pas hexa"}`` failed the
    move's read-back at every run. An order whose document does not come back from the text
    BSON-exact is not moved: it stays in the archive (one place), said in the report."""
    literal = ({"$date": "2024-01-01T00:00:00Z"}, {"$oid": "pas hexa"})
    originals, before, store, _, report = dirty_orders_moved(
        mongo, settings, tmp_path, [{"import": {"paye_le": value}} for value in literal]
    )
    literal = dict.fromkeys(originals)
    archive, _ = collections(mongo, settings)
    in_cold = assert_one_place_each(archive, store, before)
    assert in_cold
    assert not set(literal) & set(in_cold)
    for order_id in literal:
        assert bson.encode(archive.find_one({"_id": order_id})) == bson.encode(before[order_id])
    assert report.kept_not_representable == len(literal)
    assert "2 kept in the archive (not representable in a cold file)" in report.line()
    for _, [(_, document)] in in_cold.items():
        assert bson.encode(document) == bson.encode(before[document["_id"]])


@pytest.mark.parametrize("run", [["--run"], []], ids=["run", "dry run"])
def test_a_run_with_nothing_due_in_the_cold_tier_says_nothing_of_it(run, tmp_path, monkeypatch, capsys):
    """A new user's try: "cold tier: 0 orders moved into 0 files" on every run, nothing being
    due (and "would move 0 archived orders" in a dry run). Nothing due: no line in the summary,
    one at INFO in the log; --json keeps every field (the contract never drops a named one).
    Something due: the line, as before."""
    import json

    from order_archiver.cli.main import main

    monkeypatch.setenv("ARCHIVE_COLD_URL", f"file://{tmp_path}")
    monkeypatch.setenv("ARCHIVE_COLD_AFTER", "20000d")  # 55 years: nothing is due
    simulated = ["batch", "--simulation", "--count", "100", *run]
    main(simulated)
    out, log = capsys.readouterr()
    assert "cold tier" not in out
    [said] = [line for line in log.splitlines() if "cold tier" in line]
    assert said.split()[1:4] == ["INFO", "cold", "tier:"]
    assert "nothing due (no archived order delivered more than ARCHIVE_COLD_AFTER 20000d ago)" in said
    main([*simulated, "--json"])
    fields = json.loads(capsys.readouterr().out)["cold"]
    assert set(fields) >= {"files", "moved", "bytes", "months", "would_move", "skipped"}
    assert (fields["moved"], fields["files"]) == (0, 0) if run else fields["would_move"] == 0
    # Something done, or due: said, as before.
    from order_archiver.cold.move import ColdMoveReport

    assert ColdMoveReport(moved=3, files=1, months=["2025-01"]).line() == (
        "cold tier: 3 orders moved into 1 file (2025-01)"
    )
    assert ColdMoveReport(would_move=2).line() == "cold tier: would move 2 archived orders (dry run)"
    # An interrupted move settled says what happened (a new user read "724 orders moved into 0
    # files; 1 interrupted move settled"): its orders left the archive, their file published earlier.
    assert ColdMoveReport(recovered=1).line() == "cold tier: 1 interrupted move settled"
    assert ColdMoveReport(recovered=1, moved=724, settled=724).line() == (
        "cold tier: 1 interrupted move settled: 724 orders left the archive, their file published "
        "by an earlier run"
    )
    assert ColdMoveReport(recovered=1, moved=730, settled=724, files=1, months=["2025-02"]).line() == (
        "cold tier: 6 orders moved into 1 file (2025-02); 1 interrupted move settled: 724 orders "
        "left the archive, their file published by an earlier run"
    )
    assert ColdMoveReport(skipped=True).line() is not None
    assert ColdMoveReport().line() is ColdMoveReport(would_move=0).line() is None


def test_forget_first_line_counts_the_cold_tiers_orders(mongo, settings, archived, tmp_path):
    """A new user's try: `forget --client X` (dry run) opened with "client X: no archived order"
    while the cold tier held 12 of theirs (said on the next line). The first line says the
    archive collection has none and the cold tier has N; with orders in both, it counts both."""
    from order_archiver.operations.forget import Person, forget_person

    _, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    by_client: dict[object, list[bool]] = {}
    for d in before.values():
        if d["client"]:
            by_client.setdefault(d["client"]["id"], []).append(
                d["date_livraison"].replace(tzinfo=UTC) < cutoff
            )
    only_cold = next(c for c, cold in by_client.items() if all(cold))
    both = next(c for c, cold in by_client.items() if any(cold) and not all(cold))

    report = forget_person(mongo, with_cold, Person("client", only_cold), run=False)
    n = sum(by_client[only_cold])
    assert (report.orders, report.cold.orders) == (0, n)
    first, cold_line = report.lines()
    assert first == f"client {only_cold}: no order in the archive collection, {n} in the cold tier"
    assert cold_line.startswith(f"cold tier: {n} of their orders in ")

    report = forget_person(mongo, with_cold, Person("client", both), run=False)
    in_cold = sum(by_client[both])
    in_archive = len(by_client[both]) - in_cold
    assert report.lines()[0].startswith(
        f"client {both}: {in_archive} archived order{'s' if in_archive > 1 else ''} in the archive "
        f"collection and {in_cold} in the cold tier; would erase (dry run: --run to erase) the name"
    )
    assert report.lines()[0].endswith(f"of {report.erased} there")


def test_a_forget_dry_run_counts_only_the_files_it_would_rewrite(mongo, settings, archived, tmp_path):
    from order_archiver.cold.erasure import erase_in_cold
    from order_archiver.cold.search import ColdQuery
    from order_archiver.operations.forget import Person, forget_person

    _, before = archived
    store = local_store(tmp_path)
    cutoff = a_cutoff(before)
    ColdMove(store, *collections(mongo, settings), cutoff).run()
    client = a_client_in_the_cold_tier(before, cutoff)
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    person = Person("client", client["id"])
    dry = forget_person(mongo, with_cold, person, run=False)
    if dry.cold.files < 2:
        pytest.skip("the client's cold orders are in one file")

    class FirstFileOnly(ColdStore):  # the same store, one of its files already rewritten
        def files(self, *args, **kwargs):
            return [f for f in super().files(*args, **kwargs) if erase_in_cold is not None][:1]

    first = FirstFileOnly(store.url)
    query = ColdQuery(client_id=person.forms)
    erase_in_cold(
        first,
        collections(mongo, settings)[1],
        query,
        person.erasure(with_cold),
        run=True,
        context=RunContext(),
    )
    dry = forget_person(mongo, with_cold, person, run=False)
    done = forget_person(mongo, with_cold, person, run=True)
    assert dry.lines()[-1].endswith(
        f"would rewrite the {plural(done.cold.rewritten, 'file')} holding them (dry run: nothing written)"
    ), (dry.lines()[-1], done.cold.rewritten)


def test_a_stop_ends_the_cold_tiers_start_check_at_once(tmp_path, monkeypatch):
    """A storage fault that lasts (S3's 503 SlowDown, a local EIO) is retried a minute in all
    (``Retry.STORAGE``); a Ctrl-C or SIGTERM ends that wait at once, as every wait of a run. The
    start check of ``batch`` (and doctor's, restore's, the numbers' hints) made its store without
    the run's stop: a Ctrl-C left it retrying, and the watchdog said "the server does not answer"
    8 s later (a review). The run stopped before it: one request, not the policy's three."""
    import errno
    import threading

    from order_archiver import retry
    from order_archiver.cold import tier
    from order_archiver.context import RunContext
    from order_archiver.errors import TransientError
    from order_archiver.settings import Settings

    asked: list[str] = []

    class Unanswering:  # a storage whose every request fails as a transient fault does
        type_name = "local"

        def get_file_info(self, path):
            asked.append(path)
            raise OSError(errno.EIO, "Input/output error", path)

    class Store(tier.ColdStore):
        def __init__(self, url, stop=None):
            super().__init__(url, Unanswering(), str(tmp_path), stop)

    monkeypatch.setattr(tier, "ColdStore", Store)
    monkeypatch.setattr(retry.Retry, "STORAGE", retry.Purpose(3, 0.01, 0.01))
    settings = Settings(simulation=True, log_dir="", archive_cold_url=f"file://{tmp_path}")
    stop = threading.Event()
    stop.set()
    with pytest.raises(TransientError):
        tier.check_cold_tier(settings, RunContext(stop=stop))
    assert len(asked) == 1
    with pytest.raises(TransientError):
        tier.check_cold_tier(settings, RunContext())  # not stopped: the policy's three
    assert len(asked) == 4


def cold_past_and_holding(before, moved_before, since, until, erasure):
    """The ids of the moved orders delivered from ``since`` (None: the first) to ``until`` that
    hold personal data the erasure removes, from the archive's documents as they were."""
    return {
        str(order_id)
        for order_id, document in before.items()
        if as_utc(document["date_livraison"]) < moved_before
        and (since is None or as_utc(document["date_livraison"]) >= since)
        and as_utc(document["date_livraison"]) < until
        and erasure.holds(document)
    }


def test_the_count_of_cold_orders_past_archive_pii_retention_is_what_the_run_erases_and_reads_only_whats_due(
    mongo, settings, archived, tmp_path, monkeypatch
):
    """status, doctor and the dry run said no order past ARCHIVE_PII_RETENTION held personal
    data while the cold files held some, which batch --run then erased. ``count_by_age`` counts
    what ``erase_by_age`` erases, by its reads: a file erased to a cutoff (its footer and its entry
    in the list of files say so) is not opened again, and of the month the cutoff crosses only the
    rows delivered since the last cutoff are decoded (row groups chosen by their statistics)."""
    from order_archiver.cold import retention
    from order_archiver.cold.manifest import ColdManifest
    from order_archiver.cold.retention import count_by_age, erase_by_age
    from order_archiver.orders.erasing import BY_AGE, Erasure

    _, before = archived
    monkeypatch.setattr(files, "ROW_GROUP_ROWS", 7)  # many row groups a month
    store = local_store(tmp_path)
    moved_before = a_cutoff(before).replace(tzinfo=UTC)
    archive, journal = collections(mongo, settings)
    ColdMove(store, archive, journal, moved_before).run()
    last_month = max((f.month for f in store.files()), key=lambda m: (m.year, m.month))
    first_cutoff = last_month.start + (moved_before - last_month.start) / 3
    second_cutoff = last_month.start + 2 * (moved_before - last_month.start) / 3
    erasure = Erasure(client=True, courier=True, by=BY_AGE, at=NOW)

    def stamps():
        return {
            entry.path: entry.erased_before for entry in ColdManifest(store, journal, RunContext()).entries()
        }

    first = cold_past_and_holding(before, moved_before, None, first_cutoff, erasure)
    counted = count_by_age(store, store.files(), stamps(), first_cutoff, erasure)
    assert (counted.orders, counted.unread) == (len(first), 0)
    assert first
    assert erase_by_age(store, journal, first_cutoff, erasure, RunContext()).orders == len(first)
    assert count_by_age(store, store.files(), stamps(), first_cutoff, erasure).orders == 0

    # A list of files written by an earlier version (no cutoffs in it): the run records them, once.
    journal.update_many({"kind": "cold-file"}, {"$unset": {"pii_erased_before": ""}})
    assert erase_by_age(store, journal, first_cutoff, erasure, RunContext()).orders == 0
    assert all("pii_erased_before" in entry for entry in journal.find({"kind": "cold-file"}))

    opened, decoded = [], []
    real_open, real_document_of = files._open, retention.document_of
    monkeypatch.setattr(files, "_open", lambda s, path: opened.append(path) or real_open(s, path))
    monkeypatch.setattr(retention, "document_of", lambda text: decoded.append(1) or real_document_of(text))
    second = cold_past_and_holding(before, moved_before, first_cutoff, second_cutoff, erasure)
    counted = count_by_age(store, store.files(), stamps(), second_cutoff, erasure)
    assert counted.orders == len(second)
    assert second
    crossing = {f.path for f in store.files() if f.month == last_month}
    assert set(opened) <= crossing  # the months erased to the first cutoff: not a footer read
    between = [
        d
        for d in before.values()
        if first_cutoff <= as_utc(d["date_livraison"]) < second_cutoff
        and as_utc(d["date_livraison"]) < moved_before
    ]
    assert len(decoded) == len(between)  # only the rows delivered since the last cutoff
    assert erase_by_age(store, journal, second_cutoff, erasure, RunContext()).orders == counted.orders


def test_status_counts_the_cold_orders_past_archive_pii_retention_beside_the_archives_and_bounds_its_reads(
    mongo, settings, archived, tmp_path, monkeypatch
):
    """status said "none past it holds any" while cold files held personal data past
    ARCHIVE_PII_RETENTION. It counts them beside the archive's figure; a probe reads a bounded
    number of rows (``PII_COUNTED_ROWS_AT_MOST``), and past it says "at most", with the rest."""
    from order_archiver.cold import tier
    from order_archiver.operations.status import collect_status
    from order_archiver.orders.erasing import BY_AGE, Erasure
    from order_archiver.settings import Duration

    _, before = archived
    monkeypatch.setattr(files, "ROW_GROUP_ROWS", 7)
    store = local_store(tmp_path)
    moved_before = a_cutoff(before).replace(tzinfo=UTC)
    ColdMove(store, *collections(mongo, settings), moved_before).run()
    retention = Duration(seconds=round((NOW - moved_before).total_seconds()) + 86_400 * 10)
    with_cold = settings.with_overrides(
        archive_cold_url=store.url, archive_cold_after=settings.purge_after, archive_pii_retention=retention
    )
    erasure = Erasure(client=True, courier=True, by=BY_AGE, at=NOW, fields=with_cold.pii_policy.fields)
    held = cold_past_and_holding(before, moved_before, None, NOW - retention, erasure)
    assert held

    report = collect_status(mongo, with_cold, now=NOW)
    assert (report.cold_pii_retention_pending, report.cold_pii_retention_unread) == (len(held), 0)
    assert report.as_dict()["cold_pii_retention_pending"] == len(held)
    line = next(line for line in report.lines() if "ARCHIVE_PII_RETENTION" in line)
    assert f"cold tier: {len(held)} orders past it still hold it" in line

    monkeypatch.setattr(tier, "PII_COUNTED_ROWS_AT_MOST", 7)  # one row group read
    bounded = collect_status(mongo, with_cold, now=NOW)
    pending, unread = bounded.cold_pii_retention_pending, bounded.cold_pii_retention_unread
    assert unread
    assert pending <= len(held) <= pending + unread
    line = next(line for line in bounded.lines() if "ARCHIVE_PII_RETENTION" in line)
    assert f"at least {pending}, at most {pending + unread} orders" in line
    assert collect_status(mongo, settings, now=NOW).cold_pii_retention_pending is None


def test_batchs_look_for_gone_cold_files_is_bounded_and_goes_round_the_whole_list(
    tmp_path, mongo, monkeypatch
):
    """`batch --run` checks at most SPOT_FILES published files a run (cold/spot_check.py), after
    the one where the last run stopped, and wraps round: 45 files gone are named 20, 20, 5 in
    three runs, and the fourth starts again at the first; each file is checked (``exists``) once
    a run, never the whole list. (At the wire: tests/e2e/test_cold_tier_e2e.py.)"""
    from order_archiver.cold.manifest import ColdManifest
    from order_archiver.cold.spot_check import SPOT_FILES, spot_check

    (tmp_path / "cold").mkdir()
    store = ColdStore(f"file://{tmp_path / 'cold'}")
    checkpoints = mongo["livraison"]["archiver_checkpoints"]
    manifest = ColdManifest(store, checkpoints, RunContext())
    paths = [f"{store.root}/year=2024/month=01/part-{n:03d}.parquet" for n in range(45)]
    for path in paths:
        manifest.add(path, rows=2)
    asked: list[str] = []
    original = ColdStore.exists

    def exists(self, path):
        asked.append(path)
        return original(self, path)

    monkeypatch.setattr(ColdStore, "exists", exists)
    runs = [spot_check(store, manifest, checkpoints, RunContext()) for _ in range(4)]
    assert [len(run.files) for run in runs] == [SPOT_FILES, SPOT_FILES, 5, SPOT_FILES] == [20, 20, 5, 20]
    assert [f for run in runs[:3] for f in run.files] == [store.url_of(p) for p in paths]
    assert runs[3].files == runs[0].files
    assert (runs[2].orders, len(asked)) == (10, 65)


def test_status_counting_cold_personal_data_meets_files_a_concurrent_rewrite_replaced(
    mongo, settings, archived, tmp_path, monkeypatch
):
    """status lists the place, then opens the files not yet erased to ARCHIVE_PII_RETENTION's
    cutoff: the very files a batch --run at work erases, each replaced by a rewrite (new file
    published, old one removed). A file gone between the listing and its read failed the whole
    probe ("ARCHIVE_COLD_URL ...: cannot be read: ... Failed to open local file", exit 1) at
    each such race. A file replaced since the listing is not counted (its replacement is the
    next probe's); the rest of status stands."""
    from order_archiver.cold import tier
    from order_archiver.cold.retention import erase_by_age
    from order_archiver.operations.status import collect_status
    from order_archiver.orders.erasing import BY_AGE, Erasure
    from order_archiver.settings import Duration

    _, before = archived
    store = local_store(tmp_path)
    moved_before = a_cutoff(before).replace(tzinfo=UTC)
    archive, journal = collections(mongo, settings)
    ColdMove(store, archive, journal, moved_before).run()
    retention = Duration(seconds=round((NOW - moved_before).total_seconds()) + 86_400 * 10)
    with_cold = settings.with_overrides(
        archive_cold_url=store.url, archive_cold_after=settings.purge_after, archive_pii_retention=retention
    )
    erasure = Erasure(client=True, courier=True, by=BY_AGE, at=NOW, fields=with_cold.pii_policy.fields)
    assert cold_past_and_holding(before, moved_before, None, NOW - retention, erasure)
    real_listing = tier.listing

    def listed_then_rewritten(place):
        found = real_listing(place)  # status's listing; then a batch run's erasure replaces files
        erase_by_age(store, journal, NOW - retention, erasure, RunContext())
        return found

    monkeypatch.setattr(tier, "listing", listed_then_rewritten)
    monkeypatch.setattr("order_archiver.operations.status.listing", listed_then_rewritten)
    report = collect_status(mongo, with_cold, now=NOW)
    assert report.cold_pii_retention_pending == 0
    assert not any("cannot be read" in problem for problem in report.problems)


def test_status_with_a_damaged_cold_file_still_reports_everything_and_names_the_file(
    mongo, settings, archived, tmp_path
):
    """A probe reads the cold files not yet erased to ARCHIVE_PII_RETENTION's cutoff to count
    their orders; one of them damaged (a bad copy, a truncated upload) made the whole status fail
    ("ARCHIVE_COLD_URL ...: cannot be read", exit 1: no backlog, no watchers said), where before
    that count a probe opened no cold file. The count is given up and said as a problem
    (unhealthy, exit 3); the rest of status stands."""
    from order_archiver.operations.status import collect_status
    from order_archiver.settings import Duration

    _, before = archived
    store = local_store(tmp_path)
    moved_before = a_cutoff(before).replace(tzinfo=UTC)
    ColdMove(store, *collections(mongo, settings), moved_before).run()
    retention = Duration(seconds=round((NOW - moved_before).total_seconds()) + 86_400 * 10)
    with_cold = settings.with_overrides(
        archive_cold_url=store.url, archive_cold_after=settings.purge_after, archive_pii_retention=retention
    )
    damaged = store.files()[0].path
    with open(damaged, "wb") as out:
        out.write(b"not a parquet file")
    report = collect_status(mongo, with_cold, now=NOW)
    assert report.cold is not None
    assert report.newest_archived_at is not None
    assert report.cold_pii_retention_pending is None
    assert any("personal data past ARCHIVE_PII_RETENTION not counted" in p for p in report.problems)


def restored_from_both(mongo, settings, archived, tmp_path, cold=3, warm=2):
    """The older half moved to the cold tier; ``cold`` of its orders and ``warm`` archived ones
    deleted from the source, then put back by one ``restore --run`` (RESTORE_HOLD 30d: held).
    The settings with the cold tier, the cold ones, the archived ones."""
    from order_archiver.operations.restore import RestoreSelection, restore
    from order_archiver.settings import Duration

    archive, before = archived
    cold_after = Duration(days=10)
    store = local_store(tmp_path)
    ColdMove(store, *collections(mongo, settings), NOW - cold_after).run()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=cold_after)
    in_cold = sorted(cold_documents(store), key=str)[:cold]
    in_archive = sorted((d["_id"] for d in archive.find({}, {"_id": 1})), key=str)[:warm]
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    orders.delete_many({"_id": {"$in": in_cold + in_archive}})
    numeros = tuple(before[i]["numero_commande"] for i in in_cold + in_archive)
    report = restore(mongo, with_cold, RestoreSelection(numeros), run=True, confirmed=True)
    assert (report.restored, report.from_cold) == (cold + warm, cold)
    return with_cold, in_cold, in_archive


def test_status_leaves_out_the_cold_orders_restored_within_restore_hold_as_the_purge_keeps_them(
    mongo, settings, archived, tmp_path
):
    """A new user's try: after restoring 24 archived and 48 cold orders, status said "up to 48
    delivered orders ... left out: 24 restored within it" where the purge "kept 72 restored within
    RESTORE_HOLD": status read the archive's ``restored_at`` alone, never the cold tier's marks.
    Now the next purge's figures are what the purge (and its dry run) does."""
    from order_archiver.operations.status import collect_status

    with_cold, _, _ = restored_from_both(mongo, settings, archived, tmp_path)
    status = collect_status(mongo, with_cold, now=NOW)
    dry = BatchArchiver(
        mongo, with_cold, BatchOptions(run=False, purge_source=True, batch_size=50), server_clock=lambda: NOW
    ).run()
    report = purge_run(mongo, with_cold)
    assert status.purge_held_counted
    assert status.purge_held == report.purge_held == 5
    assert status.purge_movable == dry.would_purge == report.purged
    assert "left out: 5 restored within it" in "\n".join(status.lines())


def test_a_cold_order_corrected_after_its_restore_is_said_held_in_the_source_alone(
    mongo, settings, archived, tmp_path, caplog
):
    """A new user's try: two orders restored from the cold tier, one corrected in the source; the
    purge (RESTORE_HOLD 0d) kept it, rightly, but said "a full pass or watch archives the new one",
    which no pass does (older than ARCHIVE_COLD_AFTER), while verify said consistent and status
    healthy. Now the purge says the source holds the only copy of the change (``purge_kept_cold``),
    status makes it a problem and verify counts it (not consistent); its mark, a year old, is not
    pruned with the others (status and verify read it), the unchanged order's is."""
    import logging

    from order_archiver.cold.holding import MARK, ColdRestoreMarks
    from order_archiver.operations.status import collect_status
    from order_archiver.operations.verify import verify
    from order_archiver.settings import Duration

    with_cold, (corrected, unchanged), _ = restored_from_both(mongo, settings, archived, tmp_path, 2, 0)
    orders = mongo[settings.mongodb_database][settings.orders_collection]
    orders.update_one({"_id": corrected}, {"$set": {"adresse_livraison": "2 rue corrigée"}})
    checkpoints = collections(mongo, settings)[1]
    a_year_ago = NOW - timedelta(days=400)
    checkpoints.update_many({"kind": MARK}, {"$set": {"restored_at": a_year_ago}})
    before_purge = collect_status(mongo, with_cold, now=NOW)
    assert before_purge.cold_corrected == 1
    assert not before_purge.healthy
    assert any("changed in the source since" in p for p in before_purge.problems)

    caplog.set_level(logging.WARNING, logger="order_archiver")
    report = purge_run(mongo, with_cold.with_overrides(restore_hold=Duration(0)))
    assert (report.purge_kept, report.purge_kept_cold) == (1, 1)
    assert "(all of the cold tier: the change held in the source alone" in report.summary_line()
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "no pass archives again" in said
    assert "a full pass or watch archives" not in said
    assert {d["_id"] for d in orders.find({"_id": {"$in": [corrected, unchanged]}})} == {corrected}
    marks = {d["_id"] for d in checkpoints.find({"kind": MARK})}
    assert marks == {ColdRestoreMarks.key(corrected)}

    status = collect_status(mongo, with_cold, now=NOW)
    assert (status.cold_corrected, status.healthy) == (1, False)
    checked = verify(mongo, with_cold)
    assert (checked.cold_corrected, checked.consistent) == (1, False)
    assert checked.cold_corrected_examples == [str(corrected)]
    assert "changed in the source since: 1" in "\n".join(checked.lines())


@pytest.mark.parametrize(
    ("key", "order_id"),
    [
        ("cold-restored:'CMD-1'", "CMD-1"),
        ("cold-restored:12", 12),
        ("cold-restored:ObjectId('65a1b2c3d4e5f60718293a4b')", bson.ObjectId("65a1b2c3d4e5f60718293a4b")),
        ("cold-restored:{'a': 1}", None),
        ("cold-restored:True", None),
    ],
)
def test_a_mark_written_before_it_kept_its_order_id_is_read_from_its_key(key, order_id):
    """Marks written by the version before this one hold their order only in their key (its
    ``repr``): status reads them too, for the ``_id`` types an order takes; another is not read."""
    from order_archiver.cold.holding import _order_id

    assert _order_id({"_id": key}) == order_id
