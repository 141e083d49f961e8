"""`find`: where each selected order is now (the source, the archive, or which cold file), and
the order itself, masked unless ``--show-pii``. Reads only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bson import ObjectId, json_util
from pymongo import MongoClient

from order_archiver.cold.check import lost_line, lost_now
from order_archiver.cold.search import ColdQuery, find_in_cold
from order_archiver.cold.store import ColdStore
from order_archiver.cold.tier import cold_store
from order_archiver.context import RunContext
from order_archiver.documents import Document, MongoCollection, mapping_or_empty
from order_archiver.errors import ConfigError
from order_archiver.logs import plural
from order_archiver.mongodb.deployment import check_deployments
from order_archiver.mongodb.forgotten import id_forms, orders_of
from order_archiver.mongodb.storage import Collections
from order_archiver.operations.numbers import case_hints
from order_archiver.orders.erasing import CLIENT
from order_archiver.orders.pii import mask_pii
from order_archiver.retry import Retry
from order_archiver.settings import Settings

MAX_SHOWN = 100  # orders a --client shows at most (the count says how many there are)


@dataclass(frozen=True)
class FindSelection:
    numeros: tuple[str, ...] = ()
    order_id: object = None
    # As typed (24 hex digits): the ObjectId and the text forms of it are looked for (id_forms).
    client_id: ObjectId | str | None = None

    def check(self) -> None:
        if not self.numeros and self.order_id is None and self.client_id is None:
            raise ConfigError("find needs --numero, --id or --client")

    def source_filter(self) -> Document:
        if self.numeros:
            return {"numero_commande": {"$in": list(self.numeros)}}
        if self.order_id is not None:
            return {"_id": self.order_id}
        return {"client_id": {"$in": id_forms(self.client_id)}}

    def archive_filter(self) -> Document:
        if self.client_id is not None and not self.numeros and self.order_id is None:
            return orders_of(CLIENT, self.client_id)
        return self.source_filter()


@dataclass
class Place:
    where: str  # source, archive, cold
    document: Document
    file: str | None = None  # the cold file's URL


@dataclass
class FindReport:
    show_pii: bool
    orders: dict[str, list[Place]] = field(default_factory=dict)  # by _id, in the order found
    asked: tuple[str, ...] = ()  # the numbers asked for (those not found are named)
    hints: dict[str, str] = field(default_factory=dict)  # a number not found: the one archived in upper case
    # Something asked for not found while the cold tier's list of files names published files
    # gone (removed by hand, lost): their URLs and how many orders they held (status, verify say it)
    cold_lost_files: list[str] = field(default_factory=list)
    cold_lost_orders: int = 0

    def add(self, place: Place) -> None:
        self.orders.setdefault(str(place.document.get("_id")), []).append(place)

    @property
    def not_found(self) -> list[str]:
        found = {str(p.document.get("numero_commande")) for places in self.orders.values() for p in places}
        return [numero for numero in self.asked if numero not in found]

    @property
    def complete(self) -> bool:
        return bool(self.orders) and not self.not_found

    def _shown(self, place: Place) -> Document:
        if self.show_pii:
            return place.document
        if place.where == "source":  # a source order: every field not known to be non-personal
            return dict(mapping_or_empty(mask_pii({"source": place.document})["source"]))
        return mask_pii(place.document)

    def as_dict(self) -> dict[str, object]:
        return {
            "orders": [
                {
                    "_id": order_id,
                    "numero_commande": places[0].document.get("numero_commande"),
                    "places": [
                        {"where": p.where, "file": p.file, "document": _plain(self._shown(p))} for p in places
                    ],
                }
                for order_id, places in self.orders.items()
            ],
            "not_found": self.not_found,
            "cold_lost_files": self.cold_lost_files,
            "cold_lost_orders": self.cold_lost_orders,
            "complete": self.complete,
        }

    def lines(self) -> list[str]:
        out = [
            f"{plural(len(self.orders), 'order')} found"
            + ("" if self.show_pii else " (personal data masked)")
        ]
        for order_id, places in self.orders.items():
            where = ", ".join(p.where + (f" {p.file}" if p.file else "") for p in places)
            shown = places[-1] if len(places) == 1 else next(p for p in places if p.where != "source")
            which = f" (the {shown.where}'s copy below; --json: each)" if len(places) > 1 else ""
            out.append(f"{places[0].document.get('numero_commande')} (_id {order_id}): {where}{which}")
            out.append(
                json_util.dumps(
                    self._shown(shown), ensure_ascii=False, json_options=json_util.RELAXED_JSON_OPTIONS
                )
            )
        if self.not_found:
            named = [
                n + (f" ({self.hints[n]}: numbers match exactly)" if n in self.hints else "")
                for n in self.not_found
            ]
            out.append("not found anywhere (exit 3): " + ", ".join(named))
        if self.cold_lost_files:
            out.append(lost_line(self.cold_lost_files, self.cold_lost_orders))
        return out


def _plain(document: Mapping[str, object]) -> object:
    """Relaxed Extended JSON, as a JSON value (dates ISO-8601, ObjectIds ``{"$oid": ...}``)."""
    import json

    return json.loads(json_util.dumps(document, json_options=json_util.RELAXED_JSON_OPTIONS))


def find_orders(
    client: MongoClient[Document],
    settings: Settings,
    selection: FindSelection,
    *,
    show_pii: bool = False,
    context: RunContext | None = None,
    archive_client: MongoClient[Document] | None = None,
) -> FindReport:
    selection.check()
    check_deployments(client, settings, archive_client)
    collections = Collections.of(client, settings, archive_client)
    run = context or RunContext()
    report = FindReport(show_pii, asked=selection.numeros)

    def read(collection: MongoCollection, query: Document, side: str) -> list[Document]:
        return run.on(side).retrying(
            lambda: list(collection.find(query).limit(MAX_SHOWN)), purpose=Retry.READ
        )

    for document in read(collections.orders_primary, selection.source_filter(), collections.source_side):
        report.add(Place("source", document))
    for document in read(collections.archive, selection.archive_filter(), collections.archive_side):
        report.add(Place("archive", document))
    store = cold_store(settings, run)
    if store is not None:
        query = ColdQuery(selection.numeros, selection.order_id, selection.client_id)
        for url, document in find_in_cold(store, query):
            report.add(Place("cold", dict(document), url))
    if report.not_found:
        report.hints = case_hints(
            report.not_found, collections.archive, run.on(collections.archive_side), settings
        )
    if store is not None and not report.complete:
        _lost_cold_files(report, store, collections, run)
    return report


def _lost_cold_files(report: FindReport, store: ColdStore, collections: Collections, run: RunContext) -> None:
    """For a find that did not find all it was asked: the published files gone (``lost_now``)."""
    lost = lost_now(store, collections.checkpoints, run.on(collections.archive_side))
    report.cold_lost_files, report.cold_lost_orders = lost.missing_files, lost.missing
