"""`forget --client ID` / `forget --courier ID`: a person's right to erasure (RGPD article 17)
in the archive.

What it erases, in every archived order of the person (``erasing.Erasure``): of a client, their
name, e-mail and phone (``client.nom``, ``prenom``, ``email``, ``telephone``), the delivery
address, and every field of the order's source copy not known to be non-personal
(``ARCHIVE_NON_PERSONAL_FIELDS``); of a courier, their name (``livreur.nom``, ``prenom``);
whatever ``ARCHIVE_PII`` wrote them as (clear or hashed). What it keeps: what accounting needs
(dates, amounts, items, the restaurant, the references' ids: an opaque key that lets support
find the orders and a second request find nothing left). An erased document's ``source_hash``
becomes the fingerprint of its erased copy (no digest of an erased value is left).

With ``--run`` it first records the person (``forgotten.ForgottenPersons``: their id and the
date, nothing else), then erases: every later write of the archive (a correction under batch or
watch, a restored order archived again, ``verify --repair``) writes their orders erased. What
it cannot reach: the source orders and the ``Client``/``Livreur`` records (the application's
data: erase them there too), and backups.

Dry run unless ``run``; idempotent (a second run erases nothing and says so). The rejects list
holds ids, numbers and reasons only: nothing of a person to erase there. The log line names
the person's id and the count, never the data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

from bson import ObjectId
from pymongo import MongoClient

from order_archiver.batch.throttle import NO_COMMAND_LIMITS, CommandLimits, HeldLimits, Throttle
from order_archiver.cold.erasure import ColdErasure, erase_in_cold
from order_archiver.cold.rewrite import read_boundary
from order_archiver.cold.search import ColdQuery
from order_archiver.cold.store import versions_kept_words
from order_archiver.cold.tier import cold_store, cold_tier_writer
from order_archiver.context import RunContext
from order_archiver.documents import Document
from order_archiver.errors import ArchiverError, ConfigError, Interrupted, storage_error
from order_archiver.logs import get_logger, plural
from order_archiver.mongodb.deployment import check_deployments
from order_archiver.mongodb.erasure import count_holding, erase_personal_data
from order_archiver.mongodb.forgotten import ForgottenPersons, orders_of
from order_archiver.mongodb.source import missing_source
from order_archiver.mongodb.storage import Collections
from order_archiver.orders.erasing import BY_REQUEST, CLIENT, COURIER, Erasure
from order_archiver.settings import Settings

log = get_logger("forget")


def parse_person_id(text: str, kind: str) -> ObjectId:
    """A person's ``_id`` as the contract has it: an ObjectId, 24 hexadecimal digits."""
    if not ObjectId.is_valid(text) or len(text) != 24:
        raise ValueError(f"expected a {kind} _id of 24 hexadecimal digits, got {text!r}")
    return ObjectId(text)


def parse_client_id(text: str) -> ObjectId:
    return parse_person_id(text, "client")


def parse_courier_id(text: str) -> ObjectId:
    return parse_person_id(text, "courier")


def checked_client_id(text: str) -> str:
    """``--client``'s value as typed, once checked (``parse_person_id``): forget also looks for
    orders naming the person by that very text (``Person.given``)."""
    parse_person_id(text, "client")
    return text


def checked_courier_id(text: str) -> str:
    parse_person_id(text, "courier")
    return text


@dataclass(frozen=True)
class Person:
    """Whom to forget: a client (``kind`` ``client``) or a courier (``livreur``), by ``_id``."""

    kind: str
    id: ObjectId
    # The id as the command line gave it: an order naming the person by that very text (an
    # import that lost the type, in mixed case) is theirs too; ids are compared as stored.
    given: str | None = None

    @classmethod
    def of(cls, kind: str, text: str) -> Person:
        return cls(kind, parse_person_id(text, "courier" if kind == COURIER else "client"), text)

    @property
    def name(self) -> str:
        return "courier" if self.kind == COURIER else "client"

    @property
    def forms(self) -> ObjectId | str:
        """What names them in the orders' queries (``forgotten.id_forms`` of it)."""
        return self.given if self.given is not None else self.id

    def orders(self) -> dict[str, object]:
        """Their archived orders, by an indexed selection (``indexes.ARCHIVE_INDEXES``)."""
        return orders_of(self.kind, self.forms)

    def erasure(self, settings: Settings) -> Erasure:
        return Erasure(
            client=self.kind == CLIENT,
            courier=self.kind == COURIER,
            by=BY_REQUEST,
            at=datetime.now(UTC),
            fields=settings.pii_policy.fields,
        )


