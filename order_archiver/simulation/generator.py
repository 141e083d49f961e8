"""Realistic generated data for the five collections (Faker, ``fr_FR``), reproducible by seed.

Pure: ``generate_dataset`` returns documents and touches no database. With the same seed,
count and anchor day it returns the same documents, ids included (ids are drawn from the
seeded generator, with the ObjectId timestamp of the document's creation).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypedDict

from bson import ObjectId

# The generator's defaults; the command line takes its own from here.
DEFAULT_COUNT = 1000  # orders
DEFAULT_SEED = 42  # same seed, same data (and new numbers in a database that has orders)
DEFAULT_P_DELIVERED = 0.6
DEFAULT_P_ANOMALIES = 0.02
DEFAULT_DAYS = 30

STATUSES = ("en_attente", "en_preparation", "en_livraison", "livrée", "annulée")
# Share of each non-delivered status among the orders that are not delivered.
_OTHER_STATUS_WEIGHTS = {"en_attente": 0.25, "en_preparation": 0.25, "en_livraison": 0.3, "annulée": 0.2}

ANOMALY_KINDS = (
    "client_missing",
    "livreur_missing",
    "livreur_id_missing",
    "restaurant_missing",
    "menu_missing",
    "date_commande_string",
    "no_items",
    "numero_commande_missing",
)

# Cuisine -> (dishes, price range in euros).
CUISINES: dict[str, tuple[tuple[str, ...], tuple[float, float]]] = {
    "française": (
        (
            "Bœuf bourguignon",
            "Coq au vin",
            "Quiche lorraine",
            "Croque-monsieur",
            "Ratatouille",
            "Blanquette de veau",
            "Soupe à l'oignon",
            "Tarte Tatin",
            "Crème brûlée",
            "Confit de canard",
        ),
        (6.5, 24.0),
    ),
    "italienne": (
        (
            "Pizza margherita",
            "Pizza quatre fromages",
            "Lasagnes",
            "Spaghetti carbonara",
            "Risotto aux cèpes",
            "Tiramisu",
            "Panna cotta",
            "Gnocchi au pesto",
            "Calzone",
            "Osso buco",
        ),
        (7.0, 19.5),
    ),
    "japonaise": (
        (
            "Plateau sushi",
            "Ramen shoyu",
            "Maki saumon",
            "California roll",
            "Gyoza",
            "Yakitori",
            "Chirashi",
            "Soupe miso",
            "Mochi",
            "Donburi poulet",
        ),
        (4.5, 26.0),
    ),
    "libanaise": (
        (
            "Houmous",
            "Taboulé",
            "Falafels",
            "Chawarma poulet",
            "Kebbé",
            "Moutabal",
            "Fattouch",
            "Baklava",
            "Manakiche",
            "Assiette mezzés",
        ),
        (4.0, 17.0),
    ),
    "indienne": (
        (
            "Poulet tikka masala",
            "Butter chicken",
            "Naan fromage",
            "Biryani",
            "Dal",
            "Samoussas",
            "Palak paneer",
            "Lassi mangue",
            "Korma",
            "Tandoori",
        ),
        (3.5, 16.5),
    ),
    "américaine": (
        (
            "Cheeseburger",
            "Bacon burger",
            "Frites maison",
            "Hot-dog",
            "Onion rings",
            "Milk-shake",
            "Brownie",
            "Chicken wings",
            "Club sandwich",
            "Cheesecake",
        ),
        (3.0, 15.0),
    ),
    "chinoise": (
        (
            "Canard laqué",
            "Nems",
            "Riz cantonais",
            "Porc au caramel",
            "Bœuf aux oignons",
            "Raviolis vapeur",
            "Nouilles sautées",
            "Poulet aigre-doux",
            "Perles de coco",
            "Bo bun",
        ),
        (3.5, 18.0),
    ),
}
_RESTAURANT_PATTERNS = (
    "Chez {}",
    "Le Petit {}",
    "La Table de {}",
    "L'Atelier {}",
    "Le Comptoir {}",
    "Maison {}",
)
_VEHICLES = ("vélo", "vélo électrique", "scooter", "moto", "voiture")
_CATEGORIES = ("entrée", "plat", "plat", "plat", "dessert", "boisson")


# The contract's source schema (section 1), as the generator writes it. What the product reads
# from a real database is not trusted to match it (real data is dirty): reads stay
# ``documents.Document``, checked by the finishing step.


class ClientDocument(TypedDict):
    _id: ObjectId
    nom: str
    prenom: str
    email: str
    telephone: str
    adresse: str


class CourierDocument(TypedDict):
    _id: ObjectId
    nom: str
    prenom: str
    telephone: str
    vehicule: str


class RestaurantDocument(TypedDict):
    _id: ObjectId
    nom: str
    type_cuisine: str
    adresse: str
    note: float


class DishDocument(TypedDict):
    _id: ObjectId
    restaurant_id: ObjectId
    nom: str
    prix: float  # euros
    categorie: str


class OrderItem(TypedDict):
    menu_id: ObjectId  # -> Menu._id
    quantite: int  # >= 1


class SourceOrder(TypedDict, total=False):
    """An order; ``total=False``: dirty data lacks ``numero_commande`` or ``livreur_id``, and
    only a delivered order has ``date_livraison``."""

    _id: ObjectId
    numero_commande: str  # the business key
    status: str  # "en_attente", "en_preparation", "en_livraison", "livrée", "annulée"
    date_commande: datetime | str  # UTC; an ISO-8601 string in dirty data
    date_livraison: datetime  # UTC, once delivered
    client_id: ObjectId
    livreur_id: ObjectId | None  # None until assigned
    restaurant_id: ObjectId
    items: list[OrderItem]
    adresse_livraison: str
    _dirty: str  # the generator's mark of a dirty case, for tests: never stored (strip_markers)


class SourceNames(Protocol):
    """The settings' names of the five source collections (``settings.Settings``)."""

    @property
    def clients_collection(self) -> str: ...

    @property
    def couriers_collection(self) -> str: ...

    @property
    def restaurants_collection(self) -> str: ...

    @property
    def menu_collection(self) -> str: ...

    @property
    def orders_collection(self) -> str: ...


