"""``convlens robustness shape-bias DIR``: shape-vs-texture bias on cue-conflict images (Geirhos et al. 2019).

With ``--model a,b,c`` each model's run goes to OUT/<model>/ and OUT gets one table and one
picture across the models (the paper's Fig. 4 has several networks on one plot).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any, Literal

from typing_extensions import TypedDict

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

NAME = "shape-bias"


class CategoryCounts(TypedDict):
    shape: int
    texture: int
    other: int
    shape_bias: Annotated[float | None, "shape / (shape + texture); null when both are 0"]


class ShapeBiasOutput(TypedDict):
    """one model"""

    model: str
    source: str
    preprocess: Literal["standard", "as-is"]
    shape_bias: float | None
    shape: int
    texture: int
    other: int
    n_conflict: int
    n_excluded: int
    per_category: dict[str, CategoryCounts]
    files: Files
    errors: list[str]


class ShapeBiasFiles(TypedDict):
    table: Annotated[
        str,
        "OUT/shape_bias.csv: model,category,shape,texture,other,shape_bias (category 'all': the overall numbers)",
    ]
    figure: Annotated[str, "OUT/shape_bias.png: per-category shape fraction, one colour per model"]


#: the JSON schema of a one-model run's `--json` output
SINGLE = json_schema(ShapeBiasOutput)
#: the JSON schema of `--json` output: one model, or several side by side
SCHEMA = json_schema(
    ShapeBiasOutput | SideBySide[Literal["shape-bias"], ShapeBiasOutput, ShapeBiasFiles]
)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        NAME,
        parents=[common],
        conflict_handler="resolve",  # its own option reuses a shared flag name (the model flag keeps its long alias)
        help="shape-vs-texture bias on cue-conflict images (Geirhos et al. 2019)",
        description="The model's 16-category decision on each cue-conflict image (the category whose ImageNet classes have the highest mean probability) and the shape bias: shape decisions / (shape + texture decisions) over images whose shape and texture differ. Reads the authors' CATEGORY/<shape><n>-<texture><m>.png folders or a path,shape,texture CSV (--labels, what `convlens cue-conflict` writes). Writes OUT/shape_bias.png (per category, like the paper's Fig. 4), OUT/shape_bias.csv and OUT/decisions.csv. With several models (--model a,b,c) each model's files go to OUT/<model>/ and OUT gets one table (shape_bias.csv) and one picture (shape_bias.png) across them.",
    )
    p.add_argument(
        "folder",
        metavar="DIR",
        nargs="?",
        default=None,
        help="cue-conflict folder (CATEGORY/<shape><n>-<texture><m>.png); with --labels, the folder CSV paths are relative to",
    )
    p.add_argument(
        "--labels",
        metavar="CSV",
        default=None,
        help="a path,shape,texture CSV instead of the folder layout",
    )
    p.add_argument(
        "--preprocess",
        choices=["standard", "as-is"],
        default="standard",
        help="standard: resize 256 + centre-crop 224 even for 224 px stimuli (default); as-is: feed them unchanged",
    )
    p.add_argument(
        "--categories",
        metavar="JSON",
        default=None,
        help="16-category mapping {category: [ImageNet classes]} (default: the authors')",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output folder (default shape-bias/); with several models OUT/<model>/ per model",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.atomic import atomic_write_text
    from convlens.render.figures import save_figure
    from convlens.render.robustness import shape_bias_comparison_figure, shape_bias_figure
    from convlens.robustness.shape_bias import load_categories, scan_cue_conflict, shape_bias

    args = ctx.args
    if args.folder is None and args.labels is None:
        raise BadInputError("shape-bias: give a cue-conflict folder DIR or --labels CSV")
    at_least(args.batch_size, 1, "--batch-size")
    if args.folder is not None and args.labels is not None and not Path(args.folder).is_dir():
        raise BadInputError(
            f"{args.folder}: with --labels, DIR must be the folder the CSV's paths are relative to"
        )
    categories = load_categories(args.categories)
    source = args.labels if args.labels is not None else args.folder
    items = scan_cue_conflict(
        source, categories, base=args.folder if args.labels is not None else None
    )
    models = load_models(ctx)
    for model in models:  # every model checked before any image is read
        check_class_scores(
            model,
            "shape bias",
            classes=1 + max(max(v) for v in categories.values()),
            why=" (an ImageNet-1k classifier: the categories name ImageNet classes)",
        )
    out = ctx.out_path("shape-bias", folder=True)
    folders = model_folders(out, models)
    results = []
    with ctx.progress_group() as add:
        bars = [
            add(
                f"shape bias over {len(items)} images"
                + ("" if len(models) == 1 else f" ({m.name})"),
                len(items),
            )
            for m in models
        ]
        for model, bar in zip(models, bars):
            results.append(
                shape_bias(
                    model,
                    items,
                    categories=categories,
                    preprocess=args.preprocess,
                    batch_size=args.batch_size,
                    progress=bar,
                )
            )
    payloads = []
    for model, result, folder in zip(models, results, folders):
        params = result.params
        files = {
            "figure": str(folder / "shape_bias.png"),
            "table": str(folder / "shape_bias.csv"),
            "decisions": str(folder / "decisions.csv"),
            "result": str(folder / "shape_bias.npz"),
        }
        atomic_write_text(Path(files["table"]), _category_csv(params), newline="")
        atomic_write_text(
            Path(files["decisions"]), _decisions_csv(result.sources, params), newline=""
        )
        save_figure(shape_bias_figure(result), files["figure"])
        result.save(folder / "shape_bias")
        payloads.append(
            {
                "model": model.name,
                "source": str(source),
                **{
                    k: params[k]
                    for k in (
                        "preprocess",
                        "shape_bias",
                        "shape",
                        "texture",
                        "other",
                        "n_conflict",
                        "n_excluded",
                        "per_category",
                    )
                },
                "files": files,
                "errors": ctx.bad_inputs,
            }
        )
    if len(models) == 1:
        if ctx.json:
            ctx.emit_json(payloads[0])
        else:
            _print(results[0].params)
            print(f"-> {out}")
        return ctx.exit_code()
    files = {"table": str(out / "shape_bias.csv"), "figure": str(out / "shape_bias.png")}
    atomic_write_text(Path(files["table"]), _comparison_csv(payloads), newline="")
    save_figure(
        shape_bias_comparison_figure([(m.name, r) for m, r in zip(models, results)]),
        files["figure"],
    )
    if ctx.json:
        ctx.emit_json(
            {
                "subcommand": NAME,
                "models": [m.name for m in models],
                "source": str(source),
                "results": payloads,
                "files": files,
                "errors": ctx.bad_inputs,
            }
        )
    else:
        _print_comparison(payloads)
        print(f"-> {out}")
    return ctx.exit_code()


def _bias(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _comparison_csv(payloads: list[dict[str, Any]]) -> str:
    """The one-model tables stacked, with the model in the first column."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "category", "shape", "texture", "other", "shape_bias"])
    for p in payloads:
        for name, row in [*p["per_category"].items(), ("all", p)]:
            writer.writerow(
                [
                    p["model"],
                    name,
                    row["shape"],
                    row["texture"],
                    row["other"],
                    "" if row["shape_bias"] is None else row["shape_bias"],
                ]
            )
    return buffer.getvalue()


