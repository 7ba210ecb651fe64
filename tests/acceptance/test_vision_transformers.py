"""Issue 16 part 2 acceptance: the digits ViT convlens trains, its maps on the strokes, the CLI.

The digits ViT (2x2-pixel patches: a 4x4 grid plus a class token) is trained in this
session's cache (seconds to a minute with one thread) and must reach its stated held-out
accuracy. The maps are scored with the pointing game (Zhang et al. 2016, tolerance 0):
the map's maximum must fall on the digit's ink (held-out pixels > 0.5). A random map hits
in proportion to the ink (~29 % of the pixels).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import convlens
from convlens.metrics.localisation import pointing_game
from convlens.models.small import SPECS, load_dataset

pytestmark = pytest.mark.acceptance


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``convlens`` command, as a user runs it (one thread, this session's cache)."""
    exe = shutil.which("convlens")
    cmd = [exe] if exe else [sys.executable, "-m", "convlens.cli.main"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def vit() -> Any:
    return convlens.load_model("digits_vit")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return load_dataset("digits", "test")


def test_trains_to_its_accuracy_floor(vit: Any, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    accuracy = float((vit.logits(vit.normalize(x)).argmax(dim=1) == y).float().mean())
    print(
        f"\ndigits_vit held-out accuracy {accuracy:.4f} (floor {SPECS['digits_vit'].min_accuracy}); trained in {vit.info.get('training_seconds')} s"
    )
    assert accuracy >= SPECS["digits_vit"].min_accuracy
    assert vit.info["held_out_accuracy"] == pytest.approx(accuracy)


def test_maps_land_on_the_strokes(vit: Any, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    ink = x[:, 0] > 0.5
    batch = vit.prepare(x)
    random = np.mean(
        [
            float(
                pointing_game(
                    torch.rand(len(x), 8, 8, generator=torch.Generator().manual_seed(s)),
                    ink,
                    tolerance=0,
                )
                .float()
                .mean()
            )
            for s in range(10)
        ]
    )
    # the metric has teeth: the ink itself always hits, the background never does
    assert bool(pointing_game(x[:, 0], ink, tolerance=0).all()) and not bool(
        pointing_game(-x[:, 0], ink, tolerance=0).any()
    )
    scores = {}
    for method in ("attention_rollout", "gradcam", "attention_map", "saliency", "gradient_x_input"):
        result = convlens.explain(vit, batch, method, target=y)
        scores[method] = float(
            pointing_game(result.tensors["map"], ink, tolerance=0).float().mean()
        )
    print(
        f"\npointing game on {len(x)} held-out digits (random map {random:.3f}): "
        + ", ".join(f"{m} {s:.3f}" for m, s in scores.items())
    )
    # rollout and Grad-CAM on the last block's norm1 point at ink clearly more often than chance
    assert scores["attention_rollout"] >= random + 0.05
    assert scores["gradcam"] >= random + 0.05
    # gradient x input weighs the gradient by the pixel, so its maximum is on ink
    assert scores["gradient_x_input"] >= random + 0.05


def test_gradcam_ranks_patches_that_matter(
    vit: Any, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    # deleting (to the background value) the 4 patches Grad-CAM ranks highest lowers the class
    # logit more than deleting 4 random patches: the token-layer map is faithful, not decoration
    x, y = digits
    batch = vit.prepare(x)
    cam = convlens.explain(vit, batch, "gradcam", target=y).tensors["map"]
    per_patch = torch.nn.functional.avg_pool2d(cam[:, None], 2).flatten(1)  # (N, 16)
    g = torch.Generator().manual_seed(0)

    def drop(patches: torch.Tensor) -> float:
        mask = torch.ones(len(x), 16)
        mask.scatter_(1, patches, 0.0)
        pixels = x * torch.nn.functional.interpolate(
            mask.view(-1, 1, 4, 4), scale_factor=2, mode="nearest"
        )
        before = vit.logits(batch.x).gather(1, y[:, None])
        after = vit.logits(vit.normalize(pixels)).gather(1, y[:, None])
        return float((before - after).mean())

    top = drop(per_patch.topk(4, dim=1).indices)
    rand = np.mean(
        [
            drop(torch.stack([torch.randperm(16, generator=g)[:4] for _ in range(len(x))]))
            for _ in range(5)
        ]
    )
    print(
        f"\nlogit drop after deleting 4 of 16 patches: Grad-CAM's top 4 {top:.2f}, random 4 {rand:.2f}"
    )
    assert top > 1.2 * rand


def test_cli_explains_the_digits_vit_in_a_subprocess(
    tmp_path: Path, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    from PIL import Image

    x, _ = digits
    image = tmp_path / "digit.png"
    Image.fromarray((x[0, 0].numpy() * 255).round().astype(np.uint8)).save(image)
    for method, extra in (("attention_rollout", []), ("gradcam", ["--layer", "blocks.2.norm1"])):
        out = tmp_path / f"{method}.png"
        proc = _cli(
            "explain",
            str(image),
            "--model",
            "digits_vit",
            "--method",
            method,
            *extra,
            "--json",
            "-o",
            str(out),
        )
        assert proc.returncode == 0, proc.stderr
        payload = json.loads(proc.stdout)
        (result,) = payload["images"][0]["results"]
        assert result["model"] == "digits_vit" and result["method"] == method and out.is_file()
        assert result["map_max"] > result["map_min"] >= 0
    # a CNN has no attention layer: one line, exit 2, nothing written
    out = tmp_path / "cnn.png"
    proc = _cli(
        "explain",
        str(image),
        "--model",
        "digits_cnn",
        "--method",
        "attention_rollout",
        "-o",
        str(out),
    )
    assert (
        proc.returncode == 2
        and len(proc.stderr.strip().splitlines()) == 1
        and "no attention layer" in proc.stderr
    )
    assert not out.exists()
