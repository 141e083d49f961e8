"""The command line, declared once (httpie's ``cli/definition.py`` is the model): each option
is declared here once, with one meaning, one type and one default taken from the domain's
constants; each command lists the options it takes, its texts and examples. ``main`` builds
its parsers from this and maps each command to its handler."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from order_archiver.batch.report import DEFAULT_SAMPLES
from order_archiver.context import RunContext
from order_archiver.errors import ExitCode
from order_archiver.logs import redact
from order_archiver.mongodb.rejects import DEFAULT_LIST_LIMIT
from order_archiver.operations.forget import checked_client_id, checked_courier_id
from order_archiver.operations.restore import parse_order_id
from order_archiver.operations.status import (
    DEFAULT_LOOKBACK,
    DEFAULT_MAX_BACKLOG_AGE,
    DEFAULT_MAX_HEARTBEAT_AGE,
)
from order_archiver.orders.partition import Partition
from order_archiver.settings import (
    Duration,
    parse_batch_size,
    parse_bind_address,
    parse_command_line_uri,
    parse_database_name,
    parse_date_bound,
    parse_days,
    parse_duration,
    parse_given,
    parse_name,
    parse_partition,
    parse_port,
    parse_positive_int,
    parse_probability,
)
from order_archiver.simulation.generator import (
    DEFAULT_COUNT,
    DEFAULT_DAYS,
    DEFAULT_P_ANOMALIES,
    DEFAULT_P_DELIVERED,
    DEFAULT_SEED,
)

Handler = Callable[[argparse.Namespace, RunContext], int]


# ``-1/3`` and ``-1d`` are values, as ``-1`` is (``--partition -1/3`` said "expected one argument"
# instead of what is wrong with it): argparse keeps that test in an attribute of its own,
# unchanged since 3.2.
NEGATIVE_VALUE = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d+/\d+$|^-\d+[smhd]$")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2, naming the command it is
    about (``main.py batch``), with the closest name when a command, a flag or a choice is
    mistyped ("did you mean --dry-run?")."""

    commands: Mapping[str, OneLineParser] = {}  # the subcommands' parsers, by name (build_parser)

    given: Sequence[str] = ()  # the command line parse_args was handed (error redacts it)

    def error(self, message: str) -> NoReturn:
        # Each echo path argparse has (a type's message, an ignored explicit argument, an
        # ambiguous abbreviation, ``-vVALUE``) shows a word of the command line or its end.
        for word in OneLineParser.given:
            shown = next((word[i:] for i in range(len(word)) if word[i:] in message), "")
            message = message.replace(shown, redact(shown)) if shown else message
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(ExitCode.USAGE)

    def parse_args(  # type: ignore[override]  # no namespace of the caller's: only argv
        self, args: Sequence[str] | None = None
    ) -> argparse.Namespace:
        """argparse's, but an unrecognized argument is said by the command it was given to (the
        top parser said "main.py: error: unrecognized arguments: --dry-rnu" for ``batch``)."""
        OneLineParser.given = list(sys.argv[1:] if args is None else args)
        parsed, extras = self.parse_known_args(args)
        if extras:
            parser = self.commands.get(getattr(parsed, "command", ""), self)
            # (What was not taken is echoed: ``error`` redacts it, a mistyped --archive-urii's URI.)
            said = parser.closest_flags(extras, self.commands)
            parser.error(f"unrecognized arguments: {' '.join(extras)}{said}")
        return parsed

    def closest_flags(self, extras: Sequence[str], commands: Mapping[str, OneLineParser]) -> str:
        """What to add to "unrecognized arguments": the closest of this command's flags to the
        first mistyped one ("did you mean --dry-run?"); or, for a flag of its own, that it goes
        after the command (given before it, the top parser did not know it); or the ``commands``
        that take it, when this one does not ("--run is batch's, forget's and restore's")."""
        flags = self.flags()
        for given in (extra.split("=", 1)[0] for extra in extras if extra.startswith("-")):
            if given in flags:
                return f"; put {given} after the command ({self.prog} {given} ...)"
            # Without the dashes: "--" alike made "--partition" close to "--date-to" (0.6).
            words = {flag.lstrip("-"): flag for flag in flags}
            close = difflib.get_close_matches(given.lstrip("-"), list(words), n=1)
            if close:
                return f"; did you mean {words[close[0]]}?"
            if others := [name for name, parser in commands.items() if given in parser.flags()]:
                return f"; {given} is {self._named(others)}, not {self.prog.split()[-1]}'s"
        return ""

    def flags(self) -> list[str]:
        return [flag for action in self._actions for flag in action.option_strings]

    @staticmethod
    def _named(commands: list[str]) -> str:
        """``batch's``, ``batch's and forget's``, ``batch's, forget's and restore's``."""
        owned = [f"{name}'s" for name in sorted(commands)]
        return owned[0] if len(owned) == 1 else f"{', '.join(owned[:-1])} and {owned[-1]}"

    def _check_value(self, action: argparse.Action, value: object) -> None:
        """An invalid choice (a command, --token-store...): the closest one, when one is close,
        instead of the whole list (a URI given where a choice goes: ``error`` redacts it)."""
        choices = [str(choice) for choice in action.choices or ()]
        if choices and value not in (action.choices or ()):
            close = difflib.get_close_matches(str(value), choices, n=1)
            if close:
                raise argparse.ArgumentError(action, f"invalid choice: {value!r}; did you mean {close[0]!r}?")
        super()._check_value(action, value)


