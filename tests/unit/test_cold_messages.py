"""What the cold tier's commands say when something is wrong (a new user's try, items 9, 10, 16,
17 and 18): `status` with the cold tier's S3 unreachable still reports the rest (exit 3), the
storage's words cut at a boundary, never mid-word, `doctor` naming the place once, `find` saying
that a published file is gone, `restore` saying which orders came from the cold tier. The
command line as a user runs it, in-process, on mongomock and a local folder or an S3 endpoint
at a closed port (nothing listens: the AWS SDK's own "could not connect", as with S3 down)."""

import os
import re
import socket
from datetime import timedelta

import pytest

from order_archiver.cli import main as cli
from order_archiver.cold.store import ColdStore
from order_archiver.context import RunContext
from order_archiver.errors import TransientError
from order_archiver.retry import Purpose, Retry
from tests.unit.test_cold_record import moved, user  # noqa: F401  (user: a fixture, below F811)

BUCKET_URL = "s3://cold-orders/livraison"
WORDS_AT_MOST = 200  # the storage's words in one line of ours at most (errors.WORDS_AT_MOST)


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def s3_down(monkeypatch):
    """The AWS settings of an S3 endpoint nothing answers at; the product's waits between its
    tries shortened (their number unchanged). The port, for the messages to name."""
    port = closed_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(Retry, "STORAGE", Purpose(Retry.STORAGE.attempts, 0.05, 0.2), raising=False)
    return port


def arrow_says(endpoint: str) -> OSError:
    """What Arrow's S3 raises for a listing at ``endpoint`` (one try: the SDK's own words)."""
    from pyarrow.fs import AwsStandardS3RetryStrategy, FileSelector, S3FileSystem

    s3 = S3FileSystem(
        endpoint_override=endpoint,
        retry_strategy=AwsStandardS3RetryStrategy(max_attempts=1),
        connect_timeout=2,
        request_timeout=2,
    )
    with pytest.raises(OSError, match="AWS Error NETWORK_CONNECTION") as raised:
        s3.get_file_info(FileSelector("cold-orders/livraison/year=2024/month=06", recursive=True))
    return raised.value


def balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


@pytest.mark.parametrize(
    ("endpoint", "cause"),
    [
        ("closed-port", r"Failed to connect to 127\.0\.0\.1:\d+ after \d+ ms: Could not connect to server$"),
        ("http://cold-orders.invalid:9000", r"Could not resolve host: cold-orders\.invalid$"),
    ],
)
def test_the_storages_long_words_are_cut_at_a_boundary_and_keep_their_cause(s3_down, endpoint, cause):
    """Was: "... Could not resolve host: cold-orders.s3.us-ea", "... Failed to connect to
    127.0.0.1:27136 aft)": Arrow's S3 messages (about 260 characters) cut at 200, mid-word, the
    product's ")" after the cut. Now cut at a clause boundary with "…", Arrow's last clause (its
    ``Details``: curl's words, the cause) whole, the parentheses balanced."""
    from order_archiver.errors import STORAGE_PREFIX, storage_words

    where = f"http://127.0.0.1:{s3_down}" if endpoint == "closed-port" else endpoint
    raw = arrow_says(where)
    assert len(str(raw)) > WORDS_AT_MOST  # the case: longer than one line of ours takes
    said = storage_words(raw)
    assert len(said) <= WORDS_AT_MOST
    assert re.search(cause, said), said
    assert "…" in said
    assert said.startswith("When listing objects under key")  # what was asked, from the start
    error = TransientError(f"{STORAGE_PREFIX}... ({said})")
    assert balanced(str(error))


def test_a_short_message_is_left_whole_and_a_long_one_never_cut_inside_a_word():
    from order_archiver.errors import storage_words

    assert storage_words(OSError("Access Denied")) == "Access Denied"
    words = " ".join(f"word{i}" for i in range(100))
    said = storage_words(OSError(words))
    assert said.endswith("…")
    assert len(said) <= WORDS_AT_MOST
    assert said[:-1].split(" ")[-1] in words.split(" ")  # a whole word before the "…"
    opened = storage_words(OSError("listing (key " + "x " * 150))
    assert balanced(opened), opened


