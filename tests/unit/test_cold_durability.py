"""The cold tier on a local disk: a file is on the disk, under its name, before anything is
deleted on the strength of it (the archive's copies by the move, the old file by a rewrite).

A write and a rename return once the kernel's page cache holds them; the read-back check reads
that cache too. A power cut or a kernel panic within the writeback delay (about 30 s on Linux)
would leave the name on an empty or cut-short file, and the orders the move deleted from the
archive nowhere (fsync(2): only an fsync of the file puts its data on the disk, and only one of
its folder the rename). No server decides this order, the product's code does, so it is
recorded here at its syscalls: each real ``fsync`` (the path its descriptor names as the kernel
has it, ``/proc/self/fd``, and, of a folder, the names it held then), each delete the archive is
sent. A file synced under its partial name was synced before its rename.
"""

import os
import sys
from pathlib import Path

import pytest
from pymongo import DeleteOne

from order_archiver.cold.move import ColdMove
from order_archiver.cold.store import PARTIAL_SUFFIX, ColdStore
from order_archiver.operations.forget import Person, forget_person
from tests.helpers import seed_database
from tests.unit.test_cold_tier import (
    a_client_in_the_cold_tier,
    a_cutoff,
    archive_all,
    cold_documents,
    collections,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


class DiskLog:
    """Each ``fsync`` the process makes and each delete sent to the archive, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, archive) -> None:
        self.events: list[tuple[str, object, object]] = []
        real_fsync = os.fsync

        def fsync(descriptor: int) -> None:
            path = os.readlink(f"/proc/self/fd/{descriptor}")
            held = frozenset(os.listdir(path)) if os.path.isdir(path) else os.fstat(descriptor).st_size
            real_fsync(descriptor)
            self.events.append(("fsync", path, held))

        real_bulk_write = type(archive).bulk_write

        def bulk_write(collection, requests, *args, **kwargs):
            if collection.full_name == archive.full_name:
                ids = [r._filter["_id"] for r in requests if isinstance(r, DeleteOne)]
                self.events.append(("delete", frozenset(ids), None))
            return real_bulk_write(collection, requests, *args, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(type(archive), "bulk_write", bulk_write)

    def file_synced(self, path: str) -> tuple[int, object]:
        """(index, size) of the first fsync of the file at ``path`` (its name then)."""
        found = [(i, held) for i, (kind, at, held) in enumerate(self.events) if (kind, at) == ("fsync", path)]
        assert found, f"{path} never synced under that name"
        return found[0]

    def folder_synced(self, folder: str, holding: str, after: int = -1, without: str | None = None) -> int:
        """The first fsync of ``folder`` after ``after`` while it held ``holding`` (and not ``without``)."""
        found = [
            i
            for i, (kind, at, held) in enumerate(self.events)
            if i > after
            and (kind, at) == ("fsync", folder)
            and isinstance(held, frozenset)
            and holding in held
            and (without is None or without not in held)
        ]
        assert found, f"{folder} never synced holding {holding}" + (f", not {without}" if without else "")
        return found[0]

    def first_delete_of(self, ids: set[object]) -> int:
        return next(i for i, (kind, at, _) in enumerate(self.events) if kind == "delete" and ids & at)


def partial_of(final: str) -> str:
    folder, name = os.path.split(final)
    return f"{folder}/.{name.removesuffix('.parquet')}{PARTIAL_SUFFIX}"


@pytest.fixture
def cold(mongo, settings, tmp_path):
    seed_database(mongo[settings.mongodb_database], settings, 300, p_anomalies=0.1)
    archive_all(mongo, settings)
    archive, checkpoints = collections(mongo, settings)
    before = {d["_id"]: d for d in archive.find()}
    (tmp_path / "cold").mkdir()
    store = ColdStore(f"file://{os.path.realpath(tmp_path)}/cold")  # as /proc/self/fd names it
    return archive, checkpoints, before, store


def test_a_moves_file_and_its_name_are_on_the_disk_before_the_archive_deletes_an_order_it_holds(
    mongo, settings, cold, monkeypatch
):
    archive, checkpoints, before, store = cold
    log = DiskLog(monkeypatch, archive)
    report = ColdMove(store, archive, checkpoints, a_cutoff(before)).run()
    assert report.moved > 50
    assert len(store.files()) >= 2
    by_file: dict[str, set[object]] = {}
    for order_id, [(cold_file, _)] in cold_documents(store).items():
        by_file.setdefault(cold_file.path, set()).add(order_id)
    for path, ids in by_file.items():
        deleted = log.first_delete_of(ids)
        synced, size = log.file_synced(partial_of(path))  # under its partial name: before the rename
        assert size == os.path.getsize(path)  # the whole file, written and closed
        month, year = os.path.dirname(path), os.path.dirname(os.path.dirname(path))
        renamed = log.folder_synced(month, holding=os.path.basename(path), after=synced)
        assert synced < renamed < deleted, path
        # The folders the move made on the way: each name synced in its parent before the deletes.
        assert log.folder_synced(year, holding=os.path.basename(month)) < deleted
        assert log.folder_synced(store.root, holding=os.path.basename(year)) < deleted


def test_a_rewrites_file_is_on_the_disk_before_the_file_it_replaces_is_removed_and_so_is_the_removal(
    mongo, settings, cold, monkeypatch
):
    """``forget`` in the cold tier: each file holding the client's orders rewritten without their
    data, the new one published (synced, renamed, its folder synced), then the old one removed
    and its folder synced: after a power cut the erased data never comes back."""
    archive, checkpoints, before, store = cold
    cutoff = a_cutoff(before)
    ColdMove(store, archive, checkpoints, cutoff).run()
    client = a_client_in_the_cold_tier(before, cutoff)
    old = {f.path for f in store.files()}
    log = DiskLog(monkeypatch, archive)
    with_cold = settings.with_overrides(archive_cold_url=store.url, archive_cold_after=settings.purge_after)
    assert forget_person(mongo, with_cold, Person("client", client["id"]), run=True).cold.rewritten > 0
    new = {f.path for f in store.files()} - old
    removed = old - {f.path for f in store.files()}
    assert new
    assert len(new) == len(removed)
    for path in new:
        folder = os.path.dirname(path)
        [replaced] = [p for p in removed if os.path.dirname(p) == folder]
        synced, size = log.file_synced(partial_of(path))
        assert size == os.path.getsize(path)
        renamed = log.folder_synced(folder, holding=Path(path).name, after=synced)
        gone = log.folder_synced(folder, holding=Path(path).name, after=renamed, without=Path(replaced).name)
        assert synced < renamed < gone
        # The replaced file was still there when the new one's name was synced.
        assert Path(replaced).name in log.events[renamed][2]
