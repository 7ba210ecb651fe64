"""Acceptance of issue 8's features engine ("Beyond one machine" and the features proofs).

- ``engine="ray"`` on a local multi-process Ray cluster (2 CPUs, 2 actors) gives the same
  features as the local engine (float tolerance), and the manifest shows >= 2 distinct
  worker processes, none of them the driver.
- ``top_patches`` on Ray merges the workers' maxima into the same top-k as the local engine.
- Killing a Ray worker process (``SIGKILL`` to an actor's pid, read from the manifest)
  mid-run: the run still completes, with the same outputs.
- Peak RSS of a local features run grows < 100 MB from 1,000 to 20,000 generated images.
- The runner's resumability holds for ``features``: a run killed with ``SIGKILL`` at a
  random moment resumes without recomputing a listed shard, and ends with the same codes.

Data: the 20 labelled ImageNet JPEGs of the foolbox wheel with the built-in model
(``efficientnet_lite0``, layer ``blocks.15``), and for the RSS check 16x16 generated PNGs
through a tiny CNN.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import convlens
from convlens.data.folders import LabelledItem
from convlens.data.samples import labelled_imagenet_files
from convlens.represent import extract_features, load_features

# Ray Data warns about its own deprecated settings while it builds its context; not ours.
pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.usefixtures("one_thread_per_module"),
]

ROOT = Path(__file__).resolve().parents[2]
LAYER = "blocks.15"
SHARD, BATCH = 2, 2  # 10 shards of the 20 photos: enough for two actors and a kill
RTOL, ATOL = 1e-4, 1e-5  # float32 on other processes / batch compositions


@pytest.fixture(scope="module")
def photos() -> list[LabelledItem]:
    files = labelled_imagenet_files()
    if not files:
        pytest.fail(
            "foolbox (test extra) is not installed: its 20 labelled ImageNet JPEGs are the data"
        )
    return [LabelledItem(path, label) for path, label in files]


@pytest.fixture(scope="module")
def model() -> convlens.Model:
    return convlens.load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def local(
    model: convlens.Model, photos: list[LabelledItem], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("local") / "features"
    extract_features(model, photos, LAYER, out, batch_size=BATCH, shard_size=SHARD)
    return out


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is in the test extra")
    os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=400 * 2**20,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def _manifest(out: Path) -> dict:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return {"shards": []}


def _pid(worker: str) -> int:
    return int(worker.rsplit(":", 1)[1])


def _assert_same(a: Path, b: Path) -> None:
    fa, fb = load_features(a), load_features(b)
    assert fa.paths == fb.paths and fa.labels.tolist() == fb.labels.tolist()
    np.testing.assert_array_equal(fa.predictions, fb.predictions)
    np.testing.assert_allclose(fa.codes, fb.codes, rtol=RTOL, atol=ATOL)


def test_ray_equals_local_on_two_worker_processes(
    ray_cluster, model, photos, local, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    report = extract_features(
        model, photos, LAYER, out, batch_size=BATCH, shard_size=SHARD, engine="ray", workers=2
    )
    assert (
        report.n_done == 20
        and report.failed == []
        and sorted(report.computed_shards) == list(range(10))
    )
    _assert_same(out, local)
    features = load_features(out)
    assert features.codes.shape == (20, 320) and features.provenance["params"]["engine"] == "ray"
    workers = {e["worker"] for e in _manifest(out)["shards"]}
    pids = {_pid(w) for w in workers}
    assert len(pids) >= 2 and os.getpid() not in pids, workers


def test_killing_a_ray_worker_mid_run_still_completes_with_the_same_outputs(
    ray_cluster, model, photos, local, tmp_path: Path
) -> None:
    out = tmp_path / "ray-kill"
    killed: dict[str, object] = {}

    def killer() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            shards = _manifest(out)["shards"]
            if shards:
                pid = _pid(shards[0]["worker"])
                killed.update(pid=pid, listed=len(shards))
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    report = extract_features(
        model, photos, LAYER, out, batch_size=BATCH, shard_size=SHARD, engine="ray", workers=2
    )
    thread.join(timeout=5)
    assert killed, "no shard was listed, so no worker was killed"
    assert killed["listed"] < 10, "the run had finished before the kill"
    assert report.n_done == 20 and len(report.shards) == 10
    _assert_same(out, local)
    pids = {_pid(e["worker"]) for e in _manifest(out)["shards"]}
    # shards after the kill came from a live process (the other actor or the restarted one)
    assert pids - {killed["pid"]}, pids


def test_top_patches_on_ray_equal_the_local_engine(
    ray_cluster, model, photos, tmp_path: Path
) -> None:
    """Per-image maxima computed by two Ray actors, merged into the same top-k as locally."""
    from convlens.represent import top_patches

    options = {
        "channels": [0, 7, 21],
        "k": 4,
        "batch_size": BATCH,
        "shard_size": SHARD,
        "patch_size": 32,
    }
    here = top_patches(model, photos, "blocks.4", work_dir=tmp_path / "local", **options)
    there = top_patches(
        model, photos, "blocks.4", work_dir=tmp_path / "ray", engine="ray", workers=2, **options
    )
    assert there.provenance["params"]["engine"] == "ray"
    assert torch.equal(here["items"], there["items"]) and torch.equal(
        here["positions"], there["positions"]
    )
    torch.testing.assert_close(here["values"], there["values"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(here["patches"], there["patches"])
    pids = {_pid(e["worker"]) for e in _manifest(tmp_path / "ray")["shards"]}
    assert len(pids) >= 2 and os.getpid() not in pids, pids


# ---------------------------------------------------------------- peak RSS, 1,000 -> 20,000 images

RSS_JOB = """
import sys
sys.path[:0] = [{tests!r}]
import torch
torch.set_num_threads(1)
from pathlib import Path
from convlens.data.folders import LabelledItem
from convlens.represent import extract_features
from helpers.tiny import tiny_model

