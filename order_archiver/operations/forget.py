"""`forget --client ID`: a client's right to erasure (RGPD article 17) in the archive.

What it erases, in every archived order of the client: the client's name, e-mail and phone
(``client.nom``, ``prenom``, ``email``, ``telephone``) and the delivery address (in the
document and in its copy of the source order), whatever ``ARCHIVE_PII`` wrote them as (clear
or hashed). What it keeps: what accounting needs (dates, amounts, items, the restaurant, the
courier's reference) and the client's id, an opaque key that lets support find the orders and
a second request find nothing left; each erased document gets ``forgotten_at``. Its
``source_hash`` is kept: it names the version of the order the archive holds (not the data),
so that a batch does not archive the unchanged source order again. What it cannot reach: the
source orders and the ``Client`` record (the application's data: erase them there, or a
source order corrected later is archived again with what it holds), and backups.

Dry run unless ``run``; idempotent (a second run erases nothing and says so). The rejects list
holds ids, numbers and reasons only: nothing of a person to erase there. The log line names
the client's id and the count, never the data.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import MongoClient

from config import Settings
from logger import get_logger
from order_archiver.mongodb.deployment import check_deployments
from order_archiver.mongodb.storage import Collections, Document
from order_archiver.orders.pii import ORDER_PII_FIELDS, PII_FIELDS
from order_archiver.retry import ARCHIVE_SIDE, Retry, named_side, retrying

log = get_logger("forget")

# What ARCHIVE_PII governs (pii.py), in the client's reference and in the order and its copy.
CLIENT_PII = {f"client.{name}": None for name in PII_FIELDS}
ORDER_PII = {name: None for name in ORDER_PII_FIELDS}
SOURCE_PII = {f"source.{name}": None for name in ORDER_PII_FIELDS}
ERASED_FIELDS = (*CLIENT_PII, *ORDER_PII, *SOURCE_PII)


def parse_client_id(text: str) -> ObjectId:
    """A client's ``_id`` as the contract has it: an ObjectId, 24 hexadecimal digits."""
    if not ObjectId.is_valid(text) or len(text) != 24:
        raise ValueError(f"expected a client _id of 24 hexadecimal digits, got {text!r}")
    return ObjectId(text)


@dataclass
class ForgetReport:
    client_id: str
    run: bool
    orders: int = 0  # the client's archived orders
    erased: int = 0  # those that held personal data (erased, or would be)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        verb = "erased" if self.run else "would erase (dry run: --run to erase)"
        if not self.orders:
            return [f"client {self.client_id}: no archived order"]
        if not self.erased:
            return [f"client {self.client_id}: {self.orders} archived orders, no personal data left to erase"]
        return [
            f"client {self.client_id}: {self.orders} archived orders; {verb} the name, e-mail, phone "
            f"and delivery address of {self.erased}"
        ]


def archived_orders_of(client_id: ObjectId) -> dict[str, Any]:
    """The client's archived orders: by the reference, or (a dangling client) the source copy's."""
    return {"$or": [{"client.id": client_id}, {"source.client_id": client_id}]}


def _holding_personal_data(client_id: ObjectId) -> dict[str, Any]:
    return {
        "$and": [archived_orders_of(client_id), {"$or": [{field: {"$ne": None}} for field in ERASED_FIELDS]}]
    }


def forget_client(
    client: MongoClient[Document],
    settings: Settings,
    client_id: ObjectId,
    *,
    run: bool = False,
    stop_event: threading.Event | None = None,
    archive_client: MongoClient[Document] | None = None,
) -> ForgetReport:
    check_deployments(client, settings, archive_client)
    archive = Collections.of(client, settings, archive_client).archive
    report = ForgetReport(str(client_id), run)
    with named_side(ARCHIVE_SIDE if archive_client is not None else ""):
        report.orders = int(
            retrying(lambda: archive.count_documents(archived_orders_of(client_id)), stop_event=stop_event)
        )
        report.erased = int(
            retrying(
                lambda: archive.count_documents(_holding_personal_data(client_id)), stop_event=stop_event
            )
        )
        if run and report.erased:
            _erase(archive, client_id, stop_event)
    log.info(
        "forget: client %s: %d archived orders, %d %s",
        client_id,
        report.orders,
        report.erased,
        "erased" if run else "to erase (dry run)",
    )
    return report


def _erase(archive: Any, client_id: ObjectId, stop_event: threading.Event | None) -> None:
    """Three idempotent updates (each may be retried whole): the client's fields where the
    reference is an object, the addresses (the source copy's where there is one), the mark."""
    now = datetime.now(UTC)
    updates = [
        ({"client.id": client_id}, CLIENT_PII),
        (
            {"$and": [archived_orders_of(client_id), {"source": {"$type": "object"}}]},
            SOURCE_PII,
        ),
        (archived_orders_of(client_id), {**ORDER_PII, "forgotten_at": now}),
    ]
    for selection, fields in updates:
        retrying(
            functools.partial(archive.update_many, selection, {"$set": fields}),
            purpose=Retry.WRITE,
            stop_event=stop_event,
        )
