"""#33 item 1: `pip install .` installs the product, the package alone, with its command
`order-archiver`, which runs outside the checkout (nothing under the package imports the
design card's top-level modules, which are not installed)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FACES = {
    "main.py",
    "archiver.py",
    "watcher.py",
    "config.py",
    "logger.py",
    "generator.py",
    "simulate.py",
    "demo.py",
}


def test_pip_install_gives_the_order_archiver_command(tmp_path):
    # Built from a copy: an in-tree build leaves build/ and *.egg-info in the checkout.
    source = tmp_path / "source"
    ignored = shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", "logs"
    )
    shutil.copytree(ROOT, source, ignore=ignored)
    site = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    installed = {path.name for path in site.iterdir()}
    assert "order_archiver" in installed
    assert not installed & FACES  # the faces stay in the checkout
    env = {"PYTHONPATH": str(site), "LOG_DIR": "", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, str(site / "bin" / "order-archiver")]
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert version.stdout.startswith("order-archiver "), version.stderr
    usage = subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert usage.stdout.startswith("usage: order-archiver ")  # its own name, not main.py's
    assert "Run `order-archiver COMMAND --help`" in usage.stdout
    run = subprocess.run(
        [*command, "batch", "--simulation", "--count", "60", "--run", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert '"archived": ' in run.stdout
