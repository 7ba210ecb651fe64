"""Model inversion: a representative input per class, recovered from the classifier alone.

Fredrikson, Jha & Ristenpart, "Model Inversion Attacks that Exploit Confidence Information
and Basic Countermeasures", CCS 2015 (doi:10.1145/2810103.2813677), MI-Face: descend on
``1 - p_c(x)`` from a blank image. Here, in pixel space ``x = sigmoid(z)`` (so x stays in
[0, 1]), the attacker maximises

    J_c(x) = log p_c(x) - lambda_tv TV(x) - lambda_l2 ||x||^2 / (C H W),
    TV(x)  = mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]|,

the priors (smooth, mostly dark strokes) standing in for Fredrikson's denoising step.

- **White-box**: Adam on ``z`` with the exact gradient of ``log p_c``.
- **Black-box**: the same objective, ``grad log p_c`` estimated from queries only, with
  antithetic Gaussian sampling (natural evolution strategies; Wierstra et al. 2014, JMLR
  15; used as a black-box attack by Ilyas, Engstrom, Athalye & Lin 2018, arXiv:1804.08598):
  ``g = 1/(2 n sigma) sum_i [f(z + sigma u_i) - f(z - sigma u_i)] u_i``, ``u_i ~ N(0, I)``,
  ``2n`` queries a step, within a fixed query budget. The priors need no queries.

The attacker holds only an :class:`~convlens.adversarial.oracle.Oracle` (the one black-box
attacks get; :func:`ModelOracle` builds it from a model): probabilities (and, white-box,
gradients) of images it submits. No training data, no module, no weights are reachable
through it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from convlens.adversarial.oracle import Oracle
from convlens.errors import BadInputError, QueryBudgetError
from convlens.models.model import Model
from convlens.privacy._common import accuracy, full_dataset, train_module
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance

__all__ = [
    "ModelOracle",
    "QueryBudgetError",
    "inversion_experiment",
    "invert_black_box",
    "invert_white_box",
    "total_variation",
]


def ModelOracle(model: Model, *, white_box: bool, budget: int | None = None) -> Oracle:
    """The oracle an inversion attack gets: :meth:`Oracle.from_model` (``budget`` is its
    ``max_queries``), kept under the name this module has always exported."""
    return Oracle.from_model(model, white_box=white_box, max_queries=budget)


def total_variation(x: Tensor) -> Tensor:
    """Anisotropic TV per image: mean |vertical| + mean |horizontal| neighbour differences, ``(N,)``."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def _prior(x: Tensor, tv: float, l2: float) -> Tensor:
    """The image prior per image, ``lambda_tv TV(x) + lambda_l2 mean(x^2)`` (to subtract)."""
    return tv * total_variation(x) + l2 * x.pow(2).flatten(1).mean(1)


def _classes(oracle: Oracle, classes: Sequence[int] | None) -> Tensor:
    if not isinstance(oracle, Oracle) or oracle.n_classes is None or oracle.input_shape is None:
        raise BadInputError(
            f"the attack needs an Oracle built by Oracle.from_model, not {oracle!r}"
        )
    picked = list(range(oracle.n_classes)) if classes is None else [int(c) for c in classes]
    if not picked or any(not 0 <= c < oracle.n_classes for c in picked):
        raise BadInputError(f"classes={classes!r}: pass class indices in [0, {oracle.n_classes})")
    return torch.tensor(picked, dtype=torch.int64)


def _shape(oracle: Oracle) -> tuple[int, int, int]:
    if oracle.input_shape is None:  # only a hand-made Oracle lacks it; _classes refuses those
        raise BadInputError("the attack needs an Oracle built by Oracle.from_model")
    return oracle.input_shape


def _init(oracle: Oracle, n: int, init: float) -> Tensor:
    # start from a uniform dark image: sigmoid(z0) = init
    z0 = torch.logit(torch.tensor(init)).item()
    return torch.full((n, *_shape(oracle)), z0)


