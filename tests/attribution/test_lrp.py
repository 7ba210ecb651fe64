"""LRP against an explicit matrix-form reference, conservation laws and Captum.

The reference redistributes relevance layer by layer with explicit contribution matrices
``Z_jk = a_j w_jk``: ``R_j = sum_k Z_jk / (z_k + eps sign z_k) R_k`` and so on. Every affine
stage's matrix is read off the modules by feeding them basis vectors, so the reference
shares no code with the implementation (no transposed convolutions, no padding logic, no
BatchNorm folding: a conv+BatchNorm stage is one affine map by construction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import nn

import convlens
from convlens.attribution import METHODS
from convlens.attribution.lrp import lrp, lrp_alpha_beta
from convlens.errors import BadInputError
from convlens.models.efficientnet_lite import MBConvBlock, SamePadConv2d
from convlens.targets import Neuron

from helpers.tiny import assert_unchanged, module_hook_count, snapshot

Stage = tuple[str, Callable[[torch.Tensor], torch.Tensor]]  # ("affine" | "act", fn)
F64 = torch.float64


def _wrap(module: nn.Module, size: int = 8, channels: int = 3) -> convlens.Model:
    module.eval()
    return convlens.wrap(
        module, input_size=size, mean=0.5, std=0.25, resize=None, channels=channels
    )


def _x(shape: Sequence[int], seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * scale


# -- the matrix-form reference ---------------------------------------------------------------


def _affine_matrix(
    fn: Callable[[torch.Tensor], torch.Tensor], shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W (out, in), b (out,))`` of an affine map, from its values on 0 and the basis vectors."""
    d = math.prod(shape)
    with torch.no_grad():
        b = fn(torch.zeros(1, *shape, dtype=F64)).reshape(-1)
        w = (fn(torch.eye(d, dtype=F64).reshape(d, *shape)).reshape(d, -1) - b).T
    return w, b


def _redistribute(
    a: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    r: torch.Tensor,
    rule: str,
    eps: float,
    alpha: float,
    beta: float,
) -> torch.Tensor:
    """One layer of LRP in matrix form: ``a`` (in,), ``w`` (out, in), ``r`` (out,) -> (in,)."""
    contrib = a[:, None] * w.T  # Z_jk = a_j w_jk
    z = contrib.sum(0) + b
    if rule == "epsilon":
        return (contrib / torch.where(z >= 0, z + eps, z - eps)) @ r
    zp = contrib.clamp(min=0).sum(0) + b.clamp(min=0)
    zn = contrib.clamp(max=0).sum(0) + b.clamp(max=0)
    pos = torch.where(zp > 0, contrib.clamp(min=0) / torch.where(zp > 0, zp, 1.0), 0.0)
    neg = torch.where(zn < 0, contrib.clamp(max=0) / torch.where(zn < 0, zn, 1.0), 0.0)
    return (alpha * pos - beta * neg) @ r


def _redistribute_zb(
    a: torch.Tensor, w: torch.Tensor, r: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """z^B: ``R_j = sum_k (a_j w_jk - l_j w+_jk - h_j w-_jk) / sum_j (...) R_k``."""
    q = a[:, None] * w.T - low[:, None] * w.T.clamp(min=0) - high[:, None] * w.T.clamp(max=0)
    den = q.sum(0)
    return torch.where(den != 0, q / torch.where(den != 0, den, 1.0), 0.0) @ r


def reference_lrp(
    stages: Sequence[Stage],
    x: torch.Tensor,
    target: int,
    rule: str = "epsilon",
    *,
    eps: float = 0.0,
    alpha: float = 1.0,
    beta: float = 0.0,
    first_layer: str = "same",
    low: torch.Tensor | None = None,
    high: torch.Tensor | None = None,
) -> torch.Tensor:
    """LRP of a chain of affine maps and activations, one image at a time, by explicit sums."""
    out = []
    for xi in x:
        h = xi[None]
        tape = []
        for kind, fn in stages:
            if kind == "affine":
                w, b = _affine_matrix(fn, h.shape[1:])
                tape.append((h.reshape(-1), w, b))
            with torch.no_grad():
                h = fn(h)
        logits = h.reshape(-1)
        r = torch.zeros_like(logits)
        r[target] = logits[target]  # the score is its own relevance
        for i in reversed(range(len(tape))):  # activations pass relevance on unchanged
            a, w, b = tape[i]
            if i == 0 and first_layer == "zB":
                assert low is not None and high is not None
                r = _redistribute_zb(
                    a, w, r, low.expand_as(xi).reshape(-1), high.expand_as(xi).reshape(-1)
                )
            else:
                r = _redistribute(a, w, b, r, rule, eps, alpha, beta)
        out.append(r.reshape(xi.shape))
    return torch.stack(out)


# -- test networks -----------------------------------------------------------------------------


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.LeakyReLU(0.1), nn.Linear(5, 3)
    ).double()


