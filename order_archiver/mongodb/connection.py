"""Opening the database: a real server from ``MONGODB_URI``, or the embedded simulation."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pymongo
from pymongo import MongoClient, monitoring
from pymongo import errors as pymongo_errors
from pymongo.server_type import SERVER_TYPE

from order_archiver.documents import Document
from order_archiver.errors import ArchiverError, ConfigError, FatalError, TransientError, describe
from order_archiver.logs import get_logger
from order_archiver.reporting.liveness import reply_beats
from order_archiver.retry import ARCHIVE_SIDE, Purpose, Retry, retrying
from order_archiver.settings import Settings, mask_secrets_of, uri_options
from order_archiver.simulation.generator import DEFAULT_COUNT, DEFAULT_SEED

log = get_logger("connection")

APP_NAME = "order-archiver"

# The packages only the simulation needs (requirements-simulation.txt): a production install,
# the image included, leaves them out (requirements.txt).
SIMULATION_PACKAGES = frozenset({"mongomock", "faker", "sentinels"})


@contextmanager
def simulation_packages() -> Iterator[None]:
    """Imports of the simulation: a production install says what to install instead of a traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SIMULATION_PACKAGES:
            raise
        raise ConfigError(
            f"the simulation needs {exc.name}, which a production install leaves out:"
            " pip install -r requirements-simulation.txt (or run on a real server: MONGODB_URI)"
        ) from None


# The servers whose hello says for good which replica set they are in (a set name) or that they
# are in none (a standalone, a mongos); not a member waiting for its configuration (RSGhost).
SETTLED = frozenset(
    {
        SERVER_TYPE.Standalone,
        SERVER_TYPE.Mongos,
        SERVER_TYPE.RSPrimary,
        SERVER_TYPE.RSSecondary,
        SERVER_TYPE.RSArbiter,
        SERVER_TYPE.RSOther,
    }
)


class HelloReplies(monitoring.ServerHeartbeatListener):
    """What each host said of itself in its last ``hello`` (the driver's heartbeats): its
    replica set's name (None: not a member). A host whose set is not the URI's ``replicaSet=``
    (or a standalone) is removed from the driver's topology with nothing said of why (SDAM,
    ``topology_description.py``): kept here, ``diagnose_unreachable`` names the set it is in."""

    def __init__(self) -> None:
        self._said: dict[tuple[str, int | None], str | None] = {}
        self._lock = threading.Lock()

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        with self._lock:
            if event.reply.server_type in SETTLED:
                self._said[event.connection_id] = event.reply.replica_set_name
            else:  # a member not configured yet (RSGhost: before rs.initiate()) may still join
                self._said.pop(event.connection_id, None)

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        with self._lock:  # what it said before no longer holds (restarted, in another set, gone)
            self._said.pop(event.connection_id, None)

    def set_names(self) -> dict[tuple[str, int | None], str | None]:
        with self._lock:
            return dict(self._said)

    @classmethod
    def of(cls, client: MongoClient[Document]) -> HelloReplies | None:
        listeners = getattr(client.options, "event_listeners", None) or []
        return next((listener for listener in listeners if isinstance(listener, cls)), None)


def client_options(
    settings: Settings, listeners: Sequence[monitoring.CommandListener] = ()
) -> dict[str, Any]:
    """MongoClient options beyond the URI. TLS options in the URI itself pass through as
    they are; the two files of the environment add to them (and turn TLS on). ``listeners``:
    watch's replies beating its liveness (``reporting.liveness.ReplyBeats``)."""
    timeout = settings.mongodb_timeout_ms
    options: dict[str, Any] = {
        "appname": APP_NAME,
        "tz_aware": True,
        # A BSON date before year 1 or after 9999 (dirty data) decodes as DatetimeMS instead of
        # raising InvalidBSON for the whole batch: that order alone is rejected.
        "datetime_conversion": "DATETIME_AUTO",
        "serverSelectionTimeoutMS": timeout,
        "connectTimeoutMS": timeout,
        "retryWrites": True,
        "retryReads": True,
        # What each host says it is, to name a wrong replicaSet=; watch's replies beating /healthz
        "event_listeners": [HelloReplies(), *listeners],
    }
    if settings.mongodb_tls_ca_file:
        options.update(tls=True, tlsCAFile=settings.mongodb_tls_ca_file)
    if settings.mongodb_tls_cert_key_file:
        options.update(tls=True, tlsCertificateKeyFile=settings.mongodb_tls_cert_key_file)
    return options


