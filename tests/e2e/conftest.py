"""Fixtures the end-to-end modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from teststand.nx_server import NxServer, running_server


@pytest.fixture(scope="module")
def slow_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's ``NX_SLOW_READS_FILE``: ``COLLECTION=SECONDS`` lines its tests write."""
    return tmp_path_factory.mktemp("slow") / "slow_reads"


@pytest.fixture(scope="module")
def slow_server(slow_file: Path) -> Iterator[NxServer]:
    """A test server answering the reads ``slow_file`` names late (none at first)."""
    slow_file.write_text("")
    with running_server({"NX_SLOW_READS_FILE": str(slow_file)}, prefix="nx-slow-") as server:
        yield server
