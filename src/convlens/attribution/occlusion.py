"""Occlusion (Zeiler & Fergus 2014), exact and incremental.

A window of ``patch`` pixels slides over the image by ``stride``; each position is
filled (black, the image's mean colour, a blurred copy or a grey level) and the drop of
the target score is recorded. Every pixel gets the average drop over the windows that
cover it, exactly as Captum's ``Occlusion`` does.

Most of that work is redundant: a window only changes the activations inside its
receptive field. With ``incremental=True`` the network is traced once with
:mod:`torch.fx` (every module without children is one node) and run as a graph:

1. the clean image runs once and every node's activation is kept;
2. for a batch of windows, an activation is a *patch*: the values inside a box (one box
   per window, all of one size) over the clean activation, which holds everywhere else;
3. a convolution or pooling node computes only the outputs whose input window meets the
   box: it gathers the box plus its kernel halo from the clean input, padded as the
   layer pads it (TF ``'SAME'`` padding of :class:`~convlens.models.efficientnet_lite.SamePadConv2d`
   is computed for the full map, then applied explicitly), overlays the patch and runs
   the convolution without padding: equal to the full computation on that box;
4. elementwise nodes (BatchNorm in eval mode, the ReLU family, 1x1 convolutions, sums
   of branches) work on the box values (branches are first re-boxed to a common box);
5. once a box covers half of its map, or at any node of another kind (global pooling,
   flatten, linear ...), the patch is pasted into copies of the clean map and the rest
   of the network runs on the batch as usual.

Models that ``torch.fx`` cannot trace (data-dependent control flow), whose traced graph
does not reproduce the module's output, and neuron targets fall back to the brute force:
every occluded image through the whole module, in batches (``incremental=False``).
Both paths give the same map to float tolerance (tested).
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from convlens.attribution.base import register_method
from convlens.blur import gaussian_blur, gaussian_radius
from convlens.errors import BadInputError, TargetError
from convlens.hooks import inference_context
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.targets import Target, TargetLike, resolve_target

__all__ = ["occlusion", "window_starts"]


#: A patch whose box covers at least this share of its map is pasted into full maps.
DENSE_SHARE = 0.5
#: Activations of occluded batches are kept channels-last: the same numbers, faster
#: convolutions on CPU (oneDNN works in NHWC).
_LAYOUT = torch.channels_last


# -- the method --------------------------------------------------------------------------


@register_method("occlusion", reduce="sum", paper="Zeiler & Fergus 2014, arXiv:1311.2901")
def occlusion(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    patch: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    fill: str | float = "zero",
    batch_size: int = 64,
    output: str = "score",
    incremental: bool = True,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Occlusion sensitivity: the average drop of the target score when a window is filled.

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2014,
    arXiv:1311.2901. For windows ``w`` (``patch`` pixels, moved by ``stride``),
    ``A[c, i, j] = mean_{w covering (i, j)} ( S(x) - S(x with w filled) )``, the same for
    every channel. ``S`` is the target's score (the logit for a class) or, with
    ``output="probability"``, the class's softmax probability.

    Windows are Captum's: along an axis of length ``L`` they start at ``0, s, 2s, ...``,
    ``ceil((L - p) / s) + 1`` of them, and the last one is cut off at the border when
    ``s`` does not divide ``L - p``. Identical to ``captum.attr.Occlusion`` with
    ``sliding_window_shapes=(C, p, p)``, ``strides=(C, s, s)`` and the same baseline.

    Parameters
    ----------
    model, x, target
        See :func:`~convlens.attribution.base.explain`; default target: the predicted class.
    patch
        Window size in pixels, ``p`` or ``(p_h, p_w)``; at most the image size. Default 16,
        or half the shorter side on images smaller than 32 px (4 on 8x8 digits).
    stride
        Step between windows, ``s`` or ``(s_h, s_w)``; at most the patch (every pixel is
        covered), unless the patch spans the whole axis. Default half the patch.
    fill
        What a window shows, in pixel space (converted with ``model.normalize``):
        ``"zero"`` black, ``"mean"`` the image's mean colour, ``"blur"`` the image blurred
        by a Gaussian of ``sigma = max(patch) / 2`` pixels, or a float grey level in [0, 1].
    batch_size
        Occluded windows evaluated together.
    output
        ``"score"`` (drop of the logit / neuron / callable score) or ``"probability"``
        (drop of the softmax probability; class targets only).
    incremental
        Recompute only what each window changes (module docstring); ``False`` runs every
        occluded image through the whole model. Same result.
    progress
        ``progress(done, total)`` after each batch, counting occluded images
        (``total`` = images x windows).

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)`` like ``x``: positive where hiding the pixels lowers the score.

    Raises
    ------
    BadInputError
        Patch or stride out of range, unknown fill or output, a probability drop asked for
        a neuron or callable target.

    Examples
    --------
    >>> drop = occlusion(model, x, 282, patch=16, stride=8, fill="mean")
    """
    if patch is None:  # 16 px windows, kept inside small inputs
        patch = min(16, max(1, min(x.shape[-2:]) // 2))
    if stride is None:
        stride = (
            max(1, patch // 2)
            if isinstance(patch, int)
            else cast("tuple[int, int]", tuple(max(1, p // 2) for p in patch))
        )
    _check_options(x, patch, stride, fill, batch_size, output)
    (ph, pw), (sh, sw) = _pair(patch), _pair(stride)
    h, w = x.shape[-2:]
    starts_y, starts_x = window_starts(h, ph, sh), window_starts(w, pw, sw)
    resolved = resolve_target(model, target, x.shape[0])
    if output == "probability" and resolved.kind not in ("class", "predicted"):
        raise BadInputError(
            f"output='probability' needs a class target, not a {resolved.kind} target; use output='score'"
        )
    with inference_context(model.module), torch.no_grad():
        resolved = _class_target(model, x, resolved)
        engine = _trace(model.module) if incremental and resolved.kind != "neuron" else None
        boxes = _window_boxes(starts_y, starts_x, (ph, pw), x.device)
        fills = torch.cat(
            [_fill_image(model, x[n : n + 1], fill, max(ph, pw)) for n in range(x.shape[0])]
        )
        runner = _Runner(model, resolved, output, boxes, (ph, pw), batch_size, progress, x.shape[0])
        drops = runner.run(
            x.contiguous(memory_format=_LAYOUT), fills.contiguous(memory_format=_LAYOUT), engine
        )
        heat = torch.stack([_average(d, starts_y, starts_x, (ph, pw), (h, w)) for d in drops]).to(
            x.dtype
        )
    return heat[:, None].expand(-1, x.shape[1], -1, -1).contiguous()


def window_starts(length: int, patch: int, stride: int) -> list[int]:
    """Start of each window along an axis: ``0, s, ..., `` ``ceil((L - p) / s) + 1`` of
    them (Captum's grid; the last window may run past the border and is cut there)."""
    return [i * stride for i in range(math.ceil((length - patch) / stride) + 1)]


# -- options, windows, fill, scores ------------------------------------------------------


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check_options(
    x: torch.Tensor, patch: Any, stride: Any, fill: Any, batch_size: Any, output: str
) -> None:
    if x.dim() != 4:
        raise BadInputError(f"x must be an image batch (N, C, H, W), got shape {tuple(x.shape)}")
    size = tuple(x.shape[-2:])
    for name, value in (("patch", patch), ("stride", stride)):
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, (tuple, list))
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        )
        if not ok or min(_pair(value)) < 1:
            raise BadInputError(
                f"{name}={value!r}: pass a positive int or a pair (height, width) of positive ints"
            )
    for p, s, n, axis in zip(_pair(patch), _pair(stride), size, ("height", "width")):
        if p > n:
            raise BadInputError(
                f"patch={patch!r} is larger than the image {axis} {n}; use a patch of at most {n} pixels"
            )
        if s > p and p < n:
            raise BadInputError(
                f"stride={stride!r} is larger than patch={patch!r}: some pixels would never be occluded; use stride <= patch"
            )
    if not (
        fill in ("zero", "mean", "blur")
        or (isinstance(fill, (int, float)) and not isinstance(fill, bool))
    ):
        raise BadInputError(
            f"fill={fill!r}: choose 'zero', 'mean', 'blur' or a pixel value in [0, 1]"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(
            f"batch_size={batch_size!r}: pass a positive int (windows evaluated together)"
        )
    if output not in ("score", "probability"):
        raise BadInputError(
            f"output={output!r}: choose 'score' (logit drop) or 'probability' (softmax drop)"
        )


def _fill_image(model: Model, x1: torch.Tensor, fill: str | float, patch: int) -> torch.Tensor:
    """What a window shows, in input space, ``(1, C, H, W)``."""
    if fill == "blur":
        # blurring commutes with the per-channel affine normalisation (the kernel sums to 1)
        sigma = patch / 2
        return gaussian_blur(
            x1, sigma, radius=gaussian_radius(sigma, 3.0, round_up=True), border="replicate"
        )
    if fill == "mean":
        pixels = model.denormalize(x1).mean(dim=(2, 3), keepdim=True)
    else:
        value = 0.0 if fill == "zero" else float(fill)
        pixels = torch.full((1, x1.shape[1], 1, 1), value, dtype=x1.dtype, device=x1.device)
    return model.normalize(pixels).expand_as(x1)


def _class_target(model: Model, x: torch.Tensor, target: Target) -> Target:
    """Explicit classes (one per image) for class targets; other targets as they are."""
    if target.kind not in ("class", "predicted"):
        return target
    logits = torch.cat([model.module(chunk) for chunk in x.split(32)])
    return target.scores_from_logits(logits)[1]


def _window_boxes(
    starts_y: list[int], starts_x: list[int], patch: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """``(n_windows, 4)`` rows ``(y0, y1, x0, x1)`` (row-major over the grid; ends not clipped)."""
    ys = torch.tensor(starts_y, device=device)
    xs = torch.tensor(starts_x, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    gy, gx = gy.reshape(-1), gx.reshape(-1)
    return torch.stack([gy, gy + patch[0], gx, gx + patch[1]], dim=1)


def _average(
    drops: torch.Tensor,
    starts_y: list[int],
    starts_x: list[int],
    patch: tuple[int, int],
    size: tuple[int, int],
) -> torch.Tensor:
    """Each pixel's mean drop over the windows covering it: ``(My^T D Mx) / counts``."""
    d = drops.double().view(len(starts_y), len(starts_x))
    masks = []
    for starts, p, n in zip((starts_y, starts_x), patch, size):
        pos = torch.arange(n, device=d.device)
        s = torch.tensor(starts, device=d.device)[:, None]
        masks.append(((pos >= s) & (pos < s + p)).double())
    my, mx = masks
    counts = my.sum(0)[:, None] * mx.sum(0)[None, :]
    return (my.T @ d @ mx) / counts


class _Runner:
    """Drops of every window of every image: by the incremental engine one image at a time,
    or by brute force in batches that mix windows of several images."""

    def __init__(
        self,
        model: Model,
        target: Target,
        output: str,
        boxes: torch.Tensor,
        patch: tuple[int, int],
        batch_size: int,
        progress: ProgressFn | None,
        n_images: int,
    ) -> None:
        self.model, self.target, self.output = model, target, output
        self.boxes, self.patch, self.batch_size, self.progress = boxes, patch, batch_size, progress
        self.total = n_images * boxes.shape[0]
        self.done = 0

    def run(self, x: torch.Tensor, fills: torch.Tensor, engine: _Engine | None) -> torch.Tensor:
        """``(N, n_windows)``: ``S(x) - S(x with w filled)`` for every image and window."""
        drops = torch.empty(x.shape[0], self.boxes.shape[0], dtype=torch.float64, device=x.device)
        first_brute = 0
        if engine is not None:
            for n in range(x.shape[0]):
                found = self.incremental(engine, n, x[n : n + 1], fills[n : n + 1])
                if found is None:
                    break  # the trace does not reproduce the module: brute force from here
                drops[n] = found
                first_brute = n + 1
        if first_brute < x.shape[0]:
            drops[first_brute:] = self.brute_force(x, fills, first_brute)
        return drops

    def scores(
        self, images: torch.Tensor, batch: torch.Tensor | None, output: Any = None
    ) -> torch.Tensor:
        """Target scores of a batch of (occluded) inputs of images ``images`` (one index per
        row); ``output`` is the model's output for them when it is already known."""
        if self.target.kind == "neuron":
            assert batch is not None
            scores = self.target.scores(self.model, batch)[0]
        else:
            if output is None:
                assert batch is not None
                output = self.model.module(batch)
            if self.target.kind == "callable":
                scores = _callable_scores(self.target, output)
            else:
                assert self.target.classes is not None
                values = output.softmax(dim=1) if self.output == "probability" else output
                scores = values.gather(1, self.target.classes.to(images.device)[images, None])[:, 0]
        if scores.shape != images.shape:
            raise TargetError(
                f"the target gave scores of shape {tuple(scores.shape)} for {images.shape[0]} images; it must give one score per image"
            )
        return scores

    def _advance(self, windows: int) -> None:
        self.done += windows
        if self.progress is not None:
            self.progress(self.done, self.total)

    def incremental(
        self, engine: _Engine, n: int, x1: torch.Tensor, fill1: torch.Tensor
    ) -> torch.Tensor | None:
        """Image ``n``'s drops by the engine, or None when its graph disagrees with the module."""
        reference = self.model.module(x1)
        clean = engine.run_clean(x1)
        if not _same_output(clean.output, reference):
            return None
        image = torch.full((1,), n, device=x1.device)
        base = self.scores(image, x1, reference)
        out = []
        for chunk in self.boxes.split(self.batch_size):
            output = engine.run_windows(clean, _input_patch(x1, fill1, chunk, self.patch))
            out.append(base - self.scores(image.expand(chunk.shape[0]), None, output))
            self._advance(chunk.shape[0])
        return torch.cat(out)

    def brute_force(self, x: torch.Tensor, fills: torch.Tensor, first: int) -> torch.Tensor:
        """Drops of images ``first ..`` with every occluded image through the whole module."""
        device, n_windows = x.device, self.boxes.shape[0]
        images = torch.arange(first, x.shape[0], device=device)
        base = torch.cat([self.scores(i, x[i]) for i in images.split(self.batch_size)])
        pairs = torch.arange(images.shape[0] * n_windows, device=device)
        out = []
        for chunk in pairs.split(self.batch_size):
            image, window = images[chunk // n_windows], chunk % n_windows
            occluded = _occluded(x[image], fills[image], self.boxes[window])
            out.append(base[chunk // n_windows] - self.scores(image, occluded))
            self._advance(chunk.shape[0])
        return torch.cat(out).view(images.shape[0], n_windows)


def _callable_scores(target: Target, output: Any) -> torch.Tensor:
    assert target.fn is not None
    scores = target.fn(output)
    n = output.shape[0] if isinstance(output, torch.Tensor) else -1
    if not isinstance(scores, torch.Tensor) or scores.shape != (n,):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise TargetError(
            f"target callable must return a tensor of shape ({n},), one score per image; it returned {got}"
        )
    return scores


def _same_output(a: Any, b: Any) -> bool:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1.0)))


def _occluded(images: torch.Tensor, fills: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)``: each image with its window ``boxes[b]`` filled from ``fills[b]``."""
    h, w = images.shape[-2:]
    ys = torch.arange(h, device=images.device)
    xs = torch.arange(w, device=images.device)
    in_y = (ys >= boxes[:, :1]) & (ys < boxes[:, 1:2])
    in_x = (xs >= boxes[:, 2:3]) & (xs < boxes[:, 3:4])
    mask = in_y[:, None, :, None] & in_x[:, None, None, :]
    return torch.where(mask, fills, images).contiguous(memory_format=_LAYOUT)


# -- the incremental engine --------------------------------------------------------------


@dataclass
class _Patch:
    """A batch of maps that equal ``clean`` outside one box per window.

    ``y``, ``x``: ``(B,)`` top-left corners; ``values``: ``(B, C, h, w)`` inside the boxes;
    ``clean``: ``(1, C, H, W)``, the clean image's map.
    """

    y: torch.Tensor
    x: torch.Tensor
    values: torch.Tensor
    clean: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        return self.values.shape[-2], self.values.shape[-1]

    def dense(self) -> torch.Tensor:
        """The full maps ``(B, C, H, W)``: copies of the clean map with the boxes pasted in."""
        b = self.values.shape[0]
        full = torch.empty(
            (b, *self.clean.shape[1:]),
            dtype=self.clean.dtype,
            device=self.clean.device,
            memory_format=_LAYOUT,
        )
        full.copy_(self.clean.expand_as(full))
        h, w = self.size
        device = self.y.device
        rows = self.y[:, None, None] + torch.arange(h, device=device)[:, None]
        cols = self.x[:, None, None] + torch.arange(w, device=device)
        batch = torch.arange(b, device=device)[:, None, None]
        full.permute(0, 2, 3, 1)[batch, rows, cols] = self.values.permute(0, 2, 3, 1)
        return full


@dataclass
class _Dense:
    """A value computed for the whole batch of windows (any object)."""

    value: Any


_SAME = object()  # a node whose value does not depend on the input: the clean value


def _input_patch(
    x1: torch.Tensor, fill1: torch.Tensor, boxes: torch.Tensor, patch: tuple[int, int]
) -> _Patch:
    """The occluded images as a patch: one box of the patch size per window, moved inside
    the image where Captum's window runs past the border (the box then also holds clean pixels)."""
    h, w = x1.shape[-2:]
    ph, pw = patch
    y = boxes[:, 0].clamp(max=h - ph)
    x = boxes[:, 2].clamp(max=w - pw)
    rows = y[:, None] + torch.arange(ph, device=y.device)
    cols = x[:, None] + torch.arange(pw, device=x.device)
    in_y = (rows < boxes[:, 1:2]) & (rows >= boxes[:, :1])
    in_x = (cols < boxes[:, 3:4]) & (cols >= boxes[:, 2:3])
    image = x1[0][:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)
    filled = fill1[0][:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)
    mask = (in_y[:, :, None] & in_x[:, None, :])[:, None]
    return _Patch(y, x, torch.where(mask, filled, image).contiguous(memory_format=_LAYOUT), x1)


def _gather(
    source: torch.Tensor,
    pad: tuple[int, int],
    p: _Patch,
    top: torch.Tensor,
    left: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """``(B, C, R, Rx)``: rows ``top .. top+R`` and columns ``left .. left+Rx`` (map
    coordinates, possibly in the padding) of each window's map: ``p``'s values inside its
    box, ``source`` (the clean map, padded by ``pad`` = (top, left)) elsewhere.

    Few large operations rather than one per window (each operation may wake the thread
    pool): one gather of the crops, then one paste per group of windows whose boxes sit
    alike in their crops (usually a handful; one for the whole batch in the interior)."""
    r, rx = size
    h, w = p.size
    device = top.device
    rows = (top + pad[0])[:, None, None] + torch.arange(r, device=device)[:, None]
    cols = (left + pad[1])[:, None, None] + torch.arange(rx, device=device)
    crop = source[0].permute(1, 2, 0)[rows, cols]  # (B, R, Rx, C), channels-last memory
    values = p.values.permute(0, 2, 3, 1)
    groups: dict[tuple[int, int], list[int]] = {}
    for b, key in enumerate(zip((p.y - top).tolist(), (p.x - left).tolist())):
        groups.setdefault(key, []).append(b)
    for (dy, dx), members in groups.items():
        r0, r1, c0, c1 = max(dy, 0), min(dy + h, r), max(dx, 0), min(dx + w, rx)
        if r0 >= r1 or c0 >= c1:
            continue
        part = values[:, r0 - dy : r1 - dy, c0 - dx : c1 - dx]
        if len(groups) == 1:
            crop[:, r0:r1, c0:c1] = part
        else:
            index = torch.tensor(members, device=device)
            crop[index, r0:r1, c0:c1] = part[index]
    return crop.permute(0, 3, 1, 2)


def _floor_div(a: torch.Tensor, b: int) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


@dataclass(frozen=True)
class _WindowOp:
    """A convolution or pooling as ``fn(padded input)`` with its geometry per axis (y, x)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: Callable[
        [int, int], tuple[int, int, int, int]
    ]  # (top, bottom, left, right) for an input size
    pad_value: float
    fn: Callable[[torch.Tensor], torch.Tensor]

    def padded(self, t: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pads(t.shape[-2], t.shape[-1])
        return F.pad(t, (left, right, top, bottom), value=self.pad_value)

    def pointwise(self, h: int, w: int) -> bool:
        return self.kernel == (1, 1) and self.stride == (1, 1) and not any(self.pads(h, w))

    def on_patch(self, p: _Patch, padded: torch.Tensor, out_clean: torch.Tensor) -> _Patch:
        """The outputs whose input window meets ``p``'s box, from a crop with the kernel halo."""
        pads = self.pads(p.clean.shape[-2], p.clean.shape[-1])
        starts, sizes, crops = [], [], []
        for axis, (corner, extent) in enumerate(zip((p.y, p.x), p.size)):
            k, s, d = self.kernel[axis], self.stride[axis], self.dilation[axis]
            before, n_out = pads[2 * axis], out_clean.shape[-2 + axis]
            lo = (-_floor_div(-(corner + before - d * (k - 1)), s)).clamp(min=0)  # ceil
            hi = _floor_div(corner + extent - 1 + before, s).clamp(max=n_out - 1)
            length = min(max(1, int((hi - lo + 1).max())), n_out)
            start = lo.clamp(max=n_out - length)
            starts.append(start)
            sizes.append(length)
            crops.append((length - 1) * s + d * (k - 1) + 1)
        tops = [
            start * s - pads[2 * axis] for axis, (start, s) in enumerate(zip(starts, self.stride))
        ]
        crop = _gather(padded, (pads[0], pads[2]), p, tops[0], tops[1], (crops[0], crops[1]))
        return _Patch(starts[0], starts[1], self.fn(crop), out_clean)


def _window_op(m: nn.Module) -> _WindowOp | None:
    """The padding-free form of a convolution or pooling module, or None."""
    if isinstance(m, nn.Conv2d):
        k, s, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
        same_padding = getattr(m, "same_padding", None)
        if callable(same_padding):  # TF 'SAME' (EfficientNet-Lite): depends on the input size

            def pads(h: int, w: int) -> tuple[int, int, int, int]:
                left, right, top, bottom = same_padding(h, w)
                return top, bottom, left, right

        elif m.padding_mode != "zeros":
            return None  # reflect / replicate padding reads occluded pixels: not a constant
        elif m.padding == "same":
            totals = [di * (ki - 1) for ki, di in zip(k, d)]
            fixed = (
                totals[0] // 2,
                totals[0] - totals[0] // 2,
                totals[1] // 2,
                totals[1] - totals[1] // 2,
            )
            pads = lambda h, w: fixed  # noqa: E731
        else:
            py, px = (0, 0) if m.padding == "valid" else _pair(m.padding)  # type: ignore[arg-type]
            pads = lambda h, w: (py, py, px, px)  # noqa: E731
        conv = lambda t: F.conv2d(t, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)  # noqa: E731
        return _WindowOp(k, s, d, pads, 0.0, conv)
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and not m.ceil_mode:
        k = _pair(m.kernel_size)
        s = _pair(m.stride if m.stride else m.kernel_size)
        py, px = _pair(m.padding)
        pool_pads = lambda h, w: (py, py, px, px)  # noqa: E731
        if isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                return None
            d = _pair(m.dilation)
            return _WindowOp(k, s, d, pool_pads, -math.inf, lambda t: F.max_pool2d(t, k, s, 0, d))
        if not m.count_include_pad and (py or px):
            return None
        return _WindowOp(
            k,
            s,
            (1, 1),
            pool_pads,
            0.0,
            lambda t: F.avg_pool2d(t, k, s, 0, False, True, m.divisor_override),
        )
    return None


_ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout2d,
)  # fmt: skip
_ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
    operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.relu, torch.sigmoid, torch.tanh,
    F.relu, F.relu6, F.leaky_relu, F.hardtanh, F.elu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
}  # fmt: skip
_ELEMENTWISE_METHODS = {
    "add",
    "sub",
    "mul",
    "div",
    "add_",
    "sub_",
    "mul_",
    "div_",
    "relu",
    "relu_",
    "sigmoid",
    "tanh",
    "clamp",
    "clamp_",
}
_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}


def _elementwise_module(m: nn.Module) -> bool:
    if isinstance(m, nn.BatchNorm2d):
        return not m.training and m.running_mean is not None  # eval mode with running statistics
    return isinstance(m, _ELEMENTWISE_MODULES)


def _mutates(node: fx.Node, module: nn.Module | None) -> bool:
    """Whether the node may write into its input (in-place activation, ``x += y`` ...)."""
    if module is not None:
        return bool(getattr(module, "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_function":
        if node.target in _INPLACE_FUNCTIONS or node.kwargs.get("inplace") is True:
            return True
        try:
            bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return bound.arguments.get("inplace") is True
    return False


class _LeafTracer(fx.Tracer):
    """Every module without children is one node (so ``SamePadConv2d`` is not traced into)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return not any(True for _ in m.children()) or super().is_leaf_module(
            m, module_qualified_name
        )


@dataclass
class _Clean:
    """The clean image's value at every node, and padded inputs of window nodes."""

    values: dict[fx.Node, Any]
    padded: dict[fx.Node, torch.Tensor]

    @property
    def output(self) -> Any:
        return self.values[next(n for n in reversed(self.values) if n.op == "output")]


def _trace(module: nn.Module) -> _Engine | None:
    """The module as a graph, or None when ``torch.fx`` cannot trace it (brute force then)."""
    try:
        graph = _LeafTracer().trace(module)
    except Exception:  # untraceable forward (data-dependent control flow, ...): fall back
        return None
    if sum(n.op == "placeholder" for n in graph.nodes) != 1:
        return None
    return _Engine(module, graph)


def _clone_tensors(args: Any) -> Any:
    return fx.node.map_aggregate(args, lambda a: a.clone() if isinstance(a, torch.Tensor) else a)


def _trivially_broadcast(value: Any) -> bool:
    """A constant operand of an elementwise op that is the same at every position."""
    if not isinstance(value, torch.Tensor):
        return not isinstance(value, (list, tuple, dict))
    return value.dim() == 0 or (2 <= value.dim() <= 4 and tuple(value.shape[-2:]) == (1, 1))


class _Engine:
    """Runs a traced module on the clean image, then on batches of windows as patches."""

    def __init__(self, module: nn.Module, graph: fx.Graph) -> None:
        self.root = module
        self.nodes = list(graph.nodes)
        self.modules = {
            n: module.get_submodule(str(n.target)) for n in self.nodes if n.op == "call_module"
        }
        self.windows = {n: op for n, m in self.modules.items() if (op := _window_op(m)) is not None}
        self.mutates = {n for n in self.nodes if _mutates(n, self.modules.get(n))}
        self.checked = False
        self.patched: list[str] = []  # nodes computed on boxes in the last batch (for tests)
        self._batch = 0

    # -- plain execution
    def _call(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        if node in self.mutates:  # work on copies: cached and shared values stay intact
            args, kwargs = _clone_tensors(args), _clone_tensors(kwargs)
        if node.op == "call_module":
            return self.modules[node](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)  # type: ignore[operator]
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        if node.op == "get_attr":
            value: Any = self.root
            for part in str(node.target).split("."):
                value = getattr(value, part)
            return value
        raise AssertionError(f"unexpected fx node {node.op}")

    def run_clean(self, x1: torch.Tensor) -> _Clean:
        """Every node's value for the clean image (and a one-time check of the window ops)."""
        values: dict[fx.Node, Any] = {}
        padded: dict[fx.Node, torch.Tensor] = {}
        for node in self.nodes:
            if node.op == "placeholder":
                values[node] = x1
                continue
            args = fx.node.map_arg(node.args, values.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, values.__getitem__)
            if node.op == "output":
                values[node] = args[0]
                continue
            values[node] = self._call(node, args, kwargs)
            op = self.windows.get(node)
            if (
                op is not None
                and len(args) == 1
                and not kwargs
                and isinstance(args[0], torch.Tensor)
                and args[0].dim() == 4
            ):
                padded[node] = op.padded(args[0])
        if not self.checked:
            self._check_window_ops(values, padded)
        return _Clean(values, padded)

    def _check_window_ops(
        self, values: dict[fx.Node, Any], padded: dict[fx.Node, torch.Tensor]
    ) -> None:
        """Keep only window ops whose padding-free form reproduces the module (others run dense)."""
        for node in list(self.windows):
            out = values[node]
            ok = node in padded and isinstance(out, torch.Tensor)
            if ok:
                mine = self.windows[node].fn(padded[node])
                ok = mine.shape == out.shape and bool(
                    torch.allclose(
                        mine, out, rtol=1e-4, atol=1e-5 * max(1.0, float(out.abs().max()))
                    )
                )
            if not ok:
                del self.windows[node]
                padded.pop(node, None)
        self.checked = True

    # -- windows
    def run_windows(self, clean: _Clean, patch: _Patch) -> Any:
        """The module's output for each window's occluded image (batch of windows)."""
        state: dict[fx.Node, Any] = {}
        self.patched = []
        self._batch = patch.values.shape[0]
        for node in self.nodes:
            if node.op == "placeholder":
                state[node] = patch
            elif node.op == "get_attr" or all(state[a] is _SAME for a in node.all_input_nodes):
                state[node] = _SAME
            elif node.op == "output":
                return self._dense_args(node, state, clean)[0][0]
            else:
                patched = self._patched(node, state, clean)
                if patched is None:
                    args, kwargs = self._dense_args(node, state, clean)
                    state[node] = _Dense(self._call(node, args, kwargs))
                elif (
                    patched.size[0] * patched.size[1]
                    >= DENSE_SHARE * patched.clean.shape[-2] * patched.clean.shape[-1]
                ):
                    state[node] = _Dense(patched.dense())
                else:
                    state[node] = patched
        raise AssertionError("the traced graph has no output node")

    def _dense_args(
        self, node: fx.Node, state: dict[fx.Node, Any], clean: _Clean
    ) -> tuple[Any, Any]:
        batch = self._batch

        def value(a: fx.Node) -> Any:
            s = state[a]
            if isinstance(s, _Patch):
                dense = s.dense()
                state[a] = _Dense(dense)  # later users share the pasted maps
                return dense
            if isinstance(s, _Dense):
                return s.value
            v = clean.values[a]
            return (
                v.expand(batch, *v.shape[1:])
                if node.op == "output" and isinstance(v, torch.Tensor) and v.dim()
                else v
            )

        return fx.node.map_arg(node.args, value), fx.node.map_arg(node.kwargs, value)

    def _patched(self, node: fx.Node, state: dict[fx.Node, Any], clean: _Clean) -> _Patch | None:
        """The node's value as a patch, or None when it must run on dense maps."""
        inputs = [state[a] for a in node.all_input_nodes]
        if any(isinstance(s, _Dense) for s in inputs):
            return None
        patches = [s for s in inputs if isinstance(s, _Patch)]
        out_clean = clean.values[node]
        shape = patches[0].clean.shape
        if (
            not isinstance(out_clean, torch.Tensor)
            or out_clean.dim() != 4
            or any(p.clean.shape[-2:] != shape[-2:] for p in patches)
        ):
            return None
        module = self.modules.get(node)
        op = self.windows.get(node)
        if (
            op is not None
            and len(node.args) == 1
            and not node.kwargs
            and not op.pointwise(shape[-2], shape[-1])
        ):
            self.patched.append(node.name)
            return op.on_patch(patches[0], clean.padded[node], out_clean)
        elementwise = (
            (op is not None and len(node.args) == 1 and not node.kwargs)  # a 1x1 convolution
            or (module is not None and op is None and _elementwise_module(module))
            or (node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS)
            or (node.op == "call_method" and node.target in _ELEMENTWISE_METHODS)
        )
        if not elementwise or out_clean.shape[-2:] != shape[-2:]:
            return None
        same_args = [clean.values[a] for a in node.all_input_nodes if state[a] is _SAME]
        if not all(_trivially_broadcast(v) for v in same_args):
            return None
        y, x, size = _union_box(patches, shape[-2], shape[-1])

        def value(a: fx.Node) -> Any:
            s = state[a]
            if isinstance(s, _Patch):
                return _rebox(s, y, x, size)
            return clean.values[a]

        args = fx.node.map_arg(node.args, value)
        kwargs = fx.node.map_arg(node.kwargs, value)
        out = op.fn(*cast(Any, args)) if op is not None else self._call(node, args, kwargs)
        if not isinstance(out, torch.Tensor) or tuple(out.shape[-2:]) != size:
            return None
        self.patched.append(node.name)
        return _Patch(y, x, out, out_clean)


def _union_box(
    patches: list[_Patch], h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """One box per window holding every patch's box, all of one size, inside the map."""
    corners, sizes = [], []
    for axis, n in enumerate((h, w)):
        lo = torch.stack([(p.y if axis == 0 else p.x) for p in patches]).amin(0)
        hi = torch.stack([(p.y if axis == 0 else p.x) + p.size[axis] for p in patches]).amax(0)
        length = min(int((hi - lo).max()), n)
        corners.append(lo.clamp(max=n - length))
        sizes.append(length)
    return corners[0], corners[1], (sizes[0], sizes[1])


def _rebox(p: _Patch, y: torch.Tensor, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``p``'s maps inside another box (clean values where ``p``'s box does not reach)."""
    if p.size == size and torch.equal(p.y, y) and torch.equal(p.x, x):
        return p.values
    return _gather(p.clean, (0, 0), p, y, x, size)
