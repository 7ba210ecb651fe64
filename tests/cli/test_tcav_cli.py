"""``convlens tcav`` on a user model whose answer is known (the colour net of test_tcav)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from convlens.cli import cmd_tcav
from convlens.cli.main import main

NET = """
import torch
from torch import nn

class ColourNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.feat = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[2.0, 0.0, -1.0], [-2.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))

    def forward(self, x):
        return self.head(self.feat(x).flatten(1))

def build():
    return ColourNet()
"""


def _folder(root: Path, name: str, n: int, seed: int, red: int = 0) -> Path:
    folder = root / name
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 150, (8, 8, 3))
        pixels[..., 0] += red
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[list[str], Path]:
    (tmp_path / "net.py").write_text(NET)
    images = _folder(tmp_path, "images", 6, 0)
    concept = _folder(tmp_path, "red", 10, 1, red=100)
    randoms = [str(_folder(tmp_path, f"random{i}", 10, 10 + i)) for i in range(10)]
    model = [
        "--model",
        f"{tmp_path / 'net.py'}:build",
        "--input-size",
        "8",
        "--mean",
        "0",
        "--std",
        "1",
    ]
    return [
        "tcav",
        *model,
        str(images),
        "--concept",
        str(concept),
        "--layer",
        "feat",
        "--random",
        *randoms,
    ], tmp_path


def test_tcav_reports_a_significant_concept_as_json(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    argv, tmp_path = setup
    picture = tmp_path / "t.png"
    assert main([*argv, "--target", "0", "--json", "-o", str(picture)]) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_tcav.SCHEMA)
    # class 0 = 2 red - blue: every image's score rises along the red concept
    assert payload["target"] == 0 and payload["scores"] == [1.0] * 10
    assert payload["significant"] and payload["p_value"] < 0.05
    assert payload["out"] == str(picture) and picture.stat().st_size > 1000
    assert main([*argv, "--target", "1", "--json", "-o", str(picture)]) == 0
    assert json.loads(capsys.readouterr().out)["scores"] == [0.0] * 10


def test_tcav_figure_draws_the_scores_and_the_null() -> None:
    from convlens.render.tcav import tcav_figure
    from convlens.represent.tcav import TCAVResult

    result = TCAVResult(
        "feat", scores=[0.9, 1.0, 0.8], random_scores=[0.4, 0.6, 0.5], p_value=0.001, alpha=0.05
    )
    ax = tcav_figure([("red", result)]).axes[0]
    bars = [round(p.get_height(), 6) for p in ax.patches]
    assert bars == [0.9, 0.5]  # the means of the concept's scores and of the null
    drawn = [sorted(c.get_offsets()[:, 1].tolist()) for c in ax.collections]
    assert drawn == [[0.8, 0.9, 1.0], [0.4, 0.5, 0.6]]  # every score, at its height
    assert any("significant" in t.get_text() for t in ax.texts)


def test_tcav_refuses_too_few_random_folders(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    argv, _ = setup  # the folder: nothing is written there
    cut = argv.index("--random")
    assert main([*argv[: cut + 3], "-o", str(_ / "t.png")]) == 2
    assert "at least 3" in capsys.readouterr().err
