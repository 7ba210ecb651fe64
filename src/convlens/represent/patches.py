"""Maximally activating image patches: per channel, the k dataset patches that excite it most.

The "top patches" of Zeiler & Fergus 2014 ("Visualizing and Understanding Convolutional
Networks", arXiv:1311.2901, Fig. 2) and Girshick et al. 2014 (R-CNN, arXiv:1311.2524,
Fig. 4): for a channel ``c`` of layer ``L`` with activations ``A_c(x)[y, x']``, rank the
images of a dataset by

    score_c(image) = max_{y, x'} A_c(image)[y, x']

and show, for each of the k best images, the input patch seen by the unit at the argmax
position ``(y*, x*)``. **One patch per image**, at its argmax: an image whose strongest
response is repeated at several places contributes once, so the grid shows k *different*
images (several patches of one texture photo would otherwise fill the grid). Ties in the
maximum take the first position in row-major order (``torch.argmax``) and, across images,
the earlier item.

The patch is the unit's receptive field from :func:`convlens.layers.layer_table`: unit
``(y, x)`` is centred on input pixel ``offset + (y, x) * stride`` and covers ``size``
pixels per axis. It is cut from the image at the model's input resolution (pixel space),
exactly as the network saw it; the part of the field outside the image is filled with the
pixel value whose input-space value is 0, which is what zero padding feeds the network.

A token layer ``(N, T, C)`` of a vision transformer is ranked on its patch grid
(:func:`convlens.tokens.tokens_to_grid`, class and register tokens dropped); the patch of
token ``(y, x)`` is the image square that token was embedded from. That is its nominal
field: attention lets every token see the whole image, so the square says where the token
sits, not all it saw.

Streaming, bounded memory: the dataset runner (:func:`convlens.data.run_dataset`) writes,
per item, per selected channel, the maximum and its flat argmax into resumable shards;
:func:`merge_top_k` then reads the shards one at a time (:func:`convlens.data.iter_shards`)
and keeps a running top-k of ``(value, item)`` per channel, so memory is
``O(channels * (k + shard_size))`` whatever the dataset size. Only the ``k * channels``
winning images are read again to cut the patches.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convlens.data.folders import LabelledItem
from convlens.data.images import load_image
from convlens.data.runner import default_decode_workers, iter_shards, run_dataset
from convlens.errors import BadInputError
from convlens.hooks import capture, eval_mode, forward_until_captured
from convlens.layers import ReceptiveField
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance
from convlens.tokens import token_grid, tokens_to_grid

__all__ = ["field_box", "merge_top_k", "top_patches"]


def field_box(rf: ReceptiveField, y: int, x: int) -> tuple[int, int, int, int]:
    """Pixel box ``(top, left, bottom, right)`` (half-open) of unit ``(y, x)``'s receptive field.

    The field of ``size`` pixels centred on ``offset + (y, x) * stride``; it may reach
    outside the image (negative or past the edge). A fractional centre (an even kernel)
    rounds the start down: such a field covers the pixels ``floor(centre - (size-1)/2)``
    onwards.
    """
    box = []
    for size, stride, offset, pos in zip(rf.size, rf.stride, rf.offset, (y, x)):
        centre = offset + pos * stride
        start = math.floor(centre - (size - 1) / 2 + 1e-9)
        box.append((start, start + round(size)))
    (top, bottom), (left, right) = box
    return top, left, bottom, right


def merge_top_k(
    shards: Iterable[tuple[Sequence[int], dict[str, np.ndarray]]], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Running top-k over shards of per-item maxima: ``(values, items, argmax)``, each ``(C, k')``.

    Each shard gives item indices and ``{"max": (n, C), "argmax": (n, C)}``. Rows are sorted
    by decreasing value, ties by increasing item index; ``k' = min(k, items seen)``.
    Memory: the current top-k plus one shard.
    """
    best_v: np.ndarray | None = None
    best_i: np.ndarray | None = None
    best_a: np.ndarray | None = None
    for index, arrays in shards:
        if not len(index):
            continue
        values = arrays["max"].T.astype(np.float64)  # (C, n)
        items = np.broadcast_to(np.asarray(index, dtype=np.int64), values.shape)
        argmax = arrays["argmax"].T.astype(np.int64)
        if best_v is not None and best_i is not None and best_a is not None:
            values = np.concatenate([best_v, values], axis=1)
            items = np.concatenate([best_i, items], axis=1)
            argmax = np.concatenate([best_a, argmax], axis=1)
        # lexsort: last key is primary. Decreasing value, then increasing item index.
        order = np.stack([np.lexsort((items[c], -values[c])) for c in range(values.shape[0])])[
            :, :k
        ]
        best_v = np.take_along_axis(values, order, axis=1)
        best_i = np.take_along_axis(items, order, axis=1)
        best_a = np.take_along_axis(argmax, order, axis=1)
    if best_v is None or best_i is None or best_a is None:
        raise BadInputError("no readable images: nothing to rank")
    return best_v, best_i, best_a