@dataclass
class ForgetReport:
    person: Person
    run: bool
    orders: int = 0  # the person's archived orders
    erased: int = 0  # those that held personal data (erased, or would be)
    found: bool = True  # archived orders, or a document in the source's Client/Livreur collection
    cold: ColdErasure | None = None  # ARCHIVE_COLD_URL: their orders in the cold tier
    limits: HeldLimits = field(default_factory=HeldLimits)  # #34's: what they held, why it ended
    # Orders whose archive document was too large to take the erasure (within bytes of 16 MB):
    # their personal data kept, each named.
    unerased: list[str] = field(default_factory=list)
    # Orders whose archive document was too large to take the erasure's marks: erased, unmarked.
    unmarked: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Exit 3 otherwise: an id found nowhere is a mistake (a courier's id given as a client's);
        an order too large to take the erasure still holds their data."""
        return self.found and not self.unerased

    def as_dict(self) -> dict[str, object]:
        return {
            f"{self.person.name}_id": str(self.person.id),
            "run": self.run,
            "orders": self.orders,
            "erased": self.erased,
            "found": self.found,
            "ended": self.limits.ended,
            **({"unerased": self.unerased} if self.unerased else {}),
            **({"unmarked": self.unmarked} if self.unmarked else {}),
            # With a cold tier only: the report of a deployment without one stays as it was.
            **({"cold": asdict(self.cold)} if self.cold is not None else {}),
        }

    def lines(self) -> list[str]:
        held = self.limits.line("forget")
        return self._lines() + self._versions_lines() + ([held] if held else [])

    def unfinished_in_cold(self) -> str:
        """What a forget --run whose cold tier failed did, and what finishes it."""
        return (
            f"{self.person.name} {self.person.id}: recorded as forgotten and erased in the archive "
            f"collection ({plural(self.erased, 'order')} erased there); their erasure in the cold tier is not "
            "finished: the next batch --run finishes it, or run forget again (status names them until then)"
        )

    def _versions_lines(self) -> list[str]:
        """A versioned bucket keeps what the rewrites replaced: said, as nothing here erases it."""
        if self.cold is None or not self.cold.versions_kept:
            return []
        return [f"cold tier: {versions_kept_words(self.cold.rewritten)}"]

    @property
    def cold_partial(self) -> bool:
        """The cold tier's counts are those of the files read before a signal or a limit ended
        the erasure: at least as many, the files left unread not counted."""
        return self.cold is not None and not self.cold.complete

    def _lines(self) -> list[str]:
        cold = self.cold
        if cold is not None and self.cold_partial:
            return [*self._archive_lines(), *self._unerased_lines(), self._partial_cold_line(cold)]
        if cold is None or not cold.orders:
            return [*self._archive_lines(), *self._unerased_lines()]
        if self.run:
            verb = f"{plural(cold.rewritten, 'file')} rewritten"
        elif cold.erased:  # the files holding them, rewritten without their personal data
            verb = (
                f"would rewrite the {plural(cold.to_rewrite, 'file')} holding them (dry run: nothing written)"
            )
        else:
            verb = "nothing to rewrite"
        return [
            *self._archive_lines(),
            *self._unerased_lines(),
            f"cold tier: {cold.orders} of their orders in {plural(cold.files, 'file')}, {cold.erased} holding "
            f"personal data; {verb}",
        ]

    def _partial_cold_line(self, cold: ColdErasure) -> str:
        """A cold tier's erasure ended between two files: what it found and did so far, what is left."""
        if not cold.files_listed:
            return "cold tier: stopped before its first file: forget again erases their orders there"
        left = cold.files_listed - cold.files_read
        return (
            f"cold tier: stopped after {cold.files_read} of {plural(cold.files_listed, 'file')} read: "
            f"at least {cold.orders} of their orders in {plural(cold.files, 'file')}, {cold.erased} holding "
            f"personal data; {plural(cold.rewritten, 'file')} rewritten, {cold.to_rewrite - cold.rewritten} "
            f"more found holding it not yet; {plural(left, 'file')} not read: forget again erases the rest"
        )

    def _unerased_lines(self) -> list[str]:
        lines = []
        if self.unmarked:
            lines.append(
                f"{self.person.name} {self.person.id}: {plural(len(self.unmarked), 'archived order')} erased "
                "without the erasure's marks (forgotten_at, forgotten_by): the archive document, within "
                f"bytes of 16 MB, has no room for them; their personal data is gone: {_shown(self.unmarked)}"
            )
        if self.unerased:
            lines.append(
                f"{self.person.name} {self.person.id}: {plural(len(self.unerased), 'archived order')} NOT erased: "
                "the archive document is too large to take the erasure (within bytes of 16 MB): "
                f"{_shown(self.unerased)} (exit 3)"
            )
        return lines

    def _archive_lines(self) -> list[str]:
        verb = "erased" if self.run else "would erase (dry run: --run to erase)"
        who = f"{self.person.name} {self.person.id}"
        what = (
            "the name and every undeclared order field"
            if self.person.kind == COURIER
            else "the name, e-mail, phone, delivery address and every undeclared order field"
        )
        remembered = [f"{who}: remembered as forgotten: no later write brings it back"] if self.run else []
        if not self.found:
            other = (
                "courier's id? forget --courier"
                if self.person.kind == CLIENT
                else "client's id? forget --client"
            )
            collection = "Livreur" if self.person.kind == COURIER else "Client"
            return [
                f"{who}: not found: no archived order and no {collection} document with this _id (a {other}); "
                "nothing recorded (exit 3)"
            ]
        # The first line counts the cold tier's orders too (it said "no archived order" of a
        # client whose 12 orders were all in the cold tier: a new user's try); its line follows.
        in_cold = self.cold.orders if self.cold is not None else 0
        # A count a stop ended (the files left unread not counted): at least that many.
        cold_count = f"at least {in_cold}" if self.cold_partial else str(in_cold)
        if not self.orders:
            none = (
                f"no order in the archive collection, {cold_count} in the cold tier"
                if in_cold or self.cold_partial
                else "no archived order"
            )
            return [f"{who}: {none}", *remembered]
        archived = plural(self.orders, "archived order")
        there = ""  # the counts that follow are the archive collection's: said so beside the cold tier's
        if in_cold or self.cold_partial:
            archived, there = (
                f"{archived} in the archive collection and {cold_count} in the cold tier",
                " there",
            )
        if not self.erased:
            return [f"{who}: {archived}, no personal data left to erase{there}", *remembered]
        return [f"{who}: {archived}; {verb} {what} of {self.erased}{there}", *remembered]


