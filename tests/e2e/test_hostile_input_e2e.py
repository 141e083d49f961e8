"""A hostile new user's inputs, through the programs as processes."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_demo_stopped_by_sigterm_stops_the_server_it_started(tmp_path):
    """`timeout 60 python demo.py` (SIGTERM) left the nx-27017 it started running, its folder
    too: only Ctrl+C went through the demo's clean-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "ARCHIVE_"))}
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "demo.py"), "--auto", "--orders", "300000"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 60
        for line in demo.stdout:  # the server is up once the first step is announced
            if "=== 1." in line or time.monotonic() > deadline:
                break
        demo.send_signal(signal.SIGTERM)
        rest = demo.communicate(timeout=60)[0]
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 143
    assert "local server stopped" in rest  # said once server.stop() returned
