"""The password never leaves the process: every subcommand, with a URI that carries one, at
DEBUG level, in text and JSON logs, including failures and a watcher that loses its
connection. The test server accepts one account over SASL PLAIN (teststand/nx_launcher.py).
The one-shot commands run in-process (``run_in_process``: the same settings and output, a
second less each); the watcher, a service, as a subprocess."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import PLAIN_PASSWORD, PLAIN_USER
from tests.helpers import WatchProcess, archived_ids, run_in_process, token_saved, wait_for
from teststand.fault_proxy import FaultProxy

pytestmark = pytest.mark.e2e


def with_password(uri: str, password: str = PLAIN_PASSWORD) -> str:
    joined = "&" if "?" in uri else "?"  # a proxy's URI holds directConnection already
    return uri.replace("mongodb://", f"mongodb://{PLAIN_USER}:{password}@") + f"{joined}authMechanism=PLAIN"


@pytest.mark.test_server_only("the test server's PLAIN account and a TCP proxy in front of it")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_subcommand_ever_shows_the_password(
    nx_server, nx_client, db_name, tmp_path, log_format, monkeypatch, capsys
):
    database = nx_client[db_name]
    uri = with_password(nx_server.uri)
    base = {"MONGODB_DATABASE": db_name, "LOG_LEVEL": "DEBUG", "LOG_FORMAT": log_format, "LOG_DIR": "logs"}
    good = {**base, "MONGODB_URI": uri, "RESUME_TOKEN_FILE": str(tmp_path / "token.json")}
    wrong_password = {**good, "MONGODB_URI": with_password(nx_server.uri, "Wr0ng-" + PLAIN_PASSWORD)}
    # The default mechanism (SCRAM) with a user the server does not know.
    scram_refused = {
        **good,
        "MONGODB_URI": nx_server.uri.replace("mongodb://", f"mongodb://archiver:{PLAIN_PASSWORD}@"),
    }
    unreachable = {
        **good,
        "MONGODB_URI": with_password("mongodb://127.0.0.1:9/"),
        "MONGODB_TIMEOUT_MS": "200",
    }
    outputs: list[str] = []

    def run(*args: str, env: dict[str, str], expect: tuple[int, ...], script: str = "main.py") -> None:
        result = run_in_process(
            *args, "-v", env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys, script=script
        )
        outputs.extend([result.stdout, result.stderr])
        assert result.returncode in expect, result.stdout + result.stderr
        assert "Traceback" not in result.stderr

    run(
        "--count",
        "300",
        "--seed",
        "81",
        "--p-anomalies",
        "0.1",
        "--reset",
        env=good,
        expect=(0,),
        script="simulate.py",
    )
    run("batch", env=good, expect=(0,))  # no invalid orders (--p-anomalies 0): exit 0 exactly
    run("batch", "--run", env=good, expect=(0,))
    run("batch", "--run", env=wrong_password, expect=(1,))
    run("batch", "--run", env=scram_refused, expect=(1,))
    run("batch", "--run", env=unreachable, expect=(1,))
    run("status", env=good, expect=(0,))
    run("verify", env=good, expect=(0,))
    run("rejects", "--json", env=good, expect=(0,))
    assert database["Commande_archive"].count_documents({}) > 0  # the good runs did their work

    with FaultProxy(nx_server.port) as proxy:
        watch_env = {**good, "MONGODB_URI": with_password(proxy.uri), "WATCH_HEARTBEAT_S": "1"}
        watcher = WatchProcess(watch_env, tmp_path, "-v")
        try:
            wait_for(lambda: token_saved(database, tmp_path, "file"), what="the watcher to start")
            proxy.cut_all()
            later = [
                d["_id"] for d in database["Commande"].find({"status": "en_livraison"}, {"_id": 1}).limit(3)
            ]
            for order_id in later:
                database["Commande"].update_one({"_id": order_id}, {"$set": {"status": "livrée"}})
            proxy.cut_all()
            wait_for(
                lambda: set(later) <= archived_ids(database), timeout=60, what="deliveries after the cuts"
            )
        finally:
            assert watcher.stop(signal.SIGTERM) == 0
        outputs.append(watcher.output())

    logs = [path.read_text() for path in (tmp_path / "logs").iterdir()]
    everything = outputs + logs
    assert any("authentication failed" in text for text in everything)
    assert any("cannot reach MongoDB: 127.0.0.1:9: connection refused" in text for text in everything)
    for text in everything:
        assert PLAIN_PASSWORD not in text
        assert uri not in text
