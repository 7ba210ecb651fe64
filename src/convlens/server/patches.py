"""The layer browser's top patches: a channel's most exciting patches from a features folder.

``convlens serve --features DIR`` (any number of folders written by ``convlens features
IMAGES --layer L -o DIR``) gives the explorer datasets to search. Clicking a channel of
layer ``L`` runs :func:`convlens.represent.patches.top_patches` (Zeiler & Fergus 2014,
arXiv:1311.2901: the ``k`` images whose maximum activation of the channel is largest, each
cut at its argmax with the unit's receptive field) over the images of the folder made at
``L`` with the same model, as a job with progress and cancel. The folder only supplies the
image list and says which layer it was made for: the ranking needs each image's *maximum*,
which the folder's pooled codes do not hold, so the images are read again (once per
channel; the answer is stored).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from convlens.errors import BadInputError

if TYPE_CHECKING:
    from convlens.server.app import Explorer

__all__ = ["FeatureFolder", "FeatureFolders", "PatchesRequest", "patches_job"]

#: patches per channel the page asks for by default
DEFAULT_K = 9


@dataclass(frozen=True)
class FeatureFolder:
    """A features folder the server was given: where, for which model and layer, how many images."""

    folder: Path
    model: str
    layer: str
    paths: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.folder.name,
            "model": self.model,
            "layer": self.layer,
            "images": len(self.paths),
        }


class FeatureFolders:
    """The server's features folders, looked up by model and layer."""

    def __init__(self, folders: Sequence[FeatureFolder] = ()) -> None:
        self.folders = list(folders)

    @classmethod
    def load(cls, paths: Sequence[str | Path], model_names: Sequence[str]) -> FeatureFolders:
        """Read each folder's manifest (:func:`~convlens.represent.features.load_features`);
        a folder that is not one, or was made with a model this server does not have, is
        refused with :class:`BadInputError` before the server starts."""
        from convlens.represent.features import load_features

        folders = []
        for path in paths:
            features = load_features(path)
            if features.model not in model_names:
                raise BadInputError(
                    f"--features {path}: made with model {features.model!r}; this server has {', '.join(model_names)}"
                )
            if not features.paths:
                raise BadInputError(f"--features {path}: the folder lists no images")
            # the folder stores paths as `convlens features` was given them (relative to where
            # it ran): resolved now, so a later change of directory cannot lose them
            images = tuple(str(Path(p).resolve()) for p in features.paths)
            if not any(Path(p).is_file() for p in images):
                raise BadInputError(
                    f"--features {path}: none of its {len(images)} images is found from here (first: {features.paths[0]}); start the server in the folder `convlens features` ran in"
                )
            folders.append(
                FeatureFolder(Path(path).resolve(), features.model, features.layer, images)
            )
        return cls(folders)

    def for_model(self, model: str) -> list[FeatureFolder]:
        return [f for f in self.folders if f.model == model]

    def find(self, model: str, layer: str) -> FeatureFolder | None:
        return next((f for f in self.folders if f.model == model and f.layer == layer), None)


class PatchesRequest(BaseModel):
    model: str | None = None
    layer: str
    channel: int = Field(ge=0)
    k: int = Field(default=DEFAULT_K, ge=1, le=64)


def no_folder_message(layer: str, folders: Sequence[FeatureFolder]) -> str:
    """Why a channel of ``layer`` has no top patches, and how to get them (one line)."""
    have = ", ".join(sorted({f.layer for f in folders}))
    where = f"this server has features folders for {have}" if have else "this server has none"
    return (
        f"layer {layer} has no features folder ({where}); make one with "
        + f"`convlens features IMAGES --layer {layer} -o DIR` and start `convlens serve --features DIR`"
    )


def patches_job(explorer: Explorer, request: PatchesRequest) -> dict[str, Any]:
    """Top patches of one channel over the features folder of its layer, as a job.

    The request is checked first (model, layer, channel range, a folder for the layer);
    a stored answer comes back as a job that is already done. The answer lists per rank the
    image, the maximum, its position and box, and a PNG of the patch (pixel space, 8 bits);
    ``patches-KEY.npy`` holds the float patches ``(k, C, h, w)`` as the library returned them.
    """
    from convlens.render.overlay import to_uint8_image
    from convlens.represent.patches import top_patches
    from convlens.server.app import _key, _npy, _png

    slot = explorer.slot(request.model)
    model = slot.model
    model.layer(request.layer)  # an unknown layer is refused now, with suggestions
    name = request.layer
    folder = explorer.features.find(model.name, name)
    if folder is None:
        raise BadInputError(no_folder_message(name, explorer.features.for_model(model.name)))
    shape: tuple[int, ...] = model.layer_info(name).output_shape or ()
    if len(shape) == 3 and not request.channel < shape[0]:
        raise BadInputError(
            f"channel {request.channel} is out of range: layer {name!r} has {shape[0]} channels"
        )
    key = _key(model.name, str(folder.folder), name, request.channel, request.k)
    info = explorer.storage.shared_file(f"patches-{key}.json")

    def answer() -> dict[str, Any]:
        return dict(json.loads(info.read_text()))

    if info.exists():
        return explorer.jobs.finished("patches", answer()).to_dict()

    def work(progress: Any) -> dict[str, Any]:
        if info.exists():
            return answer()
        total = [len(folder.paths)]

        def watch(done: int, all_: int) -> None:
            total[0] = all_
            progress(done, all_)

        with slot.lock:
            # decode_workers=0: no fork from a job thread of the server (other threads may
            # hold locks the forked decoder would inherit)
            result = top_patches(
                model, list(folder.paths), name, [request.channel], request.k,
                decode_workers=0, progress=watch,
            )  # fmt: skip
        progress(total[0], total[0])  # a cancel at the very end still stores nothing
        params = result.params
        patches = result.tensors["patches"][0]
        rows = []
        for r in range(patches.shape[0]):
            file = f"patch-{key}-r{r}.png"
            explorer.storage.write(
                explorer.storage.shared_file(file), _png(to_uint8_image(patches[r].float()))
            )
            rows.append(
                {
                    "rank": r + 1,
                    "path": params["paths"][0][r],
                    "value": float(result.tensors["values"][0, r]),
                    "y": int(result.tensors["positions"][0, r, 0]),
                    "x": int(result.tensors["positions"][0, r, 1]),
                    "box": [int(v) for v in result.tensors["boxes"][0, r]],
                    "file": f"/api/shared/{file}",
                }
            )
        explorer.storage.write(
            explorer.storage.shared_file(f"patches-{key}.npy"), _npy(patches.float().numpy())
        )
        meta = {
            "key": key,
            "model": model.name,
            "layer": name,
            "channel": request.channel,
            "k": request.k,
            "folder": folder.folder.name,
            "images": params["n_done"],
            "receptive_field": params["receptive_field"],
            "patches": rows,
            "files": {"patches": f"/api/shared/patches-{key}.npy"},
        }
        explorer.storage.write(info, json.dumps(meta).encode())
        return meta

    return explorer.jobs.submit("patches", work).to_dict()
