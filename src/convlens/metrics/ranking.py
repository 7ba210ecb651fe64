"""Rank attribution maps of one image by faithfulness: insertion minus deletion AUC.

Petsiuk, Das & Saenko 2018, "RISE: randomized input sampling for explanation of black-box
models", arXiv:1806.07421. For each method's map of the image, the deletion AUC (remove the
top pixels first; lower is better) and the insertion AUC (add them first; higher is better)
of the target's probability; methods are ranked by::

    score = insertion AUC - deletion AUC          (higher = the map's top pixels decide)

ties broken by method name, so the order is deterministic. This is what the report's
attribution section shows; ``convlens evaluate`` gives the same numbers over a dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from convlens.metrics.deletion import deletion_auc, insertion_auc
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.targets import TargetLike

__all__ = ["FaithfulnessRow", "faithfulness_ranking"]


@dataclass(frozen=True)
class FaithfulnessRow:
    """One method's place: ``rank`` 1 is the most faithful."""

    rank: int
    method: str
    deletion: float
    insertion: float

    @property
    def score(self) -> float:
        """``insertion - deletion``: what the ranking sorts by (higher first)."""
        return self.insertion - self.deletion


def faithfulness_ranking(
    model: Model,
    x: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    target: TargetLike = None,
    *,
    steps: int = 50,
    fill: str = "blur",
    progress: ProgressFn | None = None,
) -> list[FaithfulnessRow]:
    """Deletion and insertion AUC of each method's map of one image, ranked.

    Parameters
    ----------
    x
        One input-space image ``(1, C, H, W)``.
    maps
        Method name -> its map of the image, ``(1, H, W)`` (``explain(...).tensors["map"]``).
    target
        The class the maps explain (default: the predicted class).
    steps, fill
        As :func:`~convlens.metrics.deletion_auc`.
    progress
        ``progress(done, total)`` after each method's two curves.

    Returns
    -------
    list[FaithfulnessRow]
        Best first: ``rank``, ``method``, ``deletion``, ``insertion`` (and ``score``).
    """
    scored = []
    for name, m in maps.items():
        deletion = float(deletion_auc(model, x, m, target, steps=steps, fill=fill)[0][0])
        insertion = float(insertion_auc(model, x, m, target, steps=steps, fill=fill)[0][0])
        scored.append((name, deletion, insertion))
        if progress is not None:
            progress(len(scored), len(maps))
    scored.sort(key=lambda r: (-(r[2] - r[1]), r[0]))
    return [FaithfulnessRow(i, n, d, ins) for i, (n, d, ins) in enumerate(scored, 1)]
