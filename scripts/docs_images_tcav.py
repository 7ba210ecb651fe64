"""The TCAV picture of docs/features/perturbation.md: the background-colour concept on the
biased and the fair digits models (the planted shortcut, found).

    python scripts/make_docs_images.py tcav
"""

from __future__ import annotations

from pathlib import Path

import torch

import convlens
from convlens.attribution.base import default_cam_layer
from convlens.data.biased import make_biased
from convlens.render.figures import save_figure
from convlens.render.tcav import tcav_figure
from convlens.represent.tcav import tcav

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
CLASS = 3


def main() -> None:
    unbiased, test = make_biased("unbiased"), make_biased("test")
    results = []
    for name in ("bias_digits_cnn", "fair_digits_cnn"):
        model = convlens.load_model(name)
        images = model.normalize(test.pixels[test.labels == CLASS][:30])
        concept = model.normalize(unbiased.pixels[unbiased.backgrounds == CLASS][:30])
        pool = unbiased.pixels[unbiased.backgrounds != CLASS]
        g = torch.Generator().manual_seed(0)
        randoms = [
            model.normalize(pool[torch.randperm(len(pool), generator=g)[:30]]) for _ in range(10)
        ]
        results.append(
            (name, tcav(model, images, CLASS, default_cam_layer(model), concept, randoms))
        )
    save_figure(
        tcav_figure(results, title=f"concept: background of class {CLASS}'s colour; class {CLASS}"),
        OUT / "tcav_bias.png",
    )


if __name__ == "__main__":
    main()
