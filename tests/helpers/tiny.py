"""Tiny models for hook and invariant tests.

Every model takes ``inplace`` so results can be compared with in-place and out-of-place
activations (STYLE.md 3.5). ``ReusedReluNet`` calls one ``nn.ReLU`` twice, like
torchvision's ``BasicBlock``; ``ResidualNet`` has a skip connection and BatchNorm.
"""

from __future__ import annotations

import torch
from torch import nn

import convlens


class TinyConvNet(nn.Module):
    """conv -> relu -> conv -> relu6 -> pool -> linear, 3x16x16 input, 5 classes."""

    def __init__(self, inplace: bool = False, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU6(inplace=inplace)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)
        self.fail = False
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.bn2.running_mean.copy_(torch.randn(8, generator=g) * 0.1)
            self.bn2.running_var.copy_(torch.rand(8, generator=g) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        if self.fail:
            raise RuntimeError("forward failed on purpose")
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


class ReusedReluNet(nn.Module):
    """One ``nn.ReLU`` module used twice in a forward pass."""

    def __init__(self, inplace: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.fc(x.flatten(1))


class ResidualNet(nn.Module):
    """conv-bn-relu, a residual block with BatchNorm and a shared in-block ReLU, head."""

    def __init__(self, inplace: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(6)
        self.stem_relu = nn.ReLU(inplace=inplace)
        self.block_conv1 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.block_bn1 = nn.BatchNorm2d(6)
        self.block_conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.block_bn2 = nn.BatchNorm2d(6)
        self.block_relu = nn.ReLU(inplace=inplace)
        self.head = nn.Linear(6, 5)
        with torch.no_grad():
            for bn in (self.stem_bn, self.block_bn1, self.block_bn2):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        identity = x
        out = self.block_relu(self.block_bn1(self.block_conv1(x)))
        out = self.block_bn2(self.block_conv2(out))
        out = self.block_relu(out + identity)  # the block's ReLU runs twice, as in ResNet
        return self.head(out.mean(dim=(2, 3)))


def tiny_model(kind: str = "conv", inplace: bool = False, seed: int = 0) -> convlens.Model:
    """A tiny network wrapped as a convlens Model (16x16 RGB, 5 classes)."""
    module = {"conv": TinyConvNet, "reused": ReusedReluNet, "residual": ResidualNet}[kind](
        inplace=inplace, seed=seed
    )
    module.eval()
    return convlens.wrap(
        module,
        input_size=16,
        mean=0.5,
        std=0.25,
        resize=None,
        labels=[f"c{i}" for i in range(5)],
        name=f"tiny-{kind}",
    )


def module_hook_count(module: nn.Module) -> int:
    """Number of forward/backward (pre-)hooks registered anywhere in the module."""
    total = 0
    for m in module.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks)
        total += len(m._backward_hooks) + len(m._backward_pre_hooks)
    return total


def snapshot(module: nn.Module) -> dict[str, object]:
    """Everything a method must leave unchanged on a model."""
    return {
        "ids": {name: id(m) for name, m in module.named_modules()},
        "state": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "training": {name: m.training for name, m in module.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in module.named_parameters()},
        "inplace": {name: getattr(m, "inplace", None) for name, m in module.named_modules()},
    }


def assert_unchanged(module: nn.Module, before: dict[str, object]) -> None:
    after = snapshot(module)
    assert after["ids"] == before["ids"], "module objects changed"
    assert after["training"] == before["training"], "training flags changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad changed"
    assert after["inplace"] == before["inplace"], "inplace flags changed"
    for k, v in before["state"].items():  # type: ignore[union-attr]
        assert torch.equal(after["state"][k], v), f"state {k} changed"  # type: ignore[index]
