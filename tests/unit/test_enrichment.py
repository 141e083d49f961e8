import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from bson import Decimal128, ObjectId

from order_archiver.errors import InvalidOrderError
from order_archiver.orders.enrichment import (
    CollectionNames,
    build_enrichment_pipeline,
    finish_archive_document,
    parse_datetime,
    source_hash,
)
from order_archiver.orders.pii import PiiPolicy, pseudonymise

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
CLIENT, COURIER, RESTAURANT = ObjectId(), ObjectId(), ObjectId()
PIZZA, TIRAMISU = ObjectId(), ObjectId()


def raw_order(**changes):
    """An order as the enrichment pipeline returns it: joined arrays included."""
    order = {
        "_id": ObjectId(),
        "numero_commande": "CMD-000001",
        "status": "livrée",
        "date_commande": datetime(2026, 11, 20, 19, 0, tzinfo=UTC),
        "date_livraison": datetime(2026, 11, 20, 19, 40, tzinfo=UTC),
        "client_id": CLIENT,
        "livreur_id": COURIER,
        "restaurant_id": RESTAURANT,
        "items": [{"menu_id": PIZZA, "quantite": 2}, {"menu_id": TIRAMISU, "quantite": 1}],
        "adresse_livraison": "1 rue de la Paix, Paris",
        "_x_client": [
            {"nom": "Martin", "prenom": "Léa", "email": "lea@example.fr", "telephone": "06 12 34 56 78"}
        ],
        "_x_livreur": [{"nom": "Petit", "prenom": "Hugo"}],
        "_x_restaurant": [{"nom": "Chez Luigi", "type_cuisine": "italienne"}],
        "_x_menus": [
            {"_id": TIRAMISU, "nom": "Tiramisu", "prix": 6.5},
            {"_id": PIZZA, "nom": "Pizza margherita", "prix": 11.9},
        ],
    }
    order.update(changes)
    return order


def finish(raw):
    return finish_archive_document(raw, archived_by="batch", archived_at=NOW)


def test_complete_order_matches_the_contract_shape():
    raw = raw_order()
    doc = finish(raw)
    assert doc == {
        "_id": raw["_id"],
        "numero_commande": "CMD-000001",
        "status": "livrée",
        "date_commande": datetime(2026, 11, 20, 19, 0, tzinfo=UTC),
        "date_livraison": datetime(2026, 11, 20, 19, 40, tzinfo=UTC),
        "client": {
            "id": CLIENT,
            "nom": "Martin",
            "prenom": "Léa",
            "email": "lea@example.fr",
            "telephone": "06 12 34 56 78",
        },
        "livreur": {"id": COURIER, "nom": "Petit", "prenom": "Hugo"},
        "restaurant": {"id": RESTAURANT, "nom": "Chez Luigi", "type_cuisine": "italienne"},
        "items": [
            {"menu_id": PIZZA, "nom": "Pizza margherita", "prix": 11.9, "quantite": 2, "sous_total": 23.8},
            {"menu_id": TIRAMISU, "nom": "Tiramisu", "prix": 6.5, "quantite": 1, "sous_total": 6.5},
        ],
        "montant_total": 30.3,
        "adresse_livraison": "1 rue de la Paix, Paris",
        "archived_at": NOW,
        "revised_at": None,
        "archived_by": "batch",
        "anomalies": [],
        # The source order as it was: every field of its own, the joins left out.
        "source": {k: v for k, v in raw.items() if not k.startswith("_x_")},
        "source_hash": source_hash({k: v for k, v in raw.items() if not k.startswith("_x_")}),
        "pii_policy": "keep",
    }
    assert list(doc["source"]) == [k for k in raw if not k.startswith("_x_")]  # in their order


def test_the_archive_keeps_every_field_of_the_source_order_with_its_type():
    """A platform's orders carry more than the contract names (a tip, a promo code); the purge
    deletes the source order, so the archive keeps all of it, types included."""
    from bson.int64 import Int64

    raw = {**raw_order(), "pourboire": Decimal128("2.50"), "code_promo": None, "compteur": Int64(7)}
    raw["date_commande"] = "2026-11-20T19:00:00"  # dirty: a string, kept as the source held it
    source = finish(raw)["source"]
    assert source["pourboire"] == Decimal128("2.50")
    assert "code_promo" in source
    assert source["code_promo"] is None
    assert isinstance(source["compteur"], Int64)
    assert source["date_commande"] == "2026-11-20T19:00:00"


def test_items_are_matched_to_dishes_by_id_not_by_position():
    doc = finish(raw_order())
    assert [item["nom"] for item in doc["items"]] == ["Pizza margherita", "Tiramisu"]


