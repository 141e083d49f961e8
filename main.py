"""The command line: ``python main.py COMMAND`` (``--help`` lists the commands).

The design card's face. The commands are declared once in ``order_archiver/cli/definition.py``
and run by ``order_archiver/cli/main.py``: it builds the settings, connects, runs the command
and maps every error to an exit code (0 done, 1 failed, 2 bad usage or configuration, 3
finished with something to look at). Installed (``pip install .``), the same program is
``order-archiver COMMAND``.
"""

import sys

from order_archiver import __version__
from order_archiver.cli.installed import dependencies_installed

with dependencies_installed(__name__):  # outside .venv: one line naming the fix, not a traceback
    from order_archiver.cli.main import main, simulate_main

__all__ = ["__version__", "main", "simulate_main"]

if __name__ == "__main__":
    sys.exit(main())
