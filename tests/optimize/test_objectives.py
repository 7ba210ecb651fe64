"""Objectives: gradients against finite differences, values against hand-computed
references, arithmetic and descriptions, and the vectorised diversity term."""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch

import convlens
from convlens.errors import BadInputError, LayerNotFoundError
from convlens.optimize import (
    Objective,
    ObjectiveContext,
    centre_bias,
    channel,
    class_score,
    deepdream,
    direction,
    diversity,
    evaluate_objective,
    feature_distance,
    l2,
    layer_mean,
    neuron,
    optimize,
    total_variation,
)
from convlens.optimize.param import PixelParam

from helpers.tiny import TinyConvNet


def _model(seed: int = 1, dtype: torch.dtype = torch.float64) -> convlens.Model:
    net = TinyConvNet(seed=seed).to(dtype).eval()
    return convlens.wrap(
        net, input_size=16, mean=0.5, std=0.25, resize=None, labels=[f"c{i}" for i in range(5)]
    )


def _pixels(n: int = 2, size: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g, dtype=torch.float64) * 0.8 + 0.1


def _finite_difference(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Central differences of ``f(x).sum()`` (objectives may couple the images of a batch)."""
    grad = torch.zeros_like(x)
    flat, out = x.reshape(-1), grad.view(-1)
    for j in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[j] += eps
        minus[j] -= eps
        out[j] = (f(plus.view_as(x)).sum() - f(minus.view_as(x)).sum()) / (2 * eps)
    return grad


def _acts(net: TinyConvNet, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tiny net's layers computed by hand (no hooks): the reference for values."""
    x = (pixels - 0.5) / 0.25
    conv1 = net.conv1(x)
    relu1 = torch.relu(conv1)
    conv2 = net.conv2(relu1)
    relu2 = torch.clamp(net.bn2(conv2), 0, 6)
    logits = net.fc(relu2.mean(dim=(2, 3)))
    return {"conv1": conv1, "relu1": relu1, "conv2": conv2, "relu2": relu2, "logits": logits}


_CODE = torch.randn(8, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64).abs()
_DIRECTION = torch.randn(8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

OBJECTIVES = {
    "class_score": class_score(3),
    "class_score_per_image": class_score([1, 4]),
    "channel": channel("relu1", 2),
    "channel_per_image": channel("conv2", [1, 5]),
    "neuron_centre": neuron("relu2", 5),
    "neuron_unit": neuron("conv1", 2, 1, 4),
    "layer_mean": layer_mean("relu1"),
    "direction": direction("relu2", _DIRECTION),
    "feature_distance": feature_distance("conv2", _CODE),
    "deepdream": deepdream("conv1"),
    "diversity": diversity("relu1"),
    "centre_bias": centre_bias("conv1", 3, sigma=0.3),
    "l2": l2(),
    "total_variation": total_variation(),
    "total_variation_p2": total_variation(p=2),
    "combination": class_score(2) - 0.5 * l2() + 2.0 * channel("relu1", 1) - total_variation() / 4,
}


#: images where the objective's unit is alive: relu2's centre unit of channel 5 is clamped to 0
#: (a zero gradient, proving nothing) for about half of the random images
_SEEDS = {"neuron_centre": 1}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_gradient_matches_central_finite_differences(name: str) -> None:
    model = _model()
    objective = OBJECTIVES[name]
    pixels = _pixels(
        2, 6, seed=_SEEDS.get(name, zlib.crc32(name.encode()) % 1000)
    )  # not hash(): it changes per process
    x = pixels.clone().requires_grad_()
    (grad,) = torch.autograd.grad(evaluate_objective(model, objective, x).sum(), x)
    with torch.no_grad():
        fd = _finite_difference(lambda z: evaluate_objective(model, objective, z), pixels)
    assert fd.abs().max() > 1e-6, "the reference gradient is zero: the test would prove nothing"
    torch.testing.assert_close(grad, fd, atol=1e-7, rtol=1e-5)


def test_values_match_hand_computed_references() -> None:
    model = _model(seed=2)
    net = model.module
    pixels = _pixels(2, 6, seed=3)
    with torch.no_grad():
        ref = _acts(net, pixels)
        got = {name: evaluate_objective(model, obj, pixels) for name, obj in OBJECTIVES.items()}
    close = torch.testing.assert_close
    close(got["class_score"], ref["logits"][:, 3])
    close(got["class_score_per_image"], torch.stack([ref["logits"][0, 1], ref["logits"][1, 4]]))
    close(got["channel"], ref["relu1"][:, 2].mean(dim=(1, 2)))
    close(
        got["channel_per_image"],
        torch.stack([ref["conv2"][0, 1].mean(), ref["conv2"][1, 5].mean()]),
    )
    close(got["neuron_centre"], ref["relu2"][:, 5, 1, 1])  # relu2 is 3x3: the centre is (1, 1)
    close(got["neuron_unit"], ref["conv1"][:, 2, 1, 4])
    close(got["layer_mean"], ref["relu1"].mean(dim=(1, 2, 3)))
    close(got["direction"], ref["relu2"].mean(dim=(2, 3)) @ (_DIRECTION / _DIRECTION.norm()))
    close(got["deepdream"], ref["conv1"].pow(2).mean(dim=(1, 2, 3)))
    close(got["l2"], (pixels - 0.5).pow(2).mean(dim=(1, 2, 3)))
    tv = torch.zeros(2, dtype=torch.float64)
    for b, c, y, x in itertools.product(range(2), range(3), range(6), range(6)):
        if y + 1 < 6:
            tv[b] += abs(pixels[b, c, y + 1, x] - pixels[b, c, y, x]) / (3 * 5 * 6)
        if x + 1 < 6:
            tv[b] += abs(pixels[b, c, y, x + 1] - pixels[b, c, y, x]) / (3 * 6 * 5)
    close(got["total_variation"], tv)


def test_feature_distance_is_zero_at_the_code_and_normalised() -> None:
    model = _model(seed=3)
    pixels = _pixels(2, 8, seed=4)
    with torch.no_grad():
        code = _acts(model.module, pixels)["relu1"]
        at_code = evaluate_objective(model, feature_distance("relu1", code), pixels)
        other = _pixels(2, 8, seed=5)
        away = evaluate_objective(model, feature_distance("relu1", code), other)
        expected = -(_acts(model.module, other)["relu1"] - code).pow(2).sum(
            dim=(1, 2, 3)
        ) / code.pow(2).sum(dim=(1, 2, 3))
        single = evaluate_objective(
            model, feature_distance("relu1", code[0]), other
        )  # one code for all
    torch.testing.assert_close(at_code, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(away, expected)
    torch.testing.assert_close(single[0], expected[0])
    assert (away < 0).all()


def test_centre_bias_weights_the_centre() -> None:
    def ctx_with(act: torch.Tensor) -> ObjectiveContext:
        img = torch.zeros(act.shape[0], 3, 4, 4)
        return ObjectiveContext(img, img, torch.zeros(act.shape[0], 2), {"layer": act})

    objective = centre_bias("layer", 0, sigma=0.2)
    constant = torch.full((1, 1, 9, 9), 3.0)
    torch.testing.assert_close(
        objective(ctx_with(constant)), torch.tensor([3.0])
    )  # weights sum to 1
    centre, corner = torch.zeros(1, 1, 9, 9), torch.zeros(1, 1, 9, 9)
    centre[0, 0, 4, 4] = 1.0
    corner[0, 0, 0, 0] = 1.0
    sigma_px = 0.2 * 9
    ratio = objective(ctx_with(centre)) / objective(ctx_with(corner))
    torch.testing.assert_close(
        ratio, torch.exp(torch.tensor([(4**2 + 4**2) / (2 * sigma_px**2)])), rtol=1e-4, atol=0
    )


# -- arithmetic and descriptions -----------------------------------------------------------
def _ctx(seed: int = 0) -> ObjectiveContext:
    model = _model(seed=4)
    pixels = _pixels(3, 8, seed=seed)
    acts = _acts(model.module, pixels)
    return ObjectiveContext(pixels, pixels, acts.pop("logits"), acts)


def test_combinations_compute_what_they_say() -> None:
    ctx = _ctx()
    a, b, c = class_score(1), l2(), channel("relu1", 0)
    close = torch.testing.assert_close
    close((a - 0.5 * b)(ctx), a(ctx) - 0.5 * b(ctx))
    close((a + b)(ctx), a(ctx) + b(ctx))
    close((2.0 * a)(ctx), 2.0 * a(ctx))
    close((a * 0.5)(ctx), 0.5 * a(ctx))
    close((a / 4)(ctx), a(ctx) / 4)
    close((-a)(ctx), -a(ctx))
    close(sum([a, b, c])(ctx), a(ctx) + b(ctx) + c(ctx))  # type: ignore[union-attr]
    close((a - (b + c))(ctx), a(ctx) - b(ctx) - c(ctx))
    close((a + (-0.25) * c)(ctx), a(ctx) - 0.25 * c(ctx))
    close((a + 1)(ctx), a(ctx) + 1)
    close((1 - a)(ctx), 1 - a(ctx))


def test_descriptions_compose_readably() -> None:
    assert (class_score(130) - 1e-4 * l2()).description == "class_score(130) - 0.0001*l2()"
    assert (
        class_score(130) - 1e-4 * l2() - 0.5 * total_variation()
    ).description == "class_score(130) - 0.0001*l2() - 0.5*total_variation()"
    assert (
        channel("blocks.5", 12) + 2 * diversity("blocks.5")
    ).description == "channel(blocks.5:12) + 2*diversity(blocks.5)"
    assert (
        class_score(1) - (l2() + total_variation())
    ).description == "class_score(1) - (l2() + total_variation())"
    assert (0.5 * (l2() + total_variation())).description == "0.5*(l2() + total_variation())"
    assert (class_score(1) + (-0.5) * l2()).description == "class_score(1) - 0.5*l2()"
    assert (-class_score(2)).description == "-class_score(2)"
    assert sum([class_score(1), l2()]).description == "class_score(1) + l2()"  # type: ignore[union-attr]
    assert channel("relu1", [0, 1, 2]).description == "channel(relu1:[0,1,2])"
    assert neuron("relu1", 3, 1, 2).description == "neuron(relu1:3[1,2])"


def test_layers_are_collected_once_in_order() -> None:
    objective = channel("relu2", 1) + deepdream("relu1") - 0.1 * diversity("relu2") + l2()
    assert objective.layers == ("relu2", "relu1")
    assert l2().layers == ()


def test_unsupported_operands_raise_type_error() -> None:
    with pytest.raises(TypeError, match="numbers only"):
        _ = class_score(1) * l2()
    with pytest.raises(TypeError):
        _ = class_score(1) + "l2"  # type: ignore[operator]
    with pytest.raises(TypeError):
        Objective("not callable")  # type: ignore[arg-type]


def test_bad_indices_are_refused_with_one_line() -> None:
    model = _model()
    pixels = _pixels(2, 8)
    for objective, match in [
        (class_score([1, 2, 3]), "3 entries but the batch has 2"),
        (class_score(7), "out of range"),
        (channel("relu1", 6), "6 channels"),
        (neuron("relu1", 0, 9, 0), "outside"),
        (direction("relu1", torch.ones(4)), "4 entries"),
        (feature_distance("relu1", torch.ones(2, 2)), "shape"),
    ]:
        with pytest.raises(BadInputError, match=match) as info:
            evaluate_objective(model, objective, pixels)
        assert "\n" not in str(info.value)
    with pytest.raises(BadInputError):
        direction("relu1", torch.zeros(6))
    with pytest.raises(BadInputError):
        feature_distance("relu1", torch.zeros(6, 8, 8))


def test_unknown_layer_raises_before_any_forward() -> None:
    class Counting(TinyConvNet):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Counting.calls += 1
            return super().forward(x)

    model = convlens.wrap(Counting().eval(), input_size=16, mean=0.5, std=0.25, resize=None)
    for objective in (channel("relu3", 0), class_score(1) + deepdream("conv_1")):
        with pytest.raises(LayerNotFoundError, match="did you mean"):
            optimize(model, objective, steps=3)
        with pytest.raises(LayerNotFoundError):
            evaluate_objective(model, objective, _pixels(1, 16))
    assert Counting.calls == 0


# -- diversity -----------------------------------------------------------------------------
def _diversity_loop_reference(act: torch.Tensor) -> torch.Tensor:
    """Minus the mean cosine similarity of Gram matrices, pair by pair, with einsum."""
    b = act.shape[0]
    grams = [torch.einsum("chw,dhw->cd", a, a) / (a.shape[1] * a.shape[2]) for a in act]
    sims = []
    for i in range(b):
        for j in range(b):
            if i != j:
                gi, gj = grams[i].flatten(), grams[j].flatten()
                sims.append(torch.dot(gi, gj) / (gi.norm() * gj.norm()))
    return -torch.stack(sims).mean()


def test_diversity_equals_a_pairwise_loop_reference() -> None:
    act = torch.randn(5, 4, 3, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    img = torch.zeros(5, 3, 2, 2, dtype=torch.float64)
    value = diversity("layer")(ObjectiveContext(img, img, torch.zeros(5, 2), {"layer": act}))
    torch.testing.assert_close(
        value, _diversity_loop_reference(act).expand(5), atol=1e-12, rtol=1e-10
    )
    one = diversity("layer")(
        ObjectiveContext(img[:1], img[:1], torch.zeros(1, 2), {"layer": act[:1]})
    )
    assert one.tolist() == [0.0]


def test_optimising_diversity_pushes_the_images_apart() -> None:
    model = _model(seed=5, dtype=torch.float32)
    start = PixelParam((4, 3, 16, 16), torch.Generator().manual_seed(0), init_std=0.05)
    initial = start().detach().clone()
    result = optimize(model, diversity("relu1"), start, steps=40, lr=0.05, transforms=[])
    final = result["image"]

    def gram_similarity(images: torch.Tensor) -> float:
        with torch.no_grad():
            return -evaluate_objective(model, diversity("relu1"), images)[0].item()

    def mean_pairwise_distance(images: torch.Tensor) -> float:
        d = torch.cdist(images.flatten(1), images.flatten(1))
        return (d.sum() / (d.shape[0] * (d.shape[0] - 1))).item()

    assert gram_similarity(final) < gram_similarity(initial) - 0.1
    assert mean_pairwise_distance(final) > 3 * mean_pairwise_distance(initial)