def _mlp_stages(net: nn.Sequential) -> list[Stage]:
    return [
        ("affine", net[0]),
        ("act", net[1]),
        ("affine", net[2]),
        ("act", net[3]),
        ("affine", net[4]),
    ]


class ConvBNNet(nn.Module):
    """conv -> ReLU6 (saturating) -> conv -> BatchNorm (some negative gammas) -> ReLU -> pool -> linear."""

    def __init__(self, seed: int = 0, bias: bool = True) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.act1 = nn.ReLU6()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3, bias=bias)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            self.conv1.weight.mul_(3.0)  # push part of conv1 above the ReLU6 ceiling
            self.bn2.weight.copy_(torch.tensor([1.2, -0.7, 0.5, 2.0, -1.5, 0.9]))
            self.bn2.running_mean.copy_(torch.randn(6, generator=g) if bias else torch.zeros(6))
            self.bn2.running_var.copy_(torch.rand(6, generator=g) + 0.5)
            if not bias:
                self.bn2.bias.zero_()
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))

    def stages(self) -> list[Stage]:
        return [
            ("affine", self.conv1),
            ("act", self.act1),
            ("affine", lambda t: self.bn2(self.conv2(t))),  # conv + BatchNorm: one affine map
            ("act", self.act2),
            ("affine", lambda t: self.pool(t).flatten(1)),
            ("affine", self.fc),
        ]


def _folded_twin(net: ConvBNNet) -> nn.Module:
    """The same network with bn2 folded into conv2 by hand (a new conv with W' = s W, b' = t)."""
    twin = ConvBNNet(bias=net.conv1.bias is not None)
    twin.load_state_dict(net.state_dict())
    bn = net.bn2
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=True).double()
    with torch.no_grad():
        folded.weight.copy_(net.conv2.weight * scale[:, None, None, None])
        folded.bias.copy_(bn.bias - scale * bn.running_mean)
    twin.conv2, twin.bn2 = folded, nn.Identity()
    return twin


def _pixel_bounds(model: convlens.Model) -> tuple[torch.Tensor, torch.Tensor]:
    zero = torch.zeros(1, 3, 1, 1, dtype=F64)
    return model.normalize(zero)[0], model.normalize(zero + 1)[0]


