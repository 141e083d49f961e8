"""A new user's first contact, from README and QUICKSTART alone: the first dry run's report,
a mistyped command or flag, the entry points outside the virtual environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from order_archiver.cli.main import main, simulate_main
from tests.conftest import ROOT

# What README and QUICKSTART have a new user run first: the default generated data (seed 42).
FIRST_DRY_RUN = ["batch", "--simulation", "--samples", "0"]


def test_a_first_dry_run_counts_the_missing_indexes_and_says_why_it_exits_3(capsys):
    assert main([*FIRST_DRY_RUN, "--json", "-q"]) == 3
    report = json.loads(capsys.readouterr().out)
    names = [f"{i['collection']}.{i['index']}" for i in report["indexes"]]  # --json: every field kept
    assert len(names) > 3
    assert {i["state"] for i in report["indexes"]} == {"missing"}
    assert report["rejected_new"] > 0  # the generated data holds invalid orders on purpose

    assert main(FIRST_DRY_RUN) == 3
    lines = capsys.readouterr().out.strip().splitlines()
    summary = lines[0]
    # One count, not the names (they made a 900-character line).
    assert f"; {len(names)} indexes missing, which batch --run builds (-v lists them)" in summary
    assert not any(name in summary for name in names)
    assert len(summary) < 320
    # The last line says why the exit code is 3, how many, and (a simulation's: kept nowhere)
    # why `rejects` cannot list them (test_day1_simulation_lines.py).
    assert re.fullmatch(
        rf"exit 3: {report['rejected_new']} orders? would be rejected as invalid .*"
        r"--simulation starts afresh each run .*none is kept for `rejects` to list",
        lines[-1],
    )

    assert main([*FIRST_DRY_RUN, "-v"]) == 3
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.startswith("index not ready: ")]
    assert [line.split()[3] for line in listed] == names  # one a line, each with its cost
    assert all("; until it is, " in line for line in listed)


def test_a_run_that_rejects_new_orders_says_why_it_exits_3_and_a_second_one_exits_0(capsys):
    run = ["batch", "--run", "--simulation"]
    assert main(run) == 3
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(
        r"exit 3: \d+ orders? rejected as invalid .*--simulation starts afresh each run.*", last
    )
    assert main([*run, "--json", "-q"]) == 3  # the simulation starts afresh each time
    assert "exit 3" not in capsys.readouterr().out  # --json: one JSON object, nothing after it


@pytest.mark.parametrize("script", ["main.py", "simulate.py", "demo.py"])
def test_a_script_run_without_the_dependencies_names_the_fix_in_one_line(script):
    """``python3 main.py`` outside .venv: ``-S`` (no site-packages) stands for a Python without
    the requirements; the script must say what to run, exit 2, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [sys.executable, "-S", script, "batch", "--simulation"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert re.fullmatch(
        rf"{script}: order-archiver's dependencies are not installed for \S+ \(no module named "
        rf"'\w+', from [\w-]+\): run `make venv` once .*, then `\.venv/bin/python {script} \.\.\.`.*\n",
        result.stderr,
    )


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["bacth"], "main.py: error: argument COMMAND: invalid choice: 'bacth'; did you mean 'batch'?"),
        (
            ["frget", "--client", "x"],
            "main.py: error: argument COMMAND: invalid choice: 'frget'; did you mean 'forget'?",
        ),
        (
            ["batch", "--dry-rnu"],
            "main.py batch: error: unrecognized arguments: --dry-rnu; did you mean --dry-run?",
        ),
        (
            ["batch", "--simulation", "--date-frm", "7d"],
            "main.py batch: error: unrecognized arguments: --date-frm 7d; did you mean --date-from?",
        ),
        (
            ["watch", "--token-store", "mongoo"],
            "main.py watch: error: argument --token-store: invalid choice: 'mongoo'; did you mean 'mongo'?",
        ),
        (
            ["--verbose", "status"],
            "main.py status: error: unrecognized arguments: --verbose; put --verbose after the command "
            "(main.py status --verbose ...)",
        ),
        # Nothing close among its own: the commands that take it (a new user typed verify
        # --partition and was told "did you mean --date-to?": "--" alike made them close).
        (
            ["status", "--run"],
            "main.py status: error: unrecognized arguments: --run; --run is batch's, forget's and "
            "restore's, not status's",
        ),
        (
            ["verify", "--partition", "0/3"],
            "main.py verify: error: unrecognized arguments: --partition 0/3; --partition is batch's, "
            "not verify's",
        ),
        (["status", "--frobnicate"], "main.py status: error: unrecognized arguments: --frobnicate"),
    ],
)
def test_a_mistyped_command_or_flag_gets_the_closest_name_in_one_line_from_its_command(capsys, argv, line):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert capsys.readouterr().err == f"{line} (see --help)\n"


def test_simulate_py_suggests_its_own_flags(capsys):
    with pytest.raises(SystemExit) as caught:
        simulate_main(["--cont", "3"])
    assert caught.value.code == 2
    assert capsys.readouterr().err == (
        "simulate.py: error: unrecognized arguments: --cont 3; did you mean --count? (see --help)\n"
    )


def test_demo_help_is_plain_text_and_says_what_it_drops(capsys):
    import demo

    with pytest.raises(SystemExit) as caught:
        demo.run(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "`" not in out  # the docstring's backticks (``MONGODB_URI``, `status`) rendered plain
    assert "with one, it works in a database of\nits own that it creates, order_archiver_demo" in out
    assert "It never drops a database it did not create" in out


def test_the_demo_takes_a_database_an_earlier_demo_left_and_refuses_any_other(mongo):
    import demo
    from order_archiver.errors import ConfigError

    left = mongo["left_by_a_demo_killed_with_9"]
    left[demo.DEMO_MARK].insert_one({"_id": "demo"})
    left["Commande"].insert_one({"numero_commande": "CMD-1"})
    demo.claim(left)  # the demo's: taken
    demo.claim(mongo["new"])  # made now: its mark first
    assert mongo["new"].list_collection_names() == [demo.DEMO_MARK]
    theirs = mongo["theirs"]
    theirs["Commande"].insert_one({"numero_commande": "CMD-1"})
    with pytest.raises(ConfigError, match="was not made by the demo"):
        demo.claim(theirs)
    assert theirs.list_collection_names() == ["Commande"]  # nothing written


def test_a_deployments_exit_3_line_says_where_the_rejected_orders_are_listed():
    """Against a deployment (not --simulation), the list outlives the run: `rejects` shows it."""
    from order_archiver.batch.report import BatchReport, rejected_exit_line

    dry, run = BatchReport(dry_run=True, rejected_new=2), BatchReport(dry_run=False, rejected_new=1)
    assert rejected_exit_line(dry, "python main.py") == (
        "exit 3: 2 orders would be rejected as invalid (never listed before; reasons above); "
        "`python main.py rejects` lists them once a --run has met them"
    )
    assert rejected_exit_line(run, "python main.py") == (
        "exit 3: 1 order newly rejected as invalid (reasons above), not archived: "
        "`python main.py rejects` lists them; fixed in the source, the next run archives them"
    )
