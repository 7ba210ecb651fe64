"""Acceptance of issue 17 part 3: defences, evaluated honestly, on the 359 held-out 8x8 digits.

- PGD adversarial training (Madry et al. 2018): ``digits_cnn_pgd`` keeps far more accuracy
  under white-box L-inf PGD (eps 0.2, 20 steps) than the plain ``digits_cnn``.
- Input transforms (JPEG, bit depth, noise): each looks strong (or at least stronger) against
  PGD that uses the defended system's own gradients, and the adaptive attack (BPDA, plus EOT
  for noise; Athalye et al. 2018) takes most of that apparent gain away. One honest
  exception, asserted as such: 1-bit squeezing of the digits keeps about half of its gain
  under BPDA, because only ~17 % of the digits' pixels lie within 0.2 of the 0.5 threshold
  (the docs page says so, and that BPDA is an upper bound there).

Margins were set from measured values (torch 2.13, one thread, seed 0), noted beside each.
"""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.adversarial.defence_eval import evaluate_defences
from convlens.adversarial.defences import make_defence
from convlens.models.small import load_dataset

pytestmark = pytest.mark.acceptance


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


def test_defences_on_digits_under_adaptive_attacks() -> None:
    model = convlens.load_model("digits_cnn")
    robust = convlens.load_model("digits_cnn_pgd")
    x, y = load_dataset("digits", "test")
    defences = [
        make_defence("jpeg", quality=75),
        make_defence("bits", bits=1),
        make_defence("bits", bits=2),
        make_defence("noise", sigma=0.2),
    ]
    result = evaluate_defences(
        model, x, y, defences, robust_model=robust, eps=0.2, steps=20, eot_samples=8, seed=0
    )
    params = result.provenance["params"]
    names = params["defences"]
    assert names == ["none", "jpeg75", "bits1", "bits2", "noise0.2", "pgd-trained"]
    acc = {
        name: dict(zip(("clean", "transfer", "non_adaptive", "adaptive"), (float(v) for v in row)))
        for name, row in zip(names, result["accuracy"])
    }
    lost = dict(zip(names, params["gain_lost"]))
    print()
    for name in names:
        print(
            f"{name:12s}", {k: round(v, 3) for k, v in acc[name].items()}, "gain lost", lost[name]
        )

    none = acc["none"]["adaptive"]
    assert acc["none"]["clean"] >= 0.97 and none <= 0.08  # measured 0.983, 0.019

    # adversarial training: a real gain, which the (white-box) adaptive attack does not remove
    trained = acc["pgd-trained"]
    assert trained["clean"] >= 0.93  # 0.967
    assert trained["adaptive"] >= 0.5 and trained["adaptive"] - none >= 0.45  # 0.630 vs 0.019
    assert lost["pgd-trained"] == 0

    # JPEG: no gradient, so PGD on the defended system goes nowhere; BPDA removes the gain
    assert acc["jpeg75"]["clean"] >= 0.97 and acc["jpeg75"]["non_adaptive"] >= 0.9  # 0.983, 0.986
    assert acc["jpeg75"]["adaptive"] <= none + 0.05 and lost["jpeg75"] >= 0.9  # 0.025, 0.994
    # 2-bit squeezing: zero gradient, same story
    assert acc["bits2"]["non_adaptive"] >= 0.9  # 0.975
    assert acc["bits2"]["adaptive"] <= none + 0.05 and lost["bits2"] >= 0.9  # 0.000, 1.02
    # 1-bit squeezing: the apparent gain halves, part of it is real (see the module docstring)
    assert acc["bits1"]["non_adaptive"] >= 0.85  # 0.925
    assert (
        0.3 <= lost["bits1"] <= 0.7
        and acc["bits1"]["adaptive"] < acc["bits1"]["non_adaptive"] - 0.3
    )  # 0.47; 0.499
    # noise: its gradient is not hidden, so the apparent gain is small; EOT still lowers it
    assert (
        acc["noise0.2"]["adaptive"] < acc["noise0.2"]["non_adaptive"] - 0.02
        and acc["noise0.2"]["adaptive"] <= 0.2
    )  # 0.125 < 0.167
    # every input transform ends far below adversarial training under the adaptive attack
    for name in ("jpeg75", "bits1", "bits2", "noise0.2"):
        assert acc[name]["adaptive"] <= trained["adaptive"] - 0.1, name
    # the transfer column: PGD crafted on the plain model barely transfers to the trained one
    assert trained["transfer"] >= trained["adaptive"]
    assert torch.equal(result["labels"], y)
