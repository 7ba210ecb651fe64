"""Nearest neighbours in feature space: exact (chunked) and approximate (faiss HNSW).

The "nearest images in the classifier's code" figure of Krizhevsky, Sutskever & Hinton 2012
(ImageNet classification with deep CNNs, Fig. 4): images whose codes are close are what the
network considers alike. Two metrics,

    l2:      d(q, v) = ||q - v||_2
    cosine:  d(q, v) = 1 - <q, v> / (||q|| ||v||)

:func:`exact_neighbors` is brute force over the collection in chunks of ``chunk_size``
rows, merged into a running top-k, so memory is ``O(queries * (k + chunk_size))`` however
many codes there are. :class:`AnnIndex` is the approximate index for large collections:
a faiss HNSW graph (Malkov & Yashunin 2018, "Efficient and robust approximate nearest
neighbor search using Hierarchical Navigable Small World graphs", arXiv:1603.09320).
Cosine is searched as l2 on unit vectors (``||a - b||^2 = 2 - 2 cos``, the same order).
Its quality is measured, never assumed: :func:`recall_at_k` against the exact answer is
stored with the index when it is built.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convlens.atomic import atomic_path, atomic_write_text
from convlens.errors import BadInputError, MissingDependencyError
from convlens.progress import ProgressFn
from convlens.types import ModelProtocol

__all__ = [
    "METRICS",
    "AnnIndex",
    "Neighbors",
    "build_index",
    "exact_neighbors",
    "load_index",
    "query_codes",
    "recall_at_k",
    "search",
]

METRICS = ("l2", "cosine")
INDEX_FILE = "ann-{metric}.faiss"
INDEX_META = "ann-{metric}.json"
_INSTALL = "pip install 'convlens[represent]' (faiss-cpu, umap-learn)"


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise BadInputError(f"metric {metric!r}: choose one of {', '.join(METRICS)}")


def _as_matrix(name: str, array: Any) -> np.ndarray:
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise BadInputError(f"{name} must be a non-empty (N, D) array, got shape {np.shape(array)}")
    if not np.isfinite(a).all():
        raise BadInputError(f"{name} holds NaN or infinite values")
    return np.ascontiguousarray(a)


def _unit(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norms, 1e-12)


def exact_neighbors(
    codes: np.ndarray,
    queries: np.ndarray,
    k: int = 8,
    *,
    metric: str = "l2",
    chunk_size: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``codes`` for each query, by brute force in chunks.

    Parameters
    ----------
    codes
        ``(N, D)`` collection.
    queries
        ``(Q, D)`` or ``(D,)``.
    k
        Neighbours per query (at most ``N``).
    metric
        ``"l2"`` (Euclidean distance) or ``"cosine"`` (1 - cosine similarity).
    chunk_size
        Rows of ``codes`` compared at a time (bounds memory).

    Returns
    -------
    distances, indices
        ``(Q, k)`` each, nearest first; ties by lower index.
    """
    _check_metric(metric)
    base = _as_matrix("codes", codes)
    q = _as_matrix("queries", queries)
    if q.shape[1] != base.shape[1]:
        raise BadInputError(
            f"queries have {q.shape[1]} dimensions but the codes {base.shape[1]}; use the same layer and pooling"
        )
    if k < 1 or chunk_size < 1:
        raise BadInputError(f"k ({k}) and chunk_size ({chunk_size}) must be >= 1")
    k = min(k, base.shape[0])
    q64 = q.astype(np.float64)
    if metric == "cosine":
        q64 = _unit(q64)
    q32 = q64.astype(np.float32)
    q_norm = np.linalg.norm(q64, axis=1)
    # Float32 matrix products screen each chunk fast; every pair that float32 rounding could
    # place among the k nearest is then measured again in float64, so the answer is the
    # float64 one. A dot product of length D in float32 is off by at most
    # (D + 2) eps |q| |v| (the standard summation bound), hence the tolerance below.
    slack = (q.shape[1] + 2) * float(np.finfo(np.float32).eps)
    best_d = np.full((q.shape[0], 0), np.inf)
    best_i = np.zeros((q.shape[0], 0), dtype=np.int64)
    for start in range(0, base.shape[0], chunk_size):
        chunk = base[start : start + chunk_size]  # float32, no copy
        # float32 norms: their rounding is inside the tolerance below (it covers |v|^2 terms)
        c_norm = np.sqrt(np.einsum("ij,ij->i", chunk, chunk).astype(np.float64))
        if metric == "cosine":
            chunk = chunk / np.maximum(c_norm, 1e-12).astype(np.float32)[:, None]
            c_norm = np.ones_like(c_norm)
        dots = q32 @ chunk.T
        # screened squared l2 (or 1 - cos), and how far float32 may be from it
        approx = (
            (q_norm[:, None] ** 2 - 2.0 * dots + c_norm[None] ** 2)
            if metric == "l2"
            else 1.0 - dots
        )
        tol = 4 * slack * (q_norm[:, None] + c_norm[None]) ** 2 + 1e-12
        kk = min(k, approx.shape[1])
        upper = np.partition(approx + tol, kk - 1, axis=1)[:, kk - 1 : kk]
        rows, cols = np.nonzero(approx - tol <= upper)
        picked = base[start + cols].astype(np.float64)
        if metric == "cosine":
            picked = _unit(picked)
        exact = (
            np.sqrt(((q64[rows] - picked) ** 2).sum(1))
            if metric == "l2"
            else 1.0 - (q64[rows] * picked).sum(1)
        )
        cand_d, cand_i = _ragged(rows, exact, cols + start, q.shape[0])
        best_d, best_i = _smallest(
            np.concatenate([best_d, cand_d], axis=1), np.concatenate([best_i, cand_i], axis=1), k
        )
    return best_d.astype(np.float32), best_i