def open_client(
    settings: Settings,
    *,
    purpose: Purpose = Retry.CONNECT,
    stop_event: threading.Event | None = None,
    simulation_count: int = DEFAULT_COUNT,
    simulation_seed: int | None = DEFAULT_SEED,
    on_failure: Callable[[BaseException], object] | None = None,
) -> MongoClient[Document]:
    """A connected client (checked with ``ping``); ``TransientError``/``FatalError`` if not.
    ``on_failure``: each failed try that is tried again, by the driver's error (watch counts them).

    Datetimes come back timezone-aware in UTC, as the archive stores them.
    """
    if settings.simulation:
        with simulation_packages():
            from order_archiver.simulation.database import simulation_client

        return simulation_client(settings, count=simulation_count, seed=simulation_seed)
    client = _new_client(settings, reply_beats(stop_event))  # watch: each reply a beat of /healthz
    log.debug("connecting to %s", settings.uri_hosts)
    if purpose.attempts:  # a one-shot command: a certain cause is said in a second, not after 3 x 5 s
        _fail_fast_when_certain(client, settings)

    def ping() -> None:
        try:
            client.admin.command("ping")
        except pymongo_errors.ServerSelectionTimeoutError as exc:
            raise _selection_failure(diagnose_unreachable(client, settings)) from exc

    try:
        retrying(ping, purpose=purpose, stop_event=stop_event, on_retry=_said(on_failure, settings))
    except ArchiverError as error:
        client.close()
        cause = error.__cause__
        if isinstance(cause, pymongo_errors.OperationFailure) and cause.code == 18:
            raise FatalError(f"authentication failed: {_who(settings)}") from cause
        if isinstance(cause, Unreachable):
            raise TransientError(str(cause)) from cause
        raise
    except Exception:
        client.close()
        raise
    return client


def _said(
    on_failure: Callable[[BaseException], object] | None, settings: Settings
) -> Callable[[BaseException, float], None]:
    """A failed try of the first connection: said with the true wait before the next (the backoff,
    then the driver's wait for a server), and handed to ``on_failure`` as the driver's error
    (``Unreachable`` is ours: its words, a selection's timeout)."""

    def on_retry(exc: BaseException, delay: float) -> None:
        if on_failure is not None:
            on_failure(exc.__cause__ if isinstance(exc, Unreachable) and exc.__cause__ else exc)
        log.warning(
            "%s; retrying in %.1fs, then up to %gs for a server to answer (MONGODB_TIMEOUT_MS)",
            exc,
            delay,
            settings.mongodb_timeout_ms / 1000,
        )

    return on_retry


def _selection_failure(diagnosis: Diagnosis) -> Exception:
    """What a failed server selection raises: a setting to fix (exit 2), a lasting failure
    (exit 1), or ``Unreachable``, which the ping retries."""
    if diagnosis.configuration:
        return ConfigError(diagnosis.message)
    if diagnosis.lasting:
        return FatalError(f"cannot reach MongoDB: {diagnosis.message}")
    return Unreachable(f"cannot reach MongoDB: {diagnosis.message}")


FIRST_CONTACT_S = 1.0  # how long a one-shot command waits before asking why no server answers


def _fail_fast_when_certain(client: MongoClient[Document], settings: Settings) -> None:
    """Ping within ``FIRST_CONTACT_S``; if no server answered and every host's failure is
    certain (connection refused, a host name DNS does not know, a TLS handshake refused),
    raise ``FatalError`` now. Anything else (a host not heard from yet, a timeout, an
    election) goes on to the patient ping. ``watch`` keeps retrying instead (Retry.WAIT_FOR_SERVER)."""
    try:
        with pymongo.timeout(min(FIRST_CONTACT_S, settings.mongodb_timeout_ms / 1000)):
            client.admin.command("ping")
    except pymongo_errors.ServerSelectionTimeoutError:
        diagnosis = diagnose_unreachable(client, settings)
        if diagnosis.configuration:
            client.close()
            raise ConfigError(diagnosis.message) from None
        if diagnosis.certain:
            client.close()
            raise FatalError(f"cannot reach MongoDB: {diagnosis.message}") from None
    except pymongo_errors.PyMongoError:
        pass  # authentication and the rest: the ping below reports them as before


def open_archive_client(settings: Settings, **options: Any) -> MongoClient[Document] | None:
    """The archive's deployment (``ARCHIVE_MONGODB_URI``), connected like the source's, or
    None when the archive lives with the source. Its failures say which side failed."""
    if not settings.archive_elsewhere:
        return None
    archive_side = dataclasses.replace(settings, mongodb_uri=settings.archive_mongodb_uri)
    try:
        return open_client(archive_side, **options)
    except ArchiverError as error:
        message = str(error).replace("MONGODB_URI", "ARCHIVE_MONGODB_URI")
        raise type(error)(f"{ARCHIVE_SIDE}{message}") from error


