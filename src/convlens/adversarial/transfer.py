"""Transfer attacks: craft on one model (white-box), fool others you never queried.

Szegedy et al. 2014 (arXiv:1312.6199) found that adversarial examples transfer between
networks; Papernot, McDaniel & Goodfellow 2016 (arXiv:1605.07277) made it a black-box
attack. Here the adversarial images are made on the source model at its resolution,
quantised to 8 bits (as saved), and then given to each target model exactly as a PNG file
would be: through the target's own preprocessing (resize and crop to its input size).

The transfer rate of a target is the fraction of images it fools among those that both the
source and the target classify correctly when clean.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from convlens.adversarial.attack import attack
from convlens.data.images import quantize_8bit
from convlens.errors import BadInputError
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance

__all__ = ["transfer_table"]


def _predict(model: Model, images: Sequence[Any], batch_size: int = 8) -> torch.Tensor:
    """Top-1 of each image given as a file would be (the model's own preprocessing)."""
    out = []
    for lo in range(0, len(images), batch_size):
        batch = model.prepare(list(images[lo : lo + batch_size]))
        out.append(model.logits(batch.x).argmax(dim=1).cpu())
    return torch.cat(out)


def transfer_table(
    source: Model,
    targets: Sequence[Model],
    images: Sequence[Any],
    labels: Sequence[int] | torch.Tensor,
    *,
    method: str = "pgd",
    eps: float = 4 / 255,
    steps: int = 10,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> Result:
    """Transfer rates of an attack crafted on ``source`` to each of ``targets``.

    Parameters
    ----------
    source
        The model attacked (white-box).
    targets
        Models that only ever see the finished adversarial images.
    images
        Image files (or anything ``Model.prepare`` reads), any size.
    labels
        True classes.
    method, eps, steps, seed
        The attack on the source (untargeted, away from the true class).

    Returns
    -------
    Result
        Kind ``"transfer"``: ``adversarial`` (the source's 8-bit images), ``clean_correct``
        and ``fooled`` ``(1 + T, N)`` booleans (row 0 the source), ``rate`` ``(1 + T,)``
        (row 0: the white-box success rate), ``counted`` ``(1 + T,)`` images counted;
        provenance params ``models`` (names in row order).
    """
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if len(images) != y.numel() or not len(images):
        raise BadInputError(f"{y.numel()} labels for {len(images)} images")
    if not targets:
        raise BadInputError("transfer needs at least one target model")
    started = time.perf_counter()
    result = attack(
        source, list(images), method, eps=eps, steps=steps, seed=seed, labels=y, progress=progress
    )
    adversarial = quantize_8bit(result.tensors["adversarial"])
    originals = result.tensors["original"]
    models = [source, *targets]
    clean = torch.zeros(len(models), len(y), dtype=torch.bool)
    fooled = torch.zeros_like(clean)
    with torch.no_grad():
        clean[0] = result.tensors["top_classes_before"][:, 0] == y
        fooled[0] = result.tensors["top_classes_after"][:, 0] != y
        for row, model in enumerate(targets, start=1):
            # the 8-bit image at the source's resolution, read by the target like a file
            clean[row] = _predict(model, list(originals)) == y
            fooled[row] = _predict(model, list(adversarial)) != y
    counted = torch.stack([(clean[0] & clean[r]).sum() for r in range(len(models))])
    rate = torch.stack(
        [
            (fooled[r] & clean[0] & clean[r]).sum() / max(int(counted[r]), 1)
            for r in range(len(models))
        ]
    ).float()
    params = {
        "method": result.provenance["params"]["method"],
        "eps": eps,
        "steps": steps,
        "models": [m.name for m in models],
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {
        "adversarial": adversarial,
        "clean_correct": clean,
        "fooled": fooled,
        "rate": rate,
        "counted": counted,
        "labels": y,
    }
    return Result(
        "transfer",
        tensors,
        make_provenance(source, "transfer", params=params, seed=seed),
        sources=result.sources,
    )
