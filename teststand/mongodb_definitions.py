"""What MongoDB 4.4 to 8.0 accept, field by field: the development server refuses the rest, the
test suite checks every command the product sends against it.

Taken from the server's own definitions, not from what a stand-in tolerates: the commands'
``.idl`` files of mongodb/mongo (``find_command.idl``, ``aggregate_command.idl``,
``write_ops.idl``, ``create_indexes.idl``, ``count_command.idl``, ``distinct_command.idl``,
``getmore_command.idl``, ``find_and_modify_command.idl``, ``generic_argument.idl``,
``document_source_change_stream.idl``), the index specification's allowed fields
(``index_key_validate``), and the manual's "New in version" notes for stages and operators.
Each name maps to the version that introduced it; ``AT_FLOOR`` means "4.4 or earlier", the
oldest version the archiver supports. A name missing from every table is unknown: the
server refuses it, and the suite fails until someone checks it against MongoDB's definitions
and adds it here.

Pure data and pure functions: ``refusal`` (what a server of a version answers a command it
refuses, or None) and ``command_shape`` / ``shape_problems`` (the record of what was sent).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Version = tuple[int, ...]

AT_FLOOR: Version = (4, 4)  # present in 4.4 (or earlier): every version the product supports
FLOOR: Version = (4, 4)
NEWEST: Version = (8, 0)
SUPPORTED = f"MongoDB {'.'.join(map(str, FLOOR))}–{'.'.join(map(str, NEWEST))}"

# Wire versions (the driver specification's table): hello.maxWireVersion per server version.
WIRE_VERSIONS: dict[Version, int] = {(4, 4): 9, (5, 0): 13, (6, 0): 17, (7, 0): 21, (8, 0): 25}
HELLO_SINCE: Version = (4, 4, 2)  # before it, only isMaster (and its alias ismaster) answers

# generic_argument.idl: accepted by every command.
GENERIC_ARGUMENTS: dict[str, Version] = {
    **dict.fromkeys(
        (
            "$db",
            "maxTimeMS",
            "readConcern",
            "writeConcern",
            "lsid",
            "clientOperationKey",
            "txnNumber",
            "autocommit",
            "startTransaction",
            "stmtId",
            "comment",
            "$readPreference",
            "$clusterTime",
            "$audit",
            "$client",
            "$configServerState",
            "allowImplicitCollectionCreation",
            "$oplogQueryData",
            "$queryOptions",
            "$replData",
            "databaseVersion",
            "shardVersion",
            "tracking_info",
            "coordinator",
            "maxTimeMSOpOnly",
            "$configTime",
            "$topologyTime",
        ),
        AT_FLOOR,
    ),
    "apiVersion": (5, 0),
    "apiStrict": (5, 0),
    "apiDeprecationErrors": (5, 0),
    "txnRetryCounter": (6, 0),
    "mayBypassWriteBlocking": (6, 0),
    "$tenant": (7, 0),
    "expectPrefix": (7, 0),
}

_WRITE_BASE = dict.fromkeys(("ordered", "bypassDocumentValidation", "stmtIds"), AT_FLOOR)

# The fields of the commands an application can pass fields through (the command's own name
# is its first field). Strict commands: any other field is "40415 BSON field 'x.y' is an
# unknown field." (4.4's hand-written parsers of find and aggregate say "unrecognized field";
# the code differs, the refusal does not).
COMMAND_FIELDS: dict[str, dict[str, Version]] = {
    "find": {
        **dict.fromkeys(
            (
                "filter",
                "projection",
                "sort",
                "hint",
                "collation",
                "skip",
                "limit",
                "batchSize",
                "ntoreturn",
                "singleBatch",
                "allowDiskUse",
                "min",
                "max",
                "returnKey",
                "showRecordId",
                "tailable",
                "oplogReplay",
                "noCursorTimeout",
                "awaitData",
                "allowPartialResults",
                "options",
                "term",
                "readOnce",
                "allowSpeculativeMajorityRead",
                "$_requestResumeToken",
                "$_resumeAfter",
                "runtimeConstants",
            ),
            AT_FLOOR,
        ),
        "let": (5, 0),
        "collectionUUID": (6, 0),
        "includeQueryStatsMetrics": (8, 0),
    },
    "aggregate": {
        **dict.fromkeys(
            (
                "pipeline",
                "explain",
                "allowDiskUse",
                "cursor",
                "bypassDocumentValidation",
                "collation",
                "hint",
                "needsMerge",
                "fromMongos",
                "exchange",
                "runtimeConstants",
                "isMapReduceCommand",
                "use44SortKeys",
                "$_requestReshardingResumeToken",
            ),
            AT_FLOOR,
        ),
        "let": (5, 0),
        "collectionUUID": (6, 0),
        "includeQueryStatsMetrics": (8, 0),
    },
    "getMore": {
        **dict.fromkeys(("collection", "batchSize", "term", "lastKnownCommittedOpTime"), AT_FLOOR),
        "includeQueryStatsMetrics": (8, 0),
    },
    "count": dict.fromkeys(("query", "limit", "skip", "hint", "collation", "fields"), AT_FLOOR),
    "distinct": {
        **dict.fromkeys(("key", "query", "collation"), AT_FLOOR),
        "hint": (7, 1),
    },
    "insert": {**_WRITE_BASE, "documents": AT_FLOOR},
    "update": {**_WRITE_BASE, "updates": AT_FLOOR, "runtimeConstants": AT_FLOOR, "let": (5, 0)},
    "delete": {**_WRITE_BASE, "deletes": AT_FLOOR, "runtimeConstants": AT_FLOOR, "let": (5, 0)},
    "findAndModify": {
        **dict.fromkeys(
            (
                "query",
                "fields",
                "sort",
                "hint",
                "collation",
                "arrayFilters",
                "remove",
                "update",
                "new",
                "upsert",
                "bypassDocumentValidation",
                "runtimeConstants",
            ),
            AT_FLOOR,
        ),
        "let": (5, 0),
    },
    "createIndexes": {
        **dict.fromkeys(("indexes", "commitQuorum", "ignoreUnknownIndexOptions"), AT_FLOOR),
        "isTimeseriesNamespace": (5, 0),
        "collectionUUID": (6, 0),
    },
}

# The statements inside update and delete (write_ops.idl: UpdateOpEntry, DeleteOpEntry).
STATEMENT_FIELDS: dict[str, dict[str, Version]] = {
    "updates": {
        **dict.fromkeys(
            ("q", "u", "upsert", "multi", "arrayFilters", "hint", "collation", "upsertSupplied"), AT_FLOOR
        ),
        "c": (5, 0),
        "sort": (8, 0),
    },
    "deletes": dict.fromkeys(("q", "limit", "hint", "collation"), AT_FLOOR),
}

# index_key_validate's allowed fields of an index specification; anything else is
# "197 InvalidIndexSpecificationOption" for the whole createIndexes (since 3.4).
INDEX_SPEC_FIELDS: dict[str, Version] = {
    **dict.fromkeys(
        (
            "key",
            "name",
            "v",
            "unique",
            "sparse",
            "background",
            "partialFilterExpression",
            "expireAfterSeconds",
            "hidden",
            "storageEngine",
            "collation",
            "weights",
            "default_language",
            "language_override",
            "textIndexVersion",
            "2dsphereIndexVersion",
            "bits",
            "min",
            "max",
            "coarsestIndexedLevel",
            "finestIndexedLevel",
            "wildcardProjection",
            "dropDups",
            "ns",
            "_id",
        ),
        AT_FLOOR,
    ),
    "clustered": (5, 3),
    "prepareUnique": (6, 0),
    "columnstoreProjection": (6, 3),
    "originalSpec": (7, 0),
}
INDEX_SPEC_REMOVED: dict[str, Version] = {"bucketSize": (5, 0)}  # geoHaystack indexes

_HELLO_FIELDS = dict.fromkeys(
    (
        "helloOk",
        "client",
        "compression",
        "saslSupportedMechs",
        "topologyVersion",
        "maxAwaitTimeMS",
        "loadBalanced",
        "speculativeAuthenticate",
    ),
    AT_FLOOR,
)

# Other commands the product or pymongo sends: their fields (commands nothing passes fields
# through; the suite's record still checks them).
OTHER_COMMANDS: dict[str, dict[str, Version]] = {
    "hello": _HELLO_FIELDS,  # from 4.4.2 (HELLO_SINCE): the product falls back to isMaster
    "isMaster": _HELLO_FIELDS,
    "ismaster": _HELLO_FIELDS,
    "ping": {},
    "buildInfo": {},
    "buildinfo": {},
    "connectionStatus": {"showPrivileges": AT_FLOOR},
    "listCollections": dict.fromkeys(("filter", "nameOnly", "authorizedCollections", "cursor"), AT_FLOOR),
    "listIndexes": dict.fromkeys(("cursor", "includeBuildUUIDs"), AT_FLOOR),  # list_indexes.idl
    "listDatabases": dict.fromkeys(("filter", "nameOnly", "authorizedDatabases"), AT_FLOOR),
    "killCursors": {"cursors": AT_FLOOR},
    "endSessions": {},
    "drop": {},
    "dropDatabase": {},
    "dropIndexes": {"index": AT_FLOOR},
    "create": dict.fromkeys(
        (
            "capped",
            "size",
            "max",
            "validator",
            "validationLevel",
            "validationAction",
            "collation",
            "storageEngine",
            "indexOptionDefaults",
            "viewOn",
            "pipeline",
        ),
        AT_FLOOR,
    ),
    "collMod": dict.fromkeys(("index", "validator", "validationLevel", "validationAction"), AT_FLOOR),
    "serverStatus": {},
    "dbStats": {"scale": AT_FLOOR},
    "collStats": {"scale": AT_FLOOR},
    "saslStart": dict.fromkeys(("mechanism", "payload", "autoAuthorize", "options"), AT_FLOOR),
    "saslContinue": dict.fromkeys(("conversationId", "payload"), AT_FLOOR),
    "authenticate": dict.fromkeys(("mechanism", "user"), AT_FLOOR),
    "renameCollection": dict.fromkeys(("to", "dropTarget"), AT_FLOOR),
    # --max-lag (replication_lag.py), on admin, no field of their own sent: the manual's
    # "replSetGetStatus" ({replSetGetStatus: 1}) and "replSetGetConfig" ({replSetGetConfig: 1};
    # commitmentStatus from 4.4)
    "replSetGetStatus": {},
    "replSetGetConfig": {"commitmentStatus": AT_FLOOR},
}

# Aggregation stages (the manual's "New in version" notes).
STAGES: dict[str, Version] = {
    **dict.fromkeys(
        (
            "$addFields",
            "$bucket",
            "$bucketAuto",
            "$changeStream",
            "$collStats",
            "$count",
            "$currentOp",
            "$facet",
            "$geoNear",
            "$graphLookup",
            "$group",
            "$indexStats",
            "$limit",
            "$listLocalSessions",
            "$listSessions",
            "$lookup",
            "$match",
            "$merge",
            "$out",
            "$planCacheStats",
            "$project",
            "$redact",
            "$replaceRoot",
            "$replaceWith",
            "$sample",
            "$search",
            "$set",
            "$skip",
            "$sort",
            "$sortByCount",
            "$unionWith",
            "$unset",
            "$unwind",
        ),
        AT_FLOOR,
    ),
    "$setWindowFields": (5, 0),
    "$densify": (5, 1),
    "$documents": (5, 1),
    "$fill": (5, 3),
    "$shardedDataDistribution": (6, 0),
    "$searchMeta": (6, 0),
    "$changeStreamSplitLargeEvent": (7, 0),
    "$listSampledQueries": (7, 0),
    "$listSearchIndexes": (7, 0),
    "$vectorSearch": (7, 0),
    "$queryStats": (7, 1),
}

# Fields of the stages whose fields changed across versions.
STAGE_FIELDS: dict[str, dict[str, Version]] = {
    "$lookup": {
        **dict.fromkeys(("from", "localField", "foreignField", "as", "let", "pipeline"), AT_FLOOR),
    },
    "$changeStream": {
        **dict.fromkeys(
            (
                "resumeAfter",
                "startAfter",
                "startAtOperationTime",
                "fullDocument",
                "allChangesForCluster",
                "showMigrationEvents",
                "allowToRunOnConfigDB",
            ),
            AT_FLOOR,
        ),
        "fullDocumentBeforeChange": (6, 0),
        "showExpandedEvents": (6, 0),
        "showSystemEvents": (6, 0),
        "showRawUpdateDescription": (8, 0),
    },
}
LOOKUP_LOCALFIELD_WITH_PIPELINE: Version = (5, 0)  # a $lookup with localField and pipeline

_QUERY = """$eq $ne $gt $gte $lt $lte $in $nin $and $or $nor $not $exists $type $expr $jsonSchema
    $mod $regex $options $text $search $language $caseSensitive $diacriticSensitive $where $all
    $elemMatch $size $bitsAllClear $bitsAllSet $bitsAnyClear $bitsAnySet $comment $geoIntersects
    $geoWithin $near $nearSphere $box $center $centerSphere $geometry $maxDistance $minDistance
    $polygon $sampleRate $natural $meta"""
_UPDATE = """$set $setOnInsert $unset $inc $mul $rename $min $max $currentDate $addToSet $pop $pull
    $push $pullAll $each $position $slice $sort $bit"""
_EXPRESSIONS = """$abs $add $ceil $divide $exp $floor $ln $log $log10 $multiply $pow $round $sqrt
    $subtract $trunc $arrayElemAt $arrayToObject $concatArrays $filter $first $last
    $indexOfArray $isArray $map $objectToArray $range $reduce $reverseArray $zip $cmp $cond
    $ifNull $switch $dateFromParts $dateFromString $dateToParts $dateToString $dayOfMonth
    $dayOfWeek $dayOfYear $hour $isoDayOfWeek $isoWeek $isoWeekYear $millisecond $minute $month
    $second $week $year $literal $mergeObjects $allElementsTrue $anyElementTrue $setDifference
    $setEquals $setIntersection $setIsSubset $setUnion $concat $indexOfBytes $indexOfCP $ltrim
    $regexFind $regexFindAll $regexMatch $replaceOne $replaceAll $rtrim $split $strLenBytes
    $strLenCP $strcasecmp $substr $substrBytes $substrCP $toLower $toUpper $trim $sin $cos $tan
    $asin $acos $atan $atan2 $asinh $acosh $atanh $sinh $cosh $tanh $degreesToRadians
    $radiansToDegrees $convert $toBool $toDate $toDecimal $toDouble $toInt $toLong $toObjectId
    $toString $isNumber $let $binarySize $bsonSize $function $accumulator $rand
    $avg $stdDevPop $stdDevSamp $sum"""

# Operators: query, update, projection, expressions and accumulators (the manual's notes).
OPERATORS: dict[str, Version] = {
    **dict.fromkeys(f"{_QUERY} {_UPDATE} {_EXPRESSIONS}".split(), AT_FLOOR),
    "$getField": (5, 0),
    "$setField": (5, 0),
    "$unsetField": (5, 0),
    "$dateAdd": (5, 0),
    "$dateSubtract": (5, 0),
    "$dateDiff": (5, 0),
    "$dateTrunc": (5, 0),
    "$count": (5, 0),
    "$shift": (5, 0),
    "$derivative": (5, 0),
    "$integral": (5, 0),
    "$expMovingAvg": (5, 0),
    "$covariancePop": (5, 0),
    "$covarianceSamp": (5, 0),
    "$rank": (5, 0),
    "$denseRank": (5, 0),
    "$documentNumber": (5, 0),
    "$tsIncrement": (5, 1),
    "$tsSecond": (5, 1),
    "$top": (5, 2),
    "$topN": (5, 2),
    "$bottom": (5, 2),
    "$bottomN": (5, 2),
    "$firstN": (5, 2),
    "$lastN": (5, 2),
    "$maxN": (5, 2),
    "$minN": (5, 2),
    "$sortArray": (5, 2),
    "$locf": (5, 2),
    "$linearFill": (5, 3),
    "$bitAnd": (6, 3),
    "$bitOr": (6, 3),
    "$bitXor": (6, 3),
    "$bitNot": (6, 3),
    "$median": (7, 0),
    "$percentile": (7, 0),
    "$toUUID": (8, 0),
}


def text(version: Version) -> str:
    return ".".join(map(str, version))


def parse_version(value: str) -> Version:
    """``"4.4"`` -> (4, 4); ``"4.4.1"`` -> (4, 4, 1)."""
    return tuple(int(part) for part in value.strip().split("."))


def known(table: Mapping[str, Version], name: str, version: Version) -> bool:
    since = table.get(name)
    return since is not None and since[:2] <= version[:2]


# --- what a server refuses ---------------------------------------------------------------------


def _error(code: int, name: str, message: str) -> dict[str, Any]:
    return {"ok": 0.0, "code": code, "codeName": name, "errmsg": message}


def _unknown_field(path: str) -> dict[str, Any]:
    return _error(40415, "Location40415", f"BSON field '{path}' is an unknown field.")


def command_name(body: Mapping[str, Any]) -> str:
    return next(iter(body), "")


def _field_refusal(name: str, body: Mapping[str, Any], version: Version) -> dict[str, Any] | None:
    fields = COMMAND_FIELDS[name]
    for field in list(body)[1:]:
        if not (known(fields, field, version) or known(GENERIC_ARGUMENTS, field, version)):
            return _unknown_field(f"{name}.{field}")
    for key, table in STATEMENT_FIELDS.items():
        for statement in body.get(key) or []:
            for field in statement if isinstance(statement, Mapping) else ():
                if not known(table, field, version):
                    return _unknown_field(f"{name}.{key}.{field}")
    return None


def _index_refusal(body: Mapping[str, Any], version: Version, replica_set: bool) -> dict[str, Any] | None:
    for spec in body.get("indexes") or []:
        for field in spec:
            removed = INDEX_SPEC_REMOVED.get(field)
            if not known(INDEX_SPEC_FIELDS, field, version) or (removed and removed <= version[:2]):
                return _error(
                    197,
                    "InvalidIndexSpecificationOption",
                    f"The field '{field}' is not valid for an index specification. Specification: {dict(spec)}",
                )
    for spec in body.get("indexes") or []:
        refused = _partial_index_refusal(spec, version)
        if refused:
            return refused
    if "commitQuorum" in body and not replica_set:
        return _error(2, "BadValue", "Standalones can't specify commitQuorum")
    return None


# A partial index's filter (``partialFilterExpression``), as MongoDB checks it before it builds
# the index (4.4: ``IndexCatalogImpl::_isSpecOk`` and ``_checkValidFilterExpressions``; 6.0 on,
# ``index_key_validate``): a document, not beside ``sparse``, of equality, ``$exists: true``,
# ``$gt``/``$gte``/``$lt``/``$lte``, ``$type`` and a top-level ``$and`` only; from 6.0 also
# ``$or``, ``$in`` and ``$and`` at any depth. Anything else (``$ne``, ``$exists: false``, ``$nin``,
# ``$regex``...: a negation or another expression) is 67 CannotCreateIndex for the whole command.
PARTIAL_FILTER_OPERATORS = frozenset({"$eq", "$gt", "$gte", "$lt", "$lte", "$type", "$exists"})
PARTIAL_FILTER_WIDER_SINCE: Version = (6, 0)  # $or, $in, a nested $and


def _cannot_create(message: str) -> dict[str, Any]:
    return _error(67, "CannotCreateIndex", message)


def _partial_index_refusal(spec: Any, version: Version) -> dict[str, Any] | None:
    if not isinstance(spec, Mapping) or "partialFilterExpression" not in spec:
        return None
    if spec.get("sparse"):
        return _cannot_create('cannot mix "partialFilterExpression" and "sparse" options')
    expression = spec["partialFilterExpression"]
    if not isinstance(expression, Mapping):
        return _cannot_create('"partialFilterExpression" for an index must be a document')
    unsupported = _unsupported_in_partial(expression, version, 0)
    if unsupported is None:
        return None
    words = "Expression not supported" if version >= PARTIAL_FILTER_WIDER_SINCE else "unsupported expression"
    return _cannot_create(f"{words} in partial index: {unsupported}")


def _unsupported_in_partial(expression: Mapping[str, Any], version: Version, level: int) -> str | None:
    """The first part of a partial index's filter MongoDB ``version`` does not take (None: all)."""
    wider = version >= PARTIAL_FILTER_WIDER_SINCE
    for name, value in expression.items():
        if (name == "$and" and (level == 0 or wider)) or (name == "$or" and wider):
            for branch in value if isinstance(value, list) else []:
                found = _unsupported_in_partial(branch, version, level + 1)
                if found:
                    return found
        elif name.startswith("$"):
            return f"{name} {value!r}"
        elif isinstance(value, Mapping) and any(str(k).startswith("$") for k in value):
            for operator, operand in value.items():
                allowed = operator in PARTIAL_FILTER_OPERATORS or (operator == "$in" and wider)
                if not allowed or (operator == "$exists" and not operand):  # $exists: false is a $not
                    return f"{name} {operator} {operand!r}"
    return None


