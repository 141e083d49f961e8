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
(ObjectId, documents, arrays, Decimal128) are left as they were: the product compares dates,
and ``_id`` ObjectIds (``devserver._fix_objectid_range_selections``).

Null and existence (the manual's "Query for Null or Missing Fields"): ``{f: null}`` (and
``$in: [null, ...]``, the form the devserver sends it in) matches a null, a missing field and an
array holding null, on every branch of a path through an array of documents; ``$ne: null`` is
its negation (nx-27017 matched a missing field); ``$exists: false`` a field no branch reaches
(nx-27017 matched a null one)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from operator import ge, gt, le, lt
from typing import Any

import neosqlite.query_operators as neo_operators
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
        return _utc(value).replace(tzinfo=None).isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


def _one_value(kind: str, type_sql: str, value_sql: str, date_sql: str, operator: str) -> str:
    """One stored value (a field's, or an array element's) of ``kind`` compared with ``?``."""
    if kind == "date":
        return f"({type_sql} = 'object' AND julianday({date_sql}) {operator} julianday(?))"
    types = {"number": "'integer', 'real'", "string": "'text'", "bool": "'true', 'false'"}[kind]
    return f"({type_sql} IN ({types}) AND {value_sql} {operator} ?)"


def _some_value(json: str, parts: list[str], test: Callable[[str, str, str], str], depth: int = 0) -> str:
    """SQL: some value the path reaches in the JSON ``json`` passes ``test`` (given its type, its
    value and, for a date, its ``$date`` text): the path's value, an element of the array it
    is, and on the way each element of an array of documents (MongoDB's dotted paths)."""
    step, rest, element = f"'$.\"{parts[0]}\"'", parts[1:], f"e{depth}"
    kind = f"json_type({json}, {step})"
    if not rest:
        date = f"'$.\"{parts[0]}\".{_DATE_KEY}'"
        scalar = test(kind, f"json_extract({json}, {step})", f"json_extract({json}, {date})")
        inner = test(f"{element}.type", f"{element}.value", f"json_extract({element}.value, '$.{_DATE_KEY}')")
        each = f"EXISTS (SELECT 1 FROM json_each({json}, {step}) AS {element} WHERE {inner})"
        return f"({scalar} OR ({kind} = 'array' AND {each}))"
    inside = _some_value(f"json_extract({json}, {step})", rest, test, depth + 1)
    in_elements = _some_value(f"{element}.value", rest, test, depth + 1)
    each = (
        f"EXISTS (SELECT 1 FROM json_each({json}, {step}) AS {element} WHERE "
        f"{element}.type = 'object' AND {in_elements})"
    )
    return f"(({kind} = 'object' AND {inside}) OR ({kind} = 'array' AND {each}))"


def comparison(field: str, operator: str, value: Any) -> tuple[str, list[Any]] | None:
    """``{field: {operator: value}}`` as SQL over ``data``, MongoDB's answer; None for an operand
    or operator this module does not build."""
    kind, sql_operator = _kind(value), _SQL_OPERATORS.get(operator)
    if kind is None or sql_operator is None or (operator == "$eq" and kind != "date") or _positional(field):
        return None  # an equality with a string or a number: neosqlite's, on its index

    def test(type_sql: str, value_sql: str, date_sql: str) -> str:
        return _one_value(kind, type_sql, value_sql, date_sql, sql_operator)

    sql = _some_value("data", field.split("."), test)
    return sql, [_bound(value)] * sql.count("?")  # the operand at each place a value is tested


def _null_or_missing(json: str, parts: list[str], depth: int = 0) -> str:
    """SQL for MongoDB's ``{path: null}`` on the JSON ``json``: the path reaches null, or nothing
    on some branch (a missing field, a scalar or an empty array on the way), or an array
    holding null. Arrays on the way are searched element by element."""
    step, rest = f"'$.\"{parts[0]}\"'", parts[1:]
    kind = f"json_type({json}, {step})"
    element = f"e{depth}"
    if not rest:
        holds_null = (
            f"EXISTS (SELECT 1 FROM json_each({json}, {step}) AS {element} WHERE {element}.type = 'null')"
        )
        return f"({kind} IS NULL OR {kind} = 'null' OR ({kind} = 'array' AND {holds_null}))"
    inside = _null_or_missing(f"json_extract({json}, {step})", rest, depth + 1)
    in_elements = _null_or_missing(f"{element}.value", rest, depth + 1)
    each = (
        f"EXISTS (SELECT 1 FROM json_each({json}, {step}) AS {element} WHERE "
        f"{element}.type != 'object' OR {in_elements})"
    )
    return (
        f"({kind} IS NULL OR {kind} NOT IN ('object', 'array') OR ({kind} = 'object' AND {inside}) "
        f"OR ({kind} = 'array' AND (json_array_length({json}, {step}) = 0 OR {each})))"
    )


