"""Shared fixtures for the representation tests: a tiny tanh network and a generated folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens


class FieldNet(nn.Module):
    """conv3 -> tanh -> conv4/2 -> tanh -> conv3/2 (no padding) -> pool -> fc, 16x16 input.

    Tanh has no dead zone, so the gradient of a unit is nonzero on exactly its receptive
    field (clipped to the image): a brute-force oracle for the field. The even kernel with
    stride 2 gives a fractional field centre.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = nn.Tanh()
        self.conv2 = nn.Conv2d(4, 5, 4, stride=2, padding=1)
        self.act2 = nn.Tanh()
        self.conv3 = nn.Conv2d(5, 6, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(self.pool(self.conv3(x)).flatten(1))


@pytest.fixture(scope="module")
def field_model() -> convlens.Model:
    module = FieldNet().eval()
    return convlens.wrap(
        module,
        input_size=16,
        mean=0.5,
        std=0.25,
        resize=None,
        labels=["a", "b", "c"],
        name="field-net",
    )


@pytest.fixture(scope="module")
def field_relu_model() -> convlens.Model:
    """FieldNet with ReLU activations: guided backprop has modules to act on."""
    module = FieldNet().eval()
    module.act1, module.act2 = nn.ReLU(), nn.ReLU()
    return convlens.wrap(
        module,
        input_size=16,
        mean=0.5,
        std=0.25,
        resize=None,
        labels=["a", "b", "c"],
        name="field-net-relu",
    )


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """13 random 16x16 RGB PNGs (continuous values: no ties in any maximum)."""
    root = tmp_path_factory.mktemp("patches-images")
    rng = np.random.default_rng(7)
    paths = []
    for i in range(13):
        array = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        path = root / f"img{i:02d}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths
