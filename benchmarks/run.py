"""Run the convlens benchmarks and print every table.

    python benchmarks/run.py [--only PATTERN] [--repeats 7] [--threads 2]
                             [--batch-sizes 1 8] [--model efficientnet_lite0] [--json out.json]

Tables go to stdout (aligned Markdown, pasteable into benchmarks/README.md); progress goes
to stderr. Exit status: 0 done, 1 a row or a peer failed (shown in its table), 2 bad options.
Benchmarks never run in CI: they take minutes and their absolute times mean little on
shared machines. Read the ratios, which are measured side by side in this one process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # harness and rows, also when run as `python -m` or imported

try:
    import convlens
except ModuleNotFoundError:  # a checkout without `pip install -e .`: use its src/
    sys.path.insert(0, str(HERE.parent / "src"))
    import convlens

# after the sys.path set-up above, which these need
import torch  # noqa: E402
from harness import (  # noqa: E402
    Context,
    discover_rows,
    format_report,
    machine_facts,
    make_contexts,
    run_benchmarks,
    select_rows,
)
from rows.floor import floor_setup  # noqa: E402

MIN_CITABLE_REPEATS = 7  # DESIGN.md: medians of at least 7 interleaved runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time convlens against the autograd floor and its peers."
    )
    parser.add_argument(
        "--only", metavar="PATTERN", help="regular expression on 'group/row name' (any case)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="interleaved timed rounds per row (>= 7 to cite; default 7)",
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed calls of each callable first (default 2)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 8], metavar="N", help="default: 1 8"
    )
    parser.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="convlens model name (default efficientnet_lite0)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write machine facts and every timing as JSON",
    )
    args = parser.parse_args(argv)
    for name in ("repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.warmup < 0:
        parser.error(f"--warmup {args.warmup}: must be 0 or more")
    if any(n < 1 for n in args.batch_sizes):
        parser.error(
            f"--batch-sizes {' '.join(map(str, args.batch_sizes))}: every batch size must be at least 1"
        )
    return args


def _progress(done: int, total: int, label: str) -> None:
    print(f"[{done}/{total}] {label}", file=sys.stderr, flush=True)


def _row_done(r: Any) -> None:
    """One line per measured row on stderr, so a long run stopped early keeps its numbers."""
    best = r.best_peer
    peer = (
        f", x peer {r.ratio_to_peer:.2f} ({best.label})"
        if best is not None and r.ratio_to_peer is not None
        else ""
    )
    if r.error:
        print(f"  = {r.name} @ {r.batch_size}: {r.error}", file=sys.stderr, flush=True)
    else:
        print(
            f"  = {r.name} @ {r.batch_size}: {r.own.median * 1000:.1f} ms, x floor {r.ratio_to_floor:.2f}{peer}, peak {r.own.peak_mb or 0:.0f} MB",
            file=sys.stderr,
            flush=True,
        )


def _describe_inputs(contexts: dict[int, Context]) -> str:
    from convlens.data.samples import SAMPLES

    ctx = contexts[max(contexts)]
    names = list(dict.fromkeys(ctx.sources))
    predicted = {name: int(c) for name, c in zip(ctx.sources, ctx.classes.tolist())}
    hits = sum(predicted[n] in SAMPLES[n].expected for n in names)
    return f"bundled photos {', '.join(names)} (top-1 as expected: {hits}/{len(names)}), repeated in this order to fill the batch"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows = select_rows(discover_rows("rows"), args.only)
    except ValueError as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(
            f"run.py: --only {args.only!r} matches no row; run without --only to see them all",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    # what the convlens command runs with (CONVLENS_MALLOC=default: glibc's defaults);
    # rows and their peers share the process, so their ratios compare like with like
    from convlens.memory import keep_freed_memory_unless_disabled

    allocator = "freed memory kept" if keep_freed_memory_unless_disabled() else "default"
    try:
        model = convlens.load_model(args.model)
    except convlens.ConvlensError as exc:
        print(f"run.py: --model {args.model}: {exc}", file=sys.stderr)
        return 2
    batch_sizes = list(dict.fromkeys(args.batch_sizes))
    contexts = make_contexts(model, batch_sizes, args.threads)
    load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    results = run_benchmarks(
        rows,
        contexts,
        floor_setup,
        repeats=args.repeats,
        warmup=args.warmup,
        progress=_progress,
        on_result=_row_done,
    )
    peers = sorted({p.package or p.library for row in rows for p in row.peers})
    facts = machine_facts(
        args.threads,
        peers,
        model=args.model,
        inputs=_describe_inputs(contexts),
        repeats=args.repeats,
        warmup=args.warmup,
        wall_time_s=round(time.perf_counter() - started, 1),
        load_average_1m_at_start=load_before,
        allocator=allocator,
    )
    report = format_report(results, facts)
    if args.repeats < MIN_CITABLE_REPEATS:
        report += f"\nNote: {args.repeats} repeats (< {MIN_CITABLE_REPEATS}): a smoke run, not numbers to cite.\n"
    print(report, end="")
    if args.json:
        payload = {"machine": facts, "results": [r.to_dict() for r in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    failed = any(r.error or any(p.status.startswith("error") for p in r.peers) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