def _present(json: str, parts: list[str], depth: int = 0) -> str:
    """SQL for MongoDB's ``{path: {$exists: true}}``: some branch of the path reaches a value
    (null included); arrays on the way are searched element by element."""
    step, rest = f"'$.\"{parts[0]}\"'", parts[1:]
    kind = f"json_type({json}, {step})"
    if not rest:
        return f"({kind} IS NOT NULL)"
    element = f"e{depth}"
    inside = _present(f"json_extract({json}, {step})", rest, depth + 1)
    in_elements = _present(f"{element}.value", rest, depth + 1)
    each = (
        f"EXISTS (SELECT 1 FROM json_each({json}, {step}) AS {element} WHERE "
        f"{element}.type = 'object' AND {in_elements})"
    )
    return f"(({kind} = 'object' AND {inside}) OR ({kind} = 'array' AND {each}))"


def null_or_existence(field: str, operator: str, value: Any) -> tuple[str, list[Any]] | None:
    """``{field: {$ne: null}}`` and ``{field: {$exists: b}}`` as MongoDB answers them (None for
    any other): nx-27017 matched a missing field with ``$ne: null`` and a null one with
    ``$exists: false``."""
    parts = field.split(".")
    if _positional(field):
        return None  # a position in an array (items.0): neosqlite's
    if operator in ("$eq", "$ne") and value is None:
        null = _null_or_missing("data", parts)
        return (null if operator == "$eq" else f"NOT {null}"), []
    if operator == "$exists" and isinstance(value, bool):
        return (_present("data", parts) if value else f"NOT {_present('data', parts)}"), []
    return None


def _built_here(field: str, operator: str, value: Any) -> tuple[str, list[Any]] | None:
    """``{field: {operator: value}}`` as this module builds it, in either SQL tier (None: not one
    it builds: neosqlite's)."""
    return comparison(field, operator, value) or null_or_existence(field, operator, value)


def _field_comparisons(field: str, value: Any) -> tuple[list[tuple[str, list[Any]]], Any] | None:
    """The comparisons of ``{field: value}`` built here, and what is left of ``value`` for
    neosqlite (None when nothing is left); None when none is built here."""
    if field.startswith("$") or field == "_id":
        return None
    if value is None or isinstance(value, datetime):
        value = {"$eq": value}  # the same query in MongoDB
    if not isinstance(value, dict) or "$options" in value:
        return None
    built_here = {op: _built_here(field, op, operand) for op, operand in value.items()}
    done = [clause for clause in built_here.values() if clause is not None]
    if not done:
        return None
    rest = {op: operand for op, operand in value.items() if built_here[op] is None}
    return done, (rest or None)


def _in_with_null(field: str, value: Any) -> tuple[str, list[Any]] | None:
    """``{field: {$in: [null, ...]}}``: MongoDB's ``{field: null}`` (SQL) or one of the others
    (the values but null); None for any other clause. The devserver sends ``{field: null}`` so
    (``_rewrite_objectid_equality``), and nx-27017 matched a path through an array of documents
    that all hold it."""
    if not isinstance(value, dict) or list(value) != ["$in"] or not isinstance(value["$in"], list):
        return None
    if None not in value["$in"] or field.startswith("$") or field == "_id" or _positional(field):
        return None
    null = null_or_existence(field, "$eq", None)
    return None if null is None else (null[0], [v for v in value["$in"] if v is not None])


def _either(null: str, built: tuple[str, list[Any]]) -> tuple[str, list[Any]]:
    sql, params = built
    return (f"({null} OR ({sql}))" if sql else null), list(params)


