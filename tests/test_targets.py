from __future__ import annotations

import pytest
import torch

from convlens.errors import LayerNotFoundError, TargetError
from convlens.targets import Neuron, resolve_target

from helpers.tiny import tiny_model


def _x(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_class_targets_select_logits() -> None:
    model = tiny_model()
    x = _x()
    logits = model.module(x)
    scores, _ = resolve_target(model, 2).scores(model, x)
    torch.testing.assert_close(scores, logits[:, 2])
    scores, _ = resolve_target(model, [0, 1, 4]).scores(model, x)
    torch.testing.assert_close(scores, logits[[0, 1, 2], [0, 1, 4]])
    scores, _ = resolve_target(model, "c3").scores(model, x)
    torch.testing.assert_close(scores, logits[:, 3])


def test_default_target_is_predicted_class() -> None:
    model = tiny_model()
    x = _x()
    scores, t = resolve_target(model, None).scores(model, x)
    logits = model.module(x)
    assert torch.equal(t.classes, logits.argmax(1))
    torch.testing.assert_close(scores, logits.max(1).values)


def test_neuron_targets() -> None:
    model = tiny_model()
    x = _x()
    h = torch.relu(model.module.conv1(x))
    scores, _ = resolve_target(model, Neuron("relu1", 4, 5, 6)).scores(model, x)
    torch.testing.assert_close(scores, h[:, 4, 5, 6])
    scores, _ = resolve_target(model, "relu1:4").scores(model, x)
    torch.testing.assert_close(scores, h[:, 4].mean((1, 2)))
    assert Neuron.parse("blocks.5:12:7:3") == Neuron("blocks.5", 12, 7, 3)


def test_callable_target_and_errors() -> None:
    model = tiny_model()
    x = _x()
    scores, _ = resolve_target(model, lambda out: out[:, 0] - out[:, 1]).scores(model, x)
    logits = model.module(x)
    torch.testing.assert_close(scores, logits[:, 0] - logits[:, 1])
    with pytest.raises(TargetError, match=r"shape \(3,\)"):
        resolve_target(model, lambda out: out).scores(model, x)
    with pytest.raises(TargetError, match="2 entries but x has batch size 3"):
        resolve_target(model, [0, 1]).scores(model, x)
    with pytest.raises(TargetError, match="out of range"):
        resolve_target(model, 7)
    with pytest.raises(LayerNotFoundError, match="relu1"):
        resolve_target(model, Neuron("relu9", 0))
    with pytest.raises(TargetError, match="layer:channel"):
        resolve_target(model, "relu1:x")
