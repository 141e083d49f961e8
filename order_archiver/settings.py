"""Settings: the environment, then a ``.env`` file, then command-line flags.

This module is the only reader of the environment. ``load_settings`` returns one frozen
``Settings``; every problem is a ``ConfigError`` with a one-line message (exit 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import os
import re
import stat
import tempfile
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from dotenv.parser import Binding, parse_stream

from order_archiver.errors import ConfigError
from order_archiver.orders.finishing import Finisher, utc_now
from order_archiver.orders.pii import CONTRACT_FIELDS, PII_MODES, OrderFields, PiiMode, PiiPolicy

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
LOG_FILE_NAME = "order-archiver.log"


_DURATION = re.compile(r"^(\d{1,7})(s|m|h|d)$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ZERO = re.compile(r"^0{1,7}$")


class Duration(timedelta):
    """A timedelta that prints the way settings write it: ``90s``, ``15m``, ``1h``, ``7d``."""

    def __str__(self) -> str:
        seconds = int(self.total_seconds())
        if not seconds:
            return "0d"  # as the settings write "none": PURGE_AFTER=0d, BATCH_FULL_SWEEP_EVERY=0d
        for unit in ("d", "h", "m"):
            size = _DURATION_UNITS[unit]
            if seconds and seconds % size == 0:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"


def about(seconds: float) -> str:
    """A length of time as a person reads it, in the settings' way of writing durations,
    rounded to its largest unit that fits twice (82147 s: ``23h``; 5400 s: ``90m``; 42 s:
    ``42s``) unless it is a whole one (3600 s: ``1h``): the product's ages and waits, said;
    ``--json`` keeps the exact seconds."""
    exact = str(Duration(seconds=round(seconds)))
    if seconds >= 60 and not exact.endswith("s"):
        return exact
    for unit in ("d", "h", "m"):
        size = _DURATION_UNITS[unit]
        if seconds >= 2 * size:
            return str(Duration(seconds=round(seconds / size) * size))
    return f"{max(round(seconds), 0)}s"


# The longest duration: a date this far back or ahead stays a date (9999999d before now is
# before year 1: "date value out of range" in the middle of a run, after its writes).
MAX_DURATION_DAYS = 36_500  # a hundred years


def parse_duration(text: str) -> Duration:
    """``90s``, ``15m``, ``24h``, ``7d``; at most a hundred years. Zero needs no unit: ``0`` is
    ``0s``, accepted where a zero is (``PURGE_AFTER``), refused in the same words as ``0s``
    where it is not (``--max-runtime 0`` said "expected a duration like 90s", ``0s`` "must be
    longer than 0": a new user's try)."""
    if _ZERO.match(str(text).strip()):
        return Duration(0)
    match = _DURATION.match(str(text).strip().lower())
    if not match:
        raise ValueError(f"expected a duration like 90s, 15m, 24h or 7d; got {text!r}")
    length = Duration(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])
    if length > timedelta(days=MAX_DURATION_DAYS):
        raise ValueError(f"must be at most {MAX_DURATION_DAYS}d (a hundred years), got {text.strip()!r}")
    return length


def parse_positive_duration(text: str) -> Duration:
    """A duration longer than 0 (a limit: unset for none)."""
    length = parse_duration(text)
    if not length:
        raise ValueError("must be longer than 0 (leave it unset for no limit)")
    return length


TTL_MAX_SECONDS = 2**31 - 1  # MongoDB's largest expireAfterSeconds (a 32-bit integer)


def parse_retention(text: str) -> Duration:
    """A retention: a duration longer than 0 that a TTL index can hold."""
    length = parse_duration(text)
    if not length:
        raise ValueError("must be longer than 0 (leave it unset to keep every order)")
    if length.total_seconds() > TTL_MAX_SECONDS:
        raise ValueError(
            f"must be at most {TTL_MAX_SECONDS // 86400}d (MongoDB's limit: {TTL_MAX_SECONDS} seconds)"
        )
    return length


OVERLAP_1H = Duration(hours=1)
SWEEP_7D = Duration(days=7)
PURGE_NOW = Duration(0)
HOLD_30D = Duration(days=30)


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str | None = None  # MONGODB_URI: connection string; required unless --simulation
    mongodb_uri_file: str | None = None  # MONGODB_URI_FILE: a file holding it (a mounted secret)
    archive_mongodb_uri: str | None = (
        None  # ARCHIVE_MONGODB_URI: the archive's own deployment; unset: the source's
    )
    archive_mongodb_uri_file: str | None = None  # ARCHIVE_MONGODB_URI_FILE: a file holding it
    mongodb_database: str = "livraison"  # MONGODB_DATABASE: source database
    orders_collection: str = "Commande"  # ORDERS_COLLECTION: the orders
    clients_collection: str = "Client"  # CLIENTS_COLLECTION: clients, joined as `client`
    couriers_collection: str = "Livreur"  # COURIERS_COLLECTION: couriers, joined as `livreur`
    restaurants_collection: str = "Restaurants"  # RESTAURANTS_COLLECTION: joined as `restaurant`
    menu_collection: str = "Menu"  # MENU_COLLECTION: dishes, joined into `items`
    delivered_status: str = "livrée"  # DELIVERED_STATUS: the status that means delivered (NFC)
    archive_database: str | None = None  # ARCHIVE_DATABASE: archive database; default: source's
    archive_collection: str = "Commande_archive"  # ARCHIVE_COLLECTION: one document per order
    checkpoint_collection: str = "archiver_checkpoints"  # CHECKPOINT_COLLECTION: in archive db
    rejects_collection: str = "archiver_rejects"  # REJECTS_COLLECTION: rejected orders, in archive db
    forgotten_collection: str = (
        "archiver_forgotten"  # FORGOTTEN_COLLECTION: ids of erased persons, archive db
    )
    batch_size: int = 100  # BATCH_SIZE: orders per bulk write (one chunk)
    batch_max_rate: int | None = None  # BATCH_MAX_RATE: at most this many orders a second (--max-rate)
    batch_max_lag: Duration | None = (
        None  # BATCH_MAX_LAG: wait while a secondary is this far behind (--max-lag)
    )
    batch_partition: tuple[int, int] | None = None  # BATCH_PARTITION: K/N, this run's share (--partition)
    batch_overlap: Duration = OVERLAP_1H  # BATCH_OVERLAP: incremental runs re-read this much before the last
    batch_full_sweep_every: Duration = (
        SWEEP_7D  # BATCH_FULL_SWEEP_EVERY: walk every delivered order this often
    )
    purge_after: Duration = PURGE_NOW  # PURGE_AFTER: --purge-source moves orders delivered longer ago
    restore_hold: Duration = HOLD_30D  # RESTORE_HOLD: a restored order stays in the source this long
    archive_retention: Duration | None = (
        None  # ARCHIVE_RETENTION: MongoDB expires archived orders this long after delivery
    )
    archive_pii_retention: Duration | None = (
        None  # ARCHIVE_PII_RETENTION: personal data erased after this long
    )
    archive_cold_url: str | None = None  # ARCHIVE_COLD_URL: cold tier, file:///path or s3://bucket/prefix
    archive_cold_after: Duration | None = None  # ARCHIVE_COLD_AFTER: orders delivered longer ago go there
    index_build_wait_s: int = (
        30  # INDEX_BUILD_WAIT_S: batch --run waits this long for index builds, then goes on
    )
    log_dir: str = "logs"  # LOG_DIR: rotating log file folder; empty: no log file
    log_level: str = "INFO"  # LOG_LEVEL: DEBUG, INFO, WARNING or ERROR
    log_format: str = "text"  # LOG_FORMAT: text for people, json for log collectors
    resume_token_file: str = ".resume_token.json"  # RESUME_TOKEN_FILE: watch's file store
    mongodb_timeout_ms: int = 5000  # MONGODB_TIMEOUT_MS: server selection/connect timeout
    mongodb_write_timeout_ms: int = (
        10000  # MONGODB_WRITE_TIMEOUT_MS: wait for a majority (w:majority wtimeout)
    )
    mongodb_tls_ca_file: str | None = (
        None  # MONGODB_TLS_CA_FILE: CA bundle that signs the server (turns TLS on)
    )
    mongodb_tls_cert_key_file: str | None = None  # MONGODB_TLS_CERT_KEY_FILE: client cert+key (x.509 auth)
    watch_max_batch: int = 500  # WATCH_MAX_BATCH: deliveries per micro-batch (one bulk write)
    watch_max_await_ms: int = 1000  # WATCH_MAX_AWAIT_MS: how long a quiet getMore waits on the server
    watch_heartbeat_s: int = 5  # WATCH_HEARTBEAT_S: save the token of a quiet stream this often
    watch_liveness_s: int = 60  # WATCH_LIVENESS_S: /healthz fails when the loop is this late
    watch_log_interval_s: int = 60  # WATCH_LOG_INTERVAL_S: progress line (events, archived, lag)
    watch_lease_ttl_s: int = 15  # WATCH_LEASE_TTL_S: a standby takes over this long after the leader dies
    watch_lease_renew_s: int = 3  # WATCH_LEASE_RENEW_S: the leader renews its lease this often
    archive_pii: PiiMode = "keep"  # ARCHIVE_PII: client email/phone in the archive: keep, hash or drop
    archive_pii_key: str | None = None  # ARCHIVE_PII_KEY: secret key of ARCHIVE_PII=hash (16+ chars)
    non_personal_fields: OrderFields | None = None  # ARCHIVE_NON_PERSONAL_FIELDS: a,b,items.c: not personal
    mongodb_allow_insecure_tls: bool = False  # MONGODB_ALLOW_INSECURE_TLS: accept tlsInsecure & co. in a URI
    simulation: bool = False  # (flag only) in-process database filled with generated data
    # (not a setting) the cold tier's recorded boundary, read from the archive at a command's
    # start (cold/record.py): deliveries before it are never archived again
    cold_moved_before: datetime | None = None
    # (not a setting) the AWS SDK's own variables a settings file gives and the environment does
    # not (``AWS_SDK_VARIABLES``): handed to the SDK before the cold tier's S3 is opened
    aws_sdk_from_file: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)

    @property
    def archive_db_name(self) -> str:
        return self.archive_database or self.mongodb_database

    @property
    def archive_elsewhere(self) -> bool:
        """The archive, checkpoints and rejects live on another deployment (ARCHIVE_MONGODB_URI)."""
        return bool(self.archive_mongodb_uri) and not self.simulation

    def finisher(self, archived_by: str, clock: Callable[[], datetime] | None = None) -> Finisher:
        """How orders are finished under these settings (``orders.finishing``): the one way."""
        return Finisher(
            archived_by,
            self.pii_policy,
            clock or utc_now,
            self.archive_retention,
            self.archive_pii_retention,
            self.archive_cold_after,
            lambda: self.cold_moved_before,
        )

    @property
    def pii_policy(self) -> PiiPolicy:
        return PiiPolicy(self.archive_pii, self.archive_pii_key, self.non_personal_fields or CONTRACT_FIELDS)

    @property
    def safe_uri(self) -> str:
        return redact_uri(self.mongodb_uri) if self.mongodb_uri else "(simulation)"

    @property
    def uri_hosts(self) -> str:
        """The scheme and hosts of MONGODB_URI, nothing else (no user, no option, no secret)."""
        if not self.mongodb_uri:
            return "(simulation)"
        return f"{self.mongodb_uri.partition('://')[0]}://{_authority(self.mongodb_uri)}"

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# --- parsers: each raises ValueError with the reason -------------------------------------


