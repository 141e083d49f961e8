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
(nx-27017 matched a null one).

Equality with a number or a boolean (the same "Comparison/Sort Order": numbers and booleans are
different BSON types, every numeric type one): ``{b: 1}``, ``$eq``, ``$in``, ``$ne``, ``$nin``
match 1, 1.0 or an array holding one, never ``true`` (nor ``{b: true}`` a 1); ``$ne``/``$nin`` are
their negations (a missing field matches). nx-27017 compared SQLite's JSON values, where
``true`` is 1, and Python's, where ``1 == True``; with an index on the field it matched no
array. Built here in every tier (``membership``, ``_typed_*``), without the field's index."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from operator import ge, gt, le, lt
from typing import Any

import neosqlite.query_operators as neo_operators
from neosqlite.collection.query_helper import QueryHelper
from neosqlite.collection.sql_translator_unified import SQLClauseBuilder, SQLOperatorTranslator

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


def _typed(value: Any) -> bool:
    """A number or a boolean: an equality with it is built here (a string's is neosqlite's)."""
    return _kind(value) in ("number", "bool")


def _typed_values(operator: str, value: Any) -> list[Any] | None:
    """The numbers and booleans an equality operator compares with, when they are all it has."""
    if operator in ("$eq", "$ne") and _typed(value):
        return [value]
    if operator in ("$in", "$nin") and isinstance(value, list) and value and all(_typed(v) for v in value):
        return list(value)
    return None


