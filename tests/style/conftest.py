"""Shared set-up of the fast style tests: one thread, a tiny RGB CNN as the loss model."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


class LossNet(nn.Module):
    """Three conv stages (strides 1, 2, 4) and a head: enough layers for content and style."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(12, 16, 3, stride=2, padding=1)
        self.act3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act3(self.conv3(self.act2(self.conv2(self.act1(self.conv1(x))))))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture(scope="module")
def loss_model():
    import convlens

    return convlens.wrap(
        LossNet(), input_size=32, mean=0.5, std=0.25, resize=None, name="style_loss_net"
    )