INT64_MAX = 2**63 - 1  # the largest whole number BSON holds (and a Python slice takes)


def _at_least_one(value: str | int) -> int:
    """A whole number of at least 1, however large (each limit says its own maximum)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise ValueError(f"expected a number of at least 1, got {number}")
    return number


def parse_positive_int(value: str | int) -> int:
    number = _at_least_one(value)
    if number > INT64_MAX:
        raise ValueError(f"expected at most {INT64_MAX} (a 64-bit integer, as MongoDB takes), got {number}")
    return number


def at_most(maximum: int, why: str) -> Callable[[str], int]:
    """A parser of a whole number from 1 to ``maximum`` (``why``: whose limit that is)."""

    def parse(value: str) -> int:
        number = _at_least_one(value)
        if number > maximum:
            raise ValueError(f"expected at most {maximum} ({why}), got {number}")
        return number

    return parse


# A time in ms that MongoDB takes (maxTimeMS, wtimeout): a 32-bit integer, ~24.8 days
# (src/mongo/db/query/max_time_ms_parser.cpp); pymongo's timeouts: under a billion ms.
MONGODB_MAX_MS = 2**31 - 1
DRIVER_MAX_MS = 999_999_999
# A wait in seconds (threading's, a lease's date): a hundred years, as a duration.
MAX_SECONDS = MAX_DURATION_DAYS * 86_400
parse_server_ms = at_most(MONGODB_MAX_MS, "MongoDB's limit for a time in ms, ~24.8 days")
parse_driver_ms = at_most(DRIVER_MAX_MS, "the driver's limit: under a billion ms, ~11.5 days")
parse_seconds = at_most(MAX_SECONDS, "a hundred years")


def parse_days(value: str | int) -> int:
    """A number of days a date can go back (``simulate --days``): at most a hundred years."""
    number = _at_least_one(value)
    if number > MAX_DURATION_DAYS:
        raise ValueError(f"expected at most {MAX_DURATION_DAYS} (a hundred years), got {number}")
    return number


MAX_PARTITIONS = 1_000  # processes sharing one backfill (see parse_partition)


def parse_partition(value: str) -> tuple[int, int]:
    """``K/N``: share K of N, 0 <= K < N (``orders/partition.py``)."""
    k, slash, n = str(value).strip().partition("/")
    if not slash or not k.strip().isdecimal() or not n.strip().isdecimal():  # not "²": int() refuses it
        hint = " (a Kubernetes Job: define JOB_COMPLETION_INDEX before it)" if "$(" in str(value) else ""
        raise ValueError(f"expected K/N, share K of N processes (e.g. 0/4), got {value!r}{hint}")
    index, count = int(k), int(n)
    if count < 1:
        raise ValueError(f"expected K/N with N at least 1 (the number of processes), got {value!r}")
    if count > MAX_PARTITIONS:
        raise ValueError(
            f"expected K/N with N at most {MAX_PARTITIONS}, got {value!r}: each share reads every "
            "delivered _id of the window (an index), so N shares read it N times"
        )
    if index >= count:
        raise ValueError(
            f"expected K/N with 0 <= K < N, got {value!r}: the shares of {count} are 0 to {count - 1}"
        )
    return index, count


# One chunk's ids go to the server in one command (the archive's look-up by _id, the purge's
# confirmation): 10,000 ObjectIds are ~190 KB of it, far under 16 MB; more gains nothing.
MAX_BATCH_SIZE = 10_000


def _one_to(value: str | int, most: int, why: str) -> int:
    """A whole number from 1 to ``most``; past it, ``why`` says what the bound protects."""
    number = _at_least_one(value)
    if number > most:
        raise ValueError(f"expected at most {most} ({why}), got {number}")
    return number


def parse_batch_size(value: str | int) -> int:
    return _one_to(value, MAX_BATCH_SIZE, "a chunk's ids go to the server in one command")


# A quiet getMore is held on the server this long, and a stop waits for it (the watcher's
# micro-batch in hand finishes first): under cli.main.STOP_GRACE_S (8 s), past which a stopped
# watcher exits 1 as if the server hung: half of it, the other half left for the write in hand.
MAX_WATCH_AWAIT_MS = 4_000


def parse_watch_await_ms(value: str | int) -> int:
    return _one_to(value, MAX_WATCH_AWAIT_MS, "a stop waits for a quiet getMore to return")


def parse_probability(value: str | float) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a number between 0 and 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"expected a number between 0 and 1, got {number}")
    return number


def parse_name(value: str) -> str:
    name = str(value).strip()
    if not name or any(c in name for c in '/\\ "$\x00') or len(name) > 120:
        raise ValueError(f"not a valid MongoDB name: {value!r}")
    return name


# The server's own: `local` is not replicated (no majority write, lost with its node), `admin`
# and `config` hold the deployment's users and state.
MONGODB_OWN_DATABASES = frozenset({"admin", "config", "local"})


def parse_database_name(value: str) -> str:
    """A database name as MongoDB accepts it: no ``/\\. "$*<>:|?``, under 64 bytes."""
    name = parse_name(value)
    if any(c in name for c in ".*<>:|?") or len(name.encode()) >= 64:
        raise ValueError(f"not a valid MongoDB database name: {value!r}")
    if name.casefold() in MONGODB_OWN_DATABASES:
        raise ValueError(
            f"{value!r} is one of MongoDB's own databases (admin, config, local: local is not even "
            "replicated); name one of yours"
        )
    return name


