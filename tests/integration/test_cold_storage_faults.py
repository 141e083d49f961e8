"""The cold tier when S3 fails, at the wire: a fault of the storage is never an answer about the
files. moto's S3 server (the real S3 API over HTTP) behind ``S3Faults``, which answers some
requests as S3 does when it fails (AWS S3 API Reference, "Error responses":
https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html): 503 SlowDown (S3 sheds
load: "reduce your request rate"), 403 AccessDenied (wrong credentials, a bucket policy that
denies the action), 404 NoSuchBucket (a wrong bucket name, endpoint or region). The AWS SDK
under pyarrow tries each request ``S3_SDK_ATTEMPTS`` times before it gives up: a fault meant
to reach the product is answered more often than that. MongoDB is mongomock here (its side is
not under test)."""

import pytest

from order_archiver.cli.main import main
from order_archiver.cold.move import JOURNAL_KIND, ColdMove
from order_archiver.cold.store import S3_SDK_ATTEMPTS, ColdStore
from order_archiver.context import RunContext
from order_archiver.errors import ConfigError, FatalError, TransientError
from order_archiver.retry import Purpose, Retry
from tests.helpers import seed_database
from tests.unit.test_cold_record import user  # noqa: F401  (a fixture: a user's shell on mongomock)
from tests.unit.test_cold_tier import (
    Killed,
    a_cutoff,
    archive_all,
    assert_one_place_each,
    collections,
)
from teststand.s3_faults import RESET, S3Faults

BUCKET, PREFIX = "orders", "livraison"
SECRET = "s3cr3t-never-printed"
# Answered to more than the SDK's own tries of a read or a listing: the product's first try
# meets the fault, its second gets through.
READ_FAULTS = S3_SDK_ATTEMPTS + 2


@pytest.fixture
def s3(monkeypatch, empty_s3):
    """moto's S3 with the bucket, and the proxy the product talks to (AWS_ENDPOINT_URL)."""
    server = empty_s3
    with S3Faults(server.port) as proxy:
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": proxy.endpoint,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        from pyarrow.fs import S3FileSystem

        S3FileSystem(endpoint_override=server.endpoint, allow_bucket_creation=True).create_dir(BUCKET)
        # Short waits between the product's own tries (the purpose's attempts unchanged).
        attempts = getattr(Retry, "STORAGE", Purpose(4)).attempts
        monkeypatch.setattr(Retry, "STORAGE", Purpose(attempts, 0.05, 0.2), raising=False)
        yield proxy


@pytest.fixture
def archived(mongo, settings):
    seed_database(mongo[settings.mongodb_database], settings, 200, p_anomalies=0.0)
    archive_all(mongo, settings)
    archive = mongo[settings.archive_db_name][settings.archive_collection]
    return archive, {d["_id"]: d for d in archive.find()}


def killed_after_publish(mongo, settings, before):
    """A move to the bucket killed once its first file is out (journal "published"), before its
    deletes: the file's orders in the file and in the archive. The store, the cutoff, the file."""
    store = ColdStore(f"s3://{BUCKET}/{PREFIX}")
    cutoff = a_cutoff(before)
    move = ColdMove(store, *collections(mongo, settings), cutoff)

    def die():
        raise Killed

    move.after_publish = die
    with pytest.raises(Killed):
        move.run()
    [published] = store.files()
    return store, cutoff, published


def journal(mongo, settings):
    return [(e["state"], e["final"]) for e in collections(mongo, settings)[1].find({"kind": JOURNAL_KIND})]


def every_key(store):
    from pyarrow.fs import FileSelector

    return sorted(info.path for info in store.fs.get_file_info(FileSelector(store.root, recursive=True)))


