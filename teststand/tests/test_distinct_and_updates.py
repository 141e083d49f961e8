"""``distinct`` and updates mixing operators, as MongoDB answers them (``teststand/devserver.py``:
``_fix_distinct``, ``_fix_dotted_paths_in_python_updates``)."""

from datetime import UTC, datetime

import pytest
from bson import ObjectId

pytestmark = [pytest.mark.integration, pytest.mark.test_server_only("the test server's own fixes and knobs")]

OID = ObjectId("65a1b2c3d4e5f60718293a4b")
D = datetime(2026, 5, 1, 10, 0, 0, 300_000, tzinfo=UTC)


@pytest.fixture
def db(nx_client, db_name):
    return nx_client[db_name]


def kinds(values: list) -> list[tuple[str, object]]:
    """Each value with its type's name, in a stable order (``1 == True`` in Python)."""
    return sorted(((type(v).__name__, v) for v in values), key=repr)


def test_distinct_answers_the_distinct_values_of_any_field_id_included(db):
    """The manual's ``distinct`` command: the distinct values of ``key`` among the documents
    ``query`` selects; an array's elements each a value ("``[1, [1], 1]``: 1, [1] and 1"); numbers
    of every kind equal, a boolean never a number (BSON types). nx-27017 failed on ``_id``
    ("JSON path error near '_id'"), read ``true`` as 1 and the string "1" as the number 1."""
    db.c.insert_many(
        [
            {"_id": 1, "s": "a", "t": [1, [1], 1], "n": [{"k": "p"}, {"k": "q"}]},
            {"_id": "x", "s": "b", "t": True, "n": {"k": "p"}},
            {"_id": OID, "s": "a", "t": 1.0},
            {"_id": 4, "s": "c", "t": "1"},
        ]
    )
    assert kinds(db.c.distinct("_id")) == kinds([1, "x", OID, 4])
    assert kinds(db.c.distinct("_id", {"s": "a"})) == kinds([1, OID])
    assert kinds(db.c.distinct("_id", {"t": True})) == kinds(["x"])
    assert sorted(db.c.distinct("s")) == ["a", "b", "c"]
    assert sorted(db.c.distinct("s", {"_id": {"$in": [1, OID]}})) == ["a"]
    assert sorted(db.c.distinct("n.k")) == ["p", "q"]
    values = db.c.distinct("t")
    assert len(values) == 4, values  # 1 (or 1.0), [1], True, "1"
    assert [1] in values
    assert "1" in values
    assert sorted(type(v).__name__ for v in values if not isinstance(v, (list, str))) in (
        ["bool", "int"],
        ["bool", "float"],
    )


# Cases of MongoDB's own ``jstests/core/query/distinct/distinct_semantics.js`` (without an index):
# (documents, key, filter, the values MongoDB answers).
SEMANTICS = [
    ("missing contributes nothing", [{}, {"a": 1}], "a", None, [1]),
    ("null is a value", [{"a": None}, {"b": 1}], "a", None, [None]),
    ("an empty document is a value", [{"a": {}}], "a", None, [{}]),
    ("an empty array none, one inside one", [{"a": []}, {"a": [[]]}], "a", None, [[]]),
    (
        "first-level arrays flattened",
        [{"a": [2, 3]}, {"a": 1}, {"a": 2}, {"a": [1, [2, 3]]}, {"a": [3, "str"]}],
        "a",
        None,
        [1, 2, 3, "str", [2, 3]],
    ),
    (
        "filtered as a whole, then flattened",
        [{"a": 0}, {"a": [1, 2]}, {"a": [-1, 3]}, {"a": [-2, [3]]}, {"a": [3, "str"]}, {"a": [3, None]}],
        "a",
        {"a": {"$gt": 2}},
        [None, -1, 3, "str"],
    ),
    (
        "arrays on the path",
        [
            {"a": [{"b": {"c": 1}}, {"b": {"c": [2, 20]}}, {"b": {"c": [3]}}]},
            {"a": {"b": [{"c": [3, 30]}, {"c": [4]}]}},
            {"a": {"b": {"c": [1, 10]}}},
            {"a": {"b": None}},
            {"a": 1},
        ],
        "a.b.c",
        None,
        [1, 2, 3, 4, 10, 20, 30],
    ),
    ("_id with a filter", [{"_id": 1, "a": 42}, {"_id": 2, "a": 42}], "_id", {"_id": {"$gt": 1}}, [2]),
    ("numbers of every kind", [{"a": 2.0}, {"a": 3}, {"a": 1}, {"a": 1.0}], "a", None, [1, 2, 3]),
]