def _ragged(
    rows: np.ndarray, values: np.ndarray, idx: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row candidates (``rows`` sorted, as ``np.nonzero`` gives them) as padded
    ``(n_rows, max count)`` arrays; padding is ``inf`` so it is never chosen."""
    counts = np.bincount(rows, minlength=n_rows)
    width = int(counts.max()) if counts.size else 0
    out_d = np.full((n_rows, width), np.inf)
    out_i = np.full((n_rows, width), np.iinfo(np.int64).max, dtype=np.int64)
    slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    out_d[rows, slot] = values
    out_i[rows, slot] = idx
    return out_d, out_i


def _smallest(dist: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` smallest distances sorted, ties by lower index.

    ``argpartition`` picks ``k`` candidates in linear time; only rows where more than ``k``
    entries tie at the k-th distance are fully sorted, so the tie rule holds exactly.
    """
    if dist.shape[1] > k:
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        cand_d, cand_i = (
            np.take_along_axis(dist, part, axis=1),
            np.take_along_axis(idx, part, axis=1),
        )
    else:
        cand_d, cand_i = dist, idx
    order = np.lexsort((cand_i, cand_d), axis=1)
    out_d, out_i = (
        np.take_along_axis(cand_d, order, axis=1),
        np.take_along_axis(cand_i, order, axis=1),
    )
    kth = out_d[:, -1:]
    for r in np.nonzero((dist <= kth).sum(axis=1) > k)[0]:  # a tie straddles the cut
        full = np.lexsort((idx[r], dist[r]))[:k]
        out_d[r], out_i[r] = dist[r, full], idx[r, full]
    return out_d, out_i


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's exact ``k`` neighbours that the approximate search found."""
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.shape[0] != exact.shape[0] or exact.shape[1] == 0:
        raise BadInputError(f"recall needs the same queries: {approx.shape} vs {exact.shape}")
    hits = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact)]
    return float(np.sum(hits) / exact.size)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError(f"the approximate index needs faiss; {_INSTALL}") from None
    return faiss


