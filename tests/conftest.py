"""Shared fixtures: isolated working directory, mongomock, the MongoDB server, the CLI runner.

The integration and end-to-end tests run against the nx-27017 test server they start
(teststand/nx_server.py), or against any MongoDB given by ``TEST_MONGODB_URI``
(``TEST_MONGODB_URI=mongodb://host:27017/?replicaSet=rs0 make test``): one database per test,
dropped at the end of the session, nothing else on the server touched. Tests that need the
test server itself (its fault knobs, its test account, stopping and restarting it, a proxy in
front of it) are marked ``test_server_only`` and skipped there, with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from order_archiver.settings import ENV_VARS, Settings
from order_archiver.simulation.database import new_client
from tests import command_shapes
from teststand.nx_server import PLAIN_PASSWORD, PLAIN_USER, NxServer, running_server
from teststand.s3_faults import LocalS3

ROOT = Path(__file__).resolve().parent.parent

# --- the record of the commands the product sends (tests/command_shapes.py) ----------------------

_SHAPES_VERDICT = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--mongodb-version",
        default="",
        help="the MongoDB version every test server answers as and enforces (NX_MONGODB_VERSION): "
        "the newest by default; 4.4 for the version floor (make test-floor)",
    )


def pytest_configure(config: pytest.Config) -> None:
    command_shapes.start_session()
    if config.getoption("--mongodb-version"):  # every test server started from now on inherits it
        os.environ["NX_MONGODB_VERSION"] = config.getoption("--mongodb-version")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # the controller reads every process's records
    accepted, lines = command_shapes.verdict(session.config.rootpath / ".pytest_cache" / "command-shapes.txt")
    session.config.stash[_SHAPES_VERDICT] = lines
    if not accepted:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)  # after the durations: the line before pytest's own last line
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for line in config.stash.get(_SHAPES_VERDICT, []):
        terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in its own empty folder (no stray .env, logs or samples.json) with
    none of the archiver's variables inherited from the machine."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def settings() -> Settings:
    return Settings(simulation=True, log_dir="")


@pytest.fixture
def mongo():
    client = new_client()
    yield client
    client.close()


# PLAIN_USER, PLAIN_PASSWORD: the one account the test server accepts (teststand/nx_server.py),
# imported from here by the tests that need a password that works.
__all__ = ["PLAIN_PASSWORD", "PLAIN_USER", "NxServer", "run_cli"]


# Read by the tests only (config.py reads the product's settings): a MongoDB to test against.
TEST_MONGODB_URI = os.environ.get("TEST_MONGODB_URI", "").strip()
_DATABASES: list[str] = []  # created by this session's tests on a TEST_MONGODB_URI server


class ExternalServer:
    """A MongoDB given by ``TEST_MONGODB_URI``: used as it is, never started or stopped."""

    def __init__(self, uri: str) -> None:
        from pymongo.uri_parser import parse_uri

        self.uri = uri
        self.host, self.port = parse_uri(uri)["nodelist"][0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not TEST_MONGODB_URI:
        return
    for item in items:
        marker = item.get_closest_marker("test_server_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "needs the bundled test server"
            item.add_marker(pytest.mark.skip(reason=f"test server only: {reason}"))


@pytest.fixture(scope="session")
def nx_server() -> Iterator[NxServer | ExternalServer]:
    if TEST_MONGODB_URI:
        server = ExternalServer(TEST_MONGODB_URI)
        yield server
        with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000) as client:
            # A test's own database, and those it derived from its name (an archive database).
            for name in client.list_database_names():
                if name.startswith(tuple(_DATABASES)):
                    client.drop_database(name)
        return
    with running_server({"NX_PLAIN_USERS": f"{PLAIN_USER}:{PLAIN_PASSWORD}"}) as server:
        yield server


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3]:
    """moto's S3 server (the real S3 API over HTTP, on loopback), one per worker: it takes
    seconds to start. Emptied for each test that takes it (``empty_s3``)."""
    with LocalS3() as server:
        yield server


@pytest.fixture
def empty_s3(local_s3: LocalS3) -> LocalS3:
    """The worker's S3, with no bucket and no object left by an earlier test."""
    local_s3.reset()
    return local_s3


@pytest.fixture(scope="session")
def standalone_server() -> Iterator[NxServer]:
    """A test server answering as a standalone mongod (``nx_server`` is the primary of a
    one-member replica set, as CI's real servers are): for what the product does where there is
    no replication (no change streams, 40573; no ``commitQuorum``; no ``replSetGetStatus``).
    Its tests are ``test_server_only``."""
    with running_server(prefix="nx-standalone-", replica_set="") as server:
        yield server


@pytest.fixture
def nx_client(nx_server: NxServer | ExternalServer) -> Iterator[pymongo.MongoClient]:
    client = pymongo.MongoClient(nx_server.uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def db_name() -> str:
    """One database per test: tests never see each other's documents."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    _DATABASES.append(name)
    return name


@pytest.fixture
def nx_settings(nx_server: NxServer | ExternalServer, db_name: str) -> Settings:
    return Settings(mongodb_uri=nx_server.uri, mongodb_database=db_name, log_dir="")


@pytest.fixture
def nx_env(
    nx_server: NxServer | ExternalServer, db_name: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The environment a user would set to point the CLI at this test's database."""
    env = {"MONGODB_URI": nx_server.uri, "MONGODB_DATABASE": db_name, "LOG_DIR": "logs"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    script: str = "main.py",
) -> subprocess.CompletedProcess[str]:
    """Run the command line as a user does: a subprocess, its own environment."""
    base = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
