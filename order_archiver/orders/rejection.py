"""A rejected order: one that cannot be archived, and why (a domain value: what the finishing
step decides, what the rejects collection lists)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from order_archiver.documents import OrderId


@dataclass(frozen=True)
class Rejection:
    """One order that cannot be archived, and why."""

    order_id: OrderId
    reason: str
    numero_commande: str | None = None

    @classmethod
    def of(cls, order: Mapping[str, object], reason: str) -> Rejection:
        """The rejection of an order (raw or finished): its ``_id``, and its number when it has one."""
        numero = order.get("numero_commande")
        return cls(order.get("_id"), reason, numero if isinstance(numero, str) else None)
