"""Comparisons with a date, a string, a number or a boolean, as MongoDB makes them (see
``devserver.py``; shown in ``teststand/tests/test_comparisons.py``).

MongoDB (the manual's "Comparison/Sort Order" and "Type Bracketing"): a comparison operator
(``$eq``, ``$gt``, ``$gte``, ``$lt``, ``$lte``) matches a field only where the field's value is of
the operand's type (numbers of every kind form one type), or, for an array, where one of its
elements is; dates compare to the millisecond. ``{d: {$lt: ISODate(...)}}`` matches no string,
however date-like, and ``{n: {$gt: 4}}`` no string, boolean nor document.

nx-27017 compares in SQL (neosqlite), by SQLite's rules:
- a date operand compares ``datetime(COALESCE(field.$date, field))``: a string that reads as a
  date matches (an order whose ``date_livraison`` is the text "2020-01-01" is "delivered before"
  a date), and ``datetime()`` keeps whole seconds, so ``{d: D}`` matches every date of D's second
  and ``{d: {$gt: D}}`` none of them (a keyset walk on a date repeats or skips orders);
- a string that reads as a date is taken for a date (it matches dates);
- a number or string operand compares ``json_extract(field)`` as it comes: text sorts after
  every number in SQLite (every string is ``$gt: 4``), a document or an array is compared as its
  JSON text, a boolean as 0 or 1.

Fixed here: each such comparison (a field's operator, or a field equal to a date) is built
as MongoDB's: the stored value of the operand's type (a date: neosqlite's ``{"$date": ISO}``,
compared with ``julianday``, whose precision keeps milliseconds), or an array holding one
(``json_each``). The rest of the filter is built as neosqlite builds it. Operands of other types
(null, ObjectId, documents, arrays, Decimal128) are left as they were: the product compares
dates, and ``_id`` ObjectIds (``devserver._fix_objectid_range_selections``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from operator import ge, gt, le, lt
from typing import Any

import neosqlite.query_operators as neo_operators
from neosqlite.collection.json_path_utils import parse_json_path
from neosqlite.collection.query_helper import QueryHelper
from neosqlite.collection.sql_translator_unified import SQLOperatorTranslator

_SQL_OPERATORS = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_DATE_KEY = '"$date"'  # neosqlite stores a date as {"$date": "2026-05-01T10:00:00.123000"}
_FIELD_ACCESS = re.compile(r"^json_extract\(data, '(\$[^']*)'\)$")


def _kind(value: Any) -> str | None:
    """The operand's type, as MongoDB brackets it (None: not one this module builds)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "date"
    return None


def _bound(value: Any) -> Any:
    """The operand as SQLite binds it: a date as its UTC text (a naive one is UTC, as pymongo
    sends it), a boolean as JSON's 0 or 1."""
    if isinstance(value, datetime):
        utc = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        return utc.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


def _one_value(kind: str, type_sql: str, value_sql: str, date_sql: str, operator: str) -> str:
    """One stored value (a field's, or an array element's) of ``kind`` compared with ``?``."""
    if kind == "date":
        return f"({type_sql} = 'object' AND julianday({date_sql}) {operator} julianday(?))"
    types = {"number": "'integer', 'real'", "string": "'text'", "bool": "'true', 'false'"}[kind]
    return f"({type_sql} IN ({types}) AND {value_sql} {operator} ?)"


def comparison(path: str, operator: str, value: Any) -> tuple[str, list[Any]] | None:
    """``{field: {operator: value}}`` as SQL over ``data`` (``path``: ``$.a.b``), MongoDB's
    answer; None for an operand or operator this module does not build."""
    kind, sql_operator = _kind(value), _SQL_OPERATORS.get(operator)
    if kind is None or sql_operator is None or (operator == "$eq" and kind != "date"):
        return None  # an equality with a string or a number: neosqlite's, on its index
    date_path = f"{path}.{_DATE_KEY}"
    scalar = _one_value(
        kind,
        f"json_type(data, '{path}')",
        f"json_extract(data, '{path}')",
        f"json_extract(data, '{date_path}')",
        sql_operator,
    )
    element = _one_value(kind, "e.type", "e.value", f"json_extract(e.value, '$.{_DATE_KEY}')", sql_operator)
    in_array = (
        f"(json_type(data, '{path}') = 'array' AND EXISTS "
        f"(SELECT 1 FROM json_each(data, '{path}') AS e WHERE {element}))"
    )
    return f"({scalar} OR {in_array})", [_bound(value), _bound(value)]


