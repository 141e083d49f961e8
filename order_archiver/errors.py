"""The archiver's error hierarchy and the one error classification.

Every failure the product knows about is an ``ArchiverError`` carrying its exit code, so
that ``main.py`` maps errors to exit codes in one place. Errors raised by pymongo are sorted
here (``is_transient``, ``classify``): transient ones are retried (``order_archiver.retry``),
everything else fails fast with a clear message.
"""

from __future__ import annotations

import errno
import re
from enum import IntEnum
from typing import Literal

from pymongo import errors as pymongo_errors


class ExitCode(IntEnum):
    """The command line's one exit-code table (docs/operating.md), named by meaning: 3 is
    the same number for three commands, each with its own name."""

    OK = 0
    FAILED = 1  # server unreachable, authentication, write failure after retries, interrupted
    USAGE = 2  # bad usage or configuration
    NEW_REJECTED_ORDERS = 3  # batch: this run found invalid orders never listed before
    UNHEALTHY = 3  # status, doctor
    INCONSISTENT = 3  # verify
    INCOMPLETE = 3  # restore: an order left alone (other content in the source) or without a copy


EXIT_OK = ExitCode.OK
EXIT_FAILED = ExitCode.FAILED
EXIT_USAGE = ExitCode.USAGE


class ArchiverError(Exception):
    """Base of every error the archiver reports to its user; ``str()`` is one line."""

    exit_code = EXIT_FAILED


class ConfigError(ArchiverError):
    """Bad usage or configuration: a flag, an environment variable, a ``.env`` value."""

    exit_code = EXIT_USAGE


class NotSupportedError(ArchiverError):
    """The server cannot do what was asked (e.g. change streams on a standalone)."""

    exit_code = EXIT_FAILED


class FatalError(ArchiverError):
    """A failure that retrying cannot cure: authentication, authorisation, bad data shape."""

    exit_code = EXIT_FAILED


class TransientError(ArchiverError):
    """A failure that outlived its retries (network, failover); a re-run can finish the job."""

    exit_code = EXIT_FAILED


class Interrupted(ArchiverError):
    """A signal (SIGINT, SIGTERM) ended a step at a boundary where nothing is in flight (the
    cold tier's: between two files): what it did stays, the next run does the rest. batch says
    it as an interrupted run (ended ``signal``, exit 1); forget as its own signal (exit 0)."""

    exit_code = EXIT_FAILED


