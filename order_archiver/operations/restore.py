"""`restore`: archived orders put back into the source collection, as the source held them.

Each archive document keeps ``source``: the order exactly as the source held it when it was
last archived (every field, the same BSON types: a dangling reference's id, a date stored as
a string, a missing courier). ``restore`` inserts that copy under its ``_id``; it never
deletes from the archive, and the archive document records ``restored_at``: no purge deletes
the order again before ``RESTORE_HOLD`` has passed (a support agent's dispute takes days).

``restored_at`` is written *before* the insert (``RestoreMark``): a purge that runs between
the two finds the order held. After the insert, the mark of each order the insert refused is
taken back (to what it was), so only what was inserted is marked. A crash in between leaves a
mark on an order that is not in the source: harmless (the purge deletes only what the source
holds), and the next restore marks it again before inserting it.

- dry run unless ``run``; a selection is required (``--numero``, ``--id``, ``--client``, a
  date window on ``date_commande``; given together, all must hold);
- idempotent: an order already in the source as the archive keeps it is left alone, counted;
- an order in the source with other content is left alone and reported (exit 3), be it found
  before the insert or met by it (a duplicate key on ``_id``: read back, compared BSON-exact);
- an order whose ``numero_commande`` another order of the source holds is left alone and reported
  (exit 3): the source's ``{numero_commande}`` index is not unique, the insert would not refuse
  it (``held_numbers.py``: checked before the insert and again after it, and why no more);
- an order the insert refuses (a validator: 121; a unique index on another field, e.g. a reused
  ``numero_commande``: 11000; a field name the server refuses) is reported with its code and
  MongoDB's reason (exit 3); the rest of its chunk is inserted all the same (unordered);
- a document without a source copy (written by an early version), or one whose copy lost its
  personal data (``forget``, ``ARCHIVE_PII`` hash or drop), is reported: the first cannot be
  restored, the second is restored as the archive holds it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import bson
from bson import ObjectId
from pymongo import ASCENDING, MongoClient, UpdateOne
from pymongo import errors as pymongo_errors

from order_archiver.batch.throttle import NO_COMMAND_LIMITS, CommandLimits, HeldLimits
from order_archiver.cold.check import lost_line, lost_now
from order_archiver.cold.holding import ColdRestoreMarks
from order_archiver.cold.search import ColdQuery, find_in_cold
from order_archiver.cold.tier import cold_store
from order_archiver.context import RunContext
from order_archiver.documents import Document, OrderId, WriteError, moment_or_none, write_errors
from order_archiver.errors import TRANSIENT_CODES, ArchiverError, ConfigError, is_document_too_large
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.deployment import check_deployments
from order_archiver.mongodb.forgotten import orders_of
from order_archiver.mongodb.lease import server_time
from order_archiver.mongodb.source import chunked, scan_by_id
from order_archiver.mongodb.storage import DUPLICATE_KEY, Collections, Held, MongoCollection
from order_archiver.operations.held_numbers import HeldNumber, NumberHolders
from order_archiver.operations.numbers import case_hints
from order_archiver.orders.erasing import BY_AGE, BY_REQUEST, CLIENT
from order_archiver.orders.selection import date_range, ids_after
from order_archiver.retry import Retry
from order_archiver.settings import Settings

log = get_logger("restore")

CHUNK = 500
EXAMPLES = 5
CONFIRM_ABOVE = 100  # a restore --run of more orders than this asks for --yes
REFUSALS_LISTED = 100  # in the report; the log names every one
# ``RestoreReport.without_personal_data_by``'s reasons, as a line says them
REASON_WORDS = {
    BY_REQUEST: "forgotten (forget)",
    BY_AGE: "erased by ARCHIVE_PII_RETENTION",
    "ARCHIVE_PII": "written under ARCHIVE_PII hash or drop",
}


@dataclass(frozen=True)
class RestoreSelection:
    numeros: tuple[str, ...] = ()
    order_id: OrderId = None
    client_id: ObjectId | str | None = None  # as typed: every form of it (forgotten.id_forms)
    date_from: datetime | None = None
    date_to: datetime | None = None

    @property
    def open(self) -> bool:
        """A selection by a client or a window: how many orders it should find is not known (a
        published cold file gone may have held some of them)."""
        return self.client_id is not None or self.date_from is not None or self.date_to is not None

    def archive_filter(self) -> dict[str, object]:
        """The archive documents selected; ConfigError when nothing selects."""
        clauses: list[dict[str, object]] = []
        if self.numeros:
            clauses.append({"numero_commande": {"$in": list(self.numeros)}})
        if self.order_id is not None:
            clauses.append({"_id": self.order_id})
        if self.client_id is not None:
            clauses.append(orders_of(CLIENT, self.client_id))
        bounds = date_range(self.date_from, self.date_to)
        if bounds:
            clauses.append({"date_commande": bounds})
        if not clauses:
            raise ConfigError("restore needs a selection: --numero, --id, --client or --date-from/--date-to")
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def parse_order_id(text: str) -> Any:
    """An order's ``_id``: an ObjectId when it is 24 hexadecimal digits, else the text itself
    (dirty data has string ids)."""
    return ObjectId(text) if ObjectId.is_valid(text) and len(text) == 24 else text


@dataclass(frozen=True)
class Refusal:
    """An order the source collection refused to take back: MongoDB's code and reason."""

    numero: str  # its numero_commande, or its _id when it has none
    code: int | None
    reason: str

    def line(self) -> str:
        return f"{self.numero} (code {self.code}: {self.reason})"


