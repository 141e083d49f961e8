"""`verify`: reconcile the source and the archive, streaming, in chunks.

- delivered orders of the window missing from the archive (orders rejected as invalid are
  counted apart: they are never archived);
- archive documents that disagree with their source order: its own fields (``numero_commande``,
  ``date_commande``, each item's ``menu_id`` and ``quantite``), or with themselves (each item's
  ``sous_total`` against its ``prix`` times ``quantite``, ``montant_total`` against the sum of
  the ``sous_total``). The names and prices are the archive's record of what the order pointed to
  when it was archived (the contract's ``montant_total`` is the sum over the archived items), so
  they are not compared with the references as they are now: a dish whose price changed since,
  a restaurant renamed since, is no disagreement;
- archive documents with no source order: normal after ``--purge-source``, reported only;
- erasures that do not hold: archive documents marked erased (``forget``,
  ARCHIVE_PII_RETENTION) or of a recorded forgotten person that still hold the personal data
  their erasure removes (by content, the source copy's undeclared fields included).

Exit 0 when nothing is missing, mismatched or unerased, 3 otherwise. ``--repair`` archives the
missing orders through the batch path, and rewrites each document that disagrees from its source
order through the archive's writer (``storage.Rewrites``: erasures hold), a chunk at a time as the
check reads them. Memory holds one chunk, whatever the archive's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypedDict, TypeVar

from pymongo import ASCENDING, MongoClient

from order_archiver.batch.job import BatchArchiver, BatchOptions
from order_archiver.batch.limits import Ended, LimitReached
from order_archiver.batch.report import PAUSES
from order_archiver.batch.throttle import NO_COMMAND_LIMITS, CommandLimits, HeldLimits, Throttle
from order_archiver.cold.check import ColdCheck, check_cold
from order_archiver.cold.holding import ColdRestoreMarks
from order_archiver.cold.manifest import ColdManifest
from order_archiver.cold.tier import cold_store, unsettled_moves
from order_archiver.context import RunContext
from order_archiver.documents import ArchiveDocument, Document, OrderId
from order_archiver.errors import ConfigError, TransientError
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.deployment import check_deployments
from order_archiver.mongodb.forgotten import ForgottenPersons, first_key, orders_of, recorded
from order_archiver.mongodb.rejects import RejectStore
from order_archiver.mongodb.retention import earlier_erasures
from order_archiver.mongodb.source import (
    ChunkReader,
    OrderSource,
    chunked,
    missing_source,
    scan_by_id,
)
from order_archiver.mongodb.storage import ArchiveWriter, Collections, Rewrites
from order_archiver.orders.enrichment import as_utc, source_hash, source_order
from order_archiver.orders.erasing import BY_AGE, BY_REQUEST, Erasure
from order_archiver.orders.selection import date_range, ids_after
from order_archiver.reporting.progress import Progress, ProgressMode
from order_archiver.settings import Settings

log = get_logger("verify")
CHUNK = 1000
T = TypeVar("T")
EXAMPLES = 5
TOLERANCE = 0.005  # euros: a total is rounded to the cent, as the archive writes it


class Disagreement(TypedDict):
    """An archive document that disagrees with its source order, as the report names it."""

    id: str
    fields: list[str]


@dataclass
class VerifyReport:
    checked: int = 0
    missing: int = 0
    mismatched: int = 0
    orphans: int = 0
    invalid: int = 0
    past_retention: int = 0  # delivered longer ago than ARCHIVE_RETENTION: not expected in the archive
    past_cold_after: int = 0  # delivered longer ago than ARCHIVE_COLD_AFTER: not expected in the archive
    repaired: int = 0
    missing_before_repair: int | None = None  # with --repair: the figures above are after it
    rewritten: int = 0  # with --repair: documents that disagreed, rewritten from their source order
    mismatched_before_repair: int | None = None
    missing_examples: list[str] = field(default_factory=list)
    mismatched_examples: list[Disagreement] = field(default_factory=list)
    orphan_examples: list[str] = field(default_factory=list)
    unerased: int = 0  # erased (marked, or of a forgotten person) yet holding personal data
    unerased_examples: list[str] = field(default_factory=list)
    # Among the archive's erasures, those an earlier version made (its ARCHIVE_PII_RETENTION
    # kept couriers' names): the next batch --run makes them again, once (asked when unerased)
    unerased_earlier: int = 0
    cold: ColdCheck | None = None  # ARCHIVE_COLD_URL: its files whole, each order in one place
    # Orders restored from the cold tier and changed in the source since: the change is held there
    # alone (no pass archives an order older than ARCHIVE_COLD_AFTER again)
    cold_corrected: int = 0
    cold_corrected_examples: list[str] = field(default_factory=list)
    ended: Ended = "completed"  # why it ended: the repair's (#34: max_runtime, stop_file...)

    @property
    def consistent(self) -> bool:
        cold_ok = (self.cold is None or self.cold.consistent) and not self.cold_corrected
        return not self.missing and not self.mismatched and not self.unerased and cold_ok

    def _repair_line(self) -> str:
        """What ``--repair`` did, and whether the figures below are from after it."""
        did = f"repair: {plural(self.missing_before_repair or 0, 'missing order')} found, {self.repaired} archived"
        if self.mismatched_before_repair:
            did += (
                f"; {plural(self.mismatched_before_repair, 'disagreeing document')} found, "
                f"{self.rewritten} rewritten from the source"
            )
        if self.ended in PAUSES:
            return (
                f"{did}; the repair ended {PAUSES[self.ended]}: not checked again, verify --repair again "
                "goes on (the figures below are from before it):"
            )
        return f"{did}; checked again after the repair:"

    @property
    def delivered(self) -> int:
        """The window's delivered orders read in the source: those ``checked`` against the
        archive, and those counted apart (invalid, past ARCHIVE_RETENTION or ARCHIVE_COLD_AFTER:
        not expected in the archive). The text's first line and ``--json`` say the same figures."""
        return self.checked + self.invalid + self.past_retention + self.past_cold_after

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "delivered": self.delivered, "consistent": self.consistent}

    def lines(self) -> list[str]:
        expired = (
            f"; {self.past_retention} past ARCHIVE_RETENTION, not expected" if self.past_retention else ""
        )
        if self.past_cold_after:
            expired += f"; {self.past_cold_after} past ARCHIVE_COLD_AFTER, not expected (older than the archive takes: in the cold tier or the source)"
        out = [
            f"{plural(self.delivered, 'delivered order')}: {self.checked} checked against the archive, "
            f"{self.invalid} invalid (never archived){expired}"
        ]
        repair = "; main.py verify --repair archives them" if self.missing else ""
        out.append(
            f"missing from the archive: {self.missing} {self.missing_examples or ''}".rstrip() + repair
        )
        examples = [f"{e['id']} ({', '.join(e['fields'])})" for e in self.mismatched_examples]
        rewrite = (
            "; main.py verify --repair rewrites them from their source orders" if self.mismatched else ""
        )
        out.append(
            f"archive documents that disagree with the source: {self.mismatched} {examples or ''}".rstrip()
            + rewrite
        )
        out.append(f"archive documents with no source order (normal after a purge): {self.orphans}")
        out.append(
            "archive documents erased (forget, ARCHIVE_PII_RETENTION) yet holding personal data: "
            f"{self.unerased} {self.unerased_examples or ''}".rstrip()
            + self._earlier_text()
        )
        out += [self.cold.line()] if self.cold is not None else []
        if self.cold_corrected:
            out.append(
                f"orders restored from the cold tier and changed in the source since: {self.cold_corrected} "
                f"{self.cold_corrected_examples}; no pass archives them again (older than "
                "ARCHIVE_COLD_AFTER): the source holds the only copy of the change (docs/operating.md, "
                "the purge and the cold tier)"
            )
        if self.missing_before_repair is not None:
            out.insert(0, self._repair_line())
        out.append("consistent" if self.consistent else "NOT consistent")
        return out

    def _earlier_text(self) -> str:
        if not self.unerased or not self.unerased_earlier:
            return ""
        return (
            f"; {plural(self.unerased_earlier, 'archived order')} erased by an earlier version "
            "(couriers' names kept) in the archive: the next batch --run erases them again"
        )


