"""Comparisons across types, as MongoDB answers them (``teststand/comparisons.py``).

The manual's "Comparison/Sort Order" (type bracketing): ``$gt``, ``$gte``, ``$lt``, ``$lte`` and
``$eq`` match a field only where its value is of the operand's type, or is an array holding such
a value (each operator by any element); dates compare to the millisecond. Each query is asked
three ways (``find``, ``count_documents``, an aggregation's ``$match``): the stand-in builds each
in a tier of its own. The answers expected are MongoDB's; the module is the stand-in's own
test all the same (skipped with ``TEST_MONGODB_URI``), as every module of ``teststand/tests``."""

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

pytestmark = [
    pytest.mark.integration,
    pytest.mark.test_server_only("the test server's fix of comparisons across types"),
]

D = datetime(2026, 5, 1, 10, 0, 0, 300_000, tzinfo=UTC)  # milliseconds matter
DOCUMENTS = [
    {"_id": 1, "d": "2026-05-01"},  # a date written as text (dirty data)
    {"_id": 2, "d": D},
    {"_id": 3, "d": 5},
    {"_id": 4, "d": None},
    {"_id": 5},
    {"_id": 6, "d": [3, 9]},
    {"_id": 7, "d": [1, 20]},
    {"_id": 8, "d": True},
    {"_id": 9, "d": {"a": 1}},
    {"_id": 10, "d": D + timedelta(milliseconds=400)},  # the same second as D, later
    {"_id": 11, "d": [datetime(2027, 1, 1, tzinfo=UTC)]},
]


@pytest.fixture
def collection(nx_client, db_name):
    collection = nx_client[db_name]["compared"]
    collection.insert_many(DOCUMENTS)
    return collection


def answers(collection, query: dict) -> tuple[list, list, int]:
    """The ids ``find`` and ``$match`` return, and what ``count_documents`` counts."""
    found = sorted(d["_id"] for d in collection.find(query))
    matched = sorted(d["_id"] for d in collection.aggregate([{"$match": query}]))
    return found, matched, collection.count_documents(query)


CASES = [
    # A date range matches dates only, a date-like string never; an array by its elements.
    ("date from", {"d": {"$gte": datetime(2026, 1, 1, tzinfo=UTC)}}, [2, 10, 11]),
    ("date before", {"d": {"$lt": datetime(2027, 1, 1, tzinfo=UTC)}}, [2, 10]),
    # Milliseconds: 10 is 400 ms after D, in the same second (a keyset walk on a date).
    ("after a date", {"d": {"$gt": D}}, [10, 11]),
    ("at a date", {"d": D}, [2]),
    ("at a date, $eq", {"d": {"$eq": D}}, [2]),
    ("up to a date", {"d": {"$lte": D}}, [2]),
    # A string operand compares strings, a date-like one too.
    ("text from", {"d": {"$gte": "2026"}}, [1]),
    ("date-like text from", {"d": {"$gte": "2026-01-01"}}, [1]),
    # A number: numbers and arrays of them; no string, boolean, document nor date.
    ("above a number", {"d": {"$gt": 4}}, [3, 6, 7]),
    ("below a number", {"d": {"$lt": 10}}, [3, 6, 7]),
    # Two bounds on an array: each may hold for another element.
    ("between numbers", {"d": {"$gte": 2, "$lt": 4}}, [6, 7]),
    ("a boolean", {"d": {"$gte": False}}, [8]),
    (
        "beside an _id range",
        {"$and": [{"d": {"$gte": datetime(2026, 1, 1, tzinfo=UTC)}}, {"_id": {"$lt": 5}}]},
        [2],
    ),
    ("in an $or", {"$or": [{"d": {"$gt": D}}, {"d": "2026-05-01"}]}, [1, 10, 11]),
]


