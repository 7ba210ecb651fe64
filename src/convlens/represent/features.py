"""Features: each image's code at one layer, over folders of any size, in Parquet shards.

The "code" of a CNN (Krizhevsky, Sutskever & Hinton 2012, "ImageNet classification with
deep convolutional neural networks", NeurIPS; the CS231n t-SNE and nearest-neighbour
figures) is a layer's activation map ``A(x)`` of shape ``(C, H, W)``, taken either

    pooled:  z_c = 1 / (H W) * sum_{h, w} A_{c, h, w}(x)      (C values, the default)
    full:    z   = vec(A(x))                                    (C * H * W values)

:func:`extract_features` streams a folder through the dataset runner
(:func:`~convlens.data.runner.run_dataset`): batches of images go through the model once,
under one forward hook (:func:`convlens.hooks.capture`), and each image's code, its path,
its label (-1 when the folder is unlabelled) and the model's top-1 class are written as
rows of resumable Parquet shards, with a manifest, checksums and the bad files reported.
Only one shard is in memory at a time, whatever the folder's size, and ``engine="ray"``
computes the shards on a Ray cluster (:mod:`convlens.data.engines`).
:func:`load_features` reads a finished folder back as a :class:`Features`.

    OUT/
      manifest.json        the runner's manifest (config: model, layer, pooled, shape)
      shard-00000.parquet  columns index, path, label, code (fixed-size list), prediction
      features.json        provenance of the run (model, weights, versions, engine, time)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convlens.atomic import atomic_write_text
from convlens.data.folders import LabelledItem, scan_labelled
from convlens.data.runner import (
    MANIFEST,
    RunReport,
    default_decode_workers,
    read_outputs,
    run_dataset,
)
from convlens.errors import BadInputError
from convlens.hooks import capture, eval_mode, forward_until_captured
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.results import make_provenance

__all__ = [
    "NOT_PREDICTED",
    "PROVENANCE_FILE",
    "Features",
    "code_size",
    "extract_features",
    "layer_code",
    "layer_shape",
    "load_features",
]

#: the sidecar with the run's provenance, written when a run finishes
PROVENANCE_FILE = "features.json"
_KIND = "convlens-features"


@dataclass
class Features:
    """The codes of a folder of images at one layer (one row per readable image).

    Attributes
    ----------
    codes
        ``(N, D)`` float32: the spatial mean per channel (pooled) or the flattened map.
    paths
        Source path of each row, in item order; unreadable items have no row. A path given
        relative is joined to the folder the run started in (``provenance["cwd"]``).
    labels
        ``(N,)`` int64 class index, -1 where the folder is unlabelled.
    predictions
        ``(N,)`` int64 top-1 class of the model; :data:`NOT_PREDICTED` (-1) everywhere when
        the run skipped them (``predictions=False``, ``convlens features --no-predictions``).
    layer
        Dotted layer name.
    pooled
        Whether the codes are pooled.
    shape
        Per-image shape of the layer's map: ``(C, H, W)`` (or ``(C,)`` for a flat layer).
    model
        Model name.
    provenance
        What made the codes: model provenance, layer, pooled, engine, workers, counts.
    """

    codes: np.ndarray
    paths: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    layer: str
    pooled: bool
    shape: tuple[int, ...]
    model: str
    provenance: dict[str, Any]

    @property
    def has_predictions(self) -> bool:
        """Whether the run stored top-1 classes (False: ``predictions=False``)."""
        return not (len(self.predictions) and bool((self.predictions == NOT_PREDICTED).all()))

    def __len__(self) -> int:
        return len(self.paths)


def _as_map(activation: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """A token layer ``(N, T, C)`` as its patch grid ``(N, C, h, w)`` (class and register
    tokens dropped, :func:`convlens.tokens.tokens_to_grid`); anything else as it is (a 3-D
    output that fills no grid is flattened, as before)."""
    if activation.dim() != 3:
        return activation
    from convlens.tokens import tokens_to_grid

    try:
        return tokens_to_grid(activation, input_size=input_size)[0]
    except BadInputError:
        return activation


def layer_code(activation: torch.Tensor, pooled: bool) -> torch.Tensor:
    """``(N, D)`` codes from a layer's ``(N, C, H, W)`` output: the spatial mean per channel
    (``pooled``) or the flattened map. A layer without spatial axes is flattened either way.
    A token layer's output is first put on its patch grid (``_as_map``), so pooled codes
    average the patch tokens and full codes are the ``C x h x w`` grid."""
    if pooled and activation.dim() == 4:
        return activation.mean(dim=(2, 3))
    return activation.flatten(1)


#: the ``prediction`` stored for every image when the run skipped the top-1 classes
NOT_PREDICTED = -1


class _Codes:
    """The runner's per-batch function: pixels -> codes and top-1 classes (picklable, so
    Ray actors and forked workers hold their own copy of the model). Without
    ``predictions`` the forward pass stops once the layer has run (nothing after it is
    needed), and every prediction is :data:`NOT_PREDICTED`."""

    def __init__(self, model: Model, layer: str, pooled: bool, predictions: bool = True) -> None:
        self.model, self.layer, self.pooled = model, layer, pooled
        self.predictions = predictions

    def __call__(self, pixels: torch.Tensor, items: list[LabelledItem]) -> dict[str, torch.Tensor]:
        model = self.model
        x = model.normalize(pixels.to(model.device, model.dtype))
        with torch.no_grad():
            # fast mode: the batch-norm-folded copy unless the layer is a folded convolution
            module = model.forward_module([self.layer])
        stop = not self.predictions
        with (
            torch.no_grad(),
            eval_mode(module),
            capture(module, [self.layer], stop=stop) as acts,
        ):
            logits = forward_until_captured(module, x) if stop else module(x)
            code = layer_code(
                _as_map(acts[self.layer], (int(x.shape[-2]), int(x.shape[-1]))), self.pooled
            )
        if stop:
            predicted = torch.full((len(x),), NOT_PREDICTED, dtype=torch.long)
        else:
            predicted = logits.flatten(1).argmax(dim=1).cpu()
        return {"code": code.float().cpu(), "prediction": predicted}


class _PixelLoader:
    """Image file -> pixel space at the model's input size (what ``Model.prepare`` does)."""

    def __init__(self, preprocessing: Any) -> None:
        self.preprocessing = preprocessing

    def __call__(self, path: Path) -> torch.Tensor:
        from convlens.data.images import load_image

        pixels, _ = self.preprocessing.to_pixels(load_image(path))
        return pixels


