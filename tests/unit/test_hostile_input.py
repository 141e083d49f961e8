"""Bad input from a hostile new user: each refused with one line naming what to fix, exit 2,
before anything is written; never a traceback, never the catch-all ("error: unexpected")."""

import json

import pytest

from order_archiver.cli.main import main


def _one_line_refusal(err: str, fragment: str) -> None:
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert "error: unexpected" not in err  # a known failure, classified: never the catch-all


# A duration the date arithmetic cannot hold (now - 9999999d is before year 1): it was accepted,
# and the run that used it ended in "error: unexpected OverflowError: date value out of range",
# exit 1, after its writes (PURGE_AFTER: once the orders were archived, before the purge).
@pytest.mark.parametrize(
    ("setting", "argv"),
    [
        ("PURGE_AFTER", ["batch", "--simulation", "--run", "--purge-source"]),
        ("RESTORE_HOLD", ["batch", "--simulation", "--run", "--purge-source"]),
        ("BATCH_OVERLAP", ["batch", "--simulation"]),
        ("BATCH_FULL_SWEEP_EVERY", ["batch", "--simulation"]),
        ("BATCH_MAX_LAG", ["batch", "--simulation"]),
    ],
)
def test_a_duration_past_a_hundred_years_is_refused_before_the_run(setting, argv, monkeypatch, capsys):
    monkeypatch.setenv(setting, "9999999d")
    assert main(argv) == 2
    _one_line_refusal(capsys.readouterr().err, f"{setting}: must be at most 36500d")


@pytest.mark.parametrize("flag", ["--max-runtime", "--max-lag"])
def test_a_flag_duration_past_a_hundred_years_is_a_usage_error(flag, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["batch", "--simulation", flag, "9999999d"])
    assert caught.value.code == 2
    _one_line_refusal(capsys.readouterr().err, "must be at most 36500d")


# An offset that moves the bound past datetime's range (year 1 or 9999 in UTC): a traceback
# (OverflowError in argparse's type conversion), exit 1.
@pytest.mark.parametrize(
    "argv",
    [
        ["batch", "--simulation", "--date-from", "0001-01-01T00:00:00+01:00"],
        ["batch", "--simulation", "--date-to", "9999-12-31T23:00:00-05:00"],
        ["restore", "--date-from", "0001-01-01T00:00:00+01:00"],
        ["verify", "--date-to", "9999-12-31T23:00:00-05:00"],
    ],
)
def test_a_date_bound_out_of_range_in_utc_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    _one_line_refusal(capsys.readouterr().err, "out of range")


# An empty number or id (`--numero "$N"` with N unset) was looked for: "not found anywhere",
# exit 3 (find), or "0 selected" (restore), as if the order did not exist.
@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["find", "--numero", ""], "argument --numero: must not be empty"),
        (["find", "--numero", "  "], "argument --numero: must not be empty"),
        (["restore", "--numero", "CMD-000001", "--numero", ""], "argument --numero: must not be empty"),
        (["find", "--id", ""], "argument --id: must not be empty"),
        (["restore", "--id", " "], "argument --id: must not be empty"),
    ],
)
def test_an_empty_order_number_or_id_is_a_usage_error(argv, fragment, monkeypatch, capsys):
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    _one_line_refusal(capsys.readouterr().err, fragment)


# A blank file flag: --export-samples "" wrote no samples and said nothing, --env-file "" read
# ./.env instead, --token-file "" ended in "unexpected ValueError: PosixPath('.') has an empty
# name", exit 1, --stop-file "" was "a folder".
@pytest.mark.parametrize(
    "argv",
    [
        ["batch", "--simulation", "--export-samples", ""],
        ["batch", "--simulation", "--metrics-file", " "],
        ["batch", "--simulation", "--stop-file", ""],
        ["batch", "--simulation", "--env-file", ""],
        ["watch", "--token-file", ""],
        ["retire-watcher", "--token-file", ""],
        ["simulate", "--simulation", "--samples-file", ""],
    ],
)
def test_a_blank_file_flag_is_a_usage_error(argv, monkeypatch, capsys):
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")
    flag = next(word for word in argv if word.startswith("--") and word != "--simulation")
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    _one_line_refusal(capsys.readouterr().err, f"argument {flag}: must not be empty")


