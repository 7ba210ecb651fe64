"""``torchvision:NAME`` and ``timm:NAME`` models, used only when already on the machine.

convlens never downloads: a torchvision model loads only if torchvision is installed
and its weights file is already in torch's checkpoint cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``); a timm model
only if timm is installed and its weights are in the Hugging Face cache (timm is imported
with ``HF_HUB_OFFLINE=1`` so an offline machine never waits on the network). Otherwise a
:class:`~convlens.errors.MissingDependencyError` says what is missing and where to put it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch

from convlens.errors import MissingDependencyError, UnknownModelError
from convlens.hashing import file_sha256
from convlens.models.labels import Labels, imagenet_labels
from convlens.models.model import Model
from convlens.models.preprocess import Preprocessing

__all__ = ["ADAPTER_PREFIXES", "load_adapted", "torch_checkpoint_dir"]

ADAPTER_PREFIXES = ("torchvision:", "timm:")


def torch_checkpoint_dir() -> Path:
    """Where torch caches checkpoints a user already has (only read, never fetched; computed without importing torch.hub)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(home) / "hub" / "checkpoints"


def _import(name: str, hint: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # not installed, or installed but broken against this torch
        raise MissingDependencyError(
            f"{name} is not usable here ({type(exc).__name__}: {exc}); {hint}"
        ) from None


def _labels_for(categories: list[str] | None, num_classes: int) -> Labels | None:
    if num_classes == 1000:
        return imagenet_labels()
    return Labels.from_names(categories) if categories else None


def load_torchvision(name: str) -> Model:
    """A torchvision classifier with weights from the local checkpoint cache."""
    tv = _import(
        "torchvision.models",
        "install a torchvision build matching your torch to use torchvision:NAME models",
    )
    try:
        weights_enum = tv.get_model_weights(name)
    except (ValueError, KeyError):
        known = ", ".join(sorted(tv.list_models())[:12])
        raise UnknownModelError(f"torchvision has no model {name!r} (e.g. {known}, ...)") from None
    weights = weights_enum.DEFAULT
    path = torch_checkpoint_dir() / Path(weights.url).name
    if not path.is_file():
        raise MissingDependencyError(
            f"the weights of torchvision:{name} are not on this machine; convlens never downloads them. Put {Path(weights.url).name} in {path.parent} (or set TORCH_HOME)"
        )
    module = tv.get_model(name, weights=None)
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    module.eval()
    transform = weights.transforms()
    crop = (
        transform.crop_size[0]
        if isinstance(transform.crop_size, (list, tuple))
        else int(transform.crop_size)
    )
    resize = (
        transform.resize_size[0]
        if isinstance(transform.resize_size, (list, tuple))
        else int(transform.resize_size)
    )
    prep = Preprocessing((crop, crop), resize, tuple(transform.mean), tuple(transform.std))
    categories = weights.meta.get("categories")
    labels = _labels_for(categories, len(categories) if categories else 0)
    return Model(
        module,
        prep,
        name=f"torchvision:{name}",
        labels=labels,
        weights_sha256=file_sha256(path, memoize=True),
        info={"weights": str(path)},
    )


def load_timm(name: str) -> Model:
    """A timm model with pretrained weights from the local Hugging Face cache only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    timm = _import("timm", "pip install timm to use timm:NAME models")
    if (
        name not in timm.list_models(pretrained=True)
        and name.split(".")[0] not in timm.list_models()
    ):
        raise UnknownModelError(f"timm has no pretrained model {name!r}")
    try:
        module = timm.create_model(name, pretrained=True)
    except Exception as exc:
        raise MissingDependencyError(
            f"the weights of timm:{name} are not in the local Hugging Face cache and convlens never downloads ({type(exc).__name__}); fetch them once on a connected machine"
        ) from None
    module.eval()
    config = timm.data.resolve_data_config({}, model=module)
    _, h, w = config["input_size"]
    resize = round(min(h, w) / config.get("crop_pct", 0.875))
    prep = Preprocessing((h, w), resize, tuple(config["mean"]), tuple(config["std"]))
    num_classes = getattr(module, "num_classes", 0)
    return Model(
        module,
        prep,
        name=f"timm:{name}",
        labels=_labels_for(None, num_classes),
        info={"source": "timm"},
    )


def load_adapted(spec: str) -> Model:
    """Load ``torchvision:NAME`` or ``timm:NAME``."""
    prefix, _, name = spec.partition(":")
    if not name:
        raise UnknownModelError(
            f"model {spec!r} needs a name after the colon, e.g. torchvision:resnet18"
        )
    if prefix == "torchvision":
        return load_torchvision(name)
    if prefix == "timm":
        return load_timm(name)
    raise UnknownModelError(f"unknown model source {prefix!r}; use torchvision:NAME or timm:NAME")
