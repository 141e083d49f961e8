"""The rejected orders a batch run meets: counted into its report and listed in the rejects
collection after the archive writes that met them, a thousand at a time (the list is for
people: a run that dies before listing them meets them again, as new, next time)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from order_archiver.batch.report import BatchReport
from order_archiver.errors import ArchiverError
from order_archiver.logs import get_logger
from order_archiver.mongodb.rejects import RejectStore
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.orders.rejection import Rejection
from order_archiver.retry import retrying

log = get_logger("batch")

REJECTS_FLUSH = 1000  # rejections listed together


@dataclass
class RejectionLog:
    store: RejectStore
    report: BatchReport
    archived_by: str
    clock: Callable[[], datetime]
    pending: list[Rejection] = field(default_factory=list)

    def count(self, rejections: list[Rejection], new: int) -> None:
        self.report.rejected += len(rejections)
        self.report.rejected_new += new
        for rejection in rejections:
            self.report.rejections[rejection.reason] = self.report.rejections.get(rejection.reason, 0) + 1

    def add(self, rejections: list[Rejection]) -> None:
        """After the writes of the chunk that met them."""
        self.pending += rejections
        if len(self.pending) >= REJECTS_FLUSH:
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if pending:
            new = self.store.record(pending, source=self.archived_by, now=self.clock())
            self.count(pending, new)

    def flush_quietly(self) -> None:
        """The rejections met before a failure: a failure to list them does not hide it."""
        try:
            self.flush()
        except ArchiverError as exc:
            log.warning("the rejected orders met so far were not listed (%s)", exc)

    def count_dry(self, rejections: list[Rejection]) -> None:
        """A dry run lists nothing: it says which rejections would be new."""
        known = self.store.not_news(rejections, to_batch=self.archived_by == "batch")
        new = [r for r in rejections if r.order_id not in known]
        for rejection in new:
            log.warning(
                "order would be rejected",
                extra={"order_id": str(rejection.key), "reason": rejection.reason},
            )
        self.count(rejections, len(new))

    def prune(
        self, orders_primary: MongoCollection, archive: MongoCollection, delivered: Any, stop: Any
    ) -> None:
        """Rejected orders that were fixed (and archived), deleted or corrected leave the list;
        a failure here only leaves the list longer: the archive is done. An orders collection
        that holds no order at all (a typo in ORDERS_COLLECTION, a collection created by
        mistake) would make every listed order look deleted, and one where no order has the
        delivered status (a typo in DELIVERED_STATUS) no longer delivered: the list is left as
        it is."""
        try:
            # One read in the usual case (a delivered order exists); the second only to say why not.
            if (
                retrying(lambda: orders_primary.find_one({"status": delivered}, {"_id": 1}), stop_event=stop)
                is None
            ):
                if retrying(lambda: orders_primary.find_one({}, {"_id": 1}), stop_event=stop) is None:
                    why = f"{orders_primary.full_name} holds no order"
                else:
                    why = "no order is delivered (DELIVERED_STATUS)"
                log.warning("%s: the list of rejected orders is left as it is", why)
                return
            self.store.prune(orders_primary, archive, delivered)
        except ArchiverError as exc:
            log.warning("the list of rejected orders was not tidied (%s); the next run tries again", exc)
