"""`verify`: reconcile the source and the archive, streaming, in chunks.

- delivered orders of the window missing from the archive (orders rejected as invalid are
  counted apart: they are never archived);
- archive documents whose key fields disagree with the source: ``numero_commande``,
  ``date_commande``, and ``montant_total`` recomputed from the dishes as they are now (so a
  dish whose price changed since archiving shows here too);
- archive documents with no source order: normal after ``--purge-source``, reported only.

Exit 0 when nothing is missing or mismatched, 3 otherwise. ``--repair`` archives the
missing orders through the batch path. Memory holds one chunk, whatever the archive's size.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING

from archiver import (
    BatchArchiver,
    BatchOptions,
    Collections,
    build_selection,
    date_range,
    ids_after,
    in_window,
    missing_source,
    scan_by_id,
)
from config import Settings
from deployment import check_deployment
from enrichment import as_utc, build_enrichment_pipeline, finish_archive_document
from errors import ConfigError, InvalidOrderError, retrying
from progress import Progress

CHUNK = 1000
EXAMPLES = 5


@dataclass
class VerifyReport:
    checked: int = 0
    missing: int = 0
    mismatched: int = 0
    orphans: int = 0
    invalid: int = 0
    repaired: int = 0
    missing_before_repair: int | None = None  # with --repair: the figures above are after it
    missing_examples: list[str] = field(default_factory=list)
    mismatched_examples: list[dict[str, Any]] = field(default_factory=list)
    orphan_examples: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.missing and not self.mismatched

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "consistent": self.consistent}

    def lines(self) -> list[str]:
        out = [f"checked {self.checked} delivered orders ({self.invalid} invalid, never archived)"]
        out.append(f"missing from the archive: {self.missing} {self.missing_examples or ''}".rstrip())
        examples = [f"{e['id']} ({', '.join(e['fields'])})" for e in self.mismatched_examples]
        out.append(
            f"archive documents that disagree with the source: {self.mismatched} {examples or ''}".rstrip()
        )
        out.append(f"archive documents with no source order (normal after a purge): {self.orphans}")
        if self.missing_before_repair is not None:
            out.insert(
                0,
                f"repair: {self.missing_before_repair} missing orders found, {self.repaired} archived; "
                "checked again after the repair:",
            )
        out.append("consistent" if self.consistent else "NOT consistent")
        return out


def _note(examples: list, item: Any) -> None:
    if len(examples) < EXAMPLES:
        examples.append(item)


def _same_date(left: Any, right: Any) -> bool:
    if not isinstance(left, datetime) or not isinstance(right, datetime):
        return left == right
    return abs((as_utc(left) - as_utc(right)).total_seconds()) < 0.001  # BSON dates keep milliseconds


def differences(expected: dict[str, Any], archived: dict[str, Any]) -> list[str]:
    """The key fields where an archive document disagrees with what the source gives now."""
    fields = []
    if archived.get("numero_commande") != expected["numero_commande"]:
        fields.append("numero_commande")
    if not _same_date(archived.get("date_commande"), expected["date_commande"]):
        fields.append("date_commande")
    total = archived.get("montant_total")
    if not isinstance(total, (int, float)) or abs(total - expected["montant_total"]) > 0.005:
        fields.append("montant_total")
    return fields


def verify(
    client: Any,
    settings: Settings,
    *,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    repair: bool = False,
    stop_event: threading.Event | None = None,
    progress: str = "off",
) -> VerifyReport:
    """Reconcile; with ``repair``, archive what is missing, then reconcile again: the report
    (and the exit code) is the state after the repair, with what the repair did."""
    check_deployment(client, settings)
    problem = retrying(lambda: missing_source(Collections.of(client, settings).orders), stop_event=stop_event)
    if problem:
        raise ConfigError(problem)
    report = _reconcile(client, settings, date_from, date_to, stop_event, progress)
    if not repair or not report.missing:
        return report
    options = BatchOptions(run=True, date_from=date_from, date_to=date_to, resume=False, samples=0)
    repaired = BatchArchiver(client, settings, options, stop_event=stop_event).run()
    after = _reconcile(client, settings, date_from, date_to, stop_event, progress)
    after.repaired = repaired.archived
    after.missing_before_repair = report.missing
    return after


def _reconcile(
    client: Any,
    settings: Settings,
    date_from: datetime | None,
    date_to: datetime | None,
    stop_event: threading.Event | None,
    progress: str,
) -> VerifyReport:
    collections = Collections.of(client, settings)
    report = VerifyReport()
    bar = Progress("verifying", mode=progress)
    now = datetime.now(UTC)

    def read(func: Any) -> Any:
        return retrying(func, stop_event=stop_event)

    def settle(documents: list[dict[str, Any]]) -> None:
        ids = [d["_id"] for d in documents]
        archived = {
            d["_id"]: d
            for d in read(
                lambda: list(
                    collections.archive.find(
                        {"_id": {"$in": ids}}, {"numero_commande": 1, "date_commande": 1, "montant_total": 1}
                    )
                )
            )
        }
        for expected in documents:
            found = archived.get(expected["_id"])
            if found is None:
                report.missing += 1
                _note(report.missing_examples, str(expected["_id"]))
                continue
            fields = differences(expected, found)
            if fields:
                report.mismatched += 1
                _note(report.mismatched_examples, {"id": str(expected["_id"]), "fields": fields})

    def enriched_after(after_id: Any) -> Any:
        selection = build_selection(settings.delivered_status, date_from, date_to, after_id)
        pipeline = build_enrichment_pipeline(selection, collections.names, sort_by_id=True)
        return collections.orders.aggregate(pipeline, batchSize=CHUNK, allowDiskUse=True)

    chunk: list[dict[str, Any]] = []
    for raw in scan_by_id(enriched_after, stop_event=stop_event):
        try:
            document = finish_archive_document(raw, archived_by="batch", archived_at=now)
        except InvalidOrderError:
            report.invalid += 1
            continue
        if not in_window(document["date_commande"], date_from, date_to):
            continue
        report.checked += 1
        chunk.append(document)
        if len(chunk) >= CHUNK:
            settle(chunk)
            bar.update(len(chunk))
            chunk = []
    if chunk:
        settle(chunk)
        bar.update(len(chunk))
    bar.close()

    bounds = date_range(date_from, date_to)
    archive_window = {"date_commande": bounds} if bounds else {}
    ids: list[Any] = []

    def settle_orphans(batch: list[Any]) -> None:
        present = {
            d["_id"] for d in read(lambda: list(collections.orders.find({"_id": {"$in": batch}}, {"_id": 1})))
        }
        for archived_id in batch:
            if archived_id not in present:
                report.orphans += 1
                _note(report.orphan_examples, str(archived_id))

    def archived_after(after_id: Any) -> Any:
        window = dict(archive_window)
        if after_id is not None:
            window.update(ids_after(after_id))
        # A sort on _id after a filter on the date may be done in memory: allowed to spill.
        return collections.archive.find(window, {"_id": 1}, batch_size=CHUNK, allow_disk_use=True).sort(
            "_id", ASCENDING
        )

    for document in scan_by_id(archived_after, stop_event=stop_event):
        ids.append(document["_id"])
        if len(ids) >= CHUNK:
            settle_orphans(ids)
            ids = []
    if ids:
        settle_orphans(ids)

    return report
