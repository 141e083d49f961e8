"""Which orders a run selects: the source filter of a date window, the keyset step across
BSON types, the window test for dates only Python can read. Pure functions, no server."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import bson
from bson import Binary, ObjectId, Regex
from bson.decimal128 import Decimal128
from bson.timestamp import Timestamp

from order_archiver.documents import OrderId
from order_archiver.errors import ConfigError
from order_archiver.orders.enrichment import as_utc, status_match

T = TypeVar("T")


def build_selection(
    delivered_status: str,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    after_id: OrderId = None,
    *,
    delivered_since: datetime | None = None,
    among_ids: Sequence[OrderId] | None = None,
    delivered_before: datetime | None = None,
) -> dict[str, object]:
    """The source filter: delivered orders in ``[date_from, date_to)``, after ``after_id``;
    with ``delivered_since`` (an incremental pass) only those whose ``date_livraison`` is at
    or after it; with ``among_ids`` only those (a bounded chunk: the caller cuts the list,
    see ``IdList``: a command over 16 MB is refused by the driver).

    ``date_commande`` stored as a string (dirty data) cannot be compared on the server to a
    date; such orders are selected whatever their text, and ``in_window`` decides once the
    date is parsed. A ``date_livraison`` missing or stored as a string is left to full passes.
    With ``delivered_before`` (the purge under PURGE_AFTER) only those delivered before it: one
    with no readable stamp is never old enough, and stays.
    """
    selection: dict[str, object] = {"status": status_match(delivered_status)}
    clauses: list[dict[str, object]] = []
    bounds = date_range(date_from, date_to)
    if bounds:
        clauses.append({"$or": [{"date_commande": bounds}, {"date_commande": {"$type": "string"}}]})
    if delivered_since is not None:
        clauses.append({"date_livraison": {"$gte": delivered_since}})
    if among_ids is not None:
        clauses.append({"_id": {"$in": list(among_ids)}})
    if delivered_before is not None:
        clauses.append({"date_livraison": {"$lt": delivered_before}})
    if after_id is not None:
        clauses.append(ids_after(after_id))
    if len(clauses) == 1:
        selection.update(clauses[0])
    elif clauses:
        selection["$and"] = clauses
    return selection


ID_CHUNK = 1000  # ids per command: 1,000 ObjectIds are ~19 KB of it, far under 16 MB


@dataclass(frozen=True)
class IdList:
    """Ids a pass reads besides its selection (the orders changed since the last pass, the
    rejects list): unique, in ``_id`` order, and handed to the server a bounded slice at a
    time. One ``$in`` of them all grows with the changes: past ~850,000 ObjectIds it is a
    command over 16 MB (+16 KiB) that the driver refuses (``DocumentTooLarge``, before
    sending). The list itself is held in memory: a million ObjectIds take ~50 MB (measured:
    docs/performance.md)."""

    ids: tuple[OrderId, ...] = ()

    @classmethod
    def of(cls, ids: Iterable[OrderId]) -> IdList:
        unique = list(dict.fromkeys(ids))
        object_ids = [one for one in unique if type(one) is ObjectId]
        if len(object_ids) == len(unique):
            return cls(tuple(sorted(object_ids)))  # the common case, without a key per id
        return cls(tuple(sorted(unique, key=id_order_key)))

    def __bool__(self) -> bool:
        return bool(self.ids)

    def start(self, after_id: OrderId) -> int:
        """Where the ids after ``after_id`` begin (None: all of them)."""
        if after_id is None:
            return 0
        return bisect.bisect_right(self.ids, id_order_key(after_id), key=id_order_key)

    def following(self, after_id: OrderId, count: int) -> tuple[OrderId, ...]:
        """The next ``count`` ids after ``after_id``."""
        first = self.start(after_id)
        return self.ids[first : first + count]

    def without(self, items: Iterable[T], id_of: Callable[[T], OrderId]) -> Iterator[T]:
        """``items`` (in ``_id`` order) but those whose ``_id`` is one of these: one walk of both,
        nothing held but a place in this list."""
        ids, at = self.ids, 0
        for item in items:
            one = id_of(item)
            while at < len(ids) and _compared(ids[at], one) < 0:
                at += 1
            if at == len(ids) or _compared(ids[at], one) != 0:
                yield item

    def chunks(self, after_id: OrderId, size: int | None = None) -> Iterator[tuple[OrderId, ...]]:
        """The ids after ``after_id``, ``size`` (``ID_CHUNK``) at a time."""
        size = size or ID_CHUNK
        for first in range(self.start(after_id), len(self.ids), size):
            yield self.ids[first : first + size]


# BSON's order of types for comparisons and sorts (numbers together, strings and symbols
# together): https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/
_BSON_TYPE_ORDER: tuple[tuple[str, ...], ...] = (
    ("null",),
    ("int", "long", "double", "decimal"),
    ("string", "symbol"),
    ("object",),
    ("binData",),
    ("objectId",),
    ("bool",),
    ("date",),
    ("timestamp",),
    ("regex",),
)


# Python types by their rank in _BSON_TYPE_ORDER; bool before int (a bool is an int).
_RANK_BY_TYPE: tuple[tuple[type | tuple[type, ...], int], ...] = (
    (bool, 6),
    ((int, float, Decimal128), 1),
    (str, 2),
    (dict, 3),
    ((bytes, Binary), 4),
    (ObjectId, 5),
    (datetime, 7),
    (Timestamp, 8),
    ((Regex, re.Pattern), 9),
)


def _bson_type_rank(value: Any) -> int:
    if value is None:
        return 0
    return next((rank for kinds, rank in _RANK_BY_TYPE if isinstance(value, kinds)), len(_BSON_TYPE_ORDER))


def _compared(one: OrderId, other: OrderId) -> int:
    """-1, 0 or 1 as MongoDB sorts the two ``_id``s (ObjectIds, the usual ids, compared as they are)."""
    if type(one) is ObjectId and type(other) is ObjectId:
        return -1 if one < other else int(one != other)
    first, second = id_order_key(one), id_order_key(other)
    return -1 if first < second else int(first != second)


def id_order_key(value: Any) -> tuple[int, Any]:
    """A sort key that orders ``_id`` values as MongoDB sorts them (BSON's comparison order):
    by type, then by value. Exact for the ids an order has (ObjectIds; strings, numbers, dates
    in dirty data); documents, binary data and regexes are ordered among themselves by their
    BSON bytes, an approximation of MongoDB's order for ids no order should have."""
    rank = _bson_type_rank(value)
    within: Callable[[Any], Any] = _ORDER_WITHIN_TYPE.get(rank, _by_bson_bytes)
    return rank, within(value)


def _by_bson_bytes(value: Any) -> bytes:
    try:
        return bson.encode({"": value})
    except (TypeError, bson.InvalidDocument):
        return repr(value).encode()


def _as_number(value: Any) -> float:
    try:
        return float(value.to_decimal() if isinstance(value, Decimal128) else value)
    except (ValueError, OverflowError, ArithmeticError):
        return float("nan")


def _nothing(_: Any) -> int:
    return 0


def _object_id_bytes(value: ObjectId) -> bytes:
    return value.binary


def _timestamp_parts(value: Timestamp) -> tuple[int, int]:
    return value.time, value.inc


_ORDER_WITHIN_TYPE: dict[int, Callable[[Any], Any]] = {
    0: _nothing,
    1: _as_number,
    2: str,
    5: _object_id_bytes,
    6: bool,
    7: as_utc,
    8: _timestamp_parts,
}


def ids_after(last: Any) -> dict[str, object]:
    """``_id`` after ``last`` in ``_id`` order, *across* types. ``{$gt: last}`` alone compares
    within ``last``'s type only (type bracketing): a keyset walk that reached a string ``_id``
    (dirty data) would end there and never see the ObjectIds, which sort after strings."""
    later = [
        {"_id": {"$type": alias}}
        for group in _BSON_TYPE_ORDER[_bson_type_rank(last) + 1 :]
        for alias in group
    ]
    after: dict[str, object] = {"_id": {"$gt": last}}
    return {"$or": [after, *later]} if later else after


def date_range(date_from: datetime | None, date_to: datetime | None) -> dict[str, object]:
    """``{$gte: from, $lt: to}`` with the bounds that are given (empty: no window)."""
    bounds: dict[str, object] = {}
    if date_from is not None:
        bounds["$gte"] = date_from
    if date_to is not None:
        bounds["$lt"] = date_to
    return bounds


def in_window(when: datetime, date_from: datetime | None, date_to: datetime | None) -> bool:
    return (date_from is None or when >= date_from) and (date_to is None or when < date_to)


def check_window(date_from: datetime | None, date_to: datetime | None) -> None:
    """Reject an empty window before anything runs."""
    if date_from is not None and date_to is not None and date_from >= date_to:
        raise ConfigError(
            f"--date-from ({date_from.isoformat()}) must be before --date-to ({date_to.isoformat()})"
        )
