"""The runner's Parquet shards and its local multi-process engine: the same outputs as the
``.npz`` shards of one process, the same manifest, checksums, resume after ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from convlens.data.folders import LabelledItem
from convlens.data.runner import iter_shards, read_outputs, run_dataset
from convlens.errors import BadInputError, ImageReadError

pytestmark = pytest.mark.usefixtures(
    "one_thread_per_module"
)  # one torch thread (tests/conftest.py)

SRC = Path(__file__).resolve().parents[2] / "src"


def load_npy(path: Path) -> torch.Tensor:
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False))
    except (OSError, ValueError):
        raise ImageReadError(str(path), "not a .npy array") from None


def make_items(folder: Path, n: int, bad: tuple[int, ...] = ()) -> list[LabelledItem]:
    """``n`` small arrays; every third item unlabelled; ``bad`` ones are garbage files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        path = folder / f"{i:03d}.npy"
        if i in bad:
            path.write_bytes(b"garbage")
        else:
            np.save(path, rng.random((3, 4, 5), dtype=np.float32))
        items.append(LabelledItem(path, None if i % 3 == 0 else i % 7))
    return items


def outputs(x: torch.Tensor, items: list[LabelledItem]) -> dict[str, Any]:
    """Keys of every kind: a scalar float, a vector, a 3-D map, ints, bools, a numpy array."""
    return {
        "mean": x.mean(dim=(1, 2, 3)),
        "flat": x.flatten(1),
        "map": x * 2,
        "argmax": x.flatten(1).argmax(dim=1),
        "positive": x[:, 0, 0, 0] > 0.5,
        "half": x[:, :, 0, 0].numpy().astype(np.float16),
    }


def direct(items: list[LabelledItem]) -> dict[str, np.ndarray]:
    """The same outputs item by item with numpy, no runner involved."""
    rows: dict[str, list[Any]] = {
        k: []
        for k in ("mean", "flat", "map", "argmax", "positive", "half", "index", "path", "label")
    }
    for i, item in enumerate(items):
        try:
            a = np.load(item.path, allow_pickle=False)
        except ValueError:
            continue
        for key, value in (("mean", a.mean()), ("flat", a.reshape(-1)), ("map", a * 2), ("argmax", a.reshape(-1).argmax()),
                           ("positive", a[0, 0, 0] > 0.5), ("half", a[:, 0, 0].astype(np.float16)), ("index", i),
                           ("path", str(item.path)), ("label", -1 if item.label is None else item.label)):  # fmt: skip
            rows[key].append(value)
    return {key: np.array(value) for key, value in rows.items()}


def test_parquet_outputs_equal_npz_and_a_direct_computation(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 23, bad=(5, 12, 13, 14))
    a = run_dataset(items, outputs, tmp_path / "npz", load=load_npy, batch_size=3, shard_size=4)
    b = run_dataset(
        items,
        outputs,
        tmp_path / "pq",
        load=load_npy,
        batch_size=3,
        shard_size=4,
        shard_format="parquet",
    )
    assert a.failed == b.failed and [p for p, _ in b.failed] == [
        str(items[i].path) for i in (5, 12, 13, 14)
    ]
    assert b.shards == [f"shard-{k:05d}.parquet" for k in range(6)]
    npz, parquet, expected = (
        read_outputs(tmp_path / "npz"),
        read_outputs(tmp_path / "pq"),
        direct(items),
    )
    assert set(parquet) == set(npz) | {"path", "label"}
    for key in npz:  # bit-identical, same dtypes and shapes
        assert parquet[key].dtype == npz[key].dtype, key
        np.testing.assert_array_equal(parquet[key], npz[key], err_msg=key)
    assert parquet["path"].tolist() == expected.pop("path").tolist()
    for key, value in expected.items():
        np.testing.assert_allclose(
            parquet[key].astype(np.float64), value.astype(np.float64), rtol=1e-6, err_msg=key
        )
    # shard 3 (items 12..15) has one readable item; its neighbours stream in order
    assert [index for index, _ in iter_shards(tmp_path / "pq")][3] == [15]


def test_parquet_columns_are_readable_by_arrow_tools(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 6)
    run_dataset(
        items,
        outputs,
        tmp_path / "pq",
        load=load_npy,
        batch_size=4,
        shard_size=6,
        shard_format="parquet",
    )
    table = pq.read_table(tmp_path / "pq" / "shard-00000.parquet")
    assert table.column_names[:3] == ["index", "path", "label"] and table.num_rows == 6
    assert table.schema.field("map").type == pa.list_(pa.float32(), 60)  # fixed-size list of C*H*W
    assert (
        table.schema.field("positive").type == pa.bool_()
        and table.schema.field("argmax").type == pa.int64()
    )
    assert table.column("label").to_pylist() == [-1, 1, 2, -1, 4, 5]
    row = np.asarray(table.column("map")[2].as_py(), dtype=np.float32).reshape(3, 4, 5)
    np.testing.assert_array_equal(row, np.load(items[2].path) * 2)