def _print_comparison(payloads: list[dict[str, Any]]) -> None:
    """Categories down, models across (shape bias per category), the overall numbers last."""
    categories: list[str] = []
    for p in payloads:
        categories += [c for c in p["per_category"] if c not in categories]
    rows = [["category", *[p["model"] for p in payloads]]]
    for name in categories:
        rows.append(
            [name, *[_bias(p["per_category"].get(name, {}).get("shape_bias")) for p in payloads]]
        )
    rows.append(["shape bias", *[_bias(p["shape_bias"], 3) for p in payloads]])
    rows.append(
        ["shape/texture/other", *[f"{p['shape']}/{p['texture']}/{p['other']}" for p in payloads]]
    )
    print_rows(rows)
    first = payloads[0]
    print(
        f"shape bias = shape / (shape + texture) decisions over {first['n_conflict']} conflict images ({first['n_excluded']} without conflict excluded; preprocessing {first['preprocess']})"
    )


def _category_csv(params: dict[str, Any]) -> str:
    lines = ["category,shape,texture,other,shape_bias"]
    for name, row in params["per_category"].items():
        lines.append(
            f"{name},{row['shape']},{row['texture']},{row['other']},{'' if row['shape_bias'] is None else row['shape_bias']}"
        )
    lines.append(
        f"all,{params['shape']},{params['texture']},{params['other']},{'' if params['shape_bias'] is None else params['shape_bias']}"
    )
    return "\n".join(lines) + "\n"


def _decisions_csv(sources: list[str], params: dict[str, Any]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "shape", "texture", "decision", "cue"])
    for path, shape, texture, decision in zip(
        sources, params["shapes"], params["textures"], params["decisions"]
    ):
        cue = (
            "excluded"
            if shape == texture
            else "shape"
            if decision == shape
            else "texture"
            if decision == texture
            else "other"
        )
        writer.writerow([path, shape, texture, decision, cue])
    return buffer.getvalue()


def _print(params: dict[str, Any]) -> None:
    width = max(len(n) for n in params["per_category"]) if params["per_category"] else 8
    print(f"{'category'.ljust(width)}  shape  texture  other  shape bias")
    for name, row in params["per_category"].items():
        bias = "-" if row["shape_bias"] is None else f"{row['shape_bias']:.2f}"
        print(
            f"{name.ljust(width)}  {row['shape']:5d}  {row['texture']:7d}  {row['other']:5d}  {bias:>10}"
        )
    overall = "-" if params["shape_bias"] is None else f"{params['shape_bias']:.3f}"
    print(
        f"shape bias {overall} ({params['shape']} shape / {params['texture']} texture decisions; {params['other']} neither; "
        + f"{params['n_conflict']} conflict images, {params['n_excluded']} without conflict excluded; preprocessing {params['preprocess']})"
    )