@dataclass
class AnnIndex:
    """A faiss HNSW index over ``(N, D)`` codes, for ``metric`` l2 or cosine.

    Attributes
    ----------
    index
        The faiss index (vectors unit-normalised for cosine).
    metric
        ``"l2"`` or ``"cosine"``.
    ef_search
        HNSW search breadth (higher: better recall, slower).
    recall
        Measured recall@k against exact search when built (``{"k": .., "recall": .., "queries": ..}``).
    """

    index: Any
    metric: str
    ef_search: int = 64
    recall: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        codes: np.ndarray,
        metric: str = "l2",
        *,
        m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
    ) -> AnnIndex:
        """Build an HNSW graph with ``m`` links per node over ``codes``.

        faiss uses as many threads as torch (``torch.get_num_threads()``). With one thread
        the graph is deterministic: faiss draws HNSW levels from its own fixed-seed generator.
        """
        _check_metric(metric)
        faiss = _faiss()
        base = _as_matrix("codes", codes)
        if metric == "cosine":
            base = _unit(base)
        faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
        index = faiss.IndexHNSWFlat(base.shape[1], m)
        index.hnsw.efConstruction = ef_construction
        index.add(base)
        return cls(index, metric, ef_search)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Approximate ``(distances, indices)``, ``(Q, k)``, in the metric's units (as exact)."""
        q = _as_matrix("queries", queries)
        if q.shape[1] != self.index.d:
            raise BadInputError(
                f"queries have {q.shape[1]} dimensions but the index {self.index.d}; use the same layer and pooling"
            )
        if self.metric == "cosine":
            q = _unit(q)
        k = min(k, self.size)
        self.index.hnsw.efSearch = max(self.ef_search, k)
        squared, idx = self.index.search(q, k)
        squared = np.maximum(squared, 0)
        # faiss returns squared l2; on unit vectors |a - b|^2 = 2 - 2 cos, so 1 - cos = |a - b|^2 / 2
        dist = squared / 2 if self.metric == "cosine" else np.sqrt(squared)
        return dist.astype(np.float32), idx.astype(np.int64)

    def save(self, folder: str | Path) -> Path:
        """Write ``ann-{metric}.faiss`` and its JSON sidecar into ``folder`` (atomically)."""
        faiss = _faiss()
        folder = Path(folder)
        path = folder / INDEX_FILE.format(metric=self.metric)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        meta = {
            "metric": self.metric,
            "ef_search": self.ef_search,
            "size": self.size,
            "dim": int(self.index.d),
            "recall": self.recall,
        }
        meta_path = folder / INDEX_META.format(metric=self.metric)
        atomic_write_text(meta_path, json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, folder: str | Path, metric: str = "l2") -> AnnIndex:
        """Load the index saved by :meth:`save` in ``folder``."""
        _check_metric(metric)
        faiss = _faiss()
        folder = Path(folder)
        path = folder / INDEX_FILE.format(metric=metric)
        meta_path = folder / INDEX_META.format(metric=metric)
        if not path.is_file() or not meta_path.is_file():
            raise BadInputError(
                f"{folder}: no {metric} ANN index ({path.name}); build one with build_index or `convlens neighbors --ann`"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return cls(
            faiss.read_index(str(path)),
            metric,
            int(meta.get("ef_search", 64)),
            dict(meta.get("recall", {})),
        )


def build_index(
    codes: np.ndarray,
    metric: str = "l2",
    *,
    folder: str | Path | None = None,
    k: int = 8,
    n_queries: int = 200,
    seed: int = 0,
    **options: Any,
) -> AnnIndex:
    """Build an :class:`AnnIndex`, measure its recall@k on held-in queries, save it beside the codes.

    ``n_queries`` codes drawn with ``seed`` are searched both ways; ``index.recall`` holds
    ``{"k", "recall", "queries"}``. With ``folder``, the index is saved there.
    """
    base = _as_matrix("codes", codes)
    index = AnnIndex.build(base, metric, **options)
    rng = np.random.default_rng(seed)
    pick = rng.choice(base.shape[0], size=min(n_queries, base.shape[0]), replace=False)
    kk = min(k, base.shape[0])
    _, exact = exact_neighbors(base, base[pick], kk, metric=metric)
    _, approx = index.search(base[pick], kk)
    index.recall = {"k": kk, "recall": recall_at_k(approx, exact), "queries": len(pick)}
    if folder is not None:
        index.save(folder)
    return index


def load_index(folder: str | Path, metric: str = "l2") -> AnnIndex:
    """Shorthand for :meth:`AnnIndex.load`."""
    return AnnIndex.load(folder, metric)


def query_codes(
    model: ModelProtocol, images: Sequence[Any] | torch.Tensor, layer: str, *, pooled: bool = True
) -> np.ndarray:
    """Codes of images at ``layer``, computed as ``convlens features`` does.

    The same preprocessing (:meth:`Model.prepare`), the layer's output in eval mode, then the
    spatial mean per channel (``pooled``) or the flattened ``C*H*W`` map.
    """
    from convlens.hooks import capture, eval_mode, forward_until_captured
    from convlens.represent.features import layer_code

    batch = model.prepare(list(images))
    with (
        torch.no_grad(),
        eval_mode(model.module),
        capture(model.module, [layer], stop=True) as acts,
    ):
        forward_until_captured(model.module, batch.x)
        code = layer_code(acts[layer], pooled)
    return code.float().cpu().numpy()


@dataclass
class Neighbors:
    """The nearest images of one query."""

    distances: np.ndarray  # (k,)
    indices: np.ndarray  # (k,) rows of the features
    paths: list[str]
    labels: list[int]
    predictions: list[int]
    metric: str
    ann: bool
    query: str
    recall: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "metric": self.metric,
            "ann": self.ann,
            "recall": self.recall,
            "neighbors": [
                {
                    "rank": r + 1,
                    "index": int(i),
                    "path": p,
                    "distance": float(d),
                    "label": int(lab),
                    "prediction": int(pred),
                }
                for r, (i, p, d, lab, pred) in enumerate(
                    zip(self.indices, self.paths, self.distances, self.labels, self.predictions)
                )
            ],
        }


