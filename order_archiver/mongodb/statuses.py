"""The source's status values that read as DELIVERED_STATUS but are not it: ``Livrée``,
``livree``, `` livrée `` for ``livrée`` (``enrichment.is_near_miss``). An order holding one is
never archived, as DELIVERED_STATUS is exact (the operator decides what is delivered); status,
doctor and batch say which values, on how many orders, and what to do.

Bounded whatever the history: the values come from one ``distinct`` on ``status``, which MongoDB
serves from the ``{status, date_commande}`` index with a DISTINCT_SCAN (one index seek per
value, not one key per order: the "fast distinct" of jstests/core/distinct_index1.js); the first
``STATUS_VALUES_LOOKED_AT`` are looked at, the first ``NEAR_MISSES_COUNTED`` near misses counted
on the same index, each count stopped at ``ORDERS_COUNTED_AT_MOST`` (a count with a limit).

No order at all with DELIVERED_STATUS (``delivered`` set, ``livrée`` stored) reads the same
``distinct``: the value is none of them. That is a first day too (nothing delivered yet), so it
is a fault only when the statuses present hold a delivered order: one with a ``date_livraison``
(the contract's "present once delivered"), or a near miss. Asked of the first
``STATUSES_NAMED`` values only, one ``find_one`` each on the ``{status, date_livraison}`` index.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from order_archiver.context import RunContext
from order_archiver.documents import MongoCollection, mapping_or_empty
from order_archiver.errors import FatalError
from order_archiver.logs import plural
from order_archiver.mongodb.indexes import listed_indexes
from order_archiver.orders.enrichment import is_near_miss, status_forms
from order_archiver.retry import Purpose, Retry

STATUS_VALUES_LOOKED_AT = 1000  # distinct status values looked at (a status is a short list)
NEAR_MISSES_COUNTED = 10  # near-miss values counted and named; the others only numbered
ORDERS_COUNTED_AT_MOST = 10_000  # a near miss's orders counted up to this many: "at least"
STATUSES_NAMED = 12  # no order with DELIVERED_STATUS: the values named, each asked for a delivery


@dataclass(frozen=True)
class NearMiss:
    """One status value that reads as DELIVERED_STATUS, and the orders holding it."""

    status: str
    orders: int  # counted up to ORDERS_COUNTED_AT_MOST
    more: bool = False  # more orders than ``orders`` hold it: not counted further

    def text(self) -> str:
        # Composed or decomposed, 'Livrée' prints alike: say which one this is.
        form = "" if unicodedata.is_normalized("NFC", self.status) else ", decomposed (NFD)"
        return f"{self.status!r} ({'at least ' if self.more else ''}{plural(self.orders, 'order')}{form})"


@dataclass(frozen=True)
class NearMisses:
    """The near misses of ``delivered_status`` found among the source's status values."""

    delivered_status: str
    found: tuple[NearMiss, ...] = ()
    uncounted: int = 0  # near-miss values past NEAR_MISSES_COUNTED: neither counted nor named
    values_more: bool = False  # the source holds more than STATUS_VALUES_LOOKED_AT values

    def line(self) -> str | None:
        """What an operator reads, or None when no value is a near miss."""
        if not self.found:
            return None
        shown = ", ".join(miss.text() for miss in self.found)
        others = f" and {plural(self.uncounted, 'other value')}" if self.uncounted else ""
        among = f" (among the first {STATUS_VALUES_LOOKED_AT} status values)" if self.values_more else ""
        return (
            f"never archived: orders whose status differs from DELIVERED_STATUS {self.delivered_status!r} "
            f"only by case, accents or spaces (it is matched exactly): {shown}{others}{among}; "
            "fix the status at the source, or set DELIVERED_STATUS to the value they mean"
        )


def near_misses(
    orders: MongoCollection, delivered_status: str, values: Sequence[object], context: RunContext
) -> NearMisses:
    """The near misses among ``values`` (the source's ``distinct("status")``), each counted."""
    looked_at = values[:STATUS_VALUES_LOOKED_AT]
    misses = [value for value in looked_at if is_near_miss(value, delivered_status)]
    found = tuple(_counted(orders, str(value), context) for value in misses[:NEAR_MISSES_COUNTED])
    return NearMisses(
        delivered_status,
        found,
        uncounted=len(misses) - len(found),
        values_more=len(values) > STATUS_VALUES_LOOKED_AT,
    )


class StatusIndexMissing(FatalError):
    """No ready index on the source is led by ``status``: the values are not read (a distinct
    would then read every order, on a collection of millions: the caller says "not checked")."""


def read_near_misses(orders: MongoCollection, delivered_status: str, context: RunContext) -> NearMisses:
    """The source's status values read (``read_status_values``), then ``near_misses``."""
    return near_misses(orders, delivered_status, read_status_values(orders, context), context)


def read_status_values(orders: MongoCollection, context: RunContext) -> list[object]:
    """The source's status values (one distinct scan of an index led by ``status``). Informative
    reads (``Retry.INFORM``): a server that refuses them, a fault that outlasts their retries, or
    no such index (``StatusIndexMissing``) raise an ``ArchiverError``: the caller says "not
    checked" and goes on, whatever else it did."""
    listed = context.retrying(lambda: listed_indexes(orders), purpose=Retry.INFORM)
    if not any(ready and _led_by_status(spec) for spec, ready in listed):
        raise StatusIndexMissing(
            "not checked yet: no index on the orders is led by status (batch --run builds "
            "{status, date_commande}; without it, reading the status values would read every order)"
        )
    return list(context.retrying(lambda: orders.distinct("status"), purpose=Retry.INFORM))


