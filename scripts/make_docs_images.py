"""Regenerate the pictures in docs/images/: the demo's, one per attribution family, and the
evaluation chart of docs/features/metrics.md (run after changing a view or a method).

    python scripts/make_docs_images.py              # everything (several minutes)
    python scripts/make_docs_images.py cam lrp      # only these family pictures
    python scripts/make_docs_images.py optimize     # the pictures of docs/features/optimize.md
    python scripts/make_docs_images.py display      # docs/features/display.md: maps before/after issue 18
    python scripts/make_docs_images.py style attacks   # a feature's own script (docs_images_*.py)

A feature with many pictures keeps them in its own ``scripts/docs_images_<name>.py`` (a
``main()``); this script runs it by name.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import convlens
from convlens.demo import run_demo

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"

#: picture -> (photo, [(method, options), ...]) for the family pages of docs/features/
FAMILIES: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
    "cam": (
        "cat",
        [
            ("gradcam", {}),
            ("gradcam_pp", {}),
            ("layercam", {}),
            ("scorecam", {}),
            ("eigencam", {}),
            ("guided_gradcam", {}),
        ],
    ),
    "integrated_gradients": (
        "cat",
        [
            ("integrated_gradients", {"baseline": "black", "n_steps": 32}),
            ("integrated_gradients", {"baseline": "blur", "n_steps": 32}),
            ("integrated_gradients", {"baseline": "noise", "n_steps": 32}),
            ("integrated_gradients", {"quadrature": "adaptive", "n_steps": 32}),
        ],
    ),
    "smoothgrad": (
        "cat",
        [("saliency", {}), ("smoothgrad", {}), ("smoothgrad_sq", {}), ("vargrad", {})],
    ),
    "occlusion": (
        "hopper",
        [
            ("occlusion", {"patch": 16, "stride": 8}),
            ("occlusion", {"patch": 32, "stride": 16}),
            ("occlusion", {"patch": 56, "stride": 28, "output": "probability"}),
        ],
    ),
    "lrp": ("cat", [("lrp", {}), ("lrp_alpha_beta", {})]),
    "segment": ("hopper", [("saliency", {}), ("segment", {})]),
    "perturbation": (
        "cat",
        [
            ("superpixel_ablation", {}),
            ("lime", {}),
            ("kernel_shap", {}),
            ("gradient_shap", {}),
            ("deeplift", {}),
        ],
    ),
}


def demo_images() -> None:
    model = convlens.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_demo(model, tmp)
        for section in summary["sections"].values():
            for name in section["files"]:
                if name.endswith(".png"):
                    shutil.copy(Path(tmp) / name, OUT / name)
                    print(f"docs/images/{name}")


def family_image(name: str) -> None:
    from convlens.attribution import METHODS
    from convlens.render.attribution import comparison_figure
    from convlens.render.figures import save_figure

    model = convlens.load_model()
    photo, methods = FAMILIES[name]
    batch = model.prepare([f"sample:{photo}"])
    results = []
    for method, options in methods:
        if method not in METHODS:
            print(f"skipping {method}: not registered")
            continue
        results.append(convlens.explain(model, batch, method, seed=0, **options))
    pred = model.predict(batch, top_k=3)[0]
    caption = ", ".join(f"{lab} {p:.0%}" for lab, p in zip(pred.labels, pred.probabilities))
    save_figure(
        comparison_figure([(model.name, results)], 0, labels=[model.labels], predictions=[caption]),
        OUT / f"{name}.png",
    )
    print(f"docs/images/{name}.png")


def metrics_image() -> None:
    from convlens.data.samples import labelled_imagenet_files
    from convlens.metrics.evaluate import evaluate
    from convlens.render.figures import save_figure
    from convlens.render.metrics import evaluation_figure

    files = labelled_imagenet_files()
    if not files:
        print(
            "skipping metrics.png: the foolbox wheel's photos are not installed (pip install -e '.[test]')"
        )
        return
    model = convlens.load_model()
    x = model.prepare([str(path) for path, _ in files]).x
    labels = [label for _, label in files]
    methods = [
        "saliency",
        "guided_backprop",
        "gradcam",
        "integrated_gradients",
        "smoothgrad",
        "lrp",
    ]
    options = {"integrated_gradients": {"n_steps": 16}, "smoothgrad": {"n_samples": 10}}
    result = evaluate(model, x, methods, labels, steps=20, method_options=options)
    save_figure(
        evaluation_figure(
            result, title=f"{model.name}: {len(files)} labelled ImageNet photos, true classes"
        ),
        OUT / "metrics.png",
    )
    print("docs/images/metrics.png")


def optimize_images() -> None:
    """The pictures of docs/features/optimize.md."""
    import torch

    from convlens.data.images import quantize_8bit
    from convlens.optimize.dream import deep_dream
    from convlens.optimize.fool import fool
    from convlens.optimize.invert import invert_layers
    from convlens.optimize.visualize import visualize_class, visualize_layer
    from convlens.render.figures import save_figure
    from convlens.render.optimize import fooling_figure, gallery_figure

    model = convlens.load_model()
    classes = ["flamingo", "goldfish", "tarantula", "monarch", "pineapple", "volcano"]
    result = visualize_class(model, classes, steps=128)
    titles = [
        f"{t['label']}\ntop-1 {p['label']} {p['probability']:.0%}"
        for t, p in zip(result.provenance["target"], result.provenance["top1"])
    ]
    save_figure(gallery_figure(result["image"], titles, ncols=6), OUT / "class_visualization.png")
    print("docs/images/class_visualization.png")

    rows, titles = [], []
    for layer in ("blocks.1", "blocks.5", "blocks.10", "blocks.15"):
        run = visualize_layer(model, layer, range(6), steps=96)
        rows.append(run["image"])
        titles += [f"{layer}:{c}" for c in range(6)]
    save_figure(gallery_figure(torch.cat(rows), titles, ncols=6), OUT / "layer_visualization.png")
    print("docs/images/layer_visualization.png")

    from convlens.data.images import load_image
    from convlens.data.samples import load_sample

    photo = load_image(load_sample("hopper"))
    dreams = [
        deep_dream(model, photo, layer, octaves=4, steps=12)["image"][0]
        for layer in ("blocks.3", "blocks.8", "blocks.12")
    ]
    save_figure(
        gallery_figure(
            torch.stack([photo, *dreams]), ["photo", "blocks.3", "blocks.8", "blocks.12"], ncols=4
        ),
        OUT / "dream.png",
    )
    print("docs/images/dream.png")

    pixels = model.denormalize(model.prepare(["sample:cat"]).x)
    layers = ["stem_act", "blocks.2", "blocks.6", "blocks.12", "head_act"]
    inversions = invert_layers(model, pixels, layers, steps=200)
    images = [quantize_8bit(pixels[0])] + [quantize_8bit(r["image"][0]) for r in inversions]
    titles = ["original"] + [
        f"{layer}\n{float(r['psnr'][0]):.1f} dB" for layer, r in zip(layers, inversions)
    ]
    save_figure(
        gallery_figure(torch.stack(images), titles, ncols=len(images)), OUT / "inversion.png"
    )
    print("docs/images/inversion.png")

    fooled = fool(model, pixels, "daisy")
    save_figure(fooling_figure(fooled, labels=model.labels), OUT / "fooling.png")
    print("docs/images/fooling.png")


def display_image_before_after() -> None:
    """docs/images/display_before_after.png: the same maps drawn as before issue 18 (top)
    and with render.display's defaults (bottom), at the size a tile shows them."""
    import matplotlib as mpl
    import numpy as np
    from matplotlib.figure import Figure

    from convlens.attribution import explain
    from convlens.render.display import (
        display_caption,
        display_image,
        display_settings,
        result_overlay,
    )
    from convlens.render.figures import save_figure
    from convlens.render.overlay import resize_map

    def old(image: np.ndarray, v: np.ndarray) -> np.ndarray:  # the pre-issue-18 formula
        f = v[np.isfinite(v)]
        signed = f.min() < 0 < f.max() and min(-f.min(), f.max()) >= 0.01 * max(-f.min(), f.max())
        u = (
            np.clip(v / np.percentile(np.abs(f), 99.5), -1, 1)
            if signed
            else np.clip(v / np.percentile(f, 99.5), 0, 1)
        )
        u = resize_map(u, image.shape[:2]).astype(np.float64)
        c = (
            np.asarray(
                mpl.colormaps["RdBu_r" if signed else "viridis"](
                    np.nan_to_num((u + 1) / 2 if signed else u)
                )
            )[..., :3]
            * 255
        )
        w = np.where(np.isnan(u), 0, 0.7 * (np.sqrt(np.abs(np.nan_to_num(u))) if signed else 1.0))[
            ..., None
        ]
        return np.rint((1 - w) * image + w * c).astype(np.uint8)

    model = convlens.load_model()
    methods = [
        ("saliency", {}),
        ("gradient_x_input", {}),
        ("integrated_gradients", {"n_steps": 16}),
        ("lrp", {}),
        ("gradcam", {}),
        ("occlusion", {"patch": 56, "stride": 28}),
    ]
    results = [explain(model, "sample:cat", m, **o) for m, o in methods]
    fig = Figure(figsize=(2.6 * len(methods), 5.6))
    axes = fig.subplots(2, len(methods))
    for k, r in enumerate(results):
        small = display_image(r.originals[0], 320)
        axes[0][k].imshow(old(small, r.display[0].double().numpy()))
        axes[0][k].set_title(f"{r.provenance['method']}\nbefore", fontsize=8)
        axes[1][k].imshow(result_overlay(r, max_side=320))
        axes[1][k].set_title(f"after: {display_caption(display_settings(r))}", fontsize=7)
        for ax in (axes[0][k], axes[1][k]):
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, OUT / "display_before_after.png")
    print("docs/images/display_before_after.png")


#: features whose pictures come from their own script, scripts/docs_images_<name>.py
FEATURE_SCRIPTS = (
    "attacks",
    "robustness",
    "style",
    "fast_style",
    "privacy",
    "represent",
    "targets",
    "transformers",
    "fooling_channels",
    "bias",
    "defences",
    "tcav",
)


def feature_images(name: str) -> None:
    import importlib

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import inspect

    module = importlib.import_module(f"docs_images_{name}")
    takes_argv = "argv" in inspect.signature(module.main).parameters
    module.main([]) if takes_argv else module.main()  # [] = everything, not our own sys.argv


def main(argv: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    wanted = argv or ["demo", *FAMILIES, "metrics", "optimize", "display", *FEATURE_SCRIPTS]
    for name in wanted:
        if name in FEATURE_SCRIPTS:
            feature_images(name)
        elif name == "demo":
            demo_images()
        elif name == "metrics":
            metrics_image()
        elif name == "optimize":
            optimize_images()
        elif name == "display":
            display_image_before_after()
        elif name in FAMILIES:
            family_image(name)
        else:
            sys.exit(
                f"unknown picture {name!r}; choose from demo, {', '.join(FAMILIES)}, metrics, optimize, display, {', '.join(FEATURE_SCRIPTS)}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
