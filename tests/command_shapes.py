"""A record of every command the product sends, checked against what MongoDB 4.4-8.0 accept.

pymongo's command monitoring sees each command as it goes on the wire. A command counts as
the product's when a product module is on the stack that sent it (the tests' own set-up and
checks do not count); the CLI started as a subprocess records too (``record_commands/
sitecustomize.py``). Each process appends the distinct shapes it sent (``mongodb_definitions
.CommandShape``: command, fields, statement and index fields, stages, operators) to a file of
the session's folder; at the end the session reads them all, checks each against the
definitions, fails if one would be refused by some MongoDB from 4.4 to 8.0, and says so in
one line. The whole list is written to ``.pytest_cache/command-shapes.txt``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pymongo import monitoring

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = "ARCHIVER_COMMAND_SHAPES"  # the session's folder of records
SITE = Path(__file__).resolve().parent / "record_commands"
# The product's modules (the development server, in teststand/, is the tests' stand-in, not the product).
PRODUCT_FILES = {str(path) for path in [*ROOT.glob("*.py"), *ROOT.glob("order_archiver/**/*.py")]}


def sent_by_the_product() -> bool:
    """Whether a product module is on the calling thread's stack (not the tests' own commands)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename in PRODUCT_FILES:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class _ShapeRecorder(monitoring.CommandListener):
    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{os.getpid()}.jsonl"
        self.seen: set[Any] = set()
        self.lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        from teststand.mongodb_definitions import command_shape

        if not sent_by_the_product():
            return
        # pymongo hides the body of authentication commands: their name is the shape.
        shape = command_shape(event.command or {event.command_name: 1})
        with self.lock:
            if shape in self.seen:
                return
            self.seen.add(shape)
            with self.path.open("a") as out:
                out.write(json.dumps(asdict(shape)) + "\n")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def install() -> None:
    """Record this process's commands (clients made from now on)."""
    monitoring.register(_ShapeRecorder(Path(os.environ[VARIABLE])))


def start_session() -> None:
    """In the session's first process: a folder for every process's records, and the site hook
    for the processes it starts (xdist workers and the CLI inherit both)."""
    if not os.environ.get(VARIABLE):
        os.environ[VARIABLE] = tempfile.mkdtemp(prefix="command-shapes-")
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(SITE), str(ROOT), os.environ.get("PYTHONPATH")])
        )
    install()


def recorded() -> list[Any]:
    """Every distinct shape any process of the session sent."""
    from teststand.mongodb_definitions import CommandShape

    shapes = set()
    for path in Path(os.environ[VARIABLE]).glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                fields = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill -9
            shapes.add(CommandShape(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}))
    return sorted(shapes)


def verdict(listing: Path) -> tuple[bool, list[str]]:
    """(all accepted?, the lines to print); the shapes themselves go to ``listing``."""
    from teststand.mongodb_definitions import SUPPORTED, shape_problems

    shapes = recorded()
    shutil.rmtree(os.environ[VARIABLE], ignore_errors=True)
    listing.parent.mkdir(exist_ok=True)
    listing.write_text("".join(f"{shape}\n" for shape in shapes))
    problems = [f"  {shape}: {problem}" for shape in shapes for problem in shape_problems(shape)]
    if problems:
        return False, [
            f"{len(shapes)} command shapes sent, {len(problems)} refused by some {SUPPORTED}:",
            *problems,
        ]
    return True, [f"{len(shapes)} command shapes sent, all accepted by {SUPPORTED}"]