# --- argument types: each a parser that says what it expected ----------------------------------


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a parser that raises ValueError with its reason."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.replace("parse_", "")
    return convert


def _parse_non_negative_int(text: str) -> int:
    value = int(text) if text.strip().lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return value


def _parse_partition(text: str) -> Partition:
    return Partition(*parse_partition(text))


def _parse_seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _parse_order_id(text: str) -> object:
    return parse_order_id(parse_given(text))


def _parse_run_time(text: str) -> Duration:
    length = parse_duration(text)
    if not length:
        raise ValueError("must be longer than 0 (leave it out for no limit)")
    return length


def _parse_lookback(text: str) -> Duration:
    length = parse_duration(text)
    if not length:  # an empty window holds no backlog: a probe set so would always say healthy
        raise ValueError(
            "must be longer than 0: the backlog is looked for among the orders of this last period"
        )
    return length


POSITIVE = _argument(parse_positive_int)
DAYS = _argument(parse_days)
RUN_TIME = _argument(_parse_run_time)
LOOKBACK = _argument(_parse_lookback)
BATCH_SIZE = _argument(parse_batch_size)
NON_NEGATIVE = _argument(_parse_non_negative_int)
DATE = _argument(parse_date_bound)
DURATION = _argument(parse_duration)
PROBABILITY = _argument(parse_probability)
NAME = _argument(parse_name)
DATABASE = _argument(parse_database_name)
PORT = _argument(parse_port)
BIND_ADDRESS = _argument(parse_bind_address)
URI = _argument(parse_command_line_uri)
SEED = _argument(_parse_seed)
CLIENT_ID = _argument(checked_client_id)  # as typed (forget looks for that text too)
COURIER_ID = _argument(checked_courier_id)
ORDER_ID = _argument(_parse_order_id)
ORDER_NUMBER = _argument(parse_given)
FILE_PATH = _argument(parse_given)  # a blank path: a shell variable unset, never meant as "."


# --- the options, each once ----------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    options: Mapping[str, object] = field(default_factory=dict)  # argparse's: metavar, type, default...


def _flag(help_text: str) -> Option:
    return Option((), help_text, {"action": "store_true"})


