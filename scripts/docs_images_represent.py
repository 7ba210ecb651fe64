"""The pictures of docs/features/represent_b.md (a few minutes on one CPU thread).

    python scripts/docs_images_represent.py

Computes features of the cue-conflict images (``../shared/data/cue-conflict-dev``, Geirhos
et al. 2019: each image has the shape of one category and the texture of another) at
EfficientNet-Lite0's pooled head, then writes docs/images/represent_tsne_shape.png and
represent_tsne_texture.png (the same t-SNE map coloured by shape and by texture category),
represent_map.html (the interactive map), represent_neighbors_cat.png (the bundled cat's
nearest cue-conflict images) and represent_top_patches.png (maximal patches of blocks.4
over the cue-conflict images, the bundled photos and foolbox's 20 ImageNet JPEGs), and
prints the numbers the page quotes.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
CUE = ROOT.parent / "shared" / "data" / "cue-conflict-dev"
LAYER = "head_act"


def _cue_items() -> tuple[list[Path], list[str], list[str]]:
    paths = sorted(CUE.glob("*/*.png"))
    shapes = [p.parent.name for p in paths]
    textures = [re.sub(r"\d+$", "", p.stem.split("-")[1]) for p in paths]
    return paths, shapes, textures


def _photo_folder(tmp: Path) -> list[Path]:
    """The bundled photos as PNG files, plus foolbox's labelled ImageNet JPEGs."""
    import importlib.util

    from PIL import Image

    from convlens.data import load_sample, sample_names

    paths = []
    for name in sample_names():
        path = tmp / f"{name}.png"
        Image.fromarray(np.asarray(load_sample(name))).convert("RGB").save(path)
        paths.append(path)
    spec = importlib.util.find_spec("foolbox")
    if spec and spec.submodule_search_locations:
        paths += sorted(
            Path(next(iter(spec.submodule_search_locations)), "data").glob("imagenet_*.jpg")
        )
    return paths


def main() -> int:
    torch.set_num_threads(1)
    import convlens
    from convlens.data import load_image
    from convlens.render.embedding import (
        embedding_figure,
        embedding_html,
        thumbnail_uri,
        write_html,
    )
    from convlens.render.figures import save_figure
    from convlens.render.neighbors import neighbors_figure
    from convlens.render.patches import patches_figure
    from convlens.represent import extract_features, load_features
    from convlens.represent.embed import embed
    from convlens.represent.neighbors import query_codes, search
    from convlens.represent.patches import top_patches

    if not CUE.is_dir():
        print(f"{CUE} is missing", file=sys.stderr)
        return 2
    model = convlens.load_model()
    paths, shapes, textures = _cue_items()
    categories = sorted(set(shapes))
    with tempfile.TemporaryDirectory() as tmp:
        extract_features(model, paths, LAYER, Path(tmp) / "features")
        features = load_features(Path(tmp) / "features")
        by_path = {str(p): i for i, p in enumerate(paths)}
        order = [by_path[p] for p in features.paths]
        shape_ids = np.array([categories.index(shapes[i]) for i in order])
        texture_ids = np.array([categories.index(textures[i]) for i in order])
        shaped = dataclasses.replace(features, labels=shape_ids)
        result = embed(shaped, "tsne", seed=0)
        name = categories.__getitem__
        save_figure(
            embedding_figure(result, color="label", class_name=name),
            OUT / "represent_tsne_shape.png",
        )
        textured = dataclasses.replace(result, labels=texture_ids)
        save_figure(
            embedding_figure(textured, color="label", class_name=name),
            OUT / "represent_tsne_texture.png",
        )
        pca3 = dataclasses.replace(embed(shaped, "pca", seed=0, dims=3), labels=texture_ids)
        save_figure(
            embedding_figure(pca3, color="label", class_name=name),
            OUT / "represent_pca3d_texture.png",
        )
        for title, ids in (("shape", shape_ids), ("texture", texture_ids)):
            print(
                f"t-SNE 5-NN agreement with the {title} category: {_knn_agreement(result.coords, ids):.3f}"
            )
        thumbs = [thumbnail_uri(p, 64) for p in features.paths]
        page = embedding_html(
            textured,
            class_name=model.labels.name,
            label_name=name,
            thumbnails=thumbs,
            title="Cue-conflict images, EfficientNet-Lite0 head (label = texture)",
        )
        write_html(page, OUT / "represent_map.html")
        print(f"map: {len(page) / 1e6:.2f} MB")

        query = query_codes(model, ["sample:cat"], LAYER)
        found = search(features, query[0], 8, metric="cosine")
        images = [model.preprocessing.to_pixels(load_image(p))[0] for p in found.paths]
        pixels = model.denormalize(model.prepare(["sample:cat"]).x)[0]
        save_figure(
            neighbors_figure(pixels, images, found, class_name=model.labels.name),
            OUT / "represent_neighbors_cat.png",
        )
        print("cat's neighbours:", [Path(p).name for p in found.paths])

        photos = _photo_folder(Path(tmp))
        patches = top_patches(
            model, paths + photos, "blocks.4", [0, 3, 5, 11, 19, 27], 6, guided=True, patch_size=67
        )
        save_figure(patches_figure(patches), OUT / "represent_top_patches.png")
        print(
            f"top patches: {patches.provenance['params']['n_done']} images in {patches.provenance['params']['seconds']:.1f} s"
        )
    return 0


def _knn_agreement(coords: np.ndarray, ids: np.ndarray) -> float:
    d = ((coords[:, None].astype(np.float64) - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :5]
    return float(
        np.mean(
            [
                np.bincount(ids[row], minlength=ids.max() + 1).argmax() == ids[i]
                for i, row in enumerate(near)
            ]
        )
    )


if __name__ == "__main__":
    sys.exit(main())
