"""Defences evaluated honestly: clean accuracy, non-adaptive attacks, and an adaptive one.

For every defence the same labelled images are classified four times:

- **clean**: the 8-bit images;
- **transfer**: L-inf PGD (Madry et al. 2018, arXiv:1706.06083) crafted on the *undefended*
  model, then given to the defended system (the attacker ignores the defence);
- **non-adaptive**: the same PGD run on the defended system with the gradients it reports:
  zero through bit-depth reduction, none through JPEG (treated as zero), one random draw
  through noise. This is the evaluation that makes such defences look strong;
- **adaptive**: PGD on the defended system with the gradient computed the way the defence
  needs: BPDA (identity backward through the transform) and, for a random transform, EOT
  over draws (Athalye, Carlini & Wagner 2018, arXiv:1802.00420;
  :mod:`convlens.adversarial.adaptive`).

The row ``none`` is the undefended model (every attack column is white-box PGD on it). An
adversarially trained model (row ``pgd-trained``) reports gradients honestly, so its
non-adaptive and adaptive attacks are the same white-box PGD. A defence's **apparent gain**
is ``non_adaptive - none``; its **real gain** is ``adaptive - none``; the share of the
apparent gain that disappears is ``1 - real / apparent``. Every adversarial image is quantised
to 8 bits inside the budget before it is classified (DESIGN.md "Round trip").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

import torch

from convlens.adversarial.adaptive import adaptive_forward
from convlens.adversarial.attack import pixel_forward
from convlens.adversarial.budget import Forward, quantize_within
from convlens.adversarial.defences import Defence, DefendedModule, defend, make_defence
from convlens.adversarial.whitebox import pgd
from convlens.data.images import quantize_8bit
from convlens.errors import BadInputError
from convlens.hooks import inference_context
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance

__all__ = ["COLUMNS", "evaluate_defences"]


#: columns of the accuracy table
COLUMNS = ("clean", "transfer", "non_adaptive", "adaptive")


def _accuracy(
    model: Model, pixels: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int
) -> torch.Tensor:
    """Per image, whether ``model`` classifies it correctly (a random defence starts its draws at ``seed``)."""
    if isinstance(model.module, DefendedModule):
        model.module.reseed(seed)
    forward = pixel_forward(model)
    with torch.no_grad():
        predicted = torch.cat([forward(chunk).argmax(dim=1) for chunk in pixels.split(batch_size)])
    return (predicted == labels).cpu()


def _as_reported(model: Model) -> Forward:
    """The defended system's forward with the gradients it reports; where it reports none
    (a transform that leaves torch, such as JPEG), the gradient is zero, as an attacker
    differentiating the system would find."""
    forward = pixel_forward(model)

    def reported(pixels: torch.Tensor) -> torch.Tensor:
        out = forward(pixels)
        return out if out.requires_grad else out + 0 * pixels.sum()

    return reported


def _pgd(
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    seed: int,
    batch_size: int,
) -> torch.Tensor:
    """8-bit PGD adversarial images inside the budget, in batches, seeded."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for lo in range(0, len(x), batch_size):
        xb, yb = x[lo : lo + batch_size], y[lo : lo + batch_size]
        out.append(
            quantize_within(
                xb, pgd(forward, xb, yb, eps, steps=steps, generator=generator), eps, "inf"
            )
        )
    return torch.cat(out)


