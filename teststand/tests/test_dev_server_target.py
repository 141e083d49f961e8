"""`make dev-server` (#32 item 7): a port of one's choosing, the server's files in .dev-server/."""

import os
import shutil
import socket
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


def as_typed_in_a_shell() -> dict[str, str]:
    """The environment without the variables a make running this suite (``make test``) passes
    down: a nested make says "make[1]: Entering directory", which a user's make does not."""
    return {k: v for k, v in os.environ.items() if k not in {"MAKELEVEL", "MAKEFLAGS", "MFLAGS"}}


@pytest.mark.parametrize("cause", ["port in use", "data folder it cannot make"])
def test_a_failure_is_the_servers_one_line_with_no_recipe_echoed(tmp_path, cause):
    """A new user's try: a failed `make dev-server` showed the recipe's commands (`mkdir -p`, the
    whole server command) around the server's one line, or mkdir's own error. Now the server's
    line, then only GNU make's own closing line, which make prints for every failed recipe but an
    ignored one under -s (job.c, child_error; an ignored one would make it exit 0): exit 2 kept."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "data" if cause == "port in use" else tmp_path / "a-file" / "data"
        (tmp_path / "a-file").write_text("not a folder")
        result = subprocess.run(
            ["make", "dev-server", f"PORT={port}", f"DATA={data}"],
            cwd=PROJECT,
            env=as_typed_in_a_shell(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stdout == ""  # no recipe echoed
    first, *rest = result.stderr.splitlines()
    assert first == (
        f"error: 127.0.0.1:{port} is in use (another MongoDB or development server?): "
        "choose another port, e.g. make dev-server PORT=27018"
        if cause == "port in use"
        else f"error: DATA= (--data-dir) {data}: cannot make the folder: Not a directory"
    )
    assert all(line.startswith("make: ") for line in rest)  # GNU make's own, and nothing else


def test_a_data_folder_another_server_runs_from_is_named_as_make_takes_it(tmp_path):
    """A new user's first day (item 9): `make dev-server` beside a running one said "give
    another folder", and a folder it could not make "--data-dir /proc/nope": a make user sets
    DATA=. Both names are said."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "nx.pid").write_text(str(os.getpid()))  # a live process holds the folder
    result = subprocess.run(
        ["make", "dev-server", f"DATA={data}"],
        cwd=PROJECT,
        env=as_typed_in_a_shell(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    first, *rest = result.stderr.splitlines()
    assert first == (
        f"error: a development server already runs from this data folder (pid {os.getpid()}): stop it, "
        "or give another folder (DATA= (--data-dir)) and port, e.g. make dev-server DATA=.dev-server-2 PORT=27018"
    )
    assert all(line.startswith("make: ") for line in rest)
