"""``convlens robustness attack-curve DIR --methods fgsm,pgd --eps 0,1/255,2/255``: accuracy vs budget.

A subcommand of the ``robustness`` group (see :mod:`convlens.cli.cmd_robustness`).
"""

from __future__ import annotations

import argparse
from typing import Any

from convlens.cli.context import Context
from convlens.errors import BadInputError

NAME = "attack-curve"

SCHEMA = {
    "type": "object",
    "required": ["model", "subcommand", "source", "images", "norm", "eps", "methods", "accuracy", "files", "errors"],
    "properties": {
        "model": {"type": "string"},
        "subcommand": {"const": "attack-curve"},
        "source": {"type": "string"},
        "images": {"type": "integer"},
        "norm": {"enum": ["inf", "2"]},
        "steps": {"type": "integer"},
        "eps": {"type": "array", "items": {"type": "number"}},
        "methods": {"type": "array", "items": {"type": "string"}},
        "accuracy": {
            "type": "object",
            "description": "method -> accuracy at each eps (same order as eps), counted on the 8-bit adversarial images",
            "additionalProperties": {"type": "array", "items": {"type": "number"}},
        },
        "files": {"type": "object"},
        "errors": {"type": "array", "items": {"type": "string"}},
    },
}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        NAME,
        parents=[common],
        help="accuracy vs attack budget over a labelled folder: table + plot",
        description="Attack every image of a labelled folder (class subfolders or a path,label CSV) at each budget and count how many the model still classifies correctly, on the 8-bit adversarial images. Prints the table and saves a plot (curve.png) and the raw result.",
    )
    p.add_argument("folder", metavar="DIR", help="labelled folder (class subfolders named by index, wnid or label) or a path,label CSV")
    p.add_argument("--methods", default="fgsm,pgd", help="comma-separated budgeted attacks: fgsm, bim, pgd (default fgsm,pgd)")
    p.add_argument("--eps", default="0,1/255,2/255,4/255,8/255", help="comma-separated budgets in pixel units, fractions allowed (default 0,1/255,2/255,4/255,8/255)")
    p.add_argument("--norm", choices=["inf", "2"], default="inf", help="budget norm (default inf)")
    p.add_argument("--steps", type=int, default=10, help="steps of the iterative attacks (default 10)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("-o", "--out", default=None, help="output folder (default attack-curve/): curve.png, curve.npz/.json")
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.adversarial.curve import CURVE_METHODS, attack_curve, load_labelled
    from convlens.cli.cmd_attack import parse_eps_list
    from convlens.render.adversarial import curve_figure
    from convlens.render.figures import save_figure

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
    model = ctx.model()
    pixels, labels, sources = load_labelled(model, args.folder, limit=args.limit)
    out = ctx.out_path("attack-curve", folder=True)
    total = len(methods) * len(eps) * len(labels)
    with ctx.progress("attack curve", total) as update:
        result = attack_curve(model, pixels, labels, methods=methods, eps=eps, norm=args.norm, steps=args.steps, seed=args.seed or 0, batch_size=args.batch_size, progress=update)
    result.sources = sources
    files = {"plot": str(out / "curve.png"), "result": str(out / "curve.npz")}
    save_figure(curve_figure(result), files["plot"])
    result.save(out / "curve")
    accuracy = result.tensors["accuracy"]
    payload: dict[str, Any] = {
        "model": model.name,
        "subcommand": NAME,
        "source": args.folder,
        "images": len(labels),
        "norm": args.norm,
        "steps": args.steps,
        "eps": eps,
        "methods": methods,
        "accuracy": {m: [round(float(a), 4) for a in accuracy[i]] for i, m in enumerate(methods)},
        "files": files,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        head = ["method"] + [_eps_text(e) for e in eps]
        rows = [[m] + [f"{float(a):.1%}" for a in accuracy[i]] for i, m in enumerate(methods)]
        widths = [max(len(r[j]) for r in [head, *rows]) for j in range(len(head))]
        print(f"accuracy of {model.name} on {len(labels)} images of {args.folder} (L{args.norm} budget)")
        for r in [head, *rows]:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        print(f"-> {out}")
    return ctx.exit_code()


def _eps_text(eps: float) -> str:
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"
