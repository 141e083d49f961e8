"""The enrichment shared by batch and watch: one aggregation pipeline, one finishing step.

``build_enrichment_pipeline`` joins an order to its client, courier, restaurant and dishes
with equality ``$lookup``s (served by the referenced collections' ``_id`` index); the order
keeps every field it has. ``finish_archive_document`` does in Python what a pipeline
should not: validate, normalise dates, compute totals and list anomalies. Both are pure:
they serve one order (watch) or a cursor of millions (batch) alike, and test without a server.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Protocol

import bson
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128

from order_archiver.documents import ArchiveDocument, ArchiveItem
from order_archiver.errors import InvalidOrderError
from order_archiver.orders.pii import PiiPolicy
from order_archiver.orders.rejection import too_large_id

# Joined arrays get names no order field can clash with; the finishing step removes them.
_CLIENT, _COURIER, _RESTAURANT, _MENUS = "_x_client", "_x_livreur", "_x_restaurant", "_x_menus"
_JOINED = "_x_"  # the prefix of every field the pipeline adds


class NamedCollections(Protocol):
    """The settings' names of the referenced collections (``settings.Settings``)."""

    @property
    def clients_collection(self) -> str: ...

    @property
    def couriers_collection(self) -> str: ...

    @property
    def restaurants_collection(self) -> str: ...

    @property
    def menu_collection(self) -> str: ...


@dataclass(frozen=True)
class CollectionNames:
    clients: str = "Client"
    couriers: str = "Livreur"
    restaurants: str = "Restaurants"
    menu: str = "Menu"

    @classmethod
    def from_settings(cls, settings: NamedCollections) -> CollectionNames:
        return cls(
            clients=settings.clients_collection,
            couriers=settings.couriers_collection,
            restaurants=settings.restaurants_collection,
            menu=settings.menu_collection,
        )


def _lookup(source: str, local_field: str, as_field: str) -> dict[str, object]:
    return {"$lookup": {"from": source, "localField": local_field, "foreignField": "_id", "as": as_field}}


def build_enrichment_pipeline(
    match: Mapping[str, object] | Sequence[Mapping[str, object]],
    names: CollectionNames,
    *,
    sort_by_id: bool = False,
    limit: int | None = None,
) -> list[dict[str, object]]:
    """The aggregation that turns matching orders into pre-archive documents.

    ``match`` is one filter, or several ``$match`` stages in a row (MongoDB coalesces them);
    ``sort_by_id`` walks orders in ``_id`` order (batch checkpoints on it);
    ``limit`` caps the orders. Orders already archived are skipped before this pipeline, by
    ``_id`` (``OrderSource.pages``): a join into the archive would fetch each archive document
    whole (source copy included) only to see that one exists, and could make the joined order
    too large (16 MB) beside a large one.
    Dishes join through ``items.menu_id``, a path through an array, which MongoDB documents
    for ``localField``; the referenced ids of client, courier and restaurant are read from
    the order's own fields, so the joins project only the names the archive keeps.
    """
    matches = [match] if isinstance(match, Mapping) else list(match)
    pipeline: list[dict[str, object]] = [{"$match": dict(stage)} for stage in matches]
    if sort_by_id:
        pipeline.append({"$sort": {"_id": 1}})
    if limit is not None:
        pipeline.append({"$limit": int(limit)})
    pipeline += [
        _lookup(names.clients, "client_id", _CLIENT),
        _lookup(names.couriers, "livreur_id", _COURIER),
        _lookup(names.restaurants, "restaurant_id", _RESTAURANT),
        _lookup(names.menu, "items.menu_id", _MENUS),
    ]
    # No $project: the order keeps every field it has (the archive keeps the source order as
    # it was, for restore and for the purge's version check); the finishing step takes from
    # the joined documents only the names it archives.
    return pipeline


# --- the delivered status ------------------------------------------------------------------


def status_forms(status: str) -> list[str]:
    """The ways one status is stored: composed (NFC, ``é`` as one code point) and decomposed
    (NFD, ``e`` + combining accent, as some tools and macOS write it). People see one word."""
    return list(dict.fromkeys(unicodedata.normalize(form, status) for form in ("NFC", "NFD")))


def status_match(status: str) -> str | dict[str, list[str]]:
    """The query value for ``{"status": ...}`` that matches every stored form of ``status``."""
    forms = status_forms(status)
    return forms[0] if len(forms) == 1 else {"$in": forms}


def is_status(value: object, status: str) -> bool:
    return isinstance(value, str) and unicodedata.normalize("NFC", value) == unicodedata.normalize(
        "NFC", status
    )