@dataclass
class RestoreReport:
    run: bool
    selected: int = 0
    from_cold: int = 0  # of the selected, those read from the cold tier's files (ARCHIVE_COLD_URL)
    restored: int = 0  # inserted into the source (dry run: would be)
    already_there: int = 0  # in the source as the archive keeps it
    conflicts: int = 0  # in the source with other content: left alone
    unrestorable: int = 0  # no source copy in the archive document
    without_personal_data: int = 0  # restored as kept: forgotten, or written under hash/drop
    # ``without_personal_data`` by what erased it (``erasure_reason``): forget,
    # ARCHIVE_PII_RETENTION (the document's forgotten_by), ARCHIVE_PII (hash or drop)
    without_personal_data_by: dict[str, int] = field(default_factory=dict)
    refused: int = 0  # the insert was refused (a validator, a unique index, a field name)
    conflict_examples: list[str] = field(default_factory=list)
    unrestorable_examples: list[str] = field(default_factory=list)
    refused_orders: list[Refusal] = field(default_factory=list)  # the first REFUSALS_LISTED
    # Its numero_commande held by another source order: left alone (found before the insert),
    # or restored and shared (another writer gave the number meanwhile: found after the insert)
    numero_held: int = 0
    numero_shared: int = 0
    numero_held_orders: list[HeldNumber] = field(default_factory=list)  # the first REFUSALS_LISTED
    # A --numero, an --id or a selection that selects no archived order (a typo, the wrong case).
    not_found: list[str] = field(default_factory=list)
    # Published cold files gone (removed by hand, lost), read when something asked was not found or
    # the selection is open (--client, a window): their URLs and the orders they held, in no place
    cold_lost_files: list[str] = field(default_factory=list)
    cold_lost_orders: int = 0
    limits: HeldLimits = field(default_factory=HeldLimits)  # #34's: what they held, why it ended
    # The numeros and ids selected, to name those asked for and not there
    seen: set[object] = field(default_factory=set, repr=False)

    @property
    def complete(self) -> bool:
        return not (
            self.conflicts
            or self.unrestorable
            or self.refused
            or self.not_found
            or self.numero_held
            or self.numero_shared
            or self.cold_lost_files
        )

    def as_dict(self) -> dict[str, object]:
        said = {name: value for name, value in asdict(self).items() if name != "seen"}
        return {**said, "complete": self.complete, "ended": self.limits.ended}

    def conflict(self, copy: Mapping[str, object]) -> None:
        self.conflicts += 1
        if len(self.conflict_examples) < EXAMPLES:
            self.conflict_examples.append(_name(copy))

    def refuse(self, refusal: Refusal) -> None:
        self.refused += 1
        if len(self.refused_orders) < REFUSALS_LISTED:
            self.refused_orders.append(refusal)

    def hold_number(self, held: HeldNumber) -> None:
        if held.restored:
            self.numero_shared += 1
            log.warning("restore: order %s restored while another order took its number", held.line())
        else:
            self.numero_held += 1
            log.warning("restore: order %s left alone, its number held in the source", held.line())
        if len(self.numero_held_orders) < REFUSALS_LISTED:
            self.numero_held_orders.append(held)

    def held_lines(self) -> list[str]:
        out = []
        for restored, count, said in (
            (
                False,
                self.numero_held,
                "left alone, their numero_commande held by another order in the source",
            ),
            (
                True,
                self.numero_shared,
                "restored while another writer gave their numero_commande to another "
                "order (two orders hold it now; the next batch rejects the other)",
            ),
        ):
            if count:
                named = [h.line() for h in self.numero_held_orders if h.restored == restored]
                more = count - len(named)
                out.append(
                    f"{count} {said}: "
                    + "; ".join(named)
                    + (f"; and {more} more (each in the log)" if more else "")
                )
        return out

    def _cold_text(self) -> str:
        if not self.from_cold:
            return ""
        return (
            " (all from the cold tier)"
            if self.from_cold == self.selected
            else f" ({self.from_cold} from the cold tier)"
        )

    def _erased_by(self) -> str:
        """What erased it, each reason with its count: "2 forgotten, 1 by ARCHIVE_PII_RETENTION"."""
        return ", ".join(
            f"{count} {REASON_WORDS[reason]}" for reason, count in self.without_personal_data_by.items()
        )

    def lines(self) -> list[str]:
        verb = "restored" if self.run else "would restore (dry run: --run to restore)"
        out = [
            f"{plural(self.selected, 'archived order')} selected{self._cold_text()}; {verb} {self.restored}; "
            f"{self.already_there} already in the source as archived"
        ]
        if self.without_personal_data:
            out.append(f"{self.without_personal_data} without their personal data ({self._erased_by()})")
        if self.conflicts:
            out.append(
                f"{self.conflicts} in the source with other content, left alone: {', '.join(self.conflict_examples)}"
            )
        if self.unrestorable:
            out.append(
                f"{self.unrestorable} archived without a copy of the source order (an early version): "
                f"{', '.join(self.unrestorable_examples)}"
            )
        out += self.held_lines()
        if self.not_found:
            out.append("not found among the archived orders (exit 3): " + "; ".join(self.not_found))
        if self.cold_lost_files:
            out.append(lost_line(self.cold_lost_files, self.cold_lost_orders) + " (exit 3)")
        if self.refused:
            more = self.refused - len(self.refused_orders)
            out.append(
                f"{self.refused} refused by the source collection, not restored: "
                + "; ".join(r.line() for r in self.refused_orders)
                + (f"; and {more} more (each in the log)" if more else "")
            )
        held = self.limits.line("restore")
        return out + ([held] if held else [])