# -- hand-computed references ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "options"),
    [
        ("epsilon", {"epsilon": 0.3}),
        ("epsilon", {"epsilon": 0.0}),
        ("alpha_beta", {"alpha": 2.0, "beta": 1.0}),
        ("alpha_beta", {}),
        ("zplus", {}),
    ],
)
def test_mlp_matches_the_matrix_form_reference(rule: str, options: dict[str, float]) -> None:
    net = _mlp()
    model = _wrap(net, size=1, channels=4)
    x = _x((3, 4), seed=1, scale=2.0)  # signed inputs: the alpha-beta rule's x < 0 branch runs
    got = lrp(model, x, 1, rule=rule, first_layer="same", **options)
    ref_rule = "epsilon" if rule == "epsilon" else "alpha_beta"
    want = reference_lrp(
        _mlp_stages(net),
        x,
        1,
        ref_rule,
        eps=options.get("epsilon", 0.0),
        alpha=options.get("alpha", 1.0),
        beta=options.get("beta", 0.0),
    )
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_mlp_zb_first_layer_matches_the_reference() -> None:
    net = _mlp(seed=3)
    model = _wrap(net, size=1, channels=4)
    low, high = torch.full((4,), -2.0, dtype=F64), torch.tensor([1.0, 2.0, 1.5, 3.0], dtype=F64)
    x = torch.clamp(_x((3, 4), seed=2), low, high)
    got = lrp(model, x, 2, rule="epsilon", epsilon=0.1, first_layer="zB", low=low, high=high)
    want = reference_lrp(
        _mlp_stages(net), x, 2, "epsilon", eps=0.1, first_layer="zB", low=low, high=high
    )
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    ("rule", "options", "first_layer"),
    [
        ("epsilon", {"epsilon": 0.25}, "same"),
        ("epsilon", {"epsilon": 1e-9}, "zB"),
        ("alpha_beta", {"alpha": 2.0, "beta": 1.0}, "same"),
        ("alpha_beta", {"alpha": 1.0, "beta": 0.0}, "zB"),
    ],
)
def test_conv_bn_net_matches_the_matrix_form_reference(
    rule: str, options: dict[str, float], first_layer: str
) -> None:
    """Padding, stride, ReLU6 saturation, BatchNorm with negative gammas, average pooling."""
    net = ConvBNNet(seed=4)
    model = _wrap(net)
    x = model.normalize(
        torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5), dtype=F64)
    )
    low, high = _pixel_bounds(model)
    got = lrp(model, x, 0, rule=rule, first_layer=first_layer, **options)
    want = reference_lrp(
        net.stages(),
        x,
        0,
        rule,
        eps=options.get("epsilon", 0.0),
        alpha=options.get("alpha", 1.0),
        beta=options.get("beta", 0.0),
        first_layer=first_layer,
        low=low,
        high=high,
    )
    assert (net.conv1(x) > 6).any(), "the test needs saturated ReLU6 units"
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("rule", ["epsilon", "alpha_beta"])
def test_string_padding_dilation_and_even_kernels_match_the_reference(rule: str) -> None:
    """padding="same" with an even, dilated kernel pads one more pixel after than before."""
    torch.manual_seed(18)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 4, padding="same", dilation=2),
        nn.ReLU6(),
        nn.Conv2d(4, 5, 3, stride=2, padding="valid"),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 3 * 3, 3),
    ).double()
    x = _x((2, 3, 8, 8), seed=18, scale=2.0)
    stages: list[Stage] = [
        ("affine", net[0]),
        ("act", net[1]),
        ("affine", net[2]),
        ("act", net[3]),
        ("affine", lambda t: net[5](t.flatten(1))),
    ]
    got = lrp(_wrap(net), x, 1, rule=rule, epsilon=0.2, first_layer="same")
    want = reference_lrp(stages, x, 1, rule, eps=0.2)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-9)


def test_zb_is_the_default_with_pixel_bounds() -> None:
    net = ConvBNNet(seed=6)
    model = _wrap(net)
    x = model.normalize(
        torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(6), dtype=F64)
    )
    low, high = _pixel_bounds(model)
    want = reference_lrp(
        net.stages(), x, 1, "epsilon", eps=1e-6, first_layer="zB", low=low, high=high
    )
    torch.testing.assert_close(lrp(model, x, 1), want, atol=1e-12, rtol=1e-9)
    # and it is not the epsilon rule on the first layer
    assert not torch.allclose(lrp(model, x, 1, first_layer="same"), want, atol=1e-6)


