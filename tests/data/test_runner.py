from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import convlens.data.runner as runner_module
from convlens.data.folders import LabelledItem
from convlens.data.runner import iter_shards, read_outputs, run_dataset
from convlens.errors import BadInputError, ImageReadError

SRC = Path(__file__).resolve().parents[2] / "src"


# ---------------------------------------------------------------- items, loader, fn


def load_npy(path: Path) -> torch.Tensor:
    """A cheap loader for tests: .npy arrays, garbage files become ImageReadError."""
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise ImageReadError(str(path), f"not a .npy array ({type(err).__name__})") from None


def make_items(folder: Path, n: int, bad: tuple[int, ...] = ()) -> list[LabelledItem]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        path = folder / f"{i:03d}.npy"
        if i in bad:
            path.write_bytes(b"this is not an array")
        else:
            np.save(path, rng.random((3, 4, 4), dtype=np.float32))
        items.append(LabelledItem(path, i % 3))
    return items


def features(x: torch.Tensor, items: list[LabelledItem]) -> dict[str, Any]:
    return {
        "mean": x.mean(dim=(1, 2, 3)),
        "flat": x.flatten(1) * 2,
        "label": torch.tensor([it.label for it in items]),
        "corner": x[:, 0, 0, 0].numpy() + 1,  # numpy outputs work too
    }


def direct(items: list[LabelledItem]) -> dict[str, np.ndarray]:
    """The same outputs computed item by item with numpy, no runner involved."""
    rows: dict[str, list[Any]] = {"mean": [], "flat": [], "label": [], "corner": [], "index": []}
    for i, item in enumerate(items):
        try:
            a = np.load(item.path, allow_pickle=False)
        except ValueError:
            continue
        rows["mean"].append(a.mean())
        rows["flat"].append(a.reshape(-1) * 2)
        rows["label"].append(item.label)
        rows["corner"].append(a[0, 0, 0] + 1)
        rows["index"].append(i)
    return {key: np.array(value) for key, value in rows.items()}


def assert_matches_direct(
    outputs: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
) -> None:
    assert set(outputs) == set(expected)
    np.testing.assert_array_equal(outputs["index"], expected["index"])
    np.testing.assert_allclose(outputs["mean"], expected["mean"], rtol=1e-6, atol=1e-7)
    for key in ("flat", "label", "corner"):
        np.testing.assert_array_equal(outputs[key], expected[key])