def test_a_settlement_that_meets_503_slowdown_reading_the_file_retries_and_never_puts_it_aside(
    mongo, settings, archived, s3
):
    """Was: the settlement's check of the published file (``is_complete``) took any error for a
    damaged file: 503 SlowDown past the SDK's own retries renamed a whole file ``.damaged`` and
    dropped its journal entry (a move killed after its deletes: its orders in no readable place;
    before them, a copy with personal data no ``forget`` reaches). Now the read is retried."""
    archive, before = archived
    store, cutoff, published = killed_after_publish(mongo, settings, before)
    s3.fail("GET", f"/{published.path}", 503, "SlowDown", times=READ_FAULTS)
    report = ColdMove(store, *collections(mongo, settings), cutoff).run()
    assert not [key for key in every_key(store) if key.endswith(".damaged")]
    assert report.recovered == 1
    assert [status for _, _, status in s3.answered] == [503] * READ_FAULTS  # the fault was met
    assert_one_place_each(archive, store, before)
    assert not journal(mongo, settings)


def test_a_settlement_denied_403_reading_the_file_stops_naming_the_credentials_and_keeps_its_entry(
    mongo, settings, archived, s3
):
    """Was: 403 AccessDenied on the file (a bucket policy denying s3:GetObject) read as a damaged
    file, as above. Now the settlement stops, one line naming what to fix; the file and its
    journal entry stay as they were, and once access is back the next run settles them."""
    archive, before = archived
    store, cutoff, published = killed_after_publish(mongo, settings, before)
    entry = journal(mongo, settings)
    s3.fail("GET", f"/{published.path}", 403, "AccessDenied")
    with pytest.raises(FatalError, match=r"access denied: check the storage's credentials") as failed:
        ColdMove(store, *collections(mongo, settings), cutoff).run()
    assert SECRET not in str(failed.value)
    assert journal(mongo, settings) == entry
    assert store.files() == [published]
    s3.clear()
    assert ColdMove(store, *collections(mongo, settings), cutoff).run().recovered == 1
    assert_one_place_each(archive, store, before)


def test_forget_at_a_bucket_the_endpoint_does_not_have_is_refused_and_settles_nothing(
    mongo, settings, archived, s3
):
    """Was: with the bucket answering 404 NoSuchBucket (AWS_ENDPOINT_URL at another S3, a wrong
    region), Arrow reads a key as "not found" and a listing as empty: ``forget --run`` settled a
    move killed after its publication as one whose file never came out (its journal entry
    dropped: the archive kept the orders the file holds, which the next move published again)
    and found none of the person's orders in the cold tier. Now it is refused, exit 2, named."""
    from order_archiver.operations.forget import Person, forget_person
    from order_archiver.orders.erasing import CLIENT

    archive, before = archived
    store, _cutoff, published = killed_after_publish(mongo, settings, before)
    entry = journal(mongo, settings)
    client = next(d["client"] for d in before.values() if d["client"])
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    s3.fail("*", f"/{BUCKET}", 404, "NoSuchBucket")
    with pytest.raises(
        ConfigError, match=rf"ARCHIVE_COLD_URL {store.url}: the bucket 'orders' does not exist"
    ):
        forget_person(mongo, with_cold, Person(CLIENT, client["id"]), run=True)
    assert journal(mongo, settings) == entry
    s3.clear()
    assert store.files() == [published]
    forget_person(mongo, with_cold, Person(CLIENT, client["id"]), run=True)
    assert not journal(mongo, settings)
    assert_one_place_each(archive, store, before)


def test_verify_that_meets_503_on_every_read_of_a_file_fails_instead_of_calling_it_damaged(
    mongo, settings, archived, s3, monkeypatch
):
    """Was: S3 failing to serve a file (503 past every retry) made ``verify`` report that file
    as "does not read back whole" (exit 3, inconsistent): a fault of the storage taken for one
    of the data. Now verify fails, exit 1, saying the storage did not answer."""
    from order_archiver.operations.verify import verify

    _, before = archived
    store = ColdStore(f"s3://{BUCKET}/{PREFIX}")
    ColdMove(store, *collections(mongo, settings), a_cutoff(before)).run()
    [first, *_] = store.files()
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    s3.fail("GET", f"/{first.path}", 503, "SlowDown")
    # Two tries of the product's, each the SDK's own three.
    monkeypatch.setattr(Retry, "STORAGE", Purpose(2, 0.05, 0.2), raising=False)
    with pytest.raises(TransientError, match="did not answer after retries"):
        verify(mongo, with_cold)
    s3.clear()
    assert verify(mongo, with_cold).cold.consistent


