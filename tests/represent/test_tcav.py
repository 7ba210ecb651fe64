"""TCAV on a network whose answer is known by construction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convlens
from convlens.errors import BadInputError
from convlens.represent.tcav import (
    concept_activation_vector,
    conceptual_sensitivity,
    tcav,
    tcav_score,
)


class ColourNet(nn.Module):
    """``feat`` = the mean of each colour channel; class 0 = +red - blue, class 1 = -red + blue,
    class 2 = green only. The gradient of every class at ``feat`` is its weight row."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(
                torch.tensor([[2.0, 0.0, -1.0], [-2.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flat(self.feat(x)))


def _model() -> convlens.Model:
    return convlens.wrap(
        ColourNet().eval(),
        input_size=8,
        mean=0.0,
        std=1.0,
        resize=None,
        labels=["red", "blue", "green"],
        name="colour",
    )


def _images(n: int, seed: int, red: float = 0.0) -> torch.Tensor:
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    x[:, 0] += red
    return x


def test_the_cav_points_toward_the_concept() -> None:
    cav, accuracy = concept_activation_vector(
        _model(), _images(20, 0, red=0.6), _images(20, 1), "feat"
    )
    assert accuracy == 1.0
    # the concept differs from random in the red channel only: the CAV is (about) +red
    assert float(cav[0]) > 0.9


def test_sensitivity_is_the_gradient_along_the_cav() -> None:
    model = _model()
    cav = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)
    s = conceptual_sensitivity(model, _images(4, 2), 0, "feat", cav)
    # grad of class 0 at feat is (2, 0, -1): 2 * 0.6 - 0.8 = 0.4 for every image
    assert torch.allclose(s, torch.full((4,), 0.4, dtype=torch.float64), atol=1e-6)
    assert tcav_score(model, _images(4, 2), 0, "feat", cav) == 1.0
    assert tcav_score(model, _images(4, 2), 1, "feat", cav) == 0.0


def test_tcav_finds_the_concept_a_class_uses_and_not_one_it_ignores() -> None:
    model = _model()
    images = _images(10, 3)
    concept = _images(15, 4, red=0.6)
    randoms = [_images(15, 10 + i) for i in range(12)]
    red = tcav(model, images, 0, "feat", concept, randoms)
    assert red.scores == [1.0] * 12 and red.significant
    anti = tcav(model, images, 1, "feat", concept, randoms)
    assert anti.scores == [0.0] * 12 and anti.significant
    # random-vs-random CAVs point anywhere: their scores spread
    assert 0 < sum(red.random_scores) < len(red.random_scores)
    # the green class ignores red: along the red CAV its score barely moves
    cav, _ = concept_activation_vector(model, concept, randoms[0], "feat")
    green = conceptual_sensitivity(model, images, 2, "feat", cav).abs().max()
    assert float(green) < 0.25 * float(
        conceptual_sensitivity(model, images, 0, "feat", cav).abs().min()
    )


def test_too_few_random_sets_are_refused() -> None:
    with pytest.raises(BadInputError, match="random sets"):
        tcav(_model(), _images(3, 0), 0, "feat", _images(4, 1), [_images(4, 2), _images(4, 3)])
