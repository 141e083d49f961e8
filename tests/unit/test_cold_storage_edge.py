"""The cold tier's storage faults told by where they are raised, never by where they pass.

The one classification (``errors.storage_fault``, ``errors.storage_error``) names a fault of the
storage with what to fix ("cold tier (ARCHIVE_COLD_URL): ..."). It told one by the file names in
its traceback ("order_archiver/cold/"): an ``OSError`` of anything else raised under the cold
tier's code was said to be the storage's, and one of the storage whose code names its files
otherwise was not. Now the storage's edge (``cold/store.py``, ``cold/files.py``: every request
to the folder or the bucket) raises ``errors.ColdStorageError``, and the classification reads
the type. In-process ``main([...])`` on mongomock and a ``file:`` folder (``test_cold_limits``'s
shell); S3's faults at the wire: tests/integration/test_cold_storage_faults.py."""

from __future__ import annotations

import errno
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from order_archiver.cli import main as cli
from order_archiver.cold.move import ColdMove
from order_archiver.cold.store import Month
from tests.unit.test_cold_limits import BASE, a_shell

PRODUCT = Path(cli.__file__).resolve().parents[1]  # order_archiver/


@pytest.fixture
def shell(mongo, monkeypatch, tmp_path):
    return a_shell(mongo, monkeypatch, tmp_path)


def _frozen_code(code: types.CodeType, name: str) -> types.CodeType:
    consts = tuple(_frozen_code(c, name) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=f"<frozen {name}>", co_consts=consts)


def _functions(module: types.ModuleType) -> list[types.FunctionType]:
    """The module's own functions, and its classes' methods and properties."""
    found: list[Any] = []
    for value in vars(module).values():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        members = vars(value).values() if isinstance(value, type) else [value]
        for member in members:
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property):
                found += [f for f in (member.fget, member.fset) if f is not None]
            found.append(getattr(member, "__wrapped__", member))
    return [f for f in found if isinstance(f, types.FunctionType)]


def frozen_install(monkeypatch: Any) -> None:
    """The product's code as a frozen or embedded install runs it: each function's code names
    its file ``<frozen MODULE>``, as Python's own frozen modules do (``<frozen importlib._bootstrap>``),
    not ``.../order_archiver/cold/store.py``. Nothing else changes: the same functions run."""
    for name, module in list(sys.modules.items()):
        if name != "order_archiver" and not name.startswith("order_archiver."):
            continue
        for function in _functions(module):
            if Path(function.__code__.co_filename).resolve().is_relative_to(PRODUCT):
                monkeypatch.setattr(function, "__code__", _frozen_code(function.__code__, name))


def test_a_fault_of_the_local_folder_is_the_storages_in_a_frozen_install(shell, monkeypatch, capsys):
    """The cold folder holds a file where a month's folder goes (``year=YYYY``, left by hand): its
    creation is refused, ENOTDIR. Said as the storage's ("the storage refused the request", exit
    1) from an install whose code names its files otherwise too; it was "unexpected
    NotADirectoryError" there, the cold tier's setting unnamed (the traceback held no
    "order_archiver/cold/")."""
    _database, store, _recent = shell
    for year in {Month.of(moment).year for moment in _cold_deliveries(shell)}:
        (Path(store.root) / f"year={year:04d}").write_text("not a folder")
    frozen_install(monkeypatch)
    capsys.readouterr()
    code = cli.main(["batch", "--run", "-q"])
    err = capsys.readouterr().err
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: cold tier (ARCHIVE_COLD_URL): the storage refused the request ("), err
    assert "Not a directory" in last
    assert "unexpected" not in err


def _cold_deliveries(shell: Any) -> list[Any]:
    """The archived orders' delivery dates (those of the months the move writes among them)."""
    database, _store, _recent = shell
    archive = database.client[BASE.archive_db_name][BASE.archive_collection]
    return [d["date_livraison"] for d in archive.find({}, {"date_livraison": 1})]


def test_a_stop_file_on_a_stale_mount_while_the_cold_tier_runs_is_not_the_storages(
    shell, monkeypatch, capsys, tmp_path
):
    """``--stop-file`` on an NFS mount gone stale while the move runs: its look (between two
    files of the move, ``context.gate``) fails ESTALE. That is no fault of the cold tier's
    storage, which it was said to be ("cold tier (ARCHIVE_COLD_URL): the storage did not answer
    after retries (S3 SlowDown ...)", a traceback through order_archiver/cold/): it is said as
    the stop file's (``limits.stop_file_there``: the run stops, exit 1), naming neither the cold
    tier nor its setting."""
    from order_archiver.batch import limits

    moving = []
    run = ColdMove.run

    def run_marked(self: ColdMove) -> Any:
        moving.append(True)
        return run(self)

    class StaleMount(type(Path())):  # type: ignore[misc]
        def stat(self, **kwargs: Any) -> Any:  # what stop_file_there asks (stat(2))
            if moving:
                raise OSError(errno.ESTALE, "Stale file handle", str(self))
            return super().stat(**kwargs)

    monkeypatch.setattr(ColdMove, "run", run_marked)
    monkeypatch.setattr(limits, "Path", StaleMount)
    stop = tmp_path / "mnt" / "stop"
    stop.parent.mkdir()
    capsys.readouterr()
    code = cli.main(["batch", "--run", "-q", "--stop-file", str(stop)])
    err = capsys.readouterr().err
    assert moving, err
    assert code == 1, err
    # One line naming the stop file and what to fix (it was "error: unexpected OSError: [Errno 116] ...").
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"error: --stop-file {stop}: cannot be looked for (Stale file handle): the run stops here"
        )
    ), err
    assert "unexpected" not in err
    assert "cold tier" not in err
    assert "ARCHIVE_COLD_URL" not in err


# What only the storage's edge (cold/store.py, cold/files.py) does: touch the store's file system
# (``ColdStore.fs``), open a dataset or a Parquet file on it, open a stream.
STORAGE_CALLS = re.compile(
    r"\.fs\b|filesystem\s*=|\bdataset\(|ParquetFile\(|ParquetWriter\(|open_(in|out)put_"
)
EDGE = {PRODUCT / "cold" / "store.py", PRODUCT / "cold" / "files.py"}


def test_every_request_to_the_cold_storage_goes_through_its_edge():
    """The classification knows a fault of the storage by its type only if every request to the
    storage raises it: none but the edge's modules touches the storage (move.py renamed a damaged
    file and read sizes, search.py, erasure.py and holding.py read datasets, on ``store.fs``)."""
    outside = [
        f"{path.relative_to(PRODUCT.parent)}:{number}: {line.strip()}"
        for path in sorted(PRODUCT.rglob("*.py"))
        if path not in EDGE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if STORAGE_CALLS.search(line) and not line.lstrip().startswith("#")
    ]
    assert outside == []
