"""Demo: an adversarial example of a bundled photo and its (amplified) perturbation.

Quick run (a few seconds on EfficientNet-Lite0): untargeted PGD-10 at 1/255 on the coffee
photo, saved as the 8-bit adversarial PNG, the amplified perturbation and the three-panel
figure. ``full`` adds FGSM at 1/255 and a targeted PGD toward "daisy" at 4/255.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model

PHOTO = "sample:coffee"
TARGET = "daisy"


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool = False) -> dict[str, Any]:
    from convlens.adversarial.attack import attack
    from convlens.data.images import save_image
    from convlens.errors import TargetError
    from convlens.render.adversarial import attack_figure
    from convlens.render.figures import save_figure
    from convlens.render.optimize import amplified_difference

    runs: list[tuple[str, dict[str, Any]]] = [
        ("pgd", {"method": "pgd", "eps": 1 / 255, "steps": 10})
    ]
    if full:
        runs.append(("fgsm", {"method": "fgsm", "eps": 1 / 255}))
        try:
            if model.labels is not None:
                model.labels.resolve(TARGET)
                runs.append(
                    (
                        "pgd_targeted",
                        {"method": "pgd", "eps": 4 / 255, "steps": 20, "target": TARGET},
                    )
                )
        except TargetError:
            pass
    files: list[str] = []
    summary: dict[str, Any] = {}
    for k, (name, settings) in enumerate(runs):

        def step(done: int, total: int, k: int = k) -> None:
            if progress is not None:
                progress(k * 1000 + round(1000 * done / max(total, 1)), 1000 * len(runs))

        result = attack(model, [PHOTO], progress=step, seed=0, **settings)
        t = result.tensors
        stem = f"adversarial_{name}"
        save_image(t["adversarial"][0], out / f"{stem}.png")
        save_image(amplified_difference(t["perturbation"][0]), out / f"{stem}_perturbation.png")
        save_figure(attack_figure(result, labels=model.labels), out / f"{stem}_figure.png")
        files += [f"{stem}_figure.png", f"{stem}.png", f"{stem}_perturbation.png"]
        before, after = int(t["top_classes_before"][0, 0]), int(t["top_classes_after"][0, 0])
        label = model.labels.name if model.labels is not None else str
        summary[name] = {
            "before": label(before),
            "after": label(after),
            "success": bool(t["success"][0]),
            "linf_255": round(float(t["linf"][0]) * 255, 2),
            "l2": round(float(t["l2"][0]), 4),
        }
    return {"files": files, "photo": PHOTO, **summary}


SECTION = DemoSection("adversarial", "Adversarial examples", 60, run)
