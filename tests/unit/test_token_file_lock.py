"""One watcher per token file (#32 item 2): the file store's lock, taken by `watch`, checked
by `retire-watcher`, refused to a second holder with one line naming the first one's pid."""

import os
from datetime import UTC, datetime

import pytest

import order_archiver.cli.main as main
from order_archiver.errors import ExitCode, FatalError
from order_archiver.mongodb.token_lock import TokenFileBusy, TokenFileLock, lock_path
from order_archiver.mongodb.tokens import FileTokenStore
from tests.helpers import run_in_process

TOKEN = {"_data": "8263A1B2C3000000012B022C0100296E5A1004"}
ENV = {"MONGODB_URI": "mongodb://127.0.0.1:1/", "LOG_DIR": ""}


def test_a_second_lock_on_one_token_file_is_refused_with_the_holders_pid(tmp_path):
    """flock belongs to the open file, not the process: two holders in one process conflict."""
    token = tmp_path / "state" / "token.json"
    first = TokenFileLock(token, "watch")
    assert first.acquire() is True
    with pytest.raises(TokenFileBusy) as refused:
        TokenFileLock(token, "watch").acquire()
    assert refused.value.exit_code == ExitCode.USAGE
    assert f"watch (pid {os.getpid()} on " in str(refused.value)
    assert str(token) in str(refused.value)
    assert "\n" not in str(refused.value)
    first.release()
    with TokenFileLock(token, "watch"):  # released: the next one takes it
        pass
    assert lock_path(token).exists()
    assert lock_path(token).read_text() == ""


def test_the_lock_file_is_not_the_token_file_which_a_save_replaces(tmp_path):
    token = tmp_path / "token.json"
    with TokenFileLock(token, "watch"):
        FileTokenStore(token, "livraison.Commande").save(TOKEN)  # rename over token.json
        with pytest.raises(TokenFileBusy):
            TokenFileLock(token, "watch").acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.json", "token.json.lock"]


@pytest.fixture
def connecting_fails(monkeypatch):
    """The watcher gets as far as connecting, and fails there (exit 1): no server needed."""

    def refuse(*_args, **_kwargs):
        raise FatalError("connecting: not in this test")

    monkeypatch.setattr(main, "_open_clients", refuse)


def test_a_second_watch_on_a_held_token_file_exits_2_before_connecting(
    tmp_path, monkeypatch, capsys, connecting_fails
):
    token = tmp_path / "token.json"
    with TokenFileLock(token, "watch"):
        result = run_in_process(
            "watch", "--token-file", str(token), env=ENV, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
        )
    assert result.returncode == ExitCode.USAGE
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert f"is in use by watch (pid {os.getpid()} on " in result.stderr
    assert "connecting" not in result.stderr


def test_watch_releases_the_lock_when_it_ends(tmp_path, monkeypatch, capsys, connecting_fails):
    """It holds the lock while it runs (it failed connecting here, exit 1), and not after."""
    token = tmp_path / "token.json"
    result = run_in_process(
        "watch", "--token-file", str(token), env=ENV, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode == ExitCode.FAILED
    assert "connecting" in result.stderr
    assert lock_path(token).exists()  # it was taken
    with TokenFileLock(token, "watch"):  # and released
        pass


def saved_just_now(token):
    """A token a watcher saved a moment ago and never marked stopped: running, or killed -9."""
    FileTokenStore(token, "livraison.Commande").save(TOKEN, last_event_at=datetime.now(UTC))


def test_retire_watcher_is_refused_while_a_watcher_holds_the_lock(tmp_path, monkeypatch, capsys):
    token = tmp_path / "token.json"
    saved_just_now(token)
    with TokenFileLock(token, "watch"):
        result = run_in_process(
            "retire-watcher",
            "--token-file",
            str(token),
            env=ENV,
            cwd=tmp_path,
            monkeypatch=monkeypatch,
            capsys=capsys,
        )
    assert result.returncode == ExitCode.USAGE
    assert f"is running: watch (pid {os.getpid()} on " in result.stderr
    assert token.exists()


def test_retire_watcher_retires_a_killed_watcher_at_once(tmp_path, monkeypatch, capsys):
    """No lock held (a kill -9 releases it): the watcher is not running, however recent its
    last save; no two-minute wait."""
    token = tmp_path / "token.json"
    saved_just_now(token)
    result = run_in_process(
        "retire-watcher",
        "--token-file",
        str(token),
        env=ENV,
        cwd=tmp_path,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert result.returncode == ExitCode.OK, result.stderr
    assert not token.exists()
    with TokenFileLock(token, "watch"):  # retire-watcher released it
        pass


def test_without_file_locks_retire_watcher_falls_back_to_the_recent_save(tmp_path, monkeypatch, capsys):
    """A file system that refuses locks (ENOLCK): a warning, and the old rule for retiring."""
    import order_archiver.mongodb.token_lock as token_lock

    def no_locks(_fd: int) -> bool:
        raise OSError(37, "No locks available")

    monkeypatch.setattr(token_lock, "_try_lock", no_locks)
    token = tmp_path / "token.json"
    saved_just_now(token)
    result = run_in_process(
        "retire-watcher",
        "--token-file",
        str(token),
        env=ENV,
        cwd=tmp_path,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert result.returncode == ExitCode.USAGE
    assert "is its watcher running?" in result.stderr
    assert token.exists()
