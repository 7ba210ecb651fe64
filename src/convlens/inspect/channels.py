"""Channel importance and pruning: which of a layer's channels the decision needs.

Three rankings of the channels ``c`` of one layer, each a score per channel (higher =
more important), on a set of images ``n`` with target classes ``y_n`` (the labels, or the
predicted classes when there are none) and target logit ``S_n``:

- ``"ablation"``: the drop of the target logit when the channel is zeroed,
  ``I_c = mean_n [ S_n(A) - S_n(A with A_c = 0) ]`` (the brute-force criterion that the
  cheaper ones approximate; also reported as the drop in accuracy when labels are given).
- ``"activation"``: the mean magnitude of the channel, ``I_c = mean_{n,h,w} |A_{n,c,h,w}|``
  (the simplest pruning criterion; Hu et al. 2016, "Network Trimming", arXiv:1607.03250,
  rank by the share of zero activations).
- ``"taylor"`` (gradient x activation): the first-order Taylor estimate of the ablation,
  ``I_c = mean_n | sum_{h,w} A_{n,c,h,w} dS_n/dA_{n,c,h,w} |`` (Molchanov, Tyree, Karras,
  Aila & Kautz 2017, "Pruning Convolutional Neural Networks for Resource Efficient
  Inference", arXiv:1611.06440, eq. 8).

:func:`pruning_curve` zeroes the channels in a given order (least important first) and
measures accuracy after each count, against the mean of random orders: a good ranking keeps
accuracy above random at the same count.

Zeroing acts through :func:`convlens.hooks.edit_output` (the model is never changed). To
avoid running the lower network once per ablation, the layer's clean output is computed
once and *replayed*: the model runs on one image while the hook substitutes the stored
(masked) activations of the whole batch, so only the network above the layer runs per
ablation. This is exact when nothing from below the layer bypasses it (no skip connection
around it); it is checked by comparing the replayed clean logits with the true ones, and
when they differ every ablation runs the full network instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from convlens.errors import BadInputError, LayerReusedError
from convlens.hooks import capture, edit_output, inference_context
from convlens.layers import resolve_layer
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance

__all__ = ["CHANNEL_METHODS", "channel_importance", "pruning_curve"]

#: ranking criteria of :func:`channel_importance`
CHANNEL_METHODS = ("ablation", "activation", "taylor")


class _Replay:
    """The network above ``layer``, fed a stored activation with channels masked."""

    def __init__(self, model: Model, pixels: torch.Tensor, layer: str, batch_size: int) -> None:
        self.model, self.layer, self.batch_size = model, layer, batch_size
        self.x = model.normalize(pixels)
        with torch.no_grad(), capture(model.module, [layer]) as cap:
            self.logits = _batched_logits(model, self.x, batch_size)
            if len(cap.calls[layer]) != -(-len(self.x) // batch_size):
                raise LayerReusedError(
                    f"layer {layer!r} runs more than once per forward pass; pick a layer that runs once"
                )
            self.acts = torch.cat([a.detach() for a in cap.calls[layer]])
        if self.acts.dim() not in (2, 4):
            raise BadInputError(
                f"layer {layer!r} gives outputs of shape {tuple(self.acts.shape[1:])}; channels are ranked on conv maps (N, C, H, W) or features (N, C)"
            )
        self.channels = self.acts.shape[1]
        try:
            masked = self.run(
                torch.arange(len(self.x)), torch.ones(len(self.x), self.channels), replay=True
            )
        except RuntimeError:  # e.g. a forward that reshapes with the input's batch size
            self.replay = False
        else:
            scale = float(self.logits.abs().max().clamp_min(1.0))
            self.replay = bool(
                masked.shape == self.logits.shape
                and torch.allclose(masked, self.logits, rtol=0, atol=1e-4 * scale)
            )

    def _mask(self, keep: torch.Tensor) -> torch.Tensor:
        return keep.reshape(*keep.shape, *([1] * (self.acts.dim() - 2))).to(self.acts)

    def run(
        self, index: torch.Tensor, keep: torch.Tensor, *, replay: bool | None = None
    ) -> torch.Tensor:
        """Logits of images ``index`` (M,) with channel multipliers ``keep`` (M, C)."""
        replay = self.replay if replay is None else replay
        out = []
        for start in range(0, len(index), self.batch_size):
            idx, mask = (
                index[start : start + self.batch_size],
                self._mask(keep[start : start + self.batch_size]),
            )
            if replay:
                stored = self.acts[idx] * mask
                with (
                    torch.no_grad(),
                    edit_output(self.model.module, self.layer, _replace_by(stored)),
                ):
                    out.append(self.model.module(self.x[idx[:1]]))
            else:
                with (
                    torch.no_grad(),
                    edit_output(self.model.module, self.layer, _scale_by(mask)),
                ):
                    out.append(self.model.module(self.x[idx]))
        return torch.cat(out).float()


def _replace_by(value: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """An output edit that feeds ``value`` instead of the layer's output."""
    return lambda _output: value


