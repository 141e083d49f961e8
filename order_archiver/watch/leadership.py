"""Which of the watchers sharing a name writes: the one holding the lease (``mongodb.lease``).
A watcher with a file token store has no lease and always leads; with the mongo store, the
others stand by, say so once, and take over when the leader's lease runs out."""

from __future__ import annotations

import threading
from collections.abc import Callable

from order_archiver.context import RunContext
from order_archiver.logs import get_logger
from order_archiver.mongodb.lease import Lease
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.mongodb.tokens import FileTokenStore, MongoTokenStore, TokenStore
from order_archiver.settings import Settings

log = get_logger("watch")


def token_store_and_lease(
    checkpoints: MongoCollection,
    settings: Settings,
    name: str,
    namespace: str,
    shared: bool,
    context: RunContext,
) -> tuple[TokenStore, Lease | None]:
    """A file store (one watcher), or the shared mongo store with the lease that lets a standby
    take over (``shared``: ``--token-store mongo``), waiting on the run's stop. A fault its
    renewal thread cannot go on past stops the run, which fails with it (``RunContext.fail``)."""
    if not shared:
        return FileTokenStore(settings.resume_token_file, namespace), None
    lease = Lease(
        checkpoints,
        name,
        ttl_s=settings.watch_lease_ttl_s,
        renew_s=settings.watch_lease_renew_s,
        stop_event=context.stop,
        on_fault=lambda fault: context.fail(f"watch --name {name}: the renewal of its lease", fault),
    )
    return MongoTokenStore(checkpoints, name, namespace, context.stop), lease


class Leadership:
    """Whether this watcher leads now, waiting a renewal's length (interruptibly) when not."""

    def __init__(
        self,
        lease: Lease | None,
        name: str,
        stop: threading.Event,
        answered: Callable[[], object] = lambda: None,
    ) -> None:
        """``answered``: called when MongoDB answered a standby's look at the lease."""
        self.lease, self.name, self.stop, self.answered = lease, name, stop, answered
        self._standby_announced = False

    def lead(self) -> bool:
        """True once leader; False (after a pause) while another watcher leads."""
        if self.lease is None or self.lease.held() or self.lease.resumed():
            return True
        if self.lease.try_acquire():
            self._standby_announced = False
            return True
        self.answered()
        if not self._standby_announced:
            self._announce_standby(self.lease)
            self._standby_announced = True
        self.stop.wait(self.lease.renew_s)
        return False

    def _announce_standby(self, lease: Lease) -> None:
        """Why this watcher waits: another leads, or its own lease, lapsed (MongoDB away longer
        than it) and not renewable any more, runs out first (it said "another leads": wrong)."""
        if lease.held_by_this_process():
            log.info(
                "lease of %s lapsed: this watcher takes it again once it runs out (%gs)",
                self.name,
                lease.ttl_s,
            )
            return
        log.info(
            "standby: another watcher named %s leads; taking over if its lease (%gs) runs out",
            self.name,
            lease.ttl_s,
        )