def test_status_with_the_cold_tiers_s3_unreachable_reports_everything_else_and_exits_3(user, capsys, s3_down):  # noqa: F811
    """Was: `status` exited 1 with one line, "error: cold tier (ARCHIVE_COLD_URL): the storage did
    not answer after retries (...)": no backlog, no watchers, no batch line. status is the health
    report: it says what it can, the cold tier's line says it could not be read and why (one
    line), and it is unhealthy (exit 3, docs/commands.md)."""
    assert cli.main(["batch", "--run", "-q"]) == 0  # an archive to report on
    user.cold("15d", url=BUCKET_URL)
    code = cli.main(["status"])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert code == 3, out + err
    assert any(line.startswith("backlog (delivered, not archived") for line in lines), out
    assert any(line.startswith("watchers: ") or line.startswith("watcher ") for line in lines), out
    assert any(line.startswith("batch: ") for line in lines), out
    [cold] = [line for line in lines if line.startswith("cold tier")]
    assert cold.startswith(
        f"cold tier: could not be read, its files and orders not counted: ARCHIVE_COLD_URL {BUCKET_URL}: "
        f"nothing answers at 127.0.0.1:{s3_down} (the connection was refused)"
    ), cold
    assert f"Failed to connect to 127.0.0.1:{s3_down} after" in cold
    assert "cold tier (ARCHIVE_COLD_URL)" not in out
    assert balanced(cold)
    assert lines[-1].startswith(f"UNHEALTHY: cold tier {BUCKET_URL} could not be read"), lines[-1]
    assert "error:" not in err


def test_status_q_says_the_cold_tier_could_not_be_read(user, capsys, s3_down):  # noqa: F811
    assert cli.main(["batch", "--run", "-q"]) == 0
    user.cold("15d", url=BUCKET_URL)
    assert cli.main(["status", "-q"]) == 3
    out = capsys.readouterr().out
    assert out.startswith(f"UNHEALTHY: cold tier {BUCKET_URL} could not be read"), out


def test_doctors_cold_tier_line_names_the_place_once(s3_down):
    """Was: "FAIL cold tier: cold tier (ARCHIVE_COLD_URL): the storage did not answer ...". Now
    "FAIL cold tier: ARCHIVE_COLD_URL s3://...: nothing answers at HOST:PORT ...", the cause kept."""
    from order_archiver.operations.doctor import DoctorReport, cold_tier_check
    from order_archiver.settings import Settings

    settings = Settings(simulation=True, log_dir="").with_overrides(
        archive_cold_url=BUCKET_URL, archive_cold_after=Settings().purge_after
    )
    report = DoctorReport()
    cold_tier_check(report, settings, RunContext())
    [line, _verdict] = report.lines()
    assert line.startswith(
        f"FAIL cold tier: ARCHIVE_COLD_URL {BUCKET_URL}: nothing answers at 127.0.0.1:{s3_down} "
        "(the connection was refused)"
    ), line
    assert line.count("cold tier") == 1, line
    assert f"Failed to connect to 127.0.0.1:{s3_down} after" in line
    assert balanced(line)


