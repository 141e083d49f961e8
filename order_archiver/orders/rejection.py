"""A rejected order: one that cannot be archived, and why (a domain value: what the finishing
step decides, what the rejects collection lists)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from order_archiver.documents import OrderId

# A rejects entry holds an order's number and the reason, never the order: both bounded, so
# that an entry stays far under 16 MB whatever the order holds (one that was little more than
# a number near 16 MB made an entry over it, 17420 on its upsert: every run failed there).
NUMERO_KEPT_CHARS = 200
REASON_KEPT_CHARS = 1_000


def bounded(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


@dataclass(frozen=True)
class Rejection:
    """One order that cannot be archived, and why."""

    order_id: OrderId
    reason: str
    numero_commande: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", bounded(self.reason, REASON_KEPT_CHARS))
        if self.numero_commande is not None:
            object.__setattr__(self, "numero_commande", bounded(self.numero_commande, NUMERO_KEPT_CHARS))

    @classmethod
    def of(cls, order: Mapping[str, object], reason: str) -> Rejection:
        """The rejection of an order (raw or finished): its ``_id``, and its number when it has one."""
        numero = order.get("numero_commande")
        return cls(order.get("_id"), reason, numero if isinstance(numero, str) else None)
