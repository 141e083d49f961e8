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


def mask_pii(document: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an archive document fit to print on a terminal: the client's e-mail and
    phone become ``***`` (the field stays, so a reader sees that it exists)."""
    shown = dict(document)
    client = shown.get("client")
    if isinstance(client, Mapping):
        shown["client"] = {k: ("***" if k in PII_FIELDS and v is not None else v) for k, v in client.items()}
    return shown


def pseudonymise(value: Any, key: str) -> Any:
    """``hmac-sha256:<hex>`` of the trimmed, lower-cased text; None stays None."""
    if value is None:
        return None
    text = str(value).strip().lower()
    digest = hmac.new(key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest}"
