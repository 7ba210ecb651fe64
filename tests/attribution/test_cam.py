"""The CAM family against hand-computed values, Captum, slow re-implementations and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convlens
from convlens.attribution import explain
from convlens.attribution.cam import (
    _rules_above,
    eigencam,
    gradcam,
    gradcam_pp,
    guided_gradcam,
    layercam,
    scorecam,
)
from convlens.attribution.guided import _guided_rule, guided_backprop
from convlens.errors import BadInputError
from convlens.hooks import backward_rules, capture, inference_context
from convlens.targets import Neuron

from helpers.tiny import ResidualNet, TinyConvNet

# -- a one-conv model with fixed weights, for values derived by hand ----------------------


class OneConvNet(nn.Module):
    """1x1 conv (1 -> 2 channels) -> global average -> linear (2 -> 2, no bias)."""

    def __init__(
        self, conv_w: tuple[float, float], conv_b: tuple[float, float], fc_w: list[list[float]]
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(conv_w, dtype=torch.float64).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor(conv_b, dtype=torch.float64))
            self.fc.weight.copy_(torch.tensor(fc_w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


def _wrap(module: nn.Module, size: int, channels: int = 3, classes: int = 5) -> convlens.Model:
    module.eval()
    return convlens.wrap(
        module,
        input_size=size,
        mean=0.0,
        std=1.0,
        resize=None,
        channels=channels,
        labels=[f"c{i}" for i in range(classes)],
        name="test",
    )


# x = [[1, 2], [3, 4]]; conv: A0 = x, A1 = 5 - x = [[4, 3], [2, 1]]; fc rows: class 0 = (1, 2), class 1 = (3, -1).
# S_c = sum_k W[c, k] mean(A_k), so dS_c/dA_k[i, j] = W[c, k] / 4 at every position.
X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
A0 = X[0, 0]
A1 = 5 - X[0, 0]


def _hand_model() -> convlens.Model:
    return _wrap(
        OneConvNet((1.0, -1.0), (0.0, 5.0), [[1.0, 2.0], [3.0, -1.0]]).double(),
        2,
        channels=1,
        classes=2,
    )


def _both_classes(method, **options) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """The method's map for class 0 and class 1 of the same image, in one batch."""
    out = method(_hand_model(), X.expand(2, 1, 2, 2), torch.tensor([0, 1]), layer="conv", **options)
    assert out.shape == (2, 1, 2, 2)  # the layer is at input resolution: no resampling
    return out[0, 0], out[1, 0]


def test_gradcam_by_hand() -> None:
    c0, c1 = _both_classes(gradcam)
    # class 0: w = (1/4, 2/4): 0.25 A0 + 0.5 A1
    torch.testing.assert_close(c0, torch.tensor([[2.25, 2.0], [1.75, 1.5]], dtype=torch.float64))
    # class 1: w = (3/4, -1/4): 0.75 A0 - 0.25 A1 = [[-0.25, 0.75], [1.75, 2.75]], then relu
    torch.testing.assert_close(c1, torch.tensor([[0.0, 0.75], [1.75, 2.75]], dtype=torch.float64))


def test_layercam_by_hand() -> None:
    c0, c1 = _both_classes(layercam)
    # both gradients positive for class 0: the same map as Grad-CAM
    torch.testing.assert_close(c0, torch.tensor([[2.25, 2.0], [1.75, 1.5]], dtype=torch.float64))
    # class 1: relu(g) = (3/4, 0): channel 1 drops out instead of subtracting
    torch.testing.assert_close(c1, 0.75 * A0)


def test_gradcam_pp_by_hand() -> None:
    c0, c1 = _both_classes(gradcam_pp)
    # g constant per channel, sum_ab A_k = 10 for both channels:
    # alpha = g^2 / (2 g^2 + 10 g^3) = 1 / (2 + 10 g); w_k = 4 * alpha * relu(g)
    # class 0: g = (1/4, 1/2): alpha = (2/9, 1/7), w = (2/9, 2/7)
    torch.testing.assert_close(c0, 2 / 9 * A0 + 2 / 7 * A1)
    # class 1: g = (3/4, -1/4): alpha_0 = 1 / 9.5 = 2/19, w = (6/19, 0)
    torch.testing.assert_close(c1, 6 / 19 * A0)


