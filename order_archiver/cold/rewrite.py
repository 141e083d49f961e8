"""A cold file replaced by a changed copy, crash-safe: a new file written, read back and checked,
published, then the old one removed. A journal entry (``replaces``) makes a crash in between
harmless: the next run (``move.ColdMove.settle``) removes the old file once the new one reads
back whole, or the partial one otherwise. Used by ``forget`` and ARCHIVE_PII_RETENTION (orders
erased) and by the move (an order's older copy dropped).

Every step of the cold tier goes a file at a time, and each file boundary (``file_boundary``)
meets the run (#34): a signal ends the step there (``Interrupted``), so does a limit of the run
(``context.gate``: ``--max-runtime``, ``--stop-file``), ``--max-lag`` holds the next file and
``--max-rate`` paces each file's orders after it. A file begun under a limit is finished
(written, checked, published, the old one removed): it is the old one or the new one, never half
of each; so is a move's file once published (its orders deleted from the archive: ``FileInHand``). A signal does not wait for a file of up to a gigabyte (the command line gives a stop a
few seconds, ``cli.main.STOP_GRACE_S``): the file in hand is abandoned (``until_stopped``: its
partial removed, its journal entry gone), as at the boundary before it."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TypeVar

from order_archiver.cold.files import ColdFileWriter, batches, check_file
from order_archiver.cold.manifest import ColdManifest
from order_archiver.cold.schema import document_of, erased_before_of
from order_archiver.cold.store import ColdFile, ColdStore
from order_archiver.context import ChunkGate, RunContext
from order_archiver.documents import Document, MongoCollection
from order_archiver.errors import FatalError, Interrupted
from order_archiver.logs import get_logger, plural
from order_archiver.orders.erasing import Erasure
from order_archiver.retry import Retry

log = get_logger("cold")
T = TypeVar("T")

JOURNAL_KIND = "cold-move"  # the journal's entries (the checkpoints collection): a move's, a rewrite's
MOVE_DELETED = "deleted"  # a move's entry once the archive's copies are gone: its file may be replaced

# Why a move's file lost a copy (``ColdRewrite.without``): what changed the archive's copy meanwhile.
DROPPED = {
    "corrected": "corrected meanwhile (the archive holds them, moved next time)",
    "restored": "restored meanwhile (the archive holds them, held by RESTORE_HOLD)",
    "erased": "erased in the archive meanwhile by a forget (the archive holds them erased, moved next time)",
}

Change = Callable[[Mapping[str, object]], Mapping[str, object] | None]  # None: the order leaves


def file_boundary(context: RunContext) -> None:
    """Between two files of a step of the cold tier (see the module): nothing of the next file
    is written yet. A signal raises ``Interrupted``, a limit of the run ``LimitReached``
    (``context.gate.before``, which holds the file first while a secondary lags)."""
    if context.stopped:
        raise Interrupted(
            "interrupted: the cold tier stopped between two files (each file whole, the old one or "
            "the new one); run the command again to finish"
        )
    context.gate.before()


def read_boundary(context: RunContext) -> None:
    """Between two files a step only reads (a count: a dry run's, forget's after its end): a
    signal (``Interrupted``) or a limit of the run (``LimitReached``) ends it there, as
    ``file_boundary`` ends a step that writes; no ``--max-lag`` hold: nothing is written."""
    if context.stopped:
        raise Interrupted("interrupted: the cold tier's count stopped between two files")
    context.gate.check()


class FileInHand:
    """The run's gate (``context.ChunkGate``) while a file already published is finished (a
    move's orders deleted from the archive, its file without what it must lose): a limit of the
    run (``--max-runtime``, ``--stop-file``) does not end it there, half done, but after it
    (docs/operating.md: "the file in hand finished"). ``--max-lag`` holds each chunk until a
    limit has come, ``--max-rate`` paces it; a signal still ends it (``file_boundary``: the
    journal entry left, which the next run settles first and ``status`` names meanwhile)."""

    def __init__(self, gate: ChunkGate) -> None:
        self.gate = gate

    def before(self) -> None:
        if self.gate.ended():
            return  # the limit ends the run after this file, not before its next chunk
        try:
            self.gate.before()  # --max-lag's hold, which a limit coming meanwhile ends
        except Exception:
            if not self.gate.ended():
                raise

    def after(self, orders: int) -> None:
        self.gate.after(orders)  # its wait ends at once once a limit has come

    def ended(self) -> bool:
        return False

    def check(self) -> None:
        return None

    def wait(self, stop: threading.Event, seconds: float) -> None:
        self.gate.wait(stop, seconds)


def finishing(context: RunContext) -> RunContext:
    """``context`` with its limits held off until the file in hand is finished (``FileInHand``)."""
    return (
        context if isinstance(context.gate, FileInHand) else replace(context, gate=FileInHand(context.gate))
    )


def until_stopped(documents: Iterable[T], context: RunContext) -> Iterator[T]:
    """``documents``, ended by a signal (``Interrupted``): the file being written from them is
    abandoned by its writer's caller (see the module), the old file (or the archive) keeping them."""
    for document in documents:
        if context.stopped:
            raise Interrupted(
                "interrupted: the cold tier's file in hand abandoned (its orders where they were); "
                "run the command again to finish"
            )
        yield document


