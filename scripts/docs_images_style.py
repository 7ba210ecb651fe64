"""The pictures of docs/features/style.md (a few minutes on 2 cores).

python scripts/docs_images_style.py      # or: python scripts/make_docs_images.py style
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import convlens
from convlens.render.figures import save_figure
from convlens.render.grid import labelled_grid
from convlens.render.overlay import to_uint8_image
from convlens.style import style_transfer, synthesize_texture
from convlens.style.losses import layer_statistics
from convlens.style.transfer import load_style_image

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
CONTENTS = ["cat", "coffee"]
STYLES = ["brick", "grass", "gravel"]


def _picture(x) -> np.ndarray:  # type: ignore[no-untyped-def]
    return to_uint8_image((x[0] if x.dim() == 4 else x).float())


def main(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = convlens.load_model()

    # content x style grid
    pictures, titles = [np.full((8, 8, 3), 255, np.uint8)], [""]
    for style in STYLES:
        pictures.append(_picture(load_style_image(f"sample:{style}", 256)))
        titles.append(f"style: {style}")
    for content in CONTENTS:
        pictures.append(_picture(load_style_image(f"sample:{content}", 256)))
        titles.append(f"content: {content}")
        for style in STYLES:
            result = style_transfer(model, f"sample:{content}", f"sample:{style}", size=256)
            pictures.append(_picture(result["image"]))
            titles.append(f"{content} x {style}")
    save_figure(
        labelled_grid(pictures, titles, ncols=4, tile_inches=2.6), out / "style_transfer.png"
    )
    print(out / "style_transfer.png")

    # options: two styles mixed, colour preserved, style scale
    variants = [
        ("gravel, scale 0.5", {"styles": "sample:gravel", "style_scale": 0.5}),
        ("gravel, scale 2", {"styles": "sample:gravel", "style_scale": 2.0}),
        (
            "0.5 brick + 0.5 grass",
            {"styles": ["sample:brick", "sample:grass"], "style_weights": [0.5, 0.5]},
        ),
        ("brick, colour kept", {"styles": "sample:brick", "preserve_color": True}),
    ]
    pictures, titles = [], []
    for title, options in variants:
        styles = options.pop("styles")
        pictures.append(
            _picture(style_transfer(model, "sample:coffee", styles, size=256, **options)["image"])
        )
        titles.append(title)
    save_figure(
        labelled_grid(pictures, titles, ncols=4, tile_inches=2.6), out / "style_options.png"
    )
    print(out / "style_options.png")

    # textures larger than their samples
    pictures, titles = [], []
    for name in STYLES:
        result = synthesize_texture(model, f"sample:{name}")
        pictures += [_picture(result["sample"]), _picture(result["image"])]
        titles += [f"{name} sample (256 px)", "synthesised (384 px)"]
    save_figure(labelled_grid(pictures, titles, ncols=6, tile_inches=2.4), out / "texture.png")
    print(out / "texture.png")

    # a Gram matrix
    from convlens.render.style import gram_figure

    stats = layer_statistics(model, load_style_image("sample:brick", 256), "blocks.3.expand_act")
    save_figure(
        gram_figure(
            stats["gram"], stats["mean"], stats["variance"], title="brick, blocks.3.expand_act"
        ),
        out / "gram.png",
    )
    print(out / "gram.png")


if __name__ == "__main__":
    main()
