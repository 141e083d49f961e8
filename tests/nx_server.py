"""The development server through tests/nx_launcher.py (its fault knobs on top)."""

from __future__ import annotations

from pathlib import Path

from devserver import DevServer


class NxServer(DevServer):
    """One test server on a free port and its own temp data directory."""

    launcher = Path(__file__).resolve().parent / "nx_launcher.py"