OPTIONS: dict[str, Option] = {
    # every command
    "verbose": Option(("-v", "--verbose"), "debug logging", {"action": "store_true"}),
    "quiet": Option(("-q", "--quiet"), "warnings and errors only", {"action": "store_true"}),
    "env-file": Option(
        ("--env-file",), "read settings from F instead of ./.env", {"metavar": "F", "type": FILE_PATH}
    ),
    "archive-uri": Option(
        ("--archive-uri",),
        "the archive's own deployment (ARCHIVE_MONGODB_URI); default: the source's",
        {"metavar": "URI", "type": URI},
    ),
    # the embedded database
    "simulation": _flag(
        "the embedded simulation database (no server): generated orders, or samples.json where it exists"
    ),
    "count": Option(
        ("--count",),
        f"orders to generate ({DEFAULT_COUNT})",
        {"metavar": "N", "type": POSITIVE, "default": DEFAULT_COUNT},
    ),
    "seed": Option(
        ("--seed",),
        f"generator seed: same seed, same data ({DEFAULT_SEED})",
        {"metavar": "S", "type": SEED, "default": DEFAULT_SEED},
    ),
    "p-delivered": Option(
        ("--p-delivered",),
        f"share of orders delivered ({DEFAULT_P_DELIVERED})",
        {"metavar": "P", "type": PROBABILITY, "default": DEFAULT_P_DELIVERED},
    ),
    "p-anomalies": Option(
        ("--p-anomalies",),
        f"share of dirty orders ({DEFAULT_P_ANOMALIES})",
        {"metavar": "P", "type": PROBABILITY, "default": DEFAULT_P_ANOMALIES},
    ),
    "days": Option(
        ("--days",),
        f"days the orders span ({DEFAULT_DAYS})",
        {"metavar": "N", "type": DAYS, "default": DEFAULT_DAYS},
    ),
    "reset": _flag("drop the five collections first (only if simulate made them)"),
    "yes": _flag("confirm a restore --run of more than 100 orders"),
    "samples-file": Option(
        ("--samples-file",),
        "the embedded database's file (samples.json)",
        {"metavar": "PATH", "default": "samples.json", "type": FILE_PATH},
    ),
    # selection and output
    "date-from": Option(("--date-from",), "date_commande >= D", {"metavar": "D", "type": DATE}),
    "date-to": Option(("--date-to",), "date_commande < D", {"metavar": "D", "type": DATE}),
    "json": _flag("print the report as one JSON object"),
    "limit": Option(("--limit",), "at most N orders", {"metavar": "N", "type": POSITIVE}),
    # batch
    "run": _flag("write the archive (default: dry run)"),
    "dry-run": _flag("report what would be archived; write nothing"),
    "batch-size": Option(
        ("--batch-size",),
        "orders per bulk write, at most 10000 (BATCH_SIZE)",
        {"metavar": "N", "type": BATCH_SIZE},
    ),
    "export-samples": Option(
        ("--export-samples",),
        "write sample archive documents as Extended JSON",
        {"metavar": "FILE", "type": FILE_PATH},
    ),
    "samples": Option(
        ("--samples",),
        f"sample documents to keep (a dry run or --export-samples: {DEFAULT_SAMPLES}; --run: none unless given)",
        {"metavar": "N", "type": NON_NEGATIVE},
    ),
    "purge-source": _flag("delete source orders once their archive is confirmed"),
    "restart": _flag("ignore the checkpoint of an interrupted run"),
    "full": _flag("walk every delivered order of the window, not only those delivered since the last run"),
    "max-runtime": Option(
        ("--max-runtime",),
        "end the run cleanly at the next chunk once it has run this long (e.g. 2h); the next run "
        "goes on from there (exit 0)",
        {"metavar": "D", "type": RUN_TIME},
    ),
    "max-rate": Option(
        ("--max-rate",),
        "at most N orders a second, read, written and purged (on average over a few seconds)",
        {"metavar": "N", "type": POSITIVE},
    ),
    "max-lag": Option(
        ("--max-lag",),
        "before each chunk written or purged, wait while a secondary is more than D behind its "
        "primary (e.g. 10s; needs replSetGetStatus, or a warning and no wait)",
        {"metavar": "D", "type": RUN_TIME},
    ),
    "partition": Option(
        ("--partition",),
        "archive share K of N (0 <= K < N, by a hash of _id): N processes, each with its own K, "
        "together make the archive one makes, each with its own checkpoint (setting: BATCH_PARTITION)",
        {"metavar": "K/N", "type": _argument(_parse_partition)},
    ),
    "stop-file": Option(
        ("--stop-file",),
        "end the run cleanly at the next chunk once this file exists (checked between chunks); "
        "the next run goes on from there (exit 0)",
        {"metavar": "PATH", "type": FILE_PATH},
    ),
    "show-pii": _flag(
        "show the samples' names, e-mail, phone and address (masked by default, text and JSON)"
    ),
    "metrics-file": Option(
        ("--metrics-file",),
        "write the run's figures for the Prometheus textfile collector",
        {"metavar": "PATH", "type": FILE_PATH},
    ),
    # watch
    "from-now": _flag("skip the catch-up of missed deliveries"),
    "token-store": Option(
        ("--token-store",), "where the resume token lives", {"choices": ("file", "mongo"), "default": "file"}
    ),
    "token-file": Option(
        ("--token-file",), "the resume token file (RESUME_TOKEN_FILE)", {"metavar": "PATH", "type": FILE_PATH}
    ),
    "for": Option(
        ("--for",),
        "whose privileges: all the commands' (batch's user), or watch (the watcher's own user needs less)",
        {"choices": ("all", "watch"), "default": "all", "dest": "process"},
    ),
    "name": Option(
        ("--name",), "watcher name (its token in the mongo store)", {"default": "default", "type": NAME}
    ),
    "metrics-port": Option(
        ("--metrics-port",), "serve Prometheus metrics on this port", {"metavar": "N", "type": PORT}
    ),
    "metrics-address": Option(
        ("--metrics-address",),
        "metrics bind address (127.0.0.1: this host only; 0.0.0.0 in a container Prometheus scrapes)",
        {"metavar": "ADDR", "default": "127.0.0.1", "type": BIND_ADDRESS},
    ),
    # status
    "max-backlog-age": Option(
        ("--max-backlog-age",),
        f"unhealthy when a delivered order waits longer than this to be archived ({DEFAULT_MAX_BACKLOG_AGE})",
        {"metavar": "DURATION", "type": DURATION, "default": DEFAULT_MAX_BACKLOG_AGE},
    ),
    "max-heartbeat-age": Option(
        ("--max-heartbeat-age",),
        f"unhealthy when a watcher's token is older than this ({DEFAULT_MAX_HEARTBEAT_AGE})",
        {"metavar": "DURATION", "type": DURATION, "default": DEFAULT_MAX_HEARTBEAT_AGE},
    ),
    "lookback": Option(
        ("--lookback",),
        f"look for the backlog among the orders of this last period ({DEFAULT_LOOKBACK})",
        {"metavar": "DURATION", "type": LOOKBACK, "default": DEFAULT_LOOKBACK},
    ),
    # verify, rejects, retire-watcher
    "repair": _flag("archive the missing orders (the batch path)"),
    "client": Option(
        ("--client",), "the client's _id (24 hexadecimal digits)", {"metavar": "ID", "type": CLIENT_ID}
    ),
    "courier": Option(
        ("--courier",), "the courier's _id (24 hexadecimal digits)", {"metavar": "ID", "type": COURIER_ID}
    ),
    "numero": Option(
        ("--numero",),
        "an order's numero_commande (repeatable)",
        {"metavar": "N", "action": "append", "type": ORDER_NUMBER},
    ),
    "id": Option(("--id",), "an order's _id", {"metavar": "ID", "type": ORDER_ID}),
    "all": _flag("every rejected order, not only the newest"),
    "watcher": Option(("name",), "the watcher's --name (mongo store)", {"nargs": "?", "type": NAME}),
}

