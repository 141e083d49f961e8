"""``batch --run``'s look for published cold files that are gone: a few files a run, in turn.

A published file removed by hand or lost (a bucket's lifecycle rule) leaves its orders in no
place. ``status`` (every probe) and ``verify`` compare the whole list of published files
(``manifest.ColdManifest``) with the place; a batch run said nothing of it. It now checks
``SPOT_FILES`` files of the list a run, after the one where the last run stopped (the list's
``_id`` order; where it stopped is kept in the checkpoints collection), and wraps round at the
end: a tier of up to ``SPOT_FILES`` files is checked whole at every run, a larger one over
``ceil(files / SPOT_FILES)`` runs. Why not the whole list each run: the list and the place
grow with the months kept (a few files a month), and a batch run's cost must grow with its
new work, not with the history; this costs one bounded read of the list, at most
``SPOT_FILES`` existence checks (a HEAD each on S3), and one write, whatever the tier holds.
Run under the move's lease: no rewrite replaces a file meanwhile (a file unlisted since the
read is not called gone, as ``check._lost`` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from order_archiver.cold.manifest import ColdManifest
from order_archiver.cold.store import ColdStore
from order_archiver.context import RunContext
from order_archiver.documents import MongoCollection
from order_archiver.logs import get_logger, plural
from order_archiver.retry import Retry

log = get_logger("cold")

SPOT_FILES = 20
CURSOR_KIND = "cold-spot-check"


@dataclass
class GoneFiles:
    """The published files a run found gone, and their orders (the list's row counts)."""

    files: list[str] = field(default_factory=list)  # their URLs
    orders: int = 0

    def line(self) -> str:
        return (
            f"{plural(len(self.files), 'published file')} gone, {plural(self.orders, 'order')} in no "
            f"place (verify names them): {', '.join(self.files)}"
        )


def spot_check(
    store: ColdStore, manifest: ColdManifest, checkpoints: MongoCollection, context: RunContext
) -> GoneFiles:
    """The next ``SPOT_FILES`` listed files checked; the cursor moved past them (or back to the
    start after the list's last)."""
    key = f"{CURSOR_KIND}:{store.url}"
    cursor = context.retrying(lambda: checkpoints.find_one({"_id": key}), purpose=Retry.READ)
    after = cursor.get("after") if cursor else None
    page = manifest.page(after if isinstance(after, str) else None, SPOT_FILES)
    if not page and after is not None:  # the last run ended on the list's last file: round again
        page = manifest.page(None, SPOT_FILES)
    gone = GoneFiles()
    for _, entry in page:
        if not store.exists(entry.path) and manifest.still_listed(entry.path):
            gone.files.append(entry.url)
            gone.orders += entry.rows
    following = page[-1][0] if len(page) == SPOT_FILES else None
    moved = {"$set": {"kind": CURSOR_KIND, "after": following}}
    context.retrying(lambda: checkpoints.update_one({"_id": key}, moved, upsert=True), purpose=Retry.WRITE)
    if gone.files:
        log.warning("cold tier: %s", gone.line())
    return gone
