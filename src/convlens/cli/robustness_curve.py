"""``convlens robustness attack-curve DIR --methods fgsm,pgd --eps 0,1/255,2/255``: accuracy vs budget.

A subcommand of the ``robustness`` group (see :mod:`convlens.cli.cmd_robustness`). With
``--model a,b,c`` every model runs the same attacks on the same images (each in OUT/<model>/)
and OUT gets one table and one plot across them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Final, Literal

from typing_extensions import NotRequired, TypedDict

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
from convlens.errors import BadInputError

NAME: Final = "attack-curve"


class CurveOutput(TypedDict):
    """one model"""

    model: str
    subcommand: Literal["attack-curve"]
    source: str
    images: int
    norm: Literal["inf", "2"]
    steps: NotRequired[int]
    eps: list[float]
    methods: list[str]
    accuracy: Annotated[
        dict[str, list[float]],
        "method -> accuracy at each eps (same order as eps), counted on the 8-bit adversarial images",
    ]
    files: Files
    errors: list[str]


class CurveFiles(TypedDict):
    table: Annotated[str, "OUT/curve.csv: model,method and the accuracy at each eps"]
    plot: Annotated[str, "OUT/curve.png: one line per model and method"]


#: the JSON schema of a one-model run's `--json` output
SINGLE = json_schema(CurveOutput)
#: the JSON schema of `--json` output: one model, or several side by side
SCHEMA = json_schema(CurveOutput | SideBySide[Literal["attack-curve"], CurveOutput, CurveFiles])


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from convlens.adversarial.curve import CURVE_METHODS

    p = sub.add_parser(
        NAME,
        parents=[common],
        help="accuracy vs attack budget over a labelled folder: table + plot",
        description="Attack every image of a labelled folder (class subfolders or a path,label CSV) at each budget and count how many the model still classifies correctly, on the 8-bit adversarial images. Prints the table and saves a plot (curve.png) and the raw result. With several models (--model a,b,c) each model's run goes to OUT/<model>/ and OUT gets one table (curve.csv) and one plot (curve.png, a line per model and method).",
    )
    p.add_argument(
        "folder",
        metavar="DIR",
        help="labelled folder (class subfolders named by index, wnid or label) or a path,label CSV",
    )
    p.add_argument(
        "--methods",
        default="fgsm,pgd",
        help=f"comma-separated budgeted attacks: {', '.join(CURVE_METHODS)} (default fgsm,pgd)",
    )
    p.add_argument(
        "--eps",
        default="0,1/255,2/255,4/255,8/255",
        help="comma-separated budgets in pixel units, fractions allowed (default 0,1/255,2/255,4/255,8/255)",
    )
    p.add_argument("--norm", choices=["inf", "2"], default="inf", help="budget norm (default inf)")
    p.add_argument(
        "--steps", type=int, default=10, help="steps of the iterative attacks (default 10)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output folder (default attack-curve/): curve.png, curve.npz/.json; with several models also curve.csv and OUT/<model>/",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.adversarial.curve import CURVE_METHODS, attack_curve, load_labelled
    from convlens.atomic import atomic_write_text
    from convlens.cli.cmd_attack import parse_eps_list
    from convlens.render.adversarial import curve_figure
    from convlens.render.figures import save_figure
    from convlens.render.robustness import attack_curve_comparison_figure

    args = ctx.args
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CURVE_METHODS]
    if not methods or unknown:
        raise BadInputError(f"--methods {args.methods!r}: choose from {', '.join(CURVE_METHODS)}")
    eps = parse_eps_list(args.eps, flag="--eps")
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value < 1:
            raise BadInputError(f"{flag} {value}: must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise BadInputError(f"--limit {args.limit}: must be >= 1")
    models = load_models(ctx)
    # every model's images and labels, and its class scores, before any attack runs
    data = []
    for model in models:
        pixels, labels, sources = load_labelled(model, args.folder, limit=args.limit)
        check_class_scores(model, NAME, classes=1 + int(labels.max()) if len(labels) else 1)
        data.append((pixels, labels, sources))
    out = ctx.out_path("attack-curve", folder=True)
    folders = model_folders(out, models)
    results = []
    with ctx.progress_group() as add:
        bars = [
            add(
                "attack curve" if len(models) == 1 else f"attack curve {m.name}",
                len(methods) * len(eps) * len(d[1]),
            )
            for m, d in zip(models, data)
        ]
        for model, (pixels, labels, sources), bar in zip(models, data, bars):
            result = attack_curve(
                model,
                pixels,
                labels,
                methods=methods,
                eps=eps,
                norm=args.norm,
                steps=args.steps,
                seed=args.seed or 0,
                batch_size=args.batch_size,
                progress=bar,
            )
            result.sources = sources
            results.append(result)
    payloads: list[CurveOutput] = []
    for model, result, folder in zip(models, results, folders):
        files = {"plot": str(folder / "curve.png"), "result": str(folder / "curve.npz")}
        save_figure(curve_figure(result), files["plot"])
        result.save(folder / "curve")
        accuracy = result.tensors["accuracy"]
        payloads.append(
            {
                "model": model.name,
                "subcommand": NAME,
                "source": args.folder,
                "images": len(result.labels),
                "norm": args.norm,
                "steps": args.steps,
                "eps": eps,
                "methods": methods,
                "accuracy": {
                    m: [round(float(a), 4) for a in accuracy[i]] for i, m in enumerate(methods)
                },
                "files": files,
                "errors": ctx.bad_inputs,
            }
        )
    if len(models) == 1:
        return _single(ctx, payloads[0], out)
    across: CurveFiles = {"table": str(out / "curve.csv"), "plot": str(out / "curve.png")}
    atomic_write_text(Path(across["table"]), _csv(payloads, eps), newline="")
    save_figure(
        attack_curve_comparison_figure([(m.name, r) for m, r in zip(models, results)]),
        across["plot"],
    )
    payload: SideBySide[Literal["attack-curve"], CurveOutput, CurveFiles] = {
        "subcommand": NAME,
        "models": [m.name for m in models],
        "source": args.folder,
        "results": payloads,
        "files": across,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        print(f"accuracy on {payloads[0]['images']} images of {args.folder} (L{args.norm} budget)")
        print_rows(
            [
                ["model", "method", *[_eps_text(e) for e in eps]],
                *[
                    [p["model"], m, *[f"{a:.1%}" for a in p["accuracy"][m]]]
                    for p in payloads
                    for m in methods
                ],
            ]
        )
        print(f"-> {out}")
    return ctx.exit_code()


def _single(ctx: Context, payload: CurveOutput, out: Path) -> int:
    """One model: the output of a one-model run (as before --model took lists)."""
    if ctx.json:
        ctx.emit_json(payload)
        return ctx.exit_code()
    eps, methods = payload["eps"], payload["methods"]
    head = ["method"] + [_eps_text(e) for e in eps]
    rows = [[m] + [f"{a:.1%}" for a in payload["accuracy"][m]] for m in methods]
    widths = [max(len(r[j]) for r in [head, *rows]) for j in range(len(head))]
    print(
        f"accuracy of {payload['model']} on {payload['images']} images of {payload['source']} (L{payload['norm']} budget)"
    )
    for r in [head, *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print(f"-> {out}")
    return ctx.exit_code()


def _csv(payloads: list[CurveOutput], eps: list[float]) -> str:
    lines = [",".join(["model", "method", *[f"{e:g}" for e in eps]])]
    for p in payloads:
        for method in p["methods"]:
            lines.append(
                ",".join([_csv_cell(p["model"]), method, *[repr(a) for a in p["accuracy"][method]]])
            )
    return "\n".join(lines) + "\n"


def _csv_cell(text: str) -> str:
    return f'"{text}"' if any(c in text for c in ',"\n') else text


def _eps_text(eps: float) -> str:
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"
