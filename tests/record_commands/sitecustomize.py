"""Loaded by every Python process the test session starts (``PYTHONPATH`` points here while
``ARCHIVER_COMMAND_SHAPES`` is set): the command line run as a user runs it records the
commands it sends, like the in-process tests do (tests/command_shapes.py)."""

import os
import sys
from pathlib import Path

if os.environ.get("ARCHIVER_COMMAND_SHAPES"):
    sys.path.append(str(Path(__file__).resolve().parents[2]))  # the project: tests/, its modules
    from tests.command_shapes import install

    install()
