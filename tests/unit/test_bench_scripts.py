"""The benchmarks run as docs/performance.md shows them (``python -m bench.batch``, from the
project's folder) and as files (``python bench/chaos.py``, from anywhere), which once failed
with ``No module named 'config'``: Python puts the script's folder on the path, not the project's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECT

SCRIPTS = sorted(path.stem for path in (PROJECT / "bench").glob("*.py") if path.name != "__init__.py")


def run_help(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # Neither this session's PYTHONPATH (the project's folder, for the CLI's subprocesses) nor
    # its command records: the script finds the project by itself or not at all.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ARCHIVER_COMMAND_SHAPES")}
    return subprocess.run([*command, "--help"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_every_benchmark_is_here():
    assert {"batch", "chaos", "generate", "watch"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_runs_as_a_module_from_the_projects_folder(script):
    result = run_help([sys.executable, "-m", f"bench.{script}"], PROJECT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_runs_as_a_file_from_anywhere(script, tmp_path):
    result = run_help([sys.executable, str(PROJECT / "bench" / f"{script}.py")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")
