"""Result objects: tensors, the display map on the original image, and provenance.

Every public API call (``explain``, ``attack``, ``visualize_*``, ...) returns a
:class:`Result`. It carries what made it (method, parameters, target, layer, model id,
weights sha256, library versions, seed, time), saves as ``NAME.npz`` plus a
``NAME.json`` sidecar, loads back, and shows itself in Jupyter. Drawing is delegated to
:mod:`convlens.render`; a result never computes anything.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from convlens.atomic import atomic_write_bytes
from convlens.errors import BadInputError
from convlens.types import ModelProtocol

__all__ = ["ProvenanceRecord", "Result", "TargetRecord", "make_provenance"]

FORMAT_VERSION = 1


class TargetRecord(TypedDict, total=False):
    """``provenance["target"]`` for a resolved target (``Target.to_dict()``)."""

    kind: str
    classes: list[int]
    neuron: dict[str, Any]
    callable: str
    helper: dict[str, Any]


class ProvenanceRecord(TypedDict, total=False):
    """The keys :func:`make_provenance` writes (a method may add its own, e.g. ``top1``).

    ``method`` and ``params`` are always there; ``target`` and ``layer`` when the method has
    them; the model keys come from ``Model.provenance()``.
    """

    method: str
    params: dict[str, Any]
    model: str
    weights_sha256: str | None
    input_size: list[int]
    versions: dict[str, str]
    time: str
    spec: dict[str, Any]
    target: TargetRecord | Any
    layer: str
    seed: int | None


def make_provenance(
    model: ModelProtocol,
    method: str,
    *,
    params: Mapping[str, Any] | None = None,
    target: Any = None,
    layer: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The provenance record stored in results: what made them, with which model and versions."""
    record: dict[str, Any] = {"method": method, "params": _jsonable(dict(params or {}))}
    record.update(model.provenance())
    if target is not None:
        record["target"] = target.to_dict() if hasattr(target, "to_dict") else _jsonable(target)
    if layer is not None:
        record["layer"] = layer
    record["seed"] = seed
    return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"<tensor {tuple(value.shape)}>"
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return getattr(value, "__qualname__", None) or repr(value)