def _name(copy: Mapping[str, object]) -> str:
    return str(copy.get("numero_commande") or copy["_id"])


def restore(
    client: MongoClient[Document],
    settings: Settings,
    selection: RestoreSelection,
    *,
    run: bool = False,
    context: RunContext | None = None,
    archive_client: MongoClient[Document] | None = None,
    confirmed: bool = False,
    limits: CommandLimits = NO_COMMAND_LIMITS,
) -> RestoreReport:
    """``limits`` (#34): each chunk inserted into the source meets them (``context.gate``): paced,
    held while a secondary of the source (or the archive) lags, and a limit ends the restore
    before a chunk (exit 0, ``ended`` says why; the next restore of the same selection inserts
    the rest: what is in the source already is counted, not written again)."""
    wanted = selection.archive_filter()  # refused before anything is read
    context = context or RunContext()
    cold_place = cold_store(settings, context)
    if cold_place is not None:  # a lost cold folder: refused before anything is restored, not "not found"
        cold_place.check(writable=False)
    check_deployments(client, settings, archive_client)
    collections = Collections.of(client, settings, archive_client)
    if run and not confirmed:
        _confirm(collections.archive, wanted, context, _cold_chunks(settings, selection, context))
    report = RestoreReport(run)
    throttle = limits.throttle((client, archive_client), context.stop, report.limits)
    context = replace(context, gate=throttle)
    if run and (limit := throttle.limits.reached()) is not None:
        report.limits.ended = limit  # a stop file there already: nothing written, as batch
        return report
    with throttle.until_a_limit(report.limits):
        _restored(client, settings, selection, collections, report, context)
    report.limits.settle(context.stopped)
    if report.limits.ended == "completed":  # a restore ended early has not looked for them all
        report.not_found = _not_found(
            selection, report.seen, report.selected, collections.archive, context, settings
        )
        if cold_place is not None and (report.not_found or selection.open):
            lost = lost_now(cold_place, collections.checkpoints, context.on(collections.archive_side))
            report.cold_lost_files, report.cold_lost_orders = lost.missing_files, lost.missing
    log.info(
        "restore: %d selected, %d %s, %d already in the source, %d conflicts, %d refused, "
        "%d left alone (their number held by another order), %d whose number another took meanwhile",
        report.selected,
        report.restored,
        "restored" if run else "to restore (dry run)",
        report.already_there,
        report.conflicts,
        report.refused,
        report.numero_held,
        report.numero_shared,
    )
    return report


