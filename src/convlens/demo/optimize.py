"""Demo: images made by optimisation -- classes the network imagines, a DeepDream, a fooling image.

The quick run (about 8 s on EfficientNet-Lite0 and 2 quiet cores) visualises three
classes in one batched optimisation of 48 steps, dreams one bundled photo at 224 px, and
nudges the cat photo until the network calls it a daisy. ``full`` (about 85 s) visualises
six classes for 128 steps, dreams at three depths and at 448 px, and adds a
feature-inversion strip. Other models get their first classes and activation layers
spread over their depth.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.errors import TargetError
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model

#: ImageNet classes shown (other models: their first classes)
QUICK_CLASSES = ["flamingo", "goldfish", "monarch"]
FULL_CLASSES = ["flamingo", "goldfish", "tarantula", "monarch", "pineapple", "volcano"]
#: EfficientNet-Lite layers for DeepDream (shallow to deep) and inversion
DREAM_LAYERS = ["blocks.3", "blocks.8", "blocks.12"]
INVERT_LAYERS = ["stem_act", "blocks.2", "blocks.6", "blocks.12", "head_act"]


def _classes(model: Model, names: list[str]) -> list[int | str]:
    """``names`` when the model knows them all, else its first ``len(names)`` classes."""
    if model.labels is not None:
        try:
            for name in names:
                model.labels.resolve(name)
            return list(names)
        except TargetError:
            pass
    n = len(model.labels) if model.labels is not None else len(names)
    return list(range(min(len(names), n)))


def _spatial_layers(model: Model, preferred: list[str]) -> list[str]:
    """``preferred`` when the model has them all, else as many activation layers with a
    spatial output, spread over the depth."""
    names = set(model.layer_names())
    if all(name in names for name in preferred):
        return preferred
    rows = [
        r
        for r in model.layers()
        if r.is_leaf and r.output_shape and len(r.output_shape) == 3 and r.calls == 1
    ]
    acts = [r.name for r in rows if "act" in r.type.lower() or "relu" in r.type.lower()] or [
        r.name for r in rows
    ]
    count = len(preferred)
    return list(
        dict.fromkeys(
            acts[min(len(acts) - 1, (k + 1) * len(acts) // (count + 1))] for k in range(count)
        )
    )


def _resize_longest(image: Any, longest: int) -> Any:
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    if max(h, w) <= longest:
        return image
    scale = longest / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(
        image[None], size=size, mode="bilinear", antialias=True, align_corners=False
    )[0].clamp(0, 1)


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool = False) -> dict[str, Any]:
    import torch

    from convlens.data.images import load_image, quantize_8bit
    from convlens.data.samples import load_sample
    from convlens.optimize.dream import deep_dream
    from convlens.optimize.fool import fool
    from convlens.optimize.invert import invert_layers
    from convlens.optimize.visualize import visualize_class
    from convlens.render.figures import save_figure
    from convlens.render.optimize import fooling_figure, gallery_figure

    class_steps = 128 if full else 48
    classes = _classes(model, FULL_CLASSES if full else QUICK_CLASSES)
    dream_layers = _spatial_layers(model, DREAM_LAYERS if full else DREAM_LAYERS[1:2])
    octaves, dream_steps, dream_lr, dream_size = (4, 12, 0.02, 448) if full else (3, 10, 0.02, 224)
    stages = ["classes", "dream", "fool"] + (["invert"] if full else [])
    files: list[str] = []
    summary: dict[str, Any] = {}

    def stage(name: str) -> ProgressFn | None:
        if progress is None:
            return None
        k = stages.index(name)
        return lambda done, total: progress(
            k * 1000 + round(1000 * done / max(total, 1)), 1000 * len(stages)
        )

    # 1. classes, one batched optimisation
    result = visualize_class(model, classes, steps=class_steps, progress=stage("classes"))
    titles = [
        f"{t['label']}\ntop-1 {p['label']} {p['probability']:.0%}"
        for t, p in zip(result.target, result.provenance["top1"])
    ]
    save_figure(
        gallery_figure(
            result.image,
            titles,
            ncols=len(classes),
            suptitle=f"{model.name}: images it classifies as each class ({class_steps} steps)",
        ),
        out / "optimize_classes.png",
    )
    files.append("optimize_classes.png")
    summary["classes"] = [
        {"target": t["label"], "top1": p["label"], "probability": round(p["probability"], 3)}
        for t, p in zip(result.target, result.provenance["top1"])
    ]
    summary["class_steps"] = class_steps

    # 2. DeepDream of a bundled photo, at a small size
    photo = _resize_longest(load_image(load_sample("hopper"), name="sample:hopper"), dream_size)
    dream_progress = stage("dream")
    dreams = []
    for k, layer in enumerate(dream_layers):

        def tick(done: int, total: int, k: int = k) -> None:
            if dream_progress is not None:
                dream_progress(k * total + done, len(dream_layers) * total)

        dreams.append(
            deep_dream(
                model, photo, layer, octaves=octaves, steps=dream_steps, lr=dream_lr, progress=tick
            )
        )
    # a grayscale model dreams in gray: show every picture with three channels
    pictures = torch.stack([p.expand(3, -1, -1) for p in (photo, *(d.image[0] for d in dreams))])
    save_figure(
        gallery_figure(
            pictures,
            ["photo", *(f"DeepDream at {layer}" for layer in dream_layers)],
            ncols=len(pictures),
        ),
        out / "optimize_dream.png",
    )
    files.append("optimize_dream.png")
    summary["dream"] = {
        layer: {
            "before": round(float(d.tensors["objective_before"][0]), 4),
            "after": round(float(d.tensors["objective_after"][-1]), 4),
        }
        for layer, d in zip(dream_layers, dreams)
    }

    # 3. a fooling image: the cat, nudged until the network calls it a daisy
    pixels = model.denormalize(model.prepare(["sample:cat"]).x)
    target = _classes(model, ["daisy"])[0]
    fooled = fool(model, pixels, target, progress=stage("fool"))
    save_figure(fooling_figure(fooled, labels=model.labels), out / "optimize_fooling.png")
    files.append("optimize_fooling.png")
    p = fooled.params
    summary["fool"] = {
        "target": str(target),
        "success": p["success"],
        "probability": round(p["probability"], 3),
        "linf_255": round(p["linf"] * 255, 2),
        "steps": p["steps"],
    }

    # 4. (full) what each layer's code still knows about the photo
    if full:
        layers = _spatial_layers(model, INVERT_LAYERS)
        inversions = invert_layers(model, pixels, layers, steps=200, progress=stage("invert"))
        images = [quantize_8bit(pixels[0])] + [quantize_8bit(r.image[0]) for r in inversions]
        titles = ["original"] + [
            f"{layer}\n{float(r.tensors['psnr'][0]):.1f} dB" for layer, r in zip(layers, inversions)
        ]
        save_figure(
            gallery_figure(torch.stack(images), titles, ncols=len(images)),
            out / "optimize_inversion.png",
        )
        files.append("optimize_inversion.png")
        summary["inversion_psnr"] = {
            layer: round(float(r.tensors["psnr"][0]), 2) for layer, r in zip(layers, inversions)
        }
    return {"files": files, **summary}


SECTION = DemoSection("optimize", "Images made by optimisation", 50, run)