def search(
    features: Any,
    query: np.ndarray,
    k: int = 8,
    *,
    metric: str = "l2",
    ann: bool = False,
    index_dir: str | Path | None = None,
    query_name: str = "<query>",
    exclude_self: bool = False,
    progress: ProgressFn | None = None,
) -> Neighbors:
    """Nearest rows of ``features.codes`` to one query code.

    Parameters
    ----------
    features
        A ``Features`` (``codes``, ``paths``, ``labels``, ``predictions``).
    query
        ``(D,)`` code of the query image (:func:`query_codes`).
    k, metric
        As :func:`exact_neighbors`.
    ann
        Use the approximate index: loaded from ``index_dir`` when it holds one for this
        metric and size, else built (and saved there when ``index_dir`` is given). Its
        measured recall is in the result.
    exclude_self
        Drop a neighbour at distance 0 with the query's own path (a query from the collection).
    """
    _check_metric(metric)
    started = time.perf_counter()
    codes = features.codes
    extra = 1 if exclude_self else 0
    recall = None
    if ann:
        index = None
        if index_dir is not None and (Path(index_dir) / INDEX_FILE.format(metric=metric)).is_file():
            index = AnnIndex.load(index_dir, metric)
            if index.size != codes.shape[0]:
                index = None  # stale: the features were recomputed
        if index is None:
            index = build_index(codes, metric, folder=index_dir, k=k)
        dist, idx = index.search(query, k + extra)
        recall = index.recall
    else:
        dist, idx = exact_neighbors(codes, query, k + extra, metric=metric)
    dist, idx = dist[0], idx[0]
    if exclude_self:
        keep = [
            j
            for j in range(len(idx))
            if not (features.paths[int(idx[j])] == query_name and dist[j] <= 1e-6)
        ][:k]
        dist, idx = dist[keep], idx[keep]
    if progress is not None:
        progress(1, 1)
    return Neighbors(
        distances=dist,
        indices=idx,
        paths=[features.paths[int(i)] for i in idx],
        labels=[int(features.labels[int(i)]) for i in idx],
        predictions=[int(features.predictions[int(i)]) for i in idx],
        metric=metric,
        ann=ann,
        query=query_name,
        recall=recall,
        seconds=time.perf_counter() - started,
    )
