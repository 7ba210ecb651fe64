"""``convlens evaluate DIR|IMAGE... --methods a,b [--sanity N] [--masks DIR | --boxes FILE] -o OUT/``."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from typing_extensions import NotRequired, TypedDict

from convlens.atomic import atomic_open
from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.errors import BadInputError, ConvlensError

if TYPE_CHECKING:
    from convlens.models.model import Model


class Row(TypedDict):
    method: str
    deletion_auc: float
    deletion_sem: float
    insertion_auc: float
    insertion_sem: float
    seconds: float
    pointing: NotRequired[float]
    sanity_spearman: NotRequired[float | None]


class EvaluateOutput(TypedDict):
    model: str
    images: int
    target: Literal["labels", "predicted", "given"]
    rows: list[Row]
    out: str
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(EvaluateOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="faithfulness of attribution methods: deletion/insertion AUC, pointing game, sanity check, against baselines",
        description="Score attribution methods on a set of images: deletion and insertion AUC (Petsiuk 2018), the pointing game when object masks or boxes are given, and the parameter-randomisation sanity check (Adebayo 2018), each beside the random, centre-Gaussian and Sobel-edge baselines. A labelled folder (class subfolders or a path,label CSV) explains the true classes; otherwise the predicted ones.",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="DIR|IMAGE",
        help="labelled folder, CSV of path,label, images, or sample:NAME",
    )
    p.add_argument(
        "--methods",
        default="saliency,gradcam",
        help="comma-separated method names or 'all' (default saliency,gradcam)",
    )
    p.add_argument(
        "--target",
        default=None,
        help="class for every image, or 'predicted' (default: the folder's labels, else predicted)",
    )
    p.add_argument("--steps", type=int, default=50, help="deletion/insertion steps (default 50)")
    p.add_argument(
        "--fill",
        choices=["blur", "zero", "mean"],
        default="blur",
        help="what deleted pixels become (default blur)",
    )
    p.add_argument(
        "--sanity",
        type=int,
        default=0,
        metavar="N",
        help="also run the randomisation sanity check on the first N images (default 0: skip)",
    )
    p.add_argument(
        "--no-baselines",
        action="store_true",
        help="do not score the random / centre / edge baselines",
    )
    p.add_argument(
        "--masks",
        default=None,
        metavar="DIR",
        help="object masks (image files named like each image's stem): adds the pointing game",
    )
    p.add_argument(
        "--boxes",
        default=None,
        metavar="FILE.json",
        help='object boxes {"image name": [[x0, y0, x1, y1], ...]} in original pixels: adds the pointing game',
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, e.g. --opt n_steps=16 (given to the methods that take it)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per chunk (default 8)")
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output folder (default evaluate/): evaluation.npz/.json, metrics.csv, metrics.png",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    import torch

    from convlens.attribution import METHODS
    from convlens.cli.cmd_explain import check_options, method_options, parse_options
    from convlens.metrics.evaluate import evaluate, summary_rows
    from convlens.render.figures import save_figure
    from convlens.render.metrics import evaluation_figure

    args = ctx.args
    methods = (
        sorted(METHODS)
        if args.methods == "all"
        else [m.strip() for m in args.methods.split(",") if m.strip()]
    )
    for name in methods:
        if name not in METHODS:
            raise BadInputError(
                f"--methods {name}: unknown method; choose from {', '.join(sorted(METHODS))} or all"
            )
    for flag, value, low in (
        ("--steps", args.steps, 1),
        ("--batch-size", args.batch_size, 1),
        ("--sanity", args.sanity, 0),
    ):
        if value < low:
            raise BadInputError(f"{flag} {value}: must be >= {low}")
    if args.limit is not None and args.limit < 1:
        raise BadInputError(f"--limit {args.limit}: must be >= 1")
    if args.masks and args.boxes:
        raise BadInputError("give --masks or --boxes, not both")
    boxes = _read_boxes(Path(args.boxes)) if args.boxes else None
    if args.masks and not Path(args.masks).is_dir():
        raise BadInputError(f"--masks {args.masks}: not a folder")
    options = parse_options(args.opt)
    check_options(options, methods)
    per_method = {
        m: {k: v for k, v in options.items() if k in method_options(m, options)} for m in methods
    }
    model = ctx.model(class_scores=True)
    if (
        args.methods == "all"
    ):  # the methods this model can run (attention maps need attention layers)
        methods = [m for m in methods if METHODS[m].applies_to(model)]
        per_method = {m: per_method[m] for m in methods}
    out = ctx.out_path("evaluate", folder=True)

    pixels, sources, labels, geometries, names = _load(ctx, model, args)
    if not sources:
        raise BadInputError("no readable images to evaluate")
    if args.target == "predicted":
        target, how = None, "predicted"
    elif args.target is not None:
        target, how = args.target, "given"
    elif all(label is not None for label in labels):
        target, how = labels, "labels"
    else:
        target, how = None, "predicted"
    masks = None
    if boxes is not None or args.masks:
        masks = torch.stack(
            [
                _mask(model, name, geometry, boxes, args.masks)
                for name, geometry in zip(names, geometries)
            ]
        )
    x = model.normalize(torch.stack(pixels).to(model.device, model.dtype))
    with ctx.progress(f"evaluating {len(methods)} methods on {len(sources)} images") as update:
        result = evaluate(
            model,
            x,
            methods,
            target,
            baselines=not args.no_baselines,
            masks=masks,
            steps=args.steps,
            fill=args.fill,
            sanity_images=args.sanity,
            batch_size=args.batch_size,
            seed=args.seed if args.seed is not None else 0,
            method_options=per_method,
            progress=update,
        )
    result.sources = sources
    rows = summary_rows(result)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "evaluation")
    _write_csv(out / "metrics.csv", rows)
    save_figure(
        evaluation_figure(result, title=f"{model.name}: {len(sources)} images, {how} classes"),
        out / "metrics.png",
    )
    if ctx.json:
        ctx.emit_json(
            {
                "model": model.name,
                "images": len(sources),
                "target": how,
                "rows": rows,
                "out": str(out),
                "errors": ctx.bad_inputs,
            }
        )
    else:
        _print_table(rows, len(sources), how)
        print(f"-> {out}")
    return ctx.exit_code()


def _load(
    ctx: Context, model: Model, args: argparse.Namespace
) -> tuple[list[Any], list[str], list[int | None], list[Any], list[str]]:
    """Pixels at the model's size, sources, labels (None when unknown), geometries, file names."""
    from convlens.cli.images import iter_images
    from convlens.data.folders import scan_labelled
    from convlens.data.images import load_image

    pixels, sources, labels, geometries, names = [], [], [], [], []
    one = args.images[0] if len(args.images) == 1 else None
    if one is not None and (Path(one).is_dir() or one.endswith(".csv")):
        items = scan_labelled(one, model.labels.resolve if model.labels else None)[: args.limit]
        for item in ctx.iter_with_progress(items, "reading"):
            try:
                image = load_image(item.path)
            except ConvlensError as exc:
                ctx.report_bad_input(exc)
                continue
            p, geometry = model.preprocessing.to_pixels(image)
            pixels.append(p)
            sources.append(str(item.path))
            labels.append(item.label)
            geometries.append(geometry)
            names.append(Path(item.path).name)
        return pixels, sources, labels, geometries, names
    for loaded in iter_images(ctx, args.images, "reading"):
        if args.limit is not None and len(sources) >= args.limit:
            break
        p, geometry = model.preprocessing.to_pixels(loaded.image)
        pixels.append(p)
        sources.append(loaded.source)
        labels.append(None)
        geometries.append(geometry)
        names.append(Path(loaded.source).name)
    return pixels, sources, labels, geometries, names