@pytest.mark.parametrize(
    ("documents", "key", "query", "expected"), [c[1:] for c in SEMANTICS], ids=[c[0] for c in SEMANTICS]
)
def test_distinct_semantics_are_mongodbs(db, documents, key, query, expected):
    db.s.insert_many(documents)
    values = db.s.distinct(key, query)
    assert sorted(map(repr, values)) == sorted(map(repr, expected)) or sorted(values, key=repr) == sorted(
        expected, key=repr
    )
    assert len(values) == len(expected)


def test_an_update_mixing_a_date_or_a_bool_with_a_dotted_inc_writes_the_nested_field(db):
    """The manual's ``$inc`` ("To specify a <field> in an embedded document ... use dot notation";
    a missing field is created with the amount), likewise ``$mul``, ``$min``, ``$max``,
    ``$unset``, ``$push``: ``a.b`` is the field ``b`` of the document ``a``, beside any other
    operator. nx-27017 took such an update to its Python tier when ``$set`` held a date (and,
    through the stand-in's fix, a bool), which wrote a top-level field named "a.b"; beside a bool
    it kept the SQL tier, which stored the bool as 1."""
    db.u.insert_many([{"_id": n, "a": {"b": 1, "c": 5, "l": [0]}} for n in (1, 2, 3, 5)] + [{"_id": 6}])
    db.u.update_one({"_id": 1}, {"$set": {"d": D, "flag": True}, "$inc": {"a.b": 1}})
    db.u.update_one({"_id": 2}, {"$set": {"flag": True}, "$inc": {"a.b": 1}})
    db.u.update_one({"_id": 3}, {"$set": {"d": D, "x.y": 2}, "$inc": {"a.b": 1}})
    db.u.update_one({"_id": 4}, {"$set": {"d": D, "flag": True}, "$inc": {"a.b": 1}}, upsert=True)
    db.u.find_one_and_update(
        {"_id": 5},
        {
            "$set": {"d": D, "flag": False},
            "$max": {"a.b": 7},
            "$mul": {"a.c": 2},
            "$unset": {"a.l": ""},
            "$push": {"z.l": 1},
        },
    )
    db.u.update_one({"_id": 6}, {"$set": {"flag": False}, "$inc": {"a.b": 1}, "$min": {"m.k": 3}})
    found = {d["_id"]: d for d in db.u.find()}
    assert found[1] == {"_id": 1, "a": {"b": 2, "c": 5, "l": [0]}, "d": D, "flag": True}
    assert found[2] == {"_id": 2, "a": {"b": 2, "c": 5, "l": [0]}, "flag": True}
    assert found[3] == {"_id": 3, "a": {"b": 2, "c": 5, "l": [0]}, "d": D, "x": {"y": 2}}
    assert found[4] == {"_id": 4, "a": {"b": 1}, "d": D, "flag": True}
    assert found[5] == {"_id": 5, "a": {"b": 7, "c": 10}, "d": D, "flag": False, "z": {"l": [1]}}
    assert found[6] == {"_id": 6, "a": {"b": 1}, "flag": False, "m": {"k": 3}}
    assert [type(found[n]["flag"]) for n in (1, 2, 4, 5, 6)] == [bool] * 5
    assert sorted(d["_id"] for d in db.u.find({"flag": True})) == [1, 2, 4]