def layer_shape(model: Model, layer: str) -> tuple[int, ...]:
    """Per-image shape of the layer's output, from one forward pass of a blank image (a
    token layer's: its patch grid ``(C, h, w)``).

    Also checks the layer name (``LayerNotFoundError`` with suggestions) before any work.
    """
    model.layer(layer)
    h, w = model.input_size
    blank = torch.zeros(1, model.channels, h, w, device=model.device, dtype=model.dtype)
    with torch.no_grad(), eval_mode(model.module), capture(model.module, [layer]) as acts:
        model.module(model.normalize(blank))
        return tuple(int(s) for s in _as_map(acts[layer], (h, w)).shape[1:])


def code_size(shape: Sequence[int], pooled: bool) -> int:
    """Values per image in the codes of a layer whose per-image map has ``shape``."""
    return int(shape[0]) if pooled and len(shape) == 3 else int(np.prod(shape))


def _as_items(
    model: Model, items: Sequence[LabelledItem | str | Path] | str | Path
) -> list[LabelledItem | str | Path]:
    if isinstance(items, (str, os.PathLike)):
        # One folder or CSV: class names resolve through the model's labels.
        return list(scan_labelled(items, model.labels.resolve if model.labels else None))
    return list(items)


def extract_features(
    model: Model,
    items: Sequence[LabelledItem | str | Path] | str | Path,
    layer: str,
    out_dir: str | Path,
    *,
    pooled: bool = True,
    batch_size: int = 32,
    shard_size: int = 256,
    engine: str = "local",
    workers: int = 1,
    decode_workers: int | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    predictions: bool = True,
) -> RunReport:
    """Write each image's code at ``layer`` (with path, label, prediction) to Parquet shards.

    Parameters
    ----------
    model
        The network.
    items
        :class:`~convlens.data.folders.LabelledItem` s or paths (unlabelled), or one labelled
        folder / CSV (see :func:`~convlens.data.folders.scan_labelled`).
    layer
        Dotted layer name (``convlens layers`` lists them).
    out_dir
        Folder for the shards; a finished or interrupted run there with the same items,
        model, layer and ``pooled`` resumes (finished shards are kept).
    pooled
        Spatial mean per channel (``C`` values per image); False: the full map ``C*H*W``.
    batch_size
        Images per forward pass.
    shard_size
        Images per Parquet shard.
    engine
        ``"local"`` or ``"ray"`` (the optional extra ``convlens[ray]``).
    workers
        Processes computing shards (local: forked processes with one torch thread each;
        ray: actors).
    decode_workers
        Processes that read, decode and resize the images ahead of the model, through a
        queue bounded to two batches per process (``None``: one when this process runs the
        model, that is ``engine="local"`` with ``workers=1``, and its torch threads leave a
        CPU free; else 0: :func:`~convlens.data.runner.default_decode_workers`). The codes are the
        same bytes whatever the number; 0 decodes between forward passes in this process.
    overwrite
        Replace a previous run of other settings in ``out_dir``.
    progress
        ``progress(done, total)`` callback.
    predictions
        Also store each image's top-1 class (a whole forward pass). False stops each
        forward pass once ``layer`` has run, which is cheaper the earlier the layer (the
        codes are the same), and stores :data:`NOT_PREDICTED` (-1) as every prediction.

    Returns
    -------
    RunReport
        Counts, the failed files with reasons, and the shards.

    Raises
    ------
    BadInputError
        Unknown layer (with suggestions), an ``out_dir`` holding another run, bad sizes,
        ``engine="ray"`` without Ray.

    Examples
    --------
    >>> report = extract_features(model, "pets/", "blocks.15", "pets-features/")  # doctest: +SKIP
    >>> load_features("pets-features/").codes.shape  # doctest: +SKIP
    (120, 192)
    """
    if not isinstance(model, Model):
        raise TypeError(
            f"model must be a convlens Model (convlens.wrap(module) makes one), not {type(model).__name__}"
        )
    shape = layer_shape(model, layer)
    entries = _as_items(model, items)
    config = {
        "kind": _KIND,
        "model": model.name,
        "weights_sha256": model.weights_sha256,
        "layer": layer,
        "pooled": bool(pooled),
        "shape": list(shape),
        "preprocessing": {
            "input_size": list(model.input_size),
            "resize": model.preprocessing.resize,
            "mean": list(model.preprocessing.mean),
            "std": list(model.preprocessing.std),
        },
    }
    if "spec" in model.info:  # a user model: neighbors/embed load it again from this
        config["spec"] = model.info["spec"]
    if not predictions:  # only then: folders made before the option resume as they were
        config["predictions"] = False
    decoders = default_decode_workers(engine, workers, decode_workers)
    report = run_dataset(
        entries, _Codes(model, layer, bool(pooled), bool(predictions)), out_dir, load=_PixelLoader(model.preprocessing),
        batch_size=batch_size, shard_size=shard_size, config=config, overwrite=overwrite,
        progress=progress, shard_format="parquet", engine=engine, workers=workers,
        num_workers=decoders,
    )  # fmt: skip
    params = {
        "pooled": bool(pooled),
        "batch_size": batch_size,
        "shard_size": shard_size,
        "engine": engine,
        "workers": workers,
        "decode_workers": decoders,
        "predictions": bool(predictions),
    }
    provenance = make_provenance(model, "features", params=params, layer=layer)
    provenance.update(
        shape=list(shape), n_items=report.n_items, n_done=report.n_done, n_failed=len(report.failed)
    )
    # the shards keep each path as it was given; relative ones are relative to this folder,
    # which load_features joins back so readers elsewhere still find the images
    provenance["cwd"] = os.getcwd()
    _write_json(Path(out_dir) / PROVENANCE_FILE, provenance)
    return report