def _note(examples: list[T], item: T) -> None:
    if len(examples) < EXAMPLES:
        examples.append(item)


def _same_date(left: object, right: object) -> bool:
    if not isinstance(left, datetime) or not isinstance(right, datetime):
        return bool(left == right)
    return bool(abs((as_utc(left) - as_utc(right)).total_seconds()) < 0.001)  # BSON dates keep milliseconds


def differences(expected: Mapping[str, object], archived: Mapping[str, object]) -> list[str]:
    """The fields where an archive document disagrees with its source order as it is now
    (``expected``: the order's own fields), or with itself (its lines and its total). Never its
    names and prices against the references as they are now: the archive keeps what the order
    pointed to when it was archived (docs/commands.md, ``verify``)."""
    fields = []
    if archived.get("numero_commande") != expected["numero_commande"]:
        fields.append("numero_commande")
    if not _same_date(archived.get("date_commande"), expected["date_commande"]):
        fields.append("date_commande")
    lines = archived.get("items")
    if not isinstance(lines, list) or not _same_lines(expected.get("items"), lines):
        fields.append("items")
    elif not _adds_up(archived.get("montant_total"), lines):
        fields.append("montant_total")
    return fields


def _number(value: object) -> float | None:
    """A number as the archiver writes them (an int or a float), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _same_lines(ordered: object, lines: list[object]) -> bool:
    """The archived lines are the order's (each ``menu_id`` and ``quantite``, in its order), and
    each adds up (``_line_adds_up``)."""
    expected = ordered if isinstance(ordered, list) else []
    if len(lines) != len(expected):
        return False
    for line, item in zip(lines, expected, strict=True):
        if not isinstance(line, Mapping) or not isinstance(item, Mapping):
            return False
        if (line.get("menu_id"), line.get("quantite")) != (item.get("menu_id"), item.get("quantite")):
            return False
        if not _line_adds_up(line):
            return False
    return True


def _line_adds_up(line: Mapping[str, object]) -> bool:
    """A line's ``sous_total`` is its ``prix`` times ``quantite`` (null with a null price)."""
    if line.get("prix") is None:
        return line.get("sous_total") is None
    price, quantity, subtotal = (_number(line.get(k)) for k in ("prix", "quantite", "sous_total"))
    if price is None or quantity is None or subtotal is None:
        return False
    return abs(subtotal - round(price * quantity, 2)) <= TOLERANCE


