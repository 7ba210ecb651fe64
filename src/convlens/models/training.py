"""A small, seeded training loop for classifiers, shared by everything convlens trains.

The small zoo models (:mod:`convlens.models.small`), shadow models for membership
inference, backdoor retraining and fast style networks all train through
:func:`train_classifier`, so they share one definition of "same seed, same weights":

- the batch order and every random number an augmentation draws come from a
  ``torch.Generator`` seeded with ``TrainConfig.seed``;
- modules that use the global torch RNG during training (dropout) run inside a forked,
  seeded RNG state, so training is repeatable and the caller's global RNG is untouched.

On CPU the same seed gives bit-identical weights (with the same thread count).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.errors import BadInputError
from convlens.hooks import eval_mode
from convlens.progress import ProgressFn

__all__ = [
    "Augment",
    "TrainConfig",
    "evaluate_accuracy",
    "make_generator",
    "predict_logits",
    "random_translate",
    "seeded",
    "set_seed",
    "torch_threads",
    "train_classifier",
]

#: A batch augmentation: ``augment(x, generator) -> x'`` with the same shape, drawing
#: every random number from ``generator`` (a CPU ``torch.Generator``).
Augment = Callable[[Tensor, torch.Generator], Tensor]

_OPTIMIZERS = ("adam", "sgd")
_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_classifier`.

    Parameters
    ----------
    epochs
        Passes over the training set (at least 1).
    batch_size
        Examples per optimiser step; the last batch of an epoch may be smaller.
    lr
        Learning rate.
    weight_decay
        L2 penalty passed to the optimiser.
    optimizer
        ``"adam"`` or ``"sgd"`` (momentum 0.9).
    seed
        Seeds the batch order, the augmentation and any global-RNG use (dropout).
    augment
        Optional batch augmentation, applied to each training batch (see :data:`Augment`).
    num_threads
        torch intra-op threads while training, restored afterwards (``None``: leave torch's
        setting). Small models train fastest on 1 thread; more threads on a busy machine can
        make them tens of times slower (OpenMP threads waiting on each other).
    lr_schedule
        ``"constant"`` or ``"cosine"`` (per-step cosine decay from ``lr`` to 0; Loshchilov &
        Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017, without restarts).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    seed: int = 0
    augment: Augment | None = None
    lr_schedule: str = "constant"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise BadInputError(f"TrainConfig epochs={self.epochs!r} must be an int >= 1")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise BadInputError(f"TrainConfig batch_size={self.batch_size!r} must be an int >= 1")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise BadInputError(f"TrainConfig lr={self.lr!r} must be a finite number > 0")
        if not (isinstance(self.weight_decay, int | float) and self.weight_decay >= 0):
            raise BadInputError(
                f"TrainConfig weight_decay={self.weight_decay!r} must be a number >= 0"
            )
        if self.optimizer not in _OPTIMIZERS:
            raise BadInputError(
                f"TrainConfig optimizer={self.optimizer!r} is not supported; use one of {', '.join(_OPTIMIZERS)}"
            )
        if self.num_threads is not None and (
            not isinstance(self.num_threads, int) or self.num_threads < 1
        ):
            raise BadInputError(
                f"TrainConfig num_threads={self.num_threads!r} must be None or an int >= 1"
            )
        if self.lr_schedule not in _SCHEDULES:
            raise BadInputError(
                f"TrainConfig lr_schedule={self.lr_schedule!r} is not supported; use one of {', '.join(_SCHEDULES)}"
            )


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (independent of the global RNG).

    Parameters
    ----------
    seed
        The seed.
    device
        Device of the generator (CPU by default; random numbers for indexing and
        augmentation are drawn on CPU and moved).

    Returns
    -------
    torch.Generator
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def set_seed(seed: int) -> None:
    """Seed torch's global RNG (all devices) and Python's ``random``, for scripts.

    Library code prefers :func:`seeded` or :func:`make_generator`, which leave the
    caller's global state alone. NumPy's global RNG is deliberately not touched:
    convlens never draws from it.

    Parameters
    ----------
    seed
        The seed.
    """
    import random

    random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int, device: str | torch.device | None = None) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the previous RNG state after.

    Use it around module construction (weight initialisation) or code that calls
    dropout, so results repeat without changing the caller's random stream.

    Parameters
    ----------
    seed
        The seed.
    device
        An accelerator device whose RNG state is also forked and restored (CPU always is).
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cpu":
        fork = torch.random.fork_rng(devices=[])
    else:
        index = dev.index if dev.index is not None else 0
        fork = torch.random.fork_rng(devices=[index], device_type=dev.type)
    with fork:
        torch.manual_seed(seed)
        yield


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)``, restoring the previous count after.

    The setting is process-wide: other threads using torch meanwhile also see ``n``.

    Parameters
    ----------
    n
        Intra-op thread count; ``None`` changes nothing.
    """
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _check_xy(x: Any, y: Any, what: str) -> None:
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        got = (
            f"a {x.dtype} tensor of shape {tuple(x.shape)}"
            if isinstance(x, Tensor)
            else type(x).__name__
        )
        raise BadInputError(
            f"{what} inputs: got {got}; pass a float tensor (N, ...) with a batch dimension"
        )
    if not isinstance(y, Tensor) or y.ndim != 1 or y.dtype != torch.int64:
        got = (
            f"a {y.dtype} tensor of shape {tuple(y.shape)}"
            if isinstance(y, Tensor)
            else type(y).__name__
        )
        raise BadInputError(
            f"{what} labels: got {got}; pass an int64 tensor of shape (N,) with class indices"
        )
    if x.shape[0] != y.shape[0]:
        raise BadInputError(
            f"{what}: {x.shape[0]} inputs but {y.shape[0]} labels; pass one label per input"
        )
    if x.shape[0] == 0:
        raise BadInputError(f"{what}: got 0 examples; pass at least one")


