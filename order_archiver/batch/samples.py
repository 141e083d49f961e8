"""The few archive documents a batch run keeps for its report and ``--export-samples``,
masked (names, e-mail, phone, address) unless ``--show-pii``: the report goes to terminals,
cron mails and log collectors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bson import json_util

from order_archiver.batch.report import BatchOptions, BatchReport
from order_archiver.errors import ArchiverError
from order_archiver.logs import get_logger, plural
from order_archiver.orders.pii import OrderFields, mask_pii
from order_archiver.settings import write_private

log = get_logger("batch")


def keep_samples(
    report: BatchReport, options: BatchOptions, documents: Sequence[Mapping[str, object]], fields: OrderFields
) -> None:
    """The first documents as samples, masked unless ``--show-pii`` (``fields``: the order fields
    known not to be personal, shown)."""
    room = options.samples - len(report.samples)
    if room > 0:
        kept = documents[:room]
        report.samples.extend(kept if options.show_pii else [mask_pii(d, fields) for d in kept])


def export_samples(report: BatchReport, options: BatchOptions) -> None:
    """``--export-samples``: the samples as Extended JSON, in a file only this user reads."""
    if not options.export_samples:
        return
    path = Path(options.export_samples)
    try:
        write_private(
            path,
            json_util.dumps(
                report.samples, indent=2, ensure_ascii=False, json_options=json_util.RELAXED_JSON_OPTIONS
            ),
        )
    except OSError as exc:
        raise ArchiverError(f"--export-samples: cannot write {path}: {exc.strerror}") from None
    log.info("%s written to %s", plural(len(report.samples), "sample document"), path)
