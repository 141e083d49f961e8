"""The logs: ``from logger import get_logger``.

The design card's face. Human lines on stderr, a rotated file, JSON lines, secrets masked and
control characters escaped: ``order_archiver/logs.py``, whose public names this module
re-exports.
"""

from order_archiver.logs import *  # noqa: F403  (the public names of the logs)
