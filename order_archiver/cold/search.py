"""Orders looked up in the cold tier: every published file, read through pyarrow's dataset
(row groups whose statistics rule the value out are skipped), the matching rows only."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bson import ObjectId

from order_archiver.cold.schema import document_of
from order_archiver.cold.store import ColdStore

if TYPE_CHECKING:
    from pyarrow.dataset import Expression


@dataclass(frozen=True)
class ColdQuery:
    """One of: numbers (``numero_commande``), an ``_id``, a client's ``_id``, a courier's."""

    numeros: Sequence[str] = ()
    order_id: object = None
    client_id: ObjectId | None = None
    courier_id: ObjectId | None = None

    def expression(self) -> Expression:
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        if self.numeros:
            return ds.field("numero_commande").isin(list(self.numeros))
        if self.order_id is not None:
            return ds.field("_id") == str(self.order_id)
        # A person's orders: by the reference, or (a dangling one, the struct null) by the
        # source copy's id in the document (canonical Extended JSON writes it so).
        reference, name = (
            ("livreur", "livreur_id") if self.courier_id is not None else ("client", "client_id")
        )
        person = str(self.courier_id if self.courier_id is not None else self.client_id)
        copy = f'"{name}": {{"$oid": "{person}"}}'
        return (ds.field(reference, "id") == person) | pc.match_substring(ds.field("document"), copy)


def find_in_cold(store: ColdStore, query: ColdQuery) -> Iterator[tuple[str, dict[str, object]]]:
    """(the file's URL, the archive document as it holds it) for each matching row."""
    import pyarrow.dataset as ds

    files = [cold_file.path for cold_file in store.files()]
    if not files:
        return
    dataset = ds.dataset(files, filesystem=store.fs, format="parquet")
    expression = query.expression()
    for fragment in dataset.get_fragments():
        table = fragment.to_table(filter=expression, columns=["document"])
        for text in table.column("document").to_pylist():
            yield store.url_of(fragment.path), document_of(text)
