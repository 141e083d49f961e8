"""`python -m teststand.devserver` as `make dev-server` runs it (#32 item 7): a port in use is one
line and exit 2; its log lives in its data folder, not in nx-27017's default file that every
server on the machine shares; the engine's fallback warnings, and asyncio's tracebacks of
connections cancelled by Ctrl+C, stay out of the terminal."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pymongo
import pytest

from teststand.devserver import PROJECT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.test_server_only("starts development servers of its own"),
]


def dev_server(data_dir: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "teststand.devserver", "--data-dir", str(data_dir), "-p", str(port)]


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            dev_server(tmp_path / "data", port), cwd=PROJECT, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # a new user's try: three lines, the last the error
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: 127.0.0.1:{port} is in use (another MongoDB or development server?): "
        "choose another port, e.g. make dev-server PORT=27018"
    )


@pytest.mark.parametrize("flag", ["--help", "-h", "--he"])
def test_its_help_is_the_help_and_nothing_else(tmp_path, flag):
    """A new user's try: `--help` printed "starting the development server on ..." first (and
    made the data folder, and tried the port) though nothing starts."""
    data = tmp_path / "data"
    result = subprocess.run(
        [*dev_server(data, 27017), flag], cwd=PROJECT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("python -m teststand.devserver: the development server")  # not nx's alone
    assert "\nusage: " in result.stdout
    assert "--data-dir" in result.stdout
    assert "--standalone" in result.stdout  # the development server's own option, beside nx-27017's
    assert result.stderr == ""
    assert not data.exists()


def test_a_misspelt_option_is_one_line_and_exit_2_before_anything_starts(tmp_path):
    """A new user's try: `--bogus` printed "starting the development server on ..." and then
    nx-27017's usage and error; on a port in use it said "in use" and not the misspelt option.
    Now nx-27017's own parser is asked first: one line, exit 2, no folder made, the port untried."""
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*dev_server(data, port), "--standalon"], cwd=PROJECT, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unrecognized arguments: --standalon (python -m teststand.devserver --help lists them)"
    ]
    assert not data.exists()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, on_timeout: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{on_timeout()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(client: pymongo.MongoClient) -> Callable[[], bool]:
    """Whether the server behind ``client`` answers a ping yet."""

    def pinged() -> bool:
        try:
            client.admin.command("ping")
        except pymongo.errors.PyMongoError:
            return False
        return True

    return pinged


def test_its_log_is_in_its_data_folder_and_the_fallbacks_stay_out_of_the_terminal(tmp_path):
    data, port = tmp_path / "data", free_port()
    terminal = tmp_path / "terminal.txt"
    with terminal.open("w") as output:
        server = subprocess.Popen(
            dev_server(data, port),
            cwd=PROJECT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=300
        )

        wait_for(answers(client), timeout=60, what="the development server", on_timeout=terminal.read_text)
        assert (data / "nx.pid").exists()  # in its folder, not nx-27017's /tmp/nx_27017.pid
        database = client["t"]
        database.dishes.insert_one({"_id": 1, "nom": "Pizza"})
        database.orders.insert_one({"dish": 1})
        joined = database.orders.aggregate(
            [{"$lookup": {"from": "dishes", "localField": "dish", "foreignField": "_id", "as": "d"}}]
        )
        assert next(joined)["d"] == [{"_id": 1, "nom": "Pizza"}]
        os.killpg(server.pid, signal.SIGINT)  # Ctrl+C, the client still connected (a watcher)
        assert server.wait(timeout=30) == 0
        client.close()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    log = (data / "nx.log").read_text()
    assert "Starting NX-27017" in log
    assert "aggregation fallback" in log  # logged there, each line as the engine wrote it
    shown = terminal.read_text()
    started = f"starting the development server on mongodb://127.0.0.1:{port}/ (replica set rs0; log {data / 'nx.log'})"
    assert started in shown  # what it is, said (a new user's try: neither rs0 nor standalone was)
    assert "aggregation fallback" not in shown
    # A new user's try: every command at INFO flooded the terminal; its INFO goes to the log.
    assert "Calling db.command" in log or "Starting NX-27017" in log
    assert "Starting NX-27017" not in shown
    assert " - INFO - " not in shown
    assert "Traceback" not in shown  # Ctrl+C with a client connected: a quiet end


def test_a_second_server_of_one_data_folder_is_one_line_and_exit_2(tmp_path):
    """A new user's try: a second `make dev-server PORT=...` of the same folder logged nx-27017's
    "already running" in its logging format, with no hint."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "nx.pid").write_text(str(os.getpid()))  # a live process holds the folder
    result = subprocess.run(
        dev_server(data, free_port()), cwd=PROJECT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: a development server already runs from this data folder (pid {os.getpid()}): stop it, "
        "or give another folder (DATA= (--data-dir)) and port, e.g. make dev-server DATA=.dev-server-2 PORT=27018"
    ]


def test_as_a_replica_set_it_names_the_address_it_serves(tmp_path):
    """A new user's try: `NX_REPLICA_SET=rs0` on port 27392 advertised its member as
    127.0.0.1:27017 (hello's hosts, primary, me), so `?replicaSet=rs0` went to 27017: refused.
    A replica set's members are reached at the addresses its config names (the SDAM spec)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NX_HOST"} | {"NX_REPLICA_SET": "rs0"}
    with started(dev_server(tmp_path / "data", port), env):
        client: pymongo.MongoClient = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{port}/?replicaSet=rs0", serverSelectionTimeoutMS=500
        )
        wait_for(answers(client), timeout=60, what="the replica set's primary", on_timeout=lambda: "")
        assert client.admin.command("hello")["me"] == f"127.0.0.1:{port}"
        client.close()


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str]) -> Iterator[None]:
    """A development server of its own, its output discarded, killed with its group at the end."""
    server = subprocess.Popen(
        command,
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


@pytest.mark.parametrize(("flags", "set_name"), [([], "rs0"), (["--standalone"], None)])
def test_it_is_a_replica_set_unless_asked_for_a_standalone(tmp_path, flags, set_name):
    """`make dev-server` served change streams as a standalone, which every real standalone
    refuses (40573): a developer's watcher worked there and not on their first real
    standalone. It now starts the primary of a one-member replica set (QUICKSTART's `watch`
    works on it); `--standalone` is a standalone, and refuses change streams as MongoDB does."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("NX_HOST", "NX_REPLICA_SET")}
    with started([*dev_server(tmp_path / "data", port), *flags], env):
        client: pymongo.MongoClient = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=500
        )
        wait_for(answers(client), timeout=60, what="the development server", on_timeout=lambda: "")
        assert client.admin.command("hello").get("setName") == set_name
        if set_name:
            client["quickstart"]["Commande"].watch().close()
        else:
            with pytest.raises(pymongo.errors.OperationFailure) as refused:
                client["quickstart"]["Commande"].watch()
            assert refused.value.code == 40573
        client.close()


@pytest.mark.parametrize("rows", ["abc", "0", "1e6"])
def test_a_history_that_is_no_whole_number_is_one_line_and_exit_2(tmp_path, rows):
    """A new user's try: `make dev-server HISTORY=abc` (NX_RESUME_RETENTION_ROWS) ended in a
    traceback; 0 started silently. One line, exit 2, before anything starts."""
    data = tmp_path / "data"
    env = {**os.environ, "NX_RESUME_RETENTION_ROWS": rows}
    result = subprocess.run(
        dev_server(data, free_port()), cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: NX_RESUME_RETENTION_ROWS={rows}: a whole number of changes, 1 or more "
        "(make dev-server HISTORY=200000)"
    ]
    assert not data.exists()


@pytest.mark.parametrize("port", ["70000", "-1", "0"])
def test_a_port_out_of_range_is_one_line_and_exit_2(tmp_path, port):
    """`-p 70000` was "OverflowError: bind(): port must be 0-65535", a traceback."""
    result = subprocess.run(
        [*dev_server(tmp_path / "data", 27017)[:-2], "-p", port],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: -p {port}: expected a port from 1 to 65535"]


@pytest.mark.parametrize("kind", ["a file", "under a file"])
def test_a_data_folder_that_cannot_be_made_is_one_line_and_exit_2(tmp_path, kind):
    """`--data-dir /etc/passwd` was "FileExistsError: [Errno 17] File exists", a traceback."""
    taken = tmp_path / "taken"
    taken.write_text("")
    folder = taken if kind == "a file" else taken / "data"
    result = subprocess.run(
        dev_server(folder, 27017), cwd=PROJECT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: DATA= (--data-dir) {folder}: cannot make the folder: ")