def membership(field: str, operator: str, value: Any) -> tuple[str, list[Any]] | None:
    """``{field: {$eq|$ne|$in|$nin: numbers and booleans}}`` as SQL over ``data``, each value
    matching its own type only (None for any other operand)."""
    values = _typed_values(operator, value)
    if values is None or _positional(field):
        return None
    groups: dict[str, list[Any]] = {}
    for one in values:
        groups.setdefault(str(_kind(one)), []).append(_bound(one))
    types = {"number": "'integer', 'real'", "bool": "'true', 'false'"}

    def test(type_sql: str, value_sql: str, _date_sql: str) -> str:
        return " OR ".join(
            f"({type_sql} IN ({types[kind]}) AND {value_sql} IN ({', '.join('?' * len(bound))}))"
            for kind, bound in groups.items()
        )

    sql = _some_value("data", field.split("."), test)
    flat = [one for bound in groups.values() for one in bound]
    params = flat * (sql.count("?") // len(flat))
    return (f"NOT COALESCE({sql}, 0)" if operator in ("$ne", "$nin") else f"COALESCE({sql}, 0)"), params


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
    return (
        comparison(field, operator, value)
        or membership(field, operator, value)
        or null_or_existence(field, operator, value)
    )


def _field_comparisons(field: str, value: Any) -> tuple[list[tuple[str, list[Any]]], Any] | None:
    """The comparisons of ``{field: value}`` built here, and what is left of ``value`` for
    neosqlite (None when nothing is left); None when none is built here."""
    if field.startswith("$") or field == "_id":
        return None
    if value is None or isinstance(value, datetime) or _typed(value):
        value = {"$eq": value}  # the same query in MongoDB
    if not isinstance(value, dict) or "$options" in value:
        return None
    value = value if _positional(field) else _split_nin(value)
    built_here = {op: _built_here(field, _NIN.get(op, op), operand) for op, operand in value.items()}
    done = [clause for clause in built_here.values() if clause is not None]
    if not done:
        return None
    rest = {op: operand for op, operand in value.items() if built_here[op] is None}
    return done, (rest or None)


_TYPED_NIN = "$nin (numbers and booleans)"  # the part of a $nin built here, beside the rest's
_NIN = {_TYPED_NIN: "$nin"}


def _split_nin(value: dict[str, Any]) -> dict[str, Any]:
    """A ``$nin`` of numbers or booleans beside other values: the first built here (as a
    ``$nin`` of their own), the others left as the ``$nin`` they were (both must hold)."""
    nin = value.get("$nin")
    if not isinstance(nin, list) or all(_typed(v) for v in nin) or not any(_typed(v) for v in nin):
        return value
    return {**value, "$nin": [v for v in nin if not _typed(v)], _TYPED_NIN: [v for v in nin if _typed(v)]}


def _in_parts(field: str | None, value: Any) -> tuple[tuple[str, list[Any]], list[Any]] | None:
    """``{field: {$in: [...]}}`` holding null, a number or a boolean: the SQL built here for
    those (null: MongoDB's ``{field: null}``; a number or boolean: its own type's equality), and
    the other values, left to neosqlite's ``$in`` (either may match); None for any other
    clause. The devserver sends ``{field: null}`` so (``_rewrite_objectid_equality``), and
    nx-27017 matched a path through an array of documents that all hold it."""
    if (
        not field
        or not isinstance(value, dict)
        or list(value) != ["$in"]
        or not isinstance(value["$in"], list)
    ):
        return None
    listed = value["$in"]
    typed = [v for v in listed if _typed(v)]
    if (None not in listed and not typed) or field.startswith("$") or field == "_id" or _positional(field):
        return None
    parts = []
    if None in listed:
        null = null_or_existence(field, "$eq", None)
        if null is None:
            return None
        parts.append(null)
    if typed:
        built = membership(field, "$in", typed)
        if built is None:
            return None
        parts.append(built)
    sql = " OR ".join(f"({part})" for part, _ in parts)
    others = [v for v in listed if v is not None and not _typed(v)]
    return (sql, [p for _, params in parts for p in params]), others


def _either(here: tuple[str, list[Any]], built: tuple[str, list[Any]]) -> tuple[str, list[Any]]:
    sql, params = built
    return (f"({here[0]} OR ({sql}))" if sql else here[0]), [*here[1], *params]


def _fix_find_clauses() -> None:
    """A find's (and an update's, a delete's, a count's) field clauses (``_build_field_clause``)."""
    original = QueryHelper._build_field_clause

    @functools.wraps(original)
    def build_field_clause(self: Any, field: str, value: Any) -> Any:
        if self.jsonb.json_function_prefix != "json":
            return original(self, field, value)
        if _typed(value) and not field.startswith("$") and field != "_id":
            value = {"$eq": value}  # the same query in MongoDB, built here
        in_parts = _in_parts(field, value)
        if in_parts is not None:
            here, others = in_parts
            built = original(self, field, {"$in": others}) if others else ("", [])
            return None if built is None else _either(here, built)
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
        in_parts = _in_parts(field, {operator: value})
        if in_parts is not None:
            here, others = in_parts
            return _either(here, original(self, field_access, "$in", others) if others else ("", []))
        nin = _split_nin({operator: value}) if field and operator == "$nin" else None
        if nin is not None and _TYPED_NIN in nin:
            typed = membership(str(field), "$nin", nin[_TYPED_NIN])
            sql, params = original(self, field_access, "$nin", nin["$nin"])
            if typed is None or sql is None:
                return sql, params
            return f"({typed[0]}) AND ({sql})", [*typed[1], *params]
        built = _built_here(field, operator, value) if field else None
        return built if built is not None else original(self, field_access, operator, value)

    SQLOperatorTranslator.translate_operator = translate_operator

    built_where = SQLClauseBuilder.build_where_clause

    @functools.wraps(built_where)
    def build_where_clause(self: Any, query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return built_where(self, typed_equalities(query), *args, **kwargs)

    SQLClauseBuilder.build_where_clause = build_where_clause


def typed_equalities(query: Any) -> Any:
    """``{field: 1}`` / ``{field: true}`` as ``{field: {$eq: ...}}`` (the same query in MongoDB),
    the form whose operator is built here; nx-27017 built the plain one inline."""
    if not isinstance(query, dict) or not any(_typed(v) for v in query.values()):
        return query
    return {
        k: {"$eq": v} if _typed(v) and not k.startswith("$") and k != "_id" else v for k, v in query.items()
    }


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
        found_values, _ = reached(document, field.split("."))
        candidates = [
            one for found in found_values for one in (found if isinstance(found, list) else [found])
        ]
        bound = _utc(value) if kind == "date" else value
        return any(
            compare(_utc(one) if kind == "date" else one, bound) for one in candidates if _of_kind(one, kind)
        )

    setattr(neo_operators, operator, matches)


def reached(node: Any, parts: list[str]) -> tuple[list[Any], bool]:
    """The values a dotted path reaches in ``node`` (through arrays, element by element), and
    whether some branch reaches nothing (MongoDB's "missing": ``{path: null}`` matches it)."""
    if not parts:
        return [node], False
    if isinstance(node, dict):
        return reached(node[parts[0]], parts[1:]) if parts[0] in node else ([], True)
    if isinstance(node, list) and node:
        values: list[Any] = []
        missing = False
        for element in node:
            found, gone = reached(element, parts) if isinstance(element, dict) else ([], True)
            values += found
            missing = missing or gone
        return values, missing
    return [], True


def null_matches(field: str, document: dict[str, Any]) -> bool:
    """MongoDB's ``{field: null}`` on a decoded document."""
    values, missing = reached(document, field.split("."))
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
        return bool(reached(document, field.split("."))[0]) == value

    neo_operators._eq, neo_operators._ne, neo_operators._exists = eq, ne, exists_
    neo_operators._in = in_


def _same(found: Any, value: Any) -> bool:
    """MongoDB's equality of a stored value with a number or a boolean: of its type, and equal."""
    return _kind(found) == _kind(value) and found == value


def _typed_found(field: str, values: list[Any], document: dict[str, Any]) -> bool:
    """Some value the path reaches (an array's elements each) equals one of ``values``."""
    found_values, _ = reached(document, field.split("."))
    candidates = [one for found in found_values for one in (found if isinstance(found, list) else [found])]
    return any(_same(one, value) for one in candidates for value in values)


def _typed_split(field: str, value: Any) -> tuple[list[Any], list[Any]] | None:
    """An ``$in``/``$nin`` list's numbers and booleans, and its other values (None: it has none)."""
    if not isinstance(value, list) or _positional(field) or not any(_typed(v) for v in value):
        return None
    return [v for v in value if _typed(v)], [v for v in value if not _typed(v)]


def _typed_equality(original: Callable[..., Any], negated: bool) -> Callable[..., bool]:
    """``_eq`` (``_ne``, ``negated``) with a number or a boolean: of its own type only."""

    @functools.wraps(original)
    def matches(field: str, value: Any, document: dict[str, Any]) -> bool:
        if _typed(value) and not _positional(field):
            return _typed_found(field, [value], document) != negated
        return bool(original(field, value, document))

    return matches


def _typed_membership(original: Callable[..., Any], negated: bool) -> Callable[..., bool]:
    """``_in`` (``_nin``, ``negated``): its numbers and booleans of their own type only, the
    other values as before."""

    @functools.wraps(original)
    def matches(field: str, value: Any, document: dict[str, Any]) -> bool:
        parts = _typed_split(field, value)
        if parts is None:
            return bool(original(field, value, document))
        typed, others = parts
        if negated:
            return not _typed_found(field, typed, document) and (
                not others or bool(original(field, others, document))
            )
        return _typed_found(field, typed, document) or (
            bool(others) and bool(original(field, others, document))
        )

    return matches


def _fix_python_typed_equality() -> None:
    """The Python tier's equalities with a number or a boolean (``query_operators._eq``, ``_ne``,
    ``_in``, ``_nin`` and a plain ``{field: 1}``): Python's ``1 == True`` matched a boolean with 1."""
    apply_query = QueryHelper._apply_query

    @functools.wraps(apply_query)
    def apply(self: Any, query: dict[str, Any], document: dict[str, Any]) -> bool:
        return bool(apply_query(self, typed_equalities(query), document))

    neo_operators._eq = _typed_equality(neo_operators._eq, negated=False)
    neo_operators._ne = _typed_equality(neo_operators._ne, negated=True)
    neo_operators._in = _typed_membership(neo_operators._in, negated=False)
    neo_operators._nin = _typed_membership(neo_operators._nin, negated=True)
    QueryHelper._apply_query = apply


def _positional(field: str) -> bool:
    return any(part.isdigit() or not part for part in field.split("."))


def fix_comparisons_across_types() -> None:
    _fix_find_clauses()
    _fix_translated_operators()
    for name, compare in {"_gt": gt, "_gte": ge, "_lt": lt, "_lte": le}.items():
        _python_comparison(name, compare)
    _fix_python_null_and_existence()
    _fix_python_typed_equality()