# -- BatchNorm folding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "options"),
    [("epsilon", {"epsilon": 0.5}), ("alpha_beta", {"alpha": 2.0, "beta": 1.0}), ("zplus", {})],
)
def test_batchnorm_is_folded_into_its_conv(rule: str, options: dict[str, float]) -> None:
    net = ConvBNNet(seed=7)
    twin = _folded_twin(net)
    x = _x((2, 3, 8, 8), seed=7)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), twin.eval()(x))  # the twin is the same function
    got = lrp(_wrap(net), x, 2, rule=rule, **options)
    torch.testing.assert_close(
        got, lrp(_wrap(twin), x, 2, rule=rule, **options), atol=1e-12, rtol=1e-9
    )
    if rule != "epsilon":
        # BatchNorm as a layer of its own (not folded) redistributes differently: the check bites
        unfolded = [
            *net.stages()[:2],
            ("affine", net.conv2),
            ("affine", net.bn2),
            *net.stages()[3:],
        ]
        low, high = _pixel_bounds(_wrap(net))
        alt = reference_lrp(
            unfolded,
            x,
            2,
            "alpha_beta",
            alpha=options.get("alpha", 1.0),
            beta=options.get("beta", 0.0),
            first_layer="zB",
            low=low,
            high=high,
        )
        assert (got - alt).abs().max() > 1e-3 * got.abs().max()


def test_the_model_is_left_unchanged() -> None:
    net = ConvBNNet(seed=8)
    net.train()
    net.conv2.weight.requires_grad_(False)
    before = snapshot(net)
    x = _x((2, 3, 8, 8), seed=8)
    x_copy = x.clone()
    model = convlens.wrap(net, input_size=8, mean=0.5, std=0.25, resize=None)
    for rule in ("epsilon", "alpha_beta"):
        lrp(model, x, 1, rule=rule)
    assert_unchanged(net, before)
    assert module_hook_count(net) == 0
    assert torch.equal(x, x_copy) and x.grad is None


# -- conservation ------------------------------------------------------------------------------