def _adds_up(total: object, lines: list[object]) -> bool:
    """``montant_total`` is the sum of the lines' ``sous_total`` (those whose dish resolved)."""
    amount = _number(total)
    subtotals = (_number(line.get("sous_total")) for line in lines if isinstance(line, Mapping))
    lines_total = round(sum(v for v in subtotals if v is not None), 2)
    return amount is not None and abs(amount - lines_total) <= TOLERANCE


@dataclass(frozen=True)
class VerifyOptions:
    """What ``verify`` checks and does, parsed once from its flags."""

    date_from: datetime | None = None  # the delivery window (--date-from/--date-to), both ends in
    date_to: datetime | None = None
    repair: bool = False  # --repair: archive the missing orders through the batch path
    progress: ProgressMode = "off"
    limits: CommandLimits = NO_COMMAND_LIMITS  # the repair's (#34): a batch run's, its writes meet them


def verify(
    client: MongoClient[Document],
    settings: Settings,
    options: VerifyOptions = VerifyOptions(),
    *,
    context: RunContext | None = None,
    archive_client: MongoClient[Document] | None = None,
) -> VerifyReport:
    """Reconcile; with ``repair``, rewrite the documents that disagree as they are met, archive
    what is missing, then reconcile again: the report (and the exit code) is the state after the
    repair, with what the repair did."""
    context = context or RunContext()
    check_deployments(client, settings, archive_client)
    problem = context.retrying(lambda: missing_source(Collections.of(client, settings).orders))
    if problem:
        raise ConfigError(problem)
    date_from, date_to, progress = options.date_from, options.date_to, options.progress
    rewriter = _rewriter(client, archive_client, settings, options, context) if options.repair else None
    report = _reconcile(client, archive_client, settings, date_from, date_to, context, progress, rewriter)
    if rewriter is None or not (report.missing or report.mismatched):
        return report
    ended: Ended = rewriter.ended or "completed"
    archived = 0
    if report.missing and ended == "completed":
        # One --max-runtime for the whole repair: the run that archives the missing orders gets
        # what the rewrites left of it (it had the whole of it again: twice the limit in all).
        left = replace(options.limits, max_runtime=rewriter.gate.limits.left())
        repair = _repair_options(replace(options, limits=left))
        repaired = BatchArchiver(
            client, settings, repair, context=context, archive_client=archive_client
        ).run()
        archived, ended = repaired.archived, repaired.ended or "completed"
    # Ended by a limit, it is not checked again (a walk of the window): the figures are those
    # found before it, and what it archived and rewrote; verify --repair again goes on.
    after = report
    if ended == "completed":
        after = _reconcile(client, archive_client, settings, date_from, date_to, context, progress)
    after.repaired, after.rewritten = archived, rewriter.rewritten
    after.missing_before_repair, after.mismatched_before_repair = report.missing, report.mismatched
    after.ended = ended
    return after


