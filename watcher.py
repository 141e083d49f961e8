"""Watch mode: real-time archiving on MongoDB change streams.

Not implemented yet (issue #4): ``run_watch`` refuses with a usage error (exit 2) so that a
service manager does not restart it in a loop believing it crashed.
"""

from __future__ import annotations

from typing import Any

from errors import ConfigError


def run_watch(settings: Any, **options: Any) -> int:
    raise ConfigError("watch is not implemented yet in this version; use `batch --run` from a scheduler")