# Orders spread over more days than a date holds: "unexpected OverflowError", exit 1.
@pytest.mark.parametrize("days", ["800000", "99999999999999999999"])
def test_simulate_days_past_a_hundred_years_is_a_usage_error(days, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["simulate", "--simulation", "--days", days])
    assert caught.value.code == 2
    _one_line_refusal(capsys.readouterr().err, "argument --days: expected at most 36500")


# "~nouser/logs": expanduser raised outside the check, "unexpected RuntimeError: Could not
# determine home directory.", exit 1.
def test_a_log_dir_in_an_unknown_home_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("LOG_DIR", "~no_such_user_here/logs")
    assert main(["batch", "--simulation"]) == 2
    err = capsys.readouterr().err
    _one_line_refusal(err, "LOG_DIR")
    assert "not a usable" in err


# A cold tier's folder with a space or an accent in its name: pyarrow's from_uri refused the
# URL ("Cannot parse URI ... syntax error at character ' '"), exit 2, a folder there unusable.
@pytest.mark.parametrize("name", ["cold tier", "archivé"])
def test_a_cold_folder_named_with_a_space_or_an_accent_takes_the_files(name, tmp_path, monkeypatch, capsys):
    folder = tmp_path / name
    folder.mkdir()
    monkeypatch.setenv("ARCHIVE_COLD_URL", f"file://{folder}")
    monkeypatch.setenv("ARCHIVE_COLD_AFTER", "1d")
    assert main(["batch", "--simulation", "--run", "--json"]) == 3  # the simulation's order without a number
    captured = capsys.readouterr()
    assert "error" not in captured.err
    assert json.loads(captured.out)["cold"]["moved"] == 0  # checked, written to (the probe), moved to


# An S3-compatible store's endpoint given with its credentials in it: the AWS SDK took the
# access key for the host, and the error printed it ("Could not resolve host: AKIA...").
@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_credentials_in_an_aws_endpoint_url_are_refused_unshown(variable, monkeypatch, capsys):
    monkeypatch.setenv(variable, "http://AKIAEXAMPLEKEY:wJalrEXAMPLESECRET@127.0.0.1:9")
    monkeypatch.setenv("ARCHIVE_COLD_URL", "s3://bucket/prefix")
    monkeypatch.setenv("ARCHIVE_COLD_AFTER", "730d")
    assert main(["batch", "--simulation", "--run"]) == 2
    captured = capsys.readouterr()
    _one_line_refusal(captured.err, f"{variable}: holds credentials")
    for secret in ("AKIAEXAMPLEKEY", "wJalrEXAMPLESECRET"):
        assert secret not in captured.out + captured.err