def _restored(
    client: MongoClient[Document],
    settings: Settings,
    selection: RestoreSelection,
    collections: Collections,
    report: RestoreReport,
    context: RunContext,
) -> None:
    """The selected orders inserted into the source a chunk at a time (a dry run: counted)."""
    run, wanted, seen = report.run, selection.archive_filter(), report.seen
    # On the deployment's clock, as the purge measures RESTORE_HOLD: a host whose clock is behind
    # would shorten the hold by as much (a day behind, a hold of one day: none).
    restored_at = _to_millis(context.retrying(functools.partial(server_time, client)))
    mark = RestoreMark(collections.archive, restored_at, context)
    # A moved order is restored from its cold file, and its mark kept beside (the file is not rewritten).
    cold_mark = replace(
        mark, cold=ColdRestoreMarks(collections.checkpoints, context.on(collections.archive_side))
    )
    archived = ((mark, chunk) for chunk in _chunks(collections.archive, wanted, context))
    cold = ((cold_mark, chunk) for chunk in _cold_chunks(settings, selection, context))
    for marker, chunk in itertools.chain(archived, cold):
        report.selected += len(chunk)
        report.from_cold += len(chunk) if marker is cold_mark else 0
        seen.update(document.get("numero_commande") for document in chunk)
        seen.update(("_id", document["_id"]) for document in chunk)
        copies = _copies(chunk, report)
        present = _present(collections.orders_primary, copies, context)
        for copy in copies:
            if copy["_id"] in present:
                _compare(copy, present[copy["_id"]], report)
        holders = NumberHolders(collections.orders_primary, context)
        missing = _numbers_free(holders, [c for c in copies if c["_id"] not in present], report)
        if run and missing:
            context.gate.before()  # #34: the run's limits, --max-lag's hold (the source's secondaries)
            # before the insert: a purge meanwhile holds it (a cold mark keeps the file's fingerprint)
            missing = _marked(marker, missing, report, {d["_id"]: Held.of(d) for d in chunk})
            refused = _insert(collections.orders_primary, missing, report, context)
            _shared_meanwhile(holders, [c for c in missing if c["_id"] not in refused], report)
            marker.take_back(
                {i: moment_or_none(d.get("restored_at")) for d in chunk if (i := d["_id"]) in refused}
            )
            context.gate.after(len(missing))  # --max-rate
        elif missing:
            report.restored += len(missing)
        if context.stopped:
            return


def _numbers_free(
    holders: NumberHolders, missing: list[dict[str, object]], report: RestoreReport
) -> list[dict[str, object]]:
    """The copies whose number no other order of the source holds; each other is left alone,
    said and counted (``held_numbers.py``)."""
    held = holders.before_insert(missing)
    for copy in missing:
        if copy["_id"] in held:
            report.hold_number(HeldNumber(_name(copy), str(copy["_id"]), str(held[copy["_id"]]), False))
    return [copy for copy in missing if copy["_id"] not in held]


def _shared_meanwhile(
    holders: NumberHolders, inserted: list[dict[str, object]], report: RestoreReport
) -> None:
    """The orders just inserted whose number another writer gave meanwhile: said, counted."""
    shared = holders.holding(inserted)
    for copy in inserted:
        if copy["_id"] in shared:
            report.hold_number(HeldNumber(_name(copy), str(copy["_id"]), str(shared[copy["_id"]]), True))