def test_find_for_an_order_of_a_published_file_gone_says_the_file_is_gone(user, capsys):  # noqa: F811
    """Was: `find --id` for an order whose cold file had been moved away said "0 orders found"
    (exit 3) and nothing else, while status and verify named the lost file. Now find says it,
    from what status reads (the list of files published against a listing: no file opened)."""
    moved(user, capsys)
    store = ColdStore(user.url)
    gone = store.files()[0]
    in_gone = _ids_in(store, gone.path)
    order_id = next(i for i in user.bands[20] + user.bands[40] if str(i) in in_gone)
    # Purged from the source, as --purge-source does: the cold file was its one place.
    user.archive.database["Commande"].delete_one({"_id": order_id})
    os.rename(gone.path, gone.path + ".moved-away")
    code = cli.main(["find", "--id", str(order_id)])
    out = capsys.readouterr().out
    assert code == 3
    assert out.startswith("0 orders found"), out
    hint = out.splitlines()[-1]
    assert hint.startswith("cold tier: 1 published file gone ("), out
    assert hint.endswith(store.url_of(gone.path)), out
    assert "what was not found may have been in it" in out
    assert cli.main(["find", "--id", str(order_id), "--json"]) == 3
    said = capsys.readouterr().out
    assert f'"cold_lost_files": ["{store.url_of(gone.path)}"]' in said


def _ids_in(store, path):
    from order_archiver.cold import files
    from order_archiver.cold.schema import document_of

    return {
        str(document_of(text)["_id"])
        for b in files.batches(store, path, ["document"])
        for text in b["document"]
    }


def test_find_that_finds_everything_reads_no_list_of_files(user, capsys, monkeypatch):  # noqa: F811
    from order_archiver.operations import find

    moved(user, capsys)
    monkeypatch.setattr(find, "lost_now", lambda *_: pytest.fail("read the list of files"))
    assert cli.main(["find", "--id", str(user.bands[40][0])]) == 0


def test_restore_says_how_many_of_the_orders_selected_came_from_the_cold_tier(user, capsys):  # noqa: F811
    """Was: "2 archived orders selected", nothing saying they were read from the cold tier."""
    moved(user, capsys)
    cold_one, archived_one = user.bands[40][0], user.bands[5][0]
    numeros = [
        user.archive.database["Commande"].find_one({"_id": i})["numero_commande"]
        for i in (cold_one, archived_one)
    ]
    assert cli.main(["restore", "--numero", numeros[0]]) == 0
    assert capsys.readouterr().out.startswith("1 archived order selected (all from the cold tier);")
    assert cli.main(["restore", "--numero", numeros[0], "--numero", numeros[1]]) == 0
    assert capsys.readouterr().out.startswith("2 archived orders selected (1 from the cold tier);")
    assert cli.main(["restore", "--numero", numeros[1], "--json"]) == 0
    assert '"from_cold": 0' in capsys.readouterr().out