def _scale_by(mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """An output edit that multiplies the layer's output by ``mask``."""
    return lambda output: output * mask


def _batched_logits(model: Model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [model.module(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    ).float()


def _check(
    model: Model,
    pixels: torch.Tensor,
    layer: str,
    labels: Sequence[int] | torch.Tensor | None,
    batch_size: int,
) -> torch.Tensor | None:
    if (
        not isinstance(pixels, torch.Tensor)
        or pixels.dim() != 4
        or tuple(pixels.shape[1:]) != (model.channels, *model.input_size)
    ):
        got = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise BadInputError(
            f"pixels: expected a batch (N, {model.channels}, {model.input_size[0]}, {model.input_size[1]}) in [0, 1], got {got}"
        )
    if len(pixels) < 1:
        raise BadInputError("pixels: no images")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    resolve_layer(model.module, layer)
    return None if labels is None else _as_labels(labels, len(pixels))


def _as_labels(labels: Sequence[int] | torch.Tensor, n: int) -> torch.Tensor:
    y = torch.as_tensor(labels, dtype=torch.long).flatten()
    if len(y) != n:
        raise BadInputError(
            f"labels has {len(y)} entries but there are {n} images; give one label per image"
        )
    return y


def channel_importance(
    model: Model,
    pixels: torch.Tensor,
    layer: str,
    *,
    method: str = "ablation",
    labels: Sequence[int] | torch.Tensor | None = None,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> Result:
    """Score every channel of ``layer`` by how much the target class needs it.

    Parameters
    ----------
    model
        A classifier.
    pixels
        Images in pixel space at the model's input size, ``(N, C, H, W)`` in [0, 1].
    layer
        Dotted name of a layer whose output is ``(N, C, H, W)`` or ``(N, C)``.
    method
        ``"ablation"``, ``"activation"`` or ``"taylor"`` (see the module docstring).
    labels
        True classes ``(N,)``: the targets, and accuracy drops for ``"ablation"``; None
        uses the predicted classes as targets.
    batch_size
        Images (times ablations) per forward pass.
    progress
        ``progress(done, total)`` over the channels (``"ablation"``) or batches.

    Returns
    -------
    Result
        Kind ``"channel_importance"``: ``scores (C,)`` (higher = more important),
        ``order (C,)`` (channel indices, most important first), ``targets (N,)``; for
        ``"ablation"`` also ``score_drops (N, C)`` and, with labels, ``accuracy_drops (C,)``.
        Provenance params: ``method``, ``channels``, ``images``, ``accuracy`` (with labels),
        ``replay`` (whether the upper network ran on stored activations).

    Examples
    --------
    >>> r = channel_importance(model, pixels, "conv2", labels=y)
    >>> r["order"][:5]      # the five channels whose removal costs the target logit most
    """
    if method not in CHANNEL_METHODS:
        raise BadInputError(f"method={method!r}: choose one of {', '.join(CHANNEL_METHODS)}")
    y = _check(model, pixels, layer, labels, batch_size)
    started = time.perf_counter()
    pixels = pixels.to(model.device, model.dtype).detach()
    tensors: dict[str, torch.Tensor] = {}
    with inference_context(model.module):
        run = _Replay(model, pixels, layer, batch_size)
        n, c = len(pixels), run.channels
        targets = run.logits.argmax(1) if y is None else y.to(run.logits.device)
        rows = torch.arange(n)
        clean = run.logits[rows, targets]
        if method == "activation":
            scores = run.acts.abs().float().mean(dim=[d for d in range(run.acts.dim()) if d != 1])
        elif method == "taylor":
            scores = _taylor(run, targets, progress)
        else:
            drops = torch.empty(n, c)
            correct = torch.empty(n, c, dtype=torch.bool)
            per_pass = max(1, batch_size // n)  # channels ablated in one batch
            for first in range(0, c, per_pass):
                chans = torch.arange(first, min(first + per_pass, c))
                keep = torch.ones(len(chans), n, c)
                keep[torch.arange(len(chans)), :, chans] = 0  # row j zeroes channel chans[j]
                logits = run.run(rows.repeat(len(chans)), keep.reshape(-1, c)).reshape(
                    len(chans), n, -1
                )
                drops[:, chans] = (clean[None] - logits[:, rows, targets]).T.cpu()
                correct[:, chans] = (logits.argmax(-1) == targets[None]).T.cpu()
                if progress is not None:
                    progress(int(chans[-1]) + 1, c)
            scores = drops.mean(0)
            tensors["score_drops"] = drops
            if y is not None:
                base = (run.logits.argmax(1) == targets).float().mean().cpu()
                tensors["accuracy_drops"] = base - correct.float().mean(0)
    scores = scores.detach().float().cpu()
    order = torch.argsort(scores, descending=True, stable=True)
    tensors.update(
        {"channel_importance": scores, "scores": scores, "order": order, "targets": targets.cpu()}
    )
    params: dict[str, object] = {
        "method": method,
        "layer": layer,
        "channels": c,
        "images": n,
        "labelled": y is not None,
        "accuracy": float((run.logits.argmax(1) == targets).float().mean())
        if y is not None
        else None,
        "replay": run.replay,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return Result(
        "channel_importance",
        tensors,
        make_provenance(model, f"channels_{method}", params=params, layer=layer),
    )


def _taylor(run: _Replay, targets: torch.Tensor, progress: ProgressFn | None) -> torch.Tensor:
    """``mean_n |sum_{h,w} A dS/dA|`` with ``dS/dA`` taken at the stored activation."""
    n = len(run.x)
    total = torch.zeros(run.channels, dtype=torch.float64)
    starts = list(range(0, n, run.batch_size))
    for done, start in enumerate(starts, 1):
        idx = torch.arange(start, min(start + run.batch_size, n))
        acts = run.acts[idx].clone().requires_grad_(True)
        with torch.enable_grad():
            # without replay the lower network runs too, its output replaced by the same leaf
            inputs = run.x[idx[:1]] if run.replay else run.x[idx]
            with edit_output(run.model.module, run.layer, _replace_by(acts)):
                logits = run.model.module(inputs)
            score = logits.gather(1, targets[idx, None]).sum()
            (grad,) = torch.autograd.grad(score, acts)
        per_image = (
            (acts.detach() * grad).flatten(2).sum(2) if acts.dim() == 4 else acts.detach() * grad
        )
        total += per_image.abs().double().sum(0).cpu()
        if progress is not None:
            progress(done, len(starts))
    return (total / n).float()


def pruning_curve(
    model: Model,
    pixels: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    layer: str,
    orders: dict[str, Sequence[int] | torch.Tensor],
    *,
    counts: Sequence[int] | None = None,
    random_orders: int = 5,
    seed: int = 0,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> Result:
    """Accuracy as the channels of ``layer`` are zeroed in each given order and at random.

    Parameters
    ----------
    model, pixels, layer, batch_size
        As in :func:`channel_importance`.
    labels
        True classes ``(N,)``.
    orders
        Named removal orders, each a permutation of the channel indices, the first removed
        first (to prune, the *least* important first: ``importance["order"].flip(0)``).
    counts
        Numbers of removed channels to measure (default: 0 to C in about 16 steps).
    random_orders
        Random permutations averaged for the ``"random"`` curve (seeded by ``seed``).

    Returns
    -------
    Result
        Kind ``"pruning_curve"``: ``counts (K,)``, ``accuracy (O, K)`` (one row per order
        in ``orders``, then ``random`` as the mean of the random rows), ``random (R, K)``.
        Params: ``names`` of the rows, ``layer``, ``channels``, ``images``, ``seed``,
        ``random_orders``, ``replay``.
    """
    if labels is None:
        raise BadInputError(
            "labels: a pruning curve measures accuracy, so it needs the true class of every image"
        )
    _check(model, pixels, layer, None, batch_size)
    y = _as_labels(labels, len(pixels))
    if not orders:
        raise BadInputError("orders: give at least one named removal order")
    if isinstance(random_orders, bool) or not isinstance(random_orders, int) or random_orders < 1:
        raise BadInputError(f"random_orders must be a whole number >= 1, got {random_orders!r}")
    started = time.perf_counter()
    pixels = pixels.to(model.device, model.dtype).detach()
    with inference_context(model.module):
        run = _Replay(model, pixels, layer, batch_size)
        n, c = len(pixels), run.channels
        perms: dict[str, torch.Tensor] = {}
        for name, order in orders.items():
            perm = torch.as_tensor(order, dtype=torch.long).flatten().cpu()
            if sorted(perm.tolist()) != list(range(c)):
                raise BadInputError(
                    f"order {name!r} must be a permutation of the {c} channels of {layer!r}"
                )
            perms[name] = perm
        if counts is None:
            step = max(1, c // 16)
            counts = sorted({*range(0, c, step), c})
        ks = [int(k) for k in counts]
        if any(k < 0 or k > c for k in ks):
            raise BadInputError(f"counts must lie in [0, {c}], got {ks}")
        gen = torch.Generator().manual_seed(seed)
        randoms = [torch.randperm(c, generator=gen) for _ in range(random_orders)]
        all_orders = [*perms.values(), *randoms]
        y = y.to(run.logits.device)
        rows = torch.arange(n)
        accuracy = torch.empty(len(all_orders), len(ks))
        per_pass = max(1, batch_size // n)
        jobs = [(i, j) for i in range(len(all_orders)) for j in range(len(ks))]
        for start in range(0, len(jobs), per_pass):
            chunk = jobs[start : start + per_pass]
            keep = torch.ones(len(chunk), n, c)
            for row, (i, j) in enumerate(chunk):
                keep[row, :, all_orders[i][: ks[j]]] = 0
            logits = run.run(rows.repeat(len(chunk)), keep.reshape(-1, c)).reshape(
                len(chunk), n, -1
            )
            hits = (logits.argmax(-1) == y[None]).float().mean(1).cpu()
            for row, (i, j) in enumerate(chunk):
                accuracy[i, j] = hits[row]
            if progress is not None:
                progress(min(start + per_pass, len(jobs)), len(jobs))
    random_rows = accuracy[len(perms) :]
    table = torch.cat([accuracy[: len(perms)], random_rows.mean(0, keepdim=True)])
    params: dict[str, object] = {
        "names": [*perms, "random"],
        "layer": layer,
        "channels": c,
        "images": n,
        "counts": ks,
        "seed": seed,
        "random_orders": random_orders,
        "replay": run.replay,
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {
        "pruning_curve": table,
        "accuracy": table,
        "counts": torch.tensor(ks),
        "random": random_rows,
    }
    return Result(
        "pruning_curve",
        tensors,
        make_provenance(model, "pruning_curve", params=params, layer=layer),
    )