def _not_found(
    selection: RestoreSelection,
    seen: set[OrderId],
    selected: int,
    archive: MongoCollection,
    context: RunContext,
    settings: Settings,
) -> list[str]:
    """What the selection asked for and did not find: each ``--numero`` (with the archived
    number it differs from only by case, if any, in the archive or the cold tier: numbers
    match exactly), the ``--id``, or the whole selection when it selects nothing."""
    numeros = [n for n in dict.fromkeys(selection.numeros) if n not in seen]
    cased = case_hints(numeros, archive, context, settings)
    found = [
        f"--numero {n}" + (f" ({cased[n]}: numbers match exactly)" if n in cased else "") for n in numeros
    ]
    if selection.order_id is not None and ("_id", selection.order_id) not in seen:
        found.append(f"--id {selection.order_id}")
    if not selected and not found:
        found.append("the selection selects no archived order")
    return found


def _confirm(
    archive: MongoCollection, wanted: dict[str, object], context: RunContext, cold: Iterator[list[Document]]
) -> None:
    """ConfigError (exit 2, nothing written) when a ``--run`` selects more than CONFIRM_ABOVE
    archived orders, in the archive and the cold tier together (``cold``: its chunks), without
    ``--yes``: a window or a client typed wrong puts thousands of orders back into the
    application's collection. Counted up to one past the bound, no further."""
    count = context.retrying(lambda: archive.count_documents(wanted, limit=CONFIRM_ABOVE + 1))
    for chunk in cold:
        if count > CONFIRM_ABOVE:
            break
        count += len(chunk)
    if count > CONFIRM_ABOVE:
        raise ConfigError(
            f"restore --run selects more than {CONFIRM_ABOVE} archived orders: check the selection with a "
            "dry run (without --run), then add --yes to put them back into the source"
        )


def _chunks(
    archive: MongoCollection, wanted: dict[str, object], context: RunContext
) -> Iterator[list[Document]]:
    """The selected archive documents in ``_id`` order, a chunk at a time, through cuts
    (``scan_by_id``), across ``_id`` types (``ids_after``: dirty data has string ids)."""
    fields = {
        "source": 1,
        "numero_commande": 1,
        "pii_policy": 1,
        "forgotten_at": 1,
        "forgotten_by": 1,
        "restored_at": 1,
    }

    def selected_after(after_id: OrderId) -> Any:
        page = {"$and": [wanted, ids_after(after_id)]} if after_id is not None else wanted
        # A sort on _id after a filter on something else may be done in memory: allowed to spill.
        return archive.find(page, fields, batch_size=CHUNK, allow_disk_use=True).sort("_id", ASCENDING)

    return chunked(scan_by_id(selected_after, stop_event=context.stop), CHUNK)


def _cold_chunks(
    settings: Settings, selection: RestoreSelection, context: RunContext
) -> Iterator[list[Document]]:
    """The selected orders of the cold tier (``ARCHIVE_COLD_URL``), a chunk at a time: restored
    as an archived one is (the cold file keeps the whole archive document, its source copy
    included); never removed from the cold tier, as restore never deletes from the archive."""
    store = cold_store(settings, context)
    if store is None:
        return iter(())
    query = ColdQuery(
        selection.numeros,
        selection.order_id,
        selection.client_id,
        None,
        selection.date_from,
        selection.date_to,
    )
    return chunked((document for _, document in find_in_cold(store, query)), CHUNK)


def erasure_reason(document: Mapping[str, object]) -> str | None:
    """What took an archive document's personal data (None: nothing did): ``forget``, or
    ``ARCHIVE_PII_RETENTION`` (its ``forgotten_by``: the widest erasure names itself), or the
    ``ARCHIVE_PII`` mode it was written under (hash or drop)."""
    if document.get("forgotten_at") is not None:
        return BY_AGE if document.get("forgotten_by") == BY_AGE else BY_REQUEST
    return "ARCHIVE_PII" if document.get("pii_policy", "keep") != "keep" else None


