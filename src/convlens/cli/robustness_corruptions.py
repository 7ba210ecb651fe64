"""``convlens robustness corruptions DIR``: ImageNet-C corruption errors, mCE and the accuracy drop.

With ``--model a,b,c`` each model's run goes to OUT/<model>/ (its own resumable predictions)
and OUT gets one table and one picture across the models.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from typing_extensions import NotRequired, TypedDict

from convlens.atomic import atomic_write_text
from convlens.cli.context import Context
from convlens.cli.payloads import Files
from convlens.cli.schema import json_schema
from convlens.cli.side_by_side import (
    SideBySide,
    check_class_scores,
    load_models,
    model_folders,
    print_rows,
)
from convlens.cli.validators import at_least
from convlens.errors import BadInputError

if TYPE_CHECKING:
    from convlens.models.model import Model

NAME = "corruptions"


class CorruptionsOutput(TypedDict):
    """one model"""

    model: str
    source: str
    n_images: int
    corruptions: list[str]
    severities: list[int]
    clean_accuracy: float
    clean_error: NotRequired[float]
    top1_errors: Annotated[dict[str, list[float]], "corruption -> top-1 error at each severity"]
    corruption_errors: NotRequired[
        Annotated[dict[str, float], "corruption -> error averaged over the severities"]
    ]
    mean_corruption_error: float
    ce: NotRequired[Annotated[dict[str, float], "corruption -> AlexNet-normalised error"]]
    mce: float | None
    relative_mce: NotRequired[float | None]
    accuracy_drop: NotRequired[
        Annotated[dict[str, float], "clean minus corrupted accuracy, per corruption and 'mean'"]
    ]
    complete: NotRequired[bool]
    mce_note: NotRequired[str]
    files: Files
    errors: Annotated[list[str], "images that could not be read"]


class CorruptionsFiles(TypedDict):
    table: Annotated[
        str, "OUT/corruptions.csv: the one-model tables stacked, model in the first column"
    ]
    figure: Annotated[
        str,
        "OUT/corruptions.png: error per corruption, a bar per model; error vs severity, a line per model",
    ]


#: the JSON schema of a one-model run's `--json` output
SINGLE = json_schema(CorruptionsOutput)
#: the JSON schema of `--json` output: one model, or several side by side
SCHEMA = json_schema(
    CorruptionsOutput | SideBySide[Literal["corruptions"], CorruptionsOutput, CorruptionsFiles]
)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        NAME,
        parents=[common],
        help="error under the 15 ImageNet-C corruptions x 5 severities, mCE, drop from clean accuracy",
        description="Corrupts every labelled image with the ImageNet-C corruptions (Hendrycks & Dietterich 2019, via imagecorruptions-imaug) after resizing and cropping it to the model's resolution, and reports the top-1 error per corruption and severity, the mean corruption error, the mCE normalised by AlexNet's published errors (meaningful only for ImageNet validation images) and the drop from clean accuracy. Predictions go to OUT/predictions/ (resumable); the table to OUT/corruptions.csv and the plot to OUT/corruptions.png. With several models (--model a,b,c) each model's files go to OUT/<model>/ and OUT gets one table (corruptions.csv) and one picture (corruptions.png) across them.",
    )
    p.add_argument(
        "folder",
        metavar="DIR",
        help="labelled images: class subfolders (index, wnid or label) or a path,label CSV",
    )
    p.add_argument(
        "--corruptions",
        default="all",
        help="comma-separated corruptions or families (noise, blur, weather, digital); default all 15",
    )
    p.add_argument("--severities", default="1-5", help="severities, e.g. 1-5 (default), 3 or 1,3,5")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output folder (default corruptions/); with several models OUT/<model>/ per model",
    )
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
            raise BadInputError(
                f"--corruptions: unknown {part!r}; choose from all, {', '.join(FAMILIES)}, {', '.join(CORRUPTIONS)}"
            )
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
    from convlens.data.folders import scan_labelled
    from convlens.render.figures import save_figure
    from convlens.render.robustness import corruption_comparison_figure, corruption_errors_figure
    from convlens.robustness.corruptions import _package

    args = ctx.args
    corruptions, severities = parse_corruptions(args.corruptions), parse_severities(args.severities)
    at_least(args.batch_size, 1, "--batch-size")
    if args.limit is not None and args.limit < 1:
        raise BadInputError(f"--limit {args.limit}: must be at least 1")
    _package()  # a missing dependency fails before the model loads
    models = load_models(ctx)
    # every model's labelled images and class scores are checked before any corruption runs
    plans = []
    for model in models:
        items = scan_labelled(args.folder, model.labels.resolve if model.labels else None)[
            : args.limit
        ]
        unlabelled = [it for it in items if it.label is None]
        if unlabelled:
            raise BadInputError(
                f"{args.folder}: {len(unlabelled)} images have no label (e.g. {unlabelled[0].path}); corruption errors need labelled images (class subfolders or a path,label CSV)"
            )
        check_class_scores(
            model,
            "corruption errors",
            classes=1 + max((int(it.label) for it in items if it.label is not None), default=0),
        )
        plans.append(items)
    out = ctx.out_path("corruptions", folder=True)
    folders = model_folders(out, models)
    cells = len(corruptions) * len(severities)
    runs = []
    with ctx.progress_group() as add:
        bars = [
            add(
                f"{cells} corruptions x severities over {len(items)} images"
                + ("" if len(models) == 1 else f" ({m.name})"),
                len(items) * cells,
            )
            for m, items in zip(models, plans)
        ]
        for model, items, folder, bar in zip(models, plans, folders, bars):
            mark = len(ctx.bad_inputs)
            result = _evaluate(
                ctx,
                model,
                items,
                folder,
                corruptions,
                severities,
                bar,
                prefix="" if len(models) == 1 else f"{model.name}: ",
            )
            runs.append((result, ctx.bad_inputs[mark:]))
    payloads = []
    for model, folder, (result, errors) in zip(models, folders, runs):
        params = result.params
        files = {
            "table": str(folder / "corruptions.csv"),
            "figure": str(folder / "corruptions.png"),
            "result": str(folder / "corruptions.npz"),
            "predictions": str(folder / "predictions"),
        }
        atomic_write_text(Path(files["table"]), _table(params), newline="")
        save_figure(corruption_errors_figure(result), files["figure"])
        result.save(folder / "corruptions")
        payloads.append(
            {
                "model": model.name,
                "source": str(args.folder),
                "n_images": params["n_images"],
                "top1_errors": params["errors"],
                **{
                    k: params[k]
                    for k in (
                        "corruptions",
                        "severities",
                        "clean_accuracy",
                        "clean_error",
                        "corruption_errors",
                        "mean_corruption_error",
                        "ce",
                        "mce",
                        "relative_mce",
                        "accuracy_drop",
                        "complete",
                        "mce_note",
                    )
                },
                "files": files,
                "errors": errors,
            }
        )
    if len(models) == 1:
        if ctx.json:
            ctx.emit_json(payloads[0])
        else:
            _print_table(runs[0][0].params)
            print(f"-> {out}")
        return ctx.exit_code()
    files = {"table": str(out / "corruptions.csv"), "figure": str(out / "corruptions.png")}
    atomic_write_text(
        Path(files["table"]),
        "".join(
            _table(r.params, model=m.name, header=i == 0)
            for i, (m, (r, _)) in enumerate(zip(models, runs))
        ),
        newline="",
    )
    save_figure(
        corruption_comparison_figure([(m.name, r) for m, (r, _) in zip(models, runs)]),
        files["figure"],
    )
    if ctx.json:
        ctx.emit_json(
            {
                "subcommand": NAME,
                "models": [m.name for m in models],
                "source": str(args.folder),
                "results": payloads,
                "files": files,
                "errors": ctx.bad_inputs,
            }
        )
    else:
        _print_comparison(payloads)
        print(f"-> {out}")
    return ctx.exit_code()


def _evaluate(
    ctx: Context,
    model: Model,
    items: list[Any],
    folder: Path,
    corruptions: list[str],
    severities: list[int],
    update: Any,
    *,
    prefix: str,
) -> Any:
    """One model's run: the labelled images through the resumable dataset runner into
    ``folder/predictions``, then the numbers (a Result of kind corruption errors)."""
    import torch

    from convlens.data.runner import read_outputs, run_dataset
    from convlens.robustness.corruptions import corruption_predictions, result_from_predictions

    args = ctx.args
    ids = {
        str(it.path): i for i, it in enumerate(items)
    }  # stable per-image seeds, whatever the batching
    cells = len(corruptions) * len(severities)
    finished = [0]

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
        return {
            "clean": clean,
            "corrupted": corrupted.permute(2, 0, 1).contiguous(),
            "label": labels,
        }

    def outer(done: int, total: int) -> None:
        finished[0] = done

    config = {
        "model": model.name,
        "corruptions": corruptions,
        "severities": severities,
        "seed": args.seed,
        "method": "corruptions",
    }
    report = run_dataset(
        items,
        compute,
        folder / "predictions",
        load=_Loader(model.preprocessing),
        batch_size=args.batch_size,
        config=config,
        progress=outer,
    )
    for path, reason in report.failed:
        ctx.report_bad_input(BadInputError(f"{prefix}{path}: {reason}"))
    outputs = read_outputs(folder / "predictions")
    if outputs["index"].size == 0:
        raise BadInputError(f"{prefix}{args.folder}: none of the {len(items)} images could be read")
    clean = torch.from_numpy(outputs["clean"])
    corrupted = torch.from_numpy(outputs["corrupted"]).permute(1, 2, 0)
    sources = [str(items[i].path) for i in outputs["index"].tolist()]
    return result_from_predictions(
        model,
        clean,
        corrupted,
        torch.from_numpy(outputs["label"]),
        corruptions,
        severities,
        seed=args.seed,
        sources=sources,
    )


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _print_comparison(payloads: list[dict[str, Any]]) -> None:
    """Corruptions down, models across: top-1 error averaged over the severities, then the summaries."""
    rows = [["corruption", *[p["model"] for p in payloads]]]
    for name in payloads[0]["corruptions"]:
        rows.append([name, *[percent(p["corruption_errors"][name]) for p in payloads]])
    rows.append(["clean error", *[percent(p["clean_error"]) for p in payloads]])
    rows.append(["mean corruption error", *[percent(p["mean_corruption_error"]) for p in payloads]])
    rows.append(["accuracy drop", *[percent(p["accuracy_drop"]["mean"]) for p in payloads]])
    rows.append(["mCE", *[percent(p["mce"]) for p in payloads]])
    rows.append(["relative mCE", *[percent(p["relative_mce"]) for p in payloads]])
    print_rows(rows)
    levels = ",".join(str(s) for s in payloads[0]["severities"])
    print(
        f"errors in % on {payloads[0]['n_images']} images, averaged over severities {levels}; accuracy drop in points; mCE and relative mCE (AlexNet = 100) need all 15 corruptions and mean something only on ImageNet validation images"
    )


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


def _table(params: dict[str, Any], *, model: str | None = None, header: bool = True) -> str:
    """The CSV table of one model; with ``model`` a first column naming it (for stacking)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    first = [] if model is None else [model]
    levels = params["severities"]
    if header:
        writer.writerow(
            [
                *(["model"] if model is not None else []),
                "corruption",
                *[f"error_s{s}" for s in levels],
                "error_mean",
                "ce",
                "relative_ce",
                "accuracy_drop",
            ]
        )
    for name in params["corruptions"]:
        rel = params["relative_ce"][name]
        writer.writerow(
            [
                *first,
                name,
                *params["errors"][name],
                params["corruption_errors"][name],
                params["ce"][name],
                "" if rel is None else rel,
                params["accuracy_drop"][name],
            ]
        )
    writer.writerow(
        [
            *first,
            "clean",
            *[params["clean_error"]] * len(levels),
            params["clean_error"],
            "",
            "",
            0.0,
        ]
    )
    return buffer.getvalue()


def _print_table(params: dict[str, Any]) -> None:
    print_rows(_rows(params))
    print(
        f"errors in %; clean accuracy {100 * params['clean_accuracy']:.1f} %, mean corruption error {100 * params['mean_corruption_error']:.1f} %, accuracy drop {100 * params['accuracy_drop']['mean']:.1f} points"
    )
    if params["mce"] is not None:
        partial = "" if params["complete"] else " (not all 5 severities: not the paper's number)"
        relative = params["relative_mce"]
        print(
            f"mCE {100 * params['mce']:.1f}, relative mCE {'-' if relative is None else f'{100 * relative:.1f}'} (AlexNet = 100; valid only for ImageNet validation images){partial}"
        )
    else:
        print("mCE: needs all 15 corruptions (CE per corruption above, AlexNet = 100)")
