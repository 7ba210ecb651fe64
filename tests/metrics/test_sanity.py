"""Model-parameter randomisation (Adebayo et al. 2018): cascade order, contrast, no mutation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import convlens
from convlens.attribution import explain
from convlens.errors import BadInputError, LayerNotFoundError
from convlens.metrics import (
    method_maps,
    parameter_randomisation,
    randomisation_groups,
    sobel_edge_map,
    spearman_rows,
)
from convlens.metrics.sanity import randomise_

from helpers.tiny import assert_unchanged, snapshot, tiny_model


def _x(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def edge_method(model: convlens.Model, x: torch.Tensor, target: object = None) -> torch.Tensor:
    """A 'method' that ignores the model: the Sobel edges of the image, (N, 1, H, W)."""
    return sobel_edge_map(model.denormalize(x))[:, None]


def test_default_groups_run_top_down_with_norms_joining_their_layer() -> None:
    assert randomisation_groups(tiny_model("conv")) == [
        ("fc", ["fc"]),
        ("conv2+bn2", ["conv2", "bn2"]),
        ("conv1", ["conv1"]),
    ]
    assert [label for label, _ in randomisation_groups(tiny_model("residual"))] == [
        "head",
        "block_conv2+block_bn2",
        "block_conv1+block_bn1",
        "stem",
    ]


def test_gradient_maps_decorrelate_while_a_model_free_map_does_not() -> None:
    model, x = tiny_model("conv", seed=0), _x()
    saliency = parameter_randomisation(model, x, "saliency", seed=0)
    edges = parameter_randomisation(model, x, edge_method, seed=0)
    assert saliency["layers"] == edges["layers"] == ["fc", "conv2+bn2", "conv1"]
    assert saliency["spearman"].shape == (3, 6)
    assert saliency["spearman_mean"][-1] < 0.3, saliency["spearman_mean"]
    assert min(edges["spearman_mean"]) > 0.999, edges["spearman_mean"]
    torch.testing.assert_close(edges["final"], edges["original"])
    assert not torch.allclose(saliency["final"], saliency["original"])


def test_the_users_model_is_unchanged() -> None:
    model = tiny_model("residual", seed=1)
    model.module.train()
    before = snapshot(model.module)
    parameter_randomisation(model, _x(3), "gradient_x_input", seed=0)
    assert_unchanged(model.module, before)


def test_the_cascade_is_cumulative_and_top_down() -> None:
    model = tiny_model("conv", seed=2)
    originals = {name: p.detach().clone() for name, p in model.module.named_parameters()}
    seen: list[dict[str, bool]] = []

    def recorder(m: convlens.Model, x: torch.Tensor, target: object = None) -> torch.Tensor:
        seen.append(
            {name: not torch.equal(p, originals[name]) for name, p in m.module.named_parameters()}
        )
        return x[:, :1] + 0 * m.module.fc.bias.sum()

    parameter_randomisation(model, _x(2), recorder, seed=0)
    changed = [sorted({n.split(".")[0] for n, c in step.items() if c}) for step in seen]
    assert changed == [[], ["fc"], ["bn2", "conv2", "fc"], ["bn2", "conv1", "conv2", "fc"]]


def test_the_target_stays_the_trained_models_prediction() -> None:
    model, x = tiny_model("conv", seed=3), _x(4)
    predicted = model.logits(x).argmax(1)
    targets: list[torch.Tensor] = []

    def recorder(m: convlens.Model, xx: torch.Tensor, target: object = None) -> torch.Tensor:
        targets.append(target.classes.clone())  # type: ignore[attr-defined]
        return xx[:, :1]

    parameter_randomisation(model, x, recorder)
    assert len(targets) == 4 and all(torch.equal(t, predicted) for t in targets)


def test_seeded_and_options_reach_the_method() -> None:
    model, x = tiny_model("conv", seed=4), _x(3)
    a = parameter_randomisation(model, x, "saliency", seed=5, ssim=True, return_maps=True)
    b = parameter_randomisation(model, x, "saliency", seed=5)
    c = parameter_randomisation(model, x, "saliency", seed=6)
    assert torch.equal(a["spearman"], b["spearman"]) and not torch.equal(
        a["spearman"], c["spearman"]
    )
    assert a["maps"].shape == (3, 3, 16, 16) and torch.equal(a["maps"][-1], a["final"])
    assert a["ssim"].shape == (3, 3) and float(a["ssim"].max()) <= 1.0
    steps: list[tuple[int, int]] = []
    parameter_randomisation(
        model,
        x,
        "saliency",
        layers=["fc", ["conv2", "bn2"]],
        progress=lambda d, t: steps.append((d, t)),
    )
    assert steps == [(1, 3), (2, 3), (3, 3)]


def _conv(weight: torch.Tensor) -> torch.nn.Conv2d:
    layer = torch.nn.Conv2d(16, 32, 3)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.zero_()
    return layer


def test_randomise_keeps_each_tensors_scale_and_is_seeded() -> None:
    original = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(9)) * 2.0 + 0.3
    layer, twin, other = _conv(original), _conv(original), _conv(original)
    randomise_(layer, torch.Generator().manual_seed(0))
    randomise_(twin, torch.Generator().manual_seed(0))
    randomise_(other, torch.Generator().manual_seed(1))
    w = layer.weight.detach()
    assert (
        abs(float(w.mean()) - float(original.mean())) < 0.05
        and abs(float(w.std()) - float(original.std())) < 0.05
    )
    assert (
        abs(float(torch.corrcoef(torch.stack([w.flatten(), original.flatten()]))[0, 1])) < 0.05
    )  # structure gone
    assert torch.equal(layer.weight, twin.weight) and not torch.equal(layer.weight, other.weight)
    assert torch.equal(layer.bias, torch.zeros(32))  # no spread: left as it is


def test_spearman_rows_match_scipy_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 30), generator=g).float()  # many ties
    b = a + torch.randint(0, 3, (4, 30), generator=g).float()
    ours = spearman_rows(a, b).numpy()
    ref = np.array([spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(4)])
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    np.testing.assert_allclose(spearman_rows(a, -a).numpy(), -1.0, atol=1e-6)
    assert spearman_rows(a[:1], torch.zeros(1, 30)).item() == 0.0  # a constant map has no order


@pytest.mark.parametrize("method", ["saliency", "gradient_x_input", "gradcam"])
def test_method_maps_equal_explains_map_in_any_chunking(method: str) -> None:
    import convlens.attribution as attribution

    if method not in attribution.METHODS:
        pytest.fail(f"{method} is not registered")
    model, x = tiny_model("conv", seed=5), _x(5)
    layer = "relu2" if attribution.METHODS[method].uses_layer else None
    reference = explain(model, model.denormalize(x), method, layer=layer).tensors["map"]
    torch.testing.assert_close(method_maps(model, x, method, layer=layer), reference)
    torch.testing.assert_close(method_maps(model, x, method, layer=layer, batch_size=2), reference)


def test_bad_inputs() -> None:
    model = tiny_model("conv")
    with pytest.raises(BadInputError, match="unknown method 'nope'"):
        parameter_randomisation(model, _x(1), "nope")
    with pytest.raises(LayerNotFoundError, match="conv3"):
        parameter_randomisation(model, _x(1), "saliency", layers=["conv3"])
    with pytest.raises(BadInputError, match="empty group"):
        parameter_randomisation(model, _x(1), "saliency", layers=[[]])
    with pytest.raises(BadInputError, match="takes no layer"):
        method_maps(model, _x(1), "saliency", layer="relu2")
