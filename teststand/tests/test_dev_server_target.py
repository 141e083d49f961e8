"""`make dev-server` (#32 item 7): a port of one's choosing, the server's files in .dev-server/."""

import os
import shutil
import subprocess

import pytest

from teststand.devserver import PROJECT

pytestmark = [
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
    pytest.mark.test_server_only("make dev-server, the test server's command line"),
]


def dev_server_command(*overrides: str, env: dict[str, str] | None = None) -> str:
    """The command ``make dev-server`` runs (``-n``: printed, not run)."""
    printed = subprocess.run(
        ["make", "-n", "dev-server", *overrides],
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line for line in printed.splitlines() if "teststand.devserver" in line)


def test_port_on_the_command_line_chooses_the_port_and_the_files_stay_in_dev_server():
    command = dev_server_command("PORT=27018")
    assert " -p 27018 " in command
    assert "--log-file .dev-server/nx.log" in command
    assert "--pid-file .dev-server/nx.pid" in command
    # A PORT in the environment (set for some other program) does not move the server.
    assert " -p 27017 " in dev_server_command(env={"PORT": "3000"})