def _copies(chunk: list[Document], report: RestoreReport) -> list[dict[str, object]]:
    copies = []
    for document in chunk:
        source = document.get("source")
        if not isinstance(source, dict) or source.get("_id") != document["_id"]:
            report.unrestorable += 1
            if len(report.unrestorable_examples) < EXAMPLES:
                report.unrestorable_examples.append(str(document.get("numero_commande") or document["_id"]))
            continue
        reason = erasure_reason(document)
        if reason is not None:
            report.without_personal_data += 1
            by = report.without_personal_data_by
            by[reason] = by.get(reason, 0) + 1
        copies.append(source)
    return copies


def _present(
    orders: MongoCollection, copies: list[dict[str, object]], context: RunContext
) -> dict[OrderId, Document]:
    ids = [copy["_id"] for copy in copies]
    if not ids:
        return {}
    return {d["_id"]: d for d in context.retrying(lambda: list(orders.find({"_id": {"$in": ids}})))}


def same_bson(found: Mapping[str, object], copy: Mapping[str, object]) -> bool:
    """The order in the source is the archived copy: every field, in order, the same BSON types
    (Python's ``==`` takes 1, 1.0 and True for one value, an Int64 for an int)."""
    return bson.encode(found) == bson.encode(copy)


def _compare(copy: dict[str, object], found: Document, report: RestoreReport) -> None:
    if same_bson(found, copy):
        report.already_there += 1
    else:
        report.conflict(copy)


def _insert(
    orders: MongoCollection,
    missing: list[dict[str, object]],
    report: RestoreReport,
    context: RunContext,
) -> set[OrderId]:
    """Insert the copies as they are, unordered: MongoDB inserts every document it does not
    refuse. The ids of those that are not in the source now as archived (``InsertRefusals``)."""
    if not missing:
        return set()
    retries: list[BaseException] = []
    try:
        context.retrying(
            functools.partial(orders.insert_many, missing, ordered=False),
            purpose=Retry.WRITE,
            on_retry=lambda exc, _: retries.append(exc),
        )
        report.restored += len(missing)
        return set()
    except Exception as exc:
        errors = _refusals(exc.__cause__ if exc.__cause__ is not None else exc)
        if errors is None:
            raise
        report.restored += len(missing) - len(errors)
        return InsertRefusals(orders, missing, context, retried=bool(retries)).settle(errors, report)


def _marked(
    marker: RestoreMark,
    missing: list[dict[str, object]],
    report: RestoreReport,
    copies: Mapping[OrderId, Held],
) -> list[dict[str, object]]:
    """The copies whose order ``marker`` held; each refused the mark (its archive document too
    large to take it) is refused, said and counted, and not restored: without the mark the next
    purge would delete it again."""
    unmarked = marker.hold([copy["_id"] for copy in missing], copies)
    for copy in missing:
        error = unmarked.get(copy["_id"])
        if error is not None:
            reason = str(error.get("errmsg") or "refused").splitlines()[0][:300]
            refusal = Refusal(
                _name(copy), error.get("code"), f"its archive document cannot take the restore mark: {reason}"
            )
            log.warning("restore: the archive refused the restore mark of order %s", refusal.line())
            report.refuse(refusal)
    return [copy for copy in missing if copy["_id"] not in unmarked]


def _too_large_to_mark(error: BaseException) -> list[WriteError] | None:
    """The write errors of marks refused for their documents' size only, or None."""
    cause: BaseException | None = error
    while isinstance(cause, ArchiverError):
        cause = cause.__cause__
    errors = _refusals(cause) if cause is not None else None
    if not errors or not all(is_document_too_large(e.get("code"), e.get("errmsg")) for e in errors):
        return None
    return errors


def _refusals(exc: BaseException) -> list[WriteError] | None:
    """The write errors of a bulk write error that refuses documents one by one, nothing else;
    None for anything else: a write-concern error (the inserts may be rolled back), a failover
    code (retried whole already): the run fails, and a re-run is idempotent."""
    if not isinstance(exc, pymongo_errors.BulkWriteError):
        return None
    errors = write_errors(exc.details)
    if not errors or exc.details.get("writeConcernErrors"):
        return None
    return None if any(e.get("code") in TRANSIENT_CODES for e in errors) else errors