def test_forget_denied_listing_the_bucket_says_one_line_naming_the_credentials(
    mongo, settings, archived, s3, monkeypatch, capsys
):
    """Was: ``error: unexpected OSError: When listing objects ... AWS Error ACCESS_DENIED ...``
    (403 on ListObjectsV2: a policy without s3:ListBucket). Now the line says what to fix,
    exit 1 (as an authentication failure), and never the secret."""
    from order_archiver.cli import main as cli
    from tests.unit.test_cold_record import Kept

    monkeypatch.setattr(cli, "_open_clients", lambda *_args, **_kwargs: Kept(mongo))
    monkeypatch.setenv("ARCHIVE_COLD_URL", f"s3://{BUCKET}/{PREFIX}")
    monkeypatch.setenv("ARCHIVE_COLD_AFTER", "365d")
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:1")  # unused: the test's mongomock
    _, before = archived
    client = next(d["client"] for d in before.values() if d["client"])
    s3.fail("GET", f"/{BUCKET}", 403, "AccessDenied")
    code = main(["forget", "--client", str(client["id"]), "--run"])
    err = capsys.readouterr().err
    assert [status for _, _, status in s3.answered][:1] == [403], err  # the fault was met
    assert code == 1, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("error: cold tier (ARCHIVE_COLD_URL): access denied: check the storage's credentials")
    )
    assert "unexpected" not in err
    assert SECRET not in err


def test_a_storage_fault_never_reads_as_a_file_absent(s3):
    """The store's own answers: "no such file" and "no file" only once the bucket is seen."""
    store = ColdStore(f"s3://{BUCKET}/{PREFIX}")
    assert store.files() == []
    assert not store.exists(f"{BUCKET}/{PREFIX}/x.parquet")
    s3.fail("*", f"/{BUCKET}", 404, "NoSuchBucket")
    with pytest.raises(ConfigError, match="does not exist"):
        store.files()
    with pytest.raises(ConfigError, match="does not exist"):
        store.exists(f"{BUCKET}/{PREFIX}/x.parquet")
    s3.clear()
    s3.fail("*", f"/{BUCKET}", 403, "AccessDenied")
    with pytest.raises(FatalError, match="access denied"):
        store.exists(f"{BUCKET}/{PREFIX}/x.parquet")


def test_the_start_check_retries_a_503_and_says_a_lasting_one_is_no_configuration_error(s3, monkeypatch):
    """Was: ``batch --run``'s check of the bucket before it writes (``ColdStore.check``) took any
    error for a place that cannot be used: a 503 SlowDown past the SDK's 3 tries of a HEAD exited 2 ("bad
    configuration", which the Kubernetes CronJob does not retry). Now it is retried; one that
    lasts is a ``TransientError`` (exit 1, "run the command again"); a 403 stays exit 2, named."""
    store = ColdStore(f"s3://{BUCKET}/{PREFIX}")
    s3.fail("HEAD", f"/{BUCKET}", 503, "SlowDown", times=5)
    store.check()
    assert [status for _, _, status in s3.answered] == [503] * 5
    s3.fail("HEAD", f"/{BUCKET}", 503, "SlowDown")
    monkeypatch.setattr(Retry, "STORAGE", Purpose(2, 0.05, 0.2), raising=False)
    with pytest.raises(TransientError, match="did not answer after retries"):
        store.check()
    s3.clear()
    s3.fail("PUT", f"/{BUCKET}/{PREFIX}/.order-archiver-probe", 403, "AccessDenied")
    with pytest.raises(
        ConfigError, match=rf"ARCHIVE_COLD_URL {store.url}: cannot write there: .*ACCESS_DENIED"
    ):
        store.check()