class _Loader:
    """Picklable loader (DataLoader workers): image file -> pixel space at the model's size."""

    def __init__(self, preprocessing: Any) -> None:
        self.preprocessing = preprocessing

    def __call__(self, path: Path) -> torch.Tensor:
        pixels, _ = self.preprocessing.to_pixels(load_image(path))
        return pixels


class _Maxima:
    """The runner's per-batch function: per item, per chosen channel, the maximum and its
    flat argmax. A class (not a closure) so forked workers and Ray actors can pickle it."""

    def __init__(self, model: Model, layer: str, channels: list[int]) -> None:
        self.model, self.layer, self.channels = model, layer, channels

    def __call__(self, pixels: torch.Tensor, _items: list[LabelledItem]) -> dict[str, torch.Tensor]:
        model = self.model
        x = model.normalize(pixels.to(model.device, model.dtype))
        with torch.no_grad():
            # fast mode: the batch-norm-folded copy unless the layer is a folded convolution
            module = model.forward_module([self.layer])
        with (
            torch.no_grad(),
            eval_mode(module),
            capture(module, [self.layer], stop=True) as acts,
        ):
            forward_until_captured(module, x)
            a = acts[self.layer]
            if a.dim() == 3:  # tokens (B, T, C) on their patch grid
                a = tokens_to_grid(a, input_size=(int(x.shape[-2]), int(x.shape[-1])))[0]
            a = a[:, torch.tensor(self.channels, device=x.device)].flatten(2)  # (B, C, H*W)
        values, argmax = a.max(dim=2)  # first position on ties
        return {"max": values.float().cpu(), "argmax": argmax.cpu()}


