"""The contract's source schema, typed: what the user's database holds (the contract, section 1),
as the generator writes it. What the product reads from a real database is not trusted to
match it (real data is dirty: a string date, a missing reference, no items): reads stay
``documents.Document`` and are checked by the finishing step; these types say what clean data is,
and what the generator's dirty cases change (``SourceOrder``'s looser fields)."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from bson import ObjectId


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
