"""Acceptance checks of LRP on EfficientNet-Lite0 (pytest -m acceptance -s prints the numbers).

- Localisation: on the cat photo, the z+ map (alpha=1, beta=0, z^B first layer) puts most of
  its strongest positive relevance on the cat's eyes and nose (three hand-drawn boxes,
  17.5 % of the picture); the same method on a copy of the model with randomised weights
  does not, so the check measures the model, not the photo's edges.
- Conservation: on the real architecture and weights with the biases removed (BatchNorm
  mean and shift, classifier bias set to 0), LRP-0 gives back the score to float32
  precision through 49 folded conv+BatchNorm pairs, 33 ReLU6 layers and 9 residual sums;
  with the real biases the sums are reported (the biases absorb most of the relevance).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import convlens
from convlens.attribution.lrp import lrp

pytestmark = pytest.mark.acceptance

#: (x0, y0, x1, y1) of the left eye, right eye and nose in the 224 x 224 crop of sample:cat
FEATURE_BOXES = [(45, 50, 100, 105), (160, 75, 215, 125), (110, 155, 165, 210)]


def _feature_mask() -> torch.Tensor:
    mask = torch.zeros(224, 224, dtype=torch.bool)
    for x0, y0, x1, y1 in FEATURE_BOXES:
        mask[y0:y1, x0:x1] = True
    return mask


def _top_share(relevance: torch.Tensor, mask: torch.Tensor, quantile: float = 0.95) -> float:
    """Share of the top 5 % positive-relevance pixels that fall inside ``mask``."""
    positive = relevance[0].sum(dim=0).clamp(min=0)
    top = positive >= positive.flatten().quantile(quantile)
    return float((top & mask).sum() / top.sum())


def _like(model: convlens.Model, module: nn.Module) -> convlens.Model:
    prep = model.preprocessing
    return convlens.wrap(module, input_size=224, mean=prep.mean, std=prep.std, resize=None)


@pytest.fixture(scope="module")
def cat(lite0: convlens.Model) -> tuple[torch.Tensor, int, float]:
    x = lite0.prepare(["sample:cat"]).x
    logits = lite0.logits(x)
    c = int(logits.argmax())
    return x, c, float(logits[0, c])


def test_positive_relevance_sits_on_the_cat_features(
    lite0: convlens.Model, cat: tuple[torch.Tensor, int, float]
) -> None:
    x, c, _ = cat
    mask = _feature_mask()
    area = float(mask.float().mean())
    shares = {
        name: _top_share(lrp(lite0, x, c, **options), mask)
        for name, options in [
            ("epsilon", {}),
            ("epsilon 0.25", {"epsilon": 0.25}),
            ("z+", {"rule": "zplus"}),
            ("alpha2 beta1", {"rule": "alpha_beta", "alpha": 2.0, "beta": 1.0}),
        ]
    }
    randomised = copy.deepcopy(lite0.module)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in randomised.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * p.std())
    random_share = _top_share(lrp(_like(lite0, randomised), x, c, rule="zplus"), mask)
    print(
        f"\nshare of the top-5% positive relevance on eyes+nose (area {area:.3f}): "
        + ", ".join(f"{k} {v:.3f}" for k, v in shares.items())
        + f"; z+ on randomised weights {random_share:.3f}"
    )
    assert shares["z+"] >= 0.6, shares
    assert random_share < 0.35, random_share
    assert shares["alpha2 beta1"] > 2 * area, shares


def test_conservation_on_the_real_architecture(
    lite0: convlens.Model, cat: tuple[torch.Tensor, int, float]
) -> None:
    x, c, score = cat
    real = {
        name: float(lrp(lite0, x, c, **options).sum())
        for name, options in [
            ("epsilon zB", {}),
            ("epsilon same", {"first_layer": "same"}),
            ("z+ zB", {"rule": "zplus"}),
        ]
    }
    print(
        f"\nreal weights, class {c} score {score:.4f}: sum of relevance "
        + ", ".join(f"{k} {v:.4f}" for k, v in real.items())
    )
    assert all(abs(v) < abs(score) for v in real.values())  # the biases absorb relevance

    bias_free = copy.deepcopy(lite0.module)
    with torch.no_grad():
        for m in bias_free.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.bias.zero_()
        bias_free.classifier.bias.zero_()
    model = _like(lite0, bias_free)
    logits = model.logits(x)
    k = int(logits.argmax())
    f = float(logits[0, k])
    sums = {
        name: float(lrp(model, x, k, **options).sum())
        for name, options in [
            ("epsilon=0 same", {"epsilon": 0.0, "first_layer": "same"}),
            ("epsilon=0 zB", {"epsilon": 0.0}),
            ("z+ zB", {"rule": "zplus"}),
        ]
    }
    print(
        f"bias-free copy, class {k} score {f:.6f}: sum of relevance "
        + ", ".join(f"{k_} {v:.6f}" for k_, v in sums.items())
    )
    assert abs(sums["epsilon=0 same"] - f) <= 1e-4 * abs(f)
    assert abs(sums["epsilon=0 zB"] - f) <= 1e-4 * abs(f)
    assert abs(sums["z+ zB"] - f) <= 1e-2 * abs(f)  # units without positive contributions drop out
