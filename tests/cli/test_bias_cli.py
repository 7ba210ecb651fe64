"""``convlens bias make`` and ``convlens bias DIR --masks``: the command reads what the library computes.

- ``bias make`` writes the requested splits with their masks (counts as the generator's);
- ``bias DIR --masks --counter --json`` on a small seeded user model: every per-image share
  and prediction equals :func:`bias_check` run directly on the generator's images (read
  back through 8-bit PNGs) and masks, so images and masks are paired correctly;
- bad input (no --masks, a missing mask, ``make`` without a folder) exits 2 with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch

from convlens.cli import cmd_bias
from convlens.cli.main import main
from convlens.data.biased import make_biased

FACTORY = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
"""


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """One torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def biased_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("biased")
    assert main(["bias", "make", str(out), "--splits", "test,counter", "-q"]) == 0
    return out


def test_make_writes_splits_and_masks(biased_dir: Path) -> None:
    for split in ("test", "counter"):
        n = len(make_biased(split))
        assert len(list((biased_dir / split).rglob("*.png"))) == n
        assert len(list((biased_dir / "masks" / split).rglob("*.png"))) == n
    assert not (biased_dir / "train").exists()


def test_cli_numbers_equal_the_library(
    biased_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import convlens
    from convlens.metrics.bias import bias_check
    from convlens.models.spec import load_spec, parse_model_list

    factory = tmp_path / "net.py"
    factory.write_text(FACTORY)
    model_opts = [
        "--model",
        f"{factory}:make",
        "--input-size",
        "32",
        "--mean",
        "0.33",
        "--std",
        "0.3",
    ]
    code = main(["bias", str(biased_dir / "test"), "--masks", str(biased_dir / "masks" / "test"), "--counter", str(biased_dir / "counter"),
                 "--method", "saliency", "--json", "-o", str(tmp_path / "b.png"), *model_opts])  # fmt: skip
    assert code == 0
    got = json.loads(capsys.readouterr().out)
    jsonschema.validate(got, cmd_bias.SCHEMA)
    assert (tmp_path / "b.png").stat().st_size > 1000
    spec = parse_model_list(
        f"{factory}:make", {"input_size": "32", "mean": "0.33", "std": "0.3"}, None
    )[0]
    model = load_spec(spec)
    assert isinstance(model, convlens.Model)
    for split, key in (("test", "main"), ("counter", "counter")):
        d = make_biased(split)
        pixels = torch.round(d.pixels * 255) / 255  # what the 8-bit PNGs hold
        ref = bias_check(model, model.normalize(pixels), d.labels, d.masks, method="saliency")
        rows = {int(Path(r["source"]).stem): r for r in got[key]["per_image"]}
        assert len(rows) == len(d)
        for i, r in rows.items():
            assert r["label"] == int(d.labels[i]) and r["predicted"] == int(ref.main.predicted[i])
            assert r["outside_share"] == pytest.approx(float(ref.main.shares[i]), abs=1e-4)
        assert got[key]["accuracy"] == pytest.approx(ref.main.accuracy, abs=1e-6)
    assert got["counter_accuracy"] == got["counter"]["accuracy"]
    assert got["provenance"]["method"] == "saliency" and got["provenance"]["params"][
        "images"
    ] == len(make_biased("test"))


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bias", "make"], "give the output folder"),
        (["bias", "{d}/test"], "--masks MASKS/ is required"),
        (
            [
                "bias",
                "{d}/test",
                "--masks",
                "{d}/masks/counter",
                "--counter",
                "{d}/counter",
                "--counter-masks",
                "{d}/nowhere",
            ],
            "no such file",
        ),
    ],
)
def test_bad_input_exits_2(
    biased_dir: Path, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.replace("{d}", str(biased_dir)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_missing_mask_is_named(
    biased_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    masks = tmp_path / "masks"
    (masks / "0").mkdir(parents=True)  # no mask for any image
    factory = tmp_path / "net.py"
    factory.write_text(FACTORY)
    code = main(
        [
            "bias",
            str(biased_dir / "test"),
            "--masks",
            str(masks),
            "--model",
            f"{factory}:make",
            "--input-size",
            "32",
        ]
    )
    assert code == 2
    assert "no mask" in capsys.readouterr().err
