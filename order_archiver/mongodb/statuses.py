"""The source's status values that read as DELIVERED_STATUS but are not it: ``Livrée``,
``livree``, `` livrée `` for ``livrée`` (``enrichment.is_near_miss``). An order holding one is
never archived, as DELIVERED_STATUS is exact (the operator decides what is delivered); status,
doctor and batch say which values, on how many orders, and what to do.

Bounded whatever the history: the values come from one ``distinct`` on ``status``, which MongoDB
serves from the ``{status, date_commande}`` index with a DISTINCT_SCAN (one index seek per
value, not one key per order: the "fast distinct" of jstests/core/distinct_index1.js); the first
``STATUS_VALUES_LOOKED_AT`` are looked at, the first ``NEAR_MISSES_COUNTED`` near misses counted
on the same index, each count stopped at ``ORDERS_COUNTED_AT_MOST`` (a count with a limit).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from order_archiver.context import RunContext
from order_archiver.documents import MongoCollection, mapping_or_empty
from order_archiver.errors import FatalError
from order_archiver.logs import plural
from order_archiver.mongodb.indexes import listed_indexes
from order_archiver.orders.enrichment import is_near_miss
from order_archiver.retry import Retry

STATUS_VALUES_LOOKED_AT = 1000  # distinct status values looked at (a status is a short list)
NEAR_MISSES_COUNTED = 10  # near-miss values counted and named; the others only numbered
ORDERS_COUNTED_AT_MOST = 10_000  # a near miss's orders counted up to this many: "at least"


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
    """The source's status values read (one distinct scan of an index led by ``status``), then
    ``near_misses``. Informative reads (``Retry.INFORM``): a server that refuses them, a fault
    that outlasts their retries, or no such index (``StatusIndexMissing``) raise an
    ``ArchiverError``: the caller says "not checked" and goes on, whatever else it did."""
    listed = context.retrying(lambda: listed_indexes(orders), purpose=Retry.INFORM)
    if not any(ready and _led_by_status(spec) for spec, ready in listed):
        raise StatusIndexMissing(
            "no index on the orders is led by status yet (batch --run builds {status, date_commande}): "
            "reading their status values would read every order"
        )
    values = context.retrying(lambda: orders.distinct("status"), purpose=Retry.INFORM)
    return near_misses(orders, delivered_status, values, context)


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
