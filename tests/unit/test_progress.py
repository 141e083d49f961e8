import io

from order_archiver.reporting.progress import Progress, progress_mode


def test_mode_follows_the_terminal(monkeypatch):
    assert progress_mode(quiet=True) == "off"
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress_mode(quiet=False) == "log"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    assert progress_mode(quiet=False) == "bar"


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
