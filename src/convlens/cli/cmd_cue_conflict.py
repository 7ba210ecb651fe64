"""``convlens cue-conflict SHAPE_DIR TEXTURE_DIR -o OUT/``: shape-vs-texture images by style transfer."""

from __future__ import annotations

import argparse
from typing import Annotated

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least


class CueConflictOutput(TypedDict):
    model: str
    shape_dir: str
    texture_dir: str
    out: str
    labels: Annotated[str, "the path,shape,texture CSV (read by `convlens robustness shape-bias`)"]
    pairs: int
    size: NotRequired[int]
    steps: NotRequired[int]
    seconds: NotRequired[float]
    files: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(CueConflictOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from convlens.style.cue_conflict import DEFAULT_SIZE, DEFAULT_STEPS

    p = sub.add_parser(
        "cue-conflict",
        parents=[common],
        help="shape-vs-texture images by style transfer (Geirhos et al. 2019), with labels.csv",
        description="Style transfer with each shape image as content and each texture image as style (SHAPE_DIR/<category>/*, TEXTURE_DIR/<category>/*). Writes OUT/<shape category>/<shape><n>-<texture><m>.png and OUT/labels.csv (path,shape,texture), which `convlens robustness shape-bias` reads. Same-category pairs are skipped unless --include-same.",
    )
    p.add_argument(
        "shape_dir",
        metavar="SHAPE_DIR",
        help="folder of <category>/ subfolders with the shape (content) images",
    )
    p.add_argument(
        "texture_dir",
        metavar="TEXTURE_DIR",
        help="folder of <category>/ subfolders with the texture (style) images",
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="make only a seeded random subset of N pairs (default: all)",
    )
    p.add_argument(
        "--include-same",
        action="store_true",
        help="also pair shapes and textures of the same category",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"L-BFGS steps per image (default {DEFAULT_STEPS})",
    )
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        help=f"longer side of the images (default {DEFAULT_SIZE})",
    )
    p.add_argument("-o", "--out", default=None, help="output folder (default cue-conflict/)")
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from pathlib import Path

    from convlens.errors import BadInputError
    from convlens.style.cue_conflict import cue_conflict_pairs, make_cue_conflict, scan_categories

    args = ctx.args
    at_least(args.steps, 1, "--steps")
    at_least(args.size, 16, "--size")
    if args.pairs is not None and args.pairs < 1:
        raise BadInputError(f"--pairs {args.pairs}: must be >= 1")
    # check the inputs before loading the model or creating the output folder
    shapes, textures = (
        scan_categories(args.shape_dir, "shape"),
        scan_categories(args.texture_dir, "texture"),
    )
    total = len(
        cue_conflict_pairs(
            shapes, textures, pairs=args.pairs, include_same=args.include_same, seed=args.seed
        )
    )
    out = Path(args.out or "cue-conflict")
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out}: exists and is not a folder")
    model = ctx.model()
    with ctx.progress("making cue-conflict images", total) as update:
        result = make_cue_conflict(
            model,
            args.shape_dir,
            args.texture_dir,
            out,
            pairs=args.pairs,
            include_same=args.include_same,
            size=args.size,
            steps=args.steps,
            seed=args.seed,
            progress=update,
        )
    params = result.params
    payload: CueConflictOutput = {
        "model": model.name,
        "shape_dir": args.shape_dir,
        "texture_dir": args.texture_dir,
        "out": str(out),
        "labels": params["labels"],
        "pairs": params["pairs"],
        "size": args.size,
        "steps": args.steps,
        "seconds": params["seconds"],
        "files": result.sources,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        print(
            f"{params['pairs']} cue-conflict images in {params['seconds']:.0f} s -> {out} (labels: {params['labels']})"
        )
    return 0
