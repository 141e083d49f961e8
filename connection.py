"""Opening the database: a real server from ``MONGODB_URI``, or the embedded simulation."""

from __future__ import annotations

import threading
from typing import Any

from pymongo import MongoClient

from config import Settings
from errors import Backoff, retrying
from logger import get_logger

log = get_logger("connection")

APP_NAME = "order-archiver"


def open_client(
    settings: Settings,
    *,
    attempts: int = 3,
    stop_event: threading.Event | None = None,
    simulation_count: int = 1000,
    simulation_seed: int | None = 42,
) -> Any:
    """A connected client (checked with ``ping``); ``TransientError``/``FatalError`` if not.

    Datetimes come back timezone-aware in UTC, as the archive stores them.
    """
    if settings.simulation:
        from simulation import simulation_client

        return simulation_client(settings, count=simulation_count, seed=simulation_seed)
    timeout = settings.mongodb_timeout_ms
    client: MongoClient = MongoClient(
        settings.mongodb_uri,
        appname=APP_NAME,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        retryWrites=True,
        retryReads=True,
    )
    log.debug("connecting to %s", settings.safe_uri)

    def ping() -> None:
        client.admin.command("ping")

    try:
        retrying(
            ping,
            attempts=attempts,
            backoff=Backoff(initial=0.5, maximum=5.0),
            stop_event=stop_event,
            on_retry=lambda exc, delay: log.warning(
                "MongoDB not reachable yet (%s); retrying in %.1fs", type(exc).__name__, delay
            ),
        )
    except Exception:
        client.close()
        raise
    return client