def _rewriter(
    client: MongoClient[Document],
    archive_client: MongoClient[Document] | None,
    settings: Settings,
    options: VerifyOptions,
    context: RunContext,
) -> _Rewriter:
    """``--repair``'s rewrites: the one archive writer, under the repair's limits (#34)."""
    throttle = options.limits.throttle((client, archive_client), context.stop, HeldLimits())
    on_archive = replace(context, gate=throttle)
    writer = ArchiveWriter.of(Collections.of(client, settings, archive_client), settings, on_archive)
    return _Rewriter(writer, throttle)


def _repair_options(options: VerifyOptions) -> BatchOptions:
    """The batch run that archives the missing orders of ``options``' window."""
    limits = options.limits
    return BatchOptions(
        run=True,
        date_from=options.date_from,
        date_to=options.date_to,
        resume=False,
        samples=0,
        full=True,
        full_reason="verify --repair",
        name="repair",
        # A rejection it lists first is news to the next batch run, which says it (exit 3): the
        # repair's report has no word for it, and taking it as batch would leave it unsaid.
        rejects_source="verify",
        # A repair can be a whole backfill (an archive restored from an old backup): a batch run's
        # limits, its writes (and what follows them: the retentions, the prune) meeting them.
        max_runtime=limits.max_runtime,
        stop_file=limits.stop_file,
        max_rate=limits.max_rate,
        max_lag=limits.max_lag,
    )


def _reconcile(
    client: MongoClient[Document],
    archive_client: MongoClient[Document] | None,
    settings: Settings,
    date_from: datetime | None,
    date_to: datetime | None,
    context: RunContext,
    progress: ProgressMode,
    rewriter: _Rewriter | None = None,
) -> VerifyReport:
    collections = Collections.of(client, settings, archive_client)
    check = _Check(collections, settings, VerifyReport(), context, rewriter=rewriter)
    check.delivered_orders(date_from, date_to, Progress("verifying", mode=progress))
    check.archive_documents(date_from, date_to)
    check.erasures(date_from, date_to)
    store = cold_store(settings, context)
    if store is not None:  # the whole cold tier, whatever the window: each order in one place
        store.check(writable=False)  # a place that is not there: exit 2, named (not "0 files")
        on_archive = context.on(collections.archive_side)
        manifest = ColdManifest(store, collections.checkpoints, on_archive)  # files gone: orders missing
        cold = check.report.cold = check_cold(
            store, collections.archive, on_archive, manifest, unerased=check.unerased_among
        )
        if cold.also_in_archive:  # an interrupted move's, perhaps: named, and what settles it
            cold.unsettled = unsettled_moves(
                store, collections.checkpoints, on_archive, datetime.now(UTC)
            ).files
        marks = ColdRestoreMarks(collections.checkpoints, on_archive)
        changed, _ = marks.corrected(collections.orders, settings.pii_policy)
        check.report.cold_corrected = len(changed)
        check.report.cold_corrected_examples = [str(i) for i in changed[:EXAMPLES]]
    return check.report


