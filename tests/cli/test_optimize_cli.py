"""``convlens dream`` and ``convlens fool`` on the small digits model: files written, JSON valid,
the fooling PNG predicted as the target by ``convlens predict``, bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from convlens.cli import cmd_dream, cmd_fool, cmd_predict
from convlens.cli.main import main


def _digit(path: Path, size: int = 8) -> Path:
    image = np.zeros((size, size), dtype=np.uint8)
    image[1:7, 3:5] = 200  # a stroke: a "1"
    Image.fromarray(image).resize((size, size)).save(path)
    return path


def test_dream_writes_the_image_at_the_photo_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "big.png"
    Image.fromarray((np.random.default_rng(0).random((40, 56)) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "dream.png"
    args = [
        "dream",
        str(photo),
        "--model",
        "digits_cnn",
        "--layer",
        "act2",
        "--octaves",
        "2",
        "--steps",
        "3",
        "-o",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_dream.SCHEMA)
    with Image.open(out) as written:
        assert payload["size"] == [40, 56] and written.size == (56, 40)
    assert all(a > b for a, b in zip(payload["objective_after"], payload["objective_before"]))


def test_fool_png_is_predicted_as_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = _digit(tmp_path / "one.png")
    out = tmp_path / "fool"
    assert (
        main(
            ["fool", str(photo), "--model", "digits_cnn", "--target", "7", "-o", str(out), "--json"]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_fool.SCHEMA)
    assert payload["success"] and payload["predicted"]["class"] == 7
    assert {p.name for p in out.iterdir()} >= {"fooled.png", "difference.png", "fool.png"}
    assert (
        main(
            [
                "predict",
                payload["files"]["fooled"],
                "--model",
                "digits_cnn",
                "--json",
                "--top-k",
                "1",
            ]
        )
        == 0
    )
    predicted = json.loads(capsys.readouterr().out)
    jsonschema.validate(predicted, cmd_predict.SCHEMA)
    assert predicted["predictions"][0]["top"][0]["class"] == 7


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["dream", "{photo}", "--layer", "nope"], "nope"),
        (["dream", "{photo}", "--layer", "act2", "--octaves", "0"], "octaves"),
        (["fool", "{photo}", "--target", "eleven"], "eleven"),
        (["fool", "{photo}", "--target", "3", "--probability", "2"], "--probability"),
        (["fool", "{missing}", "--target", "3"], "missing.png"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    photo = _digit(tmp_path / "one.png")
    out = tmp_path / "out"
    filled = [a.format(photo=photo, missing=tmp_path / "missing.png") for a in args]
    assert main([*filled, "--model", "digits_cnn", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
