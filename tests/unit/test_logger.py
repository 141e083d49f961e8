import json
import logging

import pytest

from config import Settings
from logger import LOG_FILE_NAME, get_logger, setup_logging

SECRET = "Sup3r-Secret_pw"
URI = f"mongodb://archiver:{SECRET}@db.example.net:27017/?authSource=admin"


@pytest.fixture
def configure(tmp_path):
    def configure(**changes):
        settings = Settings(mongodb_uri=URI, log_dir=str(tmp_path / "logs"), **changes)
        return setup_logging(settings)

    yield configure
    for handler in list(logging.getLogger().handlers):
        if getattr(handler, "_order_archiver", False):
            logging.getLogger().removeHandler(handler)
            handler.close()


def log_everything_dangerous():
    log = get_logger("test")
    log.info("connecting to %s", URI)
    log.warning("config says password=%s and pwd: %s", SECRET, SECRET)
    logging.getLogger("pymongo.connection").error("raw driver text with %s inside", SECRET)
    try:
        raise RuntimeError(f"failure talking to {URI}")
    except RuntimeError:
        log.exception("it failed")
    log.info("structured", extra={"uri": URI, "orders": 3})


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_never_reach_stderr_or_the_log_file(configure, capsys, tmp_path, log_format):
    configure(log_format=log_format, log_level="DEBUG")
    log_everything_dangerous()
    stderr = capsys.readouterr().err
    log_file = (tmp_path / "logs" / LOG_FILE_NAME).read_text()
    for output in (stderr, log_file):
        assert "it failed" in output  # the records are there...
        assert SECRET not in output  # ...without the secret
        assert "archiver:***@db.example.net" in output


def test_json_lines_have_the_standard_fields_and_extras(configure, capsys, tmp_path):
    configure(log_format="json")
    get_logger("batch").info("chunk written", extra={"orders": 100})
    lines = (tmp_path / "logs" / LOG_FILE_NAME).read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["message"] == "chunk written"
    assert record["level"] == "INFO"
    assert record["logger"] == "order_archiver.batch"
    assert record["orders"] == 100
    assert "time" in record


def test_log_file_rotates_by_size(configure, tmp_path):
    configure()
    handler = next(h for h in logging.getLogger().handlers if hasattr(h, "maxBytes"))
    assert handler.maxBytes > 0
    assert handler.backupCount > 0


def test_quiet_keeps_warnings_only_on_console(tmp_path, capsys):
    settings = Settings(mongodb_uri=URI, log_dir="")
    setup_logging(settings, verbosity=-1)
    get_logger().info("chatty")
    get_logger().warning("important")
    err = capsys.readouterr().err
    assert "important" in err
    assert "chatty" not in err