@dataclass
class _Rewriter:
    """``--repair``'s rewrites of the documents that disagree with their source order, a chunk
    at a time as the check meets them (``storage.Rewrites``: the one archive writer, erasures
    held), each chunk meeting the repair's limits (#34: ``gate``); a limit that comes ends the
    rewrites (``ended``), the check reads on."""

    writer: ArchiveWriter
    gate: Throttle  # the repair's limits; its --max-runtime counted from the rewrites' start
    rewritten: int = 0
    ended: Ended | None = None

    def rewrite(self, documents: list[ArchiveDocument]) -> None:
        if not documents or self.ended is not None:
            return
        try:
            self.gate.before()  # --max-runtime, --stop-file, --max-lag's hold
            outcome = Rewrites(self.writer).rewrite(documents)
            self.rewritten += outcome.revised
            for refused in outcome.rejections:  # still disagreeing after: counted by the check again
                log.warning("order %s not rewritten: %s", refused.order_id, refused.reason)
            self.gate.after(len(documents))  # --max-rate
        except LimitReached as reached:
            self.ended = reached.limit


@dataclass
class _ReadCounts:
    """What the reader counts; verify reports its own figures."""

    scanned: int = 0
    already_archived: int = 0
    outside_window: int = 0
    past_retention: int = 0
    past_cold_after: int = 0
    read_retries: int = 0


