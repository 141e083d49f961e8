"""A new user's first day (2026-12-07), item 5: after `make run` (batch --simulation) the last
line said "`python main.py rejects` lists them"; `rejects --simulation` was refused and plain
`rejects` said "MONGODB_URI is not set ... or use --simulation", the flag it refuses."""

from __future__ import annotations

import pytest

from order_archiver.cli.main import main
from tests.helpers import run_in_process


@pytest.mark.parametrize(("argv", "done"), [(["--run"], "rejected"), ([], "would be rejected")])
def test_the_simulations_exit_3_line_points_at_no_list_it_cannot_show(argv, done, capsys):
    assert main(["batch", "--simulation", "--samples", "0", *argv]) == 3
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith("exit 3: "), last
    assert f" {done} as invalid (reasons above); --simulation starts afresh each run" in last, last
    assert last.endswith("its rejections are new every time, and none is kept for `rejects` to list"), last
    assert "lists them" not in last, last
    # Nor does the summary line above it ("(1 new; list: main.py rejects)" said make run's).
    assert "main.py rejects" not in out, out
    with pytest.raises(SystemExit) as refused:  # why: `rejects` has no such flag
        main(["rejects", "--simulation"])
    assert refused.value.code == 2


@pytest.mark.parametrize(
    ("command", "suggested"),
    [(["rejects"], False), (["status"], False), (["doctor"], False), (["batch"], True)],
)
def test_mongodb_uri_not_set_names_simulation_only_to_the_commands_that_take_it(
    command, suggested, tmp_path, monkeypatch, capsys
):
    result = run_in_process(*command, env={}, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: MONGODB_URI is not set: not in the environment, and no .env in"), line
    assert ("--simulation" in line) == suggested, line
