"""Rows for the allocator (convlens/memory.py): the floors with glibc's defaults and with freed
memory kept, each in its own process.

``keep_freed_memory`` is process-wide, so it cannot sit side by side with the default in
one run of the harness: this script runs one child process per allocator setting, in
alternation (``--rounds``), and each child times, interleaved over ``--repeats``, at one
batch size on the built-in model:

- **eager forward**: ``module(x)`` under ``torch.no_grad`` (what logits and features cost);
- **eager gradient floor**: ``autograd.grad(score, x)`` (rows/floor.py), frozen, eval mode;
- **fast forward** and **fast gradient floor**: the same on ``Model(fast=True)``'s
  ``forward_module()`` and ``score_module()`` (models/fast.py);
- **decode + forward** (eager and fast): a batch of JPEGs (the bundled photos, long side
  320-640 px) decoded and preprocessed, then one forward pass, as every command that reads
  image files runs: the decoder's allocations interleave with the activations;
- **forward, dataset in memory** (eager and fast): 256 images held in one tensor (154 MB),
  a batch slice normalised and forwarded per call, as a loop over a preloaded dataset runs
  (and the floor of the dataset rows);
- **fast features**: a capture of ``blocks.5`` on the fast forward module, spatial mean (what
  ``convlens features --fast`` runs per batch; its eager counterpart is the floor of the
  ``fast features`` harness row).

Printed: the median milliseconds of each, and each one's ratio to the same work eager with
glibc's defaults (``x eager default``), which is what a user of plain PyTorch gets.

    python benchmarks/rows/allocator_rows.py [--batch-size 8] [--rounds 2] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make convlens importable
    sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "src")]

import torch

__all__: list[str] = []
ROWS: list[Any] = []  # nothing for run.py: the settings need processes of their own

LAYER = "blocks.5"
KINDS = (
    "eager forward",
    "eager gradient",
    "eager decode + forward",
    "eager forward, dataset in memory",
    "fast forward",
    "fast gradient",
    "fast features",
    "fast decode + forward",
    "fast forward, dataset in memory",
)
_EAGER_OF = {
    "eager forward, dataset in memory": "eager forward, dataset in memory",
    "fast forward, dataset in memory": "eager forward, dataset in memory",
    "eager decode + forward": "eager decode + forward",
    "fast decode + forward": "eager decode + forward",
    "eager forward": "eager forward",
    "eager gradient": "eager gradient",
    "fast forward": "eager forward",
    "fast gradient": "eager gradient",
    "fast features": "eager forward",
}


def _calls(batch_size: int, threads: int) -> dict[str, Callable[[], Any]]:
    import convlens
    from convlens.hooks import capture, eval_mode, frozen

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    eager = convlens.load_model()
    fast = convlens.load_model()
    fast.use_fast()
    x = torch.randn(batch_size, 3, *eager.input_size)
    classes = torch.zeros(batch_size, 1, dtype=torch.long)

    def forward(module: torch.nn.Module) -> Callable[[], Any]:
        def run() -> Any:
            with eval_mode(module), torch.no_grad():
                return module(x)

        return run

    def gradient(module: torch.nn.Module) -> Callable[[], Any]:
        xg = x.clone().requires_grad_()

        def run() -> Any:
            with frozen(module), eval_mode(module):
                score = module(xg).gather(1, classes)
                return torch.autograd.grad(score.sum(), xg)[0]

        return run

    with torch.no_grad():
        fast_forward = fast.forward_module()
        fast_features = fast.forward_module([LAYER])

    def features() -> Any:
        with torch.no_grad(), eval_mode(fast_features), capture(fast_features, [LAYER]) as acts:
            fast_features(x)
            return acts[LAYER].mean(dim=(2, 3))

    # a batch decoded from JPEG files, then the forward pass: image decoding's allocations
    # interleave with the activations, as in every command that reads files
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
    from dataset_rows import make_photo_folder

    from convlens.data.images import load_image

    paths = sorted(make_photo_folder(4 * batch_size).glob("*.jpg"))
    turn = [0]

    def decode_forward(module: torch.nn.Module) -> Callable[[], Any]:
        def run() -> Any:
            start = turn[0] % 4 * batch_size
            turn[0] += 1
            pixels = [
                eager.preprocessing.to_pixels(load_image(p))[0]
                for p in paths[start : start + batch_size]
            ]
            with eval_mode(module), torch.no_grad():
                return module(eager.normalize(torch.stack(pixels)))

        return run

    # 256 images held in one tensor (154 MB), forwarded a batch slice at a time, as a
    # notebook loop over a preloaded dataset runs (and the dataset rows' floor)
    dataset = torch.rand(256, 3, *eager.input_size)

    def over_dataset(module: torch.nn.Module) -> Callable[[], Any]:
        def run() -> Any:
            start = turn[0] * batch_size % len(dataset)
            turn[0] += 1
            with eval_mode(module), torch.no_grad():
                return module(eager.normalize(dataset[start : start + batch_size]))

        return run

    return {
        "eager forward": forward(eager.module),
        "eager forward, dataset in memory": over_dataset(eager.module),
        "fast forward, dataset in memory": over_dataset(fast_forward),
        "eager decode + forward": decode_forward(eager.module),
        "fast decode + forward": decode_forward(fast_forward),
        "eager gradient": gradient(eager.module),
        "fast forward": forward(fast_forward),
        "fast gradient": gradient(fast.score_module()),
        "fast features": features,
    }


def _child(args: argparse.Namespace) -> None:
    from convlens.memory import keep_freed_memory, kept_freed_memory

    if args.child == "kept":
        keep_freed_memory()
    calls = _calls(args.batch_size, args.threads)
    kept = kept_freed_memory()
    for fn in calls.values():  # warm up: oneDNN primitives, the allocator's pools
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(args.repeats):
        for kind, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[kind].append(time.perf_counter() - start)
    print(json.dumps({"kept": kept, "times": times}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two processes")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls per kind per process")
    parser.add_argument("--child", choices=["default", "kept"], default=None)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return
    base_env = {k: v for k, v in os.environ.items() if k != "CONVLENS_MALLOC"}
    samples: dict[str, dict[str, list[float]]] = {"default": {}, "kept": {}}
    print(f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    for _ in range(args.rounds):
        for mode in ("default", "kept"):
            command = [sys.executable, __file__, "--child", mode]
            command += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
            command += ["--repeats", str(args.repeats)]
            # the default child says so in the environment: fast mode would keep freed memory
            env = {**base_env, "CONVLENS_MALLOC": "default"} if mode == "default" else base_env
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{mode}: {done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if result["kept"] != (mode == "kept"):
                raise SystemExit(f"{mode}: freed memory kept is {result['kept']} (not glibc?)")
            for kind, values in result["times"].items():
                samples[mode].setdefault(kind, []).extend(values)
    print(f"load average at end {os.getloadavg()[0]:.1f}\n")
    median = {
        mode: {kind: statistics.median(v) for kind, v in kinds.items()}
        for mode, kinds in samples.items()
    }
    print(
        f"EfficientNet-Lite0, batch {args.batch_size}, {args.threads} threads, "
        + f"{args.rounds} x {args.repeats} calls per cell"
    )
    print("| work | allocator | ms | x eager default |")
    print("|---|---|---|---|")
    for kind in KINDS:
        for mode in ("default", "kept"):
            ms = 1000 * median[mode][kind]
            ratio = median[mode][kind] / median["default"][_EAGER_OF[kind]]
            label = "glibc defaults" if mode == "default" else "freed memory kept"
            print(f"| {kind} | {label} | {ms:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
