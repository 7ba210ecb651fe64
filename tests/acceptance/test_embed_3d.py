"""Issue 17 part 5, 3-D maps, as a user runs it: `convlens features` on real digits, then
`convlens embed --dims 3` in subprocesses; the page holds three coordinates per image that
keep the digit classes apart, and the 3-D PNG is written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

pytestmark = pytest.mark.acceptance


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("convlens")
    cmd = [exe] if exe else [sys.executable, "-m", "convlens.cli.main"]
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_features_then_a_rotatable_3d_map(tmp_path: Path) -> None:
    digits = load_digits()
    root = tmp_path / "digits"
    for cls in (0, 1, 6):  # three classes the digits model separates well
        (root / str(cls)).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(digits.target == cls)[:40]):
            Image.fromarray((digits.images[index] * 255 / 16).round().astype(np.uint8)).save(
                root / str(cls) / f"{i}.png"
            )
    done = _cli(
        "features",
        str(root),
        "--model",
        "digits_cnn",
        "--layer",
        "conv2",
        "-o",
        str(tmp_path / "codes"),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    page = tmp_path / "map3d.html"
    done = _cli(
        "embed",
        str(tmp_path / "codes"),
        "--method",
        "pca",
        "--dims",
        "3",
        "-o",
        str(page),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dims"] == 3 and page.with_suffix(".png").stat().st_size > 10_000
    text = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="convlens-map-data">(.*?)</script>', text, re.S).group(1))
    points = data["points"]
    assert data["dims"] == 3 and len(points) == 120
    xyz = np.array([[p["x"], p["y"], p["z"]] for p in points])
    labels = np.array([p["label"] for p in points])
    # 5 nearest neighbours in the 3-D map mostly share the digit (shuffled labels would not)
    d = ((xyz[:, None] - xyz[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :5]
    agree = (labels[nearest] == labels[:, None]).mean()
    shuffled = np.random.default_rng(0).permutation(labels)
    chance = (shuffled[nearest] == shuffled[:, None]).mean()
    assert agree >= 0.8 and agree > chance + 0.4, (agree, chance)  # measured 0.89 vs about 0.33
