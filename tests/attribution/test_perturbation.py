"""Superpixel ablation, LIME and KernelSHAP against hand references and Captum."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import convlens
from convlens.attribution import explain
from convlens.attribution.perturbation import (
    kernel_shap,
    lime,
    lime_coalitions,
    shapley_coalitions,
    superpixel_ablation,
    superpixels,
)
from convlens.errors import BadInputError


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 4),
    ).eval()  # fmt: skip


def _model(module: nn.Module | None = None) -> convlens.Model:
    return convlens.wrap(
        module or _net(),
        input_size=16,
        mean=0.5,
        std=0.25,
        resize=None,
        labels=list("abcd"),
        name="tiny",
    )


def _x(n: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _blocks(rows: int, cols: int) -> torch.Tensor:
    """(16, 16) labels of a rows x cols grid of rectangles."""
    r = torch.arange(16) * rows // 16
    c = torch.arange(16) * cols // 16
    return r[:, None] * cols + c[None, :]


def _score(module: nn.Module, images: torch.Tensor, cls: int) -> torch.Tensor:
    with torch.no_grad():
        return module(images)[:, cls].double()


def _coalition_image(
    x: torch.Tensor, fill: torch.Tensor, labels: torch.Tensor, keep: list[int]
) -> torch.Tensor:
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for m in keep:
        mask |= labels == m
    return torch.where(mask, x, fill)


# -- superpixel ablation ------------------------------------------------------------------


def test_ablation_is_the_drop_when_each_superpixel_is_hidden() -> None:
    model, x, labels = _model(), _x(), _blocks(2, 3)
    got = superpixel_ablation(model, x, 1, segments=labels, fill="zero", batch_size=4)
    black = model.normalize(torch.zeros_like(x))
    full = _score(model.module, x, 1)
    for m in range(6):
        hidden = _score(
            model.module, _coalition_image(x, black, labels, [k for k in range(6) if k != m]), 1
        )
        assert torch.allclose(
            got[0][:, labels == m],
            (full - hidden).float().expand(3, int((labels == m).sum())),
            atol=1e-5,
        )


@pytest.mark.captum
def test_ablation_equals_captum_feature_ablation() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    model, x, labels = _model(), _x(2), _blocks(3, 3)
    got = superpixel_ablation(model, x, 2, segments=labels, fill="mean", batch_size=5)
    fill = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    ref = captum_attr.FeatureAblation(model.module).attribute(
        x, baselines=fill, target=2, feature_mask=labels.expand(2, 1, 16, 16)
    )
    assert torch.allclose(got, ref, atol=1e-5)


# -- KernelSHAP ------------------------------------------------------------------------------


def _brute_shapley(
    module: nn.Module, x: torch.Tensor, fill: torch.Tensor, labels: torch.Tensor, cls: int
) -> torch.Tensor:
    """Shapley values by the permutation-free subset formula over every coalition."""
    m = int(labels.max()) + 1
    value = {}
    for k in range(m + 1):
        for s in itertools.combinations(range(m), k):
            value[s] = float(_score(module, _coalition_image(x, fill, labels, list(s)), cls))
    phi = torch.zeros(m, dtype=torch.float64)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for k in range(m):
            for s in itertools.combinations(others, k):
                weight = math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m)
                phi[i] += weight * (value[tuple(sorted((*s, i)))] - value[s])
    return phi


def test_kernel_shap_with_every_coalition_is_the_exact_shapley_value() -> None:
    model, x, labels = _model(), _x(), _blocks(2, 2)
    got = kernel_shap(
        model,
        x,
        3,
        segments=labels,
        fill="zero",
        n_samples=14,
        generator=torch.Generator().manual_seed(0),
    )
    phi = _brute_shapley(model.module, x, model.normalize(torch.zeros_like(x)), labels, 3)
    for m in range(4):
        assert torch.allclose(got[0, 0][labels == m], phi[m].float(), atol=1e-5)


def test_kernel_shap_sums_to_the_score_change_when_sampled() -> None:
    model, x = _model(), _x()
    labels = _blocks(3, 4)
    got = kernel_shap(
        model,
        x,
        0,
        segments=labels,
        fill="zero",
        n_samples=30,
        generator=torch.Generator().manual_seed(3),
    )
    per_segment = torch.stack([got[0, 0][labels == m][0] for m in range(12)])
    black = model.normalize(torch.zeros_like(x))
    change = _score(model.module, x, 0) - _score(model.module, black, 0)
    assert float(per_segment.sum()) == pytest.approx(float(change), abs=1e-4)


def test_shapley_sampling_follows_the_kernel() -> None:
    m = 20  # 2^20 - 2 coalitions do not fit in the samples: they are drawn
    z, w = shapley_coalitions(m, 20000, torch.Generator().manual_seed(0))
    assert torch.all(w == 1) and z.shape == (20000, m)
    sizes = z.sum(dim=1).long()
    expected = torch.tensor([(m - 1) / (k * (m - k)) for k in range(1, m)])
    expected = expected / expected.sum()
    observed = torch.bincount(sizes, minlength=m)[1:].double() / 20000
    assert torch.allclose(observed, expected.double(), atol=0.01)
    # given its size, every superpixel is equally likely to be kept
    assert torch.allclose(z.mean(dim=0), torch.full((m,), 0.5, dtype=torch.float64), atol=0.015)


@pytest.mark.captum
def test_kernel_shap_equals_captum_on_the_same_coalitions(monkeypatch: pytest.MonkeyPatch) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    model, x, labels = _model(), _x(), _blocks(3, 3)
    n = 40
    got = kernel_shap(
        model,
        x,
        1,
        segments=labels,
        fill="zero",
        n_samples=n,
        generator=torch.Generator().manual_seed(5),
    )
    # the same draws: _image_seed takes one number from the generator, then each image
    # samples with a generator seeded by it
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(5)).item())
    z, _ = shapley_coalitions(9, n, torch.Generator().manual_seed(seed))

    def same_draws(self, original_inp, **kwargs):  # type: ignore[no-untyped-def]
        yield torch.ones(1, 9, dtype=torch.long)
        yield torch.zeros(1, 9, dtype=torch.long)
        yield from (row[None].long() for row in z)

    monkeypatch.setattr(captum_attr.KernelShap, "kernel_shap_perturb_generator", same_draws)
    black = model.normalize(torch.zeros_like(x))
    ref = captum_attr.KernelShap(model.module).attribute(
        x, baselines=black, target=1, feature_mask=labels[None, None], n_samples=n + 2
    )
    assert torch.allclose(got, ref, atol=2e-3 * float(ref.abs().max()))


# -- LIME ------------------------------------------------------------------------------------


@pytest.mark.captum
def test_lime_equals_captum_on_the_same_coalitions() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    from captum._utils.models.linear_model import SkLearnRidge

    model, x, labels = _model(), _x(), _blocks(2, 4)
    n, width = 60, 0.25
    got = lime(
        model,
        x,
        0,
        segments=labels,
        fill="mean",
        n_samples=n,
        kernel_width=width,
        alpha=1.0,
        batch_size=7,
        generator=torch.Generator().manual_seed(2),
    )
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(2)).item())
    draws = iter(lime_coalitions(8, n, torch.Generator().manual_seed(seed)))

    def perturb(original_inp, **kwargs):  # type: ignore[no-untyped-def]
        return next(draws)[None].long()

    def similarity(original_inp, perturbed_inp, sample, **kwargs):  # type: ignore[no-untyped-def]
        # LIME's image kernel: cosine distance to the all-kept coalition
        d = 1 - torch.nn.functional.cosine_similarity(
            sample.double(), torch.ones_like(sample, dtype=torch.float64), eps=1e-12
        )
        return torch.exp(-(d**2) / width**2)

    explainer = captum_attr.Lime(
        model.module,
        interpretable_model=SkLearnRidge(alpha=1.0),
        similarity_func=similarity,
        perturb_func=perturb,
    )
    fill = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    ref = explainer.attribute(
        x, baselines=fill, target=0, feature_mask=labels[None, None], n_samples=n
    )
    assert torch.allclose(got, ref.float(), atol=1e-4 * max(1.0, float(ref.abs().max())))


def test_lime_recovers_an_additive_model() -> None:
    """A score that is a sum of per-superpixel terms is its own linear surrogate: with a
    negligible ridge penalty LIME returns each superpixel's term exactly."""
    labels = _blocks(2, 3)
    effect = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, -1.0])

    class Additive(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # per superpixel: its mean over pixels and channels minus the fill's (0 here)
            per = torch.stack([x[:, :, labels == m].mean(dim=(1, 2)) for m in range(6)], dim=1)
            return torch.stack([per @ effect, -(per @ effect)], dim=1)

    model = convlens.wrap(
        Additive(),
        input_size=16,
        mean=0.0,
        std=1.0,
        resize=None,
        labels=["p", "n"],
        name="additive",
    )
    x = torch.rand(1, 3, 16, 16) + 0.5
    got = lime(
        model,
        x,
        0,
        segments=labels,
        fill="zero",
        n_samples=80,
        alpha=1e-9,
        generator=torch.Generator().manual_seed(0),
    )
    means = torch.stack([x[0][:, labels == m].mean() for m in range(6)])
    for m in range(6):
        assert torch.allclose(
            got[0, 0][labels == m],
            (effect[m] * means[m]).expand(int((labels == m).sum())),
            atol=1e-4,
        )


# -- shared behaviour ------------------------------------------------------------------------


def test_superpixels_follow_image_regions() -> None:
    """Four flat quadrants of different colours give SLIC segments that never cross a quadrant edge."""
    x = torch.zeros(1, 3, 32, 32)
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    for q, (r, c) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)]):
        x[0, :, r : r + 16, c : c + 16] = colours[q][:, None, None]
    model = convlens.wrap(
        _net(), input_size=32, mean=0.0, std=1.0, resize=None, labels=list("abcd"), name="quad"
    )
    labels = superpixels(model, x, n_segments=4)[0]
    quadrant = (torch.arange(32)[:, None] // 16) * 2 + torch.arange(32)[None, :] // 16
    for m in labels.unique():
        assert quadrant[labels == m].unique().numel() == 1


def test_explain_runs_them_seeded_and_reports_progress() -> None:
    model, x = _model(), _x()
    calls: list[tuple[int, int]] = []
    a = explain(
        model,
        x,
        "lime",
        1,
        seed=4,
        segments=_blocks(2, 2),
        n_samples=10,
        batch_size=4,
        progress=lambda d, t: calls.append((d, t)),
    )
    b = explain(model, x, "lime", 1, seed=4, segments=_blocks(2, 2), n_samples=10, batch_size=4)
    assert torch.equal(a.tensors["attribution"], b.tensors["attribution"])
    assert calls == [(4, 10), (8, 10), (10, 10)]
    assert "progress" not in a.provenance["params"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fill": "purple"}, "fill="),
        ({"n_samples": 0}, "n_samples="),
        ({"segments": torch.zeros(5, 5, dtype=torch.long)}, "segments"),
        ({"n_segments": 0}, "n_segments="),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        kernel_shap(_model(), _x(), 0, generator=torch.Generator().manual_seed(0), **options)