def test_reserved_keys_and_a_format_change_are_refused(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 4)
    with pytest.raises(BadInputError, match=r"'label'.*Parquet"):
        run_dataset(
            items,
            lambda x, _: {"label": x[:, 0, 0, 0]},
            tmp_path / "a",
            load=load_npy,
            shard_format="parquet",
        )
    run_dataset(items, outputs, tmp_path / "b", load=load_npy, shard_format="parquet")
    with pytest.raises(
        BadInputError, match=r"different shard_format \(parquet stored, npz given\)"
    ):
        run_dataset(items, outputs, tmp_path / "b", load=load_npy)
    with pytest.raises(BadInputError, match="shard_format is 'csv'"):
        run_dataset(items, outputs, tmp_path / "c", load=load_npy, shard_format="csv")
    with pytest.raises(BadInputError, match="engine is 'spark'"):
        run_dataset(items, outputs, tmp_path / "c", load=load_npy, engine="spark")


def test_two_local_workers_compute_different_shards_with_the_same_outputs(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 30, bad=(7,))
    offset = torch.tensor(1.5)  # a closure: the forked workers inherit it, nothing is pickled

    def fn(x: torch.Tensor, batch: list[LabelledItem]) -> dict[str, Any]:
        return {
            **outputs(x, batch),
            "shifted": x.flatten(1) + offset,
            "pid": torch.full((len(batch),), os.getpid()),
        }

    calls: list[int] = []
    one = run_dataset(
        items,
        fn,
        tmp_path / "one",
        load=load_npy,
        batch_size=4,
        shard_size=5,
        shard_format="parquet",
    )
    two = run_dataset(
        items,
        fn,
        tmp_path / "two",
        load=load_npy,
        batch_size=4,
        shard_size=5,
        shard_format="parquet",
        workers=2,
        progress=lambda d, t: calls.append(d),
    )
    a, b = read_outputs(tmp_path / "one"), read_outputs(tmp_path / "two")
    for key in set(a) - {"pid"}:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert one.failed == two.failed and sorted(two.computed_shards) == list(range(6))
    entries = json.loads((tmp_path / "two" / "manifest.json").read_text())["shards"]
    pids = {int(e["worker"].rsplit(":", 1)[1]) for e in entries}
    assert len(pids) == 2 and os.getpid() not in pids
    # the worker named in the manifest is the process that ran fn on that shard's rows
    for index, arrays in iter_shards(tmp_path / "two"):
        entry = next(e for e in entries if e["start"] <= index[0] < e["stop"])
        assert set(arrays["pid"].tolist()) == {int(entry["worker"].rsplit(":", 1)[1])}
    assert calls[0] == 0 and calls[-1] == 30 and calls == sorted(calls) and len(calls) == 7
    # resuming with the other engine keeps every shard
    assert (
        run_dataset(
            items,
            fn,
            tmp_path / "two",
            load=load_npy,
            batch_size=4,
            shard_size=5,
            shard_format="parquet",
        ).computed_shards
        == []
    )


def test_errors_in_worker_processes_come_back_as_one_line(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 8)
    with pytest.raises(
        BadInputError,
        match=r"^fn returned 'x' with shape \(3,\) for a batch of 4 items; return one row per item$",
    ):
        run_dataset(
            items,
            lambda x, _: {"x": torch.zeros(3)},
            tmp_path / "a",
            load=load_npy,
            batch_size=4,
            shard_size=4,
            workers=2,
        )
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["shards"] == []


def test_ray_engine_without_ray_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    items = make_items(tmp_path / "items", 2)
    with pytest.raises(
        BadInputError, match=r"^--engine ray needs Ray: pip install 'convlens\[ray\]'$"
    ):
        run_dataset(items, outputs, tmp_path / "out", load=load_npy, engine="ray", workers=2)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- kill -9 and resume

JOB = """
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, {here!r})
from convlens.data import runner
import test_runner_parquet as t

seen = [0]

def hook(point):
    if point == "shard-written-tmp":
        seen[0] += 1
        if seen[0] == 3:  # shard 2's temporary file, cut in half as if killed while writing it
            for tmp in Path({out!r}).glob("*.tmp"):
                with open(tmp, "r+b") as handle:
                    handle.truncate(tmp.stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)

runner._fault_point = hook
items = t.make_items(Path({items!r}), 22, bad=(3,))
runner.run_dataset(items, t.outputs, {out!r}, load=t.load_npy, batch_size=3, shard_size=5, shard_format="parquet", config={{"job": 1}})
"""


def test_kill_mid_write_then_resume(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 22, bad=(3,))
    out = tmp_path / "out"
    script = JOB.format(
        here=str(Path(__file__).parent), out=str(out), items=str(tmp_path / "items")
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "shard-00002.parquet.tmp").exists()
    assert [e["index"] for e in json.loads((out / "manifest.json").read_text())["shards"]] == [0, 1]
    partial = read_outputs(out)  # what is listed is complete and verified
    np.testing.assert_array_equal(partial["index"], [0, 1, 2, 4, 5, 6, 7, 8, 9])
    report = run_dataset(
        items,
        outputs,
        out,
        load=load_npy,
        batch_size=3,
        shard_size=5,
        shard_format="parquet",
        config={"job": 1},
    )
    assert report.computed_shards == [2, 3, 4] and not list(out.glob("*.tmp"))
    run_dataset(
        items,
        outputs,
        tmp_path / "ref",
        load=load_npy,
        batch_size=3,
        shard_size=5,
        shard_format="parquet",
        config={"job": 1},
    )
    resumed, reference = read_outputs(out), read_outputs(tmp_path / "ref")
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key], err_msg=key)