class ColdRewrite:
    """One cold file replaced by a copy with some orders erased."""

    def __init__(self, store: ColdStore, journal: MongoCollection, context: RunContext) -> None:
        self.store, self.journal, self.context = store, journal, context
        self.manifest = ColdManifest(store, journal, context)

    def _write(self, func: Callable[[], object]) -> None:
        self.context.retrying(func, purpose=Retry.WRITE)

    def _documents(self, path: str, change: Change) -> Iterator[Mapping[str, object]]:
        for batch in batches(self.store, path, ["document"]):
            for text in batch["document"]:
                if text is not None:
                    document = change(document_of(text))
                    if document is not None:
                        yield document

    def rewrite(
        self, old: ColdFile, ids: set[str], erasure: Erasure, metadata: Mapping[bytes, bytes] | None = None
    ) -> str | None:
        """``old`` with the orders of ``ids`` erased; the new file (None: nothing left)."""
        new = self._replace(old, lambda d: erasure(d) if str(d["_id"]) in ids else d, metadata)
        log.info(
            "cold tier: %s rewritten, the personal data of %s erased",
            self.store.url_of(old.path),
            plural(len(ids), "order"),
        )
        return new

    def without(
        self,
        old: ColdFile,
        ids: set[str],
        erased: Mapping[str, Mapping[str, object]] | None = None,
        why: Callable[[Mapping[str, object]], str] | None = None,
    ) -> str | None:
        """``old`` without the orders of ``ids`` (copies the archive holds other versions of),
        and those of ``erased`` replaced by their erased copies (a person forgotten while the
        file was published); the new file (None: nothing left). ``why`` says of each copy
        dropped what changed the archive's (``DROPPED``'s keys: "corrected" by default),
        counted in ``dropped`` and said in the log line."""
        replaced = {k: v for k, v in (erased or {}).items() if k not in ids}  # a dropped one: gone
        self.dropped: Counter[str] = Counter()

        def change(document: Mapping[str, object]) -> Mapping[str, object] | None:
            key = str(document["_id"])
            if key in ids:
                self.dropped[why(document) if why is not None else "corrected"] += 1
                return None
            return replaced.get(key, document)

        new = self._replace(old, change, None)
        done = [
            f"without {plural(n, 'order')} {DROPPED[reason]}" for reason, n in sorted(self.dropped.items())
        ]
        if replaced:
            done.append(f"the personal data of {plural(len(replaced), 'order')} forgotten meanwhile erased")
        log.info("cold tier: %s rewritten %s", self.store.url_of(old.path), ", ".join(done))
        return new

    def _moving(self, path: str) -> None:
        """A move's file whose orders the archive still holds (its entry not yet
        ``MOVE_DELETED``: a move killed, or paused, between its rename and its deletes) is
        refused: a copy under another name would leave the move's entry naming a file gone,
        and its settle could no longer delete those orders from the archive (the next move
        would write them again: each in two files). ``forget`` settles such a move first
        (``ColdMove.settle``, under the move's lease); only a move still running after losing
        its lease meets this."""
        # The move's entry is keyed by its file (``_id`` lookup); a rewrite's has ``replaces``.
        unfinished = {"_id": f"{JOURNAL_KIND}:{path}", "replaces": None, "state": {"$ne": MOVE_DELETED}}
        if self.context.retrying(lambda: self.journal.find_one(unfinished, {"_id": 1}), purpose=Retry.READ):
            raise FatalError(
                f"cold tier: {self.store.url_of(path)} is a move's whose orders are not yet deleted "
                "from the archive: run batch --run (it finishes the move), then this command again"
            )

    def _replace(self, old: ColdFile, change: Change, metadata: Mapping[bytes, bytes] | None) -> str | None:
        month = old.month
        if month is None:
            raise ValueError(f"{old.path} lies in no year=/month= folder")
        file_boundary(self.context)
        self._moving(old.path)
        partial, final = self.store.new_file(month)
        key = f"{JOURNAL_KIND}:{final}"
        entry: Document = {"_id": key, "kind": JOURNAL_KIND, "state": "writing", "month": str(month)}
        entry.update(partial=partial, final=final, replaces=old.path)
        self._write(lambda: self.journal.insert_one(entry))
        writer = ColdFileWriter(self.store, partial)
        try:
            writer.add(until_stopped(self._documents(old.path, change), self.context))
            summary = writer.close(metadata)
            if summary.rows:
                check_file(self.store, partial, summary)
        except BaseException:
            writer.abandon()
            self._write(lambda: self.journal.delete_one({"_id": key}))
            raise
        if summary.rows:
            self.store.publish(partial, final)
            self.manifest.add(final, summary.rows, erased_before_of(metadata))
        else:  # nothing left: no file
            self.store.remove(partial)
        self._write(lambda: self.journal.update_one({"_id": key}, {"$set": {"state": "published"}}))
        self.manifest.remove(old.path)  # before the file: a listed file that is gone is lost
        self.store.remove(old.path)
        self._write(lambda: self.journal.delete_one({"_id": key}))
        self.context.gate.after(summary.rows)  # --max-rate: the orders rewritten
        return final if summary.rows else None