def _operators(value: Any) -> Iterator[str]:
    """Every ``$`` key in ``value`` (field paths are values, never keys)."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if isinstance(key, str) and key.startswith("$"):
                yield key
            yield from _operators(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _operators(inner)


def _stage_field_refusal(name: str, spec: Any, version: Version) -> dict[str, Any] | None:
    fields = STAGE_FIELDS.get(name)
    if fields is None or not isinstance(spec, Mapping):
        return None
    for field in spec:
        if not known(fields, field, version):
            return _unknown_field(f"{name}.{field}")
    if (
        name == "$lookup"
        and {"pipeline", "localField"} <= set(spec)
        and version < LOOKUP_LOCALFIELD_WITH_PIPELINE
    ):
        return _error(
            51047, "Location51047", "$lookup with 'pipeline' may not specify 'localField' or 'foreignField'"
        )
    for sub in spec.get("pipeline") or []:
        refused = _stage_refusal(sub, version)
        if refused:
            return refused
    return None


def _stage_refusal(stage: Mapping[str, Any], version: Version) -> dict[str, Any] | None:
    name = command_name(stage)
    if not known(STAGES, name, version):
        return _error(40324, "Location40324", f"Unrecognized pipeline stage name: '{name}'")
    spec = stage[name]
    if name in STAGE_FIELDS:
        return _stage_field_refusal(name, spec, version)
    return _operator_refusal(spec, version)


def _operator_refusal(value: Any, version: Version) -> dict[str, Any] | None:
    """An operator newer than ``version`` anywhere in ``value`` (a "$" key in no table is left
    to the suite's record: ``shape_problems`` names it)."""
    for operator in _operators(value):
        newer = operator in OPERATORS and not known(OPERATORS, operator, version)
        if newer and not known(STAGES, operator, version):
            return _error(168, "InvalidPipelineOperator", f"Unrecognized expression '{operator}'")
    return None


# Before 5.0 an insert refuses a document with a top-level field name that starts with "$"
# (``fixDocumentForInsert``, src/mongo/db/ops/insert.cpp: 2 BadValue), one document at a time:
# the others of an unordered insert are inserted. 5.0 allows them ("Field Names with Periods
# and Dollar Signs"). Nested "$" names and dotted names were allowed on insert before 5.0.
DOLLAR_FIELD_NAMES_SINCE: Version = (5, 0)


def insert_document_refusal(document: Mapping[str, Any], version: Version) -> dict[str, Any] | None:
    """The write error a MongoDB of ``version`` answers for one document of an insert (without
    its ``index``), or None when it takes it."""
    if version >= DOLLAR_FIELD_NAMES_SINCE:
        return None
    name = next((k for k in document if isinstance(k, str) and k.startswith("$")), None)
    if name is None:
        return None
    return {"code": 2, "errmsg": f"Document can't have $ prefixed field names: {name}"}


def refusal(body: Mapping[str, Any], version: Version, *, replica_set: bool) -> dict[str, Any] | None:
    """What a MongoDB of ``version`` answers ``body`` (the command with its document
    sequences folded in) when it refuses it; None when it accepts it. ``replica_set``: the
    server is a replica set's member; a standalone also refuses ``commitQuorum`` and change
    streams."""
    name = command_name(body)
    if name == "hello" and version < HELLO_SINCE:
        return _error(59, "CommandNotFound", "no such command: 'hello'")
    if name in COMMAND_FIELDS:
        refused = _field_refusal(name, body, version)
        if refused:
            return refused
    if name == "createIndexes":
        return _index_refusal(body, version, replica_set)
    queries = [body.get(k) for k in ("filter", "query", "update")]
    queries += [
        s.get(k)
        for key in STATEMENT_FIELDS
        for s in body.get(key) or []
        if isinstance(s, Mapping)
        for k in ("q", "u")
    ]
    refused = _operator_refusal(queries, version)
    if refused:
        return refused
    if name == "aggregate":
        return _pipeline_refusal(body.get("pipeline") or [], version, replica_set)
    return None


# A change stream reads the oplog: a standalone has none. MongoDB refuses ``$changeStream`` on a
# standalone mongod when it parses the stage, after its own fields
# (``DocumentSourceChangeStream::assertIsLegalSpecification``,
# src/mongo/db/pipeline/document_source_change_stream.cpp; the same code and text from 4.4 to
# 8.0; MongoDB's main branch later adds " or mongos" to the text). The answer at the wire:
# ``{ok: 0, errmsg, code: 40573, codeName: "Location40573"}``.
CHANGE_STREAM_ON_STANDALONE = (
    40573,
    "Location40573",
    "The $changeStream stage is only supported on replica sets",
)


def _pipeline_refusal(pipeline: list[Any], version: Version, replica_set: bool) -> dict[str, Any] | None:
    """The first stage MongoDB refuses, in the order it parses them."""
    for stage in pipeline:
        if not isinstance(stage, Mapping):
            continue
        refused = _stage_refusal(stage, version)
        if refused:
            return refused
        if command_name(stage) == "$changeStream" and not replica_set:
            return _error(*CHANGE_STREAM_ON_STANDALONE)
    return None


# --- the record of what the product sends -----------------------------------------------------


@dataclass(frozen=True, order=True)
class CommandShape:
    """One distinct kind of command: its name, its fields, what is inside it by name."""

    command: str
    fields: tuple[str, ...]
    statement_fields: tuple[str, ...] = ()  # of the update/delete statements
    index_fields: tuple[str, ...] = ()  # of the index specifications
    stages: tuple[str, ...] = ()  # stage, or "stage.field" for the stages whose fields matter
    operators: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = [f"{self.command} {{{', '.join(self.fields)}}}"]
        for label, names in (
            ("statements", self.statement_fields),
            ("index", self.index_fields),
            ("stages", self.stages),
            ("operators", self.operators),
        ):
            if names:
                parts.append(f"{label} [{', '.join(names)}]")
        return " ".join(parts)


def command_shape(body: Mapping[str, Any]) -> CommandShape:
    name = command_name(body)
    statements = [s for key in STATEMENT_FIELDS for s in body.get(key) or [] if isinstance(s, Mapping)]
    indexes = (
        [ix for ix in body.get("indexes") or [] if isinstance(ix, Mapping)] if name == "createIndexes" else []
    )
    stages: set[str] = set()
    operators: set[str] = set()
    for stage in body.get("pipeline") or [] if name == "aggregate" else []:
        _stage_names(stage, stages, operators)
    for key in ("filter", "query", "sort", "projection", "fields", "update"):
        operators.update(_operators(body.get(key)))
    for statement in statements:
        operators.update(_operators(statement.get("q")))
        update = statement.get("u")
        if isinstance(update, Mapping):  # its operators' names; what they set is data
            operators.update(k for k in update if str(k).startswith("$"))
    return CommandShape(
        command=name,
        fields=tuple(sorted(list(body)[1:])),
        statement_fields=tuple(sorted({f for s in statements for f in s})),
        index_fields=tuple(sorted({f for ix in indexes for f in ix})),
        stages=tuple(sorted(stages)),
        operators=tuple(sorted(operators)),
    )


def _stage_names(stage: Any, stages: set[str], operators: set[str]) -> None:
    if not isinstance(stage, Mapping):
        return
    name = command_name(stage)
    stages.add(name)
    spec = stage.get(name)
    if name in STAGE_FIELDS and isinstance(spec, Mapping):
        stages.update(f"{name}.{field}" for field in spec)
        for sub in spec.get("pipeline") or []:
            _stage_names(sub, stages, operators)
        return
    operators.update(_operators(spec))


def shape_problems(shape: CommandShape, oldest: Version = FLOOR) -> list[str]:
    """Why a MongoDB from ``oldest`` on would refuse a command of this shape (nothing the tables
    hold has been removed by the newest: ``INDEX_SPEC_REMOVED`` is checked too)."""
    name = shape.command
    fields = COMMAND_FIELDS.get(name, OTHER_COMMANDS.get(name))
    if fields is None:
        return [f"{name}: a command not in the table (check MongoDB's definition, then add it)"]
    statements = STATEMENT_FIELDS["updates" if name == "update" else "deletes"]
    checks: list[tuple[str, Mapping[str, Version], str]] = [
        *((f"{name}.{f}", {**GENERIC_ARGUMENTS, **fields}, f) for f in shape.fields),
        *((f"{name} statement field {f}", statements, f) for f in shape.statement_fields),
        *((f"index specification field {f}", INDEX_SPEC_FIELDS, f) for f in shape.index_fields),
        *((f"operator {o}", {**STAGES, **OPERATORS}, o) for o in shape.operators),
    ]
    for stage in shape.stages:
        stage_name, _, field = stage.partition(".")
        if field:
            checks.append((stage, STAGE_FIELDS[stage_name], field))
        else:
            checks.append((f"stage {stage}", STAGES, stage))
    problems = [
        f"{label}: {_since(table, key)}" for label, table, key in checks if not known(table, key, oldest)
    ]
    problems += [
        f"index specification field {f}: removed in MongoDB {text(INDEX_SPEC_REMOVED[f])}"
        for f in shape.index_fields
        if f in INDEX_SPEC_REMOVED
    ]
    return problems


def _since(table: Mapping[str, Version], name: str) -> str:
    since = table.get(name)
    return f"new in MongoDB {text(since)}" if since else "unknown to MongoDB"
