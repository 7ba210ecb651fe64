"""Pictures of docs/features/fast-style.md (the lead wires ``main`` into make_docs_images.py).

    python scripts/docs_images_fast_style.py          # brick, grass, gravel: ~15 min on one core
    python scripts/docs_images_fast_style.py brick    # one style: ~5 min

For each style: a :class:`~convlens.style.fast.StyleNet` trained at the default setting on
the default training set, applied to the held-out photos (cat, coffee, daisy; square centre
crops of 256 px), beside the optimisation result (``style_transfer`` defaults, 256 px) on
the cat. Writes ``docs/images/fast_style_<style>.png`` and prints the losses and times.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import convlens
from convlens.render.figures import save_figure
from convlens.render.optimize import gallery_figure
from convlens.style.fast import HELD_OUT, perceptual_losses, stylize, train_style_net
from convlens.style.transfer import DEFAULT_BETA, load_style_image, style_transfer

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
STYLES = ("brick", "grass", "gravel")
SIZE = 256


def _square(name: str, size: int = SIZE) -> torch.Tensor:
    """A centre crop of the photo, resized to ``size x size``."""
    image = load_style_image(f"sample:{name}")
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[..., top : top + side, left : left + side]
    return F.interpolate(
        crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    ).clamp(0, 1)


def main(out: Path = OUT, styles: tuple[str, ...] = STYLES) -> list[Path]:
    """Write one picture per style: style, the net on each held-out photo, the optimisation on the cat."""
    out.mkdir(parents=True, exist_ok=True)
    model = convlens.load_model("efficientnet_lite0")
    written: list[Path] = []
    photos = {name: _square(name) for name in HELD_OUT}
    for style in styles:
        source = f"sample:{style}"
        started = time.perf_counter()
        net, _ = train_style_net(model, source, seed=0)
        seconds = time.perf_counter() - started
        images, titles = [_square(style)[0]], [f"style: {style}"]
        for name, photo in photos.items():
            fast = stylize(net, photo).tensors["image"]
            c, s = perceptual_losses(model, fast, photo, source)
            images.append(fast[0])
            titles.append(f"net: {name}\nloss {float(c + DEFAULT_BETA * s):.2f}")
        optimised = style_transfer(model, photos["cat"], source, size=SIZE, seed=0)
        total = float(
            optimised.tensors["content_loss"] + DEFAULT_BETA * optimised.tensors["style_loss"]
        )
        images.append(optimised.tensors["image"][0])
        titles.append(f"optimisation: cat\nloss {total:.2f}")
        figure = gallery_figure(
            torch.stack(images),
            titles,
            ncols=len(images),
            suptitle=f"{style}: net trained in {seconds:.0f} s",
        )
        written.append(save_figure(figure, out / f"fast_style_{style}.png"))
        print(
            f"{style}: trained in {seconds:.0f} s; optimisation on the cat {optimised.provenance['params']['seconds']:.0f} s",
            flush=True,
        )
    return written


if __name__ == "__main__":
    torch.set_num_threads(1)
    for path in main(styles=tuple(sys.argv[1:]) or STYLES):
        print(path)
