"""``convlens stylize IMAGE... --net style.pt [-o OUT/]``: stylise photos with a trained style net."""

from __future__ import annotations

import argparse
from typing import Annotated

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least


class Image(TypedDict):
    source: str
    file: str
    size: list[int]
    seconds: float


class StylizeOutput(TypedDict):
    net: str
    style: NotRequired[Annotated[str | None, "the style the net was trained on"]]
    out: str
    images: list[Image]
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(StylizeOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "stylize",
        parents=[common],
        help="stylise photos with a style net from `convlens style-train` (one forward pass each)",
        description="Runs the feed-forward style network saved by `convlens style-train` on each image (files, folders or sample:NAME) and writes OUT/<name>.png at the image's size (or --size on the longer side). --model is not used: the net carries its own weights.",
    )
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files, folders or sample:NAME")
    p.add_argument("--net", required=True, help="style net .pt file from `convlens style-train`")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="resize each image to this longer side first (default: as it is)",
    )
    p.add_argument("-o", "--out", default=None, help="output folder (default stylized/)")
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from pathlib import Path

    from convlens.cli.images import iter_images
    from convlens.data.images import save_image
    from convlens.style.fast import load_style_net, stylize

    args = ctx.args
    if args.size is not None:
        at_least(args.size, 16, "--size")
    net = load_style_net(args.net, device=ctx.device if args.device else "cpu")
    loaded = list(iter_images(ctx, args.images))
    # no folder is made when every image was bad
    out = ctx.out_path("stylized", folder=True) if loaded else Path(args.out or "stylized")
    rows, used = [], set()
    for item in loaded:
        result = stylize(net, item.image, size=args.size)
        stem = (
            item.source.split(":", 1)[1]
            if item.source.startswith("sample:")
            else item.source.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        )
        name, k = stem, 1
        while name in used:  # two inputs with one name: keep both
            k += 1
            name = f"{stem}-{k}"
        used.add(name)
        target = save_image(result.image[0], out / f"{name}.png")
        params = result.params
        rows.append(
            {
                "source": item.source,
                "file": str(target),
                "size": params["size"],
                "seconds": params["seconds"],
            }
        )
    style = net.provenance.get("params", {}).get("style")
    payload = {
        "net": args.net,
        "style": style if isinstance(style, str) else None,
        "out": str(out),
        "images": rows,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        for row in rows:
            print(
                f"{row['source']} -> {row['file']} ({row['size'][0]}x{row['size'][1]}, {row['seconds'] * 1000:.0f} ms)"
            )
    return ctx.exit_code()
