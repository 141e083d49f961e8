"""``--partition K/N``: which orders are share K of N. Pure: no server, no clock.

An order belongs to share ``hash(_id) mod N``, the hash computed here, on the client, over the
``_id``'s BSON encoding (BLAKE2b, 8 bytes): the same on every machine, every Python, every run,
and for as long as the order exists (an ``_id`` never changes). So N processes, each walking
the window's ``_id``s (an index range, ``_id`` only) and keeping its own, together read every
order exactly once, without agreeing on anything at run time, and each one's checkpoint, purge
and re-runs stay within its share.

Why not ranges, or a hash on the server (docs/deployment.md, "A first archive in N parts"):
ranges of ``_id`` need split points all N processes agree on (``splitVector`` needs a privilege
and is not on mongos; quantiles computed at start differ between processes that start a moment
apart, and an ``_id`` at the border would be read by both or neither), and are uneven when the
history is (ObjectIds grow with time, orders with the business). A hash computed by the server
(``$expr`` with ``$mod`` over ``$toLong``/``$toDate`` of the ``_id``, from 4.0) uses no index:
each process would fetch and test every delivered order of the window, and ObjectIds of one
second share their timestamp. Here each process reads ``_id``s only from the ``status, _id``
index and enriches, writes and purges its own quarter (of N).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import bson

from order_archiver.documents import OrderId

T = TypeVar("T")


def share_of(order_id: OrderId, count: int) -> int:
    """The share (0 to ``count - 1``) the order with this ``_id`` belongs to."""
    encoded = bson.encode({"_id": order_id})
    digest = hashlib.blake2b(encoded, digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Partition:
    """Share ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"a partition is K/N with 0 <= K < N, got {self.index}/{self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, order_id: OrderId) -> bool:
        return share_of(order_id, self.count) == self.index

    def owned(self, ids: Iterable[T]) -> list[T]:
        """Those of ``ids`` in this share, in their order."""
        return [one for one in ids if self.owns(one)]