def test_doctor_says_a_bucket_that_does_not_answer_in_its_cold_tier_line(s3, settings, monkeypatch):
    """Its check no longer calls a lasting 503 a configuration error: doctor still reports it
    as its "cold tier" check failed (one line among the others), not as the whole run's error."""
    from order_archiver.operations.doctor import DoctorReport, cold_tier_check

    with_cold = settings.with_overrides(
        archive_cold_url=f"s3://{BUCKET}/{PREFIX}", archive_cold_after=settings.purge_after
    )
    s3.fail("HEAD", f"/{BUCKET}", 503, "SlowDown")
    monkeypatch.setattr(Retry, "STORAGE", Purpose(2, 0.05, 0.2), raising=False)
    report = DoctorReport()
    cold_tier_check(report, with_cold, RunContext())
    [check] = report.checks
    assert (check.name, check.outcome) == ("cold tier", "fail")
    assert "did not answer after retries" in check.detail


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (500, "InternalError"), (RESET, "")],
    ids=["503-slowdown", "500-internal-error", "connection-reset"],
)
def test_a_listing_that_meets_a_transient_fault_past_the_sdks_tries_is_retried(s3, status, code):
    """S3's transient answers (and a reset connection: a network fault) past the AWS SDK's own
    retries: the listing (``find``, ``forget``, ``verify``, ``status``, the retention) is tried
    again, with waits a stop ends, instead of failing the command at once."""
    store = ColdStore(f"s3://{BUCKET}/{PREFIX}")
    s3.fail("GET", f"/{BUCKET}", status, code, times=READ_FAULTS)
    assert store.files() == []
    assert [answered for _, _, answered in s3.answered] == [status] * READ_FAULTS


def test_each_try_of_the_products_is_at_most_three_requests_where_s3_asks_to_slow_down(s3):
    """Was: the store's S3 (``FileSystem.from_uri``: Arrow's C++ default retries) tried a 503
    SlowDown again every 200 ms for 6 s, 31 requests per try of the product's and 124 for one
    listing, at a fixed interval, where S3 asks the client to "reduce your request rate". Now
    the SDK's standard mode (3 tries, exponential backoff with jitter) under the product's own
    ``Retry.STORAGE``: 12 requests in all before the command fails, exit 1."""
    store = ColdStore(f"s3://{BUCKET}/{PREFIX}")
    s3.fail("GET", f"/{BUCKET}", 503, "SlowDown")
    with pytest.raises(TransientError, match="did not answer after retries"):
        store.files()
    assert len(s3.answered) == S3_SDK_ATTEMPTS * Retry.STORAGE.attempts == 12


def test_forget_whose_cold_tier_fails_after_the_archive_says_the_person_is_recorded_and_what_finishes_it(
    user,  # noqa: F811
    capsys,
    s3,
):
    """A new user's try: `forget --run` at a cold tier that did not answer (S3 SlowDown past the
    retries) printed the storage's error alone (exit 1): nothing said that the person was
    recorded and their archived orders erased already, nor that the next batch --run finishes
    the cold tier's part (status said it). The one error line now says both; its exit code is
    the storage error's. Once S3 answers, batch --run finishes it."""
    assert main(["batch", "--run", "-q"]) == 0
    user.cold("15d", url=f"s3://{BUCKET}/{PREFIX}")
    assert main(["batch", "--run", "-q"]) == 0
    capsys.readouterr()
    recent = user.archive.find_one({"_id": {"$in": user.bands[5]}, "client.email": {"$ne": None}})
    person = str(recent["client"]["id"])
    s3.fail("*", f"/{BUCKET}", 503, "SlowDown")  # every request of the cold tier, from now on
    code = main(["forget", "--client", person, "--run"])
    out, err = capsys.readouterr()
    [line] = [x for x in err.splitlines() if x.startswith("error: ")]
    assert code == 1, out + err
    assert line.startswith("error: cold tier (ARCHIVE_COLD_URL): the storage did not answer after retries"), (
        line
    )
    assert f"client {person}: recorded as forgotten and erased in the archive collection (" in line
    assert "their erasure in the cold tier is not finished: the next batch --run finishes it" in line
    assert user.archive.find_one({"_id": recent["_id"]})["client"]["email"] is None  # as it says
    s3.clear()
    assert main(["status"]) == 3
    assert "forgotten at any time whose erasure is not finished" in capsys.readouterr().out
    assert main(["batch", "--run", "--json", "-q"]) == 0
    assert '"forgotten_finished": 1' in capsys.readouterr().out