def parse_collection_name(value: str) -> str:
    """A collection name the archiver may use: not a ``system.`` collection."""
    name = parse_name(value)
    if name.startswith("system."):
        raise ValueError(f"{value!r} is a system collection; name one of your own")
    if name.startswith(".") or name.endswith(".") or ".." in name:  # MongoDB's InvalidName
        raise ValueError(f"not a valid MongoDB collection name (a '.' at an end, or '..'): {value!r}")
    return name


def parse_choice(choices: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
    def parse(value: str) -> str:
        text = str(value).strip()
        text = text.upper() if upper else text.lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def parse_status(value: str) -> str:
    text = unicodedata.normalize("NFC", str(value).strip())
    if not text:
        raise ValueError("must not be empty")
    return text


def parse_uri(value: str) -> str:
    """A MongoDB connection string, checked without connecting. An error never quotes the
    value: a malformed URI is exactly where a password escapes the usual masking."""
    uri = str(value).strip()
    if not re.match(r"^mongodb(\+srv)?://[^/?#]+", uri):
        scheme = uri.split("://", 1)[0] if "://" in uri else None
        found = f"it starts with {scheme[:20]!r}://" if scheme and "@" not in scheme else "it does not"
        raise ValueError(
            "must start with mongodb:// or mongodb+srv:// (lower case) and name a host; "
            f"{found} (the value is not shown: it may hold a password)"
        )
    if uri.startswith("mongodb://"):
        # Imported here: the URI is checked without connecting (+srv would need DNS).
        from pymongo.uri_parser import parse_uri as pymongo_parse_uri

        unknown = unknown_uri_options(uri) or twice_given_uri_option(uri)
        if unknown:
            raise ValueError(f"malformed: {unknown}")
        try:
            pymongo_parse_uri(uri)
        except Exception as exc:  # pymongo raises several types for a bad URI
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"malformed: {mask_secrets_of(uri, message)[:200]}") from None
    return uri


def unknown_uri_options(uri: str) -> str | None:
    """The URI's options pymongo does not know, named (its own error says "Unknown option. Did you
    mean one of (...)?" without naming it), with the known one each resembles. Names only: a
    value may be a secret."""
    from pymongo.common import URI_OPTIONS_VALIDATOR_MAP

    query = urllib.parse.urlsplit(uri).query
    names = [name for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)]
    unknown = [name for name in dict.fromkeys(names) if name.lower() not in URI_OPTIONS_VALIDATOR_MAP]
    if not unknown:
        return None
    said = []
    for name in unknown[:3]:
        close = difflib.get_close_matches(name.lower(), list(URI_OPTIONS_VALIDATOR_MAP), n=1, cutoff=0.6)
        said.append(f"{name[:40]!r}" + (f" (did you mean {uri_option_spelt(close[0])}?)" if close else ""))
    return f"unknown option {', '.join(said)} (the connection string options: MongoDB's manual)"


def twice_given_uri_option(uri: str) -> str | None:
    """An option the URI gives twice, named (pymongo keeps the last, and says so in a Python
    warning of two lines: ``w=majority&...&w=0`` would be unacknowledged writes). Only
    readPreferenceTags may repeat (each a tag set, in order of preference)."""
    query = urllib.parse.urlsplit(uri).query
    seen: set[str] = set()
    for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True):
        key = name.lower()
        if key in seen and key != "readpreferencetags":
            return f"the option {uri_option_spelt(key)!r} is given twice (keep one)"
        seen.add(key)
    return None


# The manual's spelling of the options pymongo's list (uri_parser.URI_OPTIONS) spells in lower
# case or leaves out (its validators know them all in lower case only).
_SPELT_AS_THE_MANUAL = ("appName", "timeoutMS", "uuidRepresentation", "tlsCRLFile", "waitQueueMultiple")


def uri_option_spelt(name: str) -> str:
    """A connection string option as MongoDB's manual spells it (``retrywrites``: ``retryWrites``)."""
    from pymongo.uri_parser import URI_OPTIONS

    spelt = {option.lower(): option for option in (*URI_OPTIONS, *_SPELT_AS_THE_MANUAL)}
    return spelt.get(name.lower(), name)


def mask_secrets_of(uri: str, text: str) -> str:
    """``text`` with the password of ``uri`` masked, however malformed the URI is."""
    text = redact_uri(text)
    password = uri_password(uri)
    if password:
        text = text.replace(password, "***").replace(urllib.parse.unquote(password), "***")
    return text


def parse_readable_file(value: str) -> str | None:
    text = str(value).strip()
    if not text:
        return None
    try:
        path = Path(text).expanduser()
        found = path.is_file()
    except (RuntimeError, OSError, ValueError):  # "~nouser/…", a name too long, a NUL
        raise ValueError(f"not a usable file path: {text}") from None
    if not found:
        raise ValueError(f"no such file: {text}")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {text}: {exc.strerror}") from None
    return str(path)


def parse_ca_file(value: str) -> str | None:
    """A CA bundle: a readable file with at least one certificate in it (PEM), as the TLS
    context loads it (the driver's SSLError came after the client was made, exit 1)."""
    import ssl

    path = parse_readable_file(value)
    if path is None:
        return None
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError):
        raise ValueError(
            f"{path}: no certificate in it (a CA bundle is PEM: -----BEGIN CERTIFICATE-----)"
        ) from None
    return path


def parse_cert_key_file(value: str) -> str | None:
    """A client certificate and its private key, one PEM file, as the TLS context loads it. A
    key under a password (the URI's tlsCertificateKeyFilePassword) cannot be opened here: the
    driver checks that one."""
    import ssl

    path = parse_readable_file(value)
    if path is None:
        return None
    asked: list[bool] = []

    def password() -> bytes:
        asked.append(True)
        return b""

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(path, password=password)
    except (ssl.SSLError, ValueError):
        if not asked:
            raise ValueError(
                f"{path}: not a certificate and its private key (one PEM file holds both)"
            ) from None
    return path


def parse_optional_database_name(value: str) -> str | None:
    return parse_database_name(value) if str(value).strip() else None


