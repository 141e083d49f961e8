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


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_log_mode_writes_count_rate_and_eta(caplog, monkeypatch):
    caplog.set_level("INFO")
    clock = FakeClock()
    monkeypatch.setattr("order_archiver.reporting.progress.time", clock)
    progress = Progress("archiving", total=100, mode="log", log_every_s=0)
    for _ in range(4):
        clock.now += 2
        progress.update(10)
    progress.close()
    line = caplog.records[-1].getMessage()
    assert line == "archiving: 40/100 orders (5/s, ETA 12s)"


def test_the_rate_and_eta_leave_the_start_up_out_and_wait_to_be_measured(caplog, monkeypatch):
    """A first dry run's first line said "8/s, ETA 2834s" for a run of 40 s: the rate over the
    first chunk, which carried the start-up (the indexes looked at, the count, the first read).
    The rate is measured from the end of the first update on, and said (with the ETA) only once
    a few updates and seconds are measured; before, the line says when they come."""
    caplog.set_level("INFO")
    clock = FakeClock()
    monkeypatch.setattr("order_archiver.reporting.progress.time", clock)
    progress = Progress("examining", total=4000, mode="log", log_every_s=0)
    clock.now = 30.0  # the start-up: the first chunk of 100 is handed out 30 s in
    progress.update(100)
    clock.now = 31.0
    progress.update(100)
    assert caplog.records[-1].getMessage() == "examining: 200/4000 orders (rate and ETA after a few chunks)"
    for _ in range(9):  # then 100 a second
        clock.now += 1
        progress.update(100)
    assert caplog.records[-1].getMessage() == "examining: 1100/4000 orders (100/s, ETA 29s)"
    assert caplog.records[-1].rate == 100.0
    progress.close()


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
    assert re.fullmatch(
        r"archiving: 100 orders \(rate after a few chunks\): archived 5, already archived 95", line
    ), line
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = Progress("archiving", total=100, mode="bar")
    bar.update(100, archived=5, already_archived=95)
    bar.close()
    assert "archived 5, already archived 95" in err.getvalue()


def test_an_estimated_total_is_said_so_as_its_eta(caplog, monkeypatch):
    """A --partition share's total is the window's count divided by N: "~" before it and its ETA."""
    caplog.set_level("INFO")
    clock = FakeClock()
    monkeypatch.setattr("order_archiver.reporting.progress.time", clock)
    progress = Progress("archiving", total=100, mode="log", log_every_s=0, estimated=True)
    for _ in range(4):
        clock.now += 2
        progress.update(10)
    progress.close()
    record = caplog.records[-1]
    assert record.getMessage() == "archiving: 40/~100 orders (5/s, ETA ~12s)"
    assert record.total_estimated is True
