"""``convlens gram``, ``convlens style`` and ``convlens texture`` on the built-in model at tiny
sizes: files written, JSON valid against the schemas, the saved matrices equal the library's,
bad input exits 2 with one line and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

import convlens
from convlens.cli import cmd_gram, cmd_style, cmd_texture
from convlens.cli.main import main
from convlens.style.losses import layer_statistics
from convlens.style.transfer import load_style_image


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


def test_gram_writes_the_library_matrices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lite0: convlens.Model
) -> None:
    out = tmp_path / "g.png"
    assert (
        main(
            [
                "gram",
                "sample:brick",
                "--layer",
                "blocks.1.expand_act",
                "--size",
                "64",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_gram.SCHEMA)
    saved = np.load(tmp_path / "g.npz")
    expected = layer_statistics(lite0, load_style_image("sample:brick", 64), "blocks.1.expand_act")
    np.testing.assert_allclose(saved["tensor/gram"], expected["gram"].numpy(), rtol=1e-5, atol=1e-7)
    assert payload["channels"] == 96 and out.exists()


def test_style_with_two_weighted_styles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.png"
    args = [
        "style",
        "sample:cat",
        "sample:brick",
        "sample:grass",
        "--style-weights",
        "0.7,0.3",
        "--size",
        "64",
        "--steps",
        "3",
        "-o",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_style.SCHEMA)
    with Image.open(out) as written:
        assert written.size == (64, 43)  # the cat photo is 451 x 300: longer side 64
    assert payload["style_weights"] == [0.7, 0.3]
    assert (tmp_path / "s_figure.png").exists() and json.loads((tmp_path / "s.json").read_text())[
        "provenance"
    ]["method"] == "style_transfer"


def test_texture_is_the_size_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.png"
    assert (
        main(
            [
                "texture",
                "sample:gravel",
                "--size",
                "80",
                "--sample-size",
                "48",
                "--steps",
                "2",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_texture.SCHEMA)
    with Image.open(out) as written:
        assert written.size == (80, 80)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["style", "sample:cat", "missing.png"], "missing.png"),
        (["style", "sample:cat", "sample:brick", "--style-weights", "1,2"], "--style-weights"),
        (["style", "sample:cat", "sample:brick", "--style-weights", "a,b"], "--style-weights"),
        (["style", "sample:cat", "sample:brick", "--style-layers", "blocks.99"], "blocks.99"),
        (["style", "sample:cat", "sample:brick", "--steps", "0"], "--steps"),
        (["gram", "sample:cat", "--layer", "nope"], "nope"),
        (["texture", "sample:gravel", "--size", "4"], "--size"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    out = tmp_path / "out.png"
    assert main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())
