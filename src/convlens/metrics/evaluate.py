"""Every faithfulness number for several methods on one set of images, beside the baselines.

:func:`evaluate` is what ``convlens evaluate DIR --methods ...`` runs: for each method it
computes the maps (in chunks), their deletion and insertion AUC (Petsiuk et al. 2018), the
pointing game when object masks are given (Zhang et al. 2016), and optionally the
cascading parameter-randomisation sanity check (Adebayo et al. 2018) on the first few
images. The model-free baselines (random, centre Gaussian, Sobel edges) are scored the
same way, so every number has something to beat.

The result is a :class:`~convlens.results.Result` of kind ``"evaluation"``: per-image
tensors ``(M, N)`` with one row per method (``provenance["params"]["rows"]`` names them),
and :func:`summary_rows` turns it into a table of means.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from convlens.errors import BadInputError
from convlens.metrics.baselines import baseline_maps
from convlens.metrics.deletion import deletion_auc, insertion_auc
from convlens.metrics.localisation import pointing_game
from convlens.metrics.sanity import method_maps, parameter_randomisation
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance
from convlens.targets import TargetLike, resolve_target

__all__ = ["BASELINES", "evaluate", "summary_rows"]

#: Row names of the model-free baselines in an evaluation.
BASELINES = ("baseline:random", "baseline:centre_gaussian", "baseline:sobel_edges")


def evaluate(
    model: Model,
    x: torch.Tensor,
    methods: Sequence[str],
    target: TargetLike = None,
    *,
    baselines: bool = True,
    masks: torch.Tensor | None = None,
    steps: int = 50,
    fill: str = "blur",
    sanity_images: int = 0,
    batch_size: int = 8,
    seed: int = 0,
    method_options: dict[str, dict[str, Any]] | None = None,
    progress: ProgressFn | None = None,
) -> Result:
    """Deletion / insertion AUC (and pointing game, sanity check) of ``methods`` on ``x``.

    Parameters
    ----------
    model
        The classifier.
    x
        Input-space batch ``(N, C, H, W)``.
    methods
        Registered method names (``"saliency"``, ``"gradcam"`` ...).
    target
        Class target (index per image, label ...); None = the predicted class, resolved
        once on the clean images so that every method explains the same class.
    baselines
        Also score the random, centre-Gaussian and Sobel-edge maps (rows ``baseline:*``).
    masks
        Object masks ``(N, H, W)`` over the model input (non-zero = object): adds the
        pointing game (15 px tolerance) for every row.
    steps, fill
        Deletion / insertion curve resolution and fill (see :func:`deletion_auc`).
    sanity_images
        Run the cascading randomisation on the first ``sanity_images`` images (0 = skip;
        it costs one map per layer group) and record the Spearman correlation of the
        trained model's maps with the fully randomised model's (low = the method passes).
    batch_size
        Images per chunk for maps and curves (bounds memory).
    seed
        Seeds random methods (SmoothGrad ...) and the random baseline.
    method_options
        Per-method options, ``{"integrated_gradients": {"n_steps": 32}}``.
    progress
        ``progress(done, total)`` in chunks of work done.

    Returns
    -------
    Result
        Kind ``"evaluation"``; tensors ``deletion_auc`` and ``insertion_auc`` ``(M, N)``,
        ``pointing`` ``(M, N)`` (1 = hit) when masks are given, ``sanity_spearman`` ``(M,)``
        (NaN for baselines) when ``sanity_images > 0``, ``seconds`` ``(M,)`` map time per
        row; ``target`` ``(N,)``, the explained classes.
    """
    from convlens.attribution import METHODS

    names = list(dict.fromkeys(methods))
    if not names and not baselines:
        raise BadInputError("nothing to evaluate: give at least one method or keep the baselines")
    for name in names:
        if name not in METHODS:
            raise BadInputError(
                f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}"
            )
    if x.dim() != 4 or x.shape[0] == 0:
        raise BadInputError(
            f"x: expected a non-empty (N, C, H, W) batch, got shape {tuple(x.shape)}"
        )
    n, _, h, w = x.shape
    if masks is not None:
        masks = masks[:, 0] if masks.dim() == 4 else masks
        if tuple(masks.shape) != (n, h, w):
            raise BadInputError(f"masks: expected shape {(n, h, w)}, got {tuple(masks.shape)}")
    if sanity_images < 0:
        raise BadInputError(f"sanity_images={sanity_images}: must be >= 0")
    options = method_options or {}
    rows = names + (list(BASELINES) if baselines else [])
    resolved = resolve_target(model, target, n)
    if resolved.kind not in ("class", "predicted"):
        raise BadInputError(
            f"evaluate needs class targets (deletion AUC is a class probability), not a {resolved.kind} target"
        )
    with torch.no_grad():
        classes = (
            resolved.classes.to(x.device)
            if resolved.kind == "class" and resolved.classes is not None
            else model.logits(x, batch_size).argmax(dim=1)
        )
    if classes.numel() == 1 and n > 1:
        classes = classes.expand(n)

    chunks = math.ceil(n / batch_size)
    sanity_rows = len(names) if sanity_images > 0 else 0
    total = len(rows) * chunks + sanity_rows
    done = 0
    deletion = torch.empty(len(rows), n, dtype=torch.float64)
    insertion = torch.empty_like(deletion)
    pointing = torch.empty_like(deletion) if masks is not None else None
    seconds = torch.zeros(len(rows), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        xc, cc = x[lo:hi], classes[lo:hi]
        base = baseline_maps(model.denormalize(xc), generator=generator) if baselines else {}
        for r, row in enumerate(rows):
            start = time.perf_counter()
            if row in BASELINES:
                maps = base[row.split(":", 1)[1]]
            else:
                maps = method_maps(model, xc, row, cc, seed=seed, **options.get(row, {}))
            seconds[r] += time.perf_counter() - start
            deletion[r, lo:hi] = (
                deletion_auc(
                    model, xc, maps, cc, steps=steps, fill=fill, batch_size=max(16, batch_size * 4)
                )[0]
                .double()
                .cpu()
            )
            insertion[r, lo:hi] = (
                insertion_auc(
                    model, xc, maps, cc, steps=steps, fill=fill, batch_size=max(16, batch_size * 4)
                )[0]
                .double()
                .cpu()
            )
            if pointing is not None and masks is not None:
                pointing[r, lo:hi] = pointing_game(maps, masks[lo:hi]).double().cpu()
            done += 1
            if progress is not None:
                progress(done, total)

    tensors: dict[str, torch.Tensor] = {
        "deletion_auc": deletion,
        "insertion_auc": insertion,
        "seconds": seconds,
        "target": classes.cpu(),
    }
    if pointing is not None:
        tensors["pointing"] = pointing
    if sanity_rows:
        k = min(sanity_images, n)
        sanity = torch.full((len(rows),), float("nan"), dtype=torch.float64)
        for r, name in enumerate(names):
            report = parameter_randomisation(
                model,
                x[:k],
                name,
                classes[:k],
                seed=seed,
                batch_size=batch_size,
                **options.get(name, {}),
            )
            sanity[r] = report["spearman_mean"][-1]
            done += 1
            if progress is not None:
                progress(done, total)
        tensors["sanity_spearman"] = sanity
    params = {
        "rows": rows,
        "steps": steps,
        "fill": fill,
        "sanity_images": min(sanity_images, n),
        "batch_size": batch_size,
        "options": options,
    }
    return Result(
        "evaluation", tensors, make_provenance(model, "evaluate", params=params, seed=seed)
    )


def summary_rows(result: Result) -> list[dict[str, Any]]:
    """One dict per row of an evaluation: means (and standard errors) over the images.

    Keys: ``method``, ``deletion_auc``, ``deletion_sem``, ``insertion_auc``,
    ``insertion_sem``, ``seconds``, and ``pointing`` / ``sanity_spearman`` when measured.
    Lower deletion AUC and higher insertion AUC are better; a sanity correlation near 0
    means the maps depend on the learned weights (as they should).
    """
    if result.kind != "evaluation":
        raise BadInputError(f"summary_rows needs an evaluation result, not {result.kind!r}")
    t = result.tensors
    out = []
    for r, name in enumerate(result.provenance["params"]["rows"]):
        row: dict[str, Any] = {"method": name}
        for key, short in (("deletion_auc", "deletion"), ("insertion_auc", "insertion")):
            values = t[key][r]
            row[key] = float(values.mean())
            row[f"{short}_sem"] = (
                float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else 0.0
            )
        row["seconds"] = float(t["seconds"][r])
        if "pointing" in t:
            row["pointing"] = float(t["pointing"][r].mean())
        if "sanity_spearman" in t:
            value = float(t["sanity_spearman"][r])
            row["sanity_spearman"] = None if math.isnan(value) else value
        out.append(row)
    return out
