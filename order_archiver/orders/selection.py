"""Which orders a run selects: the source filter of a date window, the keyset step across
BSON types, the window test for dates only Python can read. Pure functions, no server."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bson import Binary, ObjectId, Regex
from bson.decimal128 import Decimal128
from bson.timestamp import Timestamp

from order_archiver.errors import ConfigError
from order_archiver.orders.enrichment import status_match


def build_selection(
    delivered_status: str,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    after_id: Any = None,
    *,
    delivered_since: datetime | None = None,
    also_ids: Sequence[Any] = (),
    delivered_before: datetime | None = None,
) -> dict[str, Any]:
    """The source filter: delivered orders in ``[date_from, date_to)``, after ``after_id``;
    with ``delivered_since`` (an incremental pass) only those whose ``date_livraison`` is at
    or after it, and the orders ``also_ids`` (the rejects list) whatever their stamp.

    ``date_commande`` stored as a string (dirty data) cannot be compared on the server to a
    date; such orders are selected whatever their text, and ``in_window`` decides once the
    date is parsed. A ``date_livraison`` missing or stored as a string is left to full passes.
    With ``delivered_before`` (the purge under PURGE_AFTER) only those delivered before it: one
    with no readable stamp is never old enough, and stays.
    """
    selection: dict[str, Any] = {"status": status_match(delivered_status)}
    clauses: list[dict[str, Any]] = []
    bounds = date_range(date_from, date_to)
    if bounds:
        clauses.append({"$or": [{"date_commande": bounds}, {"date_commande": {"$type": "string"}}]})
    if delivered_since is not None:
        recent: dict[str, Any] = {"date_livraison": {"$gte": delivered_since}}
        clauses.append({"$or": [recent, {"_id": {"$in": list(also_ids)}}]} if also_ids else recent)
    if delivered_before is not None:
        clauses.append({"date_livraison": {"$lt": delivered_before}})
    if after_id is not None:
        clauses.append(ids_after(after_id))
    if len(clauses) == 1:
        selection.update(clauses[0])
    elif clauses:
        selection["$and"] = clauses
    return selection


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


def ids_after(last: Any) -> dict[str, Any]:
    """``_id`` after ``last`` in ``_id`` order, *across* types. ``{$gt: last}`` alone compares
    within ``last``'s type only (type bracketing): a keyset walk that reached a string ``_id``
    (dirty data) would end there and never see the ObjectIds, which sort after strings."""
    later = [
        {"_id": {"$type": alias}}
        for group in _BSON_TYPE_ORDER[_bson_type_rank(last) + 1 :]
        for alias in group
    ]
    after: dict[str, Any] = {"_id": {"$gt": last}}
    return {"$or": [after, *later]} if later else after


def date_range(date_from: datetime | None, date_to: datetime | None) -> dict[str, Any]:
    """``{$gte: from, $lt: to}`` with the bounds that are given (empty: no window)."""
    bounds: dict[str, Any] = {}
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
