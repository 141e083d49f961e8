"""Orders looked up in the cold tier: every published file, read through pyarrow's dataset
(row groups whose statistics rule the value out are skipped), the matching rows only."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from bson import ObjectId

from order_archiver.cold.files import matching
from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdStore
from order_archiver.mongodb.forgotten import id_forms

if TYPE_CHECKING:
    from pyarrow.dataset import Expression


@dataclass(frozen=True)
class ColdQuery:
    """Numbers (``numero_commande``), an ``_id``, a client's or a courier's ``_id``, a window on
    ``date_commande`` (from inclusive, to exclusive): every clause given must hold."""

    numeros: Sequence[str] = ()
    order_id: object = None
    # An ObjectId, or its 24-digit text as a command was given it (forget: that text is looked
    # for too, ``forgotten.id_forms``).
    client_id: ObjectId | str | None = None
    courier_id: ObjectId | str | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None

    def expression(self) -> Expression:
        clauses = self._clauses()
        if not clauses:
            raise ValueError("a cold query needs a clause")
        combined = clauses[0]
        for clause in clauses[1:]:
            combined = combined & clause
        return combined

    def _clauses(self) -> list[Expression]:
        import pyarrow as pa
        import pyarrow.dataset as ds

        clauses = []
        if self.numeros:
            clauses.append(ds.field("numero_commande").isin(list(self.numeros)))
        if self.order_id is not None:
            clauses.append(ds.field("_id") == str(self.order_id))
        if self.client_id is not None:
            clauses.append(_person("client", "client_id", self.client_id))
        if self.courier_id is not None:
            clauses.append(_person("livreur", "livreur_id", self.courier_id))
        moment = pa.timestamp("ms", tz="UTC")
        if self.date_from is not None:
            clauses.append(ds.field("date_commande") >= pa.scalar(self.date_from, type=moment))
        if self.date_to is not None:
            clauses.append(ds.field("date_commande") < pa.scalar(self.date_to, type=moment))
        return clauses


def _person(reference: str, name: str, person_id: ObjectId | str) -> Expression:
    """A person's orders: by the reference, or (a dangling one, the struct null) by the source
    copy's id in the document (canonical Extended JSON writes it so), an ObjectId or its
    24-digit text as given, in lower or upper case (dirty data naming the same person:
    ``forgotten.id_forms``)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    person = str(ObjectId(person_id))
    copies = [
        f'"{name}": {{"$oid": "{person}"}}',
        *(f'"{name}": "{text}"' for text in id_forms(person_id) if isinstance(text, str)),
    ]
    found = ds.field(reference, "id") == person
    for copy in copies:
        found = found | pc.match_substring(ds.field("document"), copy)
    return found


def find_in_cold(store: ColdStore, query: ColdQuery) -> Iterator[tuple[str, dict[str, object]]]:
    """(the file's URL, the archive document as it holds it) for each matching row. A place that
    is not there is refused (``ColdStore.check``: exit 2, named), not read as holding nothing."""
    store.check(writable=False)
    files = [cold_file.path for cold_file in store.files()]
    if not files:
        return
    for path, table in matching(store, files, query.expression(), ["document"]):
        for text in table.column("document").to_pylist():
            yield store.url_of(path), document_of(text)


def numbers_in_cold(store: ColdStore, numeros: Sequence[str]) -> set[str]:
    """Which of ``numeros`` the cold tier holds (exact): the ``numero_commande`` column only, a
    row group skipped when its statistics rule the numbers out (no document read, no JSON)."""
    import pyarrow.dataset as ds

    store.check(writable=False)
    files = [cold_file.path for cold_file in store.files()]
    if not files or not numeros:
        return set()
    wanted = ds.field("numero_commande").isin(list(numeros))
    return {
        str(numero)
        for _path, table in matching(store, files, wanted, ["numero_commande"])
        for numero in table.column("numero_commande").to_pylist()
    }