@dataclass
class Clients:
    """The source's client, and the archive's when it has a deployment of its own."""

    source: MongoClient[Document]
    archive: MongoClient[Document] | None = None  # None: the archive lives with the source

    @property
    def archive_side(self) -> MongoClient[Document]:
        return self.archive if self.archive is not None else self.source

    def close(self) -> None:
        for client in (self.archive, self.source):
            if client is not None:
                client.close()


def open_clients(settings: Settings, **options: Any) -> Clients:
    source = open_client(settings, **options)
    try:
        return Clients(source, open_archive_client(settings, **options))
    except BaseException:
        source.close()
        raise


class Unreachable(pymongo_errors.AutoReconnect):
    """No server answered, with the reason in words; a network error, so ``retrying`` retries it."""


def _new_client(
    settings: Settings, listeners: Sequence[monitoring.CommandListener] = ()
) -> MongoClient[Document]:
    """The client; a ``mongodb+srv`` host whose SRV record cannot be read is a connection
    failure naming the host, any other refusal of the URI a configuration error."""
    try:
        return MongoClient(settings.mongodb_uri, **client_options(settings, listeners))
    except pymongo_errors.ConfigurationError as exc:
        message = mask_secrets_of(settings.mongodb_uri or "", str(exc).splitlines()[0] if str(exc) else "")
        if _is_dns_failure(exc):
            raise FatalError(
                f"cannot reach MongoDB: the SRV record of MONGODB_URI's host cannot be resolved ({message}); "
                "check the host name (Atlas: Connect > Drivers shows it) and this machine's DNS"
            ) from exc
        raise ConfigError(f"MONGODB_URI: {message}") from exc


def _is_dns_failure(exc: BaseException) -> bool:
    try:
        from dns.exception import DNSException
    except ImportError:  # pragma: no cover - pymongo needs dnspython for mongodb+srv
        return False
    return isinstance(exc.__cause__, DNSException) or "DNS" in str(exc)


@dataclass(frozen=True)
class Diagnosis:
    message: str
    lasting: bool  # retrying the same settings will not help
    certain: bool = False  # the cause is known now (refused, DNS, TLS): a one-shot command stops
    configuration: bool = False  # the settings are wrong (exit 2): replicaSet= names no set that answered


def _network_reason(error: BaseException) -> tuple[str, bool]:
    """What a server description's error means, in words, and whether it lasts."""
    text = str(error)
    lowered = text.lower()
    if "connection refused" in lowered:
        return "connection refused: nothing listens there (is MongoDB running? is the port right?)", False
    if any(
        marker in lowered
        for marker in ("name or service not known", "nodename nor servname", "name resolution", "getaddrinfo")
    ):
        return "host name not found (DNS): check the host in MONGODB_URI", True
    if "ssl" in lowered or "certificate" in lowered or "tls" in lowered:
        detail = re.sub(r"\s*\(configured timeouts:.*", "", text.split(": ", 1)[-1])
        detail = re.sub(r"^\S+:\d+: ", "", detail)[:160]
        return (
            f"TLS handshake failed ({detail}): check tls= in MONGODB_URI and MONGODB_TLS_CA_FILE, "
            "and whether the server expects TLS",
            "timed out" not in lowered,
        )
    if "timed out" in lowered:
        return (
            "no answer within MONGODB_TIMEOUT_MS (a firewall, a wrong port, or a server that expects TLS)",
            False,
        )
    return re.sub(r"\s*\(configured timeouts:.*", "", text)[:200], False


def diagnose_unreachable(client: MongoClient[Document], settings: Settings) -> Diagnosis:
    """Why server selection failed, from the driver's view of each host (SDAM): refused,
    DNS, TLS, or reachable but not a member of the replica set the URI names."""
    description = client.topology_description
    servers = description.server_descriptions()
    # A host of the URI's list not heard from (refused, silent) may be the set's member: the
    # set may be down, not misnamed (a stale seed answering as a standalone says nothing of it).
    if not any(server.server_type_name == "Unknown" for server in servers.values()):
        wrong_set = _wrong_replica_set(client, description.replica_set_name)
        if wrong_set is not None:
            return wrong_set
    problems, lasting, certain = [], True, bool(servers)
    for (host, port), server in servers.items():
        if server.error is None:
            certain = False  # a host not heard from yet: it may still answer
            continue
        reason, permanent = _network_reason(server.error)
        problems.append(f"{host}:{port}: {reason}")
        lasting = lasting and permanent
        certain = certain and "timed out" not in str(server.error).lower()
    if problems:
        # Beside them, a host of another set (a stale seed, or replicaSet= mistyped): said too.
        problems += _outside(client)
        return Diagnosis("; ".join(problems), lasting, certain or lasting)
    replica_set = description.replica_set_name
    hosts = ", ".join(f"{host}:{port}" for host, port in _seeds(client)) or "the hosts of MONGODB_URI"
    if replica_set and description.topology_type_name == "ReplicaSetNoPrimary":
        members = [f"{host}:{port} ({s.server_type_name})" for (host, port), s in servers.items()]
        if not members:
            return Diagnosis(
                f"{hosts} answered, but not as members of replica set {replica_set!r} (replicaSet= in "
                "MONGODB_URI): use the set's real name (rs.status().set), or drop replicaSet= for a "
                "standalone server",
                True,
            )
        return Diagnosis(
            f"replica set {replica_set!r} has no primary right now (members: {', '.join(members)}); "
            "an election may be under way",
            False,
        )
    return Diagnosis(f"no server answered within MONGODB_TIMEOUT_MS ({hosts})", False)


