"""Report section: the image's nearest neighbours in a features folder (``--index OUT/``).

Shown only when the report is given an index (``convlens report IMAGE --index OUT/``,
``build_report(..., index=OUT)``): a folder written by ``convlens features`` with the same
model. Otherwise, or for another model, the section says it is absent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convlens.render.report import (
    Fragment,
    ReportContext,
    ReportImage,
    ReportSection,
    SectionUnavailable,
    figure_html,
)
from convlens.render.report._common import esc

if TYPE_CHECKING:
    from convlens.models.model import Model

K = 8


def compute(model: Model, batch: Any, ctx: ReportContext) -> dict[str, Any]:
    from convlens.data.images import load_image
    from convlens.errors import ConvlensError
    from convlens.represent.features import load_features
    from convlens.represent.neighbors import query_codes, search

    index = getattr(ctx, "index", None)
    if not index:
        raise SectionUnavailable("no features index given (convlens report IMAGE --index OUT/)")
    try:
        features = load_features(index)
    except ConvlensError as exc:
        raise SectionUnavailable(str(exc)) from None
    if features.model != model.name:
        raise SectionUnavailable(f"the index was computed with {features.model}, not {model.name}")
    stored = features.provenance.get("weights_sha256")
    if stored and model.weights_sha256 and stored != model.weights_sha256:
        raise SectionUnavailable(f"the index was computed with other weights of {model.name}")
    pixels = model.denormalize(batch.x)
    query = query_codes(model, pixels, features.layer, pooled=features.pooled)
    found = search(features, query[0], K, metric="l2", query_name=ctx.source)
    images: list[Any] = []  # pixels, or None for a file that no longer reads
    for path in found.paths:
        try:
            images.append(model.preprocessing.to_pixels(load_image(path))[0])
        except ConvlensError:
            images.append(None)
    return {
        "index": index,
        "features": features,
        "query": pixels[0].cpu(),
        "found": found,
        "images": images,
    }


def render(data: dict[str, Any], model: Model, ctx: ReportContext) -> Fragment:
    from convlens.render.figures import figure_to_png_bytes
    from convlens.render.neighbors import neighbors_figure

    index, features, found = data["index"], data["features"], data["found"]
    name = model.labels.name if model.labels else None
    png = figure_to_png_bytes(
        neighbors_figure(data["query"], data["images"], found, class_name=name)
    )
    params = {
        "index": str(index),
        "layer": features.layer,
        "pooled": features.pooled,
        "k": K,
        "metric": "l2",
        "n_codes": len(features),
    }
    ctx.records["neighbors"] = params
    image = ReportImage(
        "neighbors",
        png,
        f"{K} nearest of {len(features)} images at {features.layer} (l2, exact)",
        {"method": "neighbors", "params": params, "model": model.name},
    )
    rows = "".join(
        f"<tr><td>{r + 1}</td><td>{esc(p)}</td><td>{float(d):.4g}</td></tr>"
        for r, (p, d) in enumerate(zip(found.paths, found.distances))
    )
    table = f"<table><tr><th>#</th><th>image</th><th>distance</th></tr>{rows}</table>"
    summary = {
        "layer": features.layer,
        "k": K,
        "nearest": found.paths[0] if found.paths else None,
        "distance": float(found.distances[0]) if len(found.distances) else None,
    }
    return Fragment(figure_html(image) + table, [image], summary)


SECTION = ReportSection(
    "neighbors",
    "Nearest neighbours in feature space",
    85,
    compute,
    render,
    needs_index=True,
)
