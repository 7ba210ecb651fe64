"""The explorer's attack job reads the attack registry: /api/info lists every attack, an
unknown method is refused at once naming the registered ones, and an attack without a budget
(DeepFool) runs and gives what the library gives for the same arguments."""

from __future__ import annotations

import convlens
from convlens.adversarial.registry import ATTACKS, attack_names

from helpers.web import wait_for_job


def test_info_lists_the_registered_attacks(client_factory) -> None:
    client, _ = client_factory()
    attacks = client.get("/api/info").json()["attacks"]
    assert [a["name"] for a in attacks] == list(attack_names())
    for a in attacks:
        spec = ATTACKS[a["name"]]
        assert (a["box"], tuple(a["norms"]), a["budget"]) == (spec.box, spec.norms, spec.budget)


def test_unknown_attack_is_refused_naming_the_choices(client_factory) -> None:
    client, _ = client_factory()
    image = client.post("/api/samples/cat").json()
    response = client.post("/api/jobs/attack", json={"image": image["id"], "method": "nope"})
    assert response.status_code == 400
    assert "nope" in response.json()["detail"] and "deepfool" in response.json()["detail"]


def test_an_attack_without_a_budget_runs_like_the_library(client_factory, digits_model) -> None:
    client, _ = client_factory()
    image = client.post("/api/samples/cat").json()
    body = {"image": image["id"], "method": "deepfool", "steps": 5}  # eps left at its default
    job = wait_for_job(client, client.post("/api/jobs/attack", json=body).json()["id"])
    assert job["status"] == "done", job
    expected = convlens.attack(digits_model, ["sample:cat"], "deepfool", steps=5, seed=0)
    assert job["result"]["eps"] is None and job["result"]["method"] == "deepfool"
    assert job["result"]["success"] == bool(expected["success"][0])
    assert job["result"]["linf"] == float(expected["linf"][0])
    assert [t["class"] for t in job["result"]["after"]] == expected["top_classes_after"][0].tolist()
