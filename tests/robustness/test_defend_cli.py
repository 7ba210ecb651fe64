"""``convlens robustness defend`` on the digits model: the table is the library's on the same
images read back from PNG, the files are written, bad input exits 2 with one line before any
model loads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jsonschema
import pytest
import torch
from PIL import Image

import convlens
from convlens.adversarial.defence_eval import evaluate_defences
from convlens.adversarial.defences import make_defence
from convlens.cli import robustness_defend
from convlens.cli.cmd_robustness import SCHEMAS
from convlens.cli.main import main
from convlens.models.small import load_dataset


def _folder(root: Path, n: int = 48) -> Path:
    pixels, labels = load_dataset("digits", "test")
    for i, (image, label) in enumerate(zip(pixels[:n], labels[:n])):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().byte().numpy()).save(folder / f"{i:03d}.png")
    return root


def test_table_is_the_library_s_on_the_same_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _folder(tmp_path / "digits")
    out = tmp_path / "out"
    args = [
        "robustness",
        "defend",
        str(root),
        "--model",
        "digits_cnn",
        "--defence",
        "jpeg,bits,noise,pgd-trained",
        "--eps",
        "0.2",
        "--steps",
        "5",
        "--eot",
        "2",
        "--bits",
        "2",
        "-o",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, robustness_defend.SCHEMA)
    assert (
        SCHEMAS["defend"] is robustness_defend.SCHEMA
        or SCHEMAS["defend"] == robustness_defend.SCHEMA
    )
    assert [r["name"] for r in payload["defences"]] == [
        "none",
        "jpeg75",
        "bits2",
        "noise0.2",
        "pgd-trained",
    ]
    assert payload["robust_model"] == "digits_cnn_pgd" and payload["images"] == 48
    assert {p.name for p in out.iterdir()} >= {
        "defences.png",
        "defences.csv",
        "defences.npz",
        "defences.json",
    }

    model = convlens.load_model("digits_cnn")
    paths = sorted(root.rglob("*.png"), key=lambda p: (int(p.parent.name), p.name))
    pixels = model.denormalize(model.prepare([str(p) for p in paths]).x)
    labels = torch.tensor([int(p.parent.name) for p in paths])
    defences = [make_defence("jpeg"), make_defence("bits", bits=2), make_defence("noise")]
    lib = evaluate_defences(
        model,
        pixels,
        labels,
        defences,
        robust_model=convlens.load_model("digits_cnn_pgd"),
        eps=0.2,
        steps=5,
        eot_samples=2,
    )
    for row, expected in zip(payload["defences"], lib["accuracy"]):
        got = [row[k] for k in ("clean", "transfer", "non_adaptive", "adaptive")]
        torch.testing.assert_close(
            torch.tensor(got, dtype=torch.float64), expected.double(), rtol=0, atol=1e-4
        )
    none = payload["defences"][0]
    for row in payload["defences"]:
        assert row["real_gain"] == pytest.approx(row["adaptive"] - none["adaptive"], abs=1e-3)
    with open(out / "defences.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == [r["name"] for r in payload["defences"]]
    assert float(table[1]["adaptive"]) == payload["defences"][1]["adaptive"]
    with Image.open(out / "defences.png") as picture:
        assert picture.size[0] > 400


def test_text_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path / "digits", n=20)
    assert (
        main(
            [
                "robustness",
                "defend",
                str(root),
                "--model",
                "digits_cnn",
                "--defence",
                "bits",
                "--steps",
                "3",
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "non-adaptive" in text and "gain lost" in text
    lines = [line for line in text.splitlines() if line.startswith(("none", "bits1"))]
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--defence", "blur"], "--defence"),
        (["--defence", "jpeg", "--quality", "0"], "quality"),
        (["--defence", "bits", "--bits", "9"], "bit depth"),
        (["--eps", "2"], "--eps"),
        (["--steps", "0"], "--steps"),
        (["--model", "digits_linear", "--defence", "pgd-trained"], "counterpart"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    root = _folder(tmp_path / "digits", n=4)
    args = ["robustness", "defend", str(root), "--model", "digits_cnn", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