# A negative duration ("-1d") was taken for an unknown option: "expected one argument", not
# what is wrong with the value.
@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["status", "--max-heartbeat-age", "-1d"], "argument --max-heartbeat-age: expected a duration"),
        (["batch", "--simulation", "--max-runtime", "-2h"], "argument --max-runtime: expected a duration"),
        (["batch", "--simulation", "--date-from", "-7d"], "argument --date-from: expected YYYY-MM-DD"),
    ],
)
def test_a_negative_duration_is_said_wrong_as_a_value(argv, fragment, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    _one_line_refusal(capsys.readouterr().err, fragment)


# A file flag refused after the log folder was made: the refusal wrote (LOG_DIR created).
@pytest.mark.parametrize(
    ("flag", "fragment"),
    [
        ("--stop-file", "the folder"),
        ("--export-samples", "the folder"),
        ("--metrics-file", "the folder"),
    ],
)
def test_a_file_flag_refused_leaves_no_log_folder(flag, fragment, tmp_path, monkeypatch, capsys):
    logs = tmp_path / "logs"
    monkeypatch.setenv("LOG_DIR", str(logs))
    assert main(["batch", "--simulation", "--run", flag, str(tmp_path / "missing" / "file")]) == 2
    _one_line_refusal(capsys.readouterr().err, f"{flag} {tmp_path / 'missing' / 'file'}: {fragment}")
    assert not logs.exists()


# Numbers past what the driver, MongoDB or a wait can take were accepted, and the command that
# used them ended in "error: unexpected ...", exit 1 (against nx-27017: watch with
# WATCH_MAX_AWAIT_MS, WATCH_MAX_BATCH or MONGODB_WRITE_TIMEOUT_MS at 99999999999999999999,
# "OverflowError: MongoDB can only handle up to 8-byte ints"; MONGODB_TIMEOUT_MS=9999999999,
# "ValueError: serverSelectionTimeoutMS must be greater than 0 and less than one billion";
# WATCH_LEASE_TTL_S, "Python int too large to convert to C int"). MongoDB takes a time in ms
# up to INT_MAX (src/mongo/db/query/max_time_ms_parser.cpp: "... is out of range").
@pytest.mark.parametrize(
    ("setting", "value", "fragment"),
    [
        ("MONGODB_TIMEOUT_MS", "1000000000", "expected at most 999999999"),
        ("MONGODB_WRITE_TIMEOUT_MS", "2147483648", "expected at most 2147483647"),
        ("WATCH_MAX_AWAIT_MS", "99999999999999999999", "expected at most 4000"),
        ("WATCH_MAX_BATCH", "99999999999999999999", "expected at most 10000"),
        ("WATCH_HEARTBEAT_S", "99999999999999999999", "expected at most 3153600000"),
        ("WATCH_LOG_INTERVAL_S", "99999999999999999999", "expected at most 3153600000"),
        ("WATCH_LEASE_TTL_S", "99999999999999999999", "expected at most 3153600000"),
        ("INDEX_BUILD_WAIT_S", "99999999999999999999", "expected at most 3153600000"),
    ],
)
def test_a_number_past_its_limit_is_refused_before_the_run(setting, value, fragment, monkeypatch, capsys):
    monkeypatch.setenv(setting, value)
    assert main(["batch", "--simulation"]) == 2
    _one_line_refusal(capsys.readouterr().err, f"{setting}: {fragment}")


# A bind address that is neither an IP address nor a host name was found out after the
# connection, the token file's lock and the log folder, and named as the port's fault:
# "--metrics-port 9555: Name or service not known".
@pytest.mark.parametrize("address", ["not an address", "999.1.1.1", "", "127.0.0.1:9100"])
def test_a_metrics_address_that_names_no_host_is_a_usage_error(address, monkeypatch, capsys):
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")
    with pytest.raises(SystemExit) as caught:
        main(["watch", "--metrics-port", "9555", "--metrics-address", address])
    assert caught.value.code == 2
    _one_line_refusal(
        capsys.readouterr().err, "argument --metrics-address: expected an IP address or a host name"
    )


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "metrics.internal"])
def test_a_metrics_address_that_names_a_host_is_taken(address):
    from order_archiver.cli.main import build_parser

    args = build_parser().parse_args(["watch", "--metrics-port", "9555", "--metrics-address", address])
    assert args.metrics_address == address


# demo.py: its own argparse took --orders 0 or -5 (a demo of nothing, "consistent"), a usage
# error was two lines, and a bad setting or an unreachable server was a traceback, exit 1.
@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--orders", "0"], "argument --orders: expected a number of at least 1"),
        (["--orders", "-5"], "argument --orders: expected a number of at least 1"),
        (["--deliveries", "-1"], "argument --deliveries: expected a whole number >= 0"),
        (["--orders", "many"], "argument --orders: expected a whole number"),
    ],
)
def test_demo_usage_errors_are_one_line_exit_2(argv, fragment, capsys):
    import demo

    with pytest.raises(SystemExit) as caught:
        demo.run(argv)
    assert caught.value.code == 2
    _one_line_refusal(capsys.readouterr().err, fragment)


def test_demo_with_a_bad_setting_says_it_in_one_line(monkeypatch, capsys):
    import demo

    monkeypatch.setenv("MONGODB_URI", "postgres://u:s3cr3tpw@db")
    assert demo.main([]) == 2
    captured = capsys.readouterr()
    _one_line_refusal(captured.err, "MONGODB_URI: must start with mongodb://")
    assert "s3cr3tpw" not in captured.out + captured.err