class BiasFreeLiteNet(nn.Module):
    """An EfficientNet-Lite in miniature without biases: SAME-padded stem, BatchNorm with zero
    mean and shift, ReLU6, two MBConv blocks (the first residual), pooling, linear."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem_conv = SamePadConv2d(3, 8, 3, stride=2, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.stem_act = nn.ReLU6()
        self.blocks = nn.Sequential(MBConvBlock(8, 8, 3, 1, 2), MBConvBlock(8, 16, 5, 2, 3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, 4, bias=False)
        with torch.no_grad():
            self.stem_conv.weight.mul_(8.0)  # saturate the stem's ReLU6
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(-1.0, 2.0)
                    m.running_var.uniform_(0.5, 2.0)
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        return self.classifier(self.pool(self.blocks(x)).flatten(1))


def test_epsilon_conserves_the_score_on_a_bias_free_relu6_residual_net() -> None:
    """Relevance passes the ReLU6 ceilings and splits at the residual sums in proportion:
    the input relevance sums to the score. Gradient x input does not (ReLU6 saturates), and
    a residual sum that copied relevance to both summands would not either."""
    net = BiasFreeLiteNet(seed=9).eval()
    model = _wrap(net, size=15)
    x = _x((3, 3, 15, 15), seed=9)
    with torch.no_grad():
        score = net(x)[:, 2]
        assert (net.stem_bn(net.stem_conv(x)) > 6).float().mean() > 0.05
    for first_layer in ("same", "zB"):
        r = lrp(model, x, 2, epsilon=1e-12, first_layer=first_layer)
        torch.testing.assert_close(r.sum(dim=(1, 2, 3)), score, atol=1e-9, rtol=1e-8)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(xr)[:, 2].sum(), xr)
    assert ((grad * x).sum(dim=(1, 2, 3)) - score).abs().max() > 1e-3 * score.abs().max()


def test_bias_absorption_matches_theory_on_a_relu_net() -> None:
    """On a ReLU net with biases, LRP-0 redistributes ``f(x) - sum_b b * df/db``: each bias
    unit keeps its share (the first-order Taylor identity of a piecewise-linear network)."""
    torch.manual_seed(10)
    net = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(5, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).double()
    x = _x((2, 3, 8, 8), seed=10)
    r = lrp(_wrap(net), x, 0, epsilon=0.0, first_layer="same")
    for i in range(2):
        out = net(x[i : i + 1])[0, 0]
        biases = [m.bias for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
        grads = torch.autograd.grad(out, biases)
        absorbed = sum(float((b.detach() * g).sum()) for b, g in zip(biases, grads))
        torch.testing.assert_close(
            float(r[i].sum()), float(out.detach()) - absorbed, atol=1e-12, rtol=1e-10
        )
        assert abs(float(absorbed)) > 1e-2  # the biases do absorb something: the check bites


def test_alpha_beta_conserves_on_a_bias_free_net() -> None:
    """With alpha - beta = 1 and every unit receiving both signs of contribution, the
    relevance is conserved layer by layer."""
    torch.manual_seed(11)
    net = nn.Sequential(
        nn.Linear(30, 20, bias=False),
        nn.ReLU6(),
        nn.Linear(20, 10, bias=False),
        nn.ReLU(),
        nn.Linear(10, 3, bias=False),
    ).double()
    x = _x((4, 30), seed=11, scale=3.0)
    r = lrp(
        _wrap(net, size=1, channels=30),
        x,
        1,
        rule="alpha_beta",
        alpha=2.0,
        beta=1.0,
        first_layer="same",
    )
    with torch.no_grad():
        torch.testing.assert_close(r.sum(dim=1), net(x)[:, 1], atol=1e-10, rtol=1e-9)


# -- residual sums -------------------------------------------------------------------------------


class ResidualMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(12)
        self.fc1, self.act, self.fc2, self.head = (
            nn.Linear(5, 7),
            nn.ReLU6(),
            nn.Linear(7, 5),
            nn.Linear(5, 2),
        )
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc2(self.act(self.fc1(x))) + x)


def test_residual_sum_splits_relevance_in_proportion() -> None:
    """Reference: at ``y = h + x`` the summands get ``h / y * R`` and ``x / y * R``."""
    net = ResidualMLP()
    x = _x((3, 5), seed=12, scale=2.0)
    got = lrp(_wrap(net, size=1, channels=5), x, 1, epsilon=0.05, first_layer="same")
    for i in range(3):
        xi = x[i]
        w1, b1 = net.fc1.weight, net.fc1.bias
        z1 = w1 @ xi + b1
        a1 = torch.clamp(z1, 0, 6)
        h = net.fc2.weight @ a1 + net.fc2.bias
        y = h + xi
        r_y = torch.zeros(2, dtype=F64)
        r_y[1] = (net.head.weight @ y + net.head.bias)[1]
        r_y = _redistribute(y, net.head.weight, net.head.bias, r_y, "epsilon", 0.05, 1, 0)
        r_h, r_skip = h / y * r_y, xi / y * r_y
        r_a1 = _redistribute(a1, net.fc2.weight, net.fc2.bias, r_h, "epsilon", 0.05, 1, 0)
        r_x = _redistribute(xi, w1, b1, r_a1, "epsilon", 0.05, 1, 0) + r_skip
        torch.testing.assert_close(got[i], r_x.detach(), atol=1e-12, rtol=1e-9)


# -- targets, input layers, refusals -------------------------------------------------------------


def test_neuron_targets_at_a_folded_conv_and_at_its_batchnorm() -> None:
    """The neuron's value is its relevance: conserved on a bias-free net, whether the score is
    read before the BatchNorm (the conv's own output) or after it."""
    net = ConvBNNet(seed=13, bias=False)
    model = _wrap(net)
    x = _x((2, 3, 8, 8), seed=13)
    with torch.no_grad():
        y = net.conv2(net.act1(net.conv1(x)))
        values = {"conv2": y[:, 1].mean(dim=(1, 2)), "bn2": net.bn2(y)[:, 1].mean(dim=(1, 2))}
    for layer, value in values.items():
        r = lrp(model, x, Neuron(layer, 1), epsilon=1e-12, first_layer="same")
        torch.testing.assert_close(r.sum(dim=(1, 2, 3)), value, atol=1e-9, rtol=1e-8)


class FlattenFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(14)
        self.flatten, self.fc1, self.act, self.fc2 = (
            nn.Flatten(),
            nn.Linear(12, 6),
            nn.ReLU(),
            nn.Linear(6, 3),
        )
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.flatten(x))))


