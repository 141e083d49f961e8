"""Personal data in the archive (GDPR): what is kept, hashed or dropped (names, e-mail,
phone, delivery address), and how a document is masked before it is printed. Pure; read by
the settings, the enrichment and the purge."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

PiiMode = Literal["keep", "hash", "drop"]
PII_MODES: tuple[str, ...] = get_args(PiiMode)
# What ARCHIVE_PII governs: who a person is and how to reach them (the client: name, e-mail,
# phone; the courier: name), and where the order went (its delivery address, in the archive
# document and in its copy of the source order). The rest (ids, dates, amounts, items,
# restaurant) is what accounting needs, always kept.
PII_FIELDS = ("email", "telephone", "nom", "prenom")
ORDER_PII_FIELDS = ("adresse_livraison",)


@dataclass(frozen=True)
class PiiPolicy:
    """What the archive keeps of personal data (GDPR): ``keep`` it, ``hash`` it (keyed
    HMAC-SHA256, tagged with the key's id: equal values stay comparable, cannot be reversed
    without the key, and a key rotation shows) or ``drop`` it (the field is null)."""

    mode: PiiMode = "keep"
    key: str | None = None

    @property
    def key_id(self) -> str | None:
        """A short, public name of the key: the first 8 hex digits of its SHA-256."""
        return hashlib.sha256(self.key.encode("utf-8")).hexdigest()[:8] if self.key else None

    @property
    def tag(self) -> str:
        """What an archive document records of the policy it was written under."""
        return f"hash:{self.key_id}" if self.mode == "hash" else self.mode

    def apply(self, person: dict[str, Any] | None) -> dict[str, Any] | None:
        """A client or courier reference under the policy (its ``id`` is kept)."""
        return None if person is None else self._fields(person, PII_FIELDS)

    def apply_order(self, order: Mapping[str, Any]) -> dict[str, Any]:
        """An order (or an archive document) with its delivery address under the policy."""
        return self._fields(order, ORDER_PII_FIELDS)

    def _fields(self, document: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
        if self.mode == "keep":
            return dict(document)
        return {k: (self._value(v) if k in fields else v) for k, v in document.items()}

    def _value(self, value: Any) -> Any:
        if self.mode == "drop" or value is None:
            return None
        return pseudonymise(value, self.key or "")


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
    """``hmac-sha256:<key id>:<hex>`` of the trimmed, lower-cased text; None stays None. The
    key id tells hashes made under different keys apart (after a rotation)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    digest = hmac.new(key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{PiiPolicy('hash', key).key_id}:{digest}"