def _shown(numbers: list[str]) -> str:
    return ", ".join(numbers[:5]) + (", ..." if len(numbers) > 5 else "")


def forget_person(
    client: MongoClient[Document],
    settings: Settings,
    person: Person,
    *,
    run: bool = False,
    context: RunContext | None = None,
    archive_client: MongoClient[Document] | None = None,
    limits: CommandLimits = NO_COMMAND_LIMITS,
) -> ForgetReport:
    """``limits`` (#34): each chunk of the archive's erasure meets them (``context.gate``); a
    limit ends it before a chunk (exit 0, ``ended`` said), the person recorded already: every
    later write respects the record, and forget again erases the rest (and the cold tier's)."""
    check_deployments(client, settings, archive_client)
    collections = Collections.of(client, settings, archive_client)
    # A typo in MONGODB_DATABASE: the person recorded forgotten there holds nowhere it is needed.
    if problem := (context or RunContext()).retrying(lambda: missing_source(collections.orders)):
        raise ConfigError(problem)
    report = ForgetReport(person, run)
    stop = (context or RunContext()).stop
    throttle = limits.throttle((client, archive_client), stop, report.limits)
    on_archive = replace(context or RunContext(), gate=throttle).on(collections.archive_side)
    erasure = person.erasure(settings)
    with on_archive.named():
        report.orders, report.erased = count_holding(
            collections.archive, person.orders(), erasure, on_archive
        )
    if not report.orders:
        report.found = _in_the_source(
            collections, settings, person, on_archive.on(collections.source_side)
        ) or bool(
            (cold := _in_the_cold_tier(collections, settings, person, erasure, False, on_archive))
            and cold.orders
        )
    with on_archive.named():
        if run and report.found:
            cold_tier = settings.archive_cold_url is not None
            _erased(collections, person, erasure, on_archive, throttle, report, cold_tier)
        # After the record: a move to the cold tier that starts now writes their orders erased.
        # Not after a limit ended the erasure: the cold tier's is the next forget's.
        cold_run = run and report.found and report.limits.ended is None and not on_archive.stopped
        # A move's deletes it settles first meet them, and each file it rewrites: a signal or a
        # limit ends it between two files, the counts so far said (``report.cold``).
        with throttle.until_a_limit(report.limits), suppress(Interrupted), _said_unfinished(report, cold_run):
            report.cold = _in_the_cold_tier(
                collections, settings, person, erasure, cold_run, on_archive, report
            )
        if cold_run and report.cold is not None and report.cold.complete:
            # Every cold file rewritten: the record no longer says the erasure is unfinished.
            ForgottenPersons(collections.forgotten, on_archive).finished(person.kind, person.id)
    report.limits.settle(on_archive.stopped)
    log.info(
        "forget: %s %s: %s, %d %s",
        person.name,
        person.id,
        plural(report.orders, "archived order") if report.found else "not found: no archived order",
        report.erased,
        "erased" if run else "to erase (dry run)",
    )
    return report


