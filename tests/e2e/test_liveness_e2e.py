"""watch's liveness (/healthz on the metrics port): this process's loop, never the deployment's
health. A Kubernetes liveness probe restarts the container when it fails; Kubernetes' guidance
(kubernetes.io, "Configure Liveness, Readiness and Startup Probes"; "Liveness, Readiness, and
Startup Probes") is that it should fail only for what a restart fixes (a deadlock), and not
depend on what is outside the process (a database). ``status`` is the deployment's health
(another watcher's stale heartbeat, MongoDB unreachable: exit 3 or 1), for readiness and alerts."""

from __future__ import annotations

import signal
import socket
import struct
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import run_cli
from tests.helpers import WatchProcess, seed_database, token_saved, wait_for
from teststand.fault_proxy import FaultProxy

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)
    except OSError:
        return 0  # not listening (yet)


def always_alive(port: int, seconds: float) -> None:
    """/healthz answers 200 at every look for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert healthz(port) == 200
        time.sleep(0.5)


@pytest.mark.test_server_only("a TCP proxy in front of the test server")
def test_liveness_is_this_watcher_not_the_deployment(nx_server, nx_client, nx_settings, db_name, tmp_path):
    """Another watcher killed -9 (status: UNHEALTHY), MongoDB unreachable (status: exit 1): this
    watcher's /healthz stays 200. Its loop hung (a server that holds the connection and answers
    nothing): 503 once WATCH_LIVENESS_S has passed; the server back, 200 again."""
    seed_database(nx_client[db_name], nx_settings, 50, seed=91, p_anomalies=0.0)
    with FaultProxy(nx_server.port) as proxy:
        env = {
            "MONGODB_URI": proxy.uri,
            "MONGODB_DATABASE": db_name,
            "LOG_DIR": "",
            "MONGODB_TIMEOUT_MS": "2000",
            "MONGODB_WRITE_TIMEOUT_MS": "2000",  # WATCH_LIVENESS_S is longer than each call's wait
            "WATCH_HEARTBEAT_S": "1",
            "WATCH_LIVENESS_S": "3",
        }
        port = free_port()
        mongo = ("--token-store", "mongo")
        ours = WatchProcess(env, tmp_path, *mongo, "--name", "eu-1", "--metrics-port", str(port))
        other = WatchProcess(env, tmp_path, *mongo, "--name", "tmp", unique_index=False)
        try:
            wait_for(lambda: healthz(port) == 200, what="eu-1's /healthz")
            database = nx_client[db_name]
            wait_for(
                lambda: token_saved(database, tmp_path, "mongo", "tmp"), what="the second watcher's token"
            )
            other.stop(signal.SIGKILL)
            time.sleep(4)
            status = run_cli("status", "-q", "--max-heartbeat-age", "3s", env=env, cwd=tmp_path)
            assert status.returncode == 3
            assert "watcher tmp" in status.stdout + status.stderr
            always_alive(port, 5)

            proxy.refuse_for(12)  # MongoDB unreachable: the watcher waits and reconnects
            assert run_cli("status", "-q", env=env, cwd=tmp_path).returncode == 1
            always_alive(port, 6)
            wait_for(lambda: time.monotonic() > proxy.refuse_until + 1, what="MongoDB back")

            proxy.holding = True  # a hung server: the loop's getMore never returns
            wait_for(lambda: healthz(port) == 503, timeout=30, what="/healthz failing a hung loop")
            proxy.holding = False
            proxy.cut_all()  # the held getMore fails; the watcher reconnects
            wait_for(lambda: healthz(port) == 200, timeout=30, what="/healthz alive again")
            assert ours.process.poll() is None
        finally:
            proxy.holding = False
            other.stop(signal.SIGKILL)
            ours.stop()


def reset_connection(port: int, request: bytes = b"") -> None:
    """A client that connects, sends ``request`` (maybe none) and resets the connection (RST:
    SO_LINGER 0, as a TCP health check or a load balancer's probe may): the server's read of the
    request fails ECONNRESET."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if request:
        sock.sendall(request)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_that_resets_its_connection_is_no_traceback_on_the_watchers_output(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """The metrics server (/metrics, /healthz) runs on threads of its own: a client that reset its
    connection before its request was read (ECONNRESET) printed socketserver's "Exception occurred
    during processing of request from ..." and a traceback on the watcher's output, at each
    probe. It is one DEBUG line now (with -v on the output; else the log file), the server goes
    on answering and the watcher on running (exit 0 at its SIGTERM)."""
    seed_database(nx_client[db_name], nx_settings, 20, seed=92, p_anomalies=0.0)
    env = {**nx_env, "RESUME_TOKEN_FILE": str(tmp_path / "token.json"), "LOG_DIR": ""}
    port = free_port()
    watcher = WatchProcess(env, tmp_path, "-v", "--metrics-port", str(port))
    try:
        wait_for(lambda: healthz(port) == 200, what="the watcher's /healthz", on_timeout=watcher.output)
        reset_connection(port)
        reset_connection(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # cut mid-headers
        said = "to the metrics server ended early (Connection reset by peer)"
        wait_for(
            lambda: watcher.output().count(said) == 2,
            what="the two resets said (the sentinel)",
            on_timeout=watcher.output,
        )
        assert healthz(port) == 200
    finally:
        code = watcher.stop()
    output = watcher.output()
    assert code == 0, output
    assert "Traceback" not in output
    assert "Exception occurred" not in output