paths = sorted(Path({images!r}).glob("*.png"))[: int(sys.argv[1])]
items = [LabelledItem(p, i % 5) for i, p in enumerate(paths)]
report = extract_features(tiny_model(), items, "relu2", sys.argv[2], pooled=False, batch_size=64, shard_size=256, decode_workers=1)
assert report.n_done == len(paths), report.failed[:3]
status = Path("/proc/self/status").read_text()
import resource  # the decode worker (a child, joined by now): its own peak, in kB on Linux
decoder = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))), decoder)
"""


def test_peak_rss_is_flat_from_1000_to_20000_images(tmp_path: Path) -> None:
    from PIL import Image

    if not Path("/proc/self/status").exists():
        pytest.skip("VmHWM needs Linux /proc")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    for i in range(20_000):
        Image.fromarray(pixels[i % 64] ^ np.uint8(i % 251)).save(
            images / f"{i:05d}.png", compress_level=0
        )
    script = RSS_JOB.format(tests=str(ROOT / "tests"), images=str(images))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    peaks, decoders = {}, {}
    for n in (1_000, 20_000):
        proc = subprocess.run(
            [sys.executable, "-c", script, str(n), str(tmp_path / f"out-{n}")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        model_kb, decoder_kb = proc.stdout.split()[-2:]
        peaks[n], decoders[n] = int(model_kb) / 1024, int(decoder_kb) / 1024  # MB
    print(f"peak RSS: {peaks[1_000]:.0f} MB at 1,000 images, {peaks[20_000]:.0f} MB at 20,000")
    print(f"decode worker: {decoders[1_000]:.0f} MB at 1,000 images, {decoders[20_000]:.0f} MB")
    assert peaks[20_000] - peaks[1_000] < 100, peaks
    # the decode worker ran (a child with the model's pages) and stayed flat too: the
    # queue to the model is bounded, so it cannot hold more than a few batches
    assert decoders[1_000] > 0 and decoders[20_000] - decoders[1_000] < 100, decoders
    # the 20,000 full maps (8x8x8 floats, 41 MB) are all on disk, so flat is not an empty run
    assert len(list((tmp_path / "out-20000").glob("shard-*.parquet"))) == -(-20_000 // 256)


# ---------------------------------------------------------------- kill -9 at a random moment, resume

KILL_JOB = """
import sys, json
import torch
torch.set_num_threads(1)
import convlens
from convlens.data.folders import LabelledItem
from convlens.represent import extract_features

items = [LabelledItem(p, label) for p, label in json.loads(sys.argv[1])]
print("ready", flush=True)
extract_features(convlens.load_model("efficientnet_lite0"), items, {layer!r}, sys.argv[2], batch_size={batch}, shard_size={shard})
"""


def test_features_resume_after_kill_at_a_random_moment(
    model, photos, local, tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    script = KILL_JOB.format(layer=LAYER, batch=BATCH, shard=SHARD)
    items = json.dumps([[str(it.path), it.label] for it in photos])
    rng = random.Random(8)
    listed_before: set[int] = set()
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-c", script, items, str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 120
        # wait until at least one more shard is listed, then a random extra moment
        while (
            time.monotonic() < deadline
            and len(_manifest(out)["shards"]) <= len(listed_before)
            and proc.poll() is None
        ):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.communicate(timeout=60)
        listed = {e["index"] for e in _manifest(out)["shards"]}
        assert listed_before <= listed
        listed_before = listed
    assert 0 < len(listed_before) < 10, listed_before
    report = extract_features(model, photos, LAYER, out, batch_size=BATCH, shard_size=SHARD)
    assert sorted(report.computed_shards) == sorted(set(range(10)) - listed_before)
    assert not list(out.glob("*.tmp"))
    _assert_same(out, local)