def evaluate_defences(
    model: Model,
    pixels: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    defences: Sequence[Defence | str] = ("jpeg", "bits", "noise"),
    *,
    robust_model: Model | None = None,
    eps: float = 0.2,
    steps: int = 20,
    eot_samples: int = 8,
    seed: int = 0,
    batch_size: int = 128,
    progress: ProgressFn | None = None,
) -> Result:
    """Accuracy of ``model`` behind each defence: clean, under transfer, non-adaptive and adaptive PGD.

    Parameters
    ----------
    model
        The undefended classifier.
    pixels, labels
        Images ``(N, C, H, W)`` in [0, 1] at the model's input size (quantised to 8 bits
        here) and their true classes.
    defences
        Input-transform defences (:class:`Defence` or a kind of :data:`~convlens.adversarial.defences.DEFENCES`
        with its default setting).
    robust_model
        An adversarially trained model with the same inputs and classes (e.g.
        ``digits_cnn_pgd`` for ``digits_cnn``), reported as the row ``pgd-trained``.
    eps
        L-inf budget in pixel units.
    steps
        PGD iterations of both attacks.
    eot_samples
        Draws per gradient step for random defences.
    seed
        Seeds the PGD random starts and the defences' noise.

    Returns
    -------
    Result
        Kind ``"defences"``: ``accuracy`` ``(D, 4)`` (columns :data:`COLUMNS`), ``correct``
        ``(D, 4, N)`` bool, ``labels``; provenance params ``defences`` (row names, ``none``
        first), ``eps``, ``steps``, ``eot_samples``, ``images``, ``apparent_gain``,
        ``real_gain`` and ``gain_lost`` (per row; ``None`` where there is no apparent gain).
    """
    if not 0 < eps <= 1:
        raise BadInputError(f"eps {eps}: a budget in pixel units must be in (0, 1]")
    if steps < 1 or eot_samples < 1 or batch_size < 1:
        raise BadInputError(
            f"steps {steps}, eot_samples {eot_samples}, batch_size {batch_size}: must be >= 1"
        )
    chosen = [make_defence(d) if isinstance(d, str) else d for d in defences]
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1).to(model.device)
    x0 = quantize_8bit(pixels.detach().to(model.device, model.dtype).clamp(0, 1))
    if len(y) != len(x0) or len(y) == 0:
        raise BadInputError(f"{len(y)} labels for {len(x0)} images")
    names = ["none", *[d.name for d in chosen]] + (
        ["pgd-trained"] if robust_model is not None else []
    )
    total = len(names)
    correct = torch.zeros(len(names), len(COLUMNS), len(y), dtype=torch.bool)
    started = time.perf_counter()
    with inference_context(model.module):
        # the transfer attack: crafted once on the undefended model, shared by every row
        transferred = _pgd(pixel_forward(model), x0, y, eps, steps, seed, batch_size)
        correct[0, 0] = _accuracy(model, x0, y, batch_size, seed)
        correct[0, 1:] = _accuracy(model, transferred, y, batch_size, seed)
        if progress is not None:
            progress(1, total)
        for row, defence in enumerate(chosen, start=1):
            defended = defend(model, defence, seed=seed)
            correct[row, 0] = _accuracy(defended, x0, y, batch_size, seed)
            correct[row, 1] = _accuracy(defended, transferred, y, batch_size, seed)
            cast(DefendedModule, defended.module).reseed(seed)
            naive = _pgd(_as_reported(defended), x0, y, eps, steps, seed, batch_size)
            correct[row, 2] = _accuracy(defended, naive, y, batch_size, seed)
            cast(DefendedModule, defended.module).reseed(seed)
            adaptive = _pgd(
                adaptive_forward(defended, samples=eot_samples), x0, y, eps, steps, seed, batch_size
            )
            correct[row, 3] = _accuracy(defended, adaptive, y, batch_size, seed)
            if progress is not None:
                progress(row + 1, total)
    if robust_model is not None:
        if robust_model.input_size != model.input_size or robust_model.channels != model.channels:
            raise BadInputError(
                f"robust model {robust_model.name!r} takes {robust_model.channels}x{robust_model.input_size} inputs, {model.name!r} {model.channels}x{model.input_size}"
            )
        with inference_context(robust_model.module):
            correct[-1, 0] = _accuracy(robust_model, x0, y, batch_size, seed)
            correct[-1, 1] = _accuracy(robust_model, transferred, y, batch_size, seed)
            # nothing to adapt: its gradients are honest, so both attacks are white-box PGD
            white_box = _pgd(pixel_forward(robust_model), x0, y, eps, steps, seed, batch_size)
            correct[-1, 2:] = _accuracy(robust_model, white_box, y, batch_size, seed)
        if progress is not None:
            progress(total, total)
    accuracy = correct.float().mean(dim=2)
    baseline = float(accuracy[0, 3])
    apparent = [float(a) - baseline for a in accuracy[:, 2]]
    real = [float(a) - baseline for a in accuracy[:, 3]]
    lost = [round(1 - r / a, 4) if a > 0 else None for a, r in zip(apparent, real)]
    params = {
        "defences": names,
        "eps": eps,
        "norm": "inf",
        "steps": steps,
        "eot_samples": eot_samples,
        "images": len(y),
        "robust_model": robust_model.name if robust_model is not None else None,
        "apparent_gain": [round(a, 4) for a in apparent],
        "real_gain": [round(r, 4) for r in real],
        "gain_lost": lost,
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {"accuracy": accuracy, "correct": correct, "labels": y.cpu()}
    return Result("defences", tensors, make_provenance(model, "defences", params=params, seed=seed))
