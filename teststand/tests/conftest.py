"""The test server's own tests: its fixes, knobs and command line, on a server of their own.

They test the stand-in, not the product, so they never use ``TEST_MONGODB_URI``'s server and
each module is marked ``test_server_only``: the product's suite run against another MongoDB
skips them (tests/conftest.py), as what they assert is the stand-in's behaviour, some of it a
departure of its own (an update path into an array by index is refused here, applied by
MongoDB)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pymongo
import pytest

from teststand.nx_server import PLAIN_PASSWORD, PLAIN_USER, NxServer, running_server


@pytest.fixture(scope="session")
def nx_server() -> Iterator[NxServer]:
    with running_server({"NX_PLAIN_USERS": f"{PLAIN_USER}:{PLAIN_PASSWORD}"}) as server:
        yield server


@pytest.fixture(scope="session")
def standalone() -> Iterator[NxServer]:
    """A standalone test server (``nx_server`` is a one-member replica set): for what a
    standalone mongod answers differently (no change streams, no replication commands)."""
    with running_server(prefix="nx-standalone-", replica_set="") as server:
        yield server


def client_of(server: NxServer) -> Iterator[pymongo.MongoClient]:
    client: pymongo.MongoClient = pymongo.MongoClient(
        server.uri, tz_aware=True, serverSelectionTimeoutMS=5000
    )
    yield client
    client.close()


@pytest.fixture
def standalone_client(standalone: NxServer) -> Iterator[pymongo.MongoClient]:
    yield from client_of(standalone)


@pytest.fixture
def nx_client(nx_server: NxServer) -> Iterator[pymongo.MongoClient]:
    yield from client_of(nx_server)


@pytest.fixture
def db_name() -> str:
    """One database per test: tests never see each other's documents."""
    return f"t_{uuid.uuid4().hex[:12]}"
