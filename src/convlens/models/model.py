"""The :class:`Model` wrapper: a module plus everything needed to feed and explain it.

A ``Model`` owns the ``nn.Module``, its preprocessing (differentiable torch ops), its
labels, layer lookup and the geometry to map maps back onto the user's original image.
It never mutates the module: methods enter eval mode through :mod:`convlens.hooks`
contexts that restore the previous flags.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from convlens.errors import BadInputError
from convlens.hooks import eval_mode
from convlens.layers import LayerInfo, layer_table, resolve_layer
from convlens.models.labels import Labels
from convlens.models.preprocess import Geometry, Preprocessing

if TYPE_CHECKING:
    from convlens.models.fast import FastState

__all__ = ["Batch", "Model", "Prediction", "wrap"]

ImageLike = Any  # path, PIL image, numpy array or tensor: see convlens.data.images.load_image


@dataclass
class Batch:
    """Images prepared for a model: input-space tensor plus where each image came from."""

    x: torch.Tensor  # (N, C, H, W) input space
    geometries: list[Geometry]
    sources: list[str]
    originals: list[torch.Tensor]  # image space (3, H0, W0), for drawing overlays

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image."""

    source: str
    classes: list[int]
    labels: list[str]
    probabilities: list[float]
    wnids: list[str | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "top": [
                {"class": c, "label": lab, "wnid": w, "probability": p}
                for c, lab, w, p in zip(
                    self.classes,
                    self.labels,
                    self.wnids or [None] * len(self.classes),
                    self.probabilities,
                )
            ],
        }


