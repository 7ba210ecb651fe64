"""``convlens report IMAGE [--model M | --model a,b] [--full] -o report.html``: one HTML page."""

from __future__ import annotations

import argparse
from typing import Any

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least


class Section(TypedDict):
    name: str
    title: str
    models: dict[str, Any]


class ReportOutput(TypedDict):
    source: str
    models: list[str]
    out: str
    full: NotRequired[bool]
    sections: list[Section]
    images: int
    bytes: int
    seconds: float
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(ReportOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="one self-contained HTML page about an image: predictions, filters, maps, attributions, attack ...",
        description=(
            "Runs every report section (top-k predictions, first-layer filters, activation grids, every attribution method ranked by deletion/insertion AUC, Grad-CAM for the top-3 classes, saliency segmentation, class visualisation, a PGD adversarial example, provenance) and writes ONE HTML file with every picture inlined: no external URL, it opens from disk. `--model a,b` puts two models side by side."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="image file or sample:NAME")
    p.add_argument(
        "--full",
        action="store_true",
        help="slow, complete settings (every method at its defaults, more steps)",
    )
    p.add_argument("--top-k", type=int, default=5, help="predictions listed (default 5)")
    p.add_argument(
        "--sections", default=None, help="comma-separated section names to run (default: all)"
    )
    p.add_argument(
        "--index",
        default=None,
        metavar="OUT",
        help="a `convlens features` folder: adds the image's nearest neighbours",
    )
    p.add_argument(
        "--sign",
        choices=["positive", "absolute", "negative", "all"],
        default=None,
        help="which part of each attribution, Grad-CAM and segmentation map is drawn (default: each method's; see docs/features/display.md)",
    )
    p.add_argument(
        "--clip",
        type=float,
        default=None,
        metavar="PERCENTILE",
        help="percentile of each map's magnitude drawn at full colour (default 99)",
    )
    p.add_argument("-o", "--out", default=None, help="output HTML file (default report.html)")
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.errors import BadInputError
    from convlens.render.report import build_report, discover_sections

    args = ctx.args
    at_least(args.top_k, 1, "--top-k")
    if args.clip is not None and not 0 < args.clip <= 100:
        raise BadInputError(f"--clip {args.clip:g}: expected a percentile in (0, 100], e.g. 99")
    ctx.model_specs()  # a bad --model / config fails here, before any work
    only = [s.strip() for s in args.sections.split(",")] if args.sections else None
    if only:
        known = {s.name for s in discover_sections(index=args.index is not None)}
        bad = [s for s in only if s not in known]
        if bad:
            raise BadInputError(
                f"--sections: unknown section {bad[0]!r}; choose from {', '.join(sorted(known))}"
            )
    out = ctx.out_path("report.html", folder=False)
    if out.suffix.lower() not in (".html", ".htm"):
        raise BadInputError(f"--out {out}: the report is an HTML file; give a name ending in .html")
    if args.index is not None:
        from convlens.represent.features import load_features

        load_features(args.index)  # not a features folder: one line, exit 2, before any work
    models = ctx.models(class_scores=True)
    for model in models:
        model.prepare([args.image])  # a bad image fails here, before any work, one line
    with ctx.progress_group() as add:
        update = add("building report", None)
        report = build_report(
            models,
            args.image,
            full=args.full,
            seed=args.seed,
            top_k=args.top_k,
            only=only,
            progress=update,
            index=args.index,
            sign=args.sign,
            clip=args.clip,
        )
    report.save(out)
    summary = report.summary()
    payload = {**summary, "out": str(out), "full": bool(args.full), "errors": ctx.bad_inputs}
    if ctx.json:
        ctx.emit_json(payload)
    else:
        missing = [
            f"{s['name']} ({m})"
            for s in summary["sections"]
            for m, v in s["models"].items()
            if not v["available"]
        ]
        note = f"; not available: {', '.join(missing)}" if missing else ""
        print(
            f"{args.image}: {len(summary['sections'])} sections, {summary['images']} pictures, {summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.0f} s -> {out}{note}"
        )
    return ctx.exit_code()
