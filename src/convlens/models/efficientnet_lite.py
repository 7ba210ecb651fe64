"""EfficientNet-Lite0/1/2, written for readability and exact agreement with the TF weights.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
2019, arXiv:1905.11946; the Lite variants (TensorFlow TPU repository, 2020) drop
squeeze-and-excitation, use ReLU6 and keep the stem (32) and head (1280) widths fixed.

Each MBConv block is ``expand (1x1) -> depthwise (kxk) -> project (1x1)`` with a
residual connection when shape allows. Every activation is its own module, so each
has a dotted name (``blocks.3.depthwise_act``) and can be hooked separately.

The weights were trained with TensorFlow ``'SAME'`` padding, which for a stride-2
convolution pads one more row/column at the bottom/right than at the top/left.
:class:`SamePadConv2d` computes that padding from the input size on every call.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LITE_CONFIGS", "EfficientNetLite", "LiteConfig", "SamePadConv2d", "convert_state_dict"]


@dataclass(frozen=True)
class LiteConfig:
    """Scaling of one EfficientNet-Lite variant."""

    width: float
    depth: float
    resolution: int
    dropout: float


LITE_CONFIGS: dict[str, LiteConfig] = {
    "efficientnet_lite0": LiteConfig(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteConfig(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteConfig(1.1, 1.2, 260, 0.3),
}

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the seven stages.
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_BN_EPS = 1e-3


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count and round to a multiple of 8, never losing more than 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class SamePadConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``'SAME'`` padding (extra pixel bottom/right).

    For input length ``i``, stride ``s``, kernel ``k`` and dilation ``d``, the output
    length is ``ceil(i / s)`` and the total padding ``max((o - 1) s + (k - 1) d + 1 - i, 0)``,
    of which ``floor(total / 2)`` goes before and the rest after.
    """

    def same_padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(left, right, top, bottom)`` padding for an input of this size."""
        pads = []
        for size, k, s, d in zip((width, height), self.kernel_size, self.stride, self.dilation):
            out = math.ceil(size / s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return pads[0], pads[1], pads[2], pads[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.same_padding(x.shape[-2], x.shape[-1])
        if left == right and top == bottom:
            # symmetric (stride 1, odd kernel): the convolution pads by itself, without the
            # copy F.pad makes (same values bit for bit; 13 % of Lite0's forward at batch 8)
            padding: tuple[int, int] = (top, left)
        else:
            x, padding = F.pad(x, (left, right, top, bottom)), (0, 0)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual block: expand, depthwise, project (no squeeze-excite in Lite)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = SamePadConv2d(in_ch, mid, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(mid, eps=_BN_EPS)
            self.expand_act = nn.ReLU6()
        self.depthwise_conv = SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self.depthwise_act = nn.ReLU6()
        self.project_conv = SamePadConv2d(mid, out_ch, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = self.expand_act(self.expand_bn(self.expand_conv(h)))
        h = self.depthwise_act(self.depthwise_bn(self.depthwise_conv(h)))
        h = self.project_bn(self.project_conv(h))
        # Drop-connect is a training-time regulariser; convlens never trains these weights.
        return h + x if self.residual else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier with readable layer names.

    Layers: ``stem_conv, stem_bn, stem_act, blocks.0 ... blocks.N-1, head_conv,
    head_bn, head_act, pool, dropout, classifier``.
    """

    def __init__(self, config: LiteConfig, num_classes: int = 1000) -> None:
        super().__init__()
        self.config = config
        self.stem_conv = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self.stem_bn = nn.BatchNorm2d(32, eps=_BN_EPS)
        self.stem_act = nn.ReLU6()
        blocks: list[nn.Module] = []
        last = len(_STAGES) - 1
        for index, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(_STAGES):
            in_ch = 32 if index == 0 else _round_channels(in_ch, config.width)
            out_ch = _round_channels(out_ch, config.width)
            # Lite keeps the first and last stage's depth fixed.
            n = repeats if index in (0, last) else math.ceil(repeats * config.depth)
            for i in range(n):
                blocks.append(
                    MBConvBlock(
                        in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else 1, expand
                    )
                )
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = SamePadConv2d(out_ch, 1280, 1, bias=False)
        self.head_bn = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self.head_act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        x = self.blocks(x)
        x = self.head_act(self.head_bn(self.head_conv(x)))
        x = self.pool(x).flatten(1)
        return self.classifier(self.dropout(x))


_RENAMES = [
    ("_conv_stem.", "stem_conv."),
    ("_bn0.", "stem_bn."),
    ("_conv_head.", "head_conv."),
    ("_bn1.", "head_bn."),
    ("_fc.", "classifier."),
]
_BLOCK_RENAMES = [
    ("_expand_conv.", "expand_conv."),
    ("_bn0.", "expand_bn."),
    ("_depthwise_conv.", "depthwise_conv."),
    ("_bn1.", "depthwise_bn."),
    ("_project_conv.", "project_conv."),
    ("_bn2.", "project_bn."),
]


def convert_state_dict(state: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Rename the published state dict (``_blocks.3._bn1.weight``) to convlens names."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        if key.startswith("_blocks."):
            _, index, rest = key.split(".", 2)
            rest = "_" + rest.lstrip("_")
            for old, new in _BLOCK_RENAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            out[f"blocks.{index}.{rest}"] = value
            continue
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out