class InvalidOrderError(Exception):
    """One source order cannot be archived; never fatal, the order is counted as rejected."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Server error codes that mean "try again": failover, shutdown, network, stale routing,
# a plan or cursor killed under us (a walk reopens after its last _id), majority reads not
# available yet. https://github.com/mongodb/specifications (retryable-reads, retryable-writes,
# change-streams) lists them.
TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        64,  # WriteConcernTimeout (wtimeout): the write may yet be rolled back; upserts retry safely
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        133,  # FailedToSatisfyReadPreference
        134,  # ReadConcernMajorityNotAvailableYet
        150,  # StaleEpoch
        175,  # QueryPlanKilled
        189,  # PrimarySteppedDown
        234,  # RetryChangeStream
        237,  # CursorKilled
        262,  # ExceededTimeLimit
        462,  # IngressRequestRateLimitExceeded (8.2+, Atlas: the server sheds load)
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13388,  # StaleConfig
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
# A read stopped by a time limit: 50 MaxTimeMSExpired (pymongo's ``ExecutionTimeout``; pymongo
# raises it too when ``timeoutMS`` in the URI runs out before a command is sent). Never transient:
# the same read meets the same limit at the same point, every run. A limit the archiver did not ask
# for is real: MongoDB 8.0's ``defaultMaxTimeMS`` cluster parameter (every aggregate and find sent
# without a maxTimeMS of its own; Atlas sets it too), and a non-tailable cursor's getMores share
# its command's time (``getmore_cmd.cpp`` rolls the leftover over). So a long streaming read goes
# on in short pages after the last _id read (``source.ChunkReader``, ``source.scan_by_id``), and a
# page that itself expires is the deployment's fault (``time_limit_error``). Only there: a write
# or an index build with maxTimeMS means something else (``mongodb/indexes.py``).
MAX_TIME_MS_EXPIRED = 50


def is_time_limit(exc: BaseException) -> bool:
    """A command (or a getMore) stopped by a time limit: 50 MaxTimeMSExpired."""
    return isinstance(exc, pymongo_errors.OperationFailure) and exc.code == MAX_TIME_MS_EXPIRED


# Where the limit comes from, said once where a long read goes on in pages, and in the error of a
# page that expires.
TIME_LIMIT_SOURCES = (
    "MaxTimeMSExpired, code 50: MongoDB 8.0's defaultMaxTimeMS, an Atlas tier's limit "
    "or timeoutMS in MONGODB_URI"
)


def time_limit_error(exc: BaseException, what: str) -> FatalError:
    """A page (``what``), a short read, stopped by the server's time limit: the deployment allows
    reads less time than a page takes. One line, exit 1; nothing was rejected for it."""
    error = FatalError(
        f"the server's time limit stopped {what}, a short read ({TIME_LIMIT_SOURCES}): the "
        "deployment allows a read less time than a page takes; raise that limit (setClusterParameter "
        "defaultMaxTimeMS, or timeoutMS), or find what slows the read (doctor: the indexes); "
        "nothing was rejected, the next run goes on from the checkpoint"
    )
    error.__cause__ = exc
    return error


# The server's own verdict: retryable writes, resumable streams, transactions, and a server
# that sheds load (MongoDB 8.2+ and Atlas label it; pymongo adds both labels on overload).
TRANSIENT_LABELS = (
    "RetryableWriteError",
    "ResumableChangeStreamError",
    "TransientTransactionError",
    "SystemOverloadedError",
    "RetryableError",
)
AUTH_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
ATLAS_ERROR = 8000  # Atlas answers an authorisation failure with AtlasError, "not allowed to do action"
# Write concern errors that no retry cures: the write concern itself is wrong for this cluster.
WRITE_CONCERN_CONFIG_CODES = frozenset({79, 100})  # UnknownReplWriteConcern, UnsatisfiableWriteConcern


# Change streams: "this resume token cannot be used" (fall back to a catch-up), and "this
# deployment has no change streams" (a standalone server).
TOKEN_UNUSABLE_CODES = frozenset(
    {
        # An open stream whose place in the oplog was deleted under it (the oplog is capped:
        # "CollectionScan died due to position in capped collection being deleted"): one left
        # unread through more writes than the oplog holds, a watcher's during a long catch-up.
        136,  # CappedPositionLost
        260,  # InvalidResumeToken
        280,  # ChangeStreamFatalError
        286,  # ChangeStreamHistoryLost
    }
)
NO_CHANGE_STREAMS_CODES = frozenset({40573, 40324})


# A document refused for its size: the data, never the deployment. 10334 BSONObjectTooLarge (a
# command, a result or a change event past 16 MB + 16 KiB; an update's result since 8.x), 17419
# an update's result past 16 MB (``update_stage.cpp``, 4.4 to 8.0), 17420 an upsert's insert
# (``upsert_stage.cpp``); an insert's document: 2 BadValue "object to insert too large"
# (``fixDocumentForInsert``); 4568 a ``$lookup``'s joined array past 16 MB.
DOCUMENT_TOO_LARGE_CODES = frozenset({4568, 10334, 17419, 17420})
INSERT_TOO_LARGE = "object to insert too large"


def is_document_too_large(code: object, message: object = "") -> bool:
    """A refusal (a command's code, or a write error's code and message) of a document for its
    size: that order is rejected (or refused) with the reason, never the run failed."""
    return code in DOCUMENT_TOO_LARGE_CODES or (code == 2 and str(message).startswith(INSERT_TOO_LARGE))


def is_authorisation_error(exc: BaseException) -> bool:
    """Authentication or authorisation refused, Atlas's wording included: fail at once."""
    if not isinstance(exc, pymongo_errors.OperationFailure):
        return False
    if exc.code in AUTH_CODES:
        return True
    message = str((exc.details or {}).get("errmsg", exc)).lower()
    return exc.code == ATLAS_ERROR and ("not allowed" in message or "not authorized" in message)


