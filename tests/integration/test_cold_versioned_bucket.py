"""ARCHIVE_PII_RETENTION in a cold tier on a versioned S3 bucket, at the wire: moto's S3 server
(the real S3 API over HTTP; ``put-bucket-versioning`` Enabled keeps a noncurrent version of every
object overwritten or deleted, as S3 does: AWS S3 User Guide, "Retaining multiple versions of
objects with S3 Versioning"), MongoDB on mongomock (its side is not under test). The command
line as a user runs it, in-process."""

import json

import pytest

from order_archiver.cli.main import main
from tests.unit.test_cold_record import user  # noqa: F401  (a fixture: a user's shell on mongomock)

BUCKET, URL = "orders", "s3://orders/livraison"


@pytest.fixture
def bucket(monkeypatch, empty_s3):
    """moto's S3 with the bucket, the AWS settings that point at it, and a boto3 client (the
    test's own look at the versions: Arrow cannot list them)."""
    import boto3

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": empty_s3.endpoint,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=empty_s3.endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.mark.parametrize("versioned", [True, False])
def test_the_retentions_rewrites_in_a_versioned_bucket_say_what_the_bucket_keeps(
    user,  # noqa: F811
    capsys,
    monkeypatch,
    bucket,
    versioned,
):
    """A new user's try: with versioning on, `batch --run` said "personal data of 501 orders
    erased (ARCHIVE_PII_RETENTION)" and nothing else, its --json had no `versions_kept`, and
    status said "cold tier: none past it holds any ... healthy" while the bucket held 17
    noncurrent versions with that data. forget said it in the same case. Now the retention's
    rewrite says forget's words (``store.versions_kept_words``), `cold.versions_kept` in --json,
    and status says the current files hold none but the bucket keeps the replaced ones."""
    if versioned:
        bucket.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    assert main(["batch", "--run", "-q"]) == 0
    user.cold("15d", url=URL)
    assert main(["batch", "--run", "-q"]) == 0  # the 20- and 40-day-old deliveries moved
    capsys.readouterr()

    monkeypatch.setenv("ARCHIVE_PII_RETENTION", "30d")  # the 40-day-old ones erased
    assert main(["batch", "--run"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("cold tier:")]
    monkeypatch.setenv("ARCHIVE_PII_RETENTION", "10d")  # then the 20-day-old ones
    assert main(["batch", "--run", "--json", "-q"]) == 0
    cold = json.loads(capsys.readouterr().out)["cold"]
    assert main(["status", "--json"]) in (0, 3)
    as_json = json.loads(capsys.readouterr().out)
    assert main(["status"]) in (0, 3)
    [pii] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("personal data: erased 10d")]

    # What S3 kept: the replaced files' versions, the erased orders' data in them.
    noncurrent = [
        v for v in bucket.list_object_versions(Bucket=BUCKET).get("Versions", []) if not v["IsLatest"]
    ]
    assert "; personal data of " in line, line
    assert "erased (ARCHIVE_PII_RETENTION)" in line, line
    assert cold["pii_erased"] > 0
    if versioned:
        assert noncurrent  # the physics the lines below stand for
        assert "; the bucket keeps object versions: the " in line, line
        assert "replaced, with their personal data, stay readable as noncurrent versions" in line
        assert cold["versions_kept"] is True
        assert pii.endswith(
            "; cold tier: none past it holds any in its current files, but the bucket keeps object "
            "versions: the files replaced, with their personal data, stay readable as noncurrent "
            "versions until a lifecycle rule expires them (NoncurrentVersionExpiration; doctor's "
            "cold tier versions)"
        ), pii
        assert as_json["cold_versions_kept"] is True
    else:
        assert noncurrent == []
        assert "object versions" not in line
        assert cold["versions_kept"] is False
        assert pii.endswith("; cold tier: none past it holds any"), pii
        assert as_json["cold_versions_kept"] is False
