"""``convlens demo [-o DIR] [--full]``: what convlens does, on the built-in model, in one folder."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema

if TYPE_CHECKING:
    from convlens.demo import DemoSection
    from convlens.progress import ProgressFn


class Section(TypedDict):
    files: list[str]
    title: str
    seconds: float


class DemoOutput(TypedDict):
    model: str
    full: bool
    out: str
    seconds: float
    sections: dict[str, Section]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(DemoOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run the tour on the built-in model into a folder (under 3 minutes)",
        description="The tour, written to a folder: predictions, layers, filters, feature maps and gradients for the bundled photos, every fast attribution method side by side, and images made by optimisation (class visualisation, DeepDream, a fooling image).",
    )
    p.add_argument(
        "-o", "--out", default="convlens-demo", help="output folder (default ./convlens-demo)"
    )
    p.add_argument("--full", action="store_true", help="also run the slow sections")
    p.add_argument(
        "--only", nargs="+", default=None, metavar="SECTION", help="run only these sections"
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.demo import discover_sections, run_demo
    from convlens.errors import BadInputError

    known = [s.name for s in discover_sections()]
    for name in ctx.args.only or []:
        if name not in known:
            raise BadInputError(
                f"--only {name}: no such demo section; choose from {', '.join(known)}"
            )
    out = ctx.out_path("convlens-demo", folder=True)
    model = ctx.model()
    started = time.perf_counter()
    with ctx.progress_group() as add_bar:

        def on_section(section: DemoSection) -> ProgressFn:
            if not ctx.json:
                print(f"- {section.title}", flush=True)
            return add_bar(section.title, None)

        summary = run_demo(
            model, out, full=ctx.args.full, only=ctx.args.only, on_section=on_section
        )
    summary["out"] = str(out)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    if ctx.json:
        ctx.emit_json(summary)
        return 0
    preds = summary["sections"].get("predictions")
    if preds:
        print(
            f"  top-1 as expected on {preds['top1_as_expected']}/{preds['photos']} bundled photos"
        )
    files = [f for s in summary["sections"].values() for f in s["files"]]
    print(f"wrote {len(files)} files to {out}/ in {summary['seconds']} s: {', '.join(files)}")
    return 0
