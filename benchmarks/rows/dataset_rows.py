"""Rows for issue 20 part 2: ``convlens features`` throughput against a forward-only loop.

The images are resized copies of the bundled photos (long side 320-640 px, every other one
mirrored) written as JPEGs once, untimed, so each item costs a real decode, an antialiased
resize to 256 and a centre crop to 224, as a user's folder would. Two things are timed:

- **features**: a whole :func:`convlens.represent.extract_features` run (pooled codes of the
  built-in model at ``blocks.15``, batch 32, Parquet shards of 256) into a fresh folder, with
  ``decode_workers`` processes decoding ahead of the model through the bounded queue;
- **forward only** (the floor): the same images decoded to pixel tensors beforehand
  (untimed), then only ``module(normalize(batch))`` under ``torch.no_grad`` in batches of
  32: the rate the model allows when decoding, hooks and shard writes cost nothing.

``x floor`` = features time / forward-only time; the issue's target is a rate of at least
0.85 of the floor's, that is ``x floor <= 1 / 0.85 = 1.18``.

Under ``run.py`` (``--only dataset --batch-sizes 1``) the row uses :data:`HARNESS_IMAGES`
images per timed call. ``python benchmarks/rows/dataset_rows.py [--images 2000]`` runs every
split of the cores (torch threads in the model's process x decode workers) in its own child
process, round-robin with the forward-only loop, and prints images/s, the ratio to the
forward-only rate and peak resident memory (the model's process, and all processes
together: decode workers share the model's pages by fork, so the sum over-counts), then the
default split's peak memory at 500 and at all images (``--memory-only``: only that). Each
process also reports its CPU seconds (its own and its joined children's, the decode workers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __name__ == "__main__":  # run as a script: make harness and convlens importable
    sys.path[:0] = [
        str(Path(__file__).resolve().parents[1]),
        str(Path(__file__).resolve().parents[2] / "src"),
    ]

from harness import BenchRow, Context

__all__ = ["HARNESS_IMAGES", "ROWS", "make_photo_folder"]

LAYER = "blocks.15"
BATCH, SHARD = 32, 256
#: images per timed call under run.py (each call is a whole run)
HARNESS_IMAGES = int(os.environ.get("CONVLENS_BENCH_DATASET_IMAGES", "256"))

_folders: dict[int, Path] = {}


def make_photo_folder(n: int, folder: Path | None = None, seed: int = 0) -> Path:
    """``n`` JPEGs: the bundled photos resized to a long side of 320-640 px (made once)."""
    from PIL import Image

    from convlens.data.samples import SAMPLES, load_sample

    if folder is None and n in _folders:
        return _folders[n]
    out = folder or Path(tempfile.mkdtemp(prefix=f"convlens-bench-dataset-{n}-"))
    out.mkdir(parents=True, exist_ok=True)
    photos = [Image.fromarray(load_sample(name)) for name in SAMPLES]
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[i % len(photos)]
        scale = int(rng.integers(320, 641)) / max(photo.size)
        size = (max(1, round(photo.size[0] * scale)), max(1, round(photo.size[1] * scale)))
        image = photo.resize(size, Image.BILINEAR)
        if i % 2:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        image.save(out / f"{i:05d}.jpg", quality=90)
    if folder is None:
        _folders[n] = out
    return out


def _paths(folder: Path, n: int) -> list[Path]:
    return sorted(folder.glob("*.jpg"))[:n]


def features_call(model: Any, paths: list[Path], decode_workers: int | None) -> Callable[[], Any]:
    """One whole features run into a fresh folder (deleted afterwards)."""
    from convlens.represent import extract_features

    def run() -> Any:
        out = Path(tempfile.mkdtemp(prefix="convlens-bench-out-"))
        try:
            return extract_features(
                model, paths, LAYER, out, batch_size=BATCH, shard_size=SHARD,
                decode_workers=decode_workers,
            )  # fmt: skip
        finally:
            shutil.rmtree(out, ignore_errors=True)

    return run


def forward_call(model: Any, paths: list[Path]) -> Callable[[], Any]:
    """The floor: the forward passes alone, over the images decoded beforehand."""
    from convlens.data.images import load_image

    pixels = torch.stack([model.preprocessing.to_pixels(load_image(p))[0] for p in paths])

    def run() -> Any:
        with torch.no_grad():
            for start in range(0, len(pixels), BATCH):
                batch = pixels[start : start + BATCH].to(model.device, model.dtype)
                model.module(model.normalize(batch))

    return run


def _setup(decode_workers: int | None) -> Callable[[Context], Callable[[], Any]]:
    def setup(ctx: Context) -> Callable[[], Any]:
        return features_call(
            ctx.model, _paths(make_photo_folder(HARNESS_IMAGES), HARNESS_IMAGES), decode_workers
        )

    return setup


def _floor(ctx: Context) -> Callable[[], Any]:
    return forward_call(ctx.model, _paths(make_photo_folder(HARNESS_IMAGES), HARNESS_IMAGES))


_SETTINGS = {"images": HARNESS_IMAGES, "layer": LAYER, "batch": BATCH, "shard": SHARD}

ROWS = [
    BenchRow(
        "features, 1 decode worker",
        "dataset",
        _setup(None),
        settings={**_SETTINGS, "decode_workers": 1},
        floor=_floor,
        floor_name="forward only, pre-decoded",
    ),
    BenchRow(
        "features, decoding in the model's process",
        "dataset",
        _setup(0),
        settings={**_SETTINGS, "decode_workers": 0},
        floor=_floor,
        floor_name="forward only, pre-decoded",
    ),
]


# ---------------------------------------------------------------- script: splits of the cores


def _child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    try:
        from rows.represent_rows import _PeakRss
    except ImportError:
        from represent_rows import _PeakRss

    import convlens
    from convlens.memory import keep_freed_memory_unless_disabled

    # as the convlens command runs, floor and features alike (CONVLENS_MALLOC=default: not)
    keep_freed_memory_unless_disabled()
    torch.set_num_threads(args.threads)
    model = convlens.load_model(args.model)
    paths = _paths(Path(args.folder), args.images)
    fn = (
        forward_call(model, paths)
        if args.child == "forward"
        else features_call(model, paths, args.decode)
    )
    cpu_before = _cpu_seconds()
    with _PeakRss() as rss:
        start = time.perf_counter()
        report = fn()
        seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before
    if report is not None:
        assert report.n_done == len(paths), report.failed[:3]
    print(
        json.dumps(
            {"seconds": seconds, "cpu": cpu, "driver_mb": rss.driver_mb, "all_mb": rss.peak_mb}
        )
    )


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decode workers, once joined)."""
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _measure(folder: Path, kind: str, threads: int, decode: int, images: int, model: str) -> dict:
    command = [
        sys.executable, __file__, "--child", kind, "--folder", str(folder), "--threads",
        str(threads), "--decode", str(decode), "--images", str(images), "--model", model,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} threads={threads} decode={decode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument(
        "--splits",
        default="2:0,2:1,2:2,1:1",
        help="torch threads:decode workers of each features setting (default 2:0,2:1,2:2,1:1)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="round-robin rounds")
    parser.add_argument("--memory-images", type=int, default=500)
    parser.add_argument(
        "--memory-split", default="2:1", help="threads:decode workers (default 2:1)"
    )
    parser.add_argument(
        "--memory-only", action="store_true", help="only the peak-memory table (no timing rounds)"
    )
    parser.add_argument("--folder", default=None)
    parser.add_argument("--child", choices=["forward", "features"], default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode", type=int, default=1)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return
    splits = [tuple(int(v) for v in s.split(":")) for s in args.splits.split(",")]
    started = time.perf_counter()
    folder = Path(args.folder) if args.folder else make_photo_folder(args.images)
    if args.folder and len(_paths(folder, args.images)) < args.images:
        make_photo_folder(args.images, folder)
    print(
        f"{args.images} JPEGs (bundled photos, long side 320-640 px) ready in {time.perf_counter() - started:.0f} s; "
        + f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared machine)",
        flush=True,
    )
    runs: dict[tuple[str, int, int], list[dict]] = {}
    for _ in range(0 if args.memory_only else args.repeats):
        for key in [("forward", max(t for t, _ in splits), 0)] + [
            ("features", t, d) for t, d in splits
        ]:
            runs.setdefault(key, []).append(_measure(folder, *key, args.images, args.model))
            print(f"  {key}: {runs[key][-1]}", flush=True)
    forward = statistics.median(r["seconds"] for r in runs[next(iter(runs))]) if runs else 0.0
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    print(
        "| run | torch threads | decode workers | s | images/s | x forward-only rate | CPU ms per image | peak RSS model process (MB) | peak RSS all processes (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (kind, threads, decode), results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        print(
            f"| {kind} | {threads} | {decode if kind == 'features' else '-'} | {seconds:.1f} | "
            + f"{args.images / seconds:.1f} | {forward / seconds:.2f} | "
            + f"{1000 * statistics.median(r['cpu'] for r in results) / args.images:.0f} | "
            + f"{max(r['driver_mb'] for r in results):.0f} | {max(r['all_mb'] for r in results):.0f} |",
            flush=True,
        )
    if args.memory_images and args.memory_images < args.images:
        threads, decode = (int(v) for v in args.memory_split.split(":"))
        print(f"\npeak RSS, features with {threads} threads and {decode} decode workers:")
        print("| images | peak RSS model process (MB) | peak RSS all processes (MB) |")
        print("|---|---|---|")
        for n in (args.memory_images, args.images):
            done = runs.get(("features", threads, decode)) if n == args.images else None
            r = done[0] if done else _measure(folder, "features", threads, decode, n, args.model)
            print(f"| {n} | {r['driver_mb']:.0f} | {r['all_mb']:.0f} |", flush=True)
    if not args.folder:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
