"""Pictures of docs/features/channels.md and of the "fooling images from noise" section of
docs/features/optimize.md.

    python scripts/docs_images_fooling_channels.py   # about 2 minutes on one core
"""

from __future__ import annotations

from pathlib import Path

import torch

import convlens
from convlens.data.samples import labelled_imagenet_files
from convlens.inspect.channels import channel_importance, pruning_curve
from convlens.models.small import load_dataset
from convlens.optimize.fool import fool_from_noise
from convlens.render.channels import pruning_figure
from convlens.render.figures import save_figure
from convlens.render.optimize import noise_fooling_figure

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
TARGETS = (1, 130, 409, 985)  # goldfish, flamingo, analog clock, daisy


def _curve(
    model: convlens.Model,
    rank: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    layer: str,
) -> convlens.Result:
    orders = {
        m: channel_importance(model, rank[0], layer, method=m, labels=rank[1])["order"].flip(0)
        for m in ("ablation", "activation", "taylor")
    }
    return pruning_curve(model, test[0], test[1], layer, orders, random_orders=10, seed=0)


def main(out: Path = OUT) -> list[Path]:
    """Write fooling_noise.png, fooling_pattern.png, channels_digits.png and channels_lite0.png."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    lite0 = convlens.load_model()
    for pattern in ("noise", "pattern"):
        results = [fool_from_noise(lite0, t, pattern=pattern, seed=0) for t in TARGETS]
        written.append(
            save_figure(
                noise_fooling_figure(results, labels=lite0.labels), out / f"fooling_{pattern}.png"
            )
        )

    digits = convlens.load_model("digits_cnn")
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    curve = _curve(digits, (train[0][:300], train[1][:300]), test, "act1")
    title = "digits_cnn act1: ranked on 300 training digits, accuracy on 359 held-out"
    written.append(save_figure(pruning_figure(curve, title=title), out / "channels_digits.png"))

    files = labelled_imagenet_files()
    if len(files) == 20:
        pixels = lite0.denormalize(lite0.prepare([str(p) for p, _ in files]).x)
        labels = torch.tensor([y for _, y in files])
        curve = _curve(lite0, (pixels, labels), (pixels, labels), "blocks.15")
        title = "EfficientNet-Lite0 blocks.15: the 20 foolbox ImageNet photos (ranked on the same)"
        written.append(save_figure(pruning_figure(curve, title=title), out / "channels_lite0.png"))
    else:
        print("skipping channels_lite0.png: the foolbox wheel's photos are not installed")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