def _write_concern_errors(exc: BaseException) -> list[dict[str, object]]:
    if isinstance(exc, pymongo_errors.BulkWriteError):
        return list((exc.details or {}).get("writeConcernErrors") or [])
    if isinstance(exc, pymongo_errors.WriteConcernError):
        return [{"code": exc.code, "errmsg": str(exc)}]
    return []


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same operation may succeed.

    Reads pymongo's error labels first (the server's own verdict), then network errors and
    the failover codes. A write-concern error is never a success: the write may be rolled
    back, so it is retried (the archive's writes are idempotent) unless the write concern
    itself is unsatisfiable. A bulk write whose other errors are per-document refusals is
    transient only through its write-concern errors; the refusals are settled per order.
    """
    if is_authorisation_error(exc):
        return False
    if isinstance(exc, OSError):
        return storage_fault(exc) in ("transient", "unreachable")
    if isinstance(exc, pymongo_errors.PyMongoError) and any(
        exc.has_error_label(label) for label in TRANSIENT_LABELS
    ):
        return True
    if isinstance(exc, (pymongo_errors.ConnectionFailure, pymongo_errors.CursorNotFound)):
        return True
    concern = _write_concern_errors(exc)
    if concern:
        return not any(e.get("code") in WRITE_CONCERN_CONFIG_CODES for e in concern)
    if isinstance(exc, pymongo_errors.BulkWriteError):
        codes = [e.get("code") for e in (exc.details or {}).get("writeErrors", [])]
        return bool(codes) and all(code in TRANSIENT_CODES for code in codes)
    if isinstance(exc, pymongo_errors.OperationFailure):
        return exc.code in TRANSIENT_CODES
    return False


# The cold tier's storage (``pyarrow.fs``: a local folder, or S3 through the AWS SDK) fails with
# an ``OSError``. On S3 Arrow writes the SDK's error type into the message ("AWS Error SLOW_DOWN
# during ListObjectsV2 operation: ...", arrow/filesystem/s3_internal.h ``ErrorToStatus``; an
# error type the SDK does not name is "UNKNOWN (HTTP status 503)"), once the SDK's own retries
# are spent (measured with pyarrow 26 as the store opens it: 3 tries of a HEAD, about 30 of a
# listing or a read, a few seconds); a local folder's errors carry an ``errno``. A file's damaged
# bytes are neither: ``ArrowInvalid`` (a ``ValueError``) or an ``OSError`` of the Parquet reader.
# Sorted where they are raised, at the cold tier's edge with its storage (``ColdStorageError``).
StorageFault = Literal["transient", "unreachable", "denied", "no_bucket", "failed"]
# AWS S3 API Reference, "Error responses": 503 SlowDown, 500 InternalError, 503
# ServiceUnavailable ("reduce your request rate", "retry"); a timeout or a connection reset.
S3_TRANSIENT = (
    "SLOW_DOWN",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_FAILURE",
    "THROTTLING",
    "REQUEST_TIMEOUT",
    "NETWORK_CONNECTION",
    "HTTP status 5",
)
# Nothing answers at the endpoint (curl's words in Arrow's ``Details``, after NETWORK_CONNECTION):
# the connection refused (a wrong AWS_ENDPOINT_URL or port, the storage down or restarting) or its
# host not found. A re-run does not cure a wrong address: said as such, retried briefly only
# (``Retry.STORAGE_UNREACHABLE``: a storage restarting refuses for a moment).
S3_REFUSED = ("Could not connect to server", "Couldn't connect to server", "Connection refused")
S3_UNRESOLVED = ("Could not resolve host", "Couldn't resolve host")
# 403 AccessDenied (credentials, a bucket policy), a key or a signature refused, a token expired.
S3_DENIED = (
    "ACCESS_DENIED",
    "INVALID_ACCESS_KEY_ID",
    "SIGNATURE_DOES_NOT_MATCH",
    "INVALID_CLIENT_TOKEN_ID",
    "MISSING_AUTHENTICATION_TOKEN",
    "UNRECOGNIZED_CLIENT",
    "REQUEST_EXPIRED",
    "EXPIRED_TOKEN",
    "HTTP status 401",
    "HTTP status 403",
)
LOCAL_TRANSIENT = frozenset({errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ESTALE})
LOCAL_DENIED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class ColdStorageError(OSError):
    """An error of the cold tier's storage, typed where it was raised: at the storage's edge
    (``cold/store.py``, ``cold/files.py``, through which every request of the cold tier to its
    folder or bucket goes: ``store.storage_edge``), with what it says of the storage (``kind``).
    Its text, ``errno`` and file name are the storage's own. Told by its type, never by where it
    passed: an ``OSError`` of anything else raised while the cold tier runs (a full disk under
    ``--metrics-file``, the ``--stop-file`` on a stale mount) is not one."""

    kind: StorageFault = "failed"

    @classmethod
    def of(cls, exc: OSError) -> ColdStorageError | None:
        """``exc`` (an ``OSError`` the storage raised) typed with its kind; None when it says
        nothing of the storage (the Parquet reader's own: a file's bytes)."""
        kind = _storage_kind(exc)
        if kind is None:
            return None
        if exc.filename is not None:
            typed = cls(exc.errno, exc.strerror, exc.filename, None, exc.filename2)
        else:
            typed = cls(*exc.args)
        typed.kind = kind
        return typed


def _storage_kind(exc: OSError) -> StorageFault | None:
    """What an ``OSError`` of the storage says of it (see ``storage_fault``)."""
    text = str(exc)
    if "AWS Error" in text:
        if "NO_SUCH_BUCKET" in text:
            return "no_bucket"
        if any(name in text for name in S3_DENIED):
            return "denied"
        if any(cause in text for cause in S3_REFUSED + S3_UNRESOLVED):
            return "unreachable"
        return "transient" if any(name in text for name in S3_TRANSIENT) else "failed"
    if exc.errno is None:
        return None  # the Parquet reader's own: the bytes, not the storage
    if exc.errno in LOCAL_DENIED:
        return "denied"
    return "transient" if exc.errno in LOCAL_TRANSIENT else "failed"


def storage_fault(exc: BaseException) -> StorageFault | None:
    """What a cold-tier storage error says of the storage, or None when it is none: the kind a
    ``ColdStorageError`` was raised with at the storage's edge. ``transient`` (retry),
    ``unreachable`` (nothing answers at the endpoint: refused, or its host not found; retried
    briefly),
    ``denied`` (credentials, a bucket policy, a folder's permissions), ``no_bucket`` (404
    NoSuchBucket: a wrong bucket, endpoint or region), ``failed`` (any other answer of the
    storage). Never "not found" nor "damaged". A file's bytes that do not read as Parquet are
    no storage fault (None), and neither is any other ``OSError`` (a full disk under
    ``--metrics-file``, the token file): it is said as it is."""
    return exc.kind if isinstance(exc, ColdStorageError) else None


STORAGE_FIXES = {
    "transient": "the storage did not answer after retries (S3 SlowDown/500/503, a timeout or a "
    "reset connection); nothing is lost, run the command again",
    "denied": "access denied: check the storage's credentials (AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role) and the bucket's policy, or the "
    "folder's permissions",
    "no_bucket": "the bucket does not exist at this endpoint: check ARCHIVE_COLD_URL, "
    "AWS_ENDPOINT_URL and AWS_DEFAULT_REGION",
    "failed": "the storage refused the request",
}
_CONNECT_TO = re.compile(r"Failed to connect to (\S+?)(?: port (\d+))? after")
_RESOLVE = re.compile(r"(?:Could not|Couldn't) resolve host: (\S+)")
UNREACHABLE_FIX = (
    "check AWS_ENDPOINT_URL / the bucket's address (ARCHIVE_COLD_URL, AWS_DEFAULT_REGION); "
    "tried again for a few seconds only (a storage restarting refuses for a moment)"
)


def unreachable_words(exc: BaseException) -> str:
    """An ``unreachable`` fault's line: the endpoint that refused (or the host not found), from
    curl's words, and what to check."""
    text = str(exc)
    if resolve := _RESOLVE.search(text):
        return f"{resolve.group(1)} cannot be found (its name does not resolve): {UNREACHABLE_FIX}"
    if connect := _CONNECT_TO.search(text):
        host, port = connect.groups()
        where = f"{host}:{port}" if port else host
        return f"nothing answers at {where} (the connection was refused): {UNREACHABLE_FIX}"
    return f"nothing answers at the storage's endpoint (the connection was refused): {UNREACHABLE_FIX}"


def storage_error(exc: BaseException) -> ArchiverError | None:
    """A cold-tier storage fault in the hierarchy, one line naming what to fix (the storage's
    own words after it, which name a bucket and a key, never a credential); None otherwise."""
    kind = storage_fault(exc)
    if kind is None:
        return None
    # Unreachable: exit 1, the contract's "server unreachable" (a storage down answers so too).
    cls = {"transient": TransientError, "unreachable": TransientError, "no_bucket": ConfigError}.get(
        kind, FatalError
    )
    fix = unreachable_words(exc) if kind == "unreachable" else STORAGE_FIXES[kind]
    return cls(f"{STORAGE_PREFIX}{fix} ({storage_words(exc)})")


STORAGE_PREFIX = "cold tier (ARCHIVE_COLD_URL): "  # storage_error's; see cold_fault_line
WORDS_AT_MOST = 200  # the storage's words quoted in one line at most (Arrow's S3 ones run to 300)
# Arrow's S3 message: "<what>: AWS Error <TYPE> during <Op> operation: <SDK words>; Details:
# <curl's words>" (arrow/filesystem/s3_internal.h ``ErrorToStatus``): the last clause names the
# cause ("Could not resolve host: ...", "Failed to connect to 127.0.0.1:9000 after 0 ms: ...").
_DETAILS = "; Details: "
_CLAUSE_ENDS = (": ", "; ", ", ")
_CURL_CODE = re.compile(r"curlCode: \d+, ")  # curl's error number, before its words: nothing to a reader


def cold_fault_line(url: str, exc: BaseException) -> str:
    """A cold-tier error in one line that names the place once, for a line already named "cold
    tier" (``status``, ``doctor``): ``storage_error``'s ``STORAGE_PREFIX`` replaced by
    ``ARCHIVE_COLD_URL <url>: ``; any other (which names the place already) as it is."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if line.startswith(STORAGE_PREFIX):
        return f"ARCHIVE_COLD_URL {url}: {line.removeprefix(STORAGE_PREFIX)}"
    return line


def storage_words(exc: BaseException, at_most: int = WORDS_AT_MOST) -> str:
    """The first line of what the storage said, for one line of ours: whole when short enough;
    else cut at a clause or word boundary with "…" (never inside a word, never an unclosed
    parenthesis), Arrow's last clause (``Details``, the cause) kept whole after the cut."""
    text = _CURL_CODE.sub("", str(exc)).strip()
    return clipped(text.splitlines()[0], at_most) if text else type(exc).__name__


def clipped(text: str, at_most: int = WORDS_AT_MOST) -> str:
    """``text`` in about ``at_most`` characters (see ``storage_words``)."""
    if len(text) <= at_most:
        return text
    head, found, cause = text.rpartition(_DETAILS)
    if found and len(cause) <= at_most // 2:
        return _cut(head, at_most - len(cause) - len(_DETAILS) - 3, f" …{_DETAILS}{cause}")
    return _cut(text, at_most - 2, "…")


def _cut(text: str, room: int, then: str) -> str:
    """``text`` cut to about ``room`` characters at its last clause boundary (or space) that keeps
    at least half of it, its punctuation trimmed, ``then`` after it, and a parenthesis the cut
    left open closed after that. A single word longer than ``room`` is the one cut inside a word."""
    kept = text[:room]
    ends = [kept.rfind(end) for end in _CLAUSE_ENDS]
    at = max(ends) if max(ends) >= room // 2 else kept.rfind(" ")
    kept = (kept[:at] if at > 0 else kept).rstrip(" ,;:(")
    return kept + then + ")" * max(kept.count("(") - kept.count(")"), 0)


FailureKind = Literal["transient", "token_unusable", "no_change_streams", "fatal"]


def classify(exc: BaseException) -> FailureKind:
    """The one verdict on a failure, for a service loop: retry it (``transient``), fall back to
    a catch-up (``token_unusable``), stop with "no change streams here", or stop (``fatal``).
    An ``ArchiverError`` keeps the verdict it was raised with."""
    if isinstance(exc, pymongo_errors.OperationFailure):
        if exc.code in TOKEN_UNUSABLE_CODES:
            return "token_unusable"
        if exc.code in NO_CHANGE_STREAMS_CODES:
            return "no_change_streams"
    if isinstance(exc, TransientError) or (not isinstance(exc, ArchiverError) and is_transient(exc)):
        return "transient"
    return "fatal"


# Members of the replica set answer, none is primary: an election (MongoDB's manual, "Replica Set
# Elections": typically within 12 seconds), or a set that lost the majority to elect one. Not
# "unreachable": the operator would look for a network fault.
NO_PRIMARY = (
    "no primary: the replica set is electing one, or has lost the majority to elect one (server "
    "selection timed out); nothing is lost: run the command again once it has a primary"
)
_ANSWERING_MEMBERS = ("server_type: RSSecondary", "server_type: RSArbiter", "server_type: RSOther")


def members_answer_without_a_primary(exc: BaseException) -> bool:
    """A server selection that timed out while members answered and none was primary. pymongo
    says so only in its message (``Topology Description: <TopologyDescription ... servers:
    [<ServerDescription (host, port) server_type: RSSecondary, ...>]>``, topology.py)."""
    text = str(exc)
    return "server_type: RSPrimary" not in text and any(member in text for member in _ANSWERING_MEMBERS)


def describe(exc: BaseException) -> str:
    """A one-line description of a pymongo error, safe to print (no URI, no document)."""
    if isinstance(exc, pymongo_errors.ServerSelectionTimeoutError):
        if members_answer_without_a_primary(exc):
            return NO_PRIMARY
        return "MongoDB server unreachable (server selection timed out)"
    concern = _write_concern_errors(exc)
    if concern:
        first = concern[0]
        return (
            f"write concern not satisfied (code {first.get('code')}): "
            f"{str(first.get('errmsg', ''))[:200]}; the write may be rolled back, so it does not count"
        )
    if isinstance(exc, pymongo_errors.BulkWriteError):  # its own message quotes the documents
        errors = (exc.details or {}).get("writeErrors") or [{}]
        first = errors[0]
        return (
            f"bulk write refused for {len(errors)} statement(s), the first with code {first.get('code')}: "
            f"{str(first.get('errmsg', ''))[:200]}"
        )
    if isinstance(exc, pymongo_errors.OperationFailure):
        if exc.code == 18:
            return "authentication failed: check the user name and password in MONGODB_URI"
        if is_authorisation_error(exc):
            return "not authorised: the MongoDB user lacks a required role (see deploy/mongodb-roles.js)"
        message = str(exc.details.get("errmsg", exc)) if exc.details else str(exc)
        code = f" {exc.code}" if exc.code is not None else ""  # a server that gave none
        return f"MongoDB error{code}: {message.splitlines()[0][:300]}"
    if isinstance(exc, pymongo_errors.ConnectionFailure):
        return f"connection to MongoDB lost: {type(exc).__name__}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


# Through mongos before 5.1, an aggregate whose $lookup reads a sharded collection: "<ns> cannot
# be sharded" (lite_parsed_pipeline.cpp). The start-up check (deployment.py) refuses that layout
# before anything is written; met anyway (config.collections unreadable, or sharded since), it is
# the deployment's layout, not a failure to retry: exit 2, what to fix named.
LOOKUP_FROM_SHARDED = 28769


def layout_error(exc: BaseException) -> ConfigError | None:
    if not (isinstance(exc, pymongo_errors.OperationFailure) and exc.code == LOOKUP_FROM_SHARDED):
        return None
    message = str((exc.details or {}).get("errmsg", exc)).splitlines()[0][:200]
    return ConfigError(
        f"sharded cluster: {message}: $lookup reads a sharded collection from MongoDB 5.1 on; unshard it "
        "or upgrade (doctor checks the layout; it reads config.collections)"
    )


def as_archiver_error(exc: BaseException) -> ArchiverError:
    """Wrap a pymongo error in the hierarchy, keeping the cause for the logs (without the
    documents a bulk write's error carries: see ``without_documents``)."""
    if isinstance(exc, ArchiverError):
        return exc
    stored = storage_error(exc) or layout_error(exc)
    if stored is not None:
        stored.__cause__ = exc
        return stored
    cls = TransientError if is_transient(exc) else FatalError
    error = cls(describe(exc))
    error.__cause__ = without_documents(exc)
    return error


# What a write error may carry of the documents: the statement itself (``op``: a whole archive
# document, with a client's name, e-mail, phone and address) and a validator's report.
_DOCUMENT_FIELDS = ("op", "errInfo")


def without_documents(exc: BaseException) -> BaseException:
    """``exc`` itself, or for a ``BulkWriteError`` a copy whose write errors keep their index,
    code and message but not the documents: its message (and so a DEBUG traceback in the log
    file) quoted every failed statement whole."""
    if not isinstance(exc, pymongo_errors.BulkWriteError):
        return exc
    details = dict(exc.details or {})
    details["writeErrors"] = [
        {k: v for k, v in error.items() if k not in _DOCUMENT_FIELDS}
        for error in details.get("writeErrors", [])
    ]
    return pymongo_errors.BulkWriteError(details)
