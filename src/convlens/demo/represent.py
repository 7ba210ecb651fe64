"""Demo: the bundled photos as a collection -- their codes, a map, neighbours, maximal patches.

The twelve bundled photos are written to a temporary folder and run through the dataset
tools as any folder would be: ``extract_features`` at the last spatial layer (pooled), a
PCA map as a self-contained HTML page with thumbnails (t-SNE with ``full``), the cat's
nearest photos, and for four channels of a middle layer the photos and patches that
excite them most. About 5 s on EfficientNet-Lite0; twelve photos make a small map, so run
``convlens features`` and ``convlens embed`` on a folder of your own for a real one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model

QUERY = "cat"
#: the middle layer whose channels get their maximal patches (other models: a middle spatial layer)
PATCH_LAYER = "blocks.5.expand_act"
PATCH_CHANNELS = 4


def _spatial_layers(model: Model) -> list[str]:
    return [
        r.name
        for r in model.layers()
        if r.is_leaf
        and r.calls == 1
        and r.output_shape
        and len(r.output_shape) == 3
        and r.output_shape[1] * r.output_shape[2] > 1
    ]


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool = False) -> dict[str, Any]:
    import numpy as np

    from convlens.data.images import load_image, save_image
    from convlens.data.samples import SAMPLES, load_sample
    from convlens.render.embedding import (
        embedding_figure,
        embedding_html,
        thumbnail_uri,
        write_html,
    )
    from convlens.render.figures import save_figure
    from convlens.render.neighbors import neighbors_figure
    from convlens.render.patches import patches_figure
    from convlens.represent.embed import embed
    from convlens.represent.features import extract_features, load_features
    from convlens.represent.neighbors import query_codes, search
    from convlens.represent.patches import top_patches

    def stage(k: int, n: int = 3):
        def step(done: int, total: int) -> None:
            if progress is not None:
                progress(k * 1000 + round(1000 * done / max(total, 1)), 1000 * n)

        return step

    spatial = _spatial_layers(model)
    code_layer = spatial[-1]
    activations = [name for name in spatial if name.endswith("act")] or spatial
    patch_layer = PATCH_LAYER if PATCH_LAYER in spatial else activations[len(activations) // 2]
    class_name = model.labels.name if model.labels is not None else None
    method = "tsne" if full else "pca"
    with tempfile.TemporaryDirectory(prefix="convlens-demo-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        paths = []
        for name in SAMPLES:
            paths.append(save_image(load_image(load_sample(name)), photos / f"{name}.png"))
        extract_features(
            model, paths, code_layer, Path(tmp) / "features", batch_size=4, progress=stage(0)
        )
        features = load_features(Path(tmp) / "features")

        mapped = embed(features, method, seed=0)
        thumbs = [thumbnail_uri(p) for p in features.paths]
        title = f"{method.upper()} of the bundled photos at {model.name} {code_layer}"
        write_html(
            embedding_html(
                mapped, color="prediction", class_name=class_name, thumbnails=thumbs, title=title
            ),
            out / "represent_map.html",
        )
        save_figure(
            embedding_figure(mapped, color="prediction", class_name=class_name),
            out / "represent_map.png",
        )

        query = photos / f"{QUERY}.png"
        code = query_codes(model, [str(query)], code_layer, pooled=True)[0]
        found = search(
            features,
            code,
            k=min(5, len(features) - 1),
            metric="cosine",
            query_name=str(query),
            exclude_self=True,
        )
        pictures = [_model_view(model, p) for p in found.paths]
        save_figure(
            neighbors_figure(
                _model_view(model, str(query)), pictures, found, class_name=class_name
            ),
            out / "represent_neighbors.png",
        )
        stage(1)(1, 1)

        patches = top_patches(
            model,
            paths,
            patch_layer,
            list(range(PATCH_CHANNELS)),
            k=4,
            work_dir=Path(tmp) / "patches",
            batch_size=4,
            guided=full,
            progress=stage(2),
        )
        save_figure(patches_figure(patches), out / "represent_top_patches.png")
    return {
        "files": [
            "represent_map.html",
            "represent_map.png",
            "represent_neighbors.png",
            "represent_top_patches.png",
        ],
        "photos": len(features),
        "code_layer": code_layer,
        "code_size": int(features.codes.shape[1]),
        "map": method,
        "neighbors_of": f"sample:{QUERY}",
        "neighbors": [Path(p).stem for p in found.paths],
        "cosine_distances": [round(float(d), 4) for d in np.asarray(found.distances)],
        "patch_layer": patch_layer,
    }


def _model_view(model: Model, path: str) -> Any:
    """The photo as the model sees it (resized, cropped, its channels)."""
    from convlens.data.images import load_image

    return model.preprocessing.to_pixels(load_image(path))[0]


SECTION = DemoSection(
    "represent", "The bundled photos as a collection: map, neighbours, maximal patches", 75, run
)
