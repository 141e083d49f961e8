"""The development server through tests/nx_launcher.py (its fault knobs on top)."""

from __future__ import annotations

from dev.devserver import DevServer


class NxServer(DevServer):
    """One test server on a free port and its own temp data directory."""

    launcher = "tests.nx_launcher"
    # A test server's data is thrown away: no need to wait long for a clean shutdown (nx-27017
    # busy with an open change stream can ignore SIGTERM for seconds).
    stop_timeout = 1.0
