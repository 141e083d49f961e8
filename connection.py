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


def client_options(settings: Settings) -> dict[str, Any]:
    """MongoClient options beyond the URI. TLS options in the URI itself pass through as
    they are; the two files of the environment add to them (and turn TLS on)."""
    timeout = settings.mongodb_timeout_ms
    options: dict[str, Any] = {
        "appname": APP_NAME,
        "tz_aware": True,
        "serverSelectionTimeoutMS": timeout,
        "connectTimeoutMS": timeout,
        "retryWrites": True,
        "retryReads": True,
    }
    if settings.mongodb_tls_ca_file:
        options.update(tls=True, tlsCAFile=settings.mongodb_tls_ca_file)
    if settings.mongodb_tls_cert_key_file:
        options.update(tls=True, tlsCertificateKeyFile=settings.mongodb_tls_cert_key_file)
    return options


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
    client: MongoClient = MongoClient(settings.mongodb_uri, **client_options(settings))
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