def test_demo_with_a_server_that_refuses_says_it_in_one_line(monkeypatch, capsys):
    import demo

    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")
    monkeypatch.setenv("MONGODB_TIMEOUT_MS", "300")
    assert demo.main(["--auto"]) == 1
    err = capsys.readouterr().err
    assert "connection refused" in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


# A collection name MongoDB refuses ("collection names must not start or end with '.'"): taken,
# and the run ended in "error: unexpected InvalidName", exit 1.
@pytest.mark.parametrize("name", [".x", "x.", "a..b"])
def test_a_collection_name_mongodb_refuses_is_refused_first(name, monkeypatch, capsys):
    monkeypatch.setenv("ORDERS_COLLECTION", name)
    assert main(["batch", "--simulation"]) == 2
    _one_line_refusal(capsys.readouterr().err, "ORDERS_COLLECTION: not a valid MongoDB collection name")


# A number past a 64-bit integer: --limit 9223372036854775808 ended in "unexpected ValueError:
# Stop argument for islice() must be None or an integer", exit 1.
@pytest.mark.parametrize(
    "argv",
    [
        ["batch", "--simulation", "--limit", "9223372036854775808"],
        ["rejects", "--limit", "99999999999999999999"],
        ["batch", "--simulation", "--max-rate", "99999999999999999999"],
    ],
)
def test_a_number_past_64_bits_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    _one_line_refusal(capsys.readouterr().err, "expected at most 9223372036854775807")


# A CA file that holds no certificate: "error: unexpected SSLError: [X509:
# NO_CERTIFICATE_OR_CRL_FOUND]", exit 1, once the client was made.
def test_a_ca_file_without_a_certificate_is_refused_first(tmp_path, monkeypatch, capsys):
    not_a_bundle = tmp_path / "ca.pem"
    not_a_bundle.write_text("db1.example.net\n")
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")
    monkeypatch.setenv("MONGODB_TLS_CA_FILE", str(not_a_bundle))
    assert main(["status"]) == 2
    _one_line_refusal(capsys.readouterr().err, f"MONGODB_TLS_CA_FILE: {not_a_bundle}: no certificate in it")


# MongoDB's own databases: `local` is not replicated (an archive there is lost with its node,
# and a majority write cannot be acknowledged), `admin` and `config` hold the server's state.
# They were taken (`ARCHIVE_DATABASE=local batch --run` wrote the archive there).
@pytest.mark.parametrize("setting", ["MONGODB_DATABASE", "ARCHIVE_DATABASE"])
@pytest.mark.parametrize("name", ["local", "admin", "config", "Local"])
def test_mongodb_own_databases_are_refused(setting, name, monkeypatch, capsys):
    monkeypatch.setenv(setting, name)
    assert main(["batch", "--simulation"]) == 2
    _one_line_refusal(capsys.readouterr().err, f"{setting}: {name!r} is one of MongoDB's own databases")


# A client certificate file that holds no certificate and key: refused as "MONGODB_URI: Private
# key doesn't match certificate" once the client was made: the wrong setting named.
def test_a_cert_key_file_without_a_certificate_is_refused_by_its_name(tmp_path, monkeypatch, capsys):
    not_a_pem = tmp_path / "client.pem"
    not_a_pem.write_text("db1.example.net\n")
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")
    monkeypatch.setenv("MONGODB_TLS_CERT_KEY_FILE", str(not_a_pem))
    assert main(["status"]) == 2
    _one_line_refusal(
        capsys.readouterr().err,
        f"MONGODB_TLS_CERT_KEY_FILE: {not_a_pem}: not a certificate and its private key",
    )


@pytest.mark.parametrize("password", [None, b"a key's own password"])
def test_a_cert_key_file_is_taken_with_its_key_under_a_password_or_not(password, tmp_path):
    from order_archiver.settings import load_settings
    from tests.helpers import self_signed_pem

    pem = tmp_path / "client.pem"
    pem.write_bytes(self_signed_pem(password))  # under a password: the URI's, for the driver
    settings, _ = load_settings(
        environ={"MONGODB_URI": "mongodb://127.0.0.1:9/", "MONGODB_TLS_CERT_KEY_FILE": str(pem)}
    )
    assert settings.mongodb_tls_cert_key_file == str(pem)


