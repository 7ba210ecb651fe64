"""Demo: filters, feature maps and gradients (the course notes' first views)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model


def _middle_layer(model: Model) -> str:
    """A mid-depth activation layer with a spatial output, for the feature-map picture."""
    rows = [
        r
        for r in model.layers()
        if r.is_leaf and r.output_shape and len(r.output_shape) == 3 and r.calls == 1
    ]
    acts = [r for r in rows if "act" in r.type.lower() or "relu" in r.type.lower()] or rows
    return acts[len(acts) // 3].name


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool = False) -> dict[str, Any]:
    from convlens.data.samples import load_sample
    from convlens.inspect import activations, filters, gradients
    from convlens.models.zoo import load_model
    from convlens.render.figures import save_figure
    from convlens.render.inspect import activations_figure, filters_figure, gradients_figure

    steps = 4
    files = []
    save_figure(filters_figure(filters(model)), out / "filters.png")
    files.append("filters.png")
    if progress:
        progress(1, steps)
    cat = model.prepare([load_sample("cat")], sources=["sample:cat"])
    layer = _middle_layer(model)
    save_figure(activations_figure(activations(model, cat, layer)), out / "activations.png")
    files.append("activations.png")
    if progress:
        progress(2, steps)
    save_figure(gradients_figure(gradients(model, cat)), out / "gradients.png")
    files.append("gradients.png")
    if progress:
        progress(3, steps)
    digits = load_model("digits_linear")
    templates = filters(digits, "classifier", scale="filter")
    templates.provenance["labels"] = list(digits.labels.names) if digits.labels else None
    save_figure(filters_figure(templates), out / "digit_templates.png")
    files.append("digit_templates.png")
    if progress:
        progress(4, steps)
    return {"files": files, "activation_layer": layer}


SECTION = DemoSection("inspection", "Filters, feature maps and gradients", 30, run)
