"""Personal data in the archive (GDPR): what is kept, hashed or dropped, and how a document
is masked before it is printed. Pure; read by the settings, the enrichment, the erasure and
the purge.

Personal by allow-list: an order field is personal unless it is known not to be. Known are
the contract's fields that say nothing of a person (``NON_PERSONAL_ORDER_FIELDS``: ids, the
business key, the status, the dates, the items' dish and quantity) and those the user
declares (``ARCHIVE_NON_PERSONAL_FIELDS``). Everything else an order holds (its delivery
address, and a field the contract does not name: ``instructions_livraison: "Digicode 4821,
appeler Mme Morvan au 06 ..."``) is hashed or dropped under ``ARCHIVE_PII``, masked in what is
printed and erased by ``forget`` and ``ARCHIVE_PII_RETENTION``."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

PiiMode = Literal["keep", "hash", "drop"]
PII_MODES: tuple[str, ...] = get_args(PiiMode)
# A person's reference in the archive (the client: name, e-mail, phone; the courier: name):
# who they are and how to reach them. The rest of a reference is its id, kept.
PII_FIELDS = ("email", "telephone", "nom", "prenom")
COURIER_PII_FIELDS = ("nom", "prenom")
ORDER_PII_FIELDS = ("adresse_livraison",)  # the contract's one personal order field

# On each document ``simulate`` writes (its refills and --reset touch only such collections):
# says nothing of a person. Erased, a restored order lost it, and simulate then refused the
# database as holding documents it did not generate.
SIMULATE_MARK = "_generated_by_simulate"
# The order fields the contract names that say nothing of a person: what accounting needs
# (and simulate's mark).
NON_PERSONAL_ORDER_FIELDS = frozenset(
    {
        "_id",
        "numero_commande",
        "status",
        "date_commande",
        "date_livraison",
        "client_id",
        "livreur_id",
        "restaurant_id",
        "items",
        SIMULATE_MARK,
    }
)
NON_PERSONAL_ITEM_FIELDS = frozenset({"menu_id", "quantite"})  # an item's, in ``items``
ITEMS = "items"


@dataclass(frozen=True)
class OrderFields:
    """Which fields of an order are not personal: the contract's, and the user's declared
    ones (``ARCHIVE_NON_PERSONAL_FIELDS``: ``canal`` for an order field, ``items.options``
    for an item's). Every other field is personal."""

    declared: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, names: Iterable[str]) -> OrderFields:
        """From the setting's names; ``ValueError`` naming what cannot be declared."""
        declared = set()
        for name in (n.strip() for n in names):
            if not name:
                continue
            parts = name.split(".")
            if any(not p or p.startswith("$") for p in parts) or (len(parts) > 1 and parts[0] != ITEMS):
                raise ValueError(
                    f"{name!r} is not an order field (a top-level name, or items.<name> for an item's)"
                )
            if len(parts) > 2:
                raise ValueError(f"{name!r}: only an order's fields and its items' can be declared")
            if name in ORDER_PII_FIELDS:
                raise ValueError(f"{name} is the delivery address: personal data, it cannot be declared")
            declared.add(name)
        return cls(frozenset(declared))

    @property
    def digest(self) -> str:
        """A short name of the declared fields: the first 8 hex digits of their SHA-256."""
        return hashlib.sha256(",".join(sorted(self.declared)).encode("utf-8")).hexdigest()[:8]

    def order_field(self, name: str) -> bool:
        """Whether an order's field ``name`` is known not to be personal."""
        return name in NON_PERSONAL_ORDER_FIELDS or name in self.declared

    def item_field(self, name: str) -> bool:
        return name in NON_PERSONAL_ITEM_FIELDS or f"{ITEMS}.{name}" in self.declared

    def personal_order(self, order: Mapping[str, object], personal: Any) -> dict[str, object]:
        """``order`` with ``personal(value)`` in place of each personal value (not ``None``:
        nothing to hide), in the order's field order; the items' personal fields too."""
        shown: dict[str, object] = {}
        for name, value in order.items():
            if name == ITEMS and isinstance(value, list):
                shown[name] = [self._item(item, personal) for item in value]
            elif self.order_field(name) or value is None:
                shown[name] = value
            else:
                shown[name] = personal(value)
        return shown

    def _item(self, item: Any, personal: Any) -> Any:
        if not isinstance(item, Mapping):
            return item
        return {k: (v if self.item_field(k) or v is None else personal(v)) for k, v in item.items()}