def test_scorecam_by_hand() -> None:
    c0, c1 = _both_classes(scorecam)
    # masks: H0 = (A0 - 1)/3, H1 = (A1 - 1)/3; mean(x * H0) = 5/3, mean(x * H1) = 5/6.
    # class 0 score of an input z: mean(z) + 2 (5 - mean(z)) = 10 - mean(z) -> (25/3, 55/6)
    w1 = 1 / (1 + math.exp(-(55 / 6 - 25 / 3)))
    torch.testing.assert_close(c0, (1 - w1) * A0 + w1 * A1)
    # class 1 score: 3 mean(z) - (5 - mean(z)) = 4 mean(z) - 5 -> (5/3, -5/3)
    w0 = 1 / (1 + math.exp(-(5 / 3 + 5 / 3)))
    torch.testing.assert_close(c1, w0 * A0 + (1 - w0) * A1)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_eigencam_by_hand_rank_one(sign: float) -> None:
    # A_k = sign * c_k x with c = (1, 2): M = sign * x (1, 2), v1 = +-(1, 2)/sqrt(5), M v1 = +-sqrt(5) x.
    # Whatever sign the SVD returns (and for either sign of the activations), the map is
    # sqrt(5) x; a centred variant would give sqrt(5) (x - 2.5), a missing sign fix zeros.
    model = _wrap(
        OneConvNet((sign, 2 * sign), (0.0, 0.0), [[1.0, 0.0], [0.0, 1.0]]).double(),
        2,
        channels=1,
        classes=2,
    )
    out = eigencam(model, X, 0, layer="conv")
    torch.testing.assert_close(out[0, 0], math.sqrt(5) * X[0, 0])


def test_eigencam_matches_the_principal_eigenvector_of_the_gram_matrix() -> None:
    """Independent route: numpy's symmetric eigensolver on M^T M instead of torch's SVD."""
    net = TinyConvNet(seed=4).double()
    model = _wrap(net, 16)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), inference_context(net), capture(net, ["relu2"]) as acts:
        net(x)
    act = acts["relu2"].numpy()
    expected = []
    for a in act:
        m = a.reshape(a.shape[0], -1).T  # (h*w, C)
        _, vectors = np.linalg.eigh(m.T @ m)
        p = m @ vectors[:, -1]
        p = p if p.sum() >= 0 else -p
        expected.append(np.maximum(p, 0).reshape(1, *a.shape[1:]))
    ref = F.interpolate(
        torch.tensor(np.stack(expected)), size=(16, 16), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(eigencam(model, x, None, layer="relu2"), ref, atol=1e-10, rtol=1e-8)
    # class-agnostic: the target does not change the map
    assert torch.equal(eigencam(model, x, 0, layer="relu2"), eigencam(model, x, 3, layer="relu2"))


# -- Captum (test-only oracle) -------------------------------------------------------------


@pytest.mark.captum
@pytest.mark.parametrize("layer", ["relu2", "conv2", "relu1"])
def test_gradcam_equals_captum_layer_gradcam(layer: str) -> None:
    from captum.attr import LayerAttribution, LayerGradCam

    net = TinyConvNet(seed=5).double().eval()
    model = _wrap(net, 16)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([0, 3, 4])
    ref = LayerGradCam(net, net.get_submodule(layer)).attribute(
        x.clone().requires_grad_(), target=target, relu_attributions=True
    )
    ref = LayerAttribution.interpolate(ref, (16, 16), interpolate_mode="bilinear")
    ours = gradcam(model, x, target, layer=layer)
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, ref.detach(), atol=1e-12, rtol=1e-10)


