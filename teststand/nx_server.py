"""The development server through teststand/nx_launcher.py (its fault knobs on top)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from teststand.devserver import DEFAULT_REPLICA_SET, DevServer

# The one account the test server accepts (SASL PLAIN, the launcher's NX_PLAIN_USERS), for
# tests that need a password that works.
PLAIN_USER, PLAIN_PASSWORD = "archiver", "S3cret-Passw0rd-42"
TEST_HISTORY_ROWS = 200_000  # changes a test server's history keeps, unless a test says fewer


class NxServer(DevServer):
    """One test server on a free port and its own temp data directory."""

    launcher = "teststand.nx_launcher"
    # A test server's data is thrown away: no need to wait long for a clean shutdown (nx-27017
    # busy with an open change stream can ignore SIGTERM for seconds).
    stop_timeout = 1.0

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        # The change history is capped as an oplog is (devserver._capped_prune): a real one holds
        # hours of writes, which a test's thousands of changes never outrun; a test of a lost
        # history says how short its own is (NX_RESUME_RETENTION_ROWS, as make dev-server's HISTORY).
        env.setdefault("NX_RESUME_RETENTION_ROWS", str(TEST_HISTORY_ROWS))
        return env


@contextmanager
def running_server(
    env: dict[str, str] | None = None, prefix: str = "nx27017-", replica_set: str = DEFAULT_REPLICA_SET
) -> Iterator[NxServer]:
    """A test server in a temporary folder of its own, for as long as the block runs: a
    one-member replica set, or a standalone with ``replica_set=""``."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        server = NxServer(Path(folder), env=env, replica_set=replica_set)
        server.start()
        try:
            yield server
        finally:
            server.stop()