def _led_by_status(spec: Mapping[str, object]) -> bool:
    return next(iter(mapping_or_empty(spec.get("key"))), None) == "status"


def _counted(orders: MongoCollection, status: str, context: RunContext) -> NearMiss:
    # An equality on the index's first field: a count of index keys, stopped one past the bound.
    counted = int(
        context.retrying(
            lambda: orders.count_documents({"status": status}, limit=ORDERS_COUNTED_AT_MOST + 1),
            purpose=Retry.INFORM,
        )
    )
    return NearMiss(status, min(counted, ORDERS_COUNTED_AT_MOST), more=counted > ORDERS_COUNTED_AT_MOST)


@dataclass(frozen=True)
class DeliveredAbsent:
    """No order holds DELIVERED_STATUS, in any stored form, while the source holds orders."""

    delivered_status: str
    present: tuple[str, ...]  # the source's status values, the first STATUSES_NAMED
    # Of those, the values an order delivered holds (a date_livraison), or that read as it.
    delivered_under: tuple[str, ...] = ()
    more: bool = False  # more values than STATUSES_NAMED: not named, not asked
    # The newest archived order holds DELIVERED_STATUS: the delivered orders have left the
    # source (--purge-source), the setting is the one they were archived under.
    archived_under_it: bool = False

    @property
    def alarm(self) -> bool:
        """Nothing can ever be archived: delivered orders are there, under another status. Without
        one (no delivery date anywhere) it is the source's first day, not a fault; with the newest
        archived order under DELIVERED_STATUS, a purged source (an order cancelled after its
        delivery keeps its date), not a fault either."""
        return bool(self.delivered_under) and not self.archived_under_it

    def line(self) -> str:
        shown = ", ".join(repr(value) for value in self.present) + (" and more" if self.more else "")
        if self.archived_under_it:
            return (
                f"no order in the source has DELIVERED_STATUS {self.delivered_status!r}, the newest "
                f"archived order has it: the delivered orders have left the source (the statuses "
                f"present: {shown})"
            )
        if not self.alarm:
            return (
                f"no order has DELIVERED_STATUS {self.delivered_status!r} yet, nor any a date_livraison: "
                f"nothing is delivered yet (the statuses present: {shown})"
            )
        held = ", ".join(repr(value) for value in self.delivered_under)
        return (
            f"no order has DELIVERED_STATUS {self.delivered_status!r}, so nothing is ever archived, "
            f"while delivered orders (a date_livraison, or a near miss) hold {held}: set "
            f"DELIVERED_STATUS to the value that means delivered (the statuses present: {shown})"
        )


NewestRead = Callable[[], Mapping[str, object] | None]  # the archive's newest document, or None


@dataclass
class NewestArchived:
    """The archive's newest document by ``archived_at`` (its status and its ``archived_at``): the
    ``{archived_at}`` index's last key, one seek, or a scan of the archive while that index is
    not built. Read once, however many ask (status: its newest archived_at, and a purged
    source's delivered status)."""

    archive: MongoCollection
    context: RunContext
    purpose: Purpose = Retry.INFORM  # status reads it as a command of its own: its newest archived_at
    _found: list[Mapping[str, object] | None] = field(default_factory=list)  # [] until read

    def __call__(self) -> Mapping[str, object] | None:
        if not self._found:
            self._found.append(
                self.context.retrying(
                    lambda: self.archive.find_one(
                        {}, {"status": 1, "archived_at": 1}, sort=[("archived_at", -1)]
                    ),
                    purpose=self.purpose,
                )
            )
        return self._found[0]


def delivered_absent(
    orders: MongoCollection,
    delivered_status: str,
    values: Sequence[object],
    context: RunContext,
    newest: NewestRead | None = None,
) -> DeliveredAbsent | None:
    """Whether no order holds DELIVERED_STATUS while ``values`` (the source's ``distinct("status")``)
    are there, and which of them delivered orders hold; None when one holds it, or when there is
    no value at all (an empty source). With the archive's ``newest`` document (``NewestArchived``,
    on the same deployment or not), under DELIVERED_STATUS it says a purged source, not a wrong
    setting: a setting changed to a wrong value since is still caught (the newest then holds
    the old one)."""
    forms = status_forms(delivered_status)
    if not values or any(value in forms for value in values):
        return None
    named = values[:STATUSES_NAMED]
    under = tuple(
        str(value)
        for value in named
        if is_near_miss(value, delivered_status) or _holds_a_delivery(orders, value, context)
    )
    archived = bool(under) and newest is not None and _newest_holds(newest, forms)
    present = tuple(str(value) for value in named)
    return DeliveredAbsent(delivered_status, present, under, len(values) > STATUSES_NAMED, archived)


def _newest_holds(newest: NewestRead, forms: list[str]) -> bool:
    found = newest()
    return found is not None and found.get("status") in forms


def _holds_a_delivery(orders: MongoCollection, status: object, context: RunContext) -> bool:
    # An equality and a range of the {status, date_livraison} index: one seek, the first key.
    found = context.retrying(
        lambda: orders.find_one({"status": status, "date_livraison": {"$ne": None}}, {"_id": 1}),
        purpose=Retry.INFORM,
    )
    return found is not None