class ReluNet(nn.Module):
    """nn.ReLU only (Captum's guided backprop hooks nothing else), a ReLU above the last conv block."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        x = self.relu3(self.conv3(x))
        return self.fc(self.pool(x).flatten(1))


@pytest.mark.captum
@pytest.mark.filterwarnings(
    "ignore:Setting backward hooks on ReLU:UserWarning"
)  # Captum warns on every call
@pytest.mark.parametrize("layer", ["relu3", "relu2"])  # relu2 has a ReLU above it
def test_guided_gradcam_equals_captum_on_a_relu_model(layer: str) -> None:
    from captum.attr import GuidedGradCam

    net = ReluNet(seed=6).double().eval()
    model = _wrap(net, 16)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    target = torch.tensor([1, 2, 4])
    ref = GuidedGradCam(net, net.get_submodule(layer)).attribute(
        x.clone().requires_grad_(), target=target, interpolate_mode="bilinear"
    )
    ours = guided_gradcam(model, x, target, layer=layer)
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, ref.detach(), atol=1e-12, rtol=1e-10)


# -- guided Grad-CAM: one pass = two passes, also on ReLU6 and reused activations ----------


def _two_pass(
    model: convlens.Model, x: torch.Tensor, target: torch.Tensor, layer: str
) -> torch.Tensor:
    return guided_backprop(model, x, target) * gradcam(model, x, target, layer=layer)


@pytest.mark.parametrize(
    ("kind", "layer", "above"),
    [
        ("conv", "relu2", False),  # ReLU6 model, nothing guided above: one backward pass
        ("conv", "relu1", True),  # the ReLU6 above is switched to its plain derivative first
        ("conv", "conv2", True),
        ("residual", "stem_relu", True),  # block_relu runs twice, above the layer
    ],
)
@pytest.mark.parametrize("inplace", [False, True])
def test_guided_gradcam_one_pass_equals_two_passes(
    kind: str, layer: str, above: bool, inplace: bool
) -> None:
    net = (TinyConvNet if kind == "conv" else ResidualNet)(inplace=inplace, seed=7).double()
    model = _wrap(net, 16)
    assert _rules_above(model, layer) is above  # both code paths are exercised
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    target = torch.tensor([0, 2, 4])
    ours = guided_gradcam(model, x, target, layer=layer)
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, _two_pass(model, x, target, layer), atol=1e-12, rtol=1e-10)


def test_guided_gradcam_weights_use_the_plain_gradient() -> None:
    """The trap the one-pass version avoids: with guided rules everywhere, the gradient
    reaching relu1 is the *guided* one, and the Grad-CAM it gives is different."""
    net = TinyConvNet(seed=7).double().eval()
    model = _wrap(net, 16)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    target = torch.tensor([0, 2, 4])
    xr = x.clone().requires_grad_()
    with inference_context(net), backward_rules(net, _guided_rule), capture(net, ["relu1"]) as acts:
        score = net(xr).gather(1, target[:, None]).sum()
        (guided_grad,) = torch.autograd.grad(score, acts["relu1"])
    act = acts["relu1"].detach()
    wrong = torch.relu((guided_grad.mean(dim=(2, 3))[:, :, None, None] * act).sum(1, keepdim=True))
    right = gradcam(model, x, target, layer="relu1")
    assert (wrong - right).abs().max() > 1e-3 * right.abs().max()
    ours = guided_gradcam(model, x, target, layer="relu1")
    torch.testing.assert_close(
        ours, guided_backprop(model, x, target) * right, atol=1e-12, rtol=1e-10
    )


# -- create_graph: the map is differentiable w.r.t. x --------------------------------------


class SmoothNet(nn.Module):
    """tanh everywhere (no kinks for finite differences) and a non-linearity above the CAM
    layer, so the CAM weights themselves depend on x."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(8)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = nn.Tanh()
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.act2 = nn.Tanh()
        self.conv3 = nn.Conv2d(4, 3, 1)
        self.act3 = nn.Tanh()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(self.act3(self.conv3(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "method", [gradcam, gradcam_pp, layercam, eigencam, scorecam], ids=lambda m: m.__name__
)
def test_create_graph_gradient_matches_finite_differences(method) -> None:  # type: ignore[no-untyped-def]
    model = _wrap(SmoothNet().double(), 6, classes=2)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64, generator=g, requires_grad=True)
    weights = torch.randn(1, 1, 6, 6, dtype=torch.float64, generator=g)

    def objective(z: torch.Tensor) -> torch.Tensor:
        return (method(model, z, 1, layer="act2", create_graph=True) * weights).sum()

    (grad,) = torch.autograd.grad(objective(x), x)
    assert grad.abs().max() > 0
    # central differences along random directions (float64, eps 1e-6): rtol 1e-5
    eps = 1e-6
    with torch.no_grad():
        for _ in range(3):
            v = torch.randn(x.shape, dtype=torch.float64, generator=g)
            numeric = (objective(x + eps * v) - objective(x - eps * v)) / (2 * eps)
            torch.testing.assert_close(numeric, (grad * v).sum(), atol=1e-8, rtol=1e-5)
    # without create_graph the map is a plain tensor, even when x requires grad
    assert not method(model, x, 1, layer="act2").requires_grad


# -- Score-CAM against a slow, obviously correct loop --------------------------------------


def _scorecam_slow(model: convlens.Model, x: torch.Tensor, score, layer: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    net = model.module
    maps = []
    for i in range(x.shape[0]):
        with torch.no_grad(), inference_context(net), capture(net, [layer]) as acts:
            net(x[i : i + 1])
        act = acts[layer][0]
        scores, channels = [], []
        for k in range(act.shape[0]):
            up = F.interpolate(
                act[k][None, None], size=x.shape[-2:], mode="bilinear", align_corners=False
            )
            if up.max() == up.min():
                continue
            mask = (up - up.min()) / (up.max() - up.min())
            with torch.no_grad(), inference_context(net):
                scores.append(score(net, x[i : i + 1] * mask, i))
            channels.append(k)
        weights = torch.zeros(act.shape[0], dtype=x.dtype)
        weights[channels] = torch.softmax(torch.stack(scores), dim=0)
        cam = torch.relu((weights[:, None, None] * act).sum(0))
        maps.append(
            F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[
                0
            ]
        )
    return torch.stack(maps)


def _neuron_score(net: nn.Module, z: torch.Tensor) -> torch.Tensor:
    with capture(net, ["relu2"]) as acts:
        net(z)
    return acts["relu2"][0, 3].mean()


TARGETS = {
    "class": (torch.tensor([1, 4, 2]), lambda net, z, i: net(z)[0, [1, 4, 2][i]]),
    "neuron": (Neuron("relu2", 3), lambda net, z, i: _neuron_score(net, z)),
    "callable": (lambda out: out[:, 0] - out[:, 1], lambda net, z, i: net(z)[0, 0] - net(z)[0, 1]),
}


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_scorecam_matches_a_slow_loop(kind: str) -> None:
    net = TinyConvNet(seed=10).double()
    model = _wrap(net, 16)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    target, score = TARGETS[kind]
    layer = "relu1" if kind == "neuron" else "relu2"
    ref = _scorecam_slow(model, x, score, layer)
    done: list[tuple[int, int]] = []
    ours = scorecam(
        model, x, target, layer=layer, batch_size=4, progress=lambda d, t: done.append((d, t))
    )
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-8)
    assert done[-1][0] == done[-1][1] and len(done) == math.ceil(done[-1][1] / 4)
    torch.testing.assert_close(
        scorecam(model, x, target, layer=layer, batch_size=1000), ours, atol=1e-12, rtol=1e-10
    )


def test_scorecam_skips_constant_channels() -> None:
    # a dead ReLU6 channel (always 0) and a saturated one (always 6) give no mask and no forward
    net = TinyConvNet(seed=10).double()
    with torch.no_grad():
        net.bn2.bias[3], net.bn2.bias[5] = -100.0, 100.0
    model = _wrap(net, 16)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    with torch.no_grad(), inference_context(net), capture(net, ["relu2"]) as acts:
        net(x)
    act = acts["relu2"]
    usable = int((act.amax(dim=(2, 3)) > act.amin(dim=(2, 3))).sum())
    assert usable == act.shape[0] * (act.shape[1] - 2)
    totals: list[int] = []
    out = scorecam(model, x, 1, layer="relu2", progress=lambda d, t: totals.append(t))
    assert totals[-1] == usable and torch.isfinite(out).all()


# -- errors and the explain() driver -------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [gradcam, gradcam_pp, layercam, eigencam, scorecam, guided_gradcam],
    ids=lambda m: m.__name__,
)
def test_a_layer_without_spatial_output_is_refused(method) -> None:  # type: ignore[no-untyped-def]
    model = _wrap(TinyConvNet(), 16)
    with pytest.raises(BadInputError, match=r"'fc'.*relu2"):
        method(model, torch.randn(1, 3, 16, 16), 1, layer="fc")


def test_a_target_below_the_layer_is_refused() -> None:
    model = _wrap(TinyConvNet(), 16)
    with pytest.raises(BadInputError, match="does not depend on layer 'relu2'"):
        gradcam(model, torch.randn(1, 3, 16, 16), Neuron("relu1", 0), layer="relu2")


def test_scorecam_batch_size_is_validated() -> None:
    with pytest.raises(BadInputError, match="batch_size=0"):
        scorecam(
            _wrap(TinyConvNet(), 16), torch.randn(1, 3, 16, 16), 1, layer="relu2", batch_size=0
        )


def test_explain_uses_the_default_cam_layer_and_the_predicted_class() -> None:
    net = TinyConvNet(seed=12)
    model = _wrap(net, 16)
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    result = explain(model, pixels, "gradcam")
    x = model.normalize(pixels)
    predicted = model.logits(x).argmax(dim=1)
    torch.testing.assert_close(
        result.tensors["attribution"], gradcam(model, x, predicted, layer="relu2")
    )
    assert result.tensors["map"].shape == (2, 16, 16)
    assert gradcam(model, x, predicted).shape == (2, 1, 16, 16)  # layer=None: the default layer