class Model:
    """A network with its preprocessing, labels and layer lookup.

    Parameters
    ----------
    module
        Any ``nn.Module`` mapping an input-space batch ``(N, C, H, W)`` to an output
        (logits ``(N, classes)`` for classifiers).
    preprocessing
        Resize/crop/normalise settings (:class:`~convlens.models.preprocess.Preprocessing`).
    name
        Model id recorded in every result's provenance.
    labels
        Class names (and wnids), or None.
    weights_sha256
        Hash of the weights file, for provenance.
    device
        Where to run; default the module's current device.
    fast
        Fast mode (:mod:`convlens.models.fast`): the 4-D weights are stored channels-last
        (in place; values, names and hooks unchanged) and forward-only work without
        gradients (:meth:`logits`, features) and input gradients of methods that hook
        nothing (saliency, gradient x input, integrated gradients, SmoothGrad, ...) run on a
        copy with batch norms folded into their convolutions. Maps stay within float rounding of eager mode; what was used
        (and what fell back) is in :meth:`provenance` under ``fast``.
    """

    def __init__(
        self,
        module: nn.Module,
        preprocessing: Preprocessing,
        *,
        name: str = "custom",
        labels: Labels | None = None,
        weights_sha256: str | None = None,
        device: str | torch.device | None = None,
        info: dict[str, Any] | None = None,
        fast: bool = False,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, not {type(module).__name__}")
        self.module = module
        self.preprocessing = preprocessing
        self.name = name
        self.labels = labels
        self.weights_sha256 = weights_sha256
        self.info = dict(info or {})
        if device is not None:
            module.to(device)
        self._layer_table: list[LayerInfo] | None = None
        self._fast: FastState | None = None
        if fast:
            self.use_fast()

    # -- basics -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        for b in self.module.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            return p.dtype
        return torch.float32

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocessing.input_size

    @property
    def channels(self) -> int:
        return self.preprocessing.channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Forward an input-space batch (the module's current train/eval mode is kept)."""
        return self.module(x)

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"Model({self.name!r}, input {self.channels}x{h}x{w}, {len(self.labels) if self.labels else '?'} classes)"

    def to(self, device: str | torch.device) -> Model:
        self.module.to(device)
        return self

    # -- fast mode ----------------------------------------------------------------------
    @property
    def fast(self) -> dict[str, Any] | None:
        """What fast mode uses on this model (None when it is off)."""
        return self._fast.to_dict() if self._fast is not None else None

    def use_fast(self) -> Model:
        """Turn fast mode on (see the class docstring and :mod:`convlens.models.fast`)."""
        from convlens.models.fast import enable_fast

        if self._fast is None:
            self._fast = enable_fast(self.module, self._example())
        return self

    def _example(self) -> torch.Tensor:
        h, w = self.input_size
        generator = torch.Generator().manual_seed(0)
        example = torch.randn(1, self.channels, h, w, generator=generator)
        return example.to(self.device, self.dtype)

    def forward_module(self, layers: Sequence[str | nn.Module] = ()) -> nn.Module:
        """The module to run for forward-only work that reads ``layers`` (hooked by name).

        Under fast mode, with gradients off, the batch-norm-folded copy when none of
        ``layers`` is a folded convolution (its output differs from the original's); in
        every other case :attr:`module`. The copy is rebuilt when the weights change.
        """
        if torch.is_grad_enabled():
            return self.module
        return self._folded_for(layers)

    def score_module(self, layers: Sequence[str | nn.Module] = ()) -> nn.Module:
        """The module to run for a score whose input gradient is taken (``d S / d x``).

        Under fast mode, the batch-norm-folded copy when nothing is hooked on :attr:`module`
        (a method's hooks or backward rules live there, so they keep it) and none of
        ``layers`` is a folded convolution; in every other case :attr:`module`. In eval
        mode a batch norm is a fixed affine map, so the input gradient through the folded
        convolution equals the original's up to float rounding.
        """
        from convlens.models.fast import has_hooks

        if has_hooks(self.module):
            return self.module
        return self._folded_for(layers)

    def _folded_for(self, layers: Sequence[str | nn.Module]) -> nn.Module:
        state = self._fast
        if state is None:
            return self.module
        from convlens.models.fast import fingerprint, refold

        if state.fingerprint != fingerprint(self.module):
            refold(self.module, self._example(), state)
        if state.folded is None or any(
            not isinstance(ref, str) or ref in state.folded_convs for ref in layers
        ):
            return self.module
        return state.folded

    # -- spaces -------------------------------------------------------------------------
    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel space -> input space."""
        return self.preprocessing.normalize(pixels)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Input space -> pixel space."""
        return self.preprocessing.denormalize(x)

    def prepare(
        self, images: ImageLike | Sequence[ImageLike], *, sources: Sequence[str] | None = None
    ) -> Batch:
        """Load and preprocess images (paths, PIL, arrays, tensors) into an input-space batch.

        A 4-D tensor is taken as a pixel-space batch already at input size. ``sources``
        names the images in results (default: the paths, or ``<array ...>``).
        """
        from convlens.data.images import load_image, source_name

        if isinstance(images, torch.Tensor) and images.dim() == 4:
            pixels = images.to(self.device, self.dtype)
            self._check_pixels(pixels)
            n = pixels.shape[0]
            names = list(sources) if sources is not None else [f"<tensor[{i}]>" for i in range(n)]
            if len(names) != n:
                raise BadInputError(f"{len(names)} source names for {n} images")
            geo = self.preprocessing.geometry(*self.input_size)
            return Batch(self.normalize(pixels), [geo] * n, names, list(pixels.detach().cpu()))
        items: list[Any] = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise BadInputError("no images given")
        if sources is not None and len(sources) != len(items):
            raise BadInputError(f"{len(sources)} source names for {len(items)} images")
        pixels_list, geometries, names, originals = [], [], [], []
        for i, item in enumerate(items):
            if isinstance(item, str) and item.startswith("sample:"):
                from convlens.data.samples import load_sample

                original = load_image(load_sample(item), name=item)
            else:
                original = load_image(item)
            pixels, geometry = self.preprocessing.to_pixels(original)
            pixels_list.append(pixels)
            geometries.append(geometry)
            names.append(
                sources[i]
                if sources is not None
                else (item if isinstance(item, str) else source_name(item))
            )
            originals.append(original)
        pixels = torch.stack(pixels_list).to(self.device, self.dtype)
        return Batch(self.normalize(pixels), geometries, names, originals)

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        c, (h, w) = self.channels, self.input_size
        if tuple(pixels.shape[1:]) != (c, h, w):
            raise BadInputError(
                f"a pixel batch for {self.name} must have shape (N, {c}, {h}, {w}); got {tuple(pixels.shape)}"
            )

    # -- prediction ---------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Logits of an input-space batch, in eval mode, in chunks of ``batch_size``."""
        module = self.forward_module()
        with eval_mode(module):
            return torch.cat([module(chunk) for chunk in x.split(batch_size)])

    def predict(self, images: ImageLike | Sequence[ImageLike], top_k: int = 5) -> list[Prediction]:
        """Top-k classes and probabilities for each image."""
        batch = images if isinstance(images, Batch) else self.prepare(images)
        probs = self.logits(batch.x).softmax(dim=1)
        k = max(1, min(top_k, probs.shape[1]))
        values, indices = probs.topk(k, dim=1)
        out = []
        for source, v, i in zip(batch.sources, values.tolist(), indices.tolist()):
            labels = [self.labels.name(j) if self.labels else str(j) for j in i]
            wnids = [self.labels.wnid(j) if self.labels else None for j in i]
            out.append(Prediction(source, i, labels, v, wnids))
        return out

    # -- layers -------------------------------------------------------------------------
    def layer(self, name: str | nn.Module) -> nn.Module:
        """The submodule at a dotted name (``LayerNotFoundError`` with suggestions otherwise)."""
        return resolve_layer(self.module, name)[1]

    def layer_names(self) -> list[str]:
        return [n for n, _ in self.module.named_modules() if n]

    def layers(self) -> list[LayerInfo]:
        """The layer table (types, output shapes, receptive fields), computed once."""
        if self._layer_table is None:
            h, w = self.input_size
            example = torch.zeros(1, self.channels, h, w, device=self.device, dtype=self.dtype)
            self._layer_table = layer_table(self.module, example)
        return self._layer_table

    def layer_info(self, name: str) -> LayerInfo:
        self.layer(name)
        for row in self.layers():
            if row.name == name:
                return row
        raise BadInputError(f"layer {name!r} exists but did not run in a forward pass")

    # -- provenance ---------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        """Model id, weights hash and library versions, for results."""
        import convlens

        recorded: dict[str, Any] = {
            "model": self.name,
            "weights_sha256": self.weights_sha256,
            "input_size": list(self.input_size),
            "versions": {
                "convlens": convlens.__version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if "spec" in self.info:  # a user model: how to load it again (convlens.models.spec)
            recorded["spec"] = self.info["spec"]
        if self._fast is not None:
            recorded["fast"] = self._fast.to_dict()
        return recorded


def wrap(
    module: nn.Module,
    *,
    input_size: int | tuple[int, int] = 224,
    mean: float | Sequence[float] = (0.485, 0.456, 0.406),
    std: float | Sequence[float] = (0.229, 0.224, 0.225),
    resize: int | str | None = "auto",
    labels: Labels | Sequence[str] | str | None = None,
    channels: int | None = None,
    name: str | None = None,
    device: str | torch.device | None = None,
) -> Model:
    """Wrap any ``nn.Module`` as a convlens :class:`Model`.

    Parameters
    ----------
    module
        The network; it receives normalised input ``(pixels - mean) / std``.
    input_size
        Model resolution ``S`` or ``(H, W)``.
    mean, std
        Per-channel normalisation in pixel space ([0, 1]); default ImageNet's.
    resize
        Short side to resize to before the centre crop; ``"auto"`` is ``round(S / 0.875)``
        (224 -> 256), ``None`` resizes straight to the crop size.
    labels
        ``"imagenet"``, a list of class names, or :class:`Labels`.
    channels
        Input channels (default: the length of ``mean``, or 3).

    Examples
    --------
    >>> model = convlens.wrap(torchvision.models.resnet18(), labels="imagenet")
    """
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or min(size) < 1:
        raise BadInputError(f"input_size must be an int or (H, W), got {input_size!r}")
    mean_t = (float(mean),) if isinstance(mean, (int, float)) else tuple(float(m) for m in mean)
    std_t = (float(std),) if isinstance(std, (int, float)) else tuple(float(s) for s in std)
    n_channels = channels or (len(mean_t) if len(mean_t) > 1 else 3)
    if len(mean_t) == 1:
        mean_t = mean_t * n_channels
    if len(std_t) == 1:
        std_t = std_t * n_channels
    if len(mean_t) != n_channels or len(std_t) != n_channels:
        raise BadInputError(
            f"mean and std need {n_channels} values, one per channel; got {len(mean_t)} and {len(std_t)}"
        )
    if resize == "auto":
        resize = round(min(size) / 0.875)
    label_obj: Labels | None
    if isinstance(labels, str):
        if labels != "imagenet":
            raise BadInputError(
                f"labels={labels!r}: pass 'imagenet', a list of class names, or a Labels object"
            )
        from convlens.models.labels import imagenet_labels

        label_obj = imagenet_labels()
    elif labels is None or isinstance(labels, Labels):
        label_obj = labels
    else:
        label_obj = Labels.from_names(list(labels))
    prep = Preprocessing(
        size, resize if isinstance(resize, int) else None, mean_t, std_t, n_channels
    )
    return Model(
        module,
        prep,
        name=name or f"custom:{type(module).__name__}",
        labels=label_obj,
        device=device,
    )