def parse_bool(value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def parse_text(value: str) -> str:
    return str(value).strip()


def parse_given(value: str) -> str:
    """A flag's value as typed, but not blank: ``--numero "$N"`` with ``N`` unset would be
    looked for, and reported as no such order."""
    if not str(value).strip():
        raise ValueError("must not be empty (an unset shell variable?)")
    return str(value)


def parse_order_fields(value: str) -> OrderFields:
    """Comma-separated order fields that hold nothing personal (see ``pii.OrderFields``)."""
    return OrderFields.parse(str(value).split(","))


COLD_SCHEMES = ("file", "s3")


def parse_cold_url(value: str) -> str:
    """The cold tier's place: ``file:///absolute/path`` or ``s3://bucket/prefix``. Credentials
    never ride in it (the AWS chain gives them: environment, profile, instance role)."""
    url = str(value).strip()
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()  # a URL's scheme is case-insensitive (RFC 3986): S3:// is s3://
    if not separator:
        raise ValueError(_without_slashes(url))
    if scheme not in COLD_SCHEMES:
        # Named only when it looks like a scheme (RFC 3986): "key:secret@s3" is a credential.
        shown = (
            f"the scheme {scheme!r}"
            if re.fullmatch(r"[a-z][a-z0-9+.-]{0,19}", scheme)
            else "an unknown scheme"
        )
        raise ValueError(f"expected file:///path or s3://bucket/prefix; got {shown}")
    url = f"{scheme}://{rest}"
    if scheme == "file" and not rest.startswith("/"):
        raise ValueError("a file:// URL names an absolute folder: file:///var/lib/order-archiver/cold")
    authority = rest.split("/", 1)[0]
    if scheme == "s3" and (not authority or "@" in authority or "?" in url):
        raise ValueError(
            "an s3:// URL names a bucket and a prefix only (s3://bucket/prefix); credentials come "
            "from the AWS settings (AWS_ACCESS_KEY_ID..., a profile or a role), never the URL"
        )
    return url.rstrip("/")


def _without_slashes(url: str) -> str:
    """Why a place with no ``://`` is refused: ``file:u2_cold`` has its scheme, and lacks the
    ``//`` and an absolute path (said so, the value unshown); the rest has no scheme at all."""
    scheme = url.partition(":")[0].lower()
    if ":" in url and scheme == "file":
        return "file: URLs take // and an absolute path: file:///absolute/path (file:///var/lib/order-archiver/cold)"
    if ":" in url and scheme == "s3":
        return "s3: URLs take // and a bucket: s3://bucket/prefix"
    return f"expected file:///path or s3://bucket/prefix; got {_schemeless(url)}"


def _schemeless(url: str) -> str:
    """A cold tier's place typed without ``scheme://`` (``cold``, ``/var/lib/cold``), as the
    error names it: the value when it reads as a folder's name, never one that may hold a
    credential (``key:secret@bucket``: a ``:`` or an ``@``)."""
    if not url or ":" in url or "@" in url or len(url) > 60:
        return "a value with no scheme"
    return f"{url!r} (no scheme: a folder is file:///absolute/path)"


# Environment variable -> (field, parser).
ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "MONGODB_URI": ("mongodb_uri", parse_uri),
    "MONGODB_URI_FILE": ("mongodb_uri_file", parse_readable_file),
    "ARCHIVE_MONGODB_URI": ("archive_mongodb_uri", parse_uri),
    "ARCHIVE_MONGODB_URI_FILE": ("archive_mongodb_uri_file", parse_readable_file),
    "MONGODB_DATABASE": ("mongodb_database", parse_database_name),
    "ORDERS_COLLECTION": ("orders_collection", parse_collection_name),
    "CLIENTS_COLLECTION": ("clients_collection", parse_collection_name),
    "COURIERS_COLLECTION": ("couriers_collection", parse_collection_name),
    "RESTAURANTS_COLLECTION": ("restaurants_collection", parse_collection_name),
    "MENU_COLLECTION": ("menu_collection", parse_collection_name),
    "DELIVERED_STATUS": ("delivered_status", parse_status),
    "ARCHIVE_DATABASE": ("archive_database", parse_optional_database_name),
    "ARCHIVE_COLLECTION": ("archive_collection", parse_collection_name),
    "CHECKPOINT_COLLECTION": ("checkpoint_collection", parse_collection_name),
    "REJECTS_COLLECTION": ("rejects_collection", parse_collection_name),
    "FORGOTTEN_COLLECTION": ("forgotten_collection", parse_collection_name),
    "BATCH_SIZE": ("batch_size", parse_batch_size),
    "BATCH_MAX_RATE": ("batch_max_rate", parse_positive_int),
    "BATCH_MAX_LAG": ("batch_max_lag", parse_positive_duration),
    "BATCH_PARTITION": ("batch_partition", parse_partition),
    "BATCH_OVERLAP": ("batch_overlap", parse_duration),
    "PURGE_AFTER": ("purge_after", parse_duration),
    "RESTORE_HOLD": ("restore_hold", parse_duration),
    "ARCHIVE_RETENTION": ("archive_retention", parse_retention),
    "ARCHIVE_PII_RETENTION": ("archive_pii_retention", parse_retention),
    "ARCHIVE_COLD_URL": ("archive_cold_url", parse_cold_url),
    "ARCHIVE_COLD_AFTER": ("archive_cold_after", parse_retention),
    "BATCH_FULL_SWEEP_EVERY": ("batch_full_sweep_every", parse_duration),
    "INDEX_BUILD_WAIT_S": ("index_build_wait_s", parse_seconds),
    "LOG_DIR": ("log_dir", parse_text),
    "LOG_LEVEL": ("log_level", parse_choice(LOG_LEVELS, upper=True)),
    "LOG_FORMAT": ("log_format", parse_choice(LOG_FORMATS)),
    "RESUME_TOKEN_FILE": ("resume_token_file", parse_text),
    "MONGODB_TIMEOUT_MS": ("mongodb_timeout_ms", parse_driver_ms),
    "MONGODB_WRITE_TIMEOUT_MS": ("mongodb_write_timeout_ms", parse_server_ms),
    "MONGODB_TLS_CA_FILE": ("mongodb_tls_ca_file", parse_ca_file),
    "MONGODB_TLS_CERT_KEY_FILE": ("mongodb_tls_cert_key_file", parse_cert_key_file),
    "WATCH_MAX_BATCH": ("watch_max_batch", parse_batch_size),  # one micro-batch's ids: one command
    "WATCH_MAX_AWAIT_MS": ("watch_max_await_ms", parse_watch_await_ms),
    "WATCH_HEARTBEAT_S": ("watch_heartbeat_s", parse_seconds),
    "WATCH_LIVENESS_S": ("watch_liveness_s", parse_seconds),
    "WATCH_LOG_INTERVAL_S": ("watch_log_interval_s", parse_seconds),
    "WATCH_LEASE_TTL_S": ("watch_lease_ttl_s", parse_seconds),
    "WATCH_LEASE_RENEW_S": ("watch_lease_renew_s", parse_seconds),
    "ARCHIVE_PII": ("archive_pii", parse_choice(PII_MODES)),
    "ARCHIVE_PII_KEY": ("archive_pii_key", parse_text),
    "ARCHIVE_NON_PERSONAL_FIELDS": ("non_personal_fields", parse_order_fields),
    "MONGODB_ALLOW_INSECURE_TLS": ("mongodb_allow_insecure_tls", parse_bool),
}


EMPTY_IS_A_VALUE = frozenset({"LOG_DIR"})  # empty: no log file


def unknown_settings(file_values: Mapping[str, str], where: str) -> list[str]:
    """A warning for each key of the ``.env`` file that is no setting, with the setting it
    resembles; one that is a typo of a setting's name is refused (``misspelt``). A ``.env`` may
    be shared with other tools (``MONGODB_VERSION``, docker compose's own): their keys are theirs."""
    warnings = []
    for key in sorted(set(file_values) - set(ENV_VARS) - set(AWS_SDK_VARIABLES)):
        flag_only(key, where)
        # Another tool's key may resemble a setting (MONGODB_URL, MONGO_URI): only one letter
        # off a setting's name (ORDERS_COLECTION) is taken for a typo without our prefixes.
        misspelt(key, where, 0.75 if _own(key) else NEAR_MISS)
        # A guess for another tool's key only when it is close (MONGODB_VERSION: no "MONGODB_URI?").
        meant = resembled(key, 0.75 if _own(key) else 0.85)
        hint = f"; did you mean {meant}?" if meant else ""
        warnings.append(f"{where}: {key} is not a setting, ignored{hint}")
    return warnings


# The environment holds every program's variables: a warning for a name with one of the
# product's own prefixes, or one close to a setting's (a typo), and no other.
OWN_PREFIXES = (
    "ARCHIVE_",
    "WATCH_",
    "BATCH_",
    "PURGE_",
    "RESTORE_",
    "CHECKPOINT_",
    "REJECTS_",
    "FORGOTTEN_",
    "DELIVERED_",
)
# What Kubernetes sets in every pod for each Service of its namespace (a Service named
# archive-mongodb: ARCHIVE_MONGODB_PORT, ARCHIVE_MONGODB_SERVICE_HOST, ...): never a typo.
SERVICE_LINK = re.compile(r"_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)$")


def _own(key: str) -> bool:
    """A name of the archiver's own prefixes that is not one of Kubernetes' service links."""
    return key.upper().startswith(OWN_PREFIXES) and SERVICE_LINK.search(key.upper()) is None


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """Each environment variable that looks meant for the archiver and is no setting
    (``ARCHIVE_RETENTON`` from systemd's ``EnvironmentFile=`` or a ConfigMap): one with the
    archiver's prefixes that resembles a setting is refused (``misspelt``); one without them
    that resembles one (``MONGODB_URL``: perhaps another program's) or resembles none is a warning."""
    warnings = []
    for key in sorted(set(environ) - set(ENV_VARS)):
        ours = _own(key)
        if ours:
            flag_only(key, "environment")
            misspelt(key, "environment", 0.85)
        meant = resembled(key, 0.85)
        if (meant and SERVICE_LINK.search(key.upper()) is None) or ours:
            hint = f"; did you mean {meant}?" if meant else ""
            warnings.append(f"environment: {key} is not a setting, ignored{hint}")
    return warnings


NEAR_MISS = 0.95  # difflib's ratio of a name one letter off a long setting name (ORDERS_COLECTION: 0.97)


# The prefixes a setting's name is written with or without by mistake (PII_RETENTION for
# ARCHIVE_PII_RETENTION, TLS_CA_FILE for MONGODB_TLS_CA_FILE, ARCHIVE_PURGE_AFTER for PURGE_AFTER).
NAME_PREFIXES = (*OWN_PREFIXES, "MONGODB_")


