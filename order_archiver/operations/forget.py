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

import threading
from dataclasses import asdict, dataclass
from typing import Any

from bson import ObjectId
from pymongo import MongoClient

from config import Settings
from logger import get_logger
from order_archiver.mongodb.deployment import check_deployments
from order_archiver.mongodb.erasure import (
    BY_REQUEST,
    PERSONAL_FIELDS,
    erase_personal_data,
    holds_personal_data,
)
from order_archiver.mongodb.storage import Collections, Document, MongoCollection
from order_archiver.retry import ARCHIVE_SIDE, named_side, retrying

log = get_logger("forget")


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
    """The client's archived orders: by the reference, or (a dangling client) the source copy's.
    Each branch has its index (``indexes.ARCHIVE_INDEXES``): MongoDB serves an ``$or`` from
    indexes only when every branch has one, else it reads the whole archive."""
    return {"$or": [{"client.id": client_id}, {"source.client_id": client_id}]}


def count_orders(
    archive: MongoCollection, selection: dict[str, Any], stop_event: threading.Event | None
) -> tuple[int, int]:
    """The selected orders, and those still holding personal data: one indexed read of the
    personal fields (tested here, never logged), not one count each."""

    def count() -> tuple[int, int]:
        orders = holding = 0
        with archive.find(selection, PERSONAL_FIELDS) as cursor:
            for document in cursor:
                orders += 1
                holding += holds_personal_data(document)
        return orders, holding

    return retrying(count, stop_event=stop_event)


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
        report.orders, report.erased = count_orders(archive, archived_orders_of(client_id), stop_event)
        if run and report.erased:
            erase_personal_data(
                archive, archived_orders_of(client_id), forgotten_by=BY_REQUEST, stop_event=stop_event
            )
    log.info(
        "forget: client %s: %d archived orders, %d %s",
        client_id,
        report.orders,
        report.erased,
        "erased" if run else "to erase (dry run)",
    )
    return report