# --env-file naming a folder was "no such file": it exists.
def test_an_env_file_that_is_a_folder_is_said_so(tmp_path, capsys):
    assert main(["batch", "--simulation", "--env-file", str(tmp_path)]) == 2
    _one_line_refusal(capsys.readouterr().err, f"--env-file {tmp_path}: a folder; name the settings file")


# An option given twice in the URI (w=majority&...&w=0): pymongo kept the last and said so in a
# Python warning, two lines with its source path, on stderr.
def test_a_uri_option_given_twice_is_refused_by_its_name(monkeypatch, capsys):
    monkeypatch.setenv("MONGODB_URI", "mongodb://u:s3cr3tpw@127.0.0.1:9/?w=majority&journal=false&W=0")
    assert main(["status"]) == 2
    captured = capsys.readouterr()
    _one_line_refusal(captured.err, "MONGODB_URI: malformed: the option 'w' is given twice (keep one)")
    assert "s3cr3tpw" not in captured.err


# A URI file of two lines (a second URI pasted under the first): "malformed: MongoDB URI options
# are key=value pairs", the reason nowhere near.
def test_a_uri_file_of_two_lines_is_said_so(tmp_path, monkeypatch, capsys):
    uri_file = tmp_path / "uri"
    uri_file.write_text("mongodb://u:s3cr3tpw@127.0.0.1:9/?replicaSet=rs0\nmongodb://other:9/\n")
    monkeypatch.setenv("MONGODB_URI_FILE", str(uri_file))
    assert main(["status"]) == 2
    captured = capsys.readouterr()
    _one_line_refusal(captured.err, f"MONGODB_URI_FILE {uri_file}: 2 lines; the connection string alone")
    assert "s3cr3tpw" not in captured.err


# watch's token file refused after the log folder was made: the refusal wrote (LOG_DIR created).
def test_a_token_file_refused_leaves_no_log_folder(tmp_path, monkeypatch, capsys):
    logs = tmp_path / "logs"
    monkeypatch.setenv("LOG_DIR", str(logs))
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")
    assert main(["watch", "--token-file", str(tmp_path)]) == 2
    _one_line_refusal(capsys.readouterr().err, f"RESUME_TOKEN_FILE {tmp_path}: is a folder")
    assert not logs.exists()


# /healthz's grace (WATCH_LIVENESS_S) shorter than a driver call may wait (server selection or
# connection: MONGODB_TIMEOUT_MS; a majority write: MONGODB_WRITE_TIMEOUT_MS): a
# watcher waiting for a MongoDB that is away answered 503 and Kubernetes restarted it, against
# the docs ("MongoDB away never fails it"). Refused with the settings, before anything is made.
@pytest.mark.timeout(20)  # before the check, this watch waited 90 s for a server at each try
def test_a_liveness_grace_shorter_than_a_call_to_mongodb_is_refused(tmp_path, monkeypatch, capsys):
    logs = tmp_path / "logs"
    monkeypatch.setenv("LOG_DIR", str(logs))
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")
    monkeypatch.setenv("MONGODB_TIMEOUT_MS", "90000")
    monkeypatch.setenv("WATCH_LIVENESS_S", "60")
    assert main(["watch", "--token-store", "mongo", "--metrics-port", "9556"]) == 2
    _one_line_refusal(capsys.readouterr().err, "WATCH_LIVENESS_S (60) must be longer than one call")
    assert not logs.exists()
    # The default timeouts (5 s, 10 s) leave the default grace (60 s) alone; without /healthz
    # (no --metrics-port) a long MONGODB_TIMEOUT_MS is the user's to choose.
    from order_archiver.cli.main import _settings, build_parser

    monkeypatch.delenv("LOG_DIR")
    args = build_parser().parse_args(["watch", "--token-store", "mongo"])
    assert _settings(args, healthz=False).watch_liveness_s == 60
    monkeypatch.setenv("WATCH_LIVENESS_S", "91")
    assert _settings(args, healthz=True).watch_liveness_s == 91
