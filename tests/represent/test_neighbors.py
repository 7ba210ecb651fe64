"""Exact neighbours against a numpy brute force; the ANN index's recall on clustered data."""

from __future__ import annotations

import numpy as np
import pytest

from convlens.errors import BadInputError
from convlens.represent.neighbors import AnnIndex, build_index, exact_neighbors, recall_at_k, search

pytestmark = pytest.mark.usefixtures(
    "one_thread_per_module"
)  # one torch thread (tests/conftest.py)


def _brute(
    codes: np.ndarray, queries: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Every pairwise distance, the obvious way (float64), then a stable full sort."""
    c, q = codes.astype(np.float64), queries.astype(np.float64)
    if metric == "l2":
        d = np.sqrt(((q[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    else:
        d = 1 - (q @ c.T) / (np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(c, axis=1)[None])
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


def _clusters(n: int, d: int, centres: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d)) * 4
    labels = rng.integers(0, centres, size=n)
    return (means[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("chunk_size", [7, 100, 10_000])
def test_exact_equals_brute_force(metric, chunk_size) -> None:
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(300, 24)).astype(np.float32)
    # scaled copies: the same direction (cosine distance 0) but far in l2 -- the metrics disagree
    codes[50] = codes[10] * 3
    queries = np.concatenate([rng.normal(size=(5, 24)), codes[10:11]]).astype(np.float32)
    dist, idx = exact_neighbors(codes, queries, 9, metric=metric, chunk_size=chunk_size)
    ref_d, ref_i = _brute(codes, queries, 9, metric)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-5, atol=1e-5)
    if metric == "cosine":
        assert set(idx[-1, :2].tolist()) == {10, 50}
    else:
        assert idx[-1, 0] == 10 and 50 not in idx[-1].tolist()


def test_exact_ties_and_small_collections() -> None:
    codes = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
    dist, idx = exact_neighbors(codes, np.array([1, 0], dtype=np.float32), k=10, chunk_size=1)
    assert idx.tolist() == [[0, 2, 1, 3]]  # k capped at N, equal distances by lower index
    np.testing.assert_allclose(dist, [[0, 0, np.sqrt(2), np.sqrt(2)]], atol=1e-6)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_ann_recall_floor_and_save_load(metric, tmp_path) -> None:
    codes, _ = _clusters(3000, 32, 20, seed=2)
    index = build_index(codes, metric, folder=tmp_path, k=10, n_queries=200)
    print(f"HNSW recall@10 ({metric}, 3000 x 32, 20 clusters): {index.recall['recall']:.3f}")
    assert index.recall["recall"] >= 0.95
    rng = np.random.default_rng(5)
    queries = (
        codes[rng.choice(3000, 50, replace=False)]
        + rng.normal(size=(50, 32)).astype(np.float32) * 0.5
    )
    ref_d, ref_i = _brute(codes, queries, 10, metric)
    dist, idx = index.search(queries, 10)
    assert recall_at_k(idx, ref_i) >= 0.95
    hit = idx == ref_i  # where ANN found the same neighbour, it reports the same distance
    np.testing.assert_allclose(dist[hit], ref_d[hit], rtol=1e-3, atol=1e-3)
    loaded = AnnIndex.load(tmp_path, metric)
    assert loaded.recall == index.recall
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], idx)


def test_recall_at_k_counts_sets() -> None:
    assert recall_at_k(
        np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 9], [6, 5, 4]])
    ) == pytest.approx(5 / 6)


class _Features:
    def __init__(self, codes, paths) -> None:
        self.codes = codes
        self.paths = paths
        self.labels = np.arange(len(paths)) % 3
        self.predictions = np.arange(len(paths)) % 2


def test_search_exact_and_ann(tmp_path) -> None:
    codes, _ = _clusters(400, 16, 5, seed=4)
    features = _Features(codes, [f"img{i}.png" for i in range(400)])
    exact = search(features, codes[7], 5, query_name="img7.png", exclude_self=True)
    assert 7 not in exact.indices.tolist() and len(exact.indices) == 5
    _, ref_i = _brute(codes, codes[7:8], 6, "l2")
    assert exact.indices.tolist() == ref_i[0, 1:].tolist()
    assert exact.paths == [f"img{i}.png" for i in ref_i[0, 1:]]
    approx = search(features, codes[7], 5, ann=True, index_dir=tmp_path)
    assert (tmp_path / "ann-l2.faiss").is_file() and approx.recall is not None
    assert approx.to_dict()["neighbors"][0]["index"] == 7


def test_bad_input() -> None:
    codes = np.zeros((5, 4), dtype=np.float32)
    with pytest.raises(BadInputError, match="metric"):
        exact_neighbors(codes, codes[0], metric="manhattan")
    with pytest.raises(BadInputError, match="dimensions"):
        exact_neighbors(codes, np.zeros(3, dtype=np.float32))
    with pytest.raises(BadInputError, match="NaN"):
        exact_neighbors(codes, np.full(4, np.nan, dtype=np.float32))


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_ties_straddling_the_cut_keep_the_lower_indices(chunk_size) -> None:
    codes = np.zeros((10, 3), dtype=np.float32)
    codes[[0, 4]] = 5.0  # far away; the other 8 rows tie at distance 0
    _, idx = exact_neighbors(codes, np.zeros((2, 3), dtype=np.float32), k=3, chunk_size=chunk_size)
    assert idx.tolist() == [[1, 2, 3], [1, 2, 3]]


def test_near_duplicates_far_from_the_origin_are_ordered_exactly() -> None:
    """Codes 1e-3 apart at norm ~1e3: float32's |q|^2 - 2 q.v + |v|^2 cannot order them (its
    rounding is ~0.1 in squared distance), so a pure float32 search fails here."""
    rng = np.random.default_rng(9)
    centre = rng.normal(size=64) * 130
    codes = np.concatenate(
        [centre + rng.normal(size=(40, 64)) * 1e-3, rng.normal(size=(200, 64)) * 130]
    ).astype(np.float32)
    query = (centre + rng.normal(size=64) * 1e-3).astype(np.float32)
    _, ref_i = _brute(codes, query[None], 10, "l2")
    for chunk_size in (16, 1000):
        _, idx = exact_neighbors(codes, query, 10, chunk_size=chunk_size)
        np.testing.assert_array_equal(idx[0], ref_i[0])
    d32 = (query**2).sum() - 2 * codes @ query + (codes**2).sum(1)  # the naive float32 search
    assert np.argsort(d32, kind="stable")[:10].tolist() != ref_i[0].tolist()