def invert_white_box(
    oracle: Oracle,
    classes: Sequence[int] | None = None,
    *,
    steps: int = 300,
    lr: float = 0.1,
    tv: float = 0.3,
    l2: float = 0.3,
    init: float = 0.1,
    jitter: int = 1,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Fredrikson's MI-Face with exact gradients: one reconstruction per class.

    Parameters
    ----------
    oracle
        A white-box :class:`~convlens.adversarial.oracle.Oracle`.
    classes
        Classes to reconstruct (default all).
    steps, lr
        Adam steps and learning rate on the logits ``z`` of the image.
    tv, l2
        Prior weights ``lambda_tv`` and ``lambda_l2``.
    init
        Grey level of the blank starting image.
    jitter
        Each step asks for the gradient at the image shifted (circularly) by up to this many
        pixels in y and x, and shifts it back: the reconstruction must work wherever it sits
        (transformation robustness, Mordvintsev, Olah & Tyka 2015), which keeps it from
        relying on single pixels.
    seed
        Seeds the shifts.
    progress
        ``progress(step, steps)``.

    Returns
    -------
    dict
        ``images`` ``(K, C, H, W)``, ``probabilities`` ``(K, n_classes)`` (from one last
        query), ``classes``, ``queries`` (images the oracle was asked about) and ``objective``
        (final ``J_c`` per class).
    """
    cls = _classes(oracle, classes)
    if steps < 1 or lr <= 0 or tv < 0 or l2 < 0 or not 0 < init < 1:
        raise BadInputError(
            "invert_white_box needs steps >= 1, lr > 0, tv >= 0, l2 >= 0 and init in (0, 1)"
        )
    z = _init(oracle, len(cls), init).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    objective = torch.zeros(len(cls))
    generator = torch.Generator().manual_seed(int(seed))
    for step in range(steps):
        with torch.enable_grad():
            x = torch.sigmoid(z)
            dy, dx = (
                torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
                if jitter > 0
                else (0, 0)
            )
            log_p, grad_x = oracle.gradient(torch.roll(x.detach(), (dy, dx), dims=(2, 3)), cls)
            grad_x = torch.roll(grad_x, (-dy, -dx), dims=(2, 3))
            prior = _prior(x, tv, l2)
            # d J / d z = (d log p / d x - d prior / d x) * sigmoid'(z), via autograd on the
            # surrogate <grad_x, x> - prior whose x-gradient is exactly grad_x - d prior / dx
            surrogate = (grad_x * x).flatten(1).sum(1) - prior
            optimizer.zero_grad()
            (-surrogate.sum()).backward()
        optimizer.step()
        objective = log_p - prior.detach()
        if progress is not None:
            progress(step + 1, steps)
    images = torch.sigmoid(z.detach())
    probs = oracle.probabilities(images)
    return {
        "images": images,
        "probabilities": probs,
        "classes": cls,
        "queries": oracle.queries,
        "objective": objective,
    }


def invert_black_box(
    oracle: Oracle,
    classes: Sequence[int] | None = None,
    *,
    budget_per_class: int = 10_000,
    samples: int = 20,
    sigma: float = 0.5,
    lr: float = 0.1,
    tv: float = 0.3,
    l2: float = 0.3,
    init: float = 0.1,
    downsample: int = 1,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """MI-Face from queries only: NES estimates of ``grad log p_c``, Adam on ``z``.

    Each step costs ``2 * samples`` queries per class (antithetic pairs); the attack stops
    when the next step would leave less than one final query per class in the budget.

    Parameters
    ----------
    oracle
        An :class:`~convlens.adversarial.oracle.Oracle` from a model (its gradients are never used).
    classes
        Classes to reconstruct (default all).
    budget_per_class
        Queries each class may use, the final check included.
    samples, sigma
        Antithetic pairs per step and their standard deviation in ``z``.
    lr, tv, l2, init
        As in :func:`invert_white_box`.
    downsample
        Optimise ``z`` on a grid this many times coarser, upsampled (bilinear) to the input:
        fewer dimensions for the gradient estimate (its variance grows with them).
    seed
        Seeds the Gaussian directions.
    progress
        ``progress(step, steps)``.

    Returns
    -------
    dict
        As :func:`invert_white_box`; ``queries`` counts every image sent to the oracle.
    """
    cls = _classes(oracle, classes)
    if samples < 1 or sigma <= 0 or lr <= 0 or budget_per_class < 2 * samples + 1:
        raise BadInputError(
            "invert_black_box needs samples >= 1, sigma > 0, lr > 0 and budget_per_class >= 2 * samples + 1"
        )
    c, h, w = _shape(oracle)
    if not isinstance(downsample, int) or downsample < 1 or h % downsample or w % downsample:
        raise BadInputError(
            f"downsample={downsample!r} must be an int >= 1 dividing the input size {h}x{w}"
        )
    k, shape = len(cls), (c, h // downsample, w // downsample)

    def image(zz: Tensor) -> Tensor:
        up = (
            zz
            if downsample == 1
            else torch.nn.functional.interpolate(
                zz, size=(h, w), mode="bilinear", align_corners=False
            )
        )
        return torch.sigmoid(up)

    steps = (budget_per_class - 1) // (2 * samples)
    generator = torch.Generator().manual_seed(int(seed))
    z = torch.full((k, *shape), torch.logit(torch.tensor(init)).item()).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    rows = torch.arange(k)
    for step in range(steps):
        u = torch.randn(k, samples, *shape, generator=generator)
        zz = z.detach()[:, None]
        probes = torch.cat([zz + sigma * u, zz - sigma * u], dim=1).flatten(
            0, 1
        )  # (k 2n, C, h', w')
        p = oracle.probabilities(image(probes)).view(k, 2 * samples, -1)
        f = torch.log(p[rows, :, cls].clamp_min(1e-30))  # (k, 2n)
        diff = (f[:, :samples] - f[:, samples:])[..., None, None, None]
        grad_model = (diff * u).mean(1) / (2 * sigma)  # estimate of d log p / d z
        with torch.enable_grad():
            prior = _prior(image(z), tv, l2)
            optimizer.zero_grad()
            (prior.sum()).backward()
        assert z.grad is not None  # the prior's backward just filled it
        z.grad = z.grad - grad_model  # ascend log p, descend the prior
        optimizer.step()
        if progress is not None:
            progress(step + 1, steps)
    images = image(z.detach())
    probs = oracle.probabilities(images)
    log_p = torch.log(probs[rows, cls].clamp_min(1e-30))
    return {
        "images": images,
        "probabilities": probs,
        "classes": cls,
        "queries": oracle.queries,
        "objective": log_p - _prior(images, tv, l2),
    }


def _judge(dataset: str, seed: int) -> nn.Module:
    """An independent classifier: another architecture, another seed, same training split."""
    from convlens.models.training import TrainConfig

    x_train, y_train, _, _ = full_dataset(dataset)
    config = TrainConfig(
        epochs=12 if dataset == "digits" else 6,
        batch_size=32 if dataset == "digits" else 64,
        lr=3e-3,
        lr_schedule="cosine",
        seed=seed,
        num_threads=1,
    )
    return train_module(dataset, x_train, y_train, config, arch="alt")


def inversion_experiment(
    dataset: str = "digits",
    *,
    seed: int = 0,
    white_box_steps: int = 300,
    black_box_budget: int | None = None,
    progress: ProgressFn | None = None,
) -> Result:
    """Invert the zoo model of ``dataset`` white- and black-box; an independent model judges.

    The attacked model is ``digits_cnn`` / ``mnist_cnn``. The judge is a model of another
    architecture (``alt`` in :mod:`convlens.privacy`) trained with seed ``1000 + seed`` on the
    same training split; a reconstruction "succeeds" if the judge calls it its class.

    Parameters
    ----------
    dataset
        ``"digits"`` or ``"mnist"``.
    seed
        Seeds the judge (``1000 + seed``), the white-box shifts and the black-box directions.
    white_box_steps
        Steps of :func:`invert_white_box`.
    black_box_budget
        Queries per class for :func:`invert_black_box` (default 10,000 digits, 20,000 MNIST,
        optimised on a 7x7 grid there).
    progress
        ``progress(done, total)`` over both attacks' steps.

    Returns
    -------
    Result
        Kind ``"inversion"``: tensors ``white_box`` and ``black_box`` ``(10, 1, H, W)``, their
        target-model ``*_probabilities`` and judge ``*_judge_probabilities``; params per
        variant: ``target_hits`` / ``judge_hits`` (of 10), per-class ``judge_predictions``,
        ``queries``, ``seconds``; the judge's held-out accuracy.
    """
    from convlens.models.zoo import load_model
    from convlens.privacy._common import check_dataset, pixel_logits

    check_dataset(dataset)
    model = load_model("digits_cnn" if dataset == "digits" else "mnist_cnn")
    budget = (
        black_box_budget
        if black_box_budget is not None
        else (10_000 if dataset == "digits" else 20_000)
    )
    total = white_box_steps + (budget - 1) // 40  # black-box steps: 2 x 20 probes each
    done = 0

    def step(_d: int, _t: int) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(min(done, total), total)

    params: dict[str, Any] = {"dataset": dataset, "seed": seed}
    tensors: dict[str, Tensor] = {}
    judge = _judge(dataset, 1000 + seed)
    _, _, x_test, y_test = full_dataset(dataset)
    params["judge_held_out_accuracy"] = accuracy(judge, dataset, x_test, y_test)
    for name in ("white_box", "black_box"):
        started = time.perf_counter()
        if name == "white_box":
            out = invert_white_box(
                Oracle.from_model(model, white_box=True),
                steps=white_box_steps,
                seed=seed,
                progress=step,
            )
        else:
            oracle = Oracle.from_model(model, max_queries=budget * 10)
            out = invert_black_box(
                oracle,
                budget_per_class=budget,
                downsample=1 if dataset == "digits" else 4,
                seed=seed,
                progress=step,
            )
        judged = torch.softmax(pixel_logits(judge, dataset, out["images"]), dim=1)
        cls = out["classes"]
        tensors[name] = out["images"]
        tensors[f"{name}_probabilities"] = out["probabilities"]
        tensors[f"{name}_judge_probabilities"] = judged
        params[name] = {
            "target_hits": int((out["probabilities"].argmax(1) == cls).sum()),
            "judge_hits": int((judged.argmax(1) == cls).sum()),
            "judge_predictions": judged.argmax(1).tolist(),
            "target_probability": out["probabilities"][torch.arange(len(cls)), cls].tolist(),
            "queries": int(out["queries"]),
            "queries_per_class": int(out["queries"]) // len(cls),
            "seconds": round(time.perf_counter() - started, 3),
        }
    return Result(
        "inversion", tensors, make_provenance(model, "model_inversion", params=params, seed=seed)
    )