def folded_status(status: str) -> str:
    """``status`` as a person reads it: no case (casefold), no accents (NFKD without its
    combining marks), no spaces around it. ``Livrée``, ``livree`` and `` LIVRÉE `` fold alike."""
    decomposed = unicodedata.normalize("NFKD", status.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip()


def is_near_miss(value: object, status: str) -> bool:
    """``value`` reads as ``status`` (``folded_status``) but is none of the forms that match it
    (``status_forms``): an order holding it is never archived. DELIVERED_STATUS stays exact (the
    operator decides what is delivered); a near miss is only said. Not a string: never one."""
    return (
        isinstance(value, str)
        and value not in status_forms(status)
        and folded_status(value) == folded_status(status)
    )


# --- normalisation -----------------------------------------------------------------------


def as_utc(moment: datetime) -> datetime:
    """``moment`` with its offset; a naive datetime is UTC (pymongo decodes BSON dates that
    way, and every date here is stored in UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def retention_date(document: Mapping[str, object]) -> datetime | None:
    """The date ARCHIVE_RETENTION and ARCHIVE_PII_RETENTION count from: the delivery, or the
    order's date for an order archived without a ``date_livraison`` (dirty data: it is not
    kept for ever); None when neither is a date."""
    for name in ("date_livraison", "date_commande"):
        value = document.get(name)
        if isinstance(value, datetime):
            return as_utc(value)
    return None


def parse_datetime(value: object) -> datetime:
    """A datetime in UTC from a BSON date or an ISO-8601 string; ``ValueError`` otherwise.

    Naive datetimes are UTC (pymongo decodes BSON dates that way); a string without an
    offset is taken as UTC too, as the contract stores every date in UTC.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 64:
            raise ValueError("not an ISO-8601 date")
        try:
            parsed = datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
        except ValueError:
            raise ValueError("not an ISO-8601 date") from None
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    elif isinstance(value, DatetimeMS):
        raise ValueError("a date out of range (before year 1 or after 9999)")
    else:
        raise ValueError(f"a {type(value).__name__}, not a date")
    return as_utc(parsed).astimezone(UTC)


def _as_price(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, (int, float, Decimal)):
        try:
            number = float(value)
        except (ValueError, OverflowError, InvalidOperation):
            return None
        return number if math.isfinite(number) and number >= 0 else None
    return None


