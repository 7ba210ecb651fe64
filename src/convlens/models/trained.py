"""Models convlens trains itself on first use: a cache entry, loaded if valid, else trained.

The small classifiers (:mod:`convlens.models.small`), the segmentation net
(:mod:`~convlens.models.segmentation`), the biased/fair pair (:mod:`~convlens.models.biased`)
and the adversarially trained CNN (:mod:`~convlens.models.adversarial_training`) each keep
their recipe and training code; this module is what they share: where the entry lives, when
it counts as valid, how it is written.

An entry is ``{name}-v{version}.pt`` (a state dict) plus ``{name}-v{version}.json`` (the
training metadata with the ``.pt`` file's sha256) in :func:`~convlens.models.cache.cache_dir`.
It is valid when the sidecar names the model and version and the hash matches the weights
on disk; anything else (missing, torn, from another version, another process mid-write) is
"not cached" and the model is trained again. Both files are written atomically and flushed
to disk, weights first, so a crash never leaves a sidecar vouching for missing weights.
"""

from __future__ import annotations

import json
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convlens.atomic import atomic_write_bytes
from convlens.models.cache import atomic_torch_save, cache_dir, file_sha256

__all__ = ["CacheEntry", "load_or_train"]

Trained = tuple[nn.Module, dict[str, Any]]

# Whatever a damaged, foreign or half-written file raises on reading: all mean "not cached".
_UNREADABLE = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    TypeError,
    EOFError,
    AttributeError,
    pickle.UnpicklingError,
)


@dataclass(frozen=True)
class CacheEntry:
    """The cache entry of one trained model.

    Parameters
    ----------
    name
        The model's name, recorded in the sidecar and part of the file names.
    version
        Bumped by the model's module when its architecture, data or recipe changes, so old
        entries are not reused.
    """

    name: str
    version: int

    def paths(self) -> tuple[Path, Path]:
        """``(weights .pt, metadata .json)`` in the cache folder."""
        stem = f"{self.name}-v{self.version}"
        folder = cache_dir()
        return folder / f"{stem}.pt", folder / f"{stem}.json"

    def load(self, build: Callable[[], nn.Module]) -> Trained | None:
        """The cached model in eval mode and its metadata, or None if the entry is not valid.

        Parameters
        ----------
        build
            Returns the untrained architecture the state dict is loaded into.
        """
        weights, sidecar = self.paths()
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            if (
                not isinstance(meta, dict)
                or meta.get("name") != self.name
                or meta.get("version") != self.version
            ):
                return None
            if meta.get("sha256") != file_sha256(weights):
                return None
            module = build()
            module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except _UNREADABLE:
            return None
        module.eval()
        return module, meta

    def metadata(self, **fields: Any) -> dict[str, Any]:
        """A sidecar's contents: the entry's name and version, ``fields`` (the recipe and
        the results of training, in the order given), the torch version and the UTC time."""
        return {
            "name": self.name,
            "version": self.version,
            **fields,
            "torch": torch.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def save(self, module: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
        """Write the weights, then the sidecar with their sha256; return the sidecar's dict."""
        weights, sidecar = self.paths()
        state = OrderedDict((k, v.detach().cpu().clone()) for k, v in module.state_dict().items())
        atomic_torch_save(state, weights)
        # Hash what is on disk, in case another process replaced it in between: then the
        # sidecar (last writer) may disagree with the weights and the next load retrains.
        meta = {**meta, "sha256": file_sha256(weights)}
        atomic_write_bytes(sidecar, json.dumps(meta, indent=2).encode("utf-8"), fsync=True)
        return meta


def load_or_train(
    entry: CacheEntry,
    build: Callable[[], nn.Module],
    train: Callable[[], Trained],
    *,
    retrain: bool = False,
) -> Trained:
    """The model from its cache entry, or trained now and cached.

    Parameters
    ----------
    entry
        Where the model is cached.
    build
        The untrained architecture (for loading).
    train
        Trains from scratch (seeded, so every machine gets the same weights) and returns
        the module and its metadata; ``total_seconds`` and ``sha256`` are added here.
    retrain
        Train even when the entry is valid, and overwrite it.

    Returns
    -------
    module : nn.Module
        In eval mode on a cache hit; as ``train`` left it otherwise.
    metadata : dict
        The sidecar's contents.
    """
    if not retrain:
        cached = entry.load(build)
        if cached is not None:
            return cached
    started = time.perf_counter()
    module, meta = train()
    meta["total_seconds"] = round(time.perf_counter() - started, 3)
    return module, entry.save(module, meta)
