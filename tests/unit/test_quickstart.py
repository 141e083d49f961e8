"""QUICKSTART.md works as written: every command in it is one the project accepts, run the
way the page says to run it (the virtual environment named, never a bare ``python``), and a
MongoDB is offered before the first command that needs one."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from order_archiver.cli.main import build_parser, build_simulate_parser

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = (ROOT / "QUICKSTART.md").read_text()


def commands() -> list[str]:
    """The shell lines of the page's code blocks, comments dropped, in order."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", QUICKSTART, re.DOTALL):
        for line in block.splitlines():
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def python_invocations() -> list[list[str]]:
    found = []
    for line in commands():
        for part in line.split("&&"):
            words = shlex.split(part)
            if words and words[0].endswith("python"):
                found.append(words)
    return found


def test_every_python_command_runs_in_the_projects_virtual_environment():
    invocations = python_invocations()
    assert invocations
    bare = [" ".join(w) for w in invocations if w[0] != ".venv/bin/python"]
    assert not bare, f"a bare python finds no pymongo on a fresh machine: {bare}"


def test_every_command_is_one_the_project_accepts():
    makefile = (ROOT / "Makefile").read_text()
    for words in python_invocations():
        script, args = words[1], words[2:]
        if script == "-c":  # a snippet (an order delivered by hand): Python that compiles
            compile(args[0], "QUICKSTART.md", "exec")
            continue
        assert (ROOT / script).is_file(), script
        if script == "main.py":
            assert callable(build_parser().parse_args(args).func)
        elif script == "simulate.py":
            assert callable(build_simulate_parser().parse_args(args).func)
    for line in commands():
        if line.startswith("make "):
            target = line.split()[1]
            assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), target


def test_a_mongodb_is_offered_before_the_first_command_that_needs_one():
    needs_server = [
        line
        for line in commands()
        if re.search(r"(main\.py (batch|watch|status|verify|rejects)|simulate\.py)", line)
        and "--simulation" not in line
    ]
    first = QUICKSTART.index(needs_server[0])
    where = QUICKSTART.index("Get a MongoDB")
    assert where < first
    offered = QUICKSTART[where:first]
    assert "make dev-server" in offered
    assert "docker run" in offered
    assert "Atlas" in offered


def test_the_demo_is_described_as_it_runs():
    demo = (ROOT / "demo.py").read_text()
    paragraph = QUICKSTART.split("make demo", 1)[1].split("3. ", 1)[0]
    for claim, code in [
        ("starts its own local test server", "start_server("),
        ("batch --run", "BatchArchiver("),
        ("starts `watch`", "Watcher("),
        ("`status`", "collect_status("),
        ("`verify`", "verify("),
        ("order_archiver_demo", 'DEMO_DATABASE = "order_archiver_demo"'),
    ]:
        assert claim in paragraph, claim
        assert code in demo, claim
