"""Tests of the shared training loop: determinism, modes, optimisation, augmentation."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import BadInputError
from convlens.models.training import (
    TrainConfig,
    evaluate_accuracy,
    make_generator,
    predict_logits,
    random_translate,
    seeded,
    set_seed,
    torch_threads,
    train_classifier,
)


def _blobs(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated Gaussian blobs as 1x4x4 'images' (class k is bright in quadrant k)."""
    g = make_generator(seed)
    y = torch.arange(n) % 3
    x = 0.3 * torch.randn(n, 1, 4, 4, generator=g)
    for k in range(3):
        r, c = divmod(k, 2)
        x[y == k, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] += 2.0
    return x, y.long()


def _net(dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 4, 3, padding=1),
            act1=nn.ReLU(),
            flatten=nn.Flatten(),
            drop=nn.Dropout(dropout),
            classifier=nn.Linear(64, 3),
        )
    )


def _train_fresh(config: TrainConfig, dropout: float = 0.5) -> nn.Module:
    x, y = _blobs()
    with seeded(123):
        module = _net(dropout)
    train_classifier(module, x, y, config)
    return module


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- determinism --------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_same_seed_gives_bit_identical_weights(optimizer: str) -> None:
    # Dropout and augmentation both draw random numbers: all must come from the seed.
    config = TrainConfig(
        epochs=2, batch_size=16, lr=1e-2, optimizer=optimizer, seed=7, augment=random_translate(1)
    )
    torch.manual_seed(999)  # the caller's global state must not matter
    first = _train_fresh(config)
    torch.manual_seed(12345)
    second = _train_fresh(config)
    assert _states_equal(first, second)


def test_different_seed_gives_different_weights() -> None:
    a = _train_fresh(TrainConfig(epochs=1, batch_size=16, seed=0))
    b = _train_fresh(TrainConfig(epochs=1, batch_size=16, seed=1))
    assert not _states_equal(a, b)


def test_training_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    _train_fresh(TrainConfig(epochs=1, batch_size=16, seed=3))
    assert torch.equal(torch.rand(4), expected)


def test_seeded_restores_global_state_and_set_seed_seeds_it() -> None:
    set_seed(11)
    a = torch.rand(3)
    set_seed(11)
    with seeded(0):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), a)
    with seeded(0):
        assert torch.equal(torch.rand(3), inside)


# -- learning and history ---------------------------------------------------------------
def test_learns_separable_blobs_and_reports_history() -> None:
    x, y = _blobs()
    xv, yv = _blobs(90, seed=1)
    with seeded(0):
        module = _net()
    calls: list[tuple[int, int]] = []
    history = train_classifier(
        module,
        x,
        y,
        TrainConfig(epochs=4, batch_size=32, lr=1e-2),
        x_val=xv,
        y_val=yv,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert (
        len(history["loss"]) == len(history["train_accuracy"]) == len(history["val_accuracy"]) == 4
    )
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] == 1.0
    # The reported validation accuracy is the one evaluate_accuracy gives for the final weights.
    assert history["val_accuracy"][-1] == evaluate_accuracy(module, xv, yv)
    # The reported mean loss of the first epoch is cross-entropy, not another loss.
    assert 0.0 < history["loss"][0] < 2 * torch.log(torch.tensor(3.0)).item()


