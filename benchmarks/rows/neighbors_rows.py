"""Rows for ``convlens.represent`` (issue 8): nearest-neighbour search and top patches.

- **Exact k-NN** (``exact_neighbors``, chunked so memory stays bounded): 100 queries, k=10,
  over :data:`N_CODES` seeded random ``D``-dimensional codes (the width of
  EfficientNet-Lite0's pooled head), against the plain numpy floor (one
  ``|q|^2 - 2 q.X^T + |x|^2`` product over the whole collection and an ``argpartition``;
  memory ``Q x N``), with faiss's brute-force ``IndexFlatL2`` as the peer.
- **HNSW k-NN** (``AnnIndex.search``, faiss ``IndexHNSWFlat`` M=32, efSearch 64): the same
  queries against the exact search as floor, so ``x floor`` below 1 is the speed-up; the
  recall@10 against exact is printed on stderr by the setup (and quoted in the docs).
  The index is built once, untimed (its build time is printed too).
- **top-patches** over :data:`N_IMAGES` generated 224 px JPEGs at ``blocks.4`` (8 channels,
  k=9, the runner writing its shards to a temporary folder), against the floor of the
  forward passes alone (``model.logits`` on the same decoded images, batch 32): the
  ratio is the price of the streaming, the shards, the running top-k and the crops.
  Images per second are ``N_IMAGES / seconds``. The rows ignore the batch size: run them
  with ``--batch-sizes 1``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import BenchRow, Context, PeerSetting

from convlens.represent.neighbors import AnnIndex, exact_neighbors, recall_at_k
from convlens.represent.patches import top_patches

__all__ = ["DIM", "N_CODES", "N_IMAGES", "ROWS"]

N_CODES = 50_000
DIM = 1280
N_QUERIES = 100
K = 10
N_IMAGES = 64
PATCH_LAYER = "blocks.4"


@cache
def _codes() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    # clustered codes (200 centres) like real features, not isotropic noise, where ANN is hopeless
    centres = rng.normal(size=(200, DIM)).astype(np.float32)
    codes = (
        centres[rng.integers(0, 200, N_CODES)]
        + rng.normal(size=(N_CODES, DIM)).astype(np.float32) * 0.7
    )
    queries = (
        codes[rng.choice(N_CODES, N_QUERIES, replace=False)]
        + rng.normal(size=(N_QUERIES, DIM)).astype(np.float32) * 0.3
    )
    return np.ascontiguousarray(codes, dtype=np.float32), np.ascontiguousarray(
        queries, dtype=np.float32
    )


@cache
def _index() -> AnnIndex:
    codes, queries = _codes()
    started = time.perf_counter()
    index = AnnIndex.build(codes, "l2")
    build = time.perf_counter() - started
    _, exact = exact_neighbors(codes, queries, K)
    _, approx = index.search(queries, K)
    print(
        f"[neighbors] HNSW build {build:.1f} s over {N_CODES} x {DIM}; recall@{K} {recall_at_k(approx, exact):.4f} on {N_QUERIES} queries",
        file=sys.stderr,
    )
    return index


def _exact(_ctx: Context) -> Callable[[], Any]:
    codes, queries = _codes()
    return lambda: exact_neighbors(codes, queries, K)


def numpy_floor(_ctx: Context) -> Callable[[], Any]:
    """One full distance matrix and an argpartition: the simplest exact search."""
    codes, queries = _codes()
    sq = (codes.astype(np.float32) ** 2).sum(1)

    def run() -> np.ndarray:
        d = (queries**2).sum(1)[:, None] - 2 * queries @ codes.T + sq[None]
        part = np.argpartition(d, K - 1, axis=1)[:, :K]
        return np.take_along_axis(
            part, np.argsort(np.take_along_axis(d, part, axis=1), axis=1), axis=1
        )

    return run


def _faiss_flat(_ctx: Context) -> Callable[[], Any]:
    import faiss

    codes, queries = _codes()
    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatL2(DIM)
    index.add(codes)
    return lambda: index.search(queries, K)


def _ann(_ctx: Context) -> Callable[[], Any]:
    index = _index()
    _, queries = _codes()
    return lambda: index.search(queries, K)


@cache
def _image_folder() -> list[Path]:
    from PIL import Image

    root = Path(tempfile.mkdtemp(prefix="convlens-bench-patches-"))
    rng = np.random.default_rng(1)
    paths = []
    for i in range(N_IMAGES):
        # smooth random blobs (upsampled noise), so the JPEGs decode like photos, not noise
        small = rng.integers(0, 256, size=(14, 14, 3), dtype=np.uint8)
        path = root / f"img{i:03d}.jpg"
        Image.fromarray(small).resize((224, 224), Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def _top_patches(ctx: Context) -> Callable[[], Any]:
    model, paths = ctx.model, _image_folder()
    model.layers()  # the layer table is built once per model: not part of the timed call
    return lambda: top_patches(model, paths, PATCH_LAYER, list(range(8)), 9, batch_size=32)


def forward_floor(ctx: Context) -> Callable[[], Any]:
    """Decode the same images and run the forward passes, nothing else."""
    from convlens.data.images import load_image

    model, paths = ctx.model, _image_folder()

    def run() -> torch.Tensor:
        pixels = torch.stack([model.preprocessing.to_pixels(load_image(p))[0] for p in paths])
        return model.logits(model.normalize(pixels), batch_size=32)

    return run


ROWS = [
    BenchRow(
        f"exact k-NN: {N_QUERIES} queries, k={K}, {N_CODES} x {DIM}",
        "neighbors",
        _exact,
        peers=[PeerSetting("faiss", {"index": "IndexFlatL2"}, _faiss_flat)],
        settings={"chunk_size": 8192},
        floor=numpy_floor,
        floor_name="numpy full distance matrix + argpartition",
    ),
    BenchRow(
        f"HNSW k-NN: {N_QUERIES} queries, k={K}, {N_CODES} x {DIM}",
        "neighbors",
        _ann,
        settings={"M": 32, "efSearch": 64},
        floor=_exact,
        floor_name="convlens exact search",
    ),
    BenchRow(
        f"top-patches: {N_IMAGES} images 224 px, {PATCH_LAYER}, 8 channels, k=9",
        "neighbors",
        _top_patches,
        settings={"batch_size": 32, "engine": "local"},
        floor=forward_floor,
        floor_name="decode + forward passes only",
    ),
]