def _on_id(error: WriteError) -> bool:
    """A duplicate key on ``_id``: MongoDB names the index's key (``keyPattern``, 4.4+)."""
    return error.get("code") == DUPLICATE_KEY and list(error.get("keyPattern") or {}) == ["_id"]


@dataclass(frozen=True)
class InsertRefusals:
    """The write errors of one unordered insert, settled per order (``index`` into ``missing``):
    a duplicate key on ``_id`` is an order already in the source, counted as there only when
    the one read back is the archived copy, BSON-exact, else a conflict; any other error (a
    duplicate key on another unique index, a validator, a field name) refuses the order."""

    orders: MongoCollection
    missing: list[dict[str, object]]
    context: RunContext
    # The insert was retried: a try that failed (an election killed it after some documents,
    # and pymongo's own retry found no primary in time) may have inserted what the last try
    # is refused on ``_id``: those orders, absent when this run read the source just before,
    # are there as archived because this run restored them.
    retried: bool = False

    def settle(self, errors: list[WriteError], report: RestoreReport) -> set[OrderId]:
        """Count each refused statement in ``report``; the ids not in the source as archived."""
        on_id = [self.missing[e["index"]] for e in errors if _on_id(e)]
        found = _present(self.orders, on_id, self.context)
        absent: set[OrderId] = set()
        for error in errors:
            copy = self.missing[error["index"]]
            there = found.get(copy["_id"]) if _on_id(error) else None
            if there is not None and same_bson(there, copy):
                if self.retried:
                    report.restored += 1
                else:
                    report.already_there += 1
                continue
            absent.add(copy["_id"])
            if there is not None:
                report.conflict(copy)
                continue
            refusal = self.refusal(copy, error)
            log.warning("restore: the source collection refused order %s", refusal.line())
            report.refuse(refusal)
        return absent

    @staticmethod
    def refusal(copy: Mapping[str, object], error: WriteError) -> Refusal:
        reason = str(error.get("errmsg") or "refused").splitlines()[0][:300]
        if _on_id(error):  # refused on _id, yet not there when read back: deleted meanwhile
            reason += " (and no longer in the source when read back)"
        return Refusal(_name(copy), error.get("code"), reason)


def _to_millis(moment: datetime) -> datetime:
    """BSON dates hold milliseconds: the mark read back equals the one written."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class RestoreMark:
    """``restored_at``: the purge holds these orders for RESTORE_HOLD (``purge.SourcePurge``).
    Set before the insert; taken back after it for the orders it refused, each only if the
    mark is still this one (another restore's later mark stays), to the value it had."""

    archive: MongoCollection
    at: datetime
    context: RunContext
    cold: ColdRestoreMarks | None = None  # orders restored from the cold tier: marked there instead

    def hold(self, ids: list[OrderId], copies: Mapping[OrderId, Held]) -> dict[OrderId, WriteError]:
        """Mark ``ids``; the orders whose archive document refused the mark for its size (one
        within bytes of 16 MB: 17419), each with its write error. One statement an order, so
        that such a document refuses its own mark alone. A cold mark keeps what the file holds of
        each (``copies``: its fingerprint), to tell a correction made in the source since."""
        if self.cold is not None:
            self.cold.hold(ids, self.at, copies)
            return {}
        marks = [UpdateOne({"_id": i}, {"$set": {"restored_at": self.at}}) for i in ids]
        try:
            self.context.retrying(
                functools.partial(self.archive.bulk_write, marks, ordered=False), purpose=Retry.WRITE
            )
        except ArchiverError as error:
            refused = _too_large_to_mark(error)
            if refused is None:
                raise
            return {ids[e["index"]]: e for e in refused}
        return {}

    def take_back(self, previous: dict[OrderId, datetime | None]) -> None:
        if not previous:
            return
        if self.cold is not None:
            self.cold.take_back(previous, self.at)
            return
        requests = [
            UpdateOne(
                {"_id": order_id, "restored_at": self.at},
                {"$set": {"restored_at": before}} if before is not None else {"$unset": {"restored_at": ""}},
            )
            for order_id, before in previous.items()
        ]
        self.context.retrying(
            functools.partial(self.archive.bulk_write, requests, ordered=False),
            purpose=Retry.WRITE,
        )
