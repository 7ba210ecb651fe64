"""A user's model file, written by tests the way a user writes one.

``NET_SOURCE`` is a small CNN with the parts that trip attribution tools: one in-place
``nn.ReLU`` reused across the network (as torchvision's ResNet blocks do), a residual
block and batch norm with non-trivial running statistics. ``write_user_model`` puts it in
a folder with labels, a state dict and a 16x16 image.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

NET_SOURCE = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, channels, relu):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = relu  # the network's one ReLU, reused

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Net(nn.Module):
    def __init__(self, inplace=True, classes=4):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=inplace)
        self.block = Block(8, self.relu)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.relu(self.bn(self.stem(x)))
        x = self.block(x)
        return self.fc(self.pool(x).flatten(1))


def build(inplace=True):
    torch.manual_seed(0)
    net = Net(inplace)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net


def segmenter():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 3, 3, padding=1))


def broken():
    raise ValueError("no GPU here")
"""

LABELS = ["cat", "dog", "bird", "fish"]
SIZE = 16
MEAN, STD = 0.5, 0.25


def write_user_model(folder: Path) -> dict[str, Path]:
    """``net.py``, ``labels.txt``, ``ckpt.pt`` (other weights than ``build()``'s) and ``img.png``."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.py").write_text(NET_SOURCE, encoding="utf-8")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    module = import_user_file(folder / "net.py")
    trained = module.build()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    torch.save(trained.state_dict(), folder / "ckpt.pt")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)).save(folder / "img.png")
    return {
        "net": folder / "net.py",
        "labels": folder / "labels.txt",
        "weights": folder / "ckpt.pt",
        "image": folder / "img.png",
    }


def import_user_file(path: Path) -> ModuleType:
    """Import the file independently of convlens (the test's own reference copy)."""
    name = f"_test_user_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def model_flags(files: dict[str, Path]) -> list[str]:
    """The command-line flags that describe the model in ``files``."""
    return [
        "--model", f"{files['net']}:build", "--weights", str(files["weights"]), "--input-size", str(SIZE),
        "--mean", str(MEAN), "--std", str(STD), "--labels", str(files["labels"]),
    ]  # fmt: skip