def test_zb_reaches_a_linear_layer_reading_the_flattened_input() -> None:
    net = FlattenFirst()
    model = _wrap(net, size=2)
    x = model.normalize(
        torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(14), dtype=F64)
    )
    low, high = _pixel_bounds(model)
    stages: list[Stage] = [
        ("affine", lambda t: net.fc1(t.flatten(1))),
        ("act", net.act),
        ("affine", net.fc2),
    ]
    want = reference_lrp(stages, x, 0, "epsilon", eps=1e-6, first_layer="zB", low=low, high=high)
    torch.testing.assert_close(lrp(model, x, 0), want, atol=1e-12, rtol=1e-9)


class Rescaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Linear(2 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(2 * x - 1)).flatten(1))


def test_zb_needs_a_layer_reading_the_input() -> None:
    model = _wrap(Rescaled())
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(BadInputError, match="first_layer='same'"):
        lrp(model, x, 0)
    assert module_hook_count(model.module) == 0
    assert lrp(model, x, 0, first_layer="same").shape == x.shape


@pytest.mark.parametrize(
    ("layer", "name"),
    [
        (nn.SiLU(), "SiLU"),
        (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "Conv2d"),
        (nn.GroupNorm(2, 4), "GroupNorm"),
        (nn.BatchNorm2d(4, track_running_stats=False), "running statistics"),
    ],
)
def test_layers_without_a_rule_are_refused_by_name(layer: nn.Module, name: str) -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), layer, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    with pytest.raises(BadInputError, match=rf"layer '1'.*{name}"):
        lrp(_wrap(net), torch.randn(1, 3, 8, 8), 0)
    assert module_hook_count(net) == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"rule": "gamma"}, "rule='gamma'"),
        ({"rule": "alpha_beta", "alpha": 1.5, "beta": 1.0}, "alpha - beta = 1"),
        ({"rule": "alpha_beta", "alpha": 0.5, "beta": -0.5}, "beta >= 0"),
        ({"rule": "zplus", "alpha": 2.0, "beta": 1.0}, "zplus"),
        ({"epsilon": -0.1}, "epsilon=-0.1"),
        ({"first_layer": "wsquare"}, "first_layer='wsquare'"),
        ({"low": torch.zeros(5)}, "low has shape"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        lrp(_wrap(ConvBNNet()), _x((1, 3, 8, 8)), 0, **options)  # type: ignore[arg-type]


def test_alpha_beta_alias_is_registered_and_equals_the_rule() -> None:
    assert METHODS["lrp"].fn is lrp and METHODS["lrp_alpha_beta"].fn is lrp_alpha_beta
    model = _wrap(ConvBNNet(seed=15))
    x = _x((2, 3, 8, 8), seed=15)
    torch.testing.assert_close(
        lrp_alpha_beta(model, x, 1), lrp(model, x, 1, rule="alpha_beta"), atol=0, rtol=0
    )


def test_float32_batch_equals_float64_reference() -> None:
    """The real models run in float32: the rules stay accurate there."""
    net = ConvBNNet(seed=16)
    x = _x((2, 3, 8, 8), seed=16)
    want = lrp(_wrap(net), x, 0, rule="alpha_beta")
    got = lrp(_wrap(net.float()), x.float(), 0, rule="alpha_beta")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-5 * float(want.abs().max()), rtol=1e-4)


# -- Captum, where it computes the same thing ----------------------------------------------------


class PlainReluNet(nn.Module):
    """Only layers Captum's LRP knows (Conv2d, ReLU, AdaptiveAvgPool2d, Linear); no BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(17)
        self.conv1, self.relu1 = nn.Conv2d(3, 5, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(5, 6, 3, stride=2, padding=1), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 3)
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


@pytest.mark.captum
def test_epsilon_rule_agrees_with_captum_on_a_plain_relu_net() -> None:
    from captum.attr import LRP

    net = PlainReluNet().eval()
    x = _x((2, 3, 8, 8), seed=17)
    ours = lrp(_wrap(net), x, 2, epsilon=1e-9, first_layer="same")
    theirs = LRP(net).attribute(x.clone().requires_grad_(True), target=2)
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-8, rtol=1e-6)