def prefix_near_miss(key: str) -> str | None:
    """The setting ``key`` is but for one of its prefixes missing or one extra, or None. A key
    of one word (DATABASE, SIZE) is any program's: only a name of two words or more is taken
    (and never one of the variables Kubernetes sets for a Service)."""
    upper = key.upper()
    if "_" not in upper.strip("_") or SERVICE_LINK.search(upper):
        return None
    for prefix in NAME_PREFIXES:
        if prefix + upper in ENV_VARS:
            return prefix + upper
        if upper.startswith(prefix) and upper[len(prefix) :] in ENV_VARS:
            return upper[len(prefix) :]
    return None


def resembled(key: str, cutoff: float) -> str | None:
    """The setting ``key`` looks meant for: its name but for a prefix, or one ``difflib`` finds
    at least ``cutoff`` alike; None if none."""
    close = difflib.get_close_matches(key.upper(), list(ENV_VARS), n=1, cutoff=cutoff)
    return prefix_near_miss(key) or (close[0] if close else None)


# batch's flags that have no setting, by the name a setting of theirs would have. Written beside
# BATCH_MAX_RATE in a Kubernetes Job's env, BATCH_MAX_RUNTIME=4h was a warning and a run without
# a bound (in .env: refused as "did you mean BATCH_MAX_RATE?", another limit altogether). They
# stay flags: a flag is seen in the command, and --max-runtime ends a run with exit 0, which an
# Indexed Job takes for its share done (docs/deployment.md).
FLAG_ONLY = {
    "BATCH_MAX_RUNTIME": "--max-runtime",
    "BATCH_STOP_FILE": "--stop-file",
    "BATCH_LIMIT": "--limit",
    "BATCH_DATE_FROM": "--date-from",
    "BATCH_DATE_TO": "--date-to",
    "BATCH_PURGE_SOURCE": "--purge-source",
}


def flag_only(key: str, where: str) -> None:
    """Refuse ``key`` when it names one of batch's flags as a setting: the run would go on
    without the bound or the window it was meant to have."""
    flag = FLAG_ONLY.get(key.upper())
    if flag:
        raise ConfigError(
            f"{where}: {key} is not a setting; {flag} is a flag of batch (give it on the command line)"
        )


def misspelt(key: str, where: str, cutoff: float) -> None:
    """Refuse ``key`` when it resembles a setting's name: a typo would leave that setting (a
    limit, a retention, a collection) silently at its default."""
    meant = resembled(key, cutoff)
    if meant:
        raise ConfigError(f"{where}: {key} is not a setting; did you mean {meant}? (fix its name)")