@pytest.mark.parametrize(("query", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_comparison_matches_its_operands_type_only(collection, query, expected):
    assert answers(collection, query) == (expected, expected, len(expected))


def test_an_index_on_the_field_changes_no_answer(collection):
    collection.create_index("d")
    for _, query, expected in CASES:
        assert answers(collection, query) == (expected, expected, len(expected)), query


def test_a_delete_by_date_removes_dates_only(collection):
    assert collection.delete_many({"d": {"$lt": datetime(2027, 1, 1, tzinfo=UTC)}}).deleted_count == 2
    assert collection.find_one({"_id": 1}) == {"_id": 1, "d": "2026-05-01"}


def test_an_update_by_date_changes_dates_only(collection):
    result = collection.update_many(
        {"d": {"$gte": datetime(2026, 1, 1, tzinfo=UTC)}}, {"$set": {"seen": True}}
    )
    assert result.modified_count == 3
    assert sorted(d["_id"] for d in collection.find({"seen": True})) == [2, 10, 11]


# The manual's "Query for Null or Missing Fields": ``{f: null}`` matches a null, a missing field
# and an array holding null, so ``{f: {$ne: null}}`` matches none of them (a missing field is
# not "$ne: null"); ``{f: {$exists: false}}`` matches a missing field only (a null one exists).
# A path through an array of documents is searched element by element.
NULLS = [
    {"_id": 1, "a": {"b": 1}},
    {"_id": 2, "a": {"b": None}},
    {"_id": 3, "a": {}},
    {"_id": 4},
    {"_id": 5, "a": {"b": [None, 2]}},
    {"_id": 6, "a": [{"b": 1}, {"c": 2}]},  # one element without b: a.b is missing there
    {"_id": 7, "a": [{"b": 1}, {"b": 2}]},
]
NULL_CASES = [
    ("not null", {"a.b": {"$ne": None}}, [1, 7]),
    ("not null, in an $or", {"$or": [{"a.b": {"$ne": None}}, {"x": {"$ne": None}}]}, [1, 7]),
    ("not null, beside $in", {"_id": {"$in": [1, 2, 3, 4, 5, 6]}, "a.b": {"$ne": None}}, [1]),
    ("a top-level field not null", {"a": {"$ne": None}}, [1, 2, 3, 5, 6, 7]),
    ("null or missing", {"a.b": None}, [2, 3, 4, 5, 6]),
    # (The stand-in's $in on a path through an array of documents is still not MongoDB's: it
    # matches no element; 3 is nowhere.)
    ("null, missing or 3", {"a.b": {"$in": [None, 3]}}, [2, 3, 4, 5, 6]),
    ("missing", {"a.b": {"$exists": False}}, [3, 4]),
    ("present", {"a.b": {"$exists": True}}, [1, 2, 5, 6, 7]),
    # A range too reads each element of an array of documents on the way, and of the array at
    # its end.
    ("above a number, through arrays", {"a.b": {"$gt": 1}}, [5, 7]),
]


@pytest.fixture
def nulls(nx_client, db_name):
    collection = nx_client[db_name]["nulls"]
    collection.insert_many(NULLS)
    return collection


@pytest.mark.parametrize(("query", "expected"), [c[1:] for c in NULL_CASES], ids=[c[0] for c in NULL_CASES])
def test_null_existence_and_paths_through_arrays_are_mongodbs(nulls, query, expected):
    assert answers(nulls, query) == (expected, expected, len(expected))


# Equality across types (the manual's "Comparison/Sort Order": numbers and booleans are
# different BSON types, all numeric types one; "Type Bracketing"): ``{b: 1}`` matches 1, 1.0
# and an array holding one of them, never ``true``; ``{b: true}`` never 1; the same for ``$eq``,
# ``$in``, ``$ne`` and ``$nin`` (``$ne``/``$nin`` also match a missing field and none of the
# arrays holding the value). nx-27017 compared SQLite's JSON values, where ``true`` is 1.
TYPED = [
    {"_id": 1, "b": True},
    {"_id": 2, "b": 1},
    {"_id": 3, "b": False},
    {"_id": 4, "b": 0},
    {"_id": 5, "b": 1.0},
    {"_id": 6, "b": [1, 2]},
    {"_id": 7, "b": [True]},
    {"_id": 8},
    {"_id": 9, "b": None},
    {"_id": 10, "b": "1"},
    {"_id": 11, "n": {"b": True}},
    {"_id": 12, "n": [{"b": 1}]},
]
EVERY = set(range(1, 13))
TYPED_CASES = [
    ("a number", {"b": 1}, [2, 5, 6]),
    ("a boolean", {"b": True}, [1, 7]),
    ("zero", {"b": 0}, [4]),
    ("false", {"b": False}, [3]),
    ("$eq a number", {"b": {"$eq": 1}}, [2, 5, 6]),
    ("$eq a boolean", {"b": {"$eq": True}}, [1, 7]),
    ("$in a number", {"b": {"$in": [1]}}, [2, 5, 6]),
    ("$in a boolean", {"b": {"$in": [True]}}, [1, 7]),
    ("$in a number and a string", {"b": {"$in": [1, "1"]}}, [2, 5, 6, 10]),
    ("$in null and a boolean", {"b": {"$in": [None, True]}}, [1, 7, 8, 9, 11, 12]),
    ("$ne a number", {"b": {"$ne": 1}}, sorted(EVERY - {2, 5, 6})),
    ("$ne a boolean", {"b": {"$ne": True}}, sorted(EVERY - {1, 7})),
    ("$nin both", {"b": {"$nin": [1, True]}}, sorted(EVERY - {1, 2, 5, 6, 7})),
    ("$nin a number and a string", {"b": {"$nin": [0, "1"]}}, sorted(EVERY - {4, 10})),
    ("a dotted boolean", {"n.b": True}, [11]),
    ("a dotted number, through an array", {"n.b": 1}, [12]),
    ("in an $or", {"$or": [{"b": True}, {"n.b": 1}]}, [1, 7, 12]),
    ("in an $and", {"$and": [{"b": {"$ne": True}}, {"b": {"$ne": 1}}]}, sorted(EVERY - {1, 2, 5, 6, 7})),
]


@pytest.fixture
def typed(nx_client, db_name):
    collection = nx_client[db_name]["typed"]
    collection.insert_many(TYPED)
    return collection


@pytest.mark.parametrize(("query", "expected"), [c[1:] for c in TYPED_CASES], ids=[c[0] for c in TYPED_CASES])
def test_a_number_never_equals_a_boolean(typed, query, expected):
    assert answers(typed, query) == (expected, expected, len(expected))


def test_a_number_never_equals_a_boolean_with_an_index_either(typed):
    typed.create_index("b")
    typed.create_index("n.b")
    for _, query, expected in TYPED_CASES:
        assert answers(typed, query) == (expected, expected, len(expected)), query


def test_writes_filtered_on_a_boolean_touch_booleans_only(typed):
    """The product's own forms: an update by ``{flag: true}``, a delete by ``{flag: {$ne: true}}``."""
    assert typed.update_many({"b": True}, {"$set": {"seen": 1}}).modified_count == 2
    assert sorted(d["_id"] for d in typed.find({"seen": 1})) == [1, 7]
    assert typed.delete_many({"b": {"$ne": True}}).deleted_count == 10
    assert sorted(d["_id"] for d in typed.find()) == [1, 7]


def test_a_sort_made_in_sql_orders_types_as_mongodb(nx_client, db_name):
    """The manual's "Comparison/Sort Order": null, numbers, strings, objects, ObjectId, booleans,
    dates, whatever the filter (a plain one: the server sorts in SQL) and with an index on the
    field. nx-27017 sorted by SQLite's order: a boolean as 0 or 1 (before 2.5), a date and an
    ObjectId as the JSON text of their encodings, after strings and before documents."""
    oid = ObjectId("65a1b2c3d4e5f60718293a4b")
    values = [None, 2.5, 3, "text", {"k": 1}, oid, False, True, D, D + timedelta(days=1)]
    collection = nx_client[db_name]["sorted"]
    collection.insert_many([{"_id": n, "v": v, "g": 1} for n, v in enumerate(reversed(values))])
    for _ in ("without an index", "with one"):
        for query in ({}, {"g": 1}):
            assert [d["v"] for d in collection.find(query).sort("v", 1)] == values
            assert [d["v"] for d in collection.find(query).sort("v", -1)] == values[::-1]
            assert [d["v"] for d in collection.find(query).sort([("g", 1), ("v", 1)]).limit(3)] == values[:3]
        collection.create_index("v")
