"""3-D embeddings (`embed --dims 3`): PCA equals scikit-learn's, clusters kept, the rotatable HTML map complete and offline, the 3-D PNG, the CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

from convlens.cli.main import main
from convlens.errors import BadInputError
from convlens.render.embedding import embedding_figure, embedding_html
from convlens.represent.embed import embed


@dataclass
class _Features:
    codes: np.ndarray
    paths: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    provenance: dict = field(default_factory=lambda: {"model": "stand-in", "layer": "pool"})


def _clustered(n: int = 120, d: int = 30, k: int = 4, seed: int = 1) -> _Features:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 6
    classes = np.arange(n) % k
    codes = (centres[classes] + rng.normal(size=(n, d))).astype(np.float32)
    labels = classes.astype(np.int64)
    labels[::7] = -1
    return _Features(
        codes, [f"dir/img{i:03d}.png" for i in range(n)], labels, classes.astype(np.int64)
    )


def _knn_accuracy(coords: np.ndarray, classes: np.ndarray) -> float:
    """Leave-one-out 5-NN majority vote in the map (any number of map dimensions)."""
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :5]
    return float(
        np.mean(
            [np.bincount(classes[row]).argmax() == c for row, c in zip(near, classes, strict=True)]
        )
    )


def test_pca_3d_equals_sklearn_up_to_sign() -> None:
    from sklearn.decomposition import PCA

    feats = _clustered()
    result = embed(feats, "pca", dims=3)
    ref = PCA(n_components=3).fit_transform(feats.codes.astype(np.float64))
    assert result.coords.shape == (120, 3) and result.coords.dtype == np.float32
    for axis in range(3):
        sign = np.sign(np.dot(ref[:, axis], result.coords[:, axis]))
        np.testing.assert_allclose(
            result.coords[:, axis], sign * ref[:, axis], rtol=1e-4, atol=1e-3
        )
    # the first two axes are the 2-D map's (the third is an addition, not a different map)
    flat = embed(feats, "pca")
    np.testing.assert_allclose(result.coords[:, :2], flat.coords, atol=1e-5)
    assert result.provenance["params"]["dims"] == 3


def test_pca_3d_of_two_dimensional_codes_is_flat() -> None:
    feats = _clustered(n=10, d=2)
    coords = embed(feats, "pca", dims=3).coords
    assert coords.shape == (10, 3) and np.all(coords[:, 2] == 0)


# umap: the first call compiles numba kernels (~18 s), hence "slow"
@pytest.mark.parametrize("method", ["tsne", "pca", pytest.param("umap", marks=pytest.mark.slow)])
def test_3d_maps_keep_clusters_and_are_seeded(method) -> None:
    if method == "umap":
        pytest.importorskip("umap")
    # 200 points: t-SNE on ~120 points in 3-D strands a few points in the wrong cluster
    # (scikit-learn's TSNE(n_components=3) itself; 0.94 agreement); 200 keep >= 0.99
    feats = _clustered(n=200)
    first = embed(feats, method, seed=2, dims=3)
    assert first.coords.shape == (200, 3) and np.isfinite(first.coords).all()
    np.testing.assert_array_equal(first.coords, embed(feats, method, seed=2, dims=3).coords)
    # a real third axis, not a constant column
    assert np.std(first.coords[:, 2]) > 1e-3 * np.std(first.coords[:, 0])
    assert _knn_accuracy(first.coords.astype(np.float64), feats.predictions) >= 0.95
    shuffled = first.coords[np.random.default_rng(0).permutation(200)]
    assert _knn_accuracy(shuffled.astype(np.float64), feats.predictions) < 0.5


def test_bad_dims() -> None:
    with pytest.raises(BadInputError, match="2 or 3"):
        embed(_clustered(), "pca", dims=4)


def _page_data(page: str) -> tuple[dict, str]:
    block = re.search(
        r'<script type="application/json" id="convlens-map-data">(.*?)</script>', page, re.S
    )
    assert block is not None
    return json.loads(block.group(1)), page.replace(block.group(1), "")


def test_3d_html_holds_every_point_and_is_offline() -> None:
    feats = _clustered(n=25, k=3)
    feats.paths[4] = 'odd </script><img src="https://x/y.png">.png'
    result = embed(feats, "pca", dims=3)
    data, rest = _page_data(embedding_html(result, class_name=lambda c: f"c{c}"))
    assert data["dims"] == 3 and len(data["points"]) == 25
    assert [p["path"] for p in data["points"]] == feats.paths
    assert [p["label"] for p in data["points"]] == feats.labels.tolist()
    assert [p["prediction"] for p in data["points"]] == feats.predictions.tolist()
    # the 3 coordinates are the embedding's, each axis scaled to [0, 1] (an independent min-max)
    coords = result.coords.astype(np.float64)
    unit = (coords - coords.min(0)) / (coords.max(0) - coords.min(0))
    got = np.array([[p["x"], p["y"], p["z"]] for p in data["points"]])
    np.testing.assert_allclose(got, unit, atol=1e-5)
    assert not re.search(r"https?://", rest), "the page refers to an outside URL"
    assert "<script src" not in rest and "<link" not in rest
    # a 2-D page has no z and says 2
    flat, _ = _page_data(embedding_html(embed(feats, "pca")))
    assert flat["dims"] == 2 and "z" not in flat["points"][0]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("dims", [3, 2])
def test_projection_script_runs(tmp_path, dims) -> None:
    """Run the page's own script in node with a stand-in canvas: every point is drawn on the canvas."""
    feats = _clustered(n=12, k=3)
    page = embedding_html(embed(feats, "pca", dims=dims))
    script = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(script) == 1
    data = re.search(r'id="convlens-map-data">(.*?)</script>', page, re.S).group(1)
    stub = """
const arcs=[]; const listeners={};
const ctx2d={clearRect(){},beginPath(){},arc(x,y){arcs.push([x,y]);},fill(){},moveTo(){},lineTo(){},stroke(){},fillText(){}};
const el=(id)=>({id,style:{},value:'label',textContent:id==='convlens-map-data'?DATA:'',innerHTML:'',getContext:()=>ctx2d,addEventListener(t,f){listeners[id+':'+t]=f;}});
const els={}; globalThis.document={getElementById:(id)=>els[id]||(els[id]=el(id))};
globalThis.window={innerWidth:800,innerHeight:670,addEventListener(){}};
"""
    runner = (
        "const DATA="
        + json.dumps(data)
        + ";\n"
        + stub
        + script[0]
        + "\nconsole.log(JSON.stringify(arcs));\n"
    )
    (tmp_path / "run.js").write_text(runner)
    proc = subprocess.run(
        ["node", str(tmp_path / "run.js")], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    arcs = np.array(json.loads(proc.stdout))
    assert arcs.shape == (12, 2) and np.isfinite(arcs).all()
    # the drawn points spread over the canvas (a real projection, not one spot) and stay on it
    assert np.ptp(arcs[:, 0]) > 100 and np.ptp(arcs[:, 1]) > 100
    assert (
        (arcs[:, 0] > 0).all()
        and (arcs[:, 0] < 800).all()
        and (arcs[:, 1] > 0).all()
        and (arcs[:, 1] < 600).all()
    )


def test_3d_png(tmp_path) -> None:
    from convlens.render.figures import save_figure

    fig = embedding_figure(embed(_clustered(), "pca", dims=3), class_name=str)
    assert fig.axes[0].name == "3d"
    path = save_figure(fig, tmp_path / "map3d.png")
    with Image.open(path) as picture:
        assert picture.size[0] > 300


def test_cli_dims_3_json(tmp_path, capsys) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "folder"
    for i in range(30):
        sub = folder / str(int(digits.target[i]))
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(sub / f"d{i:03d}.png")
    features = tmp_path / "features"
    assert (
        main(
            [
                "features",
                str(folder),
                "--model",
                "digits_cnn",
                "--layer",
                "act2",
                "-o",
                str(features),
                "-q",
            ]
        )
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "map3d.html"
    assert (
        main(["embed", str(features), "--method", "pca", "--dims", "3", "-o", str(out), "--json"])
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert payload["dims"] == 3 and payload["points"] == 30 and payload["params"]["dims"] == 3
    data, _ = _page_data(out.read_text())
    assert (
        data["dims"] == 3
        and len(data["points"]) == 30
        and all({"x", "y", "z"} <= set(p) for p in data["points"])
    )
    assert (tmp_path / "map3d.png").is_file()
    try:
        code = main(["embed", str(features), "--dims", "4", "-o", str(out)])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