@contextmanager
def _said_unfinished(report: ForgetReport, cold_run: bool) -> Iterator[None]:
    """A cold tier's erasure that fails after the person was recorded and the archive erased (its
    storage unreachable, refusing, its folder gone): the error, of its kind (its exit code), says
    that too and what finishes it; before that (a dry run, a count) it is raised as it is."""
    try:
        yield
    except Exception as exc:
        error = exc if isinstance(exc, ArchiverError) else storage_error(exc)
        if not cold_run or error is None:
            raise
        raise type(error)(f"{error}; {report.unfinished_in_cold()}") from exc


def _erased(
    collections: Collections,
    person: Person,
    erasure: Erasure,
    context: RunContext,
    throttle: Throttle,
    report: ForgetReport,
    cold_tier: bool = False,
) -> None:
    """The person recorded, then their archived orders erased, a chunk at a time under the
    limits (a stop file there already: nothing written, as batch). The record says the erasure
    unfinished in the archive until that walk ran to its end (``archive_finished``) and, with a
    ``cold_tier``, in the cold tier until every cold file is rewritten (``finished``): a forget
    ended before then leaves ``status`` a problem to name, and batch --run or forget again
    finishes it."""
    if (limit := throttle.limits.reached()) is not None:
        report.limits.ended = limit
        return
    # Recorded first: a write of the archive that starts after this respects it, and one
    # under way looks again after it writes (storage.ArchiveWriter).
    ForgottenPersons(collections.forgotten, context).record(
        person.kind, person.id, erasure.at, cold_pending=cold_tier
    )
    with throttle.until_a_limit(report.limits):
        erased = erase_personal_data(collections.archive, person.orders(), erasure, context=context)
        report.unerased, report.unmarked = erased.unerased, erased.unmarked
    # Cleared after the walk's last chunk only: not after a limit or a signal ended it midway, nor
    # with an order too large to take the erasure (its data still there).
    if report.limits.ended is None and not context.stopped and not report.unerased:
        ForgottenPersons(collections.forgotten, context).archive_finished(person.kind, person.id)


def _in_the_cold_tier(
    collections: Collections,
    settings: Settings,
    person: Person,
    erasure: Erasure,
    run: bool,
    context: RunContext,
    report: ForgetReport | None = None,
) -> ColdErasure | None:
    """Their orders in the cold tier, counted, and with ``run`` erased (each file holding some
    rewritten), into ``report.cold`` as it goes; None without a cold tier. With ``report`` (after
    the archive's erasure) the reads of a count meet the run's limits and a signal a file at a
    time (``rewrite.read_boundary``): one that ended the erasure leaves the cold tier unread."""
    store = cold_store(settings, context)
    if store is None:
        return None
    query = (
        ColdQuery(courier_id=person.forms) if person.kind == COURIER else ColdQuery(client_id=person.forms)
    )
    counts = ColdErasure()
    if not run:
        bounded = (lambda: read_boundary(context)) if report is not None else (lambda: None)
        return erase_in_cold(
            store,
            collections.checkpoints,
            query,
            erasure,
            run=False,
            context=context,
            report=counts,
            boundary=bounded,
        )
    with cold_tier_writer(collections, settings, context):  # no move nor other rewrite meanwhile
        if report is not None:  # from here on: a wait for the lease a limit ended counted nothing
            report.cold = counts
        return erase_in_cold(
            store, collections.checkpoints, query, erasure, run=True, context=context, report=counts
        )


def _in_the_source(collections: Collections, settings: Settings, person: Person, context: RunContext) -> bool:
    """Whether the source's Client (Livreur) collection holds the person: an id found neither
    there nor in the archive is a typo, or another kind of person's."""
    name = settings.couriers_collection if person.kind == COURIER else settings.clients_collection
    references = collections.orders_primary.database[name]
    found = context.retrying(lambda: references.find_one({"_id": person.id}, {"_id": 1}))
    return found is not None
