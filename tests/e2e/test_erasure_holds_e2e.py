"""An erasure that holds (#31 items 1 to 4), as a data-protection officer and the jobs run it
on the test server: after `forget --run`, no later write brings a forgotten person's data back
into the archive (a correction archived by watch or by batch, a restore then a batch, a
repair); no digest of an erased value is left to recompute from candidates; a field the
contract does not name is personal; couriers are forgotten too. Each test searches every
collection of the archive's database for the actual values (e-mail, phone, names, address)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import bson
import pytest

from tests.conftest import run_cli
from tests.helpers import (
    WatchProcess,
    archived_ids,
    expected_archive_ids,
    seed_database,
    strings_in,
    token_saved,
    wait_for,
)

pytestmark = pytest.mark.e2e

INSTRUCTIONS = "Digicode 4821, appeler Mme Morvan au 06 11 22 33 44"
# A refund is not personal: declared so, the correction's amount stays in a forgotten client's
# orders (an undeclared field would be erased with the rest).
DECLARED = {"ARCHIVE_NON_PERSONAL_FIELDS": "remboursement,note_interne"}


def found_anywhere(database: Any, secrets: list[str]) -> list[tuple[str, str]]:
    """(collection, secret) for each secret some document of the database holds, anywhere in it
    (the archive, its source copies, the checkpoints, the rejects, the record of the forgotten)."""
    found = []
    for name in database.list_collection_names():
        if name in ("Commande", "Client", "Livreur", "Restaurants", "Menu"):
            continue  # the application's data: forget cannot reach it (documented)
        held = {s for document in database[name].find() for s in strings_in(document)}
        found += [(name, secret) for secret in secrets if secret in held]
    return found


def busiest_client(database: Any) -> tuple[Any, int]:
    counts = Counter(
        d["client"]["id"]
        for d in database["Commande_archive"].find({"client": {"$type": "object"}}, {"client.id": 1})
    )
    return counts.most_common(1)[0]


def secrets_of(database: Any, client_id: Any) -> list[str]:
    person = database["Client"].find_one({"_id": client_id})
    addresses = {d["adresse_livraison"] for d in database["Commande"].find({"client_id": client_id})}
    return [person["email"], person["telephone"], person["nom"], person["prenom"], *sorted(addresses)]


def forget(env: dict[str, str], cwd: Any, *person: str) -> dict[str, Any]:
    done = run_cli("forget", *person, "--run", "--json", env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_correction_under_batch_and_a_restore_do_not_bring_a_forgotten_clients_data_back(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """The review's two cases: a correction of a forgotten client's order re-joined the Client
    record and wrote the name, e-mail and phone back; `restore --client` then `batch --run`
    did the same to all of their orders (and status said nothing was wrong)."""
    nx_env = {**nx_env, **DECLARED}
    database = nx_client[db_name]
    seed_database(database, nx_settings, 300, seed=31, p_anomalies=0.0)
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode == 0
    client_id, orders = busiest_client(database)
    secrets = secrets_of(database, client_id)
    assert found_anywhere(database, secrets)  # archived in clear before

    assert forget(nx_env, tmp_path, "--client", str(client_id))["erased"] == orders
    assert found_anywhere(database, secrets) == []

    # A correction of one of their orders (a refund, the address fixed), archived by a full pass.
    order_id = database["Commande_archive"].find_one({"client.id": client_id})["_id"]
    database["Commande"].update_one(
        {"_id": order_id}, {"$set": {"remboursement": 4.5, "adresse_livraison": secrets[-1] + " bis"}}
    )
    corrected = run_cli("batch", "--run", "--full", "--json", env=nx_env, cwd=tmp_path)
    assert corrected.returncode == 0, corrected.stderr
    assert json.loads(corrected.stdout)["revised"] == 1
    revised = database["Commande_archive"].find_one({"_id": order_id})
    assert revised["source"]["remboursement"] == 4.5  # the correction is archived...
    assert found_anywhere(database, [*secrets, secrets[-1] + " bis"]) == []  # ...without the person
    assert revised["forgotten_by"] == "forget"

    # restore --client, then the next batch archives their orders again: still erased.
    restored = run_cli(
        "restore", "--client", str(client_id), "--run", "--yes", "--json", env=nx_env, cwd=tmp_path
    )
    assert restored.returncode in (0, 3), restored.stderr
    assert json.loads(restored.stdout)["without_personal_data"] >= 1  # and says so
    database["Commande"].update_many({"client_id": client_id}, {"$set": {"note_interne": "relivrée"}})
    again = run_cli("batch", "--run", "--full", "-q", env=nx_env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert found_anywhere(database, secrets) == []

    status = run_cli("status", "--json", env=nx_env, cwd=tmp_path)
    assert json.loads(status.stdout)["forgotten_holding"] == 0
    verify = run_cli("verify", "--json", env=nx_env, cwd=tmp_path)
    assert json.loads(verify.stdout)["unerased"] == 0

    # What an earlier version left (a document marked erased, its data written back): both count it.
    database["Commande_archive"].update_one({"_id": order_id}, {"$set": {"client.email": secrets[0]}})
    status = json.loads(run_cli("status", "--json", env=nx_env, cwd=tmp_path).stdout)
    assert status["forgotten_holding"] == 1
    assert any("forgotten persons still hold" in p for p in status["problems"])
    verify = run_cli("verify", "--json", env=nx_env, cwd=tmp_path)
    assert verify.returncode == 3
    assert json.loads(verify.stdout)["unerased"] == 1


def test_a_correction_under_watch_does_not_bring_a_forgotten_clients_data_back(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    nx_env = {**nx_env, **DECLARED}
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=32, p_anomalies=0.0)
    expected = expected_archive_ids(dataset)
    env = {**nx_env, "RESUME_TOKEN_FILE": str(tmp_path / "token.json"), "WATCH_HEARTBEAT_S": "1"}
    watcher = WatchProcess(env, tmp_path)
    try:
        wait_for(
            lambda: archived_ids(database) == expected, timeout=60, what="catch-up", on_timeout=watcher.output
        )
        wait_for(lambda: token_saved(database, tmp_path, "file"), what="the start token")
        client_id, _ = busiest_client(database)
        secrets = secrets_of(database, client_id)
        forget(nx_env, tmp_path, "--client", str(client_id))
        assert found_anywhere(database, secrets) == []
        order_id = database["Commande_archive"].find_one({"client.id": client_id})["_id"]
        database["Commande"].update_one({"_id": order_id}, {"$set": {"remboursement": 7.0}})

        def revised() -> bool:
            document = database["Commande_archive"].find_one({"_id": order_id})
            return document is not None and document["source"].get("remboursement") == 7.0

        wait_for(revised, what="the correction archived", on_timeout=watcher.output)
        assert found_anywhere(database, secrets) == []
    finally:
        code = watcher.stop()
    assert code == 0, watcher.output()


def test_no_digest_of_an_erased_address_is_left_to_recompute(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    """The review recovered 10 of 10 erased addresses from `source_hash` (an unkeyed SHA-256 of
    the order before erasure) and a list of candidates: every address of the source, tried in
    every erased document's copy, recomputes no fingerprint the archive holds."""
    database = nx_client[db_name]
    seed_database(database, nx_settings, 300, seed=33, p_anomalies=0.0)
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode == 0
    client_id, orders = busiest_client(database)
    forget(nx_env, tmp_path, "--client", str(client_id))
    candidates = sorted(
        {d["adresse_livraison"] for d in database["Commande"].find({}, {"adresse_livraison": 1})}
    )
    erased = list(database["Commande_archive"].find({"client.id": client_id}))
    assert len(erased) == orders
    recovered = 0
    for document in erased:
        for address in candidates:
            guess = {**document["source"], "adresse_livraison": address}
            recovered += hashlib.sha256(bson.encode(guess)).hexdigest()[:32] == document["source_hash"]
    assert recovered == 0
    # The purge still recognises the unchanged source order as the version the archive holds.
    purged = run_cli("batch", "--run", "--full", "--purge-source", "--json", env=nx_env, cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    assert database["Commande"].count_documents({"client_id": client_id, "status": "livrée"}) == 0


def test_a_field_the_contract_does_not_name_is_personal(nx_client, nx_settings, nx_env, db_name, tmp_path):
    """`instructions_livraison` (a door code, a name, a phone) is masked in a dry run's samples,
    dropped under ARCHIVE_PII=drop, erased by forget; a declared field is kept and shown."""
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 120, seed=34, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset))
    database["Commande"].update_many(
        {"_id": {"$in": delivered}}, {"$set": {"instructions_livraison": INSTRUCTIONS, "canal": "app"}}
    )
    env = {**nx_env, "ARCHIVE_NON_PERSONAL_FIELDS": "canal"}
    dry = run_cli("batch", "--json", "--samples", "3", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert INSTRUCTIONS not in dry.stdout
    samples = json.loads(dry.stdout)["samples"]
    assert [s["source"]["instructions_livraison"] for s in samples] == ["***"] * 3
    assert [s["source"]["canal"] for s in samples] == ["app"] * 3  # declared: not personal

    done = run_cli("batch", "--run", "-q", env={**env, "ARCHIVE_PII": "drop"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert found_anywhere(database, [INSTRUCTIONS]) == []
    document = database["Commande_archive"].find_one({"_id": delivered[0]})
    assert (document["source"]["instructions_livraison"], document["source"]["canal"]) == (None, "app")


def test_forget_erases_an_undeclared_field_and_forgets_a_courier(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    database = nx_client[db_name]
    dataset = seed_database(database, nx_settings, 200, seed=35, p_anomalies=0.0)
    delivered = sorted(expected_archive_ids(dataset))
    database["Commande"].update_many(
        {"_id": {"$in": delivered}}, {"$set": {"instructions_livraison": INSTRUCTIONS}}
    )
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode == 0
    client_id, _ = busiest_client(database)
    forget(nx_env, tmp_path, "--client", str(client_id))
    for document in database["Commande_archive"].find({"client.id": client_id}):
        assert document["source"]["instructions_livraison"] is None
    assert database["Commande_archive"].count_documents({"source.instructions_livraison": INSTRUCTIONS}) > 0

    couriers = Counter(
        d["livreur"]["id"]
        for d in database["Commande_archive"].find({"livreur": {"$type": "object"}}, {"livreur.id": 1})
    )
    courier_id, rides = couriers.most_common(1)[0]
    courier = database["Livreur"].find_one({"_id": courier_id})
    dry = run_cli("forget", "--courier", str(courier_id), "--json", env=nx_env, cwd=tmp_path)
    assert json.loads(dry.stdout) == {
        "courier_id": str(courier_id),
        "run": False,
        "orders": rides,
        "erased": rides,
        "found": True,
        "ended": "completed",  # #34: why it ended
    }
    assert forget(nx_env, tmp_path, "--courier", str(courier_id))["erased"] == rides
    for document in database["Commande_archive"].find({"livreur.id": courier_id}):
        assert (document["livreur"]["nom"], document["livreur"]["prenom"]) == (None, None)
        assert document["livreur"]["forgotten_at"] is not None
        assert (
            document["client"] is None or document["client"]["id"] == client_id or document["client"]["email"]
        )
    names = [f"{courier['prenom']} {courier['nom']}"]
    held = {
        f"{(d.get('livreur') or {}).get('prenom')} {(d.get('livreur') or {}).get('nom')}"
        for d in database["Commande_archive"].find()
    }
    assert not set(names) & held
    # A new delivery of theirs is archived without their name.
    order_id = next(o["_id"] for o in dataset.orders if o["status"] != "livrée")
    database["Commande"].update_one(
        {"_id": order_id},
        {
            "$set": {
                "status": "livrée",
                "livreur_id": courier_id,
                "date_livraison": dataset.orders[0]["date_commande"],
            }
        },
    )
    assert run_cli("batch", "--run", "--full", "-q", env=nx_env, cwd=tmp_path).returncode == 0
    archived = database["Commande_archive"].find_one({"_id": order_id})
    assert archived["livreur"]["id"] == courier_id
    assert (archived["livreur"]["nom"], archived["livreur"]["prenom"]) == (None, None)
    # #32 item 3: a courier's id given as a client's is found nowhere: said, nothing recorded, exit 3.
    mistaken = run_cli("forget", "--client", str(courier_id), "--run", env=nx_env, cwd=tmp_path)
    assert mistaken.returncode == 3, mistaken.stderr
    assert "not found: no archived order and no Client document with this _id" in mistaken.stdout
    assert database["archiver_forgotten"].count_documents({"_id": f"client:{courier_id}"}) == 0
    bad = run_cli("forget", "--courier", "42", env=nx_env, cwd=tmp_path)
    assert bad.returncode == 2
    assert "expected a courier _id of 24 hexadecimal digits" in bad.stderr
    neither = run_cli("forget", "--run", env=nx_env, cwd=tmp_path)
    assert neither.returncode == 2
    assert "one of the arguments --client --courier is required" in neither.stderr
