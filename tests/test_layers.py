"""Receptive fields from layers.py against gradient supports on the real network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.hooks import backward_rules, capture, eval_mode
from convlens.layers import layer_table

from helpers.tiny import ResidualNet, module_hook_count


def gradient_receptive_field(
    net: nn.Module, layer: str, size: int, channels: int = 3
) -> tuple[tuple[int, int], tuple[float, float], tuple[int, int]]:
    """Support of d(layer[:, :, y, x]) / d(input) for the central unit, with every activation's
    backward set to identity (so dead units cannot hide pixels).

    Returns (support size, support centre, unit position)."""
    x = torch.randn(1, channels, size, size, dtype=next(net.parameters()).dtype, requires_grad=True)
    with eval_mode(net), backward_rules(net, lambda m, i, o, g: g), capture(net, [layer]) as acts:
        net(x)
        a = acts[layer]
        y, xq = a.shape[-2] // 2, a.shape[-1] // 2
        (g,) = torch.autograd.grad(a[0, :, y, xq].sum(), x)
    nz = (g[0].abs().sum(0) > 0).nonzero()
    (y0, x0), (y1, x1) = nz.min(0).values.tolist(), nz.max(0).values.tolist()
    return (y1 - y0 + 1, x1 - x0 + 1), ((y0 + y1) / 2, (x0 + x1) / 2), (y, xq)


def _check(
    net: nn.Module, layers: list[str], size: int, dtype: torch.dtype = torch.float64
) -> None:
    net = net.to(dtype).eval()
    table = {r.name: r for r in layer_table(net, torch.zeros(1, 3, size, size, dtype=dtype))}
    for name in layers:
        (sy, sx), (cy, cx), (uy, ux) = gradient_receptive_field(net, name, size)
        rf = table[name].receptive_field
        assert rf is not None and not rf.is_global, name
        assert rf.size == (sy, sx), (name, rf.size, (sy, sx))
        assert rf.offset[0] + uy * rf.stride[0] == pytest.approx(cy), name
        assert rf.offset[1] + ux * rf.stride[1] == pytest.approx(cx), name


def test_receptive_fields_of_efficientnet_lite0_match_gradients() -> None:
    from convlens.models.efficientnet_lite import LITE_CONFIGS, EfficientNetLite

    torch.manual_seed(0)
    net = EfficientNetLite(LITE_CONFIGS["efficientnet_lite0"])
    # stride-2 TF 'SAME' convs shift the centre; residual sums; 3x3 and 5x5 depthwise
    _check(
        net,
        [
            "stem_conv",
            "blocks.0",
            "blocks.1.depthwise_conv",
            "blocks.2",
            "blocks.3.project_bn",
            "blocks.5",
            "blocks.6.depthwise_act",
        ],
        224,
        torch.float32,
    )
    assert module_hook_count(net) == 0


def test_receptive_fields_with_pooling_dilation_and_padding() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(4, 4, 3, dilation=2, padding=2),
        nn.ZeroPad2d((1, 0, 1, 0)),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding="same"),
    )
    # MaxPool's gradient goes to one input per window: use a smooth stand-in with the same geometry
    net[2] = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True)
    _check(net, ["0", "2", "3", "4", "5", "6", "7"], 96)


def test_residual_table_and_global_layers() -> None:
    net = ResidualNet()
    table = {r.name: r for r in layer_table(net, torch.zeros(1, 3, 16, 16))}
    assert table["block_relu"].calls == 2
    assert table["block_bn2"].receptive_field.size == (7, 7)
    assert table["head"].receptive_field.is_global
    assert table["head"].output_shape == (5,)
    _check(ResidualNet(), ["stem_relu", "block_bn1", "block_bn2"], 16)