def _field_comparisons(field: str, value: Any) -> tuple[list[tuple[str, list[Any]]], Any] | None:
    """The comparisons of ``{field: value}`` built here, and what is left of ``value`` for
    neosqlite (None when nothing is left); None when none is built here."""
    if field.startswith("$") or field == "_id":
        return None
    path = parse_json_path(field)
    if isinstance(value, datetime):
        built = comparison(path, "$eq", value)
        return ([built], None) if built is not None else None
    if not isinstance(value, dict) or "$options" in value:
        return None
    built_here = {op: comparison(path, op, operand) for op, operand in value.items()}
    done = [clause for clause in built_here.values() if clause is not None]
    if not done:
        return None
    rest = {op: operand for op, operand in value.items() if built_here[op] is None}
    return done, (rest or None)


def _fix_find_clauses() -> None:
    """A find's (and an update's, a delete's, a count's) field clauses (``_build_field_clause``)."""
    original = QueryHelper._build_field_clause

    @functools.wraps(original)
    def build_field_clause(self: Any, field: str, value: Any) -> Any:
        split = _field_comparisons(field, value) if self.jsonb.json_function_prefix == "json" else None
        if split is None:
            return original(self, field, value)
        done, rest = split
        clauses = [sql for sql, _ in done]
        params = [param for _, bound in done for param in bound]
        if rest is not None:
            built = original(self, field, rest)
            if built is None:
                return None
            clauses.append(built[0])
            params += list(built[1])
        return " AND ".join(clauses), params

    QueryHelper._build_field_clause = build_field_clause


def _path_of(field_access: str) -> str | None:
    found = _FIELD_ACCESS.match(field_access)
    return found.group(1) if found else None


def _fix_translated_operators() -> None:
    """The other SQL tier's operators (``SQLOperatorTranslator``: dates in a find, ``$match``)."""
    original = SQLOperatorTranslator.translate_operator

    @functools.wraps(original)
    def translate_operator(self: Any, field_access: str, operator: str, value: Any) -> Any:
        # ``_id`` is the column of its text (an int 10 is "10", before "5"): the document's own
        path = "$._id" if field_access == "_id" else _path_of(field_access)
        built = comparison(path, operator, value) if path else None
        return built if built is not None else original(self, field_access, operator, value)

    SQLOperatorTranslator.translate_operator = translate_operator


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _of_kind(found: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(found, (int, float)) and not isinstance(found, bool)
    return isinstance(found, {"bool": bool, "string": str, "date": datetime}[kind])


def _python_comparison(operator: str, compare: Callable[[Any, Any], bool]) -> None:
    """The Python tier's ``operator`` (``query_operators._gt``...): neosqlite compares a boolean
    as a number and, in an array, only numbers (an array of dates matched no date range)."""
    original = getattr(neo_operators, operator)

    @functools.wraps(original)
    def matches(field: str, value: Any, document: dict[str, Any]) -> bool:
        kind = _kind(value)
        if kind is None:
            return bool(original(field, value, document))
        found = neo_operators._get_nested_field(field, document)
        candidates = found if isinstance(found, list) else [found]
        bound = _utc(value) if kind == "date" else value
        return any(
            compare(_utc(one) if kind == "date" else one, bound) for one in candidates if _of_kind(one, kind)
        )

    setattr(neo_operators, operator, matches)


def fix_comparisons_across_types() -> None:
    _fix_find_clauses()
    _fix_translated_operators()
    for name, compare in {"_gt": gt, "_gte": ge, "_lt": lt, "_lte": le}.items():
        _python_comparison(name, compare)
