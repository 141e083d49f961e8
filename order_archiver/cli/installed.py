"""The top-level scripts run by a Python without the dependencies (outside ``.venv``): one line
naming the fix, exit 2, instead of a ``ModuleNotFoundError`` traceback. Standard library only:
it runs before anything that needs them is imported."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

USAGE = 2  # errors.ExitCode.USAGE (bad usage or configuration); errors.py itself needs pymongo
# Modules whose package has another name (the first import to fail is often ``bson``).
DISTRIBUTIONS = {"bson": "pymongo", "gridfs": "pymongo", "dotenv": "python-dotenv", "faker": "Faker"}


@contextmanager
def dependencies_installed(module: str) -> Iterator[None]:
    """Around a script's imports: a third-party package missing when the script is run
    (``module == "__main__"``) is said in one line, exit 2. Imported as a module, or a module of
    the product's own missing (a bug, not an install), the error goes on as it is."""
    try:
        yield
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if module != "__main__" or not package or package == "order_archiver":
            raise
        script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "main.py"
        sys.stderr.write(
            f"{script}: order-archiver's dependencies are not installed for {sys.executable} (no "
            f"module named {package!r}, from {DISTRIBUTIONS.get(package, package)}): run `make venv` once (it makes .venv, with them), then "
            f"`.venv/bin/python {script} ...` (or `source .venv/bin/activate`)\n"
        )
        raise SystemExit(USAGE) from None
