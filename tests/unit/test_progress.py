import io
import os
import re

from order_archiver.reporting.progress import Progress, progress_mode


def test_mode_follows_the_terminal(monkeypatch):
    assert progress_mode(quiet=True) == "off"
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress_mode(quiet=False) == "log"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

        def fileno(self):
            return 2

    monkeypatch.setattr("sys.stderr", Terminal())
    monkeypatch.setattr("os.get_terminal_size", lambda fd: os.terminal_size((80, 24)))
    assert progress_mode(quiet=False) == "bar"


def test_a_terminal_that_says_no_width_gets_the_log_lines(monkeypatch):
    """A new user's try: `batch --full --max-rate 250` in a pseudo-terminal made without a size
    (columns 0: `script`, `docker exec -t`, `kubectl exec -t` before a resize) was silent for
    25 s: tqdm draws nothing at width 0. Such a terminal gets the progress lines."""

    class SizelessTerminal(io.StringIO):
        def isatty(self):
            return True

        def fileno(self):
            return 2

    monkeypatch.setattr("sys.stderr", SizelessTerminal())
    monkeypatch.setattr("os.get_terminal_size", lambda fd: os.terminal_size((0, 0)))
    assert progress_mode(quiet=False) == "log"


def test_log_mode_writes_count_rate_and_eta(caplog):
    caplog.set_level("INFO")
    progress = Progress("archiving", total=100, mode="log", log_every_s=0)
    progress.update(40)
    progress.close()
    line = caplog.records[-1].getMessage()
    assert line.startswith("archiving: 40/100 orders")
    assert "ETA" in line


def test_bar_mode_draws_on_stderr(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    progress = Progress("archiving", total=10, mode="bar")
    progress.update(10)
    progress.close()
    assert "10/10" in err.getvalue()


def test_off_says_nothing(caplog, capsys):
    progress = Progress("archiving", total=10, mode="off", log_every_s=0)
    progress.update(10)
    progress.close()
    assert not caplog.records
    assert not capsys.readouterr().err


def test_the_metrics_textfile_follows_no_planted_link(tmp_path):
    """#31 item 7: prometheus_client writes ``<file>.<pid>.<thread>`` first, a name another
    user of the textfile folder can plant a symbolic link at; the figures then overwrote the
    file it pointed to. Written through a temporary file of our own, renamed over the file."""
    import os
    import threading
    from types import SimpleNamespace

    from order_archiver.reporting.metrics import write_batch_metrics

    target = tmp_path / "order_archiver.prom"
    victim = tmp_path / "victim"
    victim.write_text("kept")
    planted = tmp_path / f"{target.name}.{os.getpid()}.{threading.current_thread().ident}"
    planted.symlink_to(victim)
    report = SimpleNamespace(scanned=3, archived=2)
    write_batch_metrics(target, report, succeeded=True, now=lambda: 1.0)
    assert victim.read_text() == "kept"
    assert "order_archiver_batch_last_archived 2.0" in target.read_text()
    assert not target.is_symlink()
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["order_archiver.prom", "victim", planted.name]
    )


def test_what_the_count_is_made_of_is_summed_and_shown_in_words(caplog, monkeypatch):
    """``update``'s figures (batch: archived, already archived...) after the rate, summed over
    the updates, in a log line and on the bar."""
    caplog.set_level("INFO")
    progress = Progress("archiving", mode="log", log_every_s=0)
    progress.update(50, archived=5, already_archived=45)
    progress.update(50, archived=0, already_archived=50)
    line = caplog.records[-1].getMessage()
    assert re.fullmatch(r"archiving: 100 orders \(\d+/s\): archived 5, already archived 95", line), line
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = Progress("archiving", total=100, mode="bar")
    bar.update(100, archived=5, already_archived=95)
    bar.close()
    assert "archived 5, already archived 95" in err.getvalue()
