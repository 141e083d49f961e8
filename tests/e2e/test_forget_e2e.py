"""`forget --client ID` (#25 item 2) as a data-protection officer runs it, on the test server:
a dry run changes nothing, --run erases the client's name, e-mail, phone and addresses from
every archived order of theirs (searched for in the whole archive afterwards), keeps what
accounting needs, touches no other client, and a second run erases nothing."""

import json
from collections import Counter

import pytest

from tests.conftest import run_cli
from tests.helpers import seed_database, strings_in

pytestmark = pytest.mark.e2e


def test_forget_erases_a_clients_personal_data_from_the_archive(
    nx_client, nx_settings, nx_env, db_name, tmp_path
):
    database = nx_client[db_name]
    seed_database(database, nx_settings, 300, seed=23, p_anomalies=0.0)
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode in (0, 3)
    archive = database["Commande_archive"]
    counts = Counter(
        d["client"]["id"] for d in archive.find({"client": {"$type": "object"}}, {"client.id": 1})
    )
    client_id, orders = counts.most_common(1)[0]
    person = database["Client"].find_one({"_id": client_id})
    secrets = [person["email"], person["telephone"], person["nom"]]
    addresses = {d["adresse_livraison"] for d in archive.find({"client.id": client_id})}
    before = {d["_id"]: d for d in archive.find()}

    dry = run_cli("forget", "--client", str(client_id), "--json", env=nx_env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {
        "client_id": str(client_id),
        "run": False,
        "orders": orders,
        "erased": orders,
        "found": True,
        "ended": "completed",  # #34: why it ended
    }
    assert {d["_id"]: d for d in archive.find()} == before  # a dry run writes nothing

    done = run_cli("forget", "--client", str(client_id), "--run", env=nx_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        f"erased the name, e-mail, phone, delivery address and every undeclared order field of {orders}"
        in done.stdout
    )
    everything = [s for d in archive.find() for s in strings_in(d)]
    for secret in [*secrets, *addresses]:
        holders = [d for d in archive.find() if secret in strings_in(d)]
        assert secret not in everything, (
            secret,
            [(h["client"], h.get("forgotten_at"), h["source"].get("client_id")) for h in holders],
        )
    for document in archive.find({"client.id": client_id}):
        old = before[document["_id"]]
        assert document["client"] == {
            "id": client_id,
            "nom": None,
            "prenom": None,
            "email": None,
            "telephone": None,
        }
        assert document["adresse_livraison"] is None
        assert document["source"]["adresse_livraison"] is None
        assert document["forgotten_at"] is not None
        for kept in (
            "numero_commande",
            "date_commande",
            "montant_total",
            "items",
            "restaurant",
        ):
            assert document[kept] == old[kept], kept
        # The fingerprint is the erased copy's: none of the erased values is in a digest.
        assert document["source_hash"] != old["source_hash"]
    others = [d for d in archive.find() if (d.get("client") or {}).get("id") != client_id]
    changed = [(d["client"], d.get("forgotten_at")) for d in others if d != before[d["_id"]]]
    assert changed == []  # no other client touched

    again = run_cli("forget", "--client", str(client_id), "--run", "--json", env=nx_env, cwd=tmp_path)
    assert json.loads(again.stdout)["erased"] == 0  # idempotent
    rerun = run_cli(
        "batch", "--run", "-q", env=nx_env, cwd=tmp_path
    )  # the unchanged source is not archived again
    assert rerun.returncode in (0, 3)
    assert secrets[0] not in [s for d in archive.find() for s in strings_in(d)]
    logs = "".join(p.read_text() for p in tmp_path.rglob("*.log"))
    assert all(secret not in logs + done.stdout + done.stderr for secret in secrets)

    bad = run_cli("forget", "--client", "12345", "--run", env=nx_env, cwd=tmp_path)
    assert bad.returncode == 2
    assert "expected a client _id of 24 hexadecimal digits" in bad.stderr


def test_forget_reaches_an_order_naming_the_client_by_their_id_as_typed_in_mixed_case(
    nx_client, nx_settings, nx_env, db_name, tmp_path, monkeypatch, capsys
):
    """Ids are compared as stored: an order whose client_id is the 24-digit text of the
    client's id in mixed case (an import that lost the type) is matched by the id given in that
    case (copied from the data). forget looked for the ObjectId, the lower and the upper case
    text only: the order kept the delivery address."""
    from tests.helpers import run_in_process

    database = nx_client[db_name]
    seed_database(database, nx_settings, 60, seed=29, p_anomalies=0.0)
    client = database["Client"].find_one()["_id"]
    typed = "".join(c.upper() if i % 2 else c for i, c in enumerate(str(client)))
    assert typed not in (str(client), str(client).upper())  # letters in both cases
    order = database["Commande"].find_one({"status": nx_settings.delivered_status})
    database["Commande"].update_one({"_id": order["_id"]}, {"$set": {"client_id": typed}})
    assert run_cli("batch", "--run", "-q", env=nx_env, cwd=tmp_path).returncode in (0, 3)
    archive = database["Commande_archive"]
    assert archive.find_one({"_id": order["_id"]})["source"]["client_id"] == typed  # stored as it was
    # find and restore take the id as forget does (they looked for the ObjectId and two cases).
    found = run_in_process(
        "find", "--client", typed, "--json", env=nx_env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert str(order["_id"]) in found.stdout, found.stdout[-500:] + found.stderr
    would = run_in_process(
        "restore",
        "--client",
        typed,
        "--json",
        env=nx_env,
        cwd=tmp_path,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert json.loads(would.stdout)["selected"] >= 1, would.stdout + would.stderr

    done = run_in_process(
        "forget", "--client", typed, "--run", env=nx_env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert done.returncode == 0, done.stderr
    erased = archive.find_one({"_id": order["_id"]})
    assert erased["forgotten_by"] == "forget"
    assert erased["source"]["adresse_livraison"] is None
    assert erased["adresse_livraison"] is None