def load_features(out_dir: str | Path) -> Features:
    """Read the codes of a finished :func:`extract_features` run (``convlens features``).

    Raises
    ------
    BadInputError
        ``out_dir`` is not a features folder, is unfinished (resume it by running the same
        command again), or a shard fails its checksum.
    """
    folder = Path(out_dir)
    hint = f"run `convlens features DIR --layer L -o {folder}` first"
    if not folder.is_dir():
        raise BadInputError(f"{folder}: no such features folder; {hint}")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BadInputError(
            f"{folder} is not a features folder (no readable {MANIFEST}); {hint}"
        ) from err
    config = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(config, dict) or config.get("kind") != _KIND:
        raise BadInputError(
            f"{folder} holds no features (its {MANIFEST} is not from `convlens features`); {hint}"
        )
    n_shards = -(-int(manifest["n_items"]) // int(manifest["shard_size"]))
    if len(manifest["shards"]) != n_shards:
        raise BadInputError(
            f"{folder}: the features run is unfinished ({len(manifest['shards'])} of {n_shards} shards); run the same `convlens features` command again to finish it"
        )
    outputs = read_outputs(folder)
    shape = tuple(int(s) for s in config["shape"])
    n = len(outputs["index"])
    codes = outputs.get(
        "code", np.zeros((n, code_size(shape, config["pooled"])), np.float32)
    ).astype(np.float32, copy=False)
    provenance: dict[str, Any] = {
        key: config[key]
        for key in ("model", "weights_sha256", "layer", "pooled", "shape", "spec")
        if key in config
    }
    provenance["method"] = "features"
    sidecar = folder / PROVENANCE_FILE
    if sidecar.is_file():
        # a torn sidecar: the manifest's record above still says what made the codes
        with contextlib.suppress(ValueError):
            provenance = json.loads(sidecar.read_text(encoding="utf-8"))
    paths = [str(p) for p in outputs.get("path", np.array([], dtype=str)).tolist()]
    cwd = provenance.get("cwd")
    if isinstance(cwd, str) and cwd:
        # a path given relative to where `convlens features` ran: from there, wherever the
        # reader runs (neighbours, the report's index, the explorer, embed's thumbnails)
        paths = [p if os.path.isabs(p) else os.path.join(cwd, p) for p in paths]
    return Features(
        codes=codes.reshape(n, -1),
        paths=paths,
        labels=outputs.get("label", np.zeros(0, np.int64)).astype(np.int64, copy=False),
        predictions=outputs.get("prediction", np.zeros(0, np.int64)).astype(np.int64, copy=False),
        layer=str(config["layer"]),
        pooled=bool(config["pooled"]),
        shape=shape,
        model=str(config["model"]),
        provenance=provenance,
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))