@dataclass
class Result:
    """What a convlens method produced.

    Attributes
    ----------
    kind
        What the main tensor is (``"attribution"``, ``"activations"``, ...).
    tensors
        Named tensors; ``tensors[kind]`` is the main one, batch first.
    provenance
        See :func:`make_provenance`.
    sources
        Where each image came from.
    display
        Per image, a ``(H0, W0)`` map over the *original* image (NaN outside the part
        the model saw), ready to overlay; None when the result is not a map.
    originals
        Per image, the original image ``(3, H0, W0)`` in [0, 1], for overlays.
    """

    kind: str
    tensors: dict[str, torch.Tensor]
    provenance: dict[str, Any]
    sources: list[str] = field(default_factory=list)
    display: list[torch.Tensor] | None = None
    originals: list[torch.Tensor] | None = None

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    @property
    def value(self) -> torch.Tensor:
        """The main tensor, ``tensors[kind]``."""
        return self.tensors[self.kind]

    # -- typed accessors: the one place that knows the key names readers rely on -------------
    def _tensor(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(
                f"a {self.kind!r} result has no {name!r} tensor (it has: {', '.join(self.tensors)})"
            ) from None

    @property
    def map(self) -> torch.Tensor:
        """The reduced map ``(N, h, w)`` of an attribution (``tensors["map"]``)."""
        return self._tensor("map")

    @property
    def image(self) -> torch.Tensor:
        """The produced images ``(N, 3, H, W)`` in pixel space (``tensors["image"]``):
        a visualisation, dream, inversion, fooling or stylised image."""
        return self._tensor("image")

    @property
    def labels(self) -> torch.Tensor:
        """The class labels ``(N,)`` the result was measured against (``tensors["labels"]``)."""
        return self._tensor("labels")

    @property
    def scores(self) -> torch.Tensor:
        """The per-item scores (``tensors["scores"]``), e.g. channel importance."""
        return self._tensor("scores")

    @property
    def method(self) -> str:
        """The method that made the result."""
        return str(self.provenance["method"])

    @property
    def params(self) -> dict[str, Any]:
        """The method's parameters as recorded (the stored dict itself, so a caller may add
        to it); empty when none were recorded."""
        params = self.provenance.get("params")
        return params if isinstance(params, dict) else {}

    @property
    def target(self) -> Any:
        """The target record (a :class:`TargetRecord` for resolved targets, a list for
        batched optimisation targets), or None when the method has no target."""
        return self.provenance.get("target")

    @property
    def target_classes(self) -> list[int]:
        """The class index per image of a class target (empty for neuron / callable targets
        and for results without one)."""
        target = self.target
        classes = target.get("classes") if isinstance(target, Mapping) else None
        return [int(c) for c in classes] if classes else []

    @property
    def layer(self) -> str | None:
        """The layer the method read, or None."""
        layer = self.provenance.get("layer")
        return None if layer is None else str(layer)

    @property
    def model_id(self) -> str:
        """The id of the model that made the result (``Model.name``)."""
        return str(self.provenance["model"])

    @property
    def weights_sha256(self) -> str | None:
        """sha256 of the model's weights file, when known."""
        return self.provenance.get("weights_sha256")

    @property
    def seed(self) -> int | None:
        """The seed the method ran with (None when it is deterministic or unseeded)."""
        return self.provenance.get("seed")

    @property
    def seconds(self) -> float:
        """Wall-clock seconds the method took (``params["seconds"]``); KeyError for a method
        that does not time itself."""
        try:
            return float(self.params["seconds"])
        except KeyError:
            raise KeyError(f"the {self.method!r} result recorded no 'seconds'") from None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.tensors.items())
        return f"Result({self.kind!r}, method={self.provenance.get('method')!r}, {shapes})"

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as ``path.npz`` (tensors, display maps, originals) and ``path.json`` (the rest).

        Returns the ``.npz`` path. Both files are written atomically.
        """
        base = Path(path)
        if base.suffix in (".npz", ".json"):
            base = base.with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            f"tensor/{k}": v.detach().cpu().numpy() for k, v in self.tensors.items()
        }
        for i, d in enumerate(self.display or []):
            arrays[f"display/{i}"] = d.detach().cpu().numpy()
        for i, o in enumerate(self.originals or []):
            arrays[f"original/{i}"] = (
                (o.detach().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
            )
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "sources": self.sources,
            "provenance": self.provenance,
            "has_display": self.display is not None,
            "has_originals": self.originals is not None,
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        npz = base.with_name(base.name + ".npz")
        atomic_write_bytes(npz, buffer.getvalue(), fsync=True)
        atomic_write_bytes(
            base.with_name(base.name + ".json"), json.dumps(meta, indent=2).encode(), fsync=True
        )
        return npz

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        """Load a result saved by :meth:`save` (give either file, or the common stem)."""
        base = Path(path)
        if base.suffix in (".npz", ".json"):
            base = base.with_suffix("")
        npz, sidecar = base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")
        for f in (npz, sidecar):
            if not f.is_file():
                raise BadInputError(
                    f"{f}: no such file (a saved result is a .npz and a .json side by side)"
                )
        meta = json.loads(sidecar.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise BadInputError(
                f"{sidecar}: result format {meta.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
            )
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        tensors = {
            k.split("/", 1)[1]: torch.from_numpy(v)
            for k, v in arrays.items()
            if k.startswith("tensor/")
        }

        def indexed(prefix: str) -> list[np.ndarray]:
            keys = sorted(
                (k for k in arrays if k.startswith(prefix)), key=lambda k: int(k.split("/")[1])
            )
            return [arrays[k] for k in keys]

        display = (
            [torch.from_numpy(a) for a in indexed("display/")] if meta["has_display"] else None
        )
        originals = (
            [torch.from_numpy(a).float() / 255 for a in indexed("original/")]
            if meta["has_originals"]
            else None
        )
        return cls(meta["kind"], tensors, meta["provenance"], meta["sources"], display, originals)

    # -- display ----------------------------------------------------------------------------
    def plot(self, ax: Any = None, index: int = 0, **kwargs: Any) -> Any:
        """Draw image ``index`` on a matplotlib axis (a new figure when ``ax`` is None)."""
        from convlens.render.results import plot_result

        return plot_result(self, ax=ax, index=index, **kwargs)

    def show(self, index: int = 0, **kwargs: Any) -> None:
        """Show image ``index`` in a matplotlib window (or inline in a notebook)."""
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
        self.plot(ax=ax, index=index, **kwargs)
        plt.show()

    def to_png(self, index: int = 0, **kwargs: Any) -> bytes:
        """PNG bytes of picture ``index``: the map over the photo, or the figure of the
        result's kind (an attack's panels, a curve, ...; :mod:`convlens.render.results`)."""
        from convlens.render.results import result_png

        return result_png(self, index, **kwargs)

    def _repr_png_(self) -> bytes | None:
        """Jupyter's picture of the result (the first image of a batch); None for results
        that hold numbers only, which then show as text."""
        from convlens.render.results import has_picture

        return self.to_png(0) if has_picture(self) else None

    def _repr_html_(self) -> str | None:
        """Jupyter's view of a batch: every image's picture, captioned; None for a single
        picture (Jupyter then shows :meth:`_repr_png_`)."""
        from convlens.render.results import result_html

        return result_html(self)
