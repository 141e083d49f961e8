"""Fill a database with realistic generated orders: ``python simulate.py --help``.

The same as ``python main.py simulate``; kept as its own script for the design card.
"""

import sys

from order_archiver.cli.installed import dependencies_installed

with dependencies_installed(__name__):  # outside .venv: one line naming the fix, not a traceback
    from order_archiver.cli.main import simulate_main

if __name__ == "__main__":
    sys.exit(simulate_main(sys.argv[1:]))
