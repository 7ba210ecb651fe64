"""hooks.py: capture, backward rules and mode contexts on awkward models.

Awkward means: ReLU(inplace=True), one ReLU module used twice in a forward, a residual
block with BatchNorm, and a forward that raises half-way.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.errors import LayerNotFoundError, LayerReusedError
from convlens.hooks import backward_rules, capture, eval_mode, frozen, trace_calls

from helpers.tiny import (
    ResidualNet,
    ReusedReluNet,
    TinyConvNet,
    assert_unchanged,
    module_hook_count,
    snapshot,
)


def _x(seed: int = 0, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("inplace", [False, True])
def test_capture_matches_manual_forward(inplace: bool) -> None:
    net = TinyConvNet(inplace=inplace).eval()
    x = _x()
    with capture(net, ["conv1", "relu1", "relu2"]) as acts:
        out = net(x)
    # recompute by hand, out of place
    ref_conv1 = net.conv1(x)
    ref_relu1 = torch.relu(ref_conv1)
    ref_relu2 = torch.clamp(net.bn2(net.conv2(ref_relu1)), 0, 6)
    # in place, conv1's output is overwritten by relu1 unless capture protects it
    torch.testing.assert_close(acts["conv1"], ref_conv1)
    torch.testing.assert_close(acts["relu1"], ref_relu1)
    torch.testing.assert_close(acts["relu2"], ref_relu2)
    torch.testing.assert_close(out, net.fc(ref_relu2.mean((2, 3))))
    assert module_hook_count(net) == 0


@pytest.mark.parametrize("inplace", [False, True])
def test_capture_gradients_against_autograd(inplace: bool) -> None:
    net = ResidualNet(inplace=inplace).eval()
    x = _x(1)
    with capture(net, ["stem_bn", "block_bn2"], gradients=True) as acts:
        out = net(x)
        score = out[:, 2].sum()
        score.backward()
    # independent reference: autograd.grad w.r.t. tensors recomputed without hooks
    ref_net = ResidualNet(inplace=False).eval()
    ref_net.load_state_dict(net.state_dict())
    stem = ref_net.stem_bn(ref_net.stem(x))
    stem.retain_grad()
    h = torch.relu(stem)
    b2 = ref_net.block_bn2(
        ref_net.block_conv2(torch.relu(ref_net.block_bn1(ref_net.block_conv1(h))))
    )
    b2.retain_grad()
    ref_net.head(torch.relu(b2 + h).mean((2, 3)))[:, 2].sum().backward()
    torch.testing.assert_close(acts.gradients["stem_bn"], stem.grad)
    torch.testing.assert_close(acts.gradients["block_bn2"], b2.grad)


def test_reused_layer_raises_with_count_and_call_index_picks_a_call() -> None:
    net = ReusedReluNet().eval()
    x = _x()
    with capture(net, ["relu"]) as acts:
        net(x)
    with pytest.raises(LayerReusedError, match=r"'relu' ran 2 times"):
        acts["relu"]
    with capture(net, ["relu"], call_index=1) as acts:
        net(x)
    second = torch.relu(net.conv2(torch.relu(net.conv1(x))))
    torch.testing.assert_close(acts["relu"], second)
    assert module_hook_count(net) == 0


def test_unknown_layer_suggests_names() -> None:
    net = TinyConvNet()
    with pytest.raises(LayerNotFoundError) as err, capture(net, ["conv3"]):
        pass
    assert "conv1" in str(err.value) and "conv2" in str(err.value)
    assert isinstance(err.value, KeyError)


@pytest.mark.parametrize("kind", ["capture", "rules", "trace"])
def test_hooks_removed_after_exception_mid_forward(kind: str) -> None:
    net = TinyConvNet(inplace=True).eval()
    net.fail = True
    with pytest.raises(RuntimeError, match="on purpose"):
        if kind == "capture":
            with capture(net, ["relu1", "relu2"], gradients=True):
                net(_x())
        elif kind == "rules":
            with backward_rules(net, lambda m, i, o, g: g):
                net(_x().requires_grad_())
        else:
            with trace_calls(net):
                net(_x())
    assert module_hook_count(net) == 0


def _guided(
    module: nn.Module, inp: torch.Tensor, out: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    mask = (inp > 0) & (inp < 6) if isinstance(module, nn.ReLU6) else inp > 0
    return mask.to(grad.dtype) * grad.clamp(min=0)


def _guided_by_hand(net: nn.Module, x: torch.Tensor, cls: int, reused: bool) -> torch.Tensor:
    """Guided backprop written out as explicit matrix-free chain rule, layer by layer."""
    x = x.clone().requires_grad_()
    if reused:
        a1 = net.conv1(x)
        h1 = torch.relu(a1)
        a2 = net.conv2(h1)
        h2 = torch.relu(a2)
        out = net.fc(h2.flatten(1))
        g_h2 = torch.autograd.grad(out[:, cls].sum(), h2, retain_graph=True)[0]
        g_a2 = (a2 > 0).float() * g_h2.clamp(min=0)
        g_h1 = torch.autograd.grad(a2, h1, g_a2, retain_graph=True)[0]
        g_a1 = (a1 > 0).float() * g_h1.clamp(min=0)
        return torch.autograd.grad(a1, x, g_a1)[0]
    raise NotImplementedError


@pytest.mark.parametrize("inplace", [False, True])
def test_backward_rule_on_reused_relu_matches_hand_written_chain(inplace: bool) -> None:
    net = ReusedReluNet(inplace=inplace).eval()
    x = _x(3)
    before = snapshot(net)
    xr = x.clone().requires_grad_()
    with backward_rules(net, _guided) as chosen:
        out = net(xr)
        (grad,) = torch.autograd.grad(out[:, 1].sum(), xr)
    assert chosen == ["relu"]
    ref = _guided_by_hand(ReusedReluNet(inplace=False).eval(), x, 1, reused=True)
    torch.testing.assert_close(grad, ref)
    # the rule really acted: the plain gradient is different
    xp = x.clone().requires_grad_()
    (plain,) = torch.autograd.grad(net(xp)[:, 1].sum(), xp)
    assert not torch.allclose(plain, grad, atol=1e-4)
    assert_unchanged(net, before)
    assert module_hook_count(net) == 0


def test_backward_rule_relu6_mask_uses_true_input_with_inplace() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(inplace=True)).eval()
    with torch.no_grad():
        net[0].weight.mul_(20)  # push activations past 6 so the upper mask matters
    x = _x(4).requires_grad_()
    seen: list[torch.Tensor] = []

    def rule(
        module: nn.Module, inp: torch.Tensor, out: torch.Tensor, grad: torch.Tensor
    ) -> torch.Tensor:
        seen.append(inp.detach().clone())
        return _guided(module, inp, out, grad)

    with backward_rules(net, rule):
        y = net(x)
        y.sum().backward()
    pre = net[0](x).detach()
    torch.testing.assert_close(seen[0], pre)  # the pre-activation, not the clamped output
    assert (pre > 6).any() and (pre < 0).any()
    assert module_hook_count(net) == 0


def test_eval_mode_and_frozen_restore_flags() -> None:
    net = ResidualNet()
    net.train()
    net.block_bn1.eval()  # a mixed state must come back exactly
    net.head.weight.requires_grad_(False)
    before = snapshot(net)
    with eval_mode(net), frozen(net):
        assert not any(m.training for m in net.modules())
        assert not any(p.requires_grad for p in net.parameters())
    assert_unchanged(net, before)
    with pytest.raises(ValueError), eval_mode(net):
        raise ValueError
    assert_unchanged(net, before)


def test_trace_calls_counts_reuse_and_order() -> None:
    net = ReusedReluNet().eval()
    with trace_calls(net, leaves_only=True) as calls:
        net(_x())
    assert [c.name for c in sorted(calls, key=lambda c: c.order)] == [
        "conv1",
        "relu",
        "conv2",
        "relu",
        "fc",
    ]


def test_root_capture_gives_the_layer_gradient_and_records_nothing_below() -> None:
    model = TinyConvNet(seed=3).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = _x()
    with capture(model, ["conv2"]) as plain:
        out = model(x.clone().requires_grad_(True))
    (expected,) = torch.autograd.grad(out[:, 1].sum(), plain["conv2"])
    with capture(model, ["conv2"], root=True) as rooted:
        out_root = model(x)  # x does not require grad: only the part above conv2 is recorded
    torch.testing.assert_close(out_root, out.detach())
    act = rooted["conv2"]
    assert act.is_leaf and act.requires_grad
    (grad,) = torch.autograd.grad(out_root[:, 1].sum(), act)
    torch.testing.assert_close(grad, expected)
    # even an input that requires grad is cut off: the backward stops at the layer
    xg = x.clone().requires_grad_(True)
    with capture(model, ["conv2"], root=True):
        cut = model(xg)
    assert torch.autograd.grad(cut[:, 1].sum(), xg, allow_unused=True) == (None,)


def test_stopping_capture_ends_the_forward_at_the_layer() -> None:
    from convlens.hooks import forward_until_captured

    net = TinyConvNet().eval()
    x = _x()
    expected = torch.relu(net.conv1(x))
    net.fail = True  # the forward raises right after relu1: it must never get there
    try:
        with capture(net, ["relu1"], stop=True) as acts:
            assert forward_until_captured(net, x) is None
            torch.testing.assert_close(acts["relu1"], expected)
        assert module_hook_count(net) == 0
        with pytest.raises(RuntimeError, match="on purpose"), capture(net, ["relu2"], stop=True):
            forward_until_captured(net, x)  # relu2 comes after the failure: the error stands
    finally:
        net.fail = False
    with capture(net, ["relu1"]) as acts:
        assert forward_until_captured(net, x).shape == (2, 5)  # a normal capture runs through
