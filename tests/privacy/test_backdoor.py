"""BadNets poisoning: the trigger lands where and on as many examples as asked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.errors import BadInputError
from convlens.models.small import load_dataset
from convlens.privacy.backdoor import Trigger, attack_success, default_trigger, poison


def test_default_triggers_are_small_checkerboards_in_the_corner() -> None:
    d, m = default_trigger("digits", target=7), default_trigger("mnist")
    assert d.size == (3, 3) and (d.top, d.left) == (5, 5) and d.target == 7
    assert m.size == (4, 4) and m.top + 4 <= 28 and m.left + 4 <= 28
    assert d.pattern.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    with pytest.raises(BadInputError):
        default_trigger("digits", target=10)


@pytest.mark.parametrize("rate", [0.0, 0.03, 0.1])
def test_poison_stamps_the_asked_fraction_where_asked(rate: float) -> None:
    x, y = load_dataset("digits", "train")
    trigger = default_trigger("digits", target=2)
    xp, yp, poisoned = poison(x, y, trigger, rate, seed=3)
    assert int(poisoned.sum()) == round(rate * len(y))
    assert (y[poisoned] != 2).all() and (
        yp[poisoned] == 2
    ).all()  # drawn from other classes, relabelled
    assert torch.equal(yp[~poisoned], y[~poisoned]) and torch.equal(xp[~poisoned], x[~poisoned])
    inside = trigger.mask(8, 8)
    assert (xp[poisoned][:, 0][:, inside] == trigger.pattern.flatten()).all()  # the patch, exactly
    assert torch.equal(
        xp[poisoned][:, 0][:, ~inside], x[poisoned][:, 0][:, ~inside]
    )  # nothing else
    again = poison(x, y, trigger, rate, seed=3)[2]
    assert torch.equal(again, poisoned)  # seeded
    assert (x.shape == xp.shape and not torch.equal(xp, x)) or rate == 0


def test_poison_rejects_impossible_requests() -> None:
    x, y = torch.zeros(10, 1, 8, 8), torch.zeros(10, dtype=torch.int64)
    with pytest.raises(BadInputError):
        poison(x, y, default_trigger("digits"), 0.5)  # every label is already the target
    with pytest.raises(BadInputError):
        poison(x, y, default_trigger("digits"), 1.5)
    with pytest.raises(BadInputError):
        Trigger(torch.ones(3, 3), 6, 6, 0).apply(x)  # does not fit


class _CornerDetector(nn.Module):
    """Says 0 when pixel (7, 7) is bright (normalised > 0.5), else 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x[:, 0, 7, 7] > 0.5).float()
        return torch.stack([bright, 1 - bright], dim=1) @ torch.eye(2, 10)


def test_attack_success_counts_non_target_images_only() -> None:
    x = torch.zeros(20, 1, 8, 8)
    labels = torch.arange(20) % 10  # 18 non-target images
    assert (
        attack_success(_CornerDetector(), "digits", x, labels, Trigger(torch.ones(1, 1), 7, 7, 0))
        == 1.0
    )
    assert (
        attack_success(_CornerDetector(), "digits", x, labels, Trigger(torch.zeros(1, 1), 7, 7, 0))
        == 0.0
    )
    x[:9, 0, 7, 7] = 1  # already bright in 9 images: 8 of them non-target; a dark trigger undoes it
    assert attack_success(
        _CornerDetector(), "digits", x, labels, Trigger(torch.ones(1, 1), 6, 6, 0)
    ) == pytest.approx(8 / 18)
