"""A ``--numero`` that matches nothing, and the archived number it differs from only by case:
numbers match exactly (``CMD-000373`` is not ``cmd-000373``), and `restore` and `find` say which
one is archived, in the archive or the cold tier."""

from __future__ import annotations

from order_archiver.cold.search import numbers_in_cold
from order_archiver.cold.tier import cold_store
from order_archiver.context import RunContext
from order_archiver.mongodb.storage import MongoCollection
from order_archiver.settings import Settings

CHUNK = 500  # numbers per look-up


def case_hints(
    numeros: list[str], archive: MongoCollection, context: RunContext, settings: Settings
) -> dict[str, str]:
    """For each of ``numeros`` archived in upper case, the hint ("CMD-000373 is archived", "...,
    in the cold tier"): the archive first, then the cold tier for those still unnamed."""
    hints = _in_archive(numeros, archive, context)
    hints.update(_in_cold(settings, [n for n in numeros if n not in hints], context))
    return hints


def _in_archive(numeros: list[str], archive: MongoCollection, context: RunContext) -> dict[str, str]:
    """The archived numbers among ``numeros`` written in upper case (``CMD-000373`` for
    ``cmd-000373``), each as the hint names it ("CMD-000373 is archived"): one exact, indexed
    look-up per chunk."""
    wanted = {n.upper(): n for n in numeros if n.upper() != n}
    found: dict[str, str] = {}
    names = list(wanted)
    for start in range(0, len(names), CHUNK):
        chunk = names[start : start + CHUNK]
        documents = context.retrying(
            lambda c=chunk: list(archive.find({"numero_commande": {"$in": c}}, {"numero_commande": 1})),  # type: ignore[misc]
        )
        found.update(
            {
                wanted[numero]: f"{numero} is archived"
                for d in documents
                if (numero := str(d["numero_commande"])) in wanted
            }
        )
    return found


def _in_cold(settings: Settings, numeros: list[str], context: RunContext) -> dict[str, str]:
    """As ``_in_archive``, in the cold tier's files (ARCHIVE_COLD_URL): an order moved there is
    archived too. Their ``numero_commande`` column only, and only for the numbers still unnamed."""
    wanted = {n.upper(): n for n in numeros if n.upper() != n}
    store = cold_store(settings, context) if wanted else None
    if store is None:
        return {}
    return {
        wanted[numero]: f"{numero} is archived, in the cold tier"
        for numero in numbers_in_cold(store, list(wanted))
    }
