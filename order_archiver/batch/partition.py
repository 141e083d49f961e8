"""``batch --partition K/N``: what a share of a backfill has of its own besides its orders
(``orders/partition.py`` says which): its checkpoint, and its lease.

The checkpoint: one per share (the key of the run's window with ``K/N`` added), so each of
the N processes resumes its own pass; a run without ``--partition`` keeps the key it always
had. The lease: one process per share at a time (``mongodb/lease.py``, the watcher's leader
lease, named after the share's checkpoint): a second process given the same share (a
Job's pod retried while the first still runs) waits up to the lease's life (``WATCH_LEASE_TTL_S``,
no longer) for it to expire (a killed process leaves it behind) or be released (the first
process ended), takes it if so, and is refused if not. The lease guards the start,
not each write: a batch's writes are idempotent and its checkpoint bears two runs at once
(``checkpoint.py``), so a renewal that a stalled server holds up past the lease's life must not
end a backfill hours in (measured on the test server: a renewal queued behind a long read).
"""

from __future__ import annotations

import time
from types import TracebackType

from order_archiver.batch.report import BatchOptions
from order_archiver.errors import ConfigError
from order_archiver.logs import get_logger
from order_archiver.mongodb.checkpoint import BatchCheckpoint, checkpoint_key
from order_archiver.mongodb.lease import Lease
from order_archiver.settings import Settings

log = get_logger("batch")


def batch_checkpoint_key(settings: Settings, options: BatchOptions) -> str:
    """The run's checkpoint: of its window, and of its share if it has one."""
    key = checkpoint_key(settings, options.archived_by, options.date_from, options.date_to)
    if options.partition is None:
        return key
    return f"{key}:{options.partition.index}-of-{options.partition.count}"


class ShareLease:
    """Held while a ``--run --partition`` run runs (a context manager); a run without a
    partition, or a dry run (it writes nothing), takes none."""

    def __init__(self, checkpoint: BatchCheckpoint, options: BatchOptions, settings: Settings) -> None:
        self.partition = options.partition
        self.stop_event = checkpoint.context.stop
        self.lease: Lease | None = None
        if options.partition is not None and options.run:
            ttl_s, renew_s = settings.watch_lease_ttl_s, settings.watch_lease_renew_s
            context, share = checkpoint.context, options.partition
            self.lease = Lease(
                checkpoint.collection,
                checkpoint.key,
                ttl_s=ttl_s,
                renew_s=renew_s,
                stop_event=self.stop_event,
                # A fault its renewal thread cannot go on past stops the run, which fails with it.
                on_fault=lambda fault: context.fail(
                    f"batch --partition {share}: the renewal of its share's lease", fault
                ),
            )

    def __enter__(self) -> ShareLease:
        lease = self.lease
        if lease is None or lease.try_acquire():
            return self
        # Whoever holds it renewed it at the latest now, so it expires within its life (a killed
        # process's) or is released (a process that ends): one life waited, tried every renewal
        # and once more at its end, not more (the message says how long).
        deadline = time.monotonic() + lease.ttl_s
        log.info("share %s is leased by another process: waiting up to %gs", self.partition, lease.ttl_s)
        while (left := deadline - time.monotonic()) > 0:
            if self.stop_event.wait(min(lease.renew_s, left)):
                break
            if lease.try_acquire():
                return self
        raise ConfigError(
            f"--partition {self.partition}: another process is archiving this share (its lease, "
            f"{lease.key}, was renewed within the last {lease.ttl_s:g}s); give each process its own K"
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.lease is not None:
            self.lease.release()