def test_restore_names_archive_pii_retention_when_it_did_the_erasing(user, capsys, monkeypatch):  # noqa: F811
    """Was: "1 without their personal data (forgotten, or ARCHIVE_PII)" for orders whose data
    ARCHIVE_PII_RETENTION erased (``forgotten_by`` on the document says which erasure did it),
    in the archive and in a cold file alike; a forgotten client's order still says forget."""
    monkeypatch.setenv("ARCHIVE_PII_RETENTION", "10d")
    moved(user, capsys)  # the 20- and 40-day-old orders erased by age, then moved
    orders = user.archive.database["Commande"]
    cold_one = orders.find_one({"_id": user.bands[40][0]})["numero_commande"]
    orders.delete_many(
        {"_id": {"$in": [user.bands[40][0], user.bands[5][0]]}}
    )  # purged, as --purge-source does
    assert cli.main(["restore", "--numero", cold_one]) == 0
    out = capsys.readouterr().out
    assert "1 without their personal data (1 erased by ARCHIVE_PII_RETENTION)" in out, out
    assert "forgotten" not in out
    assert cli.main(["restore", "--numero", cold_one, "--json"]) == 0
    assert '"without_personal_data_by": {"ARCHIVE_PII_RETENTION": 1}' in capsys.readouterr().out

    recent = user.archive.find_one({"_id": user.bands[5][0]})
    assert cli.main(["forget", "--client", str(recent["client"]["id"]), "--run", "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["restore", "--numero", recent["numero_commande"]]) == 0
    assert "1 without their personal data (1 forgotten (forget))" in capsys.readouterr().out


@pytest.mark.parametrize("by", ["numero", "window"])
def test_restore_of_orders_in_a_published_file_gone_says_the_file_is_gone(user, capsys, by):  # noqa: F811
    """Was: after a cold file was deleted by hand (its orders purged from the source: the file
    their one place), `restore --numero N` and `restore --date-from/--date-to` said only "not
    found among the archived orders" (exit 3), while status, verify and find named the file.
    Now restore says which file, how many orders it held, that they are in no place and what to
    do (``cold_lost_files``, ``cold_lost_orders`` in --json); from what status reads (no file opened)."""
    moved(user, capsys)
    store = ColdStore(user.url)
    gone = store.files()[0]
    in_gone = _ids_in(store, gone.path)
    orders = user.archive.database["Commande"]
    lost = [
        o for o in orders.find({"_id": {"$in": user.bands[20] + user.bands[40]}}) if str(o["_id"]) in in_gone
    ]
    orders.delete_many({"_id": {"$in": [o["_id"] for o in lost]}})  # purged: the file was their one place
    os.remove(gone.path)
    if by == "numero":
        asked = ["--numero", lost[0]["numero_commande"]]
    else:  # a window (on date_commande) around one lost order's: it selects no archived order
        ordered = lost[0]["date_commande"]
        until = ordered + timedelta(milliseconds=1)
        asked = ["--date-from", ordered.isoformat(), "--date-to", until.isoformat()]
    code = cli.main(["restore", *asked])
    out = capsys.readouterr().out
    assert code == 3, out
    assert "not found among the archived orders" in out
    line = out.splitlines()[-1]
    assert line.startswith(f"cold tier: 1 published file gone ({len(in_gone)} orders in no place)"), out
    assert "status and verify name it too" in line
    assert "backup of the bucket or folder" in line
    assert line.endswith(f"{store.url_of(gone.path)} (exit 3)"), line
    assert cli.main(["restore", *asked, "--json"]) == 3
    said = capsys.readouterr().out
    assert f'"cold_lost_files": ["{store.url_of(gone.path)}"]' in said
    assert f'"cold_lost_orders": {len(in_gone)}' in said


@pytest.mark.parametrize("command", [["verify"], ["find", "--numero", "CMD-000551"]])
def test_an_endpoint_that_refuses_the_connection_is_named_and_not_retried_for_long(
    user,  # noqa: F811
    capsys,
    monkeypatch,
    command,
):
    """A new user's try: with AWS_ENDPOINT_URL at a port nothing listens on, verify and find
    exited 1 after 15 to 32 s saying "the storage did not answer after retries (S3
    SlowDown/500/503, a timeout or a reset connection); nothing is lost, run the command again",
    while the cause was a refused connection (curl's "Could not connect to server"), which a
    re-run does not cure. Now the line names the endpoint that refused and what to check, after
    a short retry (a storage restarting refuses for a moment), and exits 1 (the contract's
    "server unreachable"); a transient fault keeps its words (test_cold_storage_faults)."""
    import time

    assert cli.main(["batch", "--run", "-q"]) == 0
    port = closed_port()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }.items():
        monkeypatch.setenv(key, value)
    user.cold("15d", url=BUCKET_URL)
    capsys.readouterr()
    began = time.monotonic()
    code = cli.main(command)
    took = time.monotonic() - began
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if x.startswith("error: ")]
    assert code == 1, err
    assert line.startswith(
        f"error: cold tier (ARCHIVE_COLD_URL): nothing answers at 127.0.0.1:{port} (the connection "
        "was refused): check AWS_ENDPOINT_URL / the bucket's address"
    ), line
    assert "SlowDown" not in line
    assert "nothing is lost, run the command again" not in line
    assert took < 10, took  # was 15 to 32 s: the transient fault's retries (Retry.STORAGE)
