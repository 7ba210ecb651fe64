"""``extract_features`` / ``load_features``: codes equal a hand-written forward hook, labels,
paths and predictions right, Parquet shards resumable after a kill, bad files reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from convlens.errors import BadInputError, LayerNotFoundError
from convlens.represent import extract_features, load_features

from helpers.tiny import tiny_model

pytestmark = pytest.mark.usefixtures(
    "one_thread_per_module"
)  # one torch thread (tests/conftest.py)

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"
MEAN, STD = 0.5, 0.25  # tiny_model's normalisation


def _png(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class subfolders 0, 2, 4 (indices of tiny_model's classes) of 16x16 PNGs, two bad files."""
    root = tmp_path_factory.mktemp("features") / "data"
    rng = np.random.default_rng(3)
    for c, n in ((0, 5), (2, 4), (4, 6)):
        for i in range(n):
            _png(root / str(c) / f"{i:02d}.png", rng)
    (root / "2" / "01b.png").write_bytes(b"not a png at all")
    (root / "4" / "zz.png").write_bytes(b"")
    return root


def _expected_rows(root: Path) -> list[tuple[Path, int]]:
    """Readable images in path order with their folder's class (what the folder means)."""
    rows = []
    for path in sorted(root.rglob("*.png")):
        try:
            Image.open(path).verify()
        except Exception:
            continue
        rows.append((path, int(path.parent.name)))
    return rows