@dataclass
class _Unerased:
    """The documents found unerased: a count and the first ``EXAMPLES`` ids by their text, not
    every id (an archive whose erasures all failed is as many as it holds)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, document_id: OrderId) -> None:
        self.count += 1
        self.examples = sorted([*self.examples, str(document_id)])[:EXAMPLES]


@dataclass
class _Check:
    """One reconciliation: two walks, each in chunks, counting into ``report``."""

    collections: Collections
    settings: Settings
    report: VerifyReport
    context: RunContext
    rewriter: _Rewriter | None = None  # --repair: the documents that disagree rewritten as met
    now: datetime = field(default_factory=lambda: datetime.now(UTC))  # the erasures' moment

    def read(self, func: Callable[[], T]) -> T:
        return self.context.retrying(func)

    def delivered_orders(self, date_from: datetime | None, date_to: datetime | None, bar: Progress) -> None:
        """Every delivered order of the window: in the archive, and agreeing with it? Read and
        finished by batch's own reader: an order batch rejects (invalid, or its enrichment over
        the server's limits) is counted invalid here too, alone."""
        source = OrderSource(
            self.collections.orders,
            self.collections.names,
            self.settings.delivered_status,
            date_from,
            date_to,
            archived_ids=lambda ids: set(),  # every order is compared, archived or not
        )
        counts = _ReadCounts()
        reader = ChunkReader(
            source,
            counts,
            self.settings.finisher("batch"),
            batch_size=CHUNK,
            limit=None,
            stop_event=self.context.stop,
        )
        for chunk in reader.chunks(None):
            self.report.invalid += len(chunk.rejections)
            self.report.checked += len(chunk.documents)
            self._compare(chunk.documents)
            bar.update(chunk.size)
        bar.close()
        self.report.past_retention = counts.past_retention
        self.report.past_cold_after = counts.past_cold_after
        if not reader.exhausted:  # stopped: a partial walk never reads as a complete one
            raise TransientError("verify was interrupted before it read every delivered order")

    def _compare(self, documents: list[ArchiveDocument]) -> None:
        ids = [d["_id"] for d in documents]
        fields = {"numero_commande": 1, "date_commande": 1, "montant_total": 1, "items": 1}
        archived = {
            d["_id"]: d
            for d in self.read(lambda: list(self.collections.archive.find({"_id": {"$in": ids}}, fields)))
        }
        # An order the archive refused (an archive document over 16 MB...) is on the rejects
        # list, as an invalid one is: rejected, not missing (no run can archive it).
        listed = self._listed([d["_id"] for d in documents if d["_id"] not in archived])
        damaged: list[ArchiveDocument] = []  # the orders whose archive document disagrees
        for expected in documents:
            found = archived.get(expected["_id"])
            if found is None and expected["_id"] in listed:
                self.report.checked -= 1
                self.report.invalid += 1
                continue
            if found is None:
                self.report.missing += 1
                _note(self.report.missing_examples, str(expected["_id"]))
                continue
            disagreeing = differences(expected, found)
            if disagreeing:
                self.report.mismatched += 1
                _note(
                    self.report.mismatched_examples, Disagreement(id=str(expected["_id"]), fields=disagreeing)
                )
                damaged.append(expected)
        if self.rewriter is not None and damaged:
            self.rewriter.rewrite(self._still_current(damaged))

    def _still_current(self, documents: list[ArchiveDocument]) -> list[ArchiveDocument]:
        """Those of ``documents`` finished from the version of their order the source holds now
        (its fingerprint, ``source_hash``, as every write computes it). An order corrected since
        the check read it, and archived meanwhile by the watcher or a batch run, disagreed with
        the older version read here: rewriting that one put the older over the newer (and no
        writer would come back to it). Left for the next verify, which reads the new one."""
        ids = [d["_id"] for d in documents]
        orders = self.collections.orders_primary
        held = self.read(lambda: list(orders.find({"_id": {"$in": ids}})))
        policy = self.settings.pii_policy
        now = {order["_id"]: source_hash(policy.apply_order(source_order(order))) for order in held}
        return [d for d in documents if now.get(d["_id"]) == d.get("source_hash")]

    def _listed(self, ids: list[OrderId]) -> set[OrderId]:
        return RejectStore(self.collections.rejects, self.context.on(self.collections.archive_side)).known(
            ids
        )

    def _in_the_source(self, ids: list[OrderId]) -> set[OrderId]:
        orders = self.collections.orders
        return {d["_id"] for d in self.read(lambda: list(orders.find({"_id": {"$in": ids}}, {"_id": 1})))}

    def archive_documents(self, date_from: datetime | None, date_to: datetime | None) -> None:
        """Every archive document of the window: does its source order still exist?"""
        bounds = date_range(date_from, date_to)
        archive_window: dict[str, object] = {"date_commande": bounds} if bounds else {}

        def archived_after(after_id: OrderId) -> Any:
            window = dict(archive_window)
            if after_id is not None:
                window.update(ids_after(after_id))
            # A sort on _id after a filter on the date may be done in memory: allowed to spill.
            return self.collections.archive.find(
                window, {"_id": 1}, batch_size=CHUNK, allow_disk_use=True
            ).sort("_id", ASCENDING)

        documents = scan_by_id(archived_after, stop_event=self.context.stop)
        for ids in chunked((d["_id"] for d in documents), CHUNK):
            present = self._in_the_source(ids)
            for archived_id in ids:
                if archived_id not in present:
                    self.report.orphans += 1
                    _note(self.report.orphan_examples, str(archived_id))

    def erasures(self, date_from: datetime | None, date_to: datetime | None) -> None:
        """Every erasure of the window that should hold: the documents marked erased, and the
        orders of each recorded forgotten person (the record walked in key order, a chunk of
        persons per read, each branch on its index), tested by content. Counted as found: a
        document is counted once (with the marked ones, or with the chunk of its first person:
        ``first_key``), no set of ids kept, nor the record held whole (it grows with every
        forget --run, over the years)."""
        bounds = date_range(date_from, date_to)
        window = {"date_commande": bounds} if bounds else {}
        found = _Unerased()
        for document in self._each({**window, "forgotten_by": {"$in": [BY_REQUEST, BY_AGE]}}):
            if self._marked_unerased(document):
                found.add(document["_id"])
        record = ForgottenPersons(self.collections.forgotten, self.context.on(self.collections.archive_side))
        walk = scan_by_id(partial(record.after, batch_size=CHUNK), stop_event=self.context.stop)
        persons = (person for person in map(recorded, walk) if person is not None)
        for chunk in chunked(persons, CHUNK):
            theirs: dict[str, object] = {**window, "$or": [orders_of(p.kind, p.id) for p in chunk]}
            for documents in chunked(self._each(theirs), CHUNK):
                self._theirs_unerased(record, documents, chunk[0].key, found)
        self.report.unerased = found.count
        for document_id in found.examples:
            _note(self.report.unerased_examples, document_id)
        if found.count:  # an upgrade's: one look at the record, then one count on an index
            archive = self.collections.archive
            context = self.context.on(self.collections.archive_side)
            self.report.unerased_earlier = earlier_erasures(archive, self.collections.forgotten, context)

    def _marked_unerased(self, document: Document) -> bool:
        """A document marked erased that still holds what its erasure removes."""
        marked = document.get("forgotten_by")
        if marked not in (BY_REQUEST, BY_AGE):
            return False
        # An erasure by age takes the courier's too.
        by_age = marked == BY_AGE
        return Erasure(True, by_age, BY_REQUEST, self.now, self.settings.pii_policy.fields).holds(document)

    def _theirs_unerased(
        self, record: ForgottenPersons, documents: list[Document], first: str, found: _Unerased
    ) -> None:
        """Those of ``documents`` (a chunk of persons' orders, ``first`` its first key) owed an
        erasure that does not hold, each counted once: not if marked and counted so, nor if a
        person of an earlier chunk names it (counted there)."""
        # By the record's keys, as every write of the archive asks (``record.among``): an
        # order naming the person by the text of their id, in any case, is theirs.
        forgotten = record.among(documents)
        for document in documents:
            earlier = first_key(document, forgotten)
            if (earlier is not None and earlier < first) or self._marked_unerased(document):
                continue
            owed = forgotten.erasure(document, self.now, self.settings.pii_policy.fields)
            if owed is not None and owed.holds(document):
                found.add(document["_id"])

    def unerased_among(self, documents: list[Document]) -> list[object]:
        """Those of ``documents`` (a cold file's, a chunk at a time) that hold personal data an
        erasure removed: marked erased, or of a recorded forgotten person (one read of the
        record for the chunk's persons), tested by content as in the archive."""
        fields, now = self.settings.pii_policy.fields, datetime.now(UTC)
        record = ForgottenPersons(self.collections.forgotten, self.context.on(self.collections.archive_side))
        forgotten = record.among(documents)
        found: list[object] = []
        for document in documents:
            marked = document.get("forgotten_by")
            owed = [forgotten.erasure(document, now, fields)]
            if marked in (BY_REQUEST, BY_AGE):
                owed.append(Erasure(True, marked == BY_AGE, BY_REQUEST, now, fields))
            if any(erasure is not None and erasure.holds(document) for erasure in owed):
                found.append(document["_id"])
        return found

    def _each(self, selection: dict[str, object]) -> Iterator[Document]:
        """The documents of ``selection``, streamed in ``_id`` order through cuts."""

        def selected_after(after_id: OrderId) -> Any:
            page = {"$and": [selection, ids_after(after_id)]} if after_id is not None else selection
            # A sort on _id after a filter on something else may be done in memory: allowed to spill.
            archive = self.collections.archive
            return archive.find(page, batch_size=CHUNK, allow_disk_use=True).sort("_id", ASCENDING)

        return scan_by_id(selected_after, stop_event=self.context.stop)