def _fix_find_clauses() -> None:
    """A find's (and an update's, a delete's, a count's) field clauses (``_build_field_clause``)."""
    original = QueryHelper._build_field_clause

    @functools.wraps(original)
    def build_field_clause(self: Any, field: str, value: Any) -> Any:
        if self.jsonb.json_function_prefix != "json":
            return original(self, field, value)
        null_or = _in_with_null(field, value)
        if null_or is not None:
            null, others = null_or
            built = original(self, field, {"$in": others}) if others else ("", [])
            return None if built is None else _either(null, built)
        split = _field_comparisons(field, value)
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
        field = path[2:].replace('"', "") if path and path.startswith("$.") and "[" not in path else None
        null_or = _in_with_null(field, {operator: value}) if field else None
        if null_or is not None:
            null, others = null_or
            return _either(null, original(self, field_access, "$in", others) if others else ("", []))
        built = _built_here(field, operator, value) if field else None
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
        if kind is None or _positional(field):
            return bool(original(field, value, document))
        reached, _ = _reached(document, field.split("."))
        candidates = [one for found in reached for one in (found if isinstance(found, list) else [found])]
        bound = _utc(value) if kind == "date" else value
        return any(
            compare(_utc(one) if kind == "date" else one, bound) for one in candidates if _of_kind(one, kind)
        )

    setattr(neo_operators, operator, matches)


def _reached(node: Any, parts: list[str]) -> tuple[list[Any], bool]:
    """The values a dotted path reaches in ``node`` (through arrays, element by element), and
    whether some branch reaches nothing (MongoDB's "missing": ``{path: null}`` matches it)."""
    if not parts:
        return [node], False
    if isinstance(node, dict):
        return _reached(node[parts[0]], parts[1:]) if parts[0] in node else ([], True)
    if isinstance(node, list) and node:
        values: list[Any] = []
        missing = False
        for element in node:
            found, gone = _reached(element, parts) if isinstance(element, dict) else ([], True)
            values += found
            missing = missing or gone
        return values, missing
    return [], True


def null_matches(field: str, document: dict[str, Any]) -> bool:
    """MongoDB's ``{field: null}`` on a decoded document."""
    values, missing = _reached(document, field.split("."))
    return missing or any(v is None or (isinstance(v, list) and None in v) for v in values)


def _fix_python_null_and_existence() -> None:
    """The Python tier's ``$ne: null`` (neosqlite: a missing field matches it) and ``$exists``
    (neosqlite: a field holding null does not exist; an array of documents is not searched)."""
    equal, not_equal, exists = neo_operators._eq, neo_operators._ne, neo_operators._exists
    among = neo_operators._in

    @functools.wraps(among)
    def in_(field: str, value: Any, document: dict[str, Any]) -> bool:
        if not isinstance(value, list) or None not in value or _positional(field):
            return bool(among(field, value, document))
        others = [v for v in value if v is not None]
        return null_matches(field, document) or (bool(others) and bool(among(field, others, document)))

    @functools.wraps(equal)
    def eq(field: str, value: Any, document: dict[str, Any]) -> bool:
        if value is None and not _positional(field):
            return null_matches(field, document)
        return bool(equal(field, value, document))

    @functools.wraps(not_equal)
    def ne(field: str, value: Any, document: dict[str, Any]) -> bool:
        if value is None and not _positional(field):
            return not null_matches(field, document)
        return bool(not_equal(field, value, document))

    @functools.wraps(exists)
    def exists_(field: str, value: Any, document: dict[str, Any]) -> bool:
        if not isinstance(value, bool) or _positional(field):
            return bool(exists(field, value, document))
        return bool(_reached(document, field.split("."))[0]) == value

    neo_operators._eq, neo_operators._ne, neo_operators._exists = eq, ne, exists_
    neo_operators._in = in_


def _positional(field: str) -> bool:
    return any(part.isdigit() or not part for part in field.split("."))


def fix_comparisons_across_types() -> None:
    _fix_find_clauses()
    _fix_translated_operators()
    for name, compare in {"_gt": gt, "_gte": ge, "_lt": lt, "_lte": le}.items():
        _python_comparison(name, compare)
    _fix_python_null_and_existence()
