"""Rows for ``convlens features`` (issue 8, "Speed"): images/s, local and Ray, 1 and 2 workers.

Each call is a whole :func:`convlens.represent.extract_features` run (pooled codes of the
built-in model at ``blocks.15``, batch 32, Parquet shards of 64) over generated 224 px JPEGs
(the model's input size, so no resize: decoding, the network and the shard writes are what
is timed) into a fresh folder. Rows and their floors:

- ``features local x2`` against ``features local x1``: two forked processes with one torch
  thread each, against one process. ``x floor`` is the time ratio; the scaling efficiency is
  ``1 / (2 * x floor)`` (1.0: perfect).
- ``features ray x1`` against ``features local x1``: the cost of Ray (actor start-up, the
  model shipped to the actor, Ray Data's scheduling) on one worker.
- ``features ray x2`` against ``features ray x1``: Ray's scaling on two actors.

Ray rows start a local Ray cluster with 2 CPUs once (not timed) and need ``convlens[ray]``.
Under ``run.py`` the rows use :data:`HARNESS_IMAGES` images (a whole run per timed call;
run them with ``--batch-sizes 1``, the batch size of the harness is not used).

``python benchmarks/rows/represent_rows.py [--images 2000]`` runs each setting once on the
issue's 2,000 images and prints images/s, the scaling efficiencies and the peak resident
memory of the driver and of all its processes together (forked workers, Ray's raylet and
actors), sampled every 0.1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
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

from convlens.represent import extract_features

__all__ = ["HARNESS_IMAGES", "LAYER", "ROWS", "make_images", "run_features"]

#: the layer whose pooled codes are extracted (320 channels at 7x7)
LAYER = "blocks.15"
#: images per call under run.py (each timed call is a whole run)
HARNESS_IMAGES = int(os.environ.get("CONVLENS_BENCH_FEATURE_IMAGES", "256"))
BATCH, SHARD = 32, 64

_folders: dict[int, Path] = {}


def make_images(n: int, size: int = 224, seed: int = 0) -> Path:
    """``n`` generated ``size`` px JPEGs (smooth random colour fields plus noise), made once."""
    from PIL import Image

    if n in _folders:
        return _folders[n]
    folder = Path(tempfile.mkdtemp(prefix=f"convlens-bench-features-{n}-"))
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = np.asarray(
            Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.int16
        )
        image = np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:05d}.jpg", quality=90)
    _folders[n] = folder
    return folder


def run_features(model: Any, folder: Path, engine: str, workers: int) -> Callable[[], Any]:
    """A zero-argument call: one whole features run into a fresh output folder."""
    items = sorted(folder.glob("*.jpg"))

    def run() -> Any:
        out = Path(tempfile.mkdtemp(prefix="convlens-bench-out-"))
        try:
            return extract_features(
                model,
                items,
                LAYER,
                out,
                batch_size=BATCH,
                shard_size=SHARD,
                engine=engine,
                workers=workers,
            )
        finally:
            shutil.rmtree(out, ignore_errors=True)

    return run


def _ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")


def _setup(engine: str, workers: int) -> Callable[[Context], Callable[[], Any]]:
    def setup(ctx: Context) -> Callable[[], Any]:
        if engine == "ray":
            _ensure_ray()
        return run_features(ctx.model, make_images(HARNESS_IMAGES), engine, workers)

    return setup


_SETTINGS = {"images": HARNESS_IMAGES, "size": 224, "layer": LAYER, "batch": BATCH, "shard": SHARD}

ROWS = [
    BenchRow(
        "features local x2",
        "represent",
        _setup("local", 2),
        settings={**_SETTINGS, "workers": 2},
        floor=_setup("local", 1),
        floor_name="features local x1",
    ),
    BenchRow(
        "features ray x1",
        "represent",
        _setup("ray", 1),
        settings={**_SETTINGS, "workers": 1},
        floor=_setup("local", 1),
        floor_name="features local x1",
    ),
    BenchRow(
        "features ray x2",
        "represent",
        _setup("ray", 2),
        settings={**_SETTINGS, "workers": 2},
        floor=_setup("ray", 1),
        floor_name="features ray x1",
    ),
]


# ---------------------------------------------------------------- script: each setting once


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _family(root: int) -> list[int]:
    """``root`` and all its descendants (forked workers; Ray's raylet and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    family, todo = [], [root]
    while todo:
        pid = todo.pop()
        family.append(pid)
        todo.extend(children.get(pid, []))
    return family


class _PeakRss:
    """Samples the summed resident memory of this process and its descendants."""

    def __init__(self) -> None:
        self.peak_mb = self.driver_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            me = os.getpid()
            self.peak_mb = max(self.peak_mb, sum(_rss_kb(p) for p in _family(me)) / 1024)
            self.driver_mb = max(self.driver_mb, _rss_kb(me) / 1024)
            self._stop.wait(0.1)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args(argv)
    import convlens

    torch.set_num_threads(1)
    model = convlens.load_model(args.model)
    started = time.perf_counter()
    folder = make_images(args.images)
    print(
        f"{args.images} generated 224 px JPEGs in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs (shared machine)",
        flush=True,
    )
    settings = [("local", 1), ("local", 2)] + ([] if args.skip_ray else [("ray", 1), ("ray", 2)])
    seconds: dict[tuple[str, int], float] = {}
    print(
        "| engine | workers | s | images/s | scaling efficiency | peak RSS driver (MB) | peak RSS all processes (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for engine, workers in settings:
        if engine == "ray":
            _ensure_ray()
        fn = run_features(model, folder, engine, workers)
        with _PeakRss() as rss:
            t0 = time.perf_counter()
            report = fn()
            seconds[engine, workers] = time.perf_counter() - t0
        assert report.n_done == args.images, report.failed[:3]
        base = seconds.get((engine, 1))
        efficiency = (
            f"{base / (workers * seconds[engine, workers]):.2f}" if workers > 1 and base else "-"
        )
        print(
            f"| {engine} | {workers} | {seconds[engine, workers]:.1f} | {args.images / seconds[engine, workers]:.1f} | {efficiency} | {rss.driver_mb:.0f} | {rss.peak_mb:.0f} |",
            flush=True,
        )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
