"""Demo: attribution maps for two photos, every fast method side by side."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model

# Methods shown by default, with options that keep the demo under its time budget;
# `convlens demo --full` runs every registered method with its defaults.
QUICK = {
    "saliency": {},
    "gradient_x_input": {},
    "guided_backprop": {},
    "deconvnet": {},
    "gradcam": {},
    "gradcam_pp": {},
    "layercam": {},
    "eigencam": {},
    "guided_gradcam": {},
    "lrp": {},
    "integrated_gradients": {"n_steps": 16},
    "smoothgrad": {"n_samples": 8},
    "occlusion": {"patch": 56, "stride": 28},
}


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool = False) -> dict[str, Any]:
    from convlens.attribution import METHODS, applicable_methods, explain
    from convlens.render.attribution import comparison_figure
    from convlens.render.figures import save_figure

    names = (
        applicable_methods(model)
        if full
        else [m for m in QUICK if m in METHODS and METHODS[m].applies_to(model)]
    )
    files: list[str] = []
    timings: dict[str, list[float]] = {}
    photos = ["cat", "hopper"]
    total, done = len(photos) * len(names), 0
    for photo in photos:
        batch = model.prepare([f"sample:{photo}"])
        results = []
        for name in names:
            options = {} if full else _scaled(QUICK.get(name, {}), model)
            result = explain(model, batch, name, **options)
            results.append(result)
            timings.setdefault(name, []).append(result.seconds)
            done += 1
            if progress:
                progress(done, total)
        pred = model.predict(batch, top_k=3)[0]
        caption = ", ".join(f"{lab} {p:.0%}" for lab, p in zip(pred.labels, pred.probabilities))
        file = f"attribution_{photo}.png"
        save_figure(
            comparison_figure(
                [(model.name, results)], 0, labels=[model.labels], predictions=[caption]
            ),
            out / file,
        )
        files.append(file)
    return {
        "files": files,
        "methods": names,
        "seconds_per_method": {k: round(sum(v) / len(v), 3) for k, v in timings.items()},
    }


def _scaled(options: dict[str, Any], model: Model) -> dict[str, Any]:
    """Occlusion windows are set for 224 px; a model of another size (a user's) gets the
    same fraction of its input."""
    scale = min(model.input_size) / 224
    return {
        k: max(1, round(v * scale)) if k in ("patch", "stride") else v for k, v in options.items()
    }


SECTION = DemoSection("attribution", "Attribution maps", 40, run)
