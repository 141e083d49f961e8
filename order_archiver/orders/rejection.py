"""A rejected order: one that cannot be archived, and why (a domain value: what the finishing
step decides, what the rejects collection lists)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import bson
from bson import ObjectId

from order_archiver.documents import OrderId

# A rejects entry holds an order's number and the reason, never the order: both bounded, so
# that an entry stays far under 16 MB whatever the order holds (one that was little more than
# a number near 16 MB made an entry over it, 17420 on its upsert: every run failed there).
NUMERO_KEPT_CHARS = 200
REASON_KEPT_CHARS = 1_000


# An order's ``_id`` keys its entry unless it is over this many bytes (as BSON): then a stand-in
# does (``listed_id``). An ``_id`` near 16 MB made an entry over it (17420 on its upsert: the run
# failed, and the next resumed past the order, its rejection lost), and a few large ones in one
# ``$in`` a command over 16 MB + 16 KiB (every run, ``rejects`` and ``status`` failed). 1,024
# bytes: MongoDB's index key limit before 4.2; ten thousand such ids make a read of 10 MB.
ID_KEPT_BYTES = 1_024
STAND_IN = "_id too large to list"  # how a stand-in key begins
SHOWN_ID_CHARS = 60  # what a stand-in shows of the id


def id_bytes(order_id: object) -> int:
    """The size of an order's ``_id`` as BSON (as a field of a document)."""
    return len(bson.encode({"_id": order_id}))


def too_large_id(order_id: object) -> str | None:
    """Why an order whose ``_id`` is over ``ID_KEPT_BYTES`` is not archived (the archive's reads
    send a chunk's ids in one command: BATCH_SIZE up to 10,000, 10 MB of such ids; an ``_id``
    near 16 MB made that command over it, pymongo's DocumentTooLarge, every run failing at its
    chunk), or None. An ObjectId is never (12 bytes)."""
    if isinstance(order_id, ObjectId):
        return None
    size = id_bytes(order_id)
    return (
        f"_id too large: {size:,} bytes as BSON (at most {ID_KEPT_BYTES:,})" if size > ID_KEPT_BYTES else None
    )


def listed_id(order_id: OrderId) -> OrderId:
    """The key of an order's entry in the rejects list: its ``_id``, or over ``ID_KEPT_BYTES`` a
    stand-in text naming it (its size, a digest of it, its first characters): the same for the
    same id, a few hundred bytes whatever the id."""
    encoded = bson.encode({"_id": order_id})
    if len(encoded) <= ID_KEPT_BYTES:
        return order_id
    digest = hashlib.sha256(encoded).hexdigest()[:32]
    return f"{STAND_IN} ({len(encoded):,} bytes, sha256 {digest}): {str(order_id)[:SHOWN_ID_CHARS]}..."


def is_stand_in(key: object) -> bool:
    """Whether a rejects entry's key is a stand-in (``listed_id``) rather than the order's ``_id``."""
    return isinstance(key, str) and key.startswith(STAND_IN)


def bounded(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


@dataclass(frozen=True)
class Rejection:
    """One order that cannot be archived, and why."""

    order_id: OrderId
    reason: str
    numero_commande: str | None = None
    # The key of its entry in the rejects list (``listed_id``), and how logs name it.
    key: OrderId = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", listed_id(self.order_id))
        object.__setattr__(self, "reason", bounded(self.reason, REASON_KEPT_CHARS))
        if self.numero_commande is not None:
            object.__setattr__(self, "numero_commande", bounded(self.numero_commande, NUMERO_KEPT_CHARS))

    @classmethod
    def of(cls, order: Mapping[str, object], reason: str) -> Rejection:
        """The rejection of an order (raw or finished): its ``_id``, and its number when it has one."""
        numero = order.get("numero_commande")
        return cls(order.get("_id"), reason, numero if isinstance(numero, str) else None)