def assert_identical(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def listed(out: Path) -> set[int]:
    if not (out / "manifest.json").exists():
        return set()
    return {entry["index"] for entry in manifest(out)["shards"]}


# ---------------------------------------------------------------- in-process behaviour


@pytest.mark.parametrize(
    ("batch_size", "shard_size", "num_workers"), [(4, 10, 0), (3, 7, 2), (5, 5, 0)]
)
def test_outputs_equal_a_direct_computation(
    tmp_path: Path, batch_size: int, shard_size: int, num_workers: int
) -> None:
    items = make_items(tmp_path / "items", 23)
    calls: list[tuple[int, int]] = []
    report = run_dataset(
        items, features, tmp_path / "out", load=load_npy, batch_size=batch_size,
        shard_size=shard_size, num_workers=num_workers, progress=lambda d, t: calls.append((d, t)),
    )  # fmt: skip
    assert_matches_direct(read_outputs(tmp_path / "out"), direct(items))
    n_shards = -(-23 // shard_size)
    assert report.n_items == report.n_done == 23 and report.failed == []
    assert report.shards == [f"shard-{k:05d}.npz" for k in range(n_shards)]
    assert report.computed_shards == list(range(n_shards))
    # the manifest lists each shard's item range and the sha256 of its file
    for k, entry in enumerate(manifest(tmp_path / "out")["shards"]):
        assert (entry["start"], entry["stop"]) == (k * shard_size, min((k + 1) * shard_size, 23))
        assert (
            entry["sha256"]
            == hashlib.sha256((tmp_path / "out" / entry["file"]).read_bytes()).hexdigest()
        )
    # progress: from 0, one call per batch, never going back, ending at (23, 23)
    done = [d for d, _ in calls]
    assert (
        done[0] == 0 and done[-1] == 23 and done == sorted(done) and {t for _, t in calls} == {23}
    )
    assert len(calls) == 1 + sum(
        -(-min(shard_size, 23 - s) // batch_size) for s in range(0, 23, shard_size)
    )


def test_streaming_shards_and_iter_shards(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 20)
    out = tmp_path / "out"
    seen: list[tuple[int, set[int]]] = []

    def spy(x: torch.Tensor, batch: list[LabelledItem]) -> dict[str, Any]:
        seen.append((items.index(batch[0]), listed(out)))
        return features(x, batch)

    run_dataset(items, spy, out, load=load_npy, batch_size=3, shard_size=6)
    # every earlier shard is on disk and listed before the next shard's first batch runs
    for first, shards in seen:
        assert shards == set(range(first // 6))
    chunks = list(iter_shards(out))
    assert [index for index, _ in chunks] == [
        list(range(s, min(s + 6, 20))) for s in range(0, 20, 6)
    ]
    assert "index" not in chunks[0][1]
    np.testing.assert_array_equal(
        np.concatenate([c["flat"] for _, c in chunks]), direct(items)["flat"]
    )


def test_unreadable_files_are_reported_and_others_processed(tmp_path: Path) -> None:
    # items 4 and 5 fill a whole batch and a whole shard; 9 is in a mixed batch; 12 is missing
    items = make_items(tmp_path / "items", 14, bad=(4, 5, 9))
    items[12] = LabelledItem(tmp_path / "items" / "gone.npy", 0)
    report = run_dataset(
        items, features, tmp_path / "out", load=load_npy, batch_size=2, shard_size=2
    )
    assert [path for path, _ in report.failed] == [str(items[i].path) for i in (4, 5, 9, 12)]
    assert all("not a .npy array" in reason for _, reason in report.failed)
    assert report.n_done == 10
    outputs = read_outputs(tmp_path / "out")
    expected = direct(items[:12] + items[13:])
    expected["index"] = np.array([i for i in range(14) if i not in (4, 5, 9, 12)])
    assert_matches_direct(outputs, expected)
    assert manifest(tmp_path / "out")["shards"][2]["n_ok"] == 0


def test_other_load_errors_propagate(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 3)

    def broken(path: Path) -> torch.Tensor:
        raise RuntimeError("bug in the loader")

    with pytest.raises(RuntimeError, match="bug in the loader"):
        run_dataset(items, features, tmp_path / "out", load=broken)


def test_config_mismatch_is_refused_and_same_config_resumes(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 9)
    out = tmp_path / "out"
    calls = []

    def counted(x: torch.Tensor, batch: list[LabelledItem]) -> dict[str, Any]:
        calls.append(len(batch))
        return features(x, batch)

    config = {"method": "saliency", "params": (1, 2)}
    run_dataset(items, counted, out, load=load_npy, batch_size=4, shard_size=4, config=config)
    first = read_outputs(out)
    with pytest.raises(BadInputError, match=r"config.*new out_dir or pass overwrite=True"):
        run_dataset(
            items,
            counted,
            out,
            load=load_npy,
            batch_size=4,
            shard_size=4,
            config={"method": "gradcam"},
        )
    with pytest.raises(BadInputError, match="different items"):
        run_dataset(
            items[:-1], counted, out, load=load_npy, batch_size=4, shard_size=4, config=config
        )
    relabelled = [LabelledItem(it.path, 0) for it in items]
    with pytest.raises(BadInputError, match=r"different items \(other paths or labels\)"):
        run_dataset(
            relabelled, counted, out, load=load_npy, batch_size=4, shard_size=4, config=config
        )
    with pytest.raises(BadInputError, match="different shard_size"):
        run_dataset(items, counted, out, load=load_npy, batch_size=4, shard_size=3, config=config)
    assert_identical(read_outputs(out), first)  # refusals touch nothing
    calls.clear()
    report = run_dataset(
        items, counted, out, load=load_npy, batch_size=4, shard_size=4, config=config
    )
    assert calls == [] and report.computed_shards == [] and report.n_done == 9
    report = run_dataset(
        items,
        counted,
        out,
        load=load_npy,
        batch_size=4,
        shard_size=4,
        config={"method": "gradcam"},
        overwrite=True,
    )
    assert report.computed_shards == [0, 1, 2] and manifest(out)["config"] == {"method": "gradcam"}


def test_read_outputs_detects_a_tampered_shard_and_a_resume_repairs_it(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 12)
    out = tmp_path / "out"
    run_dataset(items, features, out, load=load_npy, batch_size=4, shard_size=4)
    original = read_outputs(out)
    shard = out / "shard-00001.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside an array
    shard.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=r"shard-00001\.npz does not match its checksum"):
        read_outputs(out)
    chunks = iter_shards(out)
    assert next(chunks)[0] == [0, 1, 2, 3]  # streaming reads the good shard first
    with pytest.raises(BadInputError, match="checksum"):
        next(chunks)
    report = run_dataset(items, features, out, load=load_npy, batch_size=4, shard_size=4)
    assert report.computed_shards == [1]
    assert_identical(read_outputs(out), original)
    (out / "shard-00002.npz").unlink()
    with pytest.raises(BadInputError, match="cannot be read"):
        read_outputs(out)
    (out / "manifest.json").unlink()
    with pytest.raises(BadInputError, match=r"no manifest\.json"):
        read_outputs(out)


def test_resume_deletes_only_its_own_leftovers(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 8)
    out = tmp_path / "out"
    run_dataset(items, features, out, load=load_npy, batch_size=4, shard_size=4)
    original = read_outputs(out)
    stray = ["shard-00007.npz", "shard-00001.npz.tmp", "manifest.json.tmp"]
    mine = ["notes.tmp", "shard-notes.npz", "readme.txt"]
    for name in stray + mine:
        (out / name).write_bytes(b"leftover")
    report = run_dataset(items, features, out, load=load_npy, batch_size=4, shard_size=4)
    assert report.computed_shards == []
    assert [n for n in stray + mine if (out / n).exists()] == mine
    assert_identical(read_outputs(out), original)


def test_default_loader_reads_images_and_refuses_mixed_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 256, (5, 6, 3), dtype=np.uint8) for _ in range(3)]
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    paths = [tmp_path / "0.png", tmp_path / "bad.png", str(tmp_path / "1.png"), tmp_path / "2.png"]
    report = run_dataset(paths, lambda x, _: {"x": x}, tmp_path / "out", batch_size=4)
    assert [p for p, _ in report.failed] == [str(tmp_path / "bad.png")]
    x = read_outputs(tmp_path / "out")["x"]
    np.testing.assert_allclose(x, np.stack(pixels).transpose(0, 3, 1, 2) / 255, atol=1e-6)
    Image.fromarray(pixels[0][:4]).save(tmp_path / "small.png")
    with pytest.raises(BadInputError, match=r"differ in shape.*small\.png"):
        run_dataset(
            [tmp_path / "0.png", tmp_path / "small.png"], lambda x, _: {"x": x}, tmp_path / "out2"
        )


@pytest.mark.parametrize(
    ("outputs", "error", "match"),
    [
        ({"x": torch.zeros(3)}, BadInputError, "one row per item"),
        ({"index": torch.zeros(2)}, BadInputError, "other than 'index'"),
        ({"x": [1, 2]}, TypeError, "tensor or numpy array"),
        ([torch.zeros(2)], TypeError, "mapping"),
    ],
)
def test_bad_fn_outputs_are_refused(
    tmp_path: Path, outputs: Any, error: type[Exception], match: str
) -> None:
    items = make_items(tmp_path / "items", 2)
    with pytest.raises(error, match=match):
        run_dataset(items, lambda x, _: outputs, tmp_path / "out", load=load_npy)


def test_bad_sizes_and_file_out_dir_are_refused(tmp_path: Path) -> None:
    items = make_items(tmp_path / "items", 2)
    with pytest.raises(BadInputError, match="batch_size"):
        run_dataset(items, features, tmp_path / "out", load=load_npy, batch_size=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="is a file"):
        run_dataset(items, features, tmp_path / "file", load=load_npy)


# ---------------------------------------------------------------- kill -9 and resume

# The job the tests run in a child process and kill. The parent imports the same file to
# finish the run in-process with the very same fn and loader.
JOB_SOURCE = """
import json, os, signal, sys, time
from pathlib import Path

import numpy as np
import torch

from convlens.data import runner
from convlens.data.folders import LabelledItem
from convlens.errors import ImageReadError

SHARD_SIZE = 8


def load(path):
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False))
    except (OSError, ValueError):
        raise ImageReadError(str(path), "not a .npy array") from None


def run(cfg):
    def fn(x, items):
        # one line per computed batch: pid and the item indices
        with open(cfg["log"], "a") as log:
            log.write(f"{os.getpid()} " + " ".join(str(int(it.path.stem)) for it in items) + "\\n")
        time.sleep(cfg["sleep"])
        return {"mean": x.mean(dim=(1, 2, 3)), "flat": x.flatten(1) * 2, "label": torch.tensor([it.label for it in items])}

    items = [LabelledItem(p, int(p.stem) % 3) for p in sorted(Path(cfg["items"]).glob("*.npy"))]
    return runner.run_dataset(items, fn, cfg["out"], load=load, batch_size=3, shard_size=SHARD_SIZE, config={"job": "kill-test"}, workers=cfg.get("workers", 1), num_workers=cfg.get("num_workers", 0))


def kill_at(point, nth, out, truncate):
    seen = [0]

    def hook(name):
        if name == point:
            seen[0] += 1
            if seen[0] == nth:
                if truncate:  # make it a half-written file, as if killed inside the write
                    for tmp in Path(out).glob("*.tmp"):
                        with open(tmp, "r+b") as handle:
                            handle.truncate(tmp.stat().st_size // 2)
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


def main(arg):
    cfg = json.loads(arg)
    if cfg.get("fault"):
        runner._fault_point = kill_at(cfg["fault"], cfg["nth"], cfg["out"], cfg.get("truncate", False))
    print("ready", flush=True)
    report = run(cfg)
    print(json.dumps(report.computed_shards), flush=True)
"""

N_ITEMS, BAD, SHARD = 44, (10, 37), 8
N_SHARDS = -(-N_ITEMS // SHARD)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    folder = tmp_path_factory.mktemp("job")
    (folder / "killjob.py").write_text(JOB_SOURCE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("convlens_test_killjob", folder / "killjob.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.FOLDER = folder  # type: ignore[attr-defined]
    return module


@pytest.fixture(scope="module")
def reference(
    job: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, np.ndarray]]:
    """The item folder and the outputs of an uninterrupted run."""
    root = tmp_path_factory.mktemp("kill-data")
    make_items(root / "items", N_ITEMS, bad=BAD)
    cfg = {
        "items": str(root / "items"),
        "out": str(root / "ref"),
        "log": str(root / "ref.log"),
        "sleep": 0.0,
    }
    report = job.run(cfg)
    assert report.failed == [
        (str(root / "items" / f"{i:03d}.npy"), "not a .npy array") for i in BAD
    ]
    return root / "items", read_outputs(root / "ref")


@pytest.fixture(scope="module")
def reference_dir(reference: tuple[Path, dict[str, np.ndarray]]) -> Path:
    """The folder an uninterrupted run left."""
    return reference[0].parent / "ref"


def child(job: ModuleType, cfg: dict[str, Any]) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    script = f"import sys; sys.path.insert(0, {str(job.FOLDER)!r}); import killjob; killjob.main(sys.argv[1])"
    return subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(cfg)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def log_lines(log: Path) -> list[list[int]]:
    if not log.exists():
        return []
    return [[int(w) for w in line.split()] for line in log.read_text().splitlines()]


def items_of(shards: set[int]) -> set[int]:
    return {i for k in shards for i in range(k * SHARD, min((k + 1) * SHARD, N_ITEMS))}


def assert_partial_outputs_are_right(out: Path, ref: dict[str, np.ndarray]) -> None:
    """After a kill, whatever the manifest lists is verified and equals the reference rows."""
    if not (out / "manifest.json").exists():
        return
    done = items_of(listed(out))
    partial = read_outputs(out)  # checks every listed shard's sha256
    keep = np.isin(ref["index"], sorted(done))
    np.testing.assert_array_equal(partial["index"], ref["index"][keep])
    if keep.any():
        assert_identical(partial, {key: value[keep] for key, value in ref.items()})


def folder_state(folder: Path) -> tuple[list[str], dict[str, bytes], dict[str, Any]]:
    """Every file and folder name under ``folder`` (hidden ones too), the shard files'
    bytes, and the manifest without the fields that name the computing process."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    shards = {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*"))}
    data = json.loads((folder / "manifest.json").read_text())
    for entry in data["shards"]:
        entry.pop("worker")
    return names, shards, data


def resume_and_check(
    job: ModuleType,
    cfg: dict[str, Any],
    ref: dict[str, np.ndarray],
    before: set[int],
    ref_dir: Path,
) -> None:
    """Finish in-process; nothing listed before is recomputed; the result is exact, and the
    folder holds exactly what an uninterrupted run leaves: the same files (no stray
    temporary or unlisted file), byte-identical shards and the same manifest."""
    out, log = Path(cfg["out"]), Path(cfg["log"])
    n_lines = len(log_lines(log))
    report = job.run({**cfg, "sleep": 0.0})
    recomputed = {i for line in log_lines(log)[n_lines:] for i in line[1:]}
    assert not recomputed & items_of(before), "a shard listed before the kill was recomputed"
    assert recomputed == items_of(set(range(N_SHARDS)) - before) - set(BAD)
    assert sorted(report.computed_shards) == sorted(
        set(range(N_SHARDS)) - before
    )  # workers: in finishing order
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    assert sorted(p.name for p in out.glob("shard-*")) == [
        f"shard-{k:05d}.npz" for k in range(N_SHARDS)
    ]
    assert_identical(read_outputs(out), ref)
    assert report.failed == [
        (str(Path(cfg["items"]) / f"{i:03d}.npy"), "not a .npy array") for i in BAD
    ]
    names, shards, data = folder_state(out)
    ref_names, ref_shards, ref_data = folder_state(ref_dir)
    assert names == ref_names
    assert shards.keys() == ref_shards.keys() and all(shards[k] == ref_shards[k] for k in shards), (
        "shard bytes differ"
    )
    assert data == ref_data


@pytest.mark.parametrize(
    ("point", "nth", "truncate", "expected_listed", "leftover"),
    [
        # (a) just after the first shard is listed (manifest write 1 is the empty start manifest)
        ("manifest-written", 2, False, {0}, None),
        # (b) mid-write: shard 1's temporary file is half written
        ("shard-written-tmp", 2, True, {0}, "shard-00001.npz.tmp"),
        # shard 2 renamed into place but not yet listed: it must be recomputed, not trusted
        ("shard-replaced", 3, False, {0, 1}, "shard-00002.npz"),
        # the manifest that would list shard 1 is written but not yet renamed
        ("manifest-written-tmp", 3, False, {0}, "manifest.json.tmp"),
    ],
)
def test_kill_at_fault_point_then_resume(
    job: ModuleType, reference: tuple[Path, dict[str, np.ndarray]], reference_dir: Path, tmp_path: Path,
    point: str, nth: int, truncate: bool, expected_listed: set[int], leftover: str | None,
) -> None:  # fmt: skip
    items, ref = reference
    cfg = {
        "items": str(items),
        "out": str(tmp_path / "out"),
        "log": str(tmp_path / "calls.log"),
        "sleep": 0.01,
    }
    proc = child(job, {**cfg, "fault": point, "nth": nth, "truncate": truncate})
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, stderr
    before = listed(tmp_path / "out")
    assert before == expected_listed
    if leftover is not None:
        assert (tmp_path / "out" / leftover).exists()
    assert_partial_outputs_are_right(tmp_path / "out", ref)
    resume_and_check(job, cfg, ref, before, reference_dir)


def test_kill_at_random_moments_then_resume(
    job: ModuleType,
    reference: tuple[Path, dict[str, np.ndarray]],
    reference_dir: Path,
    tmp_path: Path,
) -> None:
    items, ref = reference
    out, log = tmp_path / "out", tmp_path / "calls.log"
    cfg = {"items": str(items), "out": str(out), "log": str(log), "sleep": 0.03}
    rng = random.Random(int(os.environ.get("CONVLENS_KILL_SEED", "20240601")))
    for _ in range(int(os.environ.get("CONVLENS_KILL_CYCLES", "3"))):
        before = listed(out)
        proc = child(job, cfg)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))  # a run takes about 0.6 s
        proc.kill()
        proc.communicate(timeout=60)
        ran = {i for line in log_lines(log) if line[0] == proc.pid for i in line[1:]}
        assert not ran & items_of(before), "a shard listed before the kill was recomputed"
        assert before <= listed(out)
        assert_partial_outputs_are_right(out, ref)
    resume_and_check(job, cfg, ref, listed(out), reference_dir)


def wait_until_quiet(log: Path, quiet: float = 0.5, timeout: float = 30) -> None:
    """Wait until nothing has been appended to ``log`` for ``quiet`` seconds: the killed
    run's orphaned worker processes have finished the batch they were in."""
    deadline, size, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = log.stat().st_size if log.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def test_kill_with_worker_processes_then_resume(
    job: ModuleType,
    reference: tuple[Path, dict[str, np.ndarray]],
    reference_dir: Path,
    tmp_path: Path,
) -> None:
    # shards computed by two forked workers, written and listed by the parent, which is
    # killed right after it lists the first finished shard; the resume uses workers too
    items, ref = reference
    out, log = tmp_path / "out", tmp_path / "calls.log"
    cfg = {"items": str(items), "out": str(out), "log": str(log), "sleep": 0.01, "workers": 2}
    proc = child(job, {**cfg, "fault": "manifest-written", "nth": 2})
    try:  # the workers hold the run's output pipes: EOF comes once they too are gone
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the killed run's worker processes outlived it (waiting on their task queue)")
    assert proc.returncode == -signal.SIGKILL, stderr
    wait_until_quiet(log)
    before = listed(out)
    assert len(before) == 1 and {line[0] for line in log_lines(log)} != {
        proc.pid
    }  # computed by workers
    assert_partial_outputs_are_right(out, ref)
    resume_and_check(job, cfg, ref, before, reference_dir)


def test_kill_with_decode_workers_then_resume(
    job: ModuleType,
    reference: tuple[Path, dict[str, np.ndarray]],
    reference_dir: Path,
    tmp_path: Path,
) -> None:
    # two decode workers feed fn in this process through the bounded queue; the run is
    # killed right after it lists its first shard, and the resume decodes in workers too
    items, ref = reference
    out, log = tmp_path / "out", tmp_path / "calls.log"
    cfg = {"items": str(items), "out": str(out), "log": str(log), "sleep": 0.01, "num_workers": 2}
    proc = child(job, {**cfg, "fault": "manifest-written", "nth": 2})
    try:  # the decoders hold the run's output pipes: EOF comes once they too are gone
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the killed run's decode workers outlived it")
    assert proc.returncode == -signal.SIGKILL, stderr
    before = listed(out)
    assert before == {0}
    assert {line[0] for line in log_lines(log)} == {proc.pid}  # fn ran in the killed process
    assert_partial_outputs_are_right(out, ref)
    resume_and_check(job, cfg, ref, before, reference_dir)


def test_a_second_concurrent_run_is_refused_and_kill_releases_the_lock(
    job: ModuleType,
    reference: tuple[Path, dict[str, np.ndarray]],
    reference_dir: Path,
    tmp_path: Path,
) -> None:
    items, ref = reference
    log = tmp_path / "calls.log"
    cfg = {"items": str(items), "out": str(tmp_path / "out"), "log": str(log), "sleep": 0.5}
    proc = child(job, cfg)
    try:
        deadline = time.monotonic() + 30
        while not log.exists() and time.monotonic() < deadline:  # the child holds the lock now
            time.sleep(0.02)
        with pytest.raises(BadInputError, match="another running run_dataset"):
            job.run(cfg)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    resume_and_check(job, cfg, ref, listed(tmp_path / "out"), reference_dir)


def test_fault_hook_is_unset_by_default() -> None:
    assert runner_module._fault_point is None
