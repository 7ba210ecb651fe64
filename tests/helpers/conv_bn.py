"""A small network whose every convolution is followed by a batch norm with trained-looking
statistics: fast mode folds both pairs (and stores the weights channels-last at 32x32)."""

from __future__ import annotations

import torch


class ConvBNNet(torch.nn.Module):
    """conv -> batch norm -> ReLU, twice, then a pooled linear layer to 4 classes."""

    def __init__(self, seed: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1, self.bn1 = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6)
        self.act1 = torch.nn.ReLU()
        self.conv2, self.bn2 = torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.act2 = torch.nn.ReLU()
        self.pool, self.fc = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Linear(8, 4)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        return self.fc(self.pool(h).flatten(1))
