"""Demo: the cat photo painted with the brick texture, and a texture grown from gravel.

The quick run (about 10 s on EfficientNet-Lite0 and 2 quiet cores) is one style transfer
at 192 px for 80 steps. ``full`` adds the default 384 px, 200-step transfer and a
texture synthesised from the gravel photo. The loss layers are the model's defaults
(:func:`convlens.style.losses.default_layers`), so any model with spatial layers works.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model

CONTENT = "sample:cat"
STYLE = "sample:brick"
TEXTURE = "sample:gravel"


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool = False) -> dict[str, Any]:
    from convlens.render.figures import save_figure
    from convlens.render.style import style_figure, texture_figure
    from convlens.style.transfer import load_style_image, style_transfer, synthesize_texture

    runs: list[tuple[str, dict[str, Any]]] = [("quick", {"size": 192, "steps": 80})]
    if full:
        runs.append(("full", {}))
    stages = len(runs) + int(full)

    def stage(k: int):
        def step(done: int, total: int) -> None:
            if progress is not None:
                progress(k * 1000 + round(1000 * done / max(total, 1)), 1000 * stages)

        return step

    style_pixels = load_style_image(STYLE, model=model)
    files: list[str] = []
    summary: dict[str, Any] = {"content": CONTENT, "style": STYLE}
    for k, (name, settings) in enumerate(runs):
        result = style_transfer(model, CONTENT, STYLE, progress=stage(k), seed=0, **settings)
        t, p = result.tensors, result.params
        stem = f"style_{name}"
        caption = f"{model.name}: {p['steps']} Adam steps at {p['size'][1]}x{p['size'][0]}, {p['seconds']:.0f} s"
        save_figure(
            style_figure(
                t["content"], [style_pixels], t["image"], style_titles=["style"], caption=caption
            ),
            out / f"{stem}.png",
        )
        files.append(f"{stem}.png")
        summary[name] = {
            "content_loss": round(float(t["content_loss"]), 4),
            "style_loss": round(float(t["style_loss"]), 4),
            "seconds": p["seconds"],
        }
    if full:
        texture = synthesize_texture(model, TEXTURE, progress=stage(len(runs)), seed=0)
        save_figure(
            texture_figure(texture.tensors["sample"], texture.image),
            out / "style_texture.png",
        )
        files.append("style_texture.png")
    return {"files": files, **summary}


SECTION = DemoSection("style", "Style transfer and texture synthesis", 70, run)
