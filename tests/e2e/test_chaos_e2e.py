"""The chaos run (bench/chaos.py) on one seed, the way a developer runs it: a random history
with faults, then the oracle. Seed 11 has an order the archive refuses, the case verify got
wrong until the chaos run found it; 20 seeds of 3 minutes are in docs/guarantees.md."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.test_server_only("starts test servers and a fault proxy of its own")
def test_a_chaos_seed_breaks_no_guarantee():
    result = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--seed", "11", "--seeds", "1", "--minutes", "0.25"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "chaos: 1 seeds, 0 violations" in result.stdout
