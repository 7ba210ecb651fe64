"""Demo: a model that learned the background instead of the object (the wolf/snow example).

Two small CNNs on 32x32 digits (:mod:`convlens.models.biased`): one trained where the
background colour gives the class away 95 % of the time, one on random backgrounds. On
120 held-out digits and their counter-cue versions (background of another class), Grad-CAM's
share of mass outside the digit and the accuracy of each: the biased model looks at the
background and fails the counter cues. The section trains its own models (the demo's
``--model`` is not used); about 2 s with both cached, 15-20 s on one core when they train.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model

_N = 120  # held-out digits per split: enough for stable means, quick to explain


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool = False) -> dict[str, Any]:
    from convlens.data.biased import make_biased
    from convlens.metrics.bias import bias_check
    from convlens.models.zoo import load_model
    from convlens.render.bias import bias_figure
    from convlens.render.figures import save_figure

    test, counter = make_biased("test"), make_biased("counter")
    n = len(test) if full else _N
    summary: dict[str, Any] = {"files": [], "images": n, "method": "gradcam"}
    names = ("bias_digits_cnn", "fair_digits_cnn")
    for k, name in enumerate(names):
        net = load_model(name)
        report = bias_check(
            net, net.normalize(test.pixels[:n]), test.labels[:n], test.masks[:n],
            counter=(net.normalize(counter.pixels[:n]), counter.labels[:n], counter.masks[:n]),
        )  # fmt: skip
        file = f"bias_{name}.png"
        save_figure(bias_figure(report, test.pixels[:n], counter.pixels[:n], top=6), out / file)
        summary["files"].append(file)
        summary[name] = {
            "outside_share": round(report.main.mean_share, 4),
            "background_area": round(report.main.mean_background_fraction, 4),
            "accuracy": round(report.main.accuracy, 4),
            "counter_accuracy": round(report.counter.accuracy, 4) if report.counter else None,
        }
        if progress is not None:
            progress(k + 1, len(names))
    return summary


SECTION = DemoSection("bias", "Dataset bias: looking at the background", 85, run)
