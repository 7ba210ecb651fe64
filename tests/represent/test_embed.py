"""Embeddings: shapes, a PCA reference, cluster structure kept, the HTML map self-contained."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

from convlens.errors import BadInputError
from convlens.render.embedding import embedding_figure, embedding_html, thumbnail_uri
from convlens.represent.embed import embed


@dataclass
class _Features:
    codes: np.ndarray
    paths: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    provenance: dict = field(default_factory=lambda: {"model": "stand-in", "layer": "pool"})


def _clustered(n: int = 150, d: int = 40, k: int = 5, seed: int = 0) -> _Features:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 6
    labels = np.arange(n) % k
    codes = (centres[labels] + rng.normal(size=(n, d))).astype(np.float32)
    labels = labels.astype(np.int64)
    labels[::10] = -1  # some unlabelled points
    return _Features(
        codes,
        [f"dir/img{i:03d}.png" for i in range(n)],
        labels,
        (np.arange(n) % k).astype(np.int64),
    )


def _knn_accuracy(coords: np.ndarray, classes: np.ndarray) -> float:
    """Leave-one-out 5-NN majority vote in the map: high when clusters stay together."""
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :5]
    votes = [np.bincount(classes[row]).argmax() for row in near]
    return float(np.mean(np.asarray(votes) == classes))


def test_pca_matches_svd_reference() -> None:
    feats = _clustered()
    result = embed(feats, "pca")
    from sklearn.decomposition import PCA

    ref = PCA(n_components=2).fit_transform(feats.codes.astype(np.float64))
    assert result.coords.shape == (150, 2) and result.coords.dtype == np.float32
    for axis in range(2):  # equal up to the sign of each axis
        sign = np.sign(np.dot(ref[:, axis], result.coords[:, axis]))
        np.testing.assert_allclose(
            result.coords[:, axis], sign * ref[:, axis], rtol=1e-4, atol=1e-3
        )


@pytest.mark.parametrize("method", ["tsne", "pca", "umap"])
def test_maps_keep_clusters_and_are_seeded(method) -> None:
    feats = _clustered()
    first = embed(feats, method, seed=3)
    again = embed(feats, method, seed=3)
    assert first.coords.shape == (150, 2) and np.isfinite(first.coords).all()
    np.testing.assert_array_equal(first.coords, again.coords)
    assert first.paths == feats.paths and np.array_equal(first.labels, feats.labels)
    accuracy = _knn_accuracy(first.coords.astype(np.float64), feats.predictions)
    assert accuracy >= 0.95, accuracy
    # a wrong map fails: shuffled coordinates lose the clusters
    rng = np.random.default_rng(0)
    assert (
        _knn_accuracy(first.coords[rng.permutation(150)].astype(np.float64), feats.predictions)
        < 0.5
    )
    assert first.provenance["features"]["model"] == "stand-in"


def test_small_collections() -> None:
    feats = _clustered(n=6, k=2)
    assert embed(feats, "tsne").coords.shape == (6, 2)
    with pytest.raises(BadInputError, match="at least 3"):
        embed(_clustered(n=2, k=2), "pca")
    with pytest.raises(BadInputError, match="method"):
        embed(feats, "mds")


def test_html_map_is_self_contained_and_complete(tmp_path) -> None:
    feats = _clustered(n=20, k=3)
    image = tmp_path / "a.png"
    Image.fromarray(np.full((40, 30, 3), 200, dtype=np.uint8)).save(image)
    thumbs = [thumbnail_uri(image, 32)] + [None] * 19
    feats.paths[3] = 'weird </script><img src="http://x/y.png">.png'
    page = embedding_html(
        embed(feats, "pca"),
        color="prediction",
        class_name=lambda c: f"class-{c}",
        thumbnails=thumbs,
    )
    block = re.search(
        r'<script type="application/json" id="convlens-map-data">(.*?)</script>', page, re.S
    )
    assert block is not None
    data = json.loads(block.group(1))
    assert [p["path"] for p in data["points"]] == feats.paths
    assert [p["label"] for p in data["points"]] == feats.labels.tolist()
    assert [p["prediction"] for p in data["points"]] == feats.predictions.tolist()
    assert (
        data["color"] == "prediction"
        and data["classes"]["label"]["-1"] == "unlabelled"
        and data["classes"]["prediction"]["2"] == "class-2"
    )
    assert data["points"][0]["thumb"].startswith("data:image/jpeg;base64,")
    assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in data["points"])
    # nothing is fetched from outside: no http(s) URL in any src= or href= of the page
    assert not re.search(
        r"""(src|href)\s*=\s*["']?\s*https?://""", page.replace(block.group(1), ""), re.I
    )
    assert "<script src" not in page and "<link" not in page


def test_png_scatter(tmp_path) -> None:
    from convlens.render.figures import save_figure

    fig = embedding_figure(embed(_clustered(), "pca"), color="label", class_name=str)
    path = save_figure(fig, tmp_path / "map.png")
    with Image.open(path) as picture:
        assert picture.size[0] > 300


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_html_script_parses(tmp_path) -> None:
    page = embedding_html(embed(_clustered(n=12, k=3), "pca"))
    script = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(script) == 1
    (tmp_path / "map.js").write_text(script[0])
    proc = subprocess.run(
        ["node", "--check", str(tmp_path / "map.js")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
