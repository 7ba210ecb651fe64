"""``convlens robustness corruptions DIR``: ImageNet-C corruption errors, mCE and the accuracy drop."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convlens.cli.context import Context
from convlens.errors import BadInputError

NAME = "corruptions"

SCHEMA = {
    "type": "object",
    "required": ["model", "source", "n_images", "corruptions", "severities", "clean_accuracy", "top1_errors", "mean_corruption_error", "mce", "files", "errors"],
    "properties": {
        "model": {"type": "string"},
        "source": {"type": "string"},
        "n_images": {"type": "integer"},
        "corruptions": {"type": "array", "items": {"type": "string"}},
        "severities": {"type": "array", "items": {"type": "integer"}},
        "clean_accuracy": {"type": "number"},
        "clean_error": {"type": "number"},
        "top1_errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "number"}}, "description": "corruption -> top-1 error at each severity"},
        "corruption_errors": {"type": "object"},
        "mean_corruption_error": {"type": "number"},
        "ce": {"type": "object"},
        "mce": {"type": ["number", "null"]},
        "relative_mce": {"type": ["number", "null"]},
        "accuracy_drop": {"type": "object"},
        "complete": {"type": "boolean"},
        "mce_note": {"type": "string"},
        "files": {"type": "object"},
        "errors": {"type": "array", "items": {"type": "string"}, "description": "images that could not be read"},
    },
}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        NAME,
        parents=[common],
        help="error under the 15 ImageNet-C corruptions x 5 severities, mCE, drop from clean accuracy",
        description="Corrupts every labelled image with the ImageNet-C corruptions (Hendrycks & Dietterich 2019, via imagecorruptions-imaug) after resizing and cropping it to the model's resolution, and reports the top-1 error per corruption and severity, the mean corruption error, the mCE normalised by AlexNet's published errors (meaningful only for ImageNet validation images) and the drop from clean accuracy. Predictions go to OUT/predictions/ (resumable); the table to OUT/corruptions.csv and the plot to OUT/corruptions.png.",
    )
    p.add_argument("folder", metavar="DIR", help="labelled images: class subfolders (index, wnid or label) or a path,label CSV")
    p.add_argument("--corruptions", default="all", help="comma-separated corruptions or families (noise, blur, weather, digital); default all 15")
    p.add_argument("--severities", default="1-5", help="severities, e.g. 1-5 (default), 3 or 1,3,5")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("-o", "--out", default=None, help="output folder (default corruptions/)")
    p.set_defaults(func=run)


def parse_corruptions(text: str) -> list[str]:
    """``all``, family names and corruption names, comma-separated, in the paper's order."""
    from convlens.robustness.corruptions import CORRUPTIONS, FAMILIES

    chosen: set[str] = set()
    for part in (t.strip().lower().replace("-", "_") for t in text.split(",")):
        if part == "all":
            chosen.update(CORRUPTIONS)
        elif part in FAMILIES:
            chosen.update(FAMILIES[part])
        elif part in CORRUPTIONS:
            chosen.add(part)
        else:
            raise BadInputError(f"--corruptions: unknown {part!r}; choose from all, {', '.join(FAMILIES)}, {', '.join(CORRUPTIONS)}")
    return [c for c in CORRUPTIONS if c in chosen]


def parse_severities(text: str) -> list[int]:
    """``1-5``, ``3`` or ``1,3,5`` -> sorted distinct severities in 1..5."""
    values: set[int] = set()
    try:
        for part in (t.strip() for t in text.split(",")):
            if "-" in part:
                low, high = (int(v) for v in part.split("-", 1))
                values.update(range(low, high + 1))
            else:
                values.add(int(part))
    except ValueError:
        raise BadInputError(f"--severities {text!r}: expected e.g. 1-5, 3 or 1,3,5") from None
    if not values or any(not 1 <= v <= 5 for v in values):
        raise BadInputError(f"--severities {text!r}: severities run from 1 to 5")
    return sorted(values)


class _Loader:
    """Image file -> pixel space at the model's size (resize and crop first; corrupt later)."""

    def __init__(self, preprocessing: Any) -> None:
        self.preprocessing = preprocessing

    def __call__(self, path: Path) -> Any:
        from convlens.data.images import load_image

        pixels, _ = self.preprocessing.to_pixels(load_image(path))
        return pixels


