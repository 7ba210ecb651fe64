"""Demo: predictions for the bundled photo set, checked against the expected classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool = False) -> dict[str, Any]:
    from convlens.data.samples import SAMPLES, load_sample, sample_names
    from convlens.render.figures import save_figure
    from convlens.render.inspect import predictions_figure

    names = sample_names(labelled_only=True)
    images = [load_sample(n) for n in names]
    predictions = model.predict(
        model.prepare(images, sources=[f"sample:{n}" for n in names]), top_k=5
    )
    rows = []
    for name, pred in zip(names, predictions):
        expected = SAMPLES[name].expected
        rows.append(
            {
                **pred.to_dict(),
                "expected": list(expected),
                "top1_as_expected": pred.classes[0] in expected if expected else None,
            }
        )
    (out / "predictions.json").write_text(json.dumps(rows, indent=2))
    save_figure(predictions_figure(images, predictions), out / "predictions.png")
    if progress:
        progress(1, 1)
    ok = sum(bool(r["top1_as_expected"]) for r in rows)
    return {
        "files": ["predictions.json", "predictions.png"],
        "photos": len(rows),
        "top1_as_expected": ok,
    }


SECTION = DemoSection("predictions", "Predictions on the bundled photos", 10, run)