def train_classifier(
    module: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    config: TrainConfig | None = None,
    *,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    progress: ProgressFn | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train ``module`` in place with cross-entropy on ``(x_train, y_train)``.

    The module is put in train mode while it learns and left in eval mode when this
    returns (also after an exception). Only parameters with ``requires_grad`` are
    optimised, so freezing layers first fine-tunes the rest.

    Parameters
    ----------
    module
        A classifier returning logits ``(N, n_classes)``. It is trained in place.
    x_train, y_train
        Inputs (float, ``(N, ...)``, as the module expects them) and int64 class indices ``(N,)``.
        They may live on any device; batches are moved to ``device``.
    config
        Hyper-parameters and seed (default ``TrainConfig()``).
    x_val, y_val
        Optional held-out set, evaluated after every epoch.
    progress
        Called as ``progress(epochs_done, epochs)`` after every epoch.
    device
        Device to train on. The module is moved there (``module.to(device)``); by default
        it stays where its parameters are.

    Returns
    -------
    dict
        ``loss`` (mean training loss per epoch), ``train_accuracy`` (accuracy on the
        augmented training batches during each epoch), ``val_accuracy`` (per epoch; empty
        without a validation set), ``epochs`` and ``seconds``.

    Raises
    ------
    BadInputError
        Inputs and labels disagree in length or type, only one of ``x_val``/``y_val`` is
        given, or the module has no trainable parameters.
    """
    config = config if config is not None else TrainConfig()
    _check_xy(x_train, y_train, "training")
    if (x_val is None) != (y_val is None):
        raise BadInputError("train_classifier got only one of x_val / y_val; pass both or neither")
    if x_val is not None:
        _check_xy(x_val, y_val, "validation")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise BadInputError(
            "train_classifier: the module has no parameters with requires_grad=True; unfreeze some"
        )
    if device is not None:
        module.to(device)
    dev = _module_device(module)
    optimizer = _make_optimizer(params, config)
    steps_per_epoch = math.ceil(x_train.shape[0] / config.batch_size)
    scheduler = _make_scheduler(optimizer, config, steps_per_epoch)
    generator = make_generator(config.seed)
    history: dict[str, Any] = {"loss": [], "train_accuracy": [], "val_accuracy": []}
    start = time.perf_counter()
    try:
        with seeded(config.seed, dev), torch_threads(config.num_threads):
            for epoch in range(config.epochs):
                loss, accuracy = _train_epoch(
                    module, optimizer, scheduler, x_train, y_train, config, generator, dev
                )
                history["loss"].append(loss)
                history["train_accuracy"].append(accuracy)
                if x_val is not None and y_val is not None:
                    history["val_accuracy"].append(evaluate_accuracy(module, x_val, y_val))
                if progress is not None:
                    progress(epoch + 1, config.epochs)
    finally:
        module.eval()
    history["epochs"] = config.epochs
    history["seconds"] = time.perf_counter() - start
    return history


def _make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs * steps_per_epoch
        )
    return None


def _train_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    x: Tensor,
    y: Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[float, float]:
    """One pass in a seeded random order; returns (mean loss, accuracy) over the epoch."""
    module.train()
    n = x.shape[0]
    order = torch.randperm(n, generator=generator)
    total_loss = 0.0
    correct = 0
    for start in range(0, n, config.batch_size):
        idx = order[start : start + config.batch_size].to(x.device)
        xb = x[idx].to(device)
        yb = y[idx].to(device)
        if config.augment is not None:
            xb = config.augment(xb, generator)
        optimizer.zero_grad(set_to_none=True)
        logits = module(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * yb.shape[0]
        correct += int((logits.detach().argmax(dim=1) == yb).sum())
    return total_loss / n, correct / n


def predict_logits(module: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """The module's outputs for ``x`` in eval mode, without gradients, in batches.

    Every submodule's ``training`` flag is restored afterwards.

    Parameters
    ----------
    module
        The classifier.
    x
        Inputs ``(N, ...)`` on any device; batches are moved to the module's device.
    batch_size
        Examples per forward pass.

    Returns
    -------
    Tensor
        Logits ``(N, n_classes)`` on ``x``'s device.
    """
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise BadInputError(f"predict_logits got {type(x).__name__}; pass a tensor (N, ...)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"batch_size={batch_size!r} must be an int >= 1")
    dev = _module_device(module)
    outputs = []
    with eval_mode(module), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            outputs.append(module(x[start : start + batch_size].to(dev)).to(x.device))
    if not outputs:
        raise BadInputError("predict_logits got 0 inputs; pass at least one")
    return torch.cat(outputs)


def evaluate_accuracy(module: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Fraction of ``x`` whose arg-max logit equals ``y`` (eval mode, no gradients).

    Every submodule's ``training`` flag is restored afterwards.

    Parameters
    ----------
    module
        The classifier.
    x, y
        Inputs ``(N, ...)`` and int64 class indices ``(N,)``.
    batch_size
        Examples per forward pass.

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    _check_xy(x, y, "evaluation")
    predicted = predict_logits(module, x, batch_size).argmax(dim=1)
    return float((predicted == y.to(predicted.device)).double().mean())


def random_translate(max_shift: int) -> Augment:
    """An :data:`Augment` that shifts each image by up to ``max_shift`` pixels in y and x.

    Borders are filled by repeating the edge pixels (for digits: background), so it
    works in any normalisation.

    Parameters
    ----------
    max_shift
        Largest shift in pixels (each direction, drawn uniformly per image).

    Returns
    -------
    Augment
        ``augment(x, generator)`` for ``(N, C, H, W)`` batches.
    """
    if not isinstance(max_shift, int) or max_shift < 0:
        raise BadInputError(f"random_translate max_shift={max_shift!r} must be an int >= 0")

    def augment(x: Tensor, generator: torch.Generator) -> Tensor:
        if max_shift == 0:
            return x
        n, c, h, w = x.shape
        s = max_shift
        padded = F.pad(x, (s, s, s, s), mode="replicate")
        offsets = torch.randint(0, 2 * s + 1, (2, n), generator=generator).to(x.device)
        rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N, H)
        cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (N, W)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

    return augment