@pytest.mark.parametrize(
    ("changes", "field", "anomaly"),
    [
        ({"_x_client": []}, "client", "client_missing"),
        ({"client_id": None, "_x_client": []}, "client", "client_id_missing"),
        ({"_x_livreur": []}, "livreur", "livreur_missing"),
        ({"livreur_id": None, "_x_livreur": []}, "livreur", "livreur_id_missing"),
        ({"_x_restaurant": []}, "restaurant", "restaurant_missing"),
    ],
)
def test_dangling_references_archive_with_null_and_anomaly(changes, field, anomaly):
    doc = finish(raw_order(**changes))
    assert doc[field] is None
    assert doc["anomalies"] == [anomaly]


def test_missing_livreur_id_field():
    raw = raw_order(_x_livreur=[])
    del raw["livreur_id"]
    doc = finish(raw)
    assert doc["livreur"] is None
    assert doc["anomalies"] == ["livreur_id_missing"]


def test_dangling_dish_counts_nothing_in_total():
    doc = finish(raw_order(_x_menus=[{"_id": PIZZA, "nom": "Pizza margherita", "prix": 11.9}]))
    assert doc["items"][1] == {
        "menu_id": TIRAMISU,
        "nom": None,
        "prix": None,
        "quantite": 1,
        "sous_total": None,
    }
    assert doc["montant_total"] == 23.8
    assert doc["anomalies"] == ["menu_missing"]


@pytest.mark.parametrize("items", [[], None])
def test_order_without_items(items):
    raw = raw_order(items=items, _x_menus=[])
    doc = finish(raw)
    assert doc["items"] == []
    assert doc["montant_total"] == 0
    assert doc["anomalies"] == ["no_items"]


def test_order_with_items_field_absent():
    raw = raw_order(_x_menus=[])
    del raw["items"]
    assert finish(raw)["anomalies"] == ["no_items"]


def test_string_date_is_normalised():
    doc = finish(raw_order(date_commande="2026-11-20T19:00:00Z"))
    assert doc["date_commande"] == datetime(2026, 11, 20, 19, 0, tzinfo=UTC)
    assert doc["anomalies"] == []


def test_decimal128_prices_are_numbers():
    menus = [
        {"_id": PIZZA, "nom": "P", "prix": Decimal128("12.50")},
        {"_id": TIRAMISU, "nom": "T", "prix": 3},
    ]
    doc = finish(raw_order(_x_menus=menus))
    assert doc["montant_total"] == 28.0


def test_invalid_price_is_an_anomaly_not_a_crash():
    menus = [{"_id": PIZZA, "nom": "P", "prix": "douze"}, {"_id": TIRAMISU, "nom": "T", "prix": 3}]
    doc = finish(raw_order(_x_menus=menus))
    assert doc["items"][0]["prix"] is None
    assert doc["montant_total"] == 3
    assert doc["anomalies"] == ["menu_price_invalid"]


def test_missing_delivery_date_is_an_anomaly():
    raw = raw_order()
    del raw["date_livraison"]
    doc = finish(raw)
    assert doc["date_livraison"] is None
    assert doc["anomalies"] == ["date_livraison_missing"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"numero_commande": None}, "numero_commande missing"),
        ({"numero_commande": "  "}, "numero_commande missing"),
        ({"numero_commande": 123}, "numero_commande is a int"),
        ({"date_commande": None}, "date_commande missing"),
        ({"date_commande": "hier soir"}, "date_commande unreadable"),
        ({"date_commande": 1700000000}, "date_commande unreadable"),
        ({"items": "pizza"}, "items is a str"),
        ({"items": ["pizza"]}, "items[0] is not a document"),
        ({"items": [{"menu_id": PIZZA, "quantite": 0}]}, "items[0].quantite"),
        ({"items": [{"menu_id": PIZZA, "quantite": "2"}]}, "items[0].quantite"),
        ({"items": [{"menu_id": PIZZA, "quantite": True}]}, "items[0].quantite"),
    ],
)
def test_invalid_orders_are_rejected_with_a_reason(changes, reason):
    with pytest.raises(InvalidOrderError) as caught:
        finish(raw_order(**changes))
    assert caught.value.reason.startswith(reason)


def test_order_without_numero_field_is_rejected():
    raw = raw_order()
    del raw["numero_commande"]
    with pytest.raises(InvalidOrderError, match="numero_commande missing"):
        finish(raw)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 1, 1, 12), datetime(2026, 1, 1, 12, tzinfo=UTC)),
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01 12:00:00", datetime(2026, 1, 1, 12, tzinfo=UTC)),
        ("2026-01-01T12:00:00+01:00", datetime(2026, 1, 1, 11, tzinfo=UTC)),
        (datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))), datetime(2026, 1, 1, 10, tzinfo=UTC)),
    ],
)
def test_parse_datetime(value, expected):
    assert parse_datetime(value) == expected