def top_patches(
    model: Model,
    items: Sequence[LabelledItem | str | Path],
    layer: str,
    channels: Sequence[int] | None = None,
    k: int = 9,
    *,
    work_dir: str | Path | None = None,
    batch_size: int = 32,
    shard_size: int = 256,
    engine: str = "local",
    workers: int = 1,
    decode_workers: int | None = None,
    guided: bool = False,
    patch_size: int | None = 128,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> Result:
    """Per channel of ``layer``, the ``k`` images that activate it most and the patch of each.

    Parameters
    ----------
    model
        The network.
    items
        Images (paths or :class:`~convlens.data.LabelledItem`), any number.
    layer
        Dotted layer name with a spatial ``(N, C, H, W)`` output.
    channels
        Channel indices (default: the first 8).
    k
        Images per channel.
    work_dir
        Folder for the runner's resumable shards of per-item maxima (default: a temporary
        folder, deleted afterwards). Rerunning with the same folder resumes.
    batch_size, shard_size
        Runner batch and shard sizes.
    engine, workers
        The runner's engine (``"local"``; ``"ray"`` when installed) and its worker count.
    decode_workers
        Processes that read, decode and resize the images ahead of the model, through a
        queue bounded to two batches per process (``None``: one with the local engine and
        one worker when torch's threads leave a CPU free, else 0; see
        :func:`~convlens.data.runner.default_decode_workers`).
    guided
        Also compute each patch's guided backprop (Springenberg et al. 2015) of the unit at
        its argmax, cut like the patch.
    patch_size
        Patches whose field is larger are downscaled (antialiased) to at most this side;
        None keeps the native size.
    overwrite
        Start ``work_dir`` again instead of resuming.
    progress
        ``progress(done, total)`` over the items.

    Returns
    -------
    Result
        Kind ``"patches"``: ``patches`` ``(C, k, 3, h, w)`` in pixel space, ``values``
        ``(C, k)`` (the maxima), ``items`` ``(C, k)`` (item indices), ``positions``
        ``(C, k, 2)`` (argmax ``y, x`` in the layer's map), ``boxes`` ``(C, k, 4)``
        (``top, left, bottom, right`` in input pixels, may reach outside the image),
        ``channels`` ``(C,)``, and with ``guided`` also ``guided`` ``(C, k, 3, h, w)``.
        ``sources`` lists the item paths, ``provenance["params"]["paths"]`` the path of
        each ``(channel, rank)``.
    """
    if k < 1:
        raise BadInputError(f"k is {k}; pass k >= 1")
    if patch_size is not None and patch_size < 4:
        raise BadInputError(f"patch_size is {patch_size}; pass at least 4 or None")
    if batch_size < 1 or shard_size < 1 or workers < 1:
        raise BadInputError("batch_size, shard_size and workers must be >= 1")
    name = _spatial_layer(model, layer)
    info = model.layer_info(name)
    grid = _token_grid(model, info.output_shape)
    if grid is not None and guided:
        raise BadInputError(
            f"layer {name!r} is a token layer: guided backprop patches need a convolutional layer (guided=False works)"
        )
    n_channels = (
        int(info.output_shape[-1] if grid is not None else info.output_shape[0])
        if info.output_shape
        else 0
    )
    chosen = list(range(min(8, n_channels))) if channels is None else [int(c) for c in channels]
    if not chosen:
        raise BadInputError("no channels selected")
    bad = [c for c in chosen if not 0 <= c < n_channels]
    if bad:
        raise BadInputError(
            f"channels {bad} are out of range: layer {name!r} has {n_channels} channels (0..{n_channels - 1})"
        )
    rf = info.receptive_field if grid is None else _patch_field(model, grid)
    if rf is None or rf.is_global:
        raise BadInputError(
            f"layer {name!r} has no spatial receptive field; pick a convolutional layer"
        )
    entries = [it if isinstance(it, LabelledItem) else LabelledItem(Path(it), None) for it in items]
    if not entries:
        raise BadInputError("no images given")
    started = time.perf_counter()
    loader = _Loader(model.preprocessing)
    config = {
        "method": "top_patches",
        "model": model.name,
        "weights_sha256": model.weights_sha256,
        "layer": name,
        "channels": chosen,
    }
    decoders = default_decode_workers(engine, workers, decode_workers)
    with tempfile.TemporaryDirectory(prefix="convlens-patches-") as tmp:
        run_dir = Path(work_dir) if work_dir is not None else Path(tmp)
        report = run_dataset(
            entries,
            _Maxima(model, name, chosen),
            run_dir,
            load=loader,
            batch_size=batch_size,
            shard_size=shard_size,
            config=config,
            overwrite=overwrite,
            progress=progress,
            engine=engine,
            workers=workers,
            num_workers=decoders,
        )
        values, winners, argmax = merge_top_k(iter_shards(run_dir), k)
    w_map = (
        grid[1]
        if grid is not None
        else int(info.output_shape[2])
        if info.output_shape and len(info.output_shape) == 3
        else 1
    )
    positions = np.stack([argmax // w_map, argmax % w_map], axis=-1)
    fill = model.denormalize(
        torch.zeros(1, model.channels, 1, 1, device=model.device, dtype=model.dtype)
    )[0, :, 0, 0].cpu()
    boxes = np.zeros((*values.shape, 4), dtype=np.int64)
    patches, guides = [], []
    cache: dict[int, torch.Tensor] = {}
    for ci, c in enumerate(chosen):
        row, grow = [], []
        for r in range(values.shape[1]):
            item = int(winners[ci, r])
            if item not in cache:
                cache = {item: loader(entries[item].path)}  # winners are often repeated in a row
            pixels = cache[item]
            y, x = int(positions[ci, r, 0]), int(positions[ci, r, 1])
            boxes[ci, r] = field_box(rf, y, x)
            row.append(_resize(_cut(pixels, boxes[ci, r], fill), patch_size))
            if guided:
                grow.append(
                    _resize(
                        _cut(
                            _guided(model, pixels, name, c, y, x),
                            boxes[ci, r],
                            torch.full((model.channels,), 0.5),
                        ),
                        patch_size,
                    )
                )
        patches.append(torch.stack(row))
        if guided:
            guides.append(torch.stack(grow))
    tensors = {
        "patches": torch.stack(patches),
        "values": torch.from_numpy(values.astype(np.float32)),
        "items": torch.from_numpy(winners),
        "positions": torch.from_numpy(positions),
        "boxes": torch.from_numpy(boxes),
        "channels": torch.tensor(chosen, dtype=torch.long),
    }
    if guided:
        tensors["guided"] = torch.stack(guides)
    paths = [[str(entries[int(i)].path) for i in row] for row in winners]
    params = {
        "k": k,
        "channels": chosen,
        "receptive_field": {
            "size": list(rf.size),
            "stride": list(rf.stride),
            "offset": list(rf.offset),
        },
        "paths": paths,
        "n_items": report.n_items,
        "n_done": report.n_done,
        "failed": [list(f) for f in report.failed],
        "engine": engine,
        "workers": workers,
        "decode_workers": decoders,
        "guided": guided,
        "patch_size": patch_size,
        "seconds": time.perf_counter() - started,
    }
    provenance = make_provenance(model, "top_patches", params=params, layer=name)
    return Result("patches", tensors, provenance, sources=[str(e.path) for e in entries])


def _spatial_layer(model: Model, layer: str) -> str:
    from convlens.layers import resolve_layer

    name, _ = resolve_layer(model.module, layer)
    info = model.layer_info(name)
    if info.output_shape is not None and len(info.output_shape) == 2:
        _token_grid(model, info.output_shape, name)  # raises when the tokens fill no grid
        return name
    if info.output_shape is None or len(info.output_shape) != 3:
        raise BadInputError(
            f"layer {name!r} outputs shape {info.output_shape}; top patches need a (C, H, W) feature map or (T, C) tokens"
        )
    return name


def _token_grid(
    model: Model, shape: tuple[int, ...] | None, name: str = ""
) -> tuple[int, int] | None:
    """``(h, w)`` of a token layer's patch grid, None for a feature map."""
    if shape is None or len(shape) != 2:
        return None
    try:
        h, w, _ = token_grid(shape[0], input_size=model.input_size, shape=("N", *shape))
    except BadInputError as err:
        raise BadInputError(f"layer {name!r}: {err}") from None
    return h, w


def _patch_field(model: Model, grid: tuple[int, int]) -> ReceptiveField:
    """The image square each token of an ``h x w`` grid was embedded from (its nominal field)."""
    (big_h, big_w), (h, w) = model.input_size, grid
    sy, sx = big_h / h, big_w / w
    return ReceptiveField((sy, sx), (sy, sx), ((sy - 1) / 2, (sx - 1) / 2))


def _cut(image: torch.Tensor, box: np.ndarray, fill: torch.Tensor) -> torch.Tensor:
    """The box of ``image`` ``(C, H, W)``, filled with ``fill`` where it leaves the image."""
    top, left, bottom, right = (int(v) for v in box)
    c, h, w = image.shape
    out = fill.to(image.dtype).view(c, 1, 1).expand(c, bottom - top, right - left).clone()
    t0, l0, b0, r0 = max(top, 0), max(left, 0), min(bottom, h), min(right, w)
    if t0 < b0 and l0 < r0:
        out[:, t0 - top : b0 - top, l0 - left : r0 - left] = image[:, t0:b0, l0:r0]
    return out


def _resize(patch: torch.Tensor, size: int | None) -> torch.Tensor:
    h, w = patch.shape[-2:]
    if size is None or max(h, w) <= size:
        return patch
    scale = size / max(h, w)
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.nn.functional.interpolate(
        patch[None], size=shape, mode="bilinear", antialias=True, align_corners=False
    )[0]


def _guided(
    model: Model, pixels: torch.Tensor, layer: str, channel: int, y: int, x: int
) -> torch.Tensor:
    """Guided backprop of one unit, as a pixel-space picture in [0, 1] (grey = 0)."""
    from convlens.attribution.guided import guided_backprop
    from convlens.targets import Neuron

    x_in = model.normalize(pixels[None].to(model.device, model.dtype))
    grad = guided_backprop(model, x_in, Neuron(layer, channel, y, x))[0].detach().cpu()
    nonzero = grad.abs()[grad != 0]
    if nonzero.numel() == 0:
        return torch.full_like(grad, 0.5)
    # The 99.5th percentile, not the maximum: a few extreme pixels would leave the rest grey.
    scale = float(torch.quantile(nonzero.float()[:1_000_000], 0.995))
    return (grad / (2 * scale) + 0.5).clamp(0, 1)
