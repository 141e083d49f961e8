"""The client's personal data in the archive (GDPR): what is kept, hashed or dropped, and
how a document is masked before it is printed. Pure; read by the settings and the enrichment."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

PiiMode = Literal["keep", "hash", "drop"]
PII_MODES: tuple[str, ...] = get_args(PiiMode)
PII_FIELDS = ("email", "telephone")


@dataclass(frozen=True)
class PiiPolicy:
    """What the archive keeps of the client's email and phone (GDPR): ``keep`` them,
    ``hash`` them (keyed HMAC-SHA256: equal values stay comparable, cannot be reversed
    without the key) or ``drop`` them."""

    mode: PiiMode = "keep"
    key: str | None = None

    def apply(self, client: dict[str, Any] | None) -> dict[str, Any] | None:
        if client is None or self.mode == "keep":
            return client
        if self.mode == "drop":
            return {k: v for k, v in client.items() if k not in PII_FIELDS}
        return {k: (pseudonymise(v, self.key or "") if k in PII_FIELDS else v) for k, v in client.items()}


# What a printed document hides of a person (the client, the courier): who they are, how to
# reach them, where they live.
MASKED_PERSON_FIELDS = ("nom", "prenom", "email", "telephone", "adresse")
MASKED_ORDER_FIELDS = ("adresse_livraison",)


def mask_pii(document: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an archive document fit to print on a terminal, a JSON report or a samples
    file: the client's and the courier's names, e-mail and phone, and the delivery address
    (in the document and in its ``source`` copy) become ``***``; the fields stay, so a reader
    sees that they exist."""
    shown = _masked(document, MASKED_ORDER_FIELDS)
    for person in ("client", "livreur"):
        if isinstance(shown.get(person), Mapping):
            shown[person] = _masked(shown[person], MASKED_PERSON_FIELDS)
    if isinstance(shown.get("source"), Mapping):
        shown["source"] = _masked(shown["source"], MASKED_ORDER_FIELDS)
    return shown


def _masked(document: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {k: ("***" if k in fields and v is not None else v) for k, v in document.items()}


def pseudonymise(value: Any, key: str) -> Any:
    """``hmac-sha256:<hex>`` of the trimmed, lower-cased text; None stays None."""
    if value is None:
        return None
    text = str(value).strip().lower()
    digest = hmac.new(key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"