def run(ctx: Context) -> int:
    import torch

    from convlens.data.folders import scan_labelled
    from convlens.data.runner import read_outputs, run_dataset
    from convlens.render.figures import save_figure
    from convlens.render.robustness import corruption_errors_figure
    from convlens.robustness.corruptions import (
        _package,
        corruption_predictions,
        result_from_predictions,
    )

    args = ctx.args
    corruptions, severities = parse_corruptions(args.corruptions), parse_severities(args.severities)
    if args.batch_size < 1:
        raise BadInputError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise BadInputError(f"--limit {args.limit}: must be at least 1")
    _package()  # a missing dependency fails before the model loads
    model = ctx.model()
    items = scan_labelled(args.folder, model.labels.resolve if model.labels else None)[: args.limit]
    unlabelled = [it for it in items if it.label is None]
    if unlabelled:
        raise BadInputError(f"{args.folder}: {len(unlabelled)} images have no label (e.g. {unlabelled[0].path}); corruption errors need labelled images (class subfolders or a path,label CSV)")
    out = ctx.out_path("corruptions", folder=True)
    ids = {str(it.path): i for i, it in enumerate(items)}  # stable per-image seeds, whatever the batching
    cells = len(corruptions) * len(severities)
    finished = [0]

    with ctx.progress(f"{cells} corruptions x severities over {len(items)} images", len(items) * cells) as update:

        def compute(pixels: torch.Tensor, batch_items: list[Any]) -> dict[str, torch.Tensor]:
            def inner(done: int, total: int) -> None:
                update(finished[0] * cells + done * len(batch_items), len(items) * cells)

            clean, corrupted = corruption_predictions(
                model,
                pixels.to(model.device, model.dtype),
                corruptions=corruptions,
                severities=severities,
                seed=args.seed,
                items=[ids[str(it.path)] for it in batch_items],
                batch_size=args.batch_size,
                progress=inner,
            )
            labels = torch.tensor([it.label for it in batch_items], dtype=torch.int64)
            return {"clean": clean, "corrupted": corrupted.permute(2, 0, 1).contiguous(), "label": labels}

        def outer(done: int, total: int) -> None:
            finished[0] = done

        config = {"model": model.name, "corruptions": corruptions, "severities": severities, "seed": args.seed, "method": "corruptions"}
        report = run_dataset(items, compute, out / "predictions", load=_Loader(model.preprocessing), batch_size=args.batch_size, config=config, progress=outer)
    for path, reason in report.failed:
        ctx.report_bad_input(BadInputError(f"{path}: {reason}"))
    outputs = read_outputs(out / "predictions")
    if outputs["index"].size == 0:
        raise BadInputError(f"{args.folder}: none of the {len(items)} images could be read")
    clean = torch.from_numpy(outputs["clean"])
    corrupted = torch.from_numpy(outputs["corrupted"]).permute(1, 2, 0)
    sources = [str(items[i].path) for i in outputs["index"].tolist()]
    result = result_from_predictions(model, clean, corrupted, torch.from_numpy(outputs["label"]), corruptions, severities, seed=args.seed, sources=sources)
    params = result.provenance["params"]
    files = {"table": str(out / "corruptions.csv"), "figure": str(out / "corruptions.png"), "result": str(out / "corruptions.npz"), "predictions": str(out / "predictions")}
    _write_table(Path(files["table"]), params)
    save_figure(corruption_errors_figure(result), files["figure"])
    result.save(out / "corruptions")
    payload = {
        "model": model.name,
        "source": str(args.folder),
        "n_images": params["n_images"],
        "top1_errors": params["errors"],
        **{k: params[k] for k in ("corruptions", "severities", "clean_accuracy", "clean_error", "corruption_errors", "mean_corruption_error", "ce", "mce", "relative_mce", "accuracy_drop", "complete", "mce_note")},
        "files": files,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        _print_table(params)
        print(f"-> {out}")
    return ctx.exit_code()


def _rows(params: dict[str, Any]) -> list[list[str]]:
    levels = params["severities"]
    header = ["corruption", *[f"s{s}" for s in levels], "mean", "CE", "rel CE", "drop"]
    rows = [header]
    for name in params["corruptions"]:
        rel = params["relative_ce"][name]
        rows.append(
            [
                name,
                *[f"{100 * e:.1f}" for e in params["errors"][name]],
                f"{100 * params['corruption_errors'][name]:.1f}",
                f"{100 * params['ce'][name]:.1f}",
                "-" if rel is None else f"{100 * rel:.1f}",
                f"{100 * params['accuracy_drop'][name]:.1f}",
            ]
        )
    return rows


def _write_table(path: Path, params: dict[str, Any]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    levels = params["severities"]
    writer.writerow(["corruption", *[f"error_s{s}" for s in levels], "error_mean", "ce", "relative_ce", "accuracy_drop"])
    for name in params["corruptions"]:
        rel = params["relative_ce"][name]
        writer.writerow([name, *params["errors"][name], params["corruption_errors"][name], params["ce"][name], "" if rel is None else rel, params["accuracy_drop"][name]])
    writer.writerow(["clean", *[params["clean_error"]] * len(levels), params["clean_error"], "", "", 0.0])
    write_text_atomic(path, buffer.getvalue())


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file and a rename (never half-written)."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _print_table(params: dict[str, Any]) -> None:
    rows = _rows(params)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(f"errors in %; clean accuracy {100 * params['clean_accuracy']:.1f} %, mean corruption error {100 * params['mean_corruption_error']:.1f} %, accuracy drop {100 * params['accuracy_drop']['mean']:.1f} points")
    if params["mce"] is not None:
        partial = "" if params["complete"] else " (not all 5 severities: not the paper's number)"
        relative = params["relative_mce"]
        print(f"mCE {100 * params['mce']:.1f}, relative mCE {'-' if relative is None else f'{100 * relative:.1f}'} (AlexNet = 100; valid only for ImageNet validation images){partial}")
    else:
        print("mCE: needs all 15 corruptions (CE per corruption above, AlexNet = 100)")
