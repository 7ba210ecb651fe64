"""Demo: what a trained model gives away about its training set.

Membership inference on the digits (Shokri et al. 2017 shadow models and the loss
threshold of Yeom et al. 2018) against an overfitted and a regularised target, one seed
each: the ROC curves and the attack AUCs. The section trains its own small digit models
(the demo's ``--model`` is not used), so it is the same for every model; about 10 s on
2 cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool = False) -> dict[str, Any]:
    from convlens.privacy.membership import membership_experiment
    from convlens.render.figures import save_figure
    from convlens.render.privacy import roc_figure

    results = membership_experiment("digits", seeds=(0,), progress=progress)
    save_figure(roc_figure(results), out / "privacy_membership_roc.png")
    summary: dict[str, Any] = {"files": ["privacy_membership_roc.png"], "dataset": "digits"}
    for result in results:
        p = result.params
        summary[p["recipe"]["name"]] = {
            "held_out_accuracy": round(float(p["held_out_accuracy"]), 4),
            "loss_threshold_auc": round(float(p["loss_threshold"]["auc"]), 4),
            "shadow_auc": round(float(p["shadow"]["auc"]), 4),
        }
    return summary


SECTION = DemoSection("privacy", "Membership inference on the digits", 80, run)