@dataclass
class Dataset:
    clients: list[ClientDocument] = field(default_factory=list)
    couriers: list[CourierDocument] = field(default_factory=list)
    restaurants: list[RestaurantDocument] = field(default_factory=list)
    menus: list[DishDocument] = field(default_factory=list)
    orders: list[SourceOrder] = field(default_factory=list)

    def by_collection(self, settings: SourceNames) -> Iterator[tuple[str, Sequence[Mapping[str, object]]]]:
        """(collection name, documents) in insertion order: references before orders."""
        yield settings.clients_collection, self.clients
        yield settings.couriers_collection, self.couriers
        yield settings.restaurants_collection, self.restaurants
        yield settings.menu_collection, self.menus
        yield settings.orders_collection, self.orders


def _object_id(rng: random.Random, when: datetime) -> ObjectId:
    return ObjectId(struct.pack(">I", int(when.timestamp())) + rng.randbytes(8))


def default_anchor() -> datetime:
    """Today at midnight UTC: data generated on one day with one seed is identical."""
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def generate_dataset(
    count: int,
    *,
    seed: int | None = None,
    p_delivered: float = DEFAULT_P_DELIVERED,
    p_anomalies: float = DEFAULT_P_ANOMALIES,
    days: int = DEFAULT_DAYS,
    anchor: datetime | None = None,
    first_number: int = 1,
) -> Dataset:
    """``count`` orders and the clients, couriers, restaurants and dishes they reference.

    Orders are spread over the ``days`` before ``anchor`` (plus the anchor day up to now's
    hour); each is delivered with probability ``p_delivered`` and made dirty, in one of the
    contract's ways (``ANOMALY_KINDS``), with probability ``p_anomalies``. Numbers run from
    ``CMD-{first_number:06d}``.
    """
    anchor = anchor or default_anchor()
    rng = random.Random(f"{seed}:{first_number}" if seed is not None else None)
    from faker import Faker  # the simulation's package, not the runtime's (requirements-simulation.txt)

    fake = Faker("fr_FR")
    fake.seed_instance(rng.randrange(2**32))
    born = anchor - timedelta(days=days + 90)

    def created(spread_days: int) -> datetime:
        return born + timedelta(seconds=rng.randrange(spread_days * 86400))

    data = Dataset()
    for _ in range(max(20, count // 10)):
        first, last = fake.first_name(), fake.last_name()
        data.clients.append(
            {
                "_id": _object_id(rng, created(90)),
                "nom": last,
                "prenom": first,
                "email": f"{first}.{last}{rng.randrange(100)}@{fake.free_email_domain()}".lower().replace(
                    " ", ""
                ),
                "telephone": fake.phone_number(),
                "adresse": fake.address().replace("\n", ", "),
            }
        )
    for _ in range(max(5, count // 200)):
        data.couriers.append(
            {
                "_id": _object_id(rng, created(90)),
                "nom": fake.last_name(),
                "prenom": fake.first_name(),
                "telephone": fake.phone_number(),
                "vehicule": rng.choice(_VEHICLES),
            }
        )
    menus_by_restaurant: dict[ObjectId, list[DishDocument]] = {}
    cuisines = sorted(CUISINES)
    for _ in range(max(5, count // 200)):
        cuisine = rng.choice(cuisines)
        restaurant: RestaurantDocument = {
            "_id": _object_id(rng, created(90)),
            "nom": rng.choice(_RESTAURANT_PATTERNS).format(fake.last_name()),
            "type_cuisine": cuisine,
            "adresse": fake.address().replace("\n", ", "),
            "note": round(rng.uniform(3.0, 5.0), 1),
        }
        data.restaurants.append(restaurant)
        dishes, (low, high) = CUISINES[cuisine]
        menu: list[DishDocument] = [
            {
                "_id": _object_id(rng, created(90)),
                "restaurant_id": restaurant["_id"],
                "nom": dish,
                "prix": round(rng.uniform(low, high) * 2) / 2,
                "categorie": rng.choice(_CATEGORIES),
            }
            for dish in rng.sample(dishes, rng.randint(6, len(dishes)))
        ]
        menus_by_restaurant[restaurant["_id"]] = menu
        data.menus.extend(menu)

    others = list(_OTHER_STATUS_WEIGHTS)
    weights = list(_OTHER_STATUS_WEIGHTS.values())
    window = days * 86400
    for offset in range(count):
        client = rng.choice(data.clients)
        restaurant = rng.choice(data.restaurants)
        ordered_at = anchor - timedelta(days=days) + timedelta(seconds=rng.randrange(window))
        ordered_at = ordered_at.replace(microsecond=0)
        status = "livrée" if rng.random() < p_delivered else rng.choices(others, weights)[0]
        menu = menus_by_restaurant[restaurant["_id"]]
        items: list[OrderItem] = [
            {"menu_id": dish["_id"], "quantite": rng.choices((1, 2, 3, 4), (70, 20, 7, 3))[0]}
            for dish in rng.sample(menu, rng.randint(1, min(4, len(menu))))
        ]
        order: SourceOrder = {
            "_id": _object_id(rng, ordered_at),
            "numero_commande": f"CMD-{first_number + offset:06d}",
            "status": status,
            "date_commande": ordered_at,
            "client_id": client["_id"],
            "livreur_id": rng.choice(data.couriers)["_id"] if status in ("en_livraison", "livrée") else None,
            "restaurant_id": restaurant["_id"],
            "items": items,
            "adresse_livraison": client["adresse"],
        }
        if status == "livrée":
            order["date_livraison"] = ordered_at + timedelta(minutes=rng.randint(15, 75))
        if rng.random() < p_anomalies:
            _make_dirty(order, rng.choice(ANOMALY_KINDS), rng, ordered_at)
        data.orders.append(order)
    return data


def _make_dirty(order: SourceOrder, kind: str, rng: random.Random, when: datetime) -> None:
    """Turn one order into one of the dirty cases the contract says real data holds."""
    if kind == "client_missing":
        order["client_id"] = _object_id(rng, when)
    elif kind == "livreur_missing":
        order["livreur_id"] = _object_id(rng, when)
    elif kind == "livreur_id_missing":
        order.pop("livreur_id", None)
    elif kind == "restaurant_missing":
        order["restaurant_id"] = _object_id(rng, when)
    elif kind == "menu_missing":
        order["items"][0]["menu_id"] = _object_id(rng, when)
    elif kind == "date_commande_string":
        order["date_commande"] = when.isoformat().replace("+00:00", "Z")
    elif kind == "no_items":
        order["items"] = []
    elif kind == "numero_commande_missing":
        order.pop("numero_commande", None)
    order["_dirty"] = kind


def strip_markers(order: Mapping[str, object]) -> dict[str, object]:
    """The order as stored: without the ``_dirty`` marker tests use to find dirty cases."""
    return {k: v for k, v in order.items() if k != "_dirty"}
