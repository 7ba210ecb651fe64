"""Perturbation and Shapley explanations on the built-in EfficientNet-Lite0 (pytest -m acceptance).

- DeepLIFT's rescale rule on Lite0's ReLU6 activations sums to ``F(x) - F(x')`` (every
  nonlinearity of Lite0 is an elementwise module), where gradient x (x - x') does not.
- KernelSHAP on four superpixels of the cat photo, with every coalition, equals the Shapley
  values computed by the subset formula on the real model.
- ``convlens explain sample:cat --method superpixel_ablation`` runs from the command line.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from convlens.attribution.deeplift import deeplift_with_delta
from convlens.attribution.perturbation import kernel_shap
from convlens.cli.main import main
from convlens.hooks import inference_context

pytestmark = pytest.mark.acceptance


def test_deeplift_sums_to_the_score_change_on_lite0(lite0) -> None:  # type: ignore[no-untyped-def]
    x = lite0.prepare(["sample:cat"]).x
    attribution, delta = deeplift_with_delta(lite0, x, None)
    assert torch.all(delta.abs() > 1)
    torch.testing.assert_close(attribution.flatten(1).sum(dim=1), delta, rtol=1e-3, atol=1e-3)
    # the rescale rule is what makes it add up: gradient x (x - x') misses by far
    base = lite0.normalize(torch.zeros_like(x))
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad(), inference_context(lite0.module):
        scores = lite0.module(xr).gather(1, lite0.logits(x).argmax(dim=1, keepdim=True))
        (grad,) = torch.autograd.grad(scores.sum(), xr)
    plain = (grad * (x - base)).flatten(1).sum(dim=1)
    assert torch.all((plain - delta).abs() > 0.1 * delta.abs())


def test_exact_kernel_shap_is_the_shapley_value_on_lite0(lite0) -> None:  # type: ignore[no-untyped-def]
    x = lite0.prepare(["sample:cat"]).x
    cls = int(lite0.logits(x).argmax())
    h, w = x.shape[-2:]
    labels = (torch.arange(h)[:, None] * 2 // h) * 2 + torch.arange(w)[
        None, :
    ] * 2 // w  # 2 x 2 blocks
    got = kernel_shap(
        lite0,
        x,
        cls,
        segments=labels,
        fill="zero",
        n_samples=14,
        generator=torch.Generator().manual_seed(0),
    )
    black = lite0.normalize(torch.zeros_like(x))
    subsets = [s for k in range(5) for s in itertools.combinations(range(4), k)]
    images = torch.cat(
        [
            torch.where(torch.isin(labels, torch.tensor(s, dtype=torch.long)), x, black)
            for s in subsets
        ]
    )
    with torch.no_grad(), inference_context(lite0.module):
        value = dict(zip(subsets, lite0.module(images)[:, cls].double().tolist()))
    for i in range(4):
        others = [j for j in range(4) if j != i]
        phi = sum(
            math.factorial(k)
            * math.factorial(3 - k)
            / math.factorial(4)
            * (value[tuple(sorted((*s, i)))] - value[s])
            for k in range(4)
            for s in itertools.combinations(others, k)
        )
        assert float(got[0, 0][labels == i][0]) == pytest.approx(phi, abs=1e-3 * max(1.0, abs(phi)))


def test_the_cli_explains_with_superpixels(tmp_path: Path) -> None:
    out = tmp_path / "ablation.png"
    assert (
        main(
            [
                "explain",
                "sample:cat",
                "--method",
                "superpixel_ablation",
                "--opt",
                "n_segments=16",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert out.stat().st_size > 1000
