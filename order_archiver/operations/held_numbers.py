"""`restore`: an order whose ``numero_commande`` another order of the source holds is left alone.

The source's ``{numero_commande}`` index is not unique (``batch`` builds it plain: the source is
the application's, its data dirty). Without this check a restore put a second order under a
number the application had given again: the next batch rejected one ("numero_commande already
archived for another order"), and once ``ARCHIVE_RETENTION`` had deleted the archived copy, a
later batch archived the other order under the number: the number named another order than it
used to, and nothing said so.

What is guaranteed, and why no more: *check, insert, check again*, a chunk at a time.

- Before a chunk's insert, one read on the primary, on the ``{numero_commande}`` index, of the
  chunk's numbers (at most 500, ``$in``; per number its lowest and highest ``_id``: a reply of
  one document per number, however many orders dirty data put under it) names another order
  holding one: that copy is left alone and reported (exit 3), as one the source holds with other
  content. Two copies of one
  chunk sharing a number (the cold tier's files may hold a number given twice): the first goes.
- A writer that gives one of those numbers to another order between that read and the insert
  (a window of one round trip) is not stopped: MongoDB checks a value across documents only with
  a unique index (the application's choice, not ours: then the insert is refused, 11000, and
  reported), and a transaction does not help (it conflicts on the documents both write, not on
  a document another inserts: a read then an insert in one is still a race).
- The same read after the insert finds that writer's order: the restore reports the number as
  shared (exit 3), never silently. The source then holds two orders under it, as the writer
  alone would have made; the next batch archives neither again under a new owner: the restored
  order is the one the archive holds under that number (same ``_id``), the other is rejected
  and listed by ``rejects``. (Restored from the cold tier, the archive collection no longer
  holds the number: the other order is archived under it, and this report is the trace.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from order_archiver.context import RunContext
from order_archiver.documents import OrderId
from order_archiver.mongodb.storage import MongoCollection


@dataclass(frozen=True)
class HeldNumber:
    """A restored order's number held by another order of the source (``held_by``)."""

    numero: str
    id: str  # the order restored, or left alone
    held_by: str  # the other order holding the number
    restored: bool  # False: left alone (found before the insert); True: raced (found after it)

    def line(self) -> str:
        return f"{self.numero} (order {self.id}; held by order {self.held_by})"


def numero_of(copy: Mapping[str, object]) -> object:
    return copy.get("numero_commande")


@dataclass(frozen=True)
class NumberHolders:
    """The other orders of the source holding some copies' numbers: one bounded read."""

    orders: MongoCollection  # the primary: what the insert meets
    context: RunContext

    def before_insert(self, copies: list[dict[str, object]]) -> dict[OrderId, OrderId]:
        """Each copy whose number another order holds (or an earlier copy of the same list),
        by ``_id``, with that order's ``_id``."""
        held = self.holding(copies)
        claimed: dict[object, OrderId] = {}
        for copy in copies:
            numero = numero_of(copy)
            if numero is None or copy["_id"] in held:
                continue
            if numero in claimed:
                held[copy["_id"]] = claimed[numero]
            else:
                claimed[numero] = copy["_id"]
        return held

    def holding(self, copies: Iterable[Mapping[str, object]]) -> dict[OrderId, OrderId]:
        """Each copy whose number an order of another ``_id`` holds now, with that ``_id``. Every
        copy under a number is named (copies of one chunk may share one: each is held by the
        source's order, not only the last of them)."""
        by_numero: dict[object, list[OrderId]] = {}
        for copy in copies:
            if numero_of(copy) is not None:
                by_numero.setdefault(numero_of(copy), []).append(copy["_id"])
        if not by_numero:
            return {}
        # Per number, its lowest and highest _id: two holders at most, however many orders a
        # dirty number has ("N/A" on thousands): a reply of one document per number asked.
        pipeline: list[dict[str, object]] = [
            {"$match": {"numero_commande": {"$in": list(by_numero)}}},
            {"$group": {"_id": "$numero_commande", "low": {"$min": "$_id"}, "high": {"$max": "$_id"}}},
        ]
        found = self.context.retrying(lambda: list(self.orders.aggregate(pipeline)))
        held: dict[OrderId, OrderId] = {}
        for number in found:
            for mine in by_numero.get(number["_id"], []):
                other = number["low"] if number["low"] != mine else number["high"]
                if other != mine:
                    held.setdefault(mine, other)
        return held
