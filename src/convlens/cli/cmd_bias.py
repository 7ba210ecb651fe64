"""``convlens bias DIR --masks MASKS/``: does the model look at the object or at the background?

``convlens bias make OUT/`` writes the coloured-digits set with a planted background
shortcut (:mod:`convlens.data.biased`); ``convlens bias DIR --masks MASKS/`` reports the
share of attribution mass outside the object per image and overall, the misclassified
images ranked by that share, and with ``--counter`` the accuracy on a counter-cue split
(:mod:`convlens.metrics.bias`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least

if TYPE_CHECKING:
    from convlens.models.model import Model


class ImageShare(TypedDict):
    source: str
    label: int
    predicted: int
    outside_share: Annotated[float | None, "attribution mass outside the object / all mass"]


class Split(TypedDict):
    """one labelled folder (the main split or the counter-cue one)"""

    folder: str
    images: int
    accuracy: float
    mean_outside_share: Annotated[
        float | None, "mean over images of the attribution mass outside the object / all mass"
    ]
    mean_background_fraction: Annotated[float, "the share a uniform map would give"]
    per_image: list[ImageShare]
    misclassified: Annotated[
        list[ImageShare], "wrong predictions, largest outside share first (at most --top-k)"
    ]


class BiasOutput(TypedDict):
    model: str
    method: str
    layer: NotRequired[str | None]
    sign: Literal["abs", "positive"]
    main: Split
    counter: Split | None
    counter_accuracy: float | None
    figure: NotRequired[str | None]
    provenance: NotRequired[
        Annotated[dict[str, Any], "method, params, model name, weights sha256, versions, time"]
    ]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(BiasOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bias",
        parents=[common],
        help="dataset bias: attribution mass outside the object, counter-cue accuracy; `bias make OUT/` writes a biased set",
        description="convlens bias DIR --masks MASKS/ [--counter DIR2 [--counter-masks MASKS2/]]: explain the predicted class of every image of the labelled folder DIR, and report per image and overall the share of attribution mass outside the object (mask: same relative path under MASKS/, white on the object), the misclassified images ranked by that share and the accuracy, on DIR and on the counter-cue split. Signed maps count |A| (--sign abs) or max(A, 0) (--sign positive). convlens bias make OUT/ writes digits on class-coloured backgrounds (OUT/train, OUT/test, OUT/counter and OUT/masks/...); try it with --model bias_digits_cnn and --model fair_digits_cnn.",
    )
    p.add_argument(
        "folder",
        metavar="DIR",
        help="labelled image folder (class subfolders or a CSV), or the word make",
    )
    p.add_argument(
        "make_out",
        metavar="OUT",
        nargs="?",
        default=None,
        help="with make: the folder to write the set into",
    )
    p.add_argument(
        "--masks",
        default=None,
        metavar="MASKS",
        help="folder of object masks with the images' relative paths",
    )
    p.add_argument(
        "--counter",
        default=None,
        metavar="DIR2",
        help="a counter-cue split (backgrounds of another class)",
    )
    p.add_argument(
        "--counter-masks",
        default=None,
        metavar="MASKS2",
        help="its masks (default: MASKS/../<name of DIR2> when that exists)",
    )
    p.add_argument("--method", default="gradcam", help="attribution method (default gradcam)")
    p.add_argument(
        "--layer", default=None, help="layer for CAM methods (default: the last spatial layer)"
    )
    p.add_argument(
        "--sign",
        choices=("abs", "positive"),
        default="abs",
        help="how signed maps count (default abs)",
    )
    p.add_argument("--top-k", type=int, default=10, help="misclassified images listed (default 10)")
    p.add_argument(
        "--limit", type=int, default=None, help="use only the first N images of each folder"
    )
    p.add_argument(
        "--bias",
        type=float,
        default=None,
        help="with make: probability of the class's own background (default 0.95)",
    )
    p.add_argument(
        "--splits",
        default="train,test,counter",
        help="with make: splits to write (train,test,counter,unbiased)",
    )
    p.add_argument("-o", "--out", default=None, help="the picture file (default bias.png)")
    p.set_defaults(func=run)


def _make(ctx: Context) -> int:
    from convlens.data.biased import BIAS, write_biased
    from convlens.errors import BadInputError

    args = ctx.args
    if not args.make_out:
        raise BadInputError(
            "bias make: give the output folder, e.g. convlens bias make biased-digits/"
        )
    bias = BIAS if args.bias is None else args.bias
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    counts = write_biased(args.make_out, splits=splits, bias=bias, seed=args.seed)
    out = Path(args.make_out)
    if ctx.json:
        ctx.emit_json(
            {
                "out": str(out),
                "bias": bias,
                "seed": args.seed,
                "counts": counts,
                "masks": str(out / "masks"),
            }
        )
    else:
        for split, n in counts.items():
            print(f"{split:9s} {n:5d} images -> {out / split}  masks -> {out / 'masks' / split}")
    return 0


def _load(
    model: Model, folder: str, masks_dir: str, limit: int | None
) -> tuple[Any, Any, Any, list[str]]:
    import torch

    from convlens.data.folders import scan_labelled
    from convlens.errors import BadInputError

    items = scan_labelled(folder, model.labels.resolve if model.labels else None)[:limit]
    if any(it.label is None for it in items):
        raise BadInputError(
            f"{folder}: the images need labels (class subfolders or a path,label CSV)"
        )
    root, mroot = Path(folder), Path(masks_dir)
    mask_paths = []
    for it in items:
        rel = (
            it.path.relative_to(root)
            if root.is_dir() and it.path.is_relative_to(root)
            else Path(it.path.name)
        )
        m = mroot / rel
        if not m.is_file():
            raise BadInputError(f"--masks {masks_dir}: no mask {m} for image {it.path}")
        mask_paths.append(str(m))
    batch = model.prepare([str(it.path) for it in items])
    # masks go through the same resize/crop as their images; > 0.5 after it is the object
    masks = model.denormalize(model.prepare(mask_paths).x).mean(dim=1) > 0.5
    labels = torch.tensor([int(it.label) for it in items])  # type: ignore[arg-type]
    return batch.x, labels, masks.cpu(), [str(it.path) for it in items]


def run(ctx: Context) -> int:
    from convlens.errors import BadInputError

    args = ctx.args
    if args.folder == "make":
        return _make(ctx)
    if args.make_out is not None:
        raise BadInputError(
            f"bias: unexpected second folder {args.make_out!r} (only `bias make OUT/` takes one)"
        )
    if not args.masks:
        raise BadInputError(
            "bias DIR: --masks MASKS/ is required (object masks, same relative paths as the images)"
        )
    at_least(args.top_k, 1, "--top-k")
    if args.limit is not None:
        at_least(args.limit, 1, "--limit")
    counter_masks = args.counter_masks
    if args.counter and not counter_masks:
        guess = Path(args.masks).parent / Path(args.counter).name
        if not guess.is_dir():
            raise BadInputError(f"--counter {args.counter}: give --counter-masks (no {guess})")
        counter_masks = str(guess)
    for flag, path in (
        ("DIR", args.folder),
        ("--masks", args.masks),
        ("--counter", args.counter),
        ("--counter-masks", counter_masks),
    ):
        if path is not None and not Path(path).exists():
            raise BadInputError(f"{flag} {path}: no such file or folder")
    out = ctx.out_path("bias.png", folder=False)
    model = ctx.model(class_scores=True)
    x, labels, masks, sources = _load(model, args.folder, args.masks, args.limit)
    counter = None
    if args.counter:
        cx, cy, cm, csources = _load(model, args.counter, counter_masks, args.limit)
        counter = (cx, cy, cm)
    from convlens.metrics.bias import bias_check
    from convlens.render.bias import bias_figure
    from convlens.render.figures import save_figure

    total = x.shape[0] + (counter[0].shape[0] if counter else 0)
    with ctx.progress(f"{args.method} maps", total) as update:
        report = bias_check(
            model,
            x,
            labels,
            masks,
            method=args.method,
            layer=args.layer,
            sign=args.sign,
            counter=counter,
            sources=sources,
            counter_sources=csources if counter else None,
            progress=update,
        )
    fig = bias_figure(
        report,
        model.denormalize(x),
        model.denormalize(counter[0]) if counter else None,
        top=min(args.top_k, 8),
    )
    save_figure(fig, out)
    payload = report.to_dict(top=args.top_k)
    payload["main"]["folder"] = args.folder
    if payload["counter"] is not None:
        payload["counter"]["folder"] = args.counter
    payload["figure"] = str(out)
    if ctx.json:
        ctx.emit_json(payload)
        return 0
    _print_table(report, args, out)
    return 0


def _fmt(v: float) -> str:
    return "  n/a" if v != v else f"{v:.3f}"


def _print_table(report: Any, args: argparse.Namespace, out: Path) -> None:
    layer = f" at {report.layer}" if report.layer else ""
    print(
        f"model {report.model}, method {report.method}{layer}, signed maps counted as {report.sign}"
    )
    print(
        f"{'split':12s} {'images':>6s} {'accuracy':>8s} {'outside share':>13s} {'background area':>15s}"
    )
    rows = [("main", report.main, args.folder)] + (
        [("counter-cue", report.counter, args.counter)] if report.counter else []
    )
    for name, s, _ in rows:
        print(
            f"{name:12s} {len(s.labels):6d} {s.accuracy:8.3f} {_fmt(s.mean_share):>13s} {s.mean_background_fraction:15.3f}"
        )
    if report.counter is not None:
        print(
            f"counter-cue accuracy {report.counter.accuracy:.3f} (main {report.main.accuracy:.3f})"
        )
    for name, s, _ in rows:
        wrong = s.misclassified()[: args.top_k]
        if wrong:
            print(f"misclassified ({name}), largest outside share first:")
            for i in wrong:
                print(
                    f"  {_fmt(float(s.shares[i]))}  {s.labels[i].item()} as {s.predicted[i].item()}  {s._names()[i]}"
                )
    print(f"picture -> {out}")