def _as_quantity(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 1 else None
    if isinstance(value, float) and value.is_integer() and value >= 1:
        return int(value)
    return None


def _first(joined: object) -> Mapping[str, object] | None:
    if isinstance(joined, list) and joined and isinstance(joined[0], Mapping):
        return joined[0]
    return None


def _reference(
    order: Mapping[str, object],
    id_field: str,
    joined: object,
    fields: tuple[str, ...],
    name: str,
    anomalies: list[str],
) -> dict[str, object] | None:
    ref_id = order.get(id_field)
    if ref_id is None:
        anomalies.append(f"{name}_id_missing")
        return None
    found = _first(joined)
    if found is None:
        anomalies.append(f"{name}_missing")
        return None
    return {"id": ref_id, **{field: found.get(field) for field in fields}}


def _match_key(value: object) -> Hashable:
    """A key under which two ids are equal as MongoDB compares them (``$lookup`` joined them
    so): numbers by value across int, Int64, double and Decimal128 (``Decimal128("5")`` is
    ``5``), booleans apart from numbers, anything unhashable by its representation."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, (int, float, Decimal)):
        try:
            number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        except (InvalidOperation, ValueError):
            return ("number", repr(value))
        return ("nan",) if number.is_nan() else ("number", number)
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


CLIENT_FIELDS = ("nom", "prenom", "email", "telephone")


def _kept_id(raw: Mapping[str, object]) -> None:
    """An order whose ``_id`` is too large to be read by it with others is not archived."""
    reason = too_large_id(raw.get("_id"))
    if reason is not None:
        raise InvalidOrderError(reason)


def _business_key(raw: Mapping[str, object]) -> str:
    numero = raw.get("numero_commande")
    if numero is None or (isinstance(numero, str) and not numero.strip()):
        raise InvalidOrderError("numero_commande missing")
    if not isinstance(numero, str):
        raise InvalidOrderError(f"numero_commande is a {type(numero).__name__}, not a string")
    return numero


def _order_date(raw: Mapping[str, object]) -> datetime:
    if raw.get("date_commande") is None:
        raise InvalidOrderError("date_commande missing")
    try:
        return parse_datetime(raw["date_commande"])
    except ValueError as exc:
        raise InvalidOrderError(f"date_commande unreadable: {exc}") from None


def _delivery_date(raw: Mapping[str, object], anomalies: list[str]) -> datetime | None:
    value = raw.get("date_livraison")
    if value is None:
        anomalies.append("date_livraison_missing")
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        anomalies.append("date_livraison_unreadable")
        return None


def _archive_items(raw: Mapping[str, object], anomalies: list[str]) -> tuple[list[ArchiveItem], float]:
    """The items with their dishes' names and prices, and the total of those that resolved."""
    raw_items = raw.get("items")
    if raw_items is None:
        raw_items = []
    if not isinstance(raw_items, list):
        raise InvalidOrderError(f"items is a {type(raw_items).__name__}, not a list")
    joined_menus = raw.get(_MENUS)
    menus = {
        _match_key(menu.get("_id")): menu
        for menu in (joined_menus if isinstance(joined_menus, list) else [])
        if isinstance(menu, Mapping)
    }
    items: list[ArchiveItem] = []
    total = 0.0
    for index, item in enumerate(raw_items):
        if not isinstance(item, Mapping):
            raise InvalidOrderError(f"items[{index}] is not a document")
        quantity = _as_quantity(item.get("quantite"))
        if quantity is None:
            raise InvalidOrderError(f"items[{index}].quantite is not a whole number >= 1")
        menu_id = item.get("menu_id")
        menu = menus.get(_match_key(menu_id)) if menu_id is not None else None
        name = price = subtotal = None
        if menu is None:
            anomalies.append("menu_missing")
        else:
            name = menu.get("nom")
            price = _as_price(menu.get("prix"))
            if price is None:
                anomalies.append("menu_price_invalid")
            else:
                subtotal = round(price * quantity, 2)
                total += subtotal
        items.append(
            {"menu_id": menu_id, "nom": name, "prix": price, "quantite": quantity, "sous_total": subtotal}
        )
    if not items:
        anomalies.append("no_items")
    return items, total


def finish_archive_document(
    raw: Mapping[str, object], *, archived_by: str, archived_at: datetime, pii: PiiPolicy | None = None
) -> ArchiveDocument:
    """The contract's archive document for one enriched order; ``InvalidOrderError`` if the
    order cannot be archived (an ``_id`` too large, no business key, no readable order date,
    malformed items)."""
    _kept_id(raw)
    numero = _business_key(raw)
    policy = pii or PiiPolicy()
    source = policy.apply_order(source_order(raw))  # the copy keeps no more than the policy allows
    date_commande = _order_date(raw)
    anomalies: list[str] = []
    date_livraison = _delivery_date(raw, anomalies)
    items, total = _archive_items(raw, anomalies)

    status = raw.get("status")
    document: ArchiveDocument = {
        "_id": raw["_id"],
        "numero_commande": numero,
        "status": unicodedata.normalize("NFC", status if isinstance(status, str) else str(status)),
        "date_commande": date_commande,
        "date_livraison": date_livraison,
        "client": policy.apply(
            _reference(raw, "client_id", raw.get(_CLIENT), CLIENT_FIELDS, "client", anomalies)
        ),
        "livreur": policy.apply(
            _reference(raw, "livreur_id", raw.get(_COURIER), ("nom", "prenom"), "livreur", anomalies)
        ),
        "restaurant": _reference(
            raw, "restaurant_id", raw.get(_RESTAURANT), ("nom", "type_cuisine"), "restaurant", anomalies
        ),
        "items": items,
        "montant_total": round(total, 2),
        "adresse_livraison": source.get("adresse_livraison"),
        "archived_at": archived_at,
        "revised_at": None,  # set when a correction of the delivered order replaces this document
        "archived_by": archived_by,
        "anomalies": list(dict.fromkeys(anomalies)),
        # The order as the source held it: every field, the same BSON types (restore; the
        # purge deletes only this version), and its fingerprint (a correction is a new one).
        "source": source,
        "source_hash": source_hash(source),
        "pii_policy": policy.tag,  # what ARCHIVE_PII (and its key) this document was written under
    }
    return document


def source_hash(source: Mapping[str, object]) -> str:
    """A fingerprint of a source order as the archive keeps it (under ARCHIVE_PII: a dropped
    address is not in it, a hashed one only keyed): its BSON, field order and types included."""
    return hashlib.sha256(bson.encode(source)).hexdigest()[:32]


def source_order(raw: Mapping[str, object]) -> dict[str, object]:
    """The source order of an enriched one: its own fields, in their order, without the joins."""
    return {key: value for key, value in raw.items() if not key.startswith(_JOINED)}