def _reference(model, paths: list[Path], layer: str, pooled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Codes and top-1 classes through a forward hook written here, one image at a time."""
    module = model.module
    saved: list[torch.Tensor] = []
    handle = module.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: saved.append(out.detach().clone())
    )
    codes, preds = [], []
    try:
        with torch.no_grad():
            for path in paths:
                pixels = torch.from_numpy(
                    np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
                ).permute(2, 0, 1)
                logits = module(((pixels - MEAN) / STD)[None])
                act = saved.pop()[0]
                codes.append((act.mean(dim=(1, 2)) if pooled else act.reshape(-1)).numpy())
                preds.append(int(logits.argmax()))
    finally:
        handle.remove()
    return np.stack(codes), np.array(preds)


@pytest.mark.parametrize(("layer", "pooled"), [("relu2", True), ("relu2", False), ("conv1", True)])
def test_codes_equal_a_direct_forward_hook(
    labelled: Path, tmp_path: Path, layer: str, pooled: bool
) -> None:
    model = tiny_model()
    report = extract_features(
        model, labelled, layer, tmp_path / "out", pooled=pooled, batch_size=4, shard_size=6
    )
    features = load_features(tmp_path / "out")
    rows = _expected_rows(labelled)
    codes, preds = _reference(model, [p for p, _ in rows], layer, pooled)
    assert features.paths == [str(p) for p, _ in rows]
    np.testing.assert_array_equal(features.labels, [c for _, c in rows])
    # batched vs one-at-a-time convolutions: float32 reassociation, O(1e-6) on O(1) values
    np.testing.assert_allclose(features.codes, codes, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(features.predictions, preds)
    assert (
        features.codes.dtype == np.float32
        and features.labels.dtype == np.int64 == features.predictions.dtype
    )
    shape = {"relu2": (8, 8, 8), "conv1": (6, 16, 16)}[layer]
    assert (
        features.shape == shape
        and features.layer == layer
        and features.pooled is pooled
        and features.model == "tiny-conv"
    )
    assert features.codes.shape == (len(rows), shape[0] if pooled else int(np.prod(shape)))
    assert (
        features.provenance["layer"] == layer and features.provenance["params"]["pooled"] is pooled
    )
    # bad files are reported with a reason and have no row
    assert sorted(Path(p).name for p, _ in report.failed) == ["01b.png", "zz.png"]
    assert report.n_done == len(rows) and report.n_items == len(rows) + 2


def test_parquet_shards_hold_one_row_per_item_with_a_vector_column(
    labelled: Path, tmp_path: Path
) -> None:
    extract_features(tiny_model(), labelled, "relu2", tmp_path / "out", batch_size=4, shard_size=6)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    tables = [pq.read_table(tmp_path / "out" / e["file"]) for e in manifest["shards"]]
    assert all(e["file"].endswith(".parquet") for e in manifest["shards"])
    assert tables[0].column_names == ["index", "path", "label", "code", "prediction"]
    code = tables[0].schema.field("code").type
    assert (
        pa.types.is_fixed_size_list(code)
        and code.list_size == 8
        and code.value_type == pa.float32()
    )
    assert sum(t.num_rows for t in tables) == len(_expected_rows(labelled))
    # every shard records who computed it; here, this process
    assert {e["worker"].rsplit(":", 1)[1] for e in manifest["shards"]} == {str(os.getpid())}


def test_flat_folder_is_unlabelled_and_items_can_be_paths(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = [tmp_path / "flat" / f"{i}.png" for i in range(5)]
    for p in paths:
        _png(p, rng)
    model = tiny_model()
    extract_features(model, tmp_path / "flat", "relu2", tmp_path / "a", shard_size=2)
    extract_features(
        model, [str(p) for p in reversed(paths)], "relu2", tmp_path / "b", shard_size=3
    )
    a, b = load_features(tmp_path / "a"), load_features(tmp_path / "b")
    assert a.labels.tolist() == [-1] * 5 and a.paths == [str(p) for p in paths]
    assert b.paths == [str(p) for p in reversed(paths)]
    np.testing.assert_allclose(b.codes[::-1], a.codes, rtol=1e-6, atol=1e-7)


def test_two_local_workers_give_the_same_features_from_two_processes(
    labelled: Path, tmp_path: Path
) -> None:
    model = tiny_model()
    extract_features(model, labelled, "relu2", tmp_path / "one", shard_size=3)
    report = extract_features(model, labelled, "relu2", tmp_path / "two", shard_size=3, workers=2)
    one, two = load_features(tmp_path / "one"), load_features(tmp_path / "two")
    assert two.paths == one.paths
    np.testing.assert_allclose(two.codes, one.codes, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(two.predictions, one.predictions)
    workers = {
        e["worker"] for e in json.loads((tmp_path / "two" / "manifest.json").read_text())["shards"]
    }
    assert len(workers) == 2 and f"{os.uname().nodename}:{os.getpid()}" not in workers
    assert sorted(Path(p).name for p, _ in report.failed) == ["01b.png", "zz.png"]


def test_bad_input_is_refused_before_anything_is_written(labelled: Path, tmp_path: Path) -> None:
    model = tiny_model()
    with pytest.raises(LayerNotFoundError, match="relu2"):
        extract_features(model, labelled, "relu3", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(BadInputError, match="workers"):
        extract_features(model, labelled, "relu2", tmp_path / "out", workers=0)
    with pytest.raises(BadInputError, match="no such features folder"):
        load_features(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    with pytest.raises(BadInputError, match=r"not a features folder.*convlens features"):
        load_features(tmp_path / "other")


def test_another_layer_in_the_same_folder_is_refused(labelled: Path, tmp_path: Path) -> None:
    model = tiny_model()
    extract_features(model, labelled, "relu2", tmp_path / "out", shard_size=8)
    with pytest.raises(BadInputError, match="another run"):
        extract_features(model, labelled, "conv1", tmp_path / "out", shard_size=8)
    report = extract_features(
        model, labelled, "conv1", tmp_path / "out", shard_size=8, overwrite=True
    )
    assert load_features(tmp_path / "out").layer == "conv1" and report.computed_shards == [
        0,
        1,
        2,
    ]  # 17 items


# ---------------------------------------------------------------- kill -9 mid-run, then resume

KILL_JOB = """
import os, signal, sys
sys.path[:0] = [{tests!r}]
import torch
torch.set_num_threads(1)
from convlens.data import runner
from convlens.represent import extract_features
from helpers.tiny import tiny_model

seen = [0]

def hook(point):
    if point == "manifest-written":
        seen[0] += 1
        if seen[0] == 3:  # the start manifest, then shards 0 and 1 listed: die here
            os.kill(os.getpid(), signal.SIGKILL)

runner._fault_point = hook
extract_features(tiny_model(), {data!r}, "relu2", {out!r}, batch_size=2, shard_size=4)
"""


def test_a_killed_run_resumes_without_recomputing_finished_shards(
    labelled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    script = KILL_JOB.format(tests=str(TESTS), data=str(labelled), out=str(out))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    listed = [e["index"] for e in json.loads((out / "manifest.json").read_text())["shards"]]
    assert listed == [0, 1]
    with pytest.raises(BadInputError, match="unfinished"):
        load_features(out)
    model = tiny_model()
    report = extract_features(model, labelled, "relu2", out, batch_size=2, shard_size=4)
    n_shards = -(-report.n_items // 4)
    assert report.computed_shards == list(range(2, n_shards))
    extract_features(model, labelled, "relu2", tmp_path / "ref", batch_size=2, shard_size=4)
    resumed, reference = load_features(out), load_features(tmp_path / "ref")
    assert resumed.paths == reference.paths
    np.testing.assert_array_equal(resumed.codes, reference.codes)
    np.testing.assert_array_equal(resumed.labels, reference.labels)
    assert sorted(Path(p).name for p, _ in report.failed) == ["01b.png", "zz.png"]


def test_without_predictions_the_forward_stops_at_the_layer_and_the_codes_are_the_same(
    labelled: Path, tmp_path: Path
) -> None:
    from convlens.represent.features import NOT_PREDICTED

    model = tiny_model()
    extract_features(model, labelled, "conv1", tmp_path / "with", batch_size=4, shard_size=6)
    after: list[int] = []  # calls of every module after conv1, counted by hooks of our own
    later = [m for name, m in model.module.named_children() if name not in ("conv1",)]
    handles = [m.register_forward_hook(lambda *_: after.append(1)) for m in later]
    try:
        extract_features(
            model, labelled, "conv1", tmp_path / "without", batch_size=4, shard_size=6,
            predictions=False,
        )  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
    # past conv1, only the one probe of the layer's shape (layer_shape, a blank image) ran:
    # each batch's forward pass stopped there (with predictions, 4 more batches would)
    assert len(after) == len(later)
    full, early = load_features(tmp_path / "with"), load_features(tmp_path / "without")
    # the same operations up to the layer: the same bits
    np.testing.assert_array_equal(early.codes, full.codes)
    assert early.paths == full.paths
    np.testing.assert_array_equal(early.labels, full.labels)
    assert full.has_predictions and (full.predictions >= 0).all()
    assert not early.has_predictions and (early.predictions == NOT_PREDICTED).all()
    assert early.provenance["params"]["predictions"] is False
    # a folder made with predictions is not resumed without them (another run)
    with pytest.raises(BadInputError):
        extract_features(
            model, labelled, "conv1", tmp_path / "with", batch_size=4, shard_size=6,
            predictions=False,
        )  # fmt: skip


def test_relative_paths_are_found_from_another_directory(
    labelled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the features run starts beside the images and names them relatively, as a user types
    monkeypatch.chdir(labelled.parent)
    extract_features(tiny_model(), labelled.name, "relu2", tmp_path / "out", batch_size=4)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    features = load_features(tmp_path / "out")
    assert features.paths and all(Path(p).is_absolute() for p in features.paths)
    assert all(Path(p).is_file() for p in features.paths)  # found from here
    expected = sorted(
        str(labelled / f"{p.parent.name}/{p.name}") for p, _ in _expected_rows(labelled)
    )
    assert sorted(features.paths) == expected
    assert features.provenance["cwd"] == str(labelled.parent)
