"""Gram matrices, style/content losses, style transfer and texture synthesis on a tiny loss net.

References: explicit einsums and loops for the statistics, finite differences for the
losses' gradients, YIQ algebra for colour preservation, planted copies for the patch
correlation. Models: the tiny ``loss_model`` of conftest.py (float32) and a float64 copy.
"""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.errors import BadInputError
from convlens.optimize import evaluate_objective, optimize
from convlens.optimize.objectives import class_score, layer_mean
from convlens.optimize.param import PixelParam
from convlens.style.gram import gram_matrix, mean_variance, transform_features
from convlens.style.losses import (
    content_loss,
    default_layers,
    layer_codes,
    layer_statistics,
    style_loss,
    style_targets,
)
from convlens.style.measure import (
    content_correlation,
    gram_distance,
    max_patch_correlation,
    measure_layers,
)
from convlens.style.transfer import (
    load_style_image,
    preserve_colors,
    style_transfer,
    synthesize_texture,
)

LAYERS = ["act1", "act2", "act3"]


def _images(n: int, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, size, size, generator=g) for _ in range(n)]


def test_gram_matrix_equals_an_explicit_sum_over_positions() -> None:
    f = torch.randn(2, 4, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = torch.zeros(2, 4, 4, dtype=torch.float64)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                expected[b, i, j] = sum(
                    f[b, i, y, x] * f[b, j, y, x] for y in range(5) for x in range(3)
                ) / (4 * 5 * 3)
    torch.testing.assert_close(gram_matrix(f), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        gram_matrix(f), torch.einsum("bchw,bdhw->bcd", f, f) / 60, rtol=1e-12, atol=1e-12
    )


def test_mean_variance_are_per_channel_statistics_over_positions() -> None:
    f = torch.randn(3, 5, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mean, var = mean_variance(f)
    flat = f.reshape(3, 5, 16).numpy()
    torch.testing.assert_close(mean, torch.from_numpy(flat.mean(axis=2)))
    torch.testing.assert_close(var, torch.from_numpy(flat.var(axis=2)))


def test_feature_transforms_do_what_they_say() -> None:
    f = (
        torch.randn(1, 6, 4, 4, generator=torch.Generator().manual_seed(3))
        * torch.arange(1.0, 7.0)[None, :, None, None]
    )
    normed = transform_features(f, "channel_norm")
    torch.testing.assert_close(normed.pow(2).mean(dim=(2, 3)), torch.ones(1, 6))
    soft = transform_features(f, "softmax")
    torch.testing.assert_close(
        soft.sum(dim=1), torch.full((1, 4, 4), 6.0)
    )  # C times a distribution
    assert (soft > 0).all()
    with pytest.raises(BadInputError, match="choose one of"):
        transform_features(f, "sigmoid")


def test_losses_are_zero_at_their_targets_and_positive_elsewhere(
    loss_model: convlens.Model,
) -> None:
    content, style, other = _images(3)
    targets = style_targets(loss_model, [style], LAYERS)
    s_loss = style_loss(targets)
    c_loss = content_loss(layer_codes(loss_model, content, ["act2"]))
    assert float(evaluate_objective(loss_model, s_loss, style, truncate=True)[0]) < 1e-10
    assert float(evaluate_objective(loss_model, c_loss, content, truncate=True)[0]) < 1e-10
    assert float(evaluate_objective(loss_model, s_loss, other, truncate=True)[0]) > 1e-4
    assert float(evaluate_objective(loss_model, c_loss, other, truncate=True)[0]) > 1e-4


def test_style_loss_is_the_relative_gram_distance_summed_over_layers(
    loss_model: convlens.Model,
) -> None:
    style, x = _images(2, seed=4)
    weights = {"act1": 0.5, "act2": 2.0}
    value = float(
        evaluate_objective(
            loss_model, style_loss(style_targets(loss_model, [style], list(weights)), weights), x
        )[0]
    )
    codes_s, codes_x = (
        layer_codes(loss_model, style, list(weights)),
        layer_codes(loss_model, x, list(weights)),
    )
    expected = 0.0
    for layer, w in weights.items():
        f_s, f_x = codes_s[layer][0].flatten(1), codes_x[layer][0].flatten(1)
        n = f_s.shape[0] * f_s.shape[1]
        g_s, g_x = f_s @ f_s.T / n, f_x @ f_x.T / n
        expected += w * float(((g_x - g_s) ** 2).sum() / (g_s**2).sum())
    assert value == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("statistic", ["gram", "mean_variance"])
def test_loss_gradients_match_finite_differences(
    loss_model: convlens.Model, statistic: str
) -> None:
    model = convlens.wrap(_double(loss_model), input_size=8, mean=0.5, std=0.25, resize=None)
    content, style, x = (t.double()[:, :, :8, :8] for t in _images(3, seed=5))
    objective = content_loss(layer_codes(model, content, ["act2"])) + 0.7 * style_loss(
        style_targets(model, [style], LAYERS, statistic=statistic), statistic=statistic
    )
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(evaluate_objective(model, objective, x).sum(), x)
    eps = 1e-6
    flat = x.detach().flatten()
    fd = torch.empty_like(flat)
    for i in range(flat.numel()):
        up, down = flat.clone(), flat.clone()
        up[i] += eps
        down[i] -= eps
        f = lambda z: float(evaluate_objective(model, objective, z.view_as(x)).sum())  # noqa: E731
        fd[i] = (f(up) - f(down)) / (2 * eps)
    torch.testing.assert_close(grad.flatten(), fd, rtol=1e-5, atol=1e-8)


def _double(model: convlens.Model) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model.module).double()


def test_mixing_styles_with_weights_one_zero_equals_the_first_style_alone(
    loss_model: convlens.Model,
) -> None:
    content, s1, s2 = _images(3, seed=6)
    mixed = style_targets(loss_model, [s1, s2], LAYERS, weights=[1.0, 0.0])
    alone = style_targets(loss_model, [s1], LAYERS)
    for layer in LAYERS:
        torch.testing.assert_close(mixed[layer][0], alone[layer][0])
    half = style_targets(loss_model, [s1, s2], LAYERS, weights=[3.0, 3.0])
    two = style_targets(loss_model, [s2], LAYERS)
    torch.testing.assert_close(half["act2"][0], (alone["act2"][0] + two["act2"][0]) / 2)
    options = {"content_layers": ["act2"], "style_layers": LAYERS, "size": None, "steps": 5}
    a = style_transfer(loss_model, content, [s1, s2], style_weights=[1.0, 0.0], **options)
    b = style_transfer(loss_model, content, s1, **options)
    torch.testing.assert_close(a["image"], b["image"])


def test_style_transfer_lowers_the_loss_and_is_seeded(loss_model: convlens.Model) -> None:
    content, style = _images(2, seed=7)
    options = {"content_layers": ["act2"], "style_layers": LAYERS, "size": None, "steps": 40}
    for optimizer in ("adam", "lbfgs"):
        result = style_transfer(loss_model, content, style, optimizer=optimizer, **options)
        history = result["history"]  # the objective, maximised: -(alpha L_c + beta L_s + tv TV)
        assert float(history[-5:].mean()) > float(history[:5].mean())
        assert result["image"].shape == content.shape
        assert float(result["image"].min()) >= 0 and float(result["image"].max()) <= 1
    again = style_transfer(loss_model, content, style, **options)
    torch.testing.assert_close(
        again["image"], style_transfer(loss_model, content, style, **options)["image"]
    )
    assert again.provenance["method"] == "style_transfer"
    assert again.provenance["params"]["style_layers"] == dict.fromkeys(LAYERS, 1.0)


def test_noise_start_moves_toward_the_style_more_than_the_content_start(
    loss_model: convlens.Model,
) -> None:
    content, style = _images(2, seed=8)
    options = {
        "content_layers": ["act2"],
        "style_layers": LAYERS,
        "size": None,
        "steps": 30,
        "alpha": 0.0,
    }
    from_noise = style_transfer(loss_model, content, style, init="noise", **options)
    assert float(from_noise["style_loss"][0]) < float(
        evaluate_objective(
            loss_model, style_loss(style_targets(loss_model, [style], LAYERS)), content
        )[0]
    )


def test_preserve_colors_keeps_result_luminance_and_content_chrominance() -> None:
    g = torch.Generator().manual_seed(9)
    result, content = (
        torch.rand(1, 3, 6, 6, generator=g) * 0.5 + 0.25,
        torch.rand(1, 3, 6, 6, generator=g) * 0.5 + 0.25,
    )
    mixed = preserve_colors(result, content)
    y = torch.tensor([0.299, 0.587, 0.114])
    torch.testing.assert_close(
        torch.einsum("c,bchw->bhw", y, mixed),
        torch.einsum("c,bchw->bhw", y, result),
        rtol=0,
        atol=1e-5,
    )
    i_row = torch.tensor([0.595716, -0.274453, -0.321263])
    torch.testing.assert_close(
        torch.einsum("c,bchw->bhw", i_row, mixed),
        torch.einsum("c,bchw->bhw", i_row, content),
        rtol=0,
        atol=1e-5,
    )


def test_texture_can_be_larger_than_the_sample_and_approaches_its_statistics(
    loss_model: convlens.Model,
) -> None:
    (sample,) = _images(1, size=24, seed=10)
    sample = (
        sample * 0.2 + torch.linspace(0, 0.8, 24)[None, None, None, :]
    )  # a gradient texture, not noise
    result = synthesize_texture(
        loss_model, sample, size=(40, 48), sample_size=None, style_layers=LAYERS, steps=40
    )
    assert result["image"].shape == (1, 3, 40, 48)
    s_loss = style_loss(style_targets(loss_model, [sample], LAYERS))
    start = float(evaluate_objective(loss_model, s_loss, result["start"], truncate=True)[0])
    assert float(result["style_loss"][0]) < 0.5 * start


def test_truncated_forward_gives_the_same_objective_and_refuses_logits(
    loss_model: convlens.Model,
) -> None:
    (x,) = _images(1, seed=11)
    objective = layer_mean("act2") + 0.5 * layer_mean("act1")
    torch.testing.assert_close(
        evaluate_objective(loss_model, objective, x, truncate=True),
        evaluate_objective(loss_model, objective, x),
    )
    with pytest.raises(BadInputError, match="logits"):
        optimize(
            loss_model,
            class_score(0) + layer_mean("act1"),
            PixelParam.from_image(x),
            steps=1,
            truncate=True,
            transforms=[],
        )
    with pytest.raises(BadInputError, match="reads none"):
        optimize(
            loss_model,
            class_score(0),
            PixelParam.from_image(x),
            steps=1,
            truncate=True,
            transforms=[],
        )


def test_layer_statistics_and_default_layers(loss_model: convlens.Model) -> None:
    (x,) = _images(1, seed=12)
    result = layer_statistics(loss_model, x, "act2")
    act = layer_codes(loss_model, x, ["act2"])["act2"]
    torch.testing.assert_close(result["gram"], gram_matrix(act)[0])
    torch.testing.assert_close(result["mean"], act.mean(dim=(2, 3))[0])
    layers = default_layers(loss_model)  # an unknown model: one layer per stride
    assert (
        set(layers.style) <= set(loss_model.layer_names())
        and layers.content[0] in loss_model.layer_names()
    )
    assert measure_layers(loss_model) == LAYERS


def test_measures_on_known_answers(loss_model: convlens.Model) -> None:
    a, b = _images(2, seed=13)
    assert float(gram_distance(loss_model, a, a)[0]) < 1e-6
    assert float(gram_distance(loss_model, b, a)[0]) > 1e-3
    assert float(content_correlation(loss_model, a, a)[0]) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(BadInputError, match="content's size"):
        content_correlation(loss_model, a[:, :, :16], a)


def test_max_patch_correlation_finds_a_copied_patch_and_not_noise() -> None:
    g = torch.Generator().manual_seed(14)
    sample = torch.rand(1, 3, 48, 48, generator=g)
    texture = torch.rand(1, 3, 40, 40, generator=g)
    assert max_patch_correlation(texture, sample, patch=16, stride=8) < 0.5
    texture[:, :, 5:29, 3:27] = (
        sample[:, :, 11:35, 21:45] * 0.5 + 0.2
    )  # a 24 px copy at odd offsets, dimmer
    assert max_patch_correlation(texture, sample, patch=16, stride=8) > 0.999


def test_bad_settings_are_one_line_errors(loss_model: convlens.Model) -> None:
    content, style = _images(2, seed=15)
    options = {"content_layers": ["act2"], "style_layers": LAYERS, "size": None, "steps": 1}
    for bad, match in (
        ({"style_weights": [1.0, 2.0]}, "2 style weights for 1"),
        ({"init": "zeros"}, "init"),
        ({"optimizer": "lbfgs", "jitter": 2}, "jitter needs"),
        ({"beta": -1.0}, "beta"),
        ({"style_scale": 0.0}, "style_scale"),
    ):
        with pytest.raises(BadInputError, match=match):
            style_transfer(loss_model, content, style, **{**options, **bad})
    with pytest.raises(BadInputError, match="statistic"):
        style_targets(loss_model, [style], LAYERS, statistic="moments")


def test_style_and_texture_run_on_a_grayscale_model_with_the_luma_of_rgb_images() -> None:
    model = convlens.wrap(
        LossNetGray(),
        input_size=32,
        mean=0.5,
        std=0.25,
        channels=1,
        resize=None,
        name="gray_loss_net",
    )
    content, style = _images(2, seed=3)
    # BT.601 luma, written out here rather than taken from the library
    luma = 0.299 * content[:, :1] + 0.587 * content[:, 1:2] + 0.114 * content[:, 2:3]
    torch.testing.assert_close(load_style_image(content, model=model), luma)
    result = style_transfer(
        model,
        content,
        style,
        content_layers=["act2"],
        style_layers=["act1", "act2"],
        size=None,
        steps=10,
        preserve_color=True,
    )
    assert result["image"].shape == (1, 1, *content.shape[-2:])
    texture = synthesize_texture(
        model, style, size=(24, 24), sample_size=None, style_layers=["act1", "act2"], steps=5
    )
    assert texture["image"].shape[1] == 1


class LossNetGray(torch.nn.Module):
    """A one-channel loss net, like a digits model."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.act1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.act2 = torch.nn.ReLU()
        self.fc = torch.nn.Linear(8, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act2(self.conv2(self.act1(self.conv1(x)))).mean((2, 3)))