def test_cosine_schedule_decays_to_zero() -> None:
    x, y = _blobs(64)
    module = _net()
    config = TrainConfig(epochs=2, batch_size=16, lr=0.1, optimizer="sgd", lr_schedule="cosine")
    seen: list[float] = []
    original = torch.optim.SGD.step

    def spy(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", spy)
        train_classifier(module, x, y, config)
    total = len(seen)
    assert total == 8
    expected = [
        0.05 * (1 + torch.cos(torch.tensor(torch.pi * i / total)).item()) for i in range(total)
    ]
    assert seen == pytest.approx(expected, rel=1e-6)


def test_only_trainable_parameters_change() -> None:
    x, y = _blobs(64)
    module = _net()
    module.conv1.requires_grad_(False)
    frozen_before = module.conv1.weight.clone()
    head_before = module.classifier.weight.clone()
    train_classifier(module, x, y, TrainConfig(epochs=1, batch_size=16, weight_decay=0.1))
    assert torch.equal(module.conv1.weight, frozen_before)
    assert not torch.equal(module.classifier.weight, head_before)


def test_training_ends_in_eval_mode_even_after_an_error() -> None:
    x, y = _blobs(32)
    module = _net()
    module.train()
    modes: list[bool] = []
    module.register_forward_pre_hook(lambda m, _inp: modes.append(m.training))
    train_classifier(module, x, y, TrainConfig(epochs=1, batch_size=16))
    assert modes and all(modes)  # trained in train mode
    assert not any(m.training for m in module.modules())

    def broken(xb: torch.Tensor, _g: torch.Generator) -> torch.Tensor:
        raise RuntimeError("augmentation failed")

    module.train()
    with pytest.raises(RuntimeError, match="augmentation failed"):
        train_classifier(module, x, y, TrainConfig(epochs=1, augment=broken))
    assert not module.training


def test_num_threads_applies_during_training_and_is_restored() -> None:
    x, y = _blobs(32)
    module = _net()
    seen: list[int] = []
    module.register_forward_pre_hook(lambda _m, _i: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    with torch_threads(before + 1):  # a count different from 1, to see the switch
        train_classifier(module, x, y, TrainConfig(epochs=1, batch_size=16, num_threads=1))
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    assert seen == [1, 1]
    with torch_threads(None):
        assert torch.get_num_threads() == before


# -- evaluation -------------------------------------------------------------------------
def test_evaluate_accuracy_matches_a_hand_count_and_restores_modes() -> None:
    # A fixed linear classifier: class = argmax of (x0, x1, x2).
    module = nn.Sequential(
        OrderedDict(flatten=nn.Flatten(), drop=nn.Dropout(0.9), classifier=nn.Linear(3, 3))
    )
    with torch.no_grad():
        module.classifier.weight.copy_(torch.eye(3))
        module.classifier.bias.zero_()
    x = torch.tensor([[3.0, 0, 0], [0, 2, 0], [0, 0, 1], [1, 0, 0], [0, 5, 0]])
    y = torch.tensor([0, 1, 0, 0, 2])  # rows 2 and 4 are wrong -> 3/5
    module.train()
    module.drop.eval()  # mixed flags must come back exactly, not as one module.train(True)
    assert evaluate_accuracy(module, x, y, batch_size=2) == pytest.approx(0.6)
    assert module.training and module.classifier.training and not module.drop.training


def test_predict_logits_batches_in_order_in_eval_mode() -> None:
    module = _net(dropout=0.5)
    x, _ = _blobs(37)
    module.train()
    logits = predict_logits(module, x, batch_size=8)
    module.eval()
    with torch.no_grad():
        expected = module(x)
    assert logits.shape == (37, 3)
    assert not logits.requires_grad
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)


# -- augmentation -----------------------------------------------------------------------
def test_random_translate_shifts_each_image_within_range() -> None:
    n, s = 200, 2
    x = torch.zeros(n, 2, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre, in both channels
    out = random_translate(s)(x, make_generator(0))
    assert out.shape == x.shape
    positions = set()
    for img in out:
        assert torch.equal(img[0], img[1])  # both channels moved together
        (ys, xs) = torch.nonzero(img[0], as_tuple=True)
        assert len(ys) == 1 and abs(int(ys) - 4) <= s and abs(int(xs) - 4) <= s
        positions.add((int(ys), int(xs)))
    assert len(positions) == (2 * s + 1) ** 2  # every shift is drawn
    # Same generator seed -> same shifts; the edge is replicated, not zero-filled.
    torch.testing.assert_close(random_translate(s)(x, make_generator(0)), out, rtol=0, atol=0)
    ones = torch.full((3, 1, 5, 5), -0.4)
    assert torch.equal(random_translate(2)(ones, make_generator(1)), ones)


# -- validation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"weight_decay": -1.0},
        {"optimizer": "rmsprop"},
        {"lr_schedule": "step"},
        {"num_threads": 0},
    ],
)
def test_train_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(BadInputError, match=next(iter(kwargs))):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_train_classifier_rejects_mismatched_inputs() -> None:
    module = _net()
    x, y = _blobs(16)
    with pytest.raises(BadInputError, match="16 inputs but 15 labels"):
        train_classifier(module, x, y[:15])
    with pytest.raises(BadInputError, match="int64"):
        train_classifier(module, x, y.float())
    with pytest.raises(BadInputError, match="x_val"):
        train_classifier(module, x, y, x_val=x)
    module.requires_grad_(False)
    with pytest.raises(BadInputError, match="requires_grad"):
        train_classifier(module, x, y)


def test_loss_is_cross_entropy() -> None:
    # One full-batch SGD step without momentum effects equals a step on F.cross_entropy.
    x, y = _blobs(48)
    with seeded(0):
        a = _net()
    b = _net()
    b.load_state_dict(a.state_dict())
    train_classifier(a, x, y, TrainConfig(epochs=1, batch_size=48, lr=0.1, optimizer="sgd"))
    loss = F.cross_entropy(b(x), y)
    loss.backward()
    with torch.no_grad():
        for p in b.parameters():
            p -= 0.1 * p.grad
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
