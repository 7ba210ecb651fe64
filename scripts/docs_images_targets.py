"""Pictures of docs/features/targets.md (the lead wires ``main`` into make_docs_images.py).

python scripts/docs_images_targets.py      # about 20 s on one core (trains shapes_segnet once)
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

import convlens
from convlens.models.segmentation import make_shapes
from convlens.models.small import MNIST_MEAN, MNIST_STD, load_dataset
from convlens.render.attribution import comparison_figure
from convlens.render.figures import save_figure
from convlens.targets import region, similarity

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main(out: Path = OUT) -> list[Path]:
    """Write the region picture (segmentation) and the similarity picture (embeddings)."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    segnet = convlens.load_model("shapes_segnet")
    pixels, labels = make_shapes(1, seed=2024)
    tiles = [
        convlens.explain(segnet, pixels, method, region(name, labels == cls), layer=layer)
        for method, layer in (("gradcam", "act5"), ("saliency", None))
        for cls, name in ((1, "square"), (2, "disc"))
    ]
    fig = comparison_figure([("shapes_segnet", tiles)], 0, labels=[segnet.labels])
    written.append(save_figure(fig, out / "targets_region.png"))

    m = convlens.load_model("mnist_cnn").module
    layers = [
        ("conv1", m.conv1),
        ("act1", m.act1),
        ("pool1", m.pool1),
        ("conv2", m.conv2),
        ("act2", m.act2),
    ]
    embed = nn.Sequential(
        OrderedDict([*layers, ("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())])
    )
    model = convlens.wrap(
        embed,
        input_size=(28, 56),
        mean=MNIST_MEAN,
        std=MNIST_STD,
        resize=None,
        channels=1,
        name="mnist_cnn embedding",
    )
    x, y = load_dataset("mnist", "test")
    threes, sevens = (y == 3).nonzero()[:2, 0], (y == 7).nonzero()[:2, 0]
    blank = torch.zeros_like(x[:1])
    image = torch.cat([x[threes[:1]], x[sevens[:1]]], dim=3)
    # the references are other images of the digits, each alone on the other half
    refs = {
        "another 3": torch.cat([blank, x[threes[1:]]], dim=3),
        "another 7": torch.cat([x[sevens[1:]], blank], dim=3),
    }
    tiles = [
        convlens.explain(model, image, "gradcam", similarity(ref, name=name), layer="act2")
        for name, ref in refs.items()
    ]
    fig = comparison_figure([("3 | 7", tiles)], 0)
    written.append(save_figure(fig, out / "targets_similarity.png"))
    return written


if __name__ == "__main__":
    torch.set_num_threads(1)
    for path in main():
        print(path)
