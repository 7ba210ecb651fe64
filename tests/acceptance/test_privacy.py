"""Acceptance of issue 10 (pytest -m acceptance): privacy attacks and backdoors, real digits.

- Membership (digits, seeds 0-2): every attacked target has >= 90 % held-out accuracy; the
  overfit recipe's AUC is > 0.6 and above the regularised recipe's, for the loss-threshold
  and the shadow-model attack, at every seed.
- Inversion: an independently trained judge (another architecture and seed) classifies all
  10 white-box reconstructions of digits_cnn as their class, for 3 judge seeds, and >= 8 of
  10 of mnist_cnn's; the black-box variant's success and query count are reported.
- Backdoor (digits 3x3 trigger, MNIST 4x4; 5 % poisoned): clean accuracy within 2 points of
  the clean model, attack success >= 90 %, activation clustering or spectral signatures flag
  >= 80 % of the poisoned images at <= 10 % false positives, Neural Cleanse names the target
  (anomaly index > 2) with mask IoU >= 0.5.
"""

from __future__ import annotations

import pytest

from convlens.privacy.backdoor import backdoor_experiment
from convlens.privacy.inversion import inversion_experiment
from convlens.privacy.membership import membership_experiment

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(3600)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


def test_membership_overfit_leaks_more_than_regularised_for_both_attacks() -> None:
    results = membership_experiment("digits", seeds=(0, 1, 2), n_shadow=4)
    by = {
        (r.provenance["params"]["recipe"]["name"], r.provenance["seed"]): r.provenance["params"]
        for r in results
    }
    print()
    for (name, seed), p in sorted(by.items()):
        lo, sh = p["loss_threshold"], p["shadow"]
        print(
            f"{name:12s} seed {seed}: held-out {p['held_out_accuracy']:.3f}  loss AUC {lo['auc']:.3f} acc {lo['accuracy']:.3f} TPR@1% {lo['tpr_at_1_fpr']:.3f}  shadow AUC {sh['auc']:.3f} acc {sh['accuracy']:.3f} TPR@1% {sh['tpr_at_1_fpr']:.3f}"
        )
    for seed in (0, 1, 2):
        overfit, regular = by[("overfit", seed)], by[("regularised", seed)]
        assert overfit["held_out_accuracy"] >= 0.90 and regular["held_out_accuracy"] >= 0.90
        for attack in ("loss_threshold", "shadow"):
            assert overfit[attack]["auc"] > 0.6, (seed, attack)
            assert overfit[attack]["auc"] > regular[attack]["auc"], (seed, attack)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_white_box_reconstructions_fool_an_independent_judge(seed: int) -> None:
    result = inversion_experiment("digits", seed=seed)
    p = result.provenance["params"]
    print(
        f"\ndigits seed {seed}: judge acc {p['judge_held_out_accuracy']:.3f}; white-box judge {p['white_box']['judge_hits']}/10 {p['white_box']['judge_predictions']}; black-box judge {p['black_box']['judge_hits']}/10, target {p['black_box']['target_hits']}/10, {p['black_box']['queries_per_class']} queries/class"
    )
    assert p["white_box"]["judge_hits"] == 10
    assert p["black_box"]["queries"] > 0 and 0 <= p["black_box"]["judge_hits"] <= 10  # reported


def test_mnist_white_box_reconstructions_fool_an_independent_judge() -> None:
    result = inversion_experiment("mnist", seed=0)
    p = result.provenance["params"]
    print(
        f"\nmnist: judge acc {p['judge_held_out_accuracy']:.3f}; white-box judge {p['white_box']['judge_hits']}/10; black-box judge {p['black_box']['judge_hits']}/10, target {p['black_box']['target_hits']}/10, {p['black_box']['queries_per_class']} queries/class"
    )
    assert p["white_box"]["judge_hits"] >= 8


@pytest.mark.parametrize("dataset", ["digits", "mnist"])
def test_backdoor_is_planted_detected_and_reverse_engineered(dataset: str) -> None:
    result = backdoor_experiment(dataset, seed=0, rate=0.05)
    p = result.provenance["params"]
    ac, ss, nc = p["activation_clustering"], p["spectral_signatures"], p["neural_cleanse"]
    print(
        f"\n{dataset}: trigger {p['trigger']['size']}, poisoned {p['n_poisoned']}/{p['n_train']}; clean acc {p['clean_model_accuracy']:.4f} -> {p['backdoored_accuracy']:.4f}; attack success {p['attack_success']:.4f}"
    )
    print(
        f"AC P {ac['precision']:.3f} R {ac['recall']:.3f} FPR {ac['false_positive_rate']:.3f}; SS P {ss['precision']:.3f} R {ss['recall']:.3f} FPR {ss['false_positive_rate']:.3f}"
    )
    print(
        f"NC names {nc['named_label']}, index {[round(a, 2) for a in nc['anomaly_index']]}, IoU {nc['mask_iou']:.3f}"
    )
    h, w = p["trigger"]["size"]
    assert h * w <= (9 if dataset == "digits" else 16) and max(h, w) <= (
        3 if dataset == "digits" else 4
    )
    assert p["rate"] <= 0.10
    assert p["clean_model_accuracy"] - p["backdoored_accuracy"] <= 0.02
    assert p["attack_success"] >= 0.90
    assert any(d["recall"] >= 0.80 and d["false_positive_rate"] <= 0.10 for d in (ac, ss))
    assert (
        nc["named_label"] == p["trigger"]["target"] and nc["anomaly_index"][nc["named_label"]] > 2
    )
    assert nc["mask_iou"] >= 0.5
