"""Decode workers (issue 20 part 2): images decoded in other processes ahead of the model.

- the outputs are the same bytes with and without decode workers (the in-process path is
  the reference: the same runner with ``num_workers=0``), for the runner, ``features`` and
  ``top-patches``;
- the queue between the decoders and the model is bounded: a counting decode stub never gets
  more than ``num_workers * prefetch`` batches ahead of the batches the model has taken, and
  it does run ahead (the decoding overlaps the model);
- the default and bad values of ``decode_workers``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.data.folders import LabelledItem
from convlens.data.images import load_image
from convlens.data.runner import default_decode_workers, read_outputs, run_dataset
from convlens.errors import BadInputError
from convlens.represent import extract_features, load_features, top_patches

from helpers.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def _jpegs(folder: Path, n: int, bad: tuple[int, ...] = ()) -> list[Path]:
    """Photos of several sizes (so every one is resized) and some unreadable files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.jpg"
        if i in bad:
            path.write_bytes(b"not a jpeg")
        else:
            h, w = int(rng.integers(18, 40)), int(rng.integers(18, 40))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _load16(path: Path) -> torch.Tensor:
    """Module level, so decode workers can use it whatever the start method."""
    image = load_image(path)
    return torch.nn.functional.interpolate(
        image[None], size=(16, 16), mode="bilinear", antialias=True, align_corners=False
    )[0]


def _conv_codes(x: torch.Tensor, items: list[LabelledItem]) -> dict[str, torch.Tensor]:
    weight = torch.linspace(-1, 1, 4 * 3 * 3 * 3).reshape(4, 3, 3, 3)
    y = torch.nn.functional.conv2d(x, weight).relu()
    return {"code": y.mean(dim=(2, 3)), "peak": y.flatten(1).argmax(dim=1)}


def _folder_bytes(out: Path) -> tuple[dict[str, bytes], list[dict]]:
    """The shard files' bytes and the manifest's shard entries without the computing process."""
    shards = {p.name: p.read_bytes() for p in sorted(out.glob("shard-*"))}
    entries = json.loads((out / "manifest.json").read_text())["shards"]
    for entry in entries:
        entry.pop("worker")
    return shards, entries


@pytest.mark.parametrize("shard_format", ["npz", "parquet"])
def test_runner_shards_are_the_same_bytes_with_decode_workers(
    tmp_path: Path, shard_format: str
) -> None:
    paths = _jpegs(tmp_path / "images", 23, bad=(4, 17))
    runs = {}
    for workers in (0, 1, 2):
        out = tmp_path / f"out{workers}"
        report = run_dataset(
            paths, _conv_codes, out, load=_load16, batch_size=3, shard_size=7,
            num_workers=workers, shard_format=shard_format,
        )  # fmt: skip
        assert report.n_done == 21 and [Path(p).name for p, _ in report.failed] == [
            "004.jpg",
            "017.jpg",
        ]
        runs[workers] = _folder_bytes(out)
    assert len(runs[0][0]) == 4  # 23 items in shards of 7
    assert runs[1] == runs[0]
    assert runs[2] == runs[0]


def test_features_and_top_patches_are_the_same_with_and_without_decode_workers(
    tmp_path: Path,
) -> None:
    model = tiny_model("conv")
    paths = _jpegs(tmp_path / "images", 19, bad=(6,))
    folders = {}
    for workers in (0, 2):
        out = tmp_path / f"features{workers}"
        extract_features(
            model, paths, "relu2", out, batch_size=4, shard_size=8, decode_workers=workers
        )
        folders[workers] = _folder_bytes(out)
        provenance = json.loads((out / "features.json").read_text())
        assert provenance["params"]["decode_workers"] == workers
    assert folders[2] == folders[0]
    np.testing.assert_array_equal(
        load_features(tmp_path / "features2").codes, load_features(tmp_path / "features0").codes
    )
    results = [
        top_patches(
            model,
            paths,
            "relu2",
            [0, 3],
            k=3,
            batch_size=4,
            decode_workers=workers,
            patch_size=None,
        )
        for workers in (0, 1)
    ]
    for key, value in results[0].tensors.items():
        torch.testing.assert_close(results[1].tensors[key], value, rtol=0, atol=0, msg=key)
    assert results[1].provenance["params"]["decode_workers"] == 1


# ---------------------------------------------------------------- the bounded queue

# The decode stub appends one fixed-size record per item it decodes, from whichever process
# runs it; the model side reads how many records there are each time it gets a batch.
_RECORD = 8
_COUNTER: dict[str, str] = {}


def _counting_load(path: Path) -> torch.Tensor:
    fd = os.open(_COUNTER["file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{int(path.stem):07d}\n".encode())
    finally:
        os.close(fd)
    return torch.full((1, 2, 2), float(path.stem))


def _decoded() -> int:
    return os.path.getsize(_COUNTER["file"]) // _RECORD if os.path.exists(_COUNTER["file"]) else 0


@pytest.mark.parametrize(("num_workers", "prefetch", "batch_size"), [(2, 2, 3), (1, 3, 2)])
def test_decoders_never_run_more_than_the_bounded_queue_ahead(
    tmp_path: Path, num_workers: int, prefetch: int, batch_size: int
) -> None:
    _COUNTER["file"] = str(tmp_path / "decoded.log")
    n = 60
    paths = [tmp_path / f"{i:03d}.item" for i in range(n)]  # never opened: the stub decodes
    ahead: list[int] = []
    given = [0]

    def slow_model(x: torch.Tensor, items: list[LabelledItem]) -> dict[str, torch.Tensor]:
        given[0] += len(items)
        ahead.append(_decoded() - given[0])
        time.sleep(0.03)  # the model is the slow side: unbounded decoders would race ahead
        return {"value": x.flatten(1)[:, 0]}

    out = tmp_path / "out"
    run_dataset(
        paths, slow_model, out, load=_counting_load, batch_size=batch_size, shard_size=25,
        num_workers=num_workers, prefetch=prefetch,
    )  # fmt: skip
    np.testing.assert_array_equal(read_outputs(out)["value"], np.arange(n, dtype=np.float32))
    bound = num_workers * prefetch * batch_size
    assert max(ahead) <= bound, (max(ahead), bound)
    # and the decoders do work ahead of the model (the point of them): most of the time at
    # least one whole batch is waiting
    assert sorted(ahead)[len(ahead) // 2] >= batch_size, ahead
    assert _decoded() == n  # each item decoded once


def test_default_and_bad_decode_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import convlens.data.runner as runner

    # a decoder only when the model's torch threads leave a CPU for it
    monkeypatch.setattr(runner, "usable_cpus", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert default_decode_workers("local", 1, None) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert default_decode_workers("local", 1, None) == 0
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert default_decode_workers("local", 2, None) == 0  # forked shard processes decode
    assert default_decode_workers("ray", 1, None) == 0
    assert default_decode_workers("local", 1, 3) == 3
    for bad in (-1, 1.5, True):
        with pytest.raises(BadInputError, match="decode_workers"):
            default_decode_workers("local", 1, bad)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="prefetch"):
        run_dataset([tmp_path / "a.png"], _conv_codes, tmp_path / "out", prefetch=0)
    assert not (tmp_path / "out").exists()  # refused before anything was written
