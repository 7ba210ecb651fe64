"""Pictures for docs/features/robustness.md: a corruption grid of a bundled photo, the shape-bias
plot, the corruption error table of the 20 foolbox ImageNet images, and the shape bias of
three EfficientNet-Lite models side by side.

    python scripts/docs_images_robustness.py [--skip-table] [--side-by-side-only]

Writes docs/images/corruptions_grid.png, docs/images/shape_bias.png, (unless
``--skip-table``, ~2 minutes on one thread) docs/images/corruption_errors.png and
docs/images/shape_bias_side_by_side.png (``--side-by-side-only``: just that one, ~2 minutes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
CUE_CONFLICT = ROOT.parent / "shared" / "data" / "cue-conflict-dev"


def main(argv: list[str] | None = None) -> None:
    import convlens
    from convlens.data.samples import labelled_imagenet_files
    from convlens.render.figures import save_figure
    from convlens.render.robustness import (
        corruption_errors_figure,
        corruption_grid_figure,
        shape_bias_figure,
    )
    from convlens.robustness import CORRUPTIONS, corrupt, corruption_robustness, shape_bias

    parser = argparse.ArgumentParser(description="robustness pictures for the docs")
    parser.add_argument(
        "--skip-table", action="store_true", help="skip the 15 x 5 error table (the slow part)"
    )
    parser.add_argument("--cue-conflict", default=str(CUE_CONFLICT), help="the cue-conflict folder")
    parser.add_argument(
        "--side-by-side-only",
        action="store_true",
        help="only the shape bias of three models side by side",
    )
    args = parser.parse_args(argv)
    IMAGES.mkdir(parents=True, exist_ok=True)
    side_by_side_image(Path(args.cue_conflict))
    if args.side_by_side_only:
        return
    model = convlens.load_model()

    # Every corruption at severities 1, 3 and 5 on the cat (crop first, then corrupt), three a row.
    cat = model.denormalize(model.prepare(["sample:cat"]).x)
    shown = {
        name: torch.cat([corrupt(cat, name, s, seed=0) for s in (1, 3, 5)]) for name in CORRUPTIONS
    }
    save_figure(
        corruption_grid_figure(shown, [1, 3, 5], ncols=9), IMAGES / "corruptions_grid.png", dpi=80
    )
    print("docs/images/corruptions_grid.png")

    folder = Path(args.cue_conflict)
    if folder.is_dir():
        result = shape_bias(model, folder)
        figure = shape_bias_figure(
            result, reference={"ResNet-50 (paper)": 0.22, "VGG-16 (paper)": 0.09}
        )
        save_figure(figure, IMAGES / "shape_bias.png")
        print("docs/images/shape_bias.png")
    else:
        print(f"{folder}: not found, shape_bias.png skipped", file=sys.stderr)

    files = labelled_imagenet_files()
    if not args.skip_table and files:
        pixels = model.denormalize(model.prepare([str(p) for p, _ in files]).x)
        result = corruption_robustness(model, pixels, [label for _, label in files])
        save_figure(
            corruption_errors_figure(
                result, title=f"EfficientNet-Lite0, {len(files)} ImageNet images (foolbox wheel)"
            ),
            IMAGES / "corruption_errors.png",
        )
        print("docs/images/corruption_errors.png")


def side_by_side_image(folder: Path) -> None:
    """Shape bias of EfficientNet-Lite0, -Lite1 and -Lite2 on one plot, as the CLI draws it for
    ``convlens robustness shape-bias DIR --model efficientnet_lite0,efficientnet_lite1,efficientnet_lite2``."""
    import convlens
    from convlens.render.figures import save_figure
    from convlens.render.robustness import shape_bias_comparison_figure
    from convlens.robustness import shape_bias

    if not folder.is_dir():
        print(f"{folder}: not found, shape_bias_side_by_side.png skipped", file=sys.stderr)
        return
    runs = [
        (name, shape_bias(convlens.load_model(name), folder))
        for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    ]
    figure = shape_bias_comparison_figure(runs)
    save_figure(figure, IMAGES / "shape_bias_side_by_side.png")
    print("docs/images/shape_bias_side_by_side.png")


if __name__ == "__main__":
    main()