COMMON = ("verbose|quiet", "env-file", "archive-uri")
SIMULATION = ("simulation", "count", "seed")


@dataclass(frozen=True)
class Command:
    help: str
    description: str
    examples: str
    options: tuple[str, ...]  # "a|b": mutually exclusive
    defaults: Mapping[str, object] = field(default_factory=dict)  # an option's default for this command
    required: tuple[str, ...] = ()  # options this command cannot do without
    helps: Mapping[str, str] = field(default_factory=dict)  # a flag's help where its meaning here differs


# The four limits of #34 on a command that writes in bulk besides batch (restore, forget, verify
# --repair): the same flags, the same meaning, over the same settings.
LIMITS_HELPS = {
    "max-rate": "at most N orders a second written (BATCH_MAX_RATE), on average over a few seconds",
    "max-lag": "before each chunk written, wait while a secondary of the source or the archive is "
    "more than D behind its primary (BATCH_MAX_LAG; needs replSetGetStatus, or a warning and no wait)",
    "max-runtime": "end cleanly at the next chunk once it has run this long (e.g. 2h); run it again "
    "to do the rest (exit 0)",
    "stop-file": "end cleanly at the next chunk once this file exists (checked between chunks); run "
    "it again to do the rest (exit 0)",
}

COMMANDS: dict[str, Command] = {
    "doctor": Command(
        "check the server and the user before anything runs (exit 3 when not ready)",
        "Version, topology, change streams, sharding, write concern, read preference and the "
        "user's privileges, one line each. Writes nothing. Exit 0 ready, 3 not.",
        """  python main.py doctor                          the first command on a new cluster
  python main.py doctor --json                   the same, as one JSON object
  python main.py doctor --for watch              with the watcher's URI: the privileges it needs""",
        ("json", "for"),
    ),
    "batch": Command(
        "archive delivered orders in bulk (dry run unless --run)",
        "Archive every delivered order not yet archived, enriched, in bulk, idempotently.",
        """  python main.py batch                          report what would be archived (writes nothing)
  python main.py batch --run                    archive every delivered order not yet archived
  python main.py batch --run --date-from yesterday --date-to today
  python main.py batch --run --date-from 7d --purge-source
  python main.py batch --run --full             every delivered order, not only the new ones
  python main.py batch --run --max-runtime 4h --stop-file /run/order-archiver.stop   a night's backfill
  python main.py batch --run --simulation       the whole job on an embedded database""",
        (
            "run|dry-run",
            "date-from",
            "date-to",
            "limit",
            "batch-size",
            "export-samples",
            "samples",
            "purge-source",
            "restart",
            "full",
            "max-runtime",
            "stop-file",
            "max-rate",
            "max-lag",
            "partition",
            "json",
            "show-pii",
            "metrics-file",
            *SIMULATION,
        ),
    ),
    "watch": Command(
        "archive each delivery as it happens (change streams)",
        "Archive each order the moment it is delivered, resuming after any restart.",
        """  python main.py watch                           archive each delivery as it happens (token in a file)
  python main.py watch --token-store mongo --name eu-1 --metrics-port 9108
                                                 token in MongoDB; start a second one for a hot standby
  python main.py watch --from-now                a first start that skips the catch-up of the past""",
        (
            "from-now",
            "token-store",
            "token-file",
            "name",
            "metrics-port",
            "metrics-address",
            "stop-file",
            "max-rate",
            "max-lag",
        ),
        helps={
            "max-rate": "the catch-up (a first start's backfill) at most N orders a second (BATCH_MAX_RATE); "
            "the stream follows the deliveries",
            "max-lag": "the catch-up waits before each chunk while a secondary is more than D behind "
            "(BATCH_MAX_LAG); the stream follows the deliveries",
            "stop-file": "stop as on SIGTERM once this file exists (looked for every second): the "
            "micro-batch in hand archived, its token saved, exit 0",
        },
    ),
    "status": Command(
        "is the archive keeping up? (exit 3 when not: usable as a probe)",
        "Orders by status, backlog, archive size, watchers' heartbeats. Exit 0 healthy, 3 not.",
        """  python main.py status                          a person's view
  python main.py status --json --max-backlog-age 5m   a probe: exit 0 healthy, 3 not""",
        ("json", "max-backlog-age", "max-heartbeat-age", "lookback"),
    ),
    "verify": Command(
        "reconcile source and archive (exit 3 when they disagree)",
        "Delivered orders missing from the archive, archive documents that disagree with the "
        "source, archive documents without a source. Exit 0 consistent, 3 not.",
        """  python main.py verify --date-from 7d
  python main.py verify --repair                 then archive what is missing""",
        ("date-from", "date-to", "repair", "max-runtime", "stop-file", "max-rate", "max-lag", "json"),
        helps={name: f"--repair: {text}" for name, text in LIMITS_HELPS.items()},
    ),
    "rejects": Command(
        "list the rejected orders (invalid: never archived until fixed at the source)",
        "The orders batch or watch rejected as invalid, newest first, with the reason. "
        "An order fixed at the source is archived by the next run and leaves the list.",
        f"""  python main.py rejects                         the {DEFAULT_LIST_LIMIT} newest rejected orders
  python main.py rejects --json --all            all of them, as JSON""",
        ("limit|all", "json"),
        {"limit": DEFAULT_LIST_LIMIT},
    ),
    "retire-watcher": Command(
        "forget a watcher that will not come back (status stops expecting it)",
        "Remove a stopped watcher's resume token (and end its lease), so that status no longer "
        "reports it. Refused while it runs. Started again, it would catch up first.",
        """  python main.py retire-watcher eu-1             a mongo-store watcher that will not come back
  python main.py retire-watcher --token-file /data/.resume_token.json""",
        ("watcher", "token-file"),
    ),
    "forget": Command(
        "erase a client's or a courier's personal data from the archive (RGPD article 17; dry run "
        "unless --run)",
        "Erase the client's name, e-mail, phone, delivery address and every order field not known to "
        "be non-personal (or the courier's name) from every archived order of theirs, keeping what "
        "accounting needs (dates, amounts, items, restaurant, ids); remember them, so that no later "
        "write brings it back. Writes nothing unless --run. Cannot reach the source orders, the "
        "Client or Livreur record or backups.",
        """  python main.py forget --client 6553f1c2a9e4b1d2c3f4a5b6          what would be erased
  python main.py forget --client 6553f1c2a9e4b1d2c3f4a5b6 --run    erase it
  python main.py forget --courier 6553f1c2a9e4b1d2c3f4a5c7 --run   a courier's name""",
        ("client|courier", "run|dry-run", "max-runtime", "stop-file", "max-rate", "max-lag", "json"),
        required=("client|courier",),
        helps={
            "run": "erase the person's data and remember them (default: dry run)",
            "dry-run": "report what would be erased; write nothing",
            **LIMITS_HELPS,
        },
    ),
    "restore": Command(
        "put archived orders back into the source, as the source held them (dry run unless --run)",
        "Insert the archive's copy of each selected order (every field, the same BSON types) into "
        "the orders collection; never deletes from the archive; an order restored is not purged "
        "again before RESTORE_HOLD. An order in the source with other content is left alone, and one "
        "the source refuses (a validator, a unique index, a field name) is reported with MongoDB's "
        "reason (exit 3).",
        """  python main.py restore --numero CMD-000042                 what would be restored
  python main.py restore --numero CMD-000042 --numero CMD-000043 --run
  python main.py restore --client 6553f1c2a9e4b1d2c3f4a5b6 --date-from 2026-11-01 --run""",
        (
            "numero",
            "id",
            "client",
            "date-from",
            "date-to",
            "run|dry-run",
            "yes",
            "max-runtime",
            "stop-file",
            "max-rate",
            "max-lag",
            "json",
        ),
        helps={
            "run": "write the orders back into the source collection (default: dry run)",
            "dry-run": "report what would be restored; write nothing",
            "client": "the client's _id (24 hexadecimal digits): their archived orders",
            **LIMITS_HELPS,
        },
    ),
    "find": Command(
        "where an order is now: the source, the archive or a cold file, and the order (masked)",
        "Look an order up everywhere it can be: the source collection, the archive, and each file "
        "of the cold tier (ARCHIVE_COLD_URL). Says where it is and shows it, personal data masked "
        "unless --show-pii. Reads only. Exit 3 when a --numero or --id is found nowhere.",
        """  python main.py find --numero CMD-000123
  python main.py find --client 6553f1c2a9e4b1d2c3f4a5b6 --json
  python main.py find --id 6553f1c2a9e4b1d2c3f4a5b7 --show-pii""",
        ("numero|id|client", "json", "show-pii"),
        required=("numero|id|client",),
        helps={
            "show-pii": "show names, e-mail, phone and address (masked by default, text and JSON)",
            "client": "the client's _id (24 hexadecimal digits): every order of theirs",
        },
    ),
    "simulate": Command(
        "fill a database with generated orders (also: python simulate.py)",
        "Fill the source database with realistic generated data (Faker, fr_FR); with --simulation, "
        "the embedded simulation database (samples.json) that batch --simulation then reads.",
        """  python simulate.py --count 1000 --seed 7 --p-delivered 0.4 --reset
  python simulate.py --simulation --count 5000   the embedded database: samples.json""",
        (*SIMULATION, "p-delivered", "p-anomalies", "days", "reset", "samples-file"),
    ),
}


