"""Robust accuracy vs budget: how accuracy falls as the attack budget grows.

For each method and each budget ``eps``, every labelled image is attacked (untargeted, away
from its true class) and the model's accuracy is counted on the 8-bit adversarial images.
``eps = 0`` is the clean accuracy of the 8-bit images. A stronger attack gives a lower curve;
a curve that does not reach near zero at large budgets points to a weak (or masked) attack.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from convlens.adversarial.attack import pixel_forward, quantize_within_budget, run_method
from convlens.adversarial.budget import check_norm
from convlens.adversarial.registry import ATTACKS, attack_names
from convlens.data.folders import scan_labelled
from convlens.data.images import quantize_8bit
from convlens.errors import BadInputError
from convlens.hooks import inference_context
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance

__all__ = ["CURVE_METHODS", "attack_curve", "load_labelled"]


#: attacks with a budget that the curve can sweep: the white-box ones that require one
CURVE_METHODS = tuple(n for n in attack_names("white") if ATTACKS[n].budget == "required")


def load_labelled(
    model: Model, folder: str | Path, *, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The 8-bit pixel batch, true labels and file names of a labelled folder or CSV.

    Class names resolve through the model's labels (index, wnid or label). Images without
    a label are refused: accuracy needs the truth.
    """
    resolver = model.labels.resolve if model.labels is not None else None
    items = scan_labelled(folder, resolver)
    if limit is not None:
        items = items[:limit]
    unlabelled = [str(item.path) for item in items if item.label is None]
    if unlabelled:
        raise BadInputError(
            f"{folder}: {len(unlabelled)} images have no label (e.g. {unlabelled[0]}); use class subfolders or a path,label CSV"
        )
    batch = model.prepare([str(item.path) for item in items])
    pixels = quantize_8bit(model.denormalize(batch.x).clamp(0, 1))
    labels = torch.tensor(
        [int(item.label) for item in items if item.label is not None], dtype=torch.long
    )
    return pixels, labels, list(batch.sources)


def attack_curve(
    model: Model,
    pixels: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    *,
    methods: Sequence[str] = ("fgsm", "pgd"),
    eps: Sequence[float] = (0, 1 / 255, 2 / 255, 4 / 255, 8 / 255),
    norm: str = "inf",
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 8,
    progress: ProgressFn | None = None,
) -> Result:
    """Accuracy of ``model`` under each attack at each budget.

    Parameters
    ----------
    pixels
        Pixel batch ``(N, C, H, W)`` at the model's input size (quantised to 8 bits here).
    labels
        True classes ``(N,)``.
    methods
        Budgeted attacks from :data:`CURVE_METHODS`.
    eps
        Budgets in pixel units, increasing.
    steps
        Iterations of BIM and PGD.

    Returns
    -------
    Result
        Kind ``"attack_curve"``: ``accuracy`` ``(M, E)``, ``correct`` ``(M, E, N)`` (bool),
        ``eps`` ``(E,)``, ``labels``; provenance params methods, eps, norm, steps.
    """
    norm = check_norm(norm)
    methods = [m.lower() for m in methods]
    bad = [m for m in methods if m not in CURVE_METHODS]
    if not methods or bad:
        raise BadInputError(f"methods {bad or methods!r}: choose from {', '.join(CURVE_METHODS)}")
    budgets = [float(e) for e in eps]
    if not budgets or any(not 0 <= e <= 1 for e in budgets):
        raise BadInputError(f"eps {list(eps)!r}: budgets in pixel units in [0, 1]")
    for m in methods:
        if norm not in ATTACKS[m].norms:
            able = [n for n in CURVE_METHODS if norm in ATTACKS[n].norms]
            raise BadInputError(
                f"{m} takes norm {' or '.join(ATTACKS[m].norms)} only; use {' or '.join(able)} for an L{norm} curve"
            )
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    x0 = quantize_8bit(pixels.detach().to(model.device, model.dtype).clamp(0, 1))
    n = x0.shape[0]
    if y.numel() != n or n == 0:
        raise BadInputError(f"{y.numel()} labels for {n} images")
    forward = pixel_forward(model)
    correct = torch.zeros(len(methods), len(budgets), n, dtype=torch.bool)
    total = len(methods) * len(budgets) * n
    done = 0
    started = time.perf_counter()
    with inference_context(model.module):
        for lo in range(0, n, batch_size):
            x, yb = x0[lo : lo + batch_size], y[lo : lo + batch_size].to(x0.device)
            with torch.no_grad():
                clean = (forward(x).argmax(dim=1) == yb).cpu()
            for mi, method in enumerate(methods):
                # one generator per (method, batch): the curve of a method does not depend
                # on which other methods run beside it
                generator = torch.Generator().manual_seed(seed + 7919 * mi + lo)
                for ei, e in enumerate(budgets):
                    if e == 0:
                        correct[mi, ei, lo : lo + len(x)] = clean
                    else:
                        adv, _ = run_method(
                            forward,
                            x,
                            yb,
                            method,
                            eps=e,
                            norm=norm,
                            steps=steps,
                            targeted=False,
                            generator=generator,
                            seed=seed,
                        )
                        adv = quantize_within_budget(x, adv, e, norm)
                        with torch.no_grad():
                            correct[mi, ei, lo : lo + len(x)] = (
                                forward(adv).argmax(dim=1) == yb
                            ).cpu()
                    done += len(x)
                    if progress is not None:
                        progress(done, total)
    accuracy = correct.float().mean(dim=2)
    params = {
        "methods": methods,
        "eps": budgets,
        "norm": norm,
        "steps": steps,
        "images": n,
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {"accuracy": accuracy, "correct": correct, "eps": torch.tensor(budgets), "labels": y}
    return Result(
        "attack_curve", tensors, make_provenance(model, "attack_curve", params=params, seed=seed)
    )
