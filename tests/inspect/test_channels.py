"""Channel importance and pruning curves against brute-force references on tiny nets.

The references never use hooks: ablating a channel is a deep copy of the network with that
channel's convolution weights and bias set to zero (so its output channel is exactly 0), and
gradient x activation is computed on a hand-split forward pass.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import convlens
from convlens.errors import BadInputError, LayerNotFoundError
from convlens.hooks import edit_output
from convlens.inspect.channels import channel_importance, pruning_curve

from helpers.tiny import assert_unchanged, module_hook_count, snapshot


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


class Net(nn.Module):
    """conv1 (6 channels) -> relu -> conv2 -> relu -> pool -> fc: a plain feed-forward CNN."""

    def __init__(self, inplace: bool = False, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)

    def lower(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)

    def upper(self, a: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu2(self.conv2(self.relu1(a)))).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower(x))


class SkipNet(Net):
    """The same, with a skip connection from the input around conv1 (replay must not be used)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower(x) + x.mean(1, keepdim=True))


def _model(cls: type[Net] = Net, inplace: bool = False) -> convlens.Model:
    return convlens.wrap(
        cls(inplace=inplace), input_size=8, mean=0.5, std=0.25, labels=[f"c{k}" for k in range(4)]
    )


def _pixels(n: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _zeroed(module: Net, channels: list[int]) -> Net:
    twin = copy.deepcopy(module)
    with torch.no_grad():
        twin.conv1.weight[channels] = 0
        twin.conv1.bias[channels] = 0
    return twin


def _logits(module: nn.Module, model: convlens.Model, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(model.normalize(pixels))


@pytest.mark.parametrize("cls", [Net, SkipNet])
@pytest.mark.parametrize("inplace", [False, True])
def test_ablation_scores_equal_zeroing_each_channel_in_a_copy(
    cls: type[Net], inplace: bool
) -> None:
    model = _model(cls, inplace)
    pixels = _pixels()
    labels = torch.tensor([0, 1, 2, 3] * 3)
    before = snapshot(model.module)
    result = channel_importance(model, pixels, "conv1", method="ablation", labels=labels)
    clean = _logits(model.module, model, pixels)
    drops, acc_drops = [], []
    for c in range(6):
        ablated = _logits(_zeroed(model.module, [c]), model, pixels)
        drops.append(clean[torch.arange(12), labels] - ablated[torch.arange(12), labels])
        acc_drops.append(
            (clean.argmax(1) == labels).float().mean()
            - (ablated.argmax(1) == labels).float().mean()
        )
    expected = torch.stack(drops, 1)
    torch.testing.assert_close(result["score_drops"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result["scores"], expected.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result["accuracy_drops"], torch.stack(acc_drops), rtol=0, atol=1e-6)
    assert result["order"].tolist() == torch.argsort(expected.mean(0), descending=True).tolist()
    assert result.provenance["params"]["replay"] is (cls is Net)  # the skip is detected
    assert module_hook_count(model.module) == 0
    assert_unchanged(model.module, before)


def test_targets_default_to_the_predicted_classes_and_batching_does_not_matter() -> None:
    model = _model()
    pixels = _pixels(10)
    a = channel_importance(model, pixels, "conv1", batch_size=3)
    b = channel_importance(model, pixels, "conv1", batch_size=64)
    predicted = _logits(model.module, model, pixels).argmax(1)
    assert a["targets"].tolist() == predicted.tolist()
    torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)
    assert "accuracy_drops" not in a.tensors


def test_a_dead_channel_ranks_last_and_a_dominant_one_first() -> None:
    """A wrong criterion (e.g. ranking by weight norm or channel index) fails this: channel 2
    has the largest conv1 weights but nothing reads it; channel 4 carries the decision."""
    net = Net()
    with torch.no_grad():
        net.conv1.weight[2] *= 10
        net.conv2.weight[:, 2] = 0  # nobody reads conv1's channel 2
        net.conv2.weight[:, 4] *= 6
    model = convlens.wrap(net, input_size=8, mean=0.5, std=0.25)
    pixels = _pixels(16)
    for method in ("ablation", "taylor"):
        result = channel_importance(model, pixels, "relu1", method=method)
        assert result["order"][0] == 4, (method, result["order"])
        # no effect at all; a signed ablation score may go below 0 where removal helps
        assert float(result["scores"][2]) == pytest.approx(0.0, abs=1e-6)
        assert bool((result["scores"][[0, 1, 3, 4, 5]].abs() > 1e-3).all())
    assert channel_importance(model, pixels, "relu1", method="taylor")["order"][-1] == 2


def test_activation_and_taylor_equal_hand_computed_references() -> None:
    model = _model()
    net: Net = model.module  # type: ignore[assignment]
    pixels = _pixels(9)
    labels = torch.tensor([3, 1, 0, 2, 2, 1, 0, 3, 1])
    a = net.lower(model.normalize(pixels)).detach().requires_grad_(True)
    score = net.upper(a)[torch.arange(9), labels].sum()
    (g,) = torch.autograd.grad(score, a)
    taylor = (a * g).sum(dim=(2, 3)).abs().mean(0)
    mean_abs = a.detach().abs().mean(dim=(0, 2, 3))
    got_t = channel_importance(
        model, pixels, "conv1", method="taylor", labels=labels, batch_size=4
    )["scores"]
    got_a = channel_importance(model, pixels, "conv1", method="activation", labels=labels)["scores"]
    torch.testing.assert_close(got_t, taylor.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_a, mean_abs, rtol=1e-5, atol=1e-6)
    # on a skip net the replay is off and the same gradient comes from the full network
    skip = _model(SkipNet)
    s_net: Net = skip.module  # type: ignore[assignment]
    x = skip.normalize(pixels)
    a2 = s_net.lower(x).detach().requires_grad_(True)
    score2 = s_net.upper(a2 + x.mean(1, keepdim=True))[torch.arange(9), labels].sum()
    (g2,) = torch.autograd.grad(score2, a2)
    torch.testing.assert_close(
        channel_importance(skip, pixels, "conv1", method="taylor", labels=labels)["scores"],
        (a2 * g2).sum(dim=(2, 3)).abs().mean(0).detach(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_pruning_curve_equals_accuracy_of_zeroed_copies() -> None:
    model = _model()
    pixels = _pixels(16, seed=3)
    labels = _logits(model.module, model, pixels).argmax(1)
    labels[:3] = (labels[:3] + 1) % 4  # some wrong at the start, so accuracy is not 1
    order = [5, 0, 3, 1, 4, 2]
    result = pruning_curve(
        model,
        pixels,
        labels,
        "conv1",
        {"mine": order},
        counts=[0, 2, 4, 6],
        random_orders=3,
        seed=7,
        batch_size=20,
    )
    expected = [
        float(
            (_logits(_zeroed(model.module, order[:k]), model, pixels).argmax(1) == labels)
            .float()
            .mean()
        )
        for k in (0, 2, 4, 6)
    ]
    torch.testing.assert_close(result["accuracy"][0], torch.tensor(expected), rtol=0, atol=1e-6)
    gen = torch.Generator().manual_seed(7)
    randoms = [torch.randperm(6, generator=gen).tolist() for _ in range(3)]
    random_acc = [
        [
            float(
                (_logits(_zeroed(model.module, perm[:k]), model, pixels).argmax(1) == labels)
                .float()
                .mean()
            )
            for k in (0, 2, 4, 6)
        ]
        for perm in randoms
    ]
    torch.testing.assert_close(result["random"], torch.tensor(random_acc), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        result["accuracy"][1], torch.tensor(random_acc).mean(0), rtol=0, atol=1e-6
    )
    assert result.provenance["params"]["names"] == ["mine", "random"]


def test_edit_output_is_removed_after_an_exception() -> None:
    model = _model()
    with (
        pytest.raises(RuntimeError, match="boom"),
        edit_output(model.module, "conv1", lambda a: a * 0),
    ):
        assert module_hook_count(model.module) == 1
        raise RuntimeError("boom")
    assert module_hook_count(model.module) == 0


def test_bad_input() -> None:
    model = _model()
    pixels = _pixels(4)
    with pytest.raises(BadInputError, match="method"):
        channel_importance(model, pixels, "conv1", method="weights")
    with pytest.raises(LayerNotFoundError):
        channel_importance(model, pixels, "conv9")
    with pytest.raises(BadInputError, match="3 entries"):
        channel_importance(model, pixels, "conv1", labels=[0, 1, 2])
    with pytest.raises(BadInputError, match="pixels"):
        channel_importance(model, torch.rand(4, 3, 9, 9), "conv1")
    with pytest.raises(BadInputError, match="permutation"):
        pruning_curve(model, pixels, [0, 1, 2, 3], "conv1", {"bad": [0, 0, 1, 2, 3, 4]})
    with pytest.raises(BadInputError, match="labels"):
        pruning_curve(model, pixels, None, "conv1", {"x": list(range(6))})  # type: ignore[arg-type]