def _read_env_file(env_file: str | None) -> tuple[dict[str, str], list[str]]:
    """The ``.env`` values, and warnings about the file (world-readable secrets)."""
    path = Path(env_file) if env_file else Path(".env")
    if not path.is_file():
        if env_file and path.is_dir():
            raise ConfigError(f"--env-file {env_file}: a folder; name the settings file")
        if env_file:
            raise ConfigError(f"--env-file: no such file: {env_file}")
        return {}, []
    warnings = []
    try:
        status = path.stat()
        if status.st_mode & stat.S_IROTH:
            warnings.append(f"{path} is readable by every user; chmod 600 it (it may hold a password)")
        elif status.st_mode & stat.S_IRGRP:
            warnings.append(f"{path} is readable by its group; chmod 600 it (it may hold a password)")
        if hasattr(os, "getuid") and status.st_uid != os.getuid():
            warnings.append(
                f"{path} belongs to another user (uid {status.st_uid}): who else can change your settings?"
            )
        text = path.read_text(encoding="utf-8")
    except PermissionError:
        raise ConfigError(f"cannot read {path}: permission denied (run as its owner, chmod 600)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    _check_env_lines(path, text)
    values = dotenv_values(stream=io.StringIO(text))
    return {k: v for k, v in values.items() if v is not None}, warnings


def _check_env_lines(path: Path, text: str) -> None:
    """A line python-dotenv cannot read is refused, named by its number (never its text: it may
    hold a password). Read past with a warning, a setting meant there silently did not apply."""
    for binding in parse_stream(io.StringIO(text)):
        where = f"{path} line {binding.original.line}"
        if binding.error or (binding.key is not None and binding.value is None):  # junk; a bare NAME
            raise ConfigError(
                f"{where}: not NAME=value (quote a value with spaces or #; a comment starts with #)"
            )
        if binding.key is not None and _unquoted_with_a_space(binding.original.string):
            raise ConfigError(
                f"{where}: {binding.key} has a space in its value, unquoted: {_space_advice(binding)}"
            )


DURATION_PARSERS = (parse_duration, parse_positive_duration, parse_retention)
NUMBER_PARSERS = (
    parse_batch_size,
    parse_positive_int,
    parse_seconds,
    parse_driver_ms,
    parse_server_ms,
    parse_watch_await_ms,
)
_SPELT_DURATION = re.compile(r"(\d+)\s*([smhd])[a-z]*\s*(#.*)?$")  # "30 days", "2 hours # why"
_LEADING_NUMBER = re.compile(r"(\d+)")


def _space_advice(binding: Binding) -> str:
    """How to write the value: quoted, for a setting whose value may hold a space; a duration
    holds none (quoted, ``RESTORE_HOLD="30 days"`` was then refused as no duration: a new user
    followed the first advice into the second refusal), so its format is named instead, with
    the value as a duration is written when it reads as one (``30 days``: ``30d``)."""
    parser = ENV_VARS.get(binding.key or "", ("", None))[1]
    value = binding.original.string.split("=", 1)[1].strip().lower()
    if parser in NUMBER_PARSERS:  # ``BATCH_SIZE=50 more``: quoted, no number either
        number = _LEADING_NUMBER.match(value)
        return f"a number is written alone, without spaces, e.g. {number.group(1) if number else 500}"
    if parser not in DURATION_PARSERS:
        return 'put it in quotes ("my value"); a comment after a value starts at " #"'
    spelt = _SPELT_DURATION.match(value)
    example = f"{spelt.group(1)}{spelt.group(2)}" if spelt else "30d"
    return f"a duration is written without spaces, e.g. {example} (s, m, h or d after a whole number)"


def _unquoted_with_a_space(line: str) -> bool:
    """``LOG_DIR=my logs # comment``: python-dotenv reads ``my logs`` (the comment cut at a
    space and #) and a folder named so is made. An unquoted value holds no space or tab: quoted,
    it means what it says. A comment after one (``ARCHIVE_COLD_AFTER=730d    # on delivery``,
    as the docs showed), or alone (``KEY= # none``: empty), reads as written: not refused."""
    value = line.split("=", 1)[1].strip()
    if not value or value.startswith(("'", '"', "#")):
        return False
    return re.fullmatch(r"\S+(\s+#.*)?", value) is None


class MongoUriMissing(ConfigError):
    """MONGODB_URI set nowhere: where it was looked for, and ``--simulation`` named as the other
    way only where the command takes it (``batch``, ``simulate``; ``rejects`` refused it)."""

    def __init__(self, where: str, simulation: bool = True) -> None:
        super().__init__(f"MONGODB_URI is not set: {where}" + (", or use --simulation" if simulation else ""))
        self.where = where

    def without_simulation(self) -> MongoUriMissing:
        return MongoUriMissing(self.where, simulation=False)


def _where_looked(env_file: str | None) -> str:
    """Where MONGODB_URI was looked for, the settings file by its absolute path: run from
    another folder, ".env" alone did not say which .env was meant, nor that there was none."""
    if env_file:
        return f"not in the environment nor in --env-file {Path(env_file).absolute()} (add it there; see .env.example)"
    here = Path(".env").absolute()
    if here.is_file():
        return f"not in the environment nor in {here} (add it there; see .env.example)"
    return (
        f"not in the environment, and no .env in {here.parent} (run from the project's folder, "
        "or name the settings file: --env-file PATH; see .env.example)"
    )


# The settings that name a deployment's storage. A settings file (.env, --env-file) is a
# deployment's: --simulation takes none of these from it, lest its generated orders reach the
# real cold tier, its lines the real log folder. (Its servers, MONGODB_URI and
# ARCHIVE_MONGODB_URI, a simulation never contacts.) The environment's are this command's own
# choice (ARCHIVE_COLD_URL=file:///tmp/try ... --simulation).
REAL_PLACES = ("ARCHIVE_COLD_URL", "ARCHIVE_COLD_AFTER", "LOG_DIR", "RESUME_TOKEN_FILE")


def outside_simulation(
    file_values: Mapping[str, str], environ: Mapping[str, str], where: str
) -> tuple[dict[str, str], list[str]]:
    """The settings file's values a simulation keeps, and the one line naming those it drops.
    An empty value points nowhere (LOG_DIR=: no log file) and the default's place is the
    simulation's too (.env.example's LOG_DIR=logs): both kept, unsaid. ARCHIVE_COLD_AFTER goes
    with the file's ARCHIVE_COLD_URL, unless the environment gives a cold tier of its own."""
    defaults = {field.name: field.default for field in dataclasses.fields(Settings)}
    dropped = [
        name
        for name in REAL_PLACES
        if str(file_values.get(name) or "").strip() not in ("", str(defaults[ENV_VARS[name][0]]))
        and name not in environ
        and not (name == "ARCHIVE_COLD_AFTER" and environ.get("ARCHIVE_COLD_URL"))
    ]
    if not dropped:
        return dict(file_values), []
    kept = {name: value for name, value in file_values.items() if name not in dropped}
    return kept, [
        f"--simulation: ignored {', '.join(dropped)} from {where}: a simulation never writes into a "
        "deployment's storage (to try them on generated data, set them in the environment of this "
        "one command)"
    ]


def load_settings(
    env_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, list[str]]:
    """Build the settings, and the warnings to log once logging is set up.

    ``overrides`` are the flags' values by field name (``None`` means "not given").
    """
    file_values, warnings = _read_env_file(env_file)
    warnings += unknown_settings(file_values, env_file or ".env")
    environment = os.environ if environ is None else environ
    warnings += unknown_environment(environment)
    if (overrides or {}).get("simulation"):
        file_values, ignored = outside_simulation(file_values, environment, env_file or ".env")
        warnings += ignored
    values = _parsed_values(environment, file_values)
    values.update(uri_from_file(values))  # before the flags: --archive-uri overrides the file too
    values.update({field: value for field, value in (overrides or {}).items() if value is not None})
    if not (overrides or {}).get("simulation"):  # a simulation takes no deployment's storage from a file
        values["aws_sdk_from_file"] = aws_sdk_from_file(file_values, environment)
    settings = Settings(**values)
    check_settings(settings)
    if not settings.simulation and not settings.mongodb_uri:
        raise MongoUriMissing(_where_looked(env_file))
    check_aws_endpoints(settings, {**dict(settings.aws_sdk_from_file), **environment})
    warnings += retention_warnings(settings)
    for name, uri in (
        ("MONGODB_URI", settings.mongodb_uri),
        ("ARCHIVE_MONGODB_URI", settings.archive_mongodb_uri),
    ):
        if uri and not settings.simulation:
            warnings += tls_problems(name, uri, settings)
    return settings, warnings


# The S3-compatible store's address, read by the AWS SDK itself (pyarrow) from the environment.
AWS_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
# The AWS SDK's settings for the cold tier's S3, which it reads from the process environment
# (docs/operating.md). A settings file may give them as it gives the archiver's own: each is the
# SDK's where the environment lacks it (the environment wins, as for every setting).
AWS_SDK_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CA_BUNDLE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


def aws_sdk_from_file(
    file_values: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """The AWS SDK's variables the settings file gives and the environment does not."""
    return tuple(
        (name, value)
        for name, value in sorted(file_values.items())
        if name in AWS_SDK_VARIABLES and value and name not in environ
    )


def hand_aws_settings_to_the_sdk(settings: Settings) -> None:
    """The settings file's AWS variables into this process's environment, where the SDK reads
    them (pyarrow's S3 has no other way for a profile or an endpoint variable); never over the
    environment's own. Before the cold tier's S3 is opened."""
    for name, value in settings.aws_sdk_from_file:
        os.environ.setdefault(name, value)


def check_watch_liveness(settings: Settings) -> None:
    """``/healthz``'s grace against the waits no stop sees: a driver call waits up to
    MONGODB_TIMEOUT_MS to select a server (or connect), a write up to MONGODB_WRITE_TIMEOUT_MS
    for a majority. A grace not longer than those would call a watcher waiting for a MongoDB
    away stuck, and have it restarted (docs/commands.md: "MongoDB away never fails it")."""
    longest_ms = max(settings.mongodb_timeout_ms, settings.mongodb_write_timeout_ms)
    if settings.watch_liveness_s * 1000 <= longest_ms:
        raise ConfigError(
            f"WATCH_LIVENESS_S ({settings.watch_liveness_s}) must be longer than one call to MongoDB "
            f"may wait ({longest_ms / 1000:g} s: MONGODB_TIMEOUT_MS, MONGODB_WRITE_TIMEOUT_MS): "
            "/healthz would call a watcher waiting for its server stuck"
        )


def check_aws_endpoints(settings: Settings, environ: Mapping[str, str]) -> None:
    """An S3 cold tier's endpoint with ``key:secret@`` in it is refused, the value unshown: the
    SDK takes the key for a host name, and its error prints it; credentials come from their
    own variables, as for ARCHIVE_COLD_URL."""
    if not (settings.archive_cold_url or "").startswith("s3://"):
        return
    for name in AWS_ENDPOINT_VARIABLES:
        authority = re.split(r"[/?#]", environ.get(name, "").strip().partition("://")[2], maxsplit=1)[0]
        if "@" in authority:
            raise ConfigError(
                f"{name}: holds credentials (the value is not shown); give the store's address only, "
                "and the keys as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile, a role)"
            )


# Each connection string that a file may give instead (a secret mounted as a file), and the
# setting naming that file: the source's and, on its own deployment, the archive's.
URI_FILES = (
    ("MONGODB_URI", "mongodb_uri", "mongodb_uri_file"),
    ("ARCHIVE_MONGODB_URI", "archive_mongodb_uri", "archive_mongodb_uri_file"),
)


def uri_from_file(values: Mapping[str, Any]) -> dict[str, str]:
    """MONGODB_URI read from MONGODB_URI_FILE, ARCHIVE_MONGODB_URI from ARCHIVE_MONGODB_URI_FILE
    (a secret mounted as a file: no environment variable that ``/proc/<pid>/environ``, a crash
    dump or a child process could show). One of each pair, not both; an error names the file,
    never what it holds."""
    found: dict[str, str] = {}
    for name, field, file_field in URI_FILES:
        path = values.get(file_field)
        if not path:
            continue
        if values.get(field):
            raise ConfigError(f"{name} and {name}_FILE are both set: keep one")
        found[field] = _uri_in_file(f"{name}_FILE", path)
    return found


def _uri_in_file(setting: str, path: str) -> str:
    """The one connection string the file at ``path`` holds (``setting`` names it in errors)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"{setting} {path}: cannot be read: {reason}") from None
    lines = text.splitlines()
    if len(lines) > 1:  # two URIs pasted, a comment: what pymongo said named neither
        raise ConfigError(f"{setting} {path}: {len(lines)} lines; the connection string alone, on one line")
    try:
        return parse_uri(text)
    except ValueError as exc:
        raise ConfigError(f"{setting} {path}: {exc}") from None


def _parsed_values(environ: Mapping[str, str], file_values: Mapping[str, str]) -> dict[str, Any]:
    """Each setting the environment or the .env file gives (the environment first), parsed."""
    values: dict[str, Any] = {}
    for var, (field, parse) in ENV_VARS.items():
        raw = environ.get(var)
        if raw is None:
            raw = file_values.get(var)
        # An empty value is "not set" (the shipped .env.example leaves optional ones empty),
        # except where empty says something of its own (LOG_DIR: no log file).
        if raw is None or (not str(raw).strip() and var not in EMPTY_IS_A_VALUE):
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{var}: {exc}") from None
    return values


def check_settings(settings: Settings) -> None:
    """What no single setting shows: settings that contradict each other, or one missing."""
    check_collection_roles(settings)
    if settings.watch_lease_renew_s * 2 > settings.watch_lease_ttl_s:
        raise ConfigError(
            f"WATCH_LEASE_RENEW_S ({settings.watch_lease_renew_s}) must be at most half of "
            f"WATCH_LEASE_TTL_S ({settings.watch_lease_ttl_s}): a leader would lose its lease "
            "between two renewals"
        )
    retention = settings.archive_retention
    if retention is not None and retention < settings.purge_after:
        raise ConfigError(
            f"ARCHIVE_RETENTION ({retention}) is shorter than PURGE_AFTER ({settings.purge_after}): the archive "
            "would expire orders before the purge may move them; lengthen one or shorten the other"
        )
    check_cold_tier(settings)
    if settings.archive_pii == "hash" and len(settings.archive_pii_key or "") < 16:
        raise ConfigError("ARCHIVE_PII=hash needs ARCHIVE_PII_KEY, a secret of at least 16 characters")


def check_cold_tier(settings: Settings) -> None:
    """ARCHIVE_COLD_URL and ARCHIVE_COLD_AFTER go together, after PURGE_AFTER (an order leaves
    the source before the archive) and before ARCHIVE_RETENTION (the TTL index would delete it
    first)."""
    url, after = settings.archive_cold_url, settings.archive_cold_after
    if (url is None) != (after is None):
        given, missing = (
            ("ARCHIVE_COLD_URL", "ARCHIVE_COLD_AFTER") if url else ("ARCHIVE_COLD_AFTER", "ARCHIVE_COLD_URL")
        )
        raise ConfigError(f"{given} is set without {missing}: set both for a cold tier, or neither")
    if after is None:
        return
    purge_after = settings.purge_after
    if after < purge_after:
        raise ConfigError(
            f"ARCHIVE_COLD_AFTER ({after}) is shorter than PURGE_AFTER ({purge_after}): orders would leave "
            f"the archive before the source; set ARCHIVE_COLD_AFTER to at least {purge_after} or PURGE_AFTER "
            f"to at most {after} ({_COLD_RULE})"
        )
    retention = settings.archive_retention
    if retention is not None and after >= retention:
        raise ConfigError(
            f"ARCHIVE_COLD_AFTER ({after}) is not shorter than ARCHIVE_RETENTION ({retention}): MongoDB's "
            "TTL index would delete archived orders before they move to the cold tier; set "
            f"ARCHIVE_COLD_AFTER under {retention} or ARCHIVE_RETENTION over {after} ({_COLD_RULE})"
        )


# The cold tier's settings in order: an order leaves the source, then the archive for a cold
# file, before MongoDB's TTL index (ARCHIVE_RETENTION) would delete it.
_COLD_RULE = "the rule: PURGE_AFTER <= ARCHIVE_COLD_AFTER < ARCHIVE_RETENTION"


def retention_warnings(settings: Settings) -> list[str]:
    """Retention settings that say nothing wrong, but less than their reader may think."""
    kept, erased = settings.archive_retention, settings.archive_pii_retention
    if kept is not None and erased is not None and erased >= kept:
        return [
            f"ARCHIVE_PII_RETENTION ({erased}) is not shorter than ARCHIVE_RETENTION ({kept}): orders expire "
            "before their personal data would be erased"
        ]
    return []


# Options that switch the server's certificate check off (pymongo's names, any case).
INSECURE_TLS_OPTIONS = (
    "tlsinsecure",
    "tlsallowinvalidcertificates",
    "tlsallowinvalidhostnames",
    "ssl_cert_reqs",
)
_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[?::1\]?)$", re.IGNORECASE)


def uri_options(uri: str) -> dict[str, str]:
    """A URI's options, their names lower-cased (MongoDB reads them without case)."""
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return {k.lower(): v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)}


def _authority(uri: str) -> str:
    """The hosts part of a URI: after the scheme and any ``user:password@``, before the path."""
    rest = uri.split("://", 1)[-1]
    return re.split(r"[/?]", rest, maxsplit=1)[0].rsplit("@", 1)[-1]


def _host_names(uri: str) -> list[str]:
    return [re.sub(r":\d+$", "", host) for host in _authority(uri).split(",") if host]


def uses_tls(uri: str, settings: Settings) -> bool:
    """TLS on: a ``+srv`` URI (on by default), ``tls=true``/``ssl=true``, or the TLS files set."""
    options = uri_options(uri)
    on = uri.startswith("mongodb+srv://") or options.get("tls", options.get("ssl", "")).lower() == "true"
    return on or bool(settings.mongodb_tls_ca_file or settings.mongodb_tls_cert_key_file)


def remote_hosts(uri: str) -> list[str]:
    """The hosts of a URI that are not this machine."""
    return [h for h in _host_names(uri) if not _LOOPBACK.match(h)]


def in_clear(uri: str) -> str:
    """What a connection without TLS (or without its certificate checked) lays open: the orders,
    and the password when the URI holds one (none: X.509 or no authentication, nothing else)."""
    return "the password and the orders" if uri_password(uri) else "the orders"


def tls_problems(name: str, uri: str, settings: Settings) -> list[str]:
    """A URI that switches the certificate check off is refused (``ConfigError``) unless
    MONGODB_ALLOW_INSECURE_TLS says so: anyone on the path could then read the password and
    the orders. A remote host reached without TLS is a warning."""
    options = uri_options(uri)
    insecure = [o for o in INSECURE_TLS_OPTIONS if options.get(o, "").lower() in ("true", "1", "none")]
    if insecure and not settings.mongodb_allow_insecure_tls:
        raise ConfigError(
            f"{name}: {uri_option_spelt(insecure[0])} switches the server's certificate check off (anyone on the way "
            f"could read {in_clear(uri)}); remove it, or set MONGODB_ALLOW_INSECURE_TLS=true "
            "for a test deployment"
        )
    remote = remote_hosts(uri)
    if remote and not uses_tls(uri, settings):
        return [
            f"{name}: {remote[0]} is reached without TLS: {in_clear(uri)} cross the network in clear "
            "(add tls=true)"
        ]
    return []


# The roles whose collections live on the archive's side (its own deployment with
# ARCHIVE_MONGODB_URI); the others are the source's.
ARCHIVE_SIDE_ROLES = frozenset(
    {"ARCHIVE_COLLECTION", "CHECKPOINT_COLLECTION", "REJECTS_COLLECTION", "FORGOTTEN_COLLECTION"}
)


def collection_roles(settings: Settings) -> list[tuple[str, str, str]]:
    """Each collection the archiver touches: (setting, database, collection)."""
    source, archive = settings.mongodb_database, settings.archive_db_name
    return [
        ("ORDERS_COLLECTION", source, settings.orders_collection),
        ("CLIENTS_COLLECTION", source, settings.clients_collection),
        ("COURIERS_COLLECTION", source, settings.couriers_collection),
        ("RESTAURANTS_COLLECTION", source, settings.restaurants_collection),
        ("MENU_COLLECTION", source, settings.menu_collection),
        ("ARCHIVE_COLLECTION", archive, settings.archive_collection),
        ("CHECKPOINT_COLLECTION", archive, settings.checkpoint_collection),
        ("REJECTS_COLLECTION", archive, settings.rejects_collection),
        ("FORGOTTEN_COLLECTION", archive, settings.forgotten_collection),
    ]


def check_collection_roles(settings: Settings) -> None:
    """No collection may play two roles: an archive that is the orders collection makes a
    purge delete every delivered order, one that is the dishes writes orders among them.
    Database names compare without case (MongoDB refuses two that differ only by case)."""
    seen: dict[tuple[str, str, str], str] = {}
    for setting, database, collection in collection_roles(settings):
        # Two deployments (ARCHIVE_MONGODB_URI): the same name on each is two collections.
        side = "archive" if settings.archive_elsewhere and setting in ARCHIVE_SIDE_ROLES else "source"
        key = (side, database.casefold(), collection)
        if key in seen:
            raise ConfigError(
                f"{setting} and {seen[key]} both name {database}.{collection}: each collection plays "
                f"one role; give {setting} (or ARCHIVE_DATABASE) another value"
            )
        seen[key] = setting


def check_output_file(path: str, what: str) -> Path:
    """A file the run will write: its folder exists and takes a new file, and it is not a
    folder itself. Checked before any database work, so a typo costs nothing (exit 2)."""
    try:
        if "\x00" in path:
            raise ValueError("a NUL in a path")
        target = Path(path).expanduser()
        is_folder = target.is_dir()
        folder = target.parent
        folder_exists = folder.is_dir()
    except (RuntimeError, OSError, ValueError):
        raise ConfigError(f"{what}: not a usable file path: {path}") from None
    if is_folder or not target.name:
        raise ConfigError(f"{what} {path}: is a folder; name a file")
    if target.is_symlink():  # written with O_NOFOLLOW: refused now, not after the run's work
        raise ConfigError(f"{what} {path}: a symbolic link; name the file itself")
    if not folder_exists:
        raise ConfigError(
            f"{what} {path}: the folder {folder} does not exist; create it or pick another path"
        )
    try:
        handle, probe = tempfile.mkstemp(prefix=".order-archiver-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot write in {folder}: {exc.strerror}") from None
    return target


def open_private(path: str | Path, flags: int) -> int:
    """``os.open`` of a file only this user may read (0600), never through a symbolic link
    (``O_NOFOLLOW``: a link planted where the file goes would have it write another file).
    Windows has neither ``O_NOFOLLOW`` nor (before Python 3.13) ``os.fchmod``: there the file
    is opened as it is, its folder's access rights its only guard (deploy/windows/NSSM.md)."""
    descriptor = os.open(path, flags | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    if hasattr(os, "fchmod"):
        os.fchmod(descriptor, 0o600)
    return descriptor


def write_private(path: str | Path, text: str) -> None:
    """Write a file only this user may read (0600: samples hold orders, and may hold people
    with --show-pii), never through a symbolic link (``open_private``)."""
    descriptor = open_private(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)


def check_log_dir(log_dir: str) -> list[str]:
    """The log folder exists (it is created, 0700) and takes files; empty means no log file.
    A symbolic link is refused (the logs would go where it points: another user's folder); an
    existing folder open to its group or others is tightened to 0700, and that is said (the
    returned warnings): the logs name orders and clients' ids."""
    if not log_dir:
        return []
    try:
        folder = Path(log_dir).expanduser()
        is_link = folder.is_symlink()
    except (RuntimeError, OSError, ValueError):  # "~nouser/logs", a name too long
        raise ConfigError(f"LOG_DIR {log_dir}: not a usable folder path") from None
    if is_link:
        raise ConfigError(f"LOG_DIR {log_dir}: a symbolic link; give the folder itself")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (OSError, RuntimeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"LOG_DIR {log_dir}: cannot create the log folder: {reason}") from None
    check_output_file(str(folder / LOG_FILE_NAME), "LOG_DIR")
    return _tightened(folder, log_dir)


def _tightened(folder: Path, log_dir: str) -> list[str]:
    """``folder`` made 0700 if its group or others may enter it; what was done, or why not."""
    mode = stat.S_IMODE(folder.stat().st_mode)
    if not mode & 0o077:
        return []
    try:
        folder.chmod(0o700)
    except OSError as exc:
        return [
            f"LOG_DIR {log_dir} is open to other users ({mode:o}) and cannot be tightened: {exc.strerror}"
        ]
    return [f"LOG_DIR {log_dir} was open to other users ({mode:o}): made 0700"]


def check_output_paths(settings: Settings, outputs: Mapping[str, str | None], env_file: str | None) -> None:
    """Every file a command will write (``outputs``: what -> path) is writable, and no two
    name the same file, nor the settings file, the log file or the resume token file."""
    claimed: dict[Path, str] = {}

    def claim(path: str, what: str) -> None:
        try:
            key = Path(path).expanduser().resolve()
        except (RuntimeError, OSError, ValueError):
            raise ConfigError(f"{what}: not a usable file path: {path}") from None
        if key in claimed:
            raise ConfigError(f"{what} and {claimed[key]} both name {path}; give each its own file")
        claimed[key] = what

    claim(env_file or ".env", "--env-file" if env_file else "the .env file")
    if settings.log_dir:
        claim(str(Path(settings.log_dir) / LOG_FILE_NAME), "the log file (LOG_DIR)")
    if "RESUME_TOKEN_FILE" not in outputs:
        claim(settings.resume_token_file, "RESUME_TOKEN_FILE")
    for what, path in outputs.items():
        if path:
            # Each folder must exist, the token file's too: a typo in it (``/nonexistent/dir/``)
            # made a folder and a new token (a whole catch-up) where the saved one was elsewhere.
            # Every deployment of deploy/ has it (systemd's StateDirectory, the image's /data).
            check_output_file(path, what)
            claim(path, what)


# ``user:password@`` after anything that looks like a scheme, mistyped ones included
# (``mongodb:/``, ``MONGODB://``, none at all): a masked word too many beats a password shown.
_URI_PASSWORD = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.-]*:/*)?)([^:/?#@\s'\"]*):([^\s'\"/]*)@")
_PASSWORD_PARAM = re.compile(
    # Not a file's name in a path (``/etc/passwd: not a folder`` names no password).
    r"(?<!/)((?:password|passwd|pwd|secret|tlsCertificateKeyFilePassword|ARCHIVE_PII_KEY"
    # AWS credentials ride in authMechanismProperties (AWS_SESSION_TOKEN:...): all of it.
    r"|authMechanismProperties)\s*[=:]\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^&\s;'\"]+)",
    re.IGNORECASE,
)


def redact_uri(text: str) -> str:
    """Mask the password of every URI-like ``user:password@`` in ``text``, and ``password=...``
    pairs."""
    text = _URI_PASSWORD.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)
    return _PASSWORD_PARAM.sub(lambda m: f"{m.group(1)}***", text)


def parse_command_line_uri(value: str) -> str:
    """A URI given on the command line: no password in it, nor any option that carries a secret
    (any local user reads a process's command line: ``ps``); it belongs in the environment or
    the ``.env`` file. The message names what was found, never its value."""
    secrets = (["a password"] if uri_password(value) else []) + uri_secret_options(value)
    if secrets:
        raise ValueError(
            f"holds {' and '.join(secrets)}, and every user of this host can read a command line "
            "(ps): put the URI in ARCHIVE_MONGODB_URI (the .env file, chmod 600) or in a file named by "
            "ARCHIVE_MONGODB_URI_FILE"
        )
    return parse_uri(value)


# URI options that carry a secret (pymongo's option names, any case): the key file's password,
# and AWS credentials (MONGODB-AWS reads AWS_SESSION_TOKEN from authMechanismProperties).
_SECRET_OPTIONS = {"tlscertificatekeyfilepassword": "tlsCertificateKeyFilePassword"}
_SECRET_PROPERTIES = ("AWS_SESSION_TOKEN",)


def uri_secret_options(uri: str) -> list[str]:
    """The names of the options of ``uri`` that carry a secret, in the order given."""
    query = (uri or "").split("?", 1)[1] if "?" in (uri or "") else ""
    found = []
    for pair in re.split(r"[&;]", query):
        name, _, value = pair.partition("=")
        key = urllib.parse.unquote(name).strip().lower()
        if key in _SECRET_OPTIONS:
            found.append(_SECRET_OPTIONS[key])
        elif key == "authmechanismproperties" and any(
            p in urllib.parse.unquote(value).upper() for p in _SECRET_PROPERTIES
        ):
            found.append("authMechanismProperties=AWS_SESSION_TOKEN")
    return found


def uri_password(uri: str | None) -> str | None:
    """The password in a URI, well-formed or not: what lies between the first ``:`` after the
    scheme and the last ``@`` of the authority (raw and percent-decoded forms are both secrets)."""
    text = (uri or "").strip()
    rest = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*:/+", "", text)
    authority = re.split(r"[/?#](?=[^@]*$)", rest, maxsplit=1)[0]
    if "@" not in authority:
        return None
    userinfo = authority.rsplit("@", 1)[0]
    if ":" not in userinfo:
        return None
    password = userinfo.split(":", 1)[1]
    return password or None


_DAYS_AGO = re.compile(r"^(\d{1,5})d$")


def parse_date_bound(text: str, now: datetime | None = None) -> datetime:
    """A window bound: ``YYYY-MM-DD``, an ISO-8601 datetime, ``today``, ``yesterday`` or ``Nd``.

    Days are UTC days: ``today`` is today at 00:00 UTC, ``7d`` is 00:00 UTC seven days ago.
    A datetime without an offset is UTC.
    """
    now = now or datetime.now(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
    value = str(text).strip().lower()
    if value == "today":
        return midnight
    if value == "yesterday":
        return midnight - timedelta(days=1)
    days_ago = _DAYS_AGO.match(value)
    if days_ago:
        return midnight - timedelta(days=int(days_ago.group(1)))
    try:
        parsed = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise ValueError(
            f"expected YYYY-MM-DD, an ISO-8601 datetime, today, yesterday or Nd; got {text!r}"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise ValueError(f"out of range once in UTC (years 1 to 9999); got {text!r}") from None


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def parse_bind_address(text: str) -> str:
    """An address to listen on: an IP address (``0.0.0.0``, ``::1``) or a host name (RFC 1123,
    its last label not all digits: ``999.1.1.1`` is a mistyped address, not a name)."""
    import ipaddress

    value = str(text).strip()
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if _HOST_NAME.match(value.lower()) and not value.rsplit(".", 1)[-1].isdigit():
        return value
    raise ValueError(f"expected an IP address or a host name, got {text!r}")


def parse_port(text: str) -> int:
    port = parse_positive_int(text)
    if port > 65535:
        raise ValueError(f"expected a port from 1 to 65535, got {port}")
    return port