def _read_boxes(path: Path) -> dict[str, list[list[float]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"--boxes {path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInputError(f'--boxes {path}: expected {{"image name": [[x0, y0, x1, y1], ...]}}')
    for key, boxes in data.items():
        ok = isinstance(boxes, list) and all(
            isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)
            for b in boxes
        )
        if not ok:
            raise BadInputError(f"--boxes {path}: {key!r} must be a list of [x0, y0, x1, y1] boxes")
    return data


def _mask(
    model: Model,
    name: str,
    geometry: Any,
    boxes: dict[str, list[list[float]]] | None,
    mask_dir: str | None,
) -> Any:
    """The object mask over the model input, from boxes in original pixels or a mask file."""
    import torch

    from convlens.data.images import find_images, load_image

    h, w = geometry.input_size
    if boxes is not None:
        if name not in boxes:
            raise BadInputError(f"--boxes: no entry for {name!r}")
        mask = torch.zeros(h, w, dtype=torch.bool)
        sy, sx = h / geometry.height, w / geometry.width
        for x0, y0, x1, y1 in boxes[name]:
            # original pixel (inclusive box) -> input pixels it covers
            top, left = (
                max(0, int((y0 - geometry.top) * sy)),
                max(0, int((x0 - geometry.left) * sx)),
            )
            bottom, right = (
                min(h, int((y1 + 1 - geometry.top) * sy + 0.999)),
                min(w, int((x1 + 1 - geometry.left) * sx + 0.999)),
            )
            if bottom > top and right > left:
                mask[top:bottom, left:right] = True
        return mask
    stem = Path(name).stem
    candidates = [p for p in find_images([mask_dir]) if p.stem == stem] if mask_dir else []
    if not candidates:
        raise BadInputError(
            f"--masks {mask_dir}: no mask for {name!r} (expected an image named {stem}.*)"
        )
    image = load_image(candidates[0])
    if tuple(image.shape[-2:]) != tuple(geometry.original_size):
        raise BadInputError(
            f"{candidates[0]}: mask is {tuple(image.shape[-2:])} pixels but its image is {tuple(geometry.original_size)}"
        )
    # the image's own resize and crop, so the mask lands on the same input pixels
    pixels, _ = model.preprocessing.to_pixels(image)
    return pixels.mean(0) > 0.5


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _print_table(rows: list[dict[str, Any]], n: int, how: str) -> None:
    extra = [k for k in ("pointing", "sanity_spearman") if any(k in r for r in rows)]
    header = (
        f"{'method':<26}{'deletion':>12}{'insertion':>12}"
        + "".join(f"{k:>17}" for k in extra)
        + f"{'seconds':>10}"
    )
    print(f"{n} images, {how} classes; deletion AUC lower is better, insertion higher")
    print(header)
    for r in rows:
        cells = "".join(f"{'n/a' if r.get(k) is None else format(r[k], '.3f'):>17}" for k in extra)
        print(
            f"{r['method']:<26}{r['deletion_auc']:>12.3f}{r['insertion_auc']:>12.3f}{cells}{r['seconds']:>10.2f}"
        )