def _add(
    parser: argparse.ArgumentParser,
    command: str,
    names: str,
    defaults: Mapping[str, object],
    required: tuple[str, ...] = (),
    helps: Mapping[str, str] | None = None,
) -> None:
    group = "|" in names
    target: Any = parser.add_mutually_exclusive_group(required=names in required) if group else parser
    for name in names.split("|"):
        option = OPTIONS[name]
        flags = option.flags or (f"--{name}",)
        settings = dict(option.options)
        if name in defaults:
            settings["default"] = defaults[name]
        if name in required and not group:
            settings["required"] = True
        target.add_argument(*flags, help=(helps or {}).get(name, option.help), **settings)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    for names in COMMON:
        _add(common, "", names, {})
    return common


def _epilog(command: Command) -> str:
    return f"examples:\n{command.examples}\n"


def program_name(*, command: bool = False) -> str:
    """How the user called the program: the installed ``order-archiver`` command, or ``main.py``
    in a checkout (``python main.py`` when ``command``, as they would type it)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name == "order-archiver":
        return name
    return "python main.py" if command else "main.py"


def build_parser(handlers: Mapping[str, Handler], version: str) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=program_name(),
        description="Archive delivered food-delivery orders out of MongoDB, enriched, exactly once.",
        epilog=f"Run `{program_name(command=True)} COMMAND --help` for a command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"order-archiver {version}")
    commands: Any = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    commands.required = True
    common = _common()
    for name, command in COMMANDS.items():
        sub = commands.add_parser(
            name,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            help=command.help,
            description=command.description,
            epilog=_epilog(command),
        )
        sub._negative_number_matcher = NEGATIVE_VALUE  # see NEGATIVE_VALUE
        _fill(sub, name, command, handlers[name])
    parser.commands = commands.choices  # an unrecognized argument is said by its command's parser
    return parser


def build_simulate_parser(handler: Handler) -> argparse.ArgumentParser:
    """``python simulate.py``: the simulate command as a program of its own."""
    command = COMMANDS["simulate"]
    parser = OneLineParser(
        prog="simulate.py",
        parents=[_common()],
        description=f"{command.description} The same as `python main.py simulate`.",
        epilog=_epilog(command),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _fill(parser, "simulate", command, handler)
    return parser


def _fill(parser: argparse.ArgumentParser, name: str, command: Command, handler: Handler) -> None:
    for names in command.options:
        _add(parser, name, names, command.defaults, command.required, command.helps)
    parser.set_defaults(func=handler, command=name)