def why_unreachable(
    exc: BaseException, clients: Sequence[tuple[str, MongoClient[Document]]], settings: Settings
) -> str:
    """A running watcher's failure in the words its start uses: a server selection that timed
    out is ``cannot reach MongoDB: host:port: connection refused: ...`` (``diagnose_unreachable``,
    of the first of ``clients``, a ``(side, client)`` each, with no server to write to); a lost
    connection names its host and reason; anything else ``errors.describe``."""
    if isinstance(exc, pymongo_errors.ServerSelectionTimeoutError):
        away = [
            (side, client)
            for side, client in clients
            if not client.topology_description.has_writable_server()
        ]
        side, client = (away or list(clients))[0]
        diagnosis = diagnose_unreachable(client, settings)
        return f"{side}cannot reach MongoDB: {diagnosis.message}"
    if isinstance(exc, pymongo_errors.AutoReconnect) and str(exc):
        where = re.sub(r"\s*\(configured timeouts:.*", "", str(exc).splitlines()[0])[:200]
        return f"connection to MongoDB lost: {where}"
    return describe(exc)


def _wrong_replica_set(client: MongoClient[Document], wanted: str | None) -> Diagnosis | None:
    """``replicaSet=`` names a set no host that answered is in (each is in another set, or in
    none): a setting to fix, not a server to wait for. None when some host is of the set, or
    none has answered yet."""
    replies = HelloReplies.of(client)
    said = replies.set_names() if replies is not None else {}
    if wanted is None or not said or wanted in said.values():
        return None
    hosts = "; ".join(_outside(client))  # every host that answered
    return Diagnosis(
        f"MONGODB_URI: replicaSet={wanted} matches no server that answered ({hosts}): "
        + _set_name_fix(sorted({name for name in said.values() if name is not None})),
        lasting=True,
        certain=True,
        configuration=True,
    )


def _outside(client: MongoClient[Document]) -> list[str]:
    """The hosts that answered as members of another set than ``replicaSet=`` (or of none), each
    with the set it is in: "db1:27017 is a member of replica set 'rs1'"."""
    wanted = client.topology_description.replica_set_name
    replies = HelloReplies.of(client)
    if wanted is None or replies is None:
        return []
    said = sorted(replies.set_names().items(), key=lambda item: str(item[0]))
    return [f"{host}:{port} is {_membership(name)}" for (host, port), name in said if name != wanted]


def _membership(set_name: str | None) -> str:
    if set_name is None:
        return "in no replica set (a standalone or a mongos)"
    return f"a member of replica set {set_name!r}"


def _set_name_fix(reported: list[str]) -> str:
    if not reported:
        return "remove replicaSet= to reach a server that is not a replica set"
    if len(reported) == 1:
        return f"set replicaSet={reported[0]}"
    return "set replicaSet= to your set's name (rs.status().set)"


def _seeds(client: MongoClient[Document]) -> list[tuple[str, int | None]]:
    try:
        return list(client.topology_description.server_descriptions()) or list(
            client._topology_settings.seeds  # the URI's hosts; pymongo drops non-members
        )
    except AttributeError:
        return []


def _who(settings: Settings) -> str:
    """The user and the database it authenticates against, never the password."""
    try:
        from pymongo.uri_parser import parse_uri

        parsed = parse_uri(settings.mongodb_uri or "", connect_timeout=1)
        user = parsed.get("username")
        options = {str(k).lower(): v for k, v in parsed.get("options", {}).items()}
        # As the user typed it (any case of the option's name): pymongo renames the key.
        source = uri_options(settings.mongodb_uri or "").get("authsource") or options.get("authsource")
        source = source or parsed.get("database") or "admin"
    except Exception:  # a +srv URI needs DNS to parse: say less
        user, source = None, None
    who = f"user {user!r} (authSource {source})" if user else "the user of MONGODB_URI"
    return f"{who} was refused: check the user name and password in MONGODB_URI, and authSource"
