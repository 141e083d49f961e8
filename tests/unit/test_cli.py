"""The command line in-process: ``main([...])`` with captured output."""

import argparse
import json

import pytest

from order_archiver.cli.main import build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert "order-archiver" in capsys.readouterr().out


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "--date-from" in out
    assert "--purge-source" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "required: COMMAND"),
        (["archive"], "invalid choice"),
        (["batch", "--run", "--dry-run"], "not allowed with argument"),
        (["batch", "--date-from", "tomorrow"], "expected YYYY-MM-DD"),
        (["batch", "--limit", "0"], "expected a number of at least 1"),
        (["batch", "--batch-size", "lots"], "expected a whole number"),
        (["batch", "--batch-size", "10001"], "expected at most 10000"),  # one command per chunk's ids
        (["batch", "-v", "-q"], "not allowed with argument"),
        (["simulate", "--p-delivered", "1.5"], "between 0 and 1"),
        (["simulate", "--count", "-3"], "expected a number of at least 1"),
        (["watch", "--token-store", "redis"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert "error: unexpected" not in err  # a known failure, classified: never the catch-all


@pytest.mark.parametrize(
    ("env", "argv", "fragment"),
    [
        ({}, ["batch"], "MONGODB_URI is not set"),
        ({"MONGODB_URI": "postgres://x"}, ["batch"], "MONGODB_URI: must start with mongodb://"),
        ({"MONGODB_URI": "mongodb://h", "BATCH_SIZE": "-1"}, ["batch"], "BATCH_SIZE"),
        (
            {"MONGODB_URI": "mongodb://h", "BATCH_SIZE": "50000"},
            ["batch"],
            "BATCH_SIZE: expected at most 10000",
        ),
        # A micro-batch's ids go to the server in one $in (its enrichment, the archive's look-up),
        # as a batch chunk's do: past ~850,000 ObjectIds the driver refuses the command
        # (DocumentTooLarge), and every restart of the watcher meets the same burst again.
        (
            {"MONGODB_URI": "mongodb://h", "WATCH_MAX_BATCH": "1000000"},
            ["watch"],
            "WATCH_MAX_BATCH: expected at most 10000",
        ),
        # A stop waits for the quiet getMore in hand: held longer than the stop's grace (8 s),
        # every stop of a quiet watcher would end in exit 1, "the server does not answer".
        (
            {"MONGODB_URI": "mongodb://h", "WATCH_MAX_AWAIT_MS": "60000"},
            ["watch"],
            "WATCH_MAX_AWAIT_MS: expected at most 4000",
        ),
        ({}, ["batch", "--simulation", "--env-file", "missing.env"], "--env-file: no such file"),
        ({}, ["batch", "--simulation", "--date-from", "today", "--date-to", "yesterday"], "must be before"),
    ],
)
def test_configuration_errors_are_one_line_exit_2(capsys, monkeypatch, env, argv, fragment):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert "error: unexpected" not in err  # a known failure, classified: never the catch-all


def test_watch_with_bad_name_is_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["watch", "--name", "a/b"])
    assert caught.value.code == 2
    assert "not a valid MongoDB name" in capsys.readouterr().err


def test_batch_simulation_runs_and_reports(capsys):
    code = main(["batch", "--run", "--simulation", "--count", "300", "--seed", "4"])
    out = capsys.readouterr().out
    assert code in (0, 3)
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("batch done: scanned ")
    assert ("rejected 0" in summary) == (code == 0)


def test_batch_json_report(capsys):
    code = main(["batch", "--run", "--simulation", "--count", "200", "--seed", "4", "-q", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is False
    assert report["mode"] == "full"  # a first run: no high-water mark yet
    assert report["pass_reason"].startswith("first run")
    assert report["archived"] > 0
    assert report["scanned"] == report["archived"] + report["rejected"]
    assert code == (3 if report["rejected"] else 0)
    assert {"already_archived", "purged", "seconds", "orders_per_second"} <= set(report)


def test_dry_run_prints_samples_and_writes_nothing(capsys, tmp_path):
    code = main(
        [
            "batch",
            "--simulation",
            "--count",
            "200",
            "--seed",
            "4",
            "--export-samples",
            "s.json",
            "--samples",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code in (0, 3)
    assert "dry run:" in out
    assert "nothing was written" in out
    samples = [line for line in out.splitlines() if line.startswith("{")]
    assert len(samples) == 2
    assert all(
        json.loads(line)["source"]["numero_commande"] == json.loads(line)["numero_commande"]
        for line in samples
    )
    exported = json.loads((tmp_path / "s.json").read_text())
    assert len(exported) == 2
    assert {"client", "items", "montant_total", "anomalies"} <= set(exported[0])


def test_simulation_uses_samples_json_when_present(capsys, tmp_path):
    assert main(["simulate", "--simulation", "--count", "120", "--seed", "9", "-q"]) == 0
    assert "written to samples.json" in capsys.readouterr().out
    main(["batch", "--simulation", "--json", "-q"])
    report = json.loads(capsys.readouterr().out)
    delivered = [
        o for o in json.loads((tmp_path / "samples.json").read_text())["Commande"] if o["status"] == "livrée"
    ]
    assert report["would_archive"] + report["rejected"] == len(delivered)


def test_broken_samples_file_is_a_config_error(capsys, tmp_path):
    (tmp_path / "samples.json").write_text("{not json")
    assert main(["batch", "--simulation"]) == 2
    assert "samples.json: not a samples file" in capsys.readouterr().err


def test_an_export_path_in_a_missing_folder_is_a_usage_error(capsys, tmp_path):
    code = main(
        [
            "batch",
            "--simulation",
            "--count",
            "50",
            "--export-samples",
            str(tmp_path / "no" / "dir" / "x.json"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "the folder" in err
    assert "does not exist" in err
    assert "error: unexpected" not in err  # a known failure, classified: never the catch-all


def test_no_output_carries_personal_data_unless_asked(capsys, tmp_path):
    """``batch --run --samples 1 --json`` printed a client's e-mail, phone, name and address:
    the report goes to cron mails and log collectors. Samples are masked in every output
    (text, JSON, --export-samples) unless --show-pii, and a run keeps none unless asked."""
    from order_archiver.simulation.database import simulation_client

    base = ["batch", "--simulation", "--count", "200", "--seed", "4", "--json"]
    main([*base, "--run"])
    assert json.loads(capsys.readouterr().out)["samples"] == []
    main([*base, "--run", "--samples", "1", "--export-samples", str(tmp_path / "s.json")])
    printed = json.loads(capsys.readouterr().out)["samples"]
    exported = json.loads((tmp_path / "s.json").read_text())
    for sample in (printed[0], exported[0]):
        assert sample["client"]["email"] == sample["client"]["nom"] == sample["adresse_livraison"] == "***"
        assert sample["livreur"] is None or sample["livreur"]["nom"] == "***"
    main([*base, "--samples", "1", "--show-pii"])
    shown = json.loads(capsys.readouterr().out)["samples"][0]
    assert "@" in shown["client"]["email"]
    assert shown["adresse_livraison"] != "***"
    assert simulation_client  # the same generated data each time (seed 4)


def test_a_failed_bulk_writes_documents_never_reach_the_log(tmp_path):
    """pymongo's BulkWriteError message quotes every failed statement whole: at DEBUG the
    traceback wrote 100 archive documents (names, e-mails, addresses) into the log file."""
    import traceback

    from bson import ObjectId
    from pymongo.errors import BulkWriteError

    from order_archiver.errors import FatalError
    from order_archiver.mongodb.storage import ArchiveWriter

    documents = [
        {"_id": ObjectId(), "numero_commande": f"CMD-{i}", "client": {"email": f"c{i}@x.fr"}}
        for i in range(3)
    ]
    errors = [
        {
            "index": i,
            "code": 121,
            "errmsg": "Document failed validation",
            "op": {"q": {}, "u": {"$setOnInsert": d}},
        }
        for i, d in enumerate(documents)
    ]

    class Refusing:
        full_name = "livraison.Commande_archive"

        def bulk_write(self, requests, ordered):
            raise BulkWriteError(
                {"writeErrors": errors, "writeConcernErrors": [], "nUpserted": 0, "upserted": []}
            )

    with pytest.raises(FatalError) as stopped:
        ArchiveWriter(Refusing()).upsert(documents)
    logged = "".join(traceback.format_exception(stopped.value))
    assert "121" in logged
    assert "@x.fr" not in logged
    assert "CMD-1" not in logged


@pytest.mark.parametrize("command", ["batch", "watch", "status", "verify", "rejects", "doctor"])
def test_a_password_on_the_command_line_is_refused_without_being_shown(command, capsys):
    """``--archive-uri mongodb://user:pass@...`` is readable by any local user in the process
    list: exit 2 before anything runs, the way to give it named, the password never echoed."""
    with pytest.raises(SystemExit) as refused:
        main([command, "--archive-uri", "mongodb://archiver:Sup3r-S3cret@archive.example:27017/"])
    err = capsys.readouterr().err
    assert refused.value.code == 2
    assert "holds a password" in err
    assert "ARCHIVE_MONGODB_URI" in err
    assert "Sup3r-S3cret" not in err
    # Without a password (x.509, or the environment holds the rest): accepted as before.
    assert (
        build_parser().parse_args([command, "--archive-uri", "mongodb://archive.example:27017/"]).archive_uri
    )


@pytest.mark.parametrize(
    ("query", "named", "secret"),
    [
        ("tlsCertificateKeyFilePassword=K3y-Pa55", "tlsCertificateKeyFilePassword", "K3y-Pa55"),
        ("tlscertificatekeyfilepassword=K3y-Pa55", "tlsCertificateKeyFilePassword", "K3y-Pa55"),  # any case
        (
            "authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:FwoGZXIvYXdz",
            "authMechanismProperties=AWS_SESSION_TOKEN",
            "FwoGZXIvYXdz",
        ),
        (
            "authMechanismProperties=AWS_SESSION_TOKEN%3AFwoGZXIvYXdz",  # percent-encoded
            "authMechanismProperties=AWS_SESSION_TOKEN",
            "FwoGZXIvYXdz",
        ),
    ],
)
def test_a_secret_in_a_uri_option_on_the_command_line_is_refused_without_being_shown(
    query, named, secret, capsys
):
    """#31 item 6: ``--archive-uri`` refused a password but took the key file's password and an
    AWS session token, as readable in the process list as a password."""
    with pytest.raises(SystemExit) as refused:
        main(["batch", "--archive-uri", f"mongodb://archive.example:27017/?tls=true&{query}"])
    err = capsys.readouterr().err
    assert refused.value.code == 2
    assert f"holds {named}" in err
    assert secret not in err
    assert len(err.strip().splitlines()) == 1
    # An option that carries no secret stays accepted (a Kerberos service name).
    harmless = "mongodb://archive.example:27017/?authMechanismProperties=SERVICE_NAME:mongodb"
    assert build_parser().parse_args(["batch", "--archive-uri", harmless]).archive_uri


def _flags_by_command():
    """Each command's options as argparse holds them: flag -> (type, default, help, choices)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = {}
    for name, sub in commands.choices.items():
        for action in sub._actions:
            for flag in action.option_strings:
                found.setdefault(flag, {})[name] = (
                    getattr(action.type, "__name__", action.type),
                    action.default,
                    action.help,
                    action.choices,
                )
    return found


def test_each_option_means_the_same_in_every_command():
    """Declared once (order_archiver/cli/definition.py): a flag has one type, one default and
    one help wherever it appears; a command that needs another default, or where the flag does
    something else (restore --run writes the source), says so in its declaration."""
    from order_archiver.cli.definition import COMMANDS

    for flag, by_command in _flags_by_command().items():
        declared = {
            command: spec
            for command, spec in by_command.items()
            if flag.lstrip("-") not in COMMANDS[command].defaults
            and flag.lstrip("-") not in COMMANDS[command].helps
        }
        assert len({spec for spec in declared.values()}) <= 1, (flag, declared)


def test_the_simulation_options_share_their_defaults_with_the_generator():
    from order_archiver.simulation.generator import DEFAULT_COUNT, DEFAULT_SEED

    by_flag = _flags_by_command()
    for command in ("batch", "simulate"):
        assert by_flag["--count"][command][1] == DEFAULT_COUNT
        assert by_flag["--seed"][command][1] == DEFAULT_SEED


def test_no_option_is_declared_outside_the_definition():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert "add_argument(" not in (root / "main.py").read_text()
    definition = (root / "order_archiver" / "cli" / "definition.py").read_text()
    assert definition.count("add_argument(") == 2  # --version, and the one that adds every option


@pytest.mark.parametrize(
    ("argv", "limit"),
    [(["rejects"], 50), (["rejects", "--limit", "3"], 3), (["rejects", "--all"], None)],
)
def test_rejects_shows_the_newest_fifty_unless_told(argv, limit):
    args = build_parser().parse_args(argv)
    assert (None if args.all else args.limit) == limit


def test_rejects_limit_zero_is_refused_like_batch_limit_zero(capsys):
    for argv in (
        ["rejects", "--limit", "0"],
        ["batch", "--limit", "0"],
        ["rejects", "--all", "--limit", "5"],
    ):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
    assert "expected a number of at least 1" in capsys.readouterr().err


def test_a_log_dir_that_is_a_symbolic_link_is_refused(tmp_path, monkeypatch, capsys):
    """#31 item 7: the logs (orders' and clients' ids) went wherever LOG_DIR pointed."""
    elsewhere = tmp_path / "someone-elses"
    elsewhere.mkdir()
    (tmp_path / "logs").symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    assert main(["batch", "--simulation", "--limit", "5"]) == 2
    err = capsys.readouterr().err
    assert "LOG_DIR" in err
    assert "a symbolic link; give the folder itself" in err
    assert len(err.strip().splitlines()) == 1
    assert list(elsewhere.iterdir()) == []


def test_a_log_dir_open_to_others_is_tightened_and_said(tmp_path, monkeypatch, capsys):
    """#31 item 7: an existing LOG_DIR left 0755 let every local user read the logs."""
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o755)
    monkeypatch.setenv("LOG_DIR", str(logs))
    assert main(["batch", "--simulation", "--limit", "5"]) in (0, 3)
    assert oct(logs.stat().st_mode & 0o777) == oct(0o700)
    assert "was open to other users (755): made 0700" in capsys.readouterr().err


def test_export_samples_to_a_symbolic_link_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    """#31 item 7: the file is opened without following links, so a planted link made the run
    fail (exit 1) after all its work; it is refused first, exit 2, one line, nothing done."""
    (tmp_path / "samples.json").symlink_to(tmp_path / "elsewhere.json")
    assert main(["batch", "--simulation", "--limit", "5", "--export-samples", "samples.json"]) == 2
    captured = capsys.readouterr()
    assert "--export-samples samples.json: a symbolic link; name the file itself" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.out == ""  # no run: no report
    assert not (tmp_path / "elsewhere.json").exists()


def test_a_run_that_failed_before_reading_anything_says_only_its_error(capsys, monkeypatch):
    """A new user's try: "batch stopped before the end, counts so far: scanned 0, archived 0, ..."
    came before the one error line of a run that could not start (a replica set advertising a
    host that refused). A run that read nothing has only its error to say; with --json the
    report still comes (a machine reads it), and a run that did read says its counts."""
    from order_archiver.batch.job import BatchArchiver
    from order_archiver.errors import TransientError

    def fails(self):
        raise TransientError("cannot reach MongoDB: 127.0.0.1:27017: connection refused")

    monkeypatch.setattr(BatchArchiver, "run", fails)
    assert main(["batch", "--simulation", "--run"]) == 1
    out, err = capsys.readouterr()
    assert "counts so far" not in out + err
    assert err.strip().endswith("connection refused")
    assert main(["batch", "--simulation", "--run", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["scanned"] == 0


def test_a_quiet_getmore_returns_within_the_stop_grace():
    """The longest WATCH_MAX_AWAIT_MS accepted leaves a stop on time: a getMore held that long,
    then the micro-batch in hand, within the watchdog's grace (``STOP_GRACE_S``)."""
    from order_archiver.cli.main import STOP_GRACE_S
    from order_archiver.settings import MAX_WATCH_AWAIT_MS

    assert MAX_WATCH_AWAIT_MS / 1000 <= STOP_GRACE_S / 2


def test_a_local_file_error_is_not_said_to_be_the_cold_tiers(tmp_path, monkeypatch, capsys):
    """The cold tier's storage errors (an ``OSError`` of pyarrow's) are named as the cold tier's
    with what to fix (errors.storage_fault). An ``OSError`` of anything else, here the disk full
    while ``--metrics-file`` is written after the run, is not the cold tier's: saying "cold tier
    (ARCHIVE_COLD_URL): the storage refused the request" sent the user to the wrong setting."""
    import errno

    from order_archiver.reporting import metrics

    def disk_full(path, content):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(metrics, "write_textfile", disk_full)
    code = main(["batch", "--simulation", "--run", "--metrics-file", str(tmp_path / "m.prom")])
    err = capsys.readouterr().err
    assert code == 1
    assert "cold tier" not in err
    assert "ARCHIVE_COLD_URL" not in err
    assert "No space left on device" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["batch", "--archive-urii", "mongodb://user:s3cret@h/db"],  # a mistyped flag, its value echoed
        ["batch", "--token-store", "mongodb://user:s3cret@h/db"],  # an invalid choice, echoed
        ["mongodb://user:s3cret@h/db"],  # a URI given as the command
    ],
)
def test_a_usage_error_never_prints_a_password_it_was_given(argv, capsys):
    """argparse echoes what it did not take; ``--archive-uri`` itself refuses a password on the
    command line so that none is printed: a mistyped flag printed it whole (a review)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "s3cret" not in err
    assert "user:***@" in err


@pytest.mark.parametrize("stopped_at", [1, 2])
def test_an_interrupted_run_prints_its_counts_so_far_even_zeros(capsys, monkeypatch, stopped_at):
    """A new user's Ctrl-C 4 s into `batch --run --max-rate 200` printed only "error:
    interrupted: the run stopped after its last complete chunk; run it again to finish": the
    report came only once something was scanned, where commands.md promises an interrupted run
    its counts so far before the error line (a SIGTERM a bit later, after a chunk, did print
    them). The stop event is set as the signal handler sets it, at a chunk boundary: before the
    first chunk is read (nothing scanned yet), or before the second."""
    from order_archiver.batch import pacing

    pace, boundaries = pacing.Pacer.pace, []

    def stopped_at_a_boundary(self, orders):
        boundaries.append(orders)
        if len(boundaries) == stopped_at:
            self.stop_event.set()  # what SIGINT's handler does (cli.main._install_stop_handlers)
        pace(self, 0)  # the pacing itself, without its wait: no sleep in a unit test

    monkeypatch.setattr(pacing.Pacer, "pace", stopped_at_a_boundary)
    code = main(["batch", "--simulation", "--run", "--max-rate", "200"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "batch stopped before the end, counts so far: scanned " in out, out + err
    scanned = 0 if stopped_at == 1 else 100  # the simulation's batch size
    assert f"counts so far: scanned {scanned}, archived {scanned}," in out, out
    assert err.strip().splitlines()[-1].startswith("error: interrupted: the run stopped"), err


@pytest.mark.parametrize(
    "argv",
    [
        ["batch", "--limit", "mongodb://user:s3cret@h/db"],  # a type function's message echoes it
        ["batch", "--dry-run=mongodb://user:s3cret@h/db"],  # ignored explicit argument
        ["batch", "--max=mongodb://user:s3cret@h/db"],  # an ambiguous abbreviation
    ],
)
def test_every_usage_error_path_redacts(argv, capsys):
    """Every echo path argparse has goes through ``error()``: a type's message, an ignored
    explicit argument, an ambiguous abbreviation each printed the password (a review)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "s3cret" not in capsys.readouterr().err


@pytest.mark.parametrize("flags", ["-vmongodb://user:s3cret@h/db", "-qvmongodb://user:s3cret@h/db"])
def test_a_short_flag_glued_to_a_uri_is_redacted(flags, capsys):
    """``-vVALUE``: argparse echoes the glued value as an ignored explicit argument."""
    with pytest.raises(SystemExit):
        main(["batch", flags])
    assert "s3cret" not in capsys.readouterr().err


@pytest.mark.parametrize("lookback", ["0", "0h", "-1h", "-5"])
def test_status_lookback_of_zero_or_below_is_refused_before_anything_is_read(monkeypatch, capsys, lookback):
    """A new user's try: `status --lookback 0` printed "last 0h" and "healthy": a probe set so
    never sees a backlog (an empty window holds none). Refused as `--max-runtime 0` and `--limit
    0` are: exit 2, one line naming the flag, before the server (unreachable here) is asked."""
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200")
    with pytest.raises(SystemExit) as caught:
        main(["status", f"--lookback={lookback}"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "argument --lookback: " in err
    assert "must be longer than 0" in err or "expected a duration like" in err


@pytest.mark.parametrize(
    ("env", "extra", "code"),
    [
        ({"BATCH_SIZE": "50000"}, [], 2),  # a bad setting, refused before the run
        ({}, ["--date-from", "today", "--date-to", "yesterday"], 2),  # a bad window, before the settings
    ],
)
def test_a_refused_or_failed_batch_says_success_0_in_its_metrics_file(
    tmp_path, monkeypatch, env, extra, code
):
    """An SRE's cron batch with a bad setting exited 2 and left the textfile as it was: the
    previous run's `order_archiver_batch_last_success 1` stood for up to 26 h. A run refused
    after its flags are read writes `success 0`, now, as a failed run (exit 1) already did
    (argparse's own refusals come before ``--metrics-file`` is known: commands.md)."""
    from order_archiver.reporting.metrics import write_batch_metrics

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "batch.prom"
    write_batch_metrics(path, object(), True, now=lambda: 1000.0)  # yesterday's good run
    assert main(["batch", "--run", "--simulation", "--metrics-file", str(path), *extra]) == code
    figures = dict(
        line.split(" ", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )
    assert float(figures["order_archiver_batch_last_success"]) == 0
    assert float(figures["order_archiver_batch_last_run_timestamp_seconds"]) > 1000