def test_pipeline_shape():
    names = CollectionNames(clients="C", couriers="L", restaurants="R", menu="M")
    pipeline = build_enrichment_pipeline({"status": "livrée"}, names, sort_by_id=True, limit=5)
    stages = [next(iter(stage)) for stage in pipeline]
    assert stages == [
        "$match",
        "$sort",
        "$limit",
        "$lookup",
        "$lookup",
        "$lookup",
        "$lookup",
    ]  # no $project: the order keeps every field; no join into the archive (pages skip by _id)
    lookups = [s["$lookup"] for s in pipeline if "$lookup" in s]
    assert [(lk["from"], lk["localField"]) for lk in lookups] == [
        ("C", "client_id"),
        ("L", "livreur_id"),
        ("R", "restaurant_id"),
        ("M", "items.menu_id"),
    ]
    assert all(lk["foreignField"] == "_id" for lk in lookups)


def test_pipeline_for_one_order_has_no_sort_exclusion_or_limit():
    order_id = ObjectId()
    pipeline = build_enrichment_pipeline({"_id": {"$in": [order_id]}}, CollectionNames())
    assert pipeline[0] == {"$match": {"_id": {"$in": [order_id]}}}
    assert [next(iter(s)) for s in pipeline].count("$lookup") == 4
    assert not any("$sort" in s or "$limit" in s for s in pipeline)


def test_pii_keep_hash_drop():
    """ARCHIVE_PII governs the client's name, e-mail and phone, the courier's name and the
    delivery address (in the document and its source copy); ids, dates, amounts, items and
    the restaurant are always kept. Each document records the policy and the key's id."""
    raw = raw_order()
    kept = finish_archive_document(raw, archived_by="batch", archived_at=NOW, pii=PiiPolicy("keep"))
    assert kept["client"]["email"] == "lea@example.fr"
    assert kept["pii_policy"] == "keep"
    dropped = finish_archive_document(raw, archived_by="batch", archived_at=NOW, pii=PiiPolicy("drop"))
    assert dropped["client"] == {"id": CLIENT, "nom": None, "prenom": None, "email": None, "telephone": None}
    assert dropped["livreur"] == {"id": COURIER, "nom": None, "prenom": None}
    assert dropped["adresse_livraison"] is None
    assert dropped["source"]["adresse_livraison"] is None
    assert dropped["source"]["client_id"] == CLIENT  # what accounting needs stays
    assert (dropped["montant_total"], dropped["restaurant"]["nom"]) == (kept["montant_total"], "Chez Luigi")
    assert dropped["pii_policy"] == "drop"
    key = "k" * 32
    hashed = finish_archive_document(raw, archived_by="batch", archived_at=NOW, pii=PiiPolicy("hash", key))
    key_id = PiiPolicy("hash", key).key_id
    assert hashed["pii_policy"] == f"hash:{key_id}"
    assert hashed["client"]["email"].startswith(f"hmac-sha256:{key_id}:")
    for clear in ("lea@example.fr", "06 12 34 56 78", "Martin", "Léa", "Petit", "Hugo", "1 rue de la Paix"):
        assert clear not in str(hashed), clear
    assert hashed["client"]["email"] == pseudonymise("  LEA@example.fr ", key)  # comparable
    assert hashed["client"]["email"] != pseudonymise("lea@example.fr", "x" * 32)  # keyed, and the id says so
    assert pseudonymise("lea@example.fr", "x" * 32).split(":")[1] != key_id
    assert PiiPolicy("hash", key).apply(None) is None


CONTRACT = Path("/work/shared/contract.md")  # present on the team's machines, not in a clone


def test_the_archive_document_type_is_what_is_built_and_holds_the_contract():
    """``documents.ArchiveDocument`` is the one type of a built archive document: its required
    fields are exactly those the one path builds, its erasure marks the only optional ones, and
    every field of the contract's section 2 is among them (where the contract is at hand)."""
    from order_archiver.documents import ArchiveDocument, ArchiveItem

    doc = finish(raw_order())
    assert set(doc) == ArchiveDocument.__required_keys__
    assert ArchiveDocument.__optional_keys__ == {"forgotten_at", "forgotten_by"}
    assert all(set(item) == ArchiveItem.__required_keys__ for item in doc["items"])
    if CONTRACT.is_file():
        section = CONTRACT.read_text().split("## 2. Archive", 1)[1].split("\n## ", 1)[0]
        block = section.split("```", 2)[1]
        named = set(re.findall(r"(?m)^\s+(\w+):", block))
        assert named
        assert named <= set(ArchiveDocument.__annotations__)