CONTRACT_FIELDS = OrderFields()  # the contract's non-personal fields, none declared


@dataclass(frozen=True)
class PiiPolicy:
    """What the archive keeps of personal data (GDPR): ``keep`` it, ``hash`` it (keyed
    HMAC-SHA256, tagged with the key's id: equal values stay comparable, cannot be reversed
    without the key, and a key rotation shows) or ``drop`` it (the field is null)."""

    mode: PiiMode = "keep"
    key: str | None = None
    fields: OrderFields = CONTRACT_FIELDS

    @property
    def key_id(self) -> str | None:
        """A short, public name of the key: the first 8 hex digits of its SHA-256."""
        return hashlib.sha256(self.key.encode("utf-8")).hexdigest()[:8] if self.key else None

    @property
    def tag(self) -> str:
        """What an archive document records of the policy it was written under: the mode, the
        key's id, and the declared non-personal fields' (``fields:<8 hex>``; they decide what
        is hashed, dropped or erased, hence the fingerprints: a document written under other
        ones is re-archived, and says why)."""
        tag = f"hash:{self.key_id}" if self.mode == "hash" else self.mode
        return f"{tag};fields:{self.fields.digest}" if self.fields.declared else tag

    def apply(self, person: dict[str, object] | None) -> dict[str, object] | None:
        """A client or courier reference under the policy (its ``id`` is kept)."""
        if person is None or self.mode == "keep":
            return person
        return {k: (self._value(v) if k in PII_FIELDS else v) for k, v in person.items()}

    def apply_order(self, order: Mapping[str, object]) -> dict[str, object]:
        """An order under the policy: each of its personal fields (the delivery address, and
        every field not known to be non-personal) kept, hashed or dropped."""
        if self.mode == "keep":
            return dict(order)
        return self.fields.personal_order(order, self._value)

    def _value(self, value: Any) -> Any:
        if self.mode == "drop" or value is None:
            return None
        if is_pseudonym(value):
            # Already one: a restored order holds its archived copy's hashes. Hashed again, its
            # next write would replace each by a hash of itself (no longer comparable with
            # other orders' values), revise an unchanged order, and the purge would take that
            # for its version. One made under an earlier key stays: its key id says which.
            return value
        return pseudonymise(value, self.key or "")


# What a printed document hides of a person (the client, the courier): who they are, how to
# reach them, where they live.
MASKED_PERSON_FIELDS = ("nom", "prenom", "email", "telephone", "adresse")
MASKED = "***"


def mask_pii(document: Mapping[str, object], fields: OrderFields | None = None) -> dict[str, object]:
    """A copy of an archive document fit to print on a terminal, a JSON report or a samples
    file: the client's and the courier's names, e-mail and phone, the delivery address, and
    every field of its ``source`` copy not known to be non-personal become ``***``; the
    fields stay, so a reader sees that they exist."""
    known = fields or CONTRACT_FIELDS
    shown: dict[str, object] = {}
    for name, value in document.items():
        if name in ORDER_PII_FIELDS and value is not None:
            shown[name] = MASKED
        elif name in ("client", "livreur") and isinstance(value, Mapping):
            shown[name] = {
                k: (MASKED if k in MASKED_PERSON_FIELDS and v is not None else v) for k, v in value.items()
            }
        elif name == "source" and isinstance(value, Mapping):
            shown[name] = known.personal_order(value, lambda _: MASKED)
        else:
            shown[name] = value
    return shown


_PSEUDONYM = re.compile(r"hmac-sha256:[0-9a-f]{8}:[0-9a-f]{64}")


def is_pseudonym(value: object) -> bool:
    """``value`` is what ``pseudonymise`` makes (under any key), exactly."""
    return isinstance(value, str) and _PSEUDONYM.fullmatch(value) is not None


def pseudonymise(value: Any, key: str) -> Any:
    """``hmac-sha256:<key id>:<hex>`` of the trimmed, lower-cased text; None stays None. The
    key id tells hashes made under different keys apart (after a rotation). A value that is
    not text (a number, a sub-document) is hashed as its text: the archive keeps its hash."""
    if value is None:
        return None
    text = str(value).strip().lower()
    digest = hmac.new(key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{PiiPolicy('hash', key).key_id}:{digest}"
