from collections import Counter
from datetime import UTC, datetime

from order_archiver.simulation.generator import ANOMALY_KINDS, generate_dataset, strip_markers

ANCHOR = datetime(2026, 11, 26, tzinfo=UTC)


def test_same_seed_same_documents():
    first = generate_dataset(300, seed=42, anchor=ANCHOR)
    second = generate_dataset(300, seed=42, anchor=ANCHOR)
    assert first == second
    assert generate_dataset(300, seed=43, anchor=ANCHOR).orders != first.orders


def test_references_resolve_and_dishes_belong_to_the_restaurant():
    data = generate_dataset(2000, seed=1, p_anomalies=0, anchor=ANCHOR)
    clients = {c["_id"] for c in data.clients}
    couriers = {c["_id"] for c in data.couriers}
    restaurants = {r["_id"] for r in data.restaurants}
    dish_restaurant = {m["_id"]: m["restaurant_id"] for m in data.menus}
    for order in data.orders:
        assert order["client_id"] in clients
        assert order["restaurant_id"] in restaurants
        assert order["livreur_id"] is None or order["livreur_id"] in couriers
        assert order["items"]
        for item in order["items"]:
            assert dish_restaurant[item["menu_id"]] == order["restaurant_id"]
            assert isinstance(item["quantite"], int)
            assert item["quantite"] >= 1


def test_statuses_dates_and_numbers():
    data = generate_dataset(5000, seed=7, p_delivered=0.4, p_anomalies=0, anchor=ANCHOR, days=30)
    statuses = Counter(o["status"] for o in data.orders)
    assert abs(statuses["livrée"] / 5000 - 0.4) < 0.03
    assert set(statuses) == {"en_attente", "en_preparation", "en_livraison", "livrée", "annulée"}
    numbers = [o["numero_commande"] for o in data.orders]
    assert len(set(numbers)) == len(numbers)
    assert numbers[0] == "CMD-000001"
    for order in data.orders:
        assert ANCHOR.replace(day=27, month=10) <= order["date_commande"] < ANCHOR
        if order["status"] == "livrée":
            assert order["date_livraison"] > order["date_commande"]
            assert order["livreur_id"] is not None
        else:
            assert "date_livraison" not in order
    assert all(isinstance(m["prix"], float) and m["prix"] > 0 for m in data.menus)


def test_anomalies_follow_their_probability_and_cover_every_kind():
    data = generate_dataset(5000, seed=3, p_anomalies=0.1, anchor=ANCHOR)
    kinds = Counter(o["_dirty"] for o in data.orders if "_dirty" in o)
    assert abs(sum(kinds.values()) / 5000 - 0.1) < 0.02
    assert set(kinds) == set(ANOMALY_KINDS)
    dirty = {o["_dirty"]: o for o in data.orders if "_dirty" in o}
    assert "numero_commande" not in dirty["numero_commande_missing"]
    assert isinstance(dirty["date_commande_string"]["date_commande"], str)
    assert dirty["no_items"]["items"] == []
    assert "_dirty" not in strip_markers(dirty["no_items"])


def test_numbering_continues_from_first_number():
    data = generate_dataset(10, seed=1, first_number=501, anchor=ANCHOR)
    assert data.orders[0]["numero_commande"] == "CMD-000501"
