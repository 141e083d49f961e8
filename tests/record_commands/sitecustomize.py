"""Loaded by every Python process the test session starts (``PYTHONPATH`` points here while
``ARCHIVER_COMMAND_SHAPES`` is set): the command line run as a user runs it records the
commands it sends, like the in-process tests do (tests/command_shapes.py)."""

import os

if os.environ.get("ARCHIVER_COMMAND_SHAPES"):  # PYTHONPATH holds the project's folder too
    from tests.command_shapes import install

    install()
