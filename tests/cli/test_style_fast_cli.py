"""``convlens style-train``, ``stylize`` and ``cue-conflict`` on tiny sizes: files written, JSON
valid, bad input exits 2 with one line and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from convlens.cli import cmd_cue_conflict, cmd_style_train, cmd_stylize
from convlens.cli.main import main


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


def _image(path: Path, h: int = 40, w: int = 52, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    photos = tmp_path / "photos"
    for k in range(2):
        _image(photos / f"p{k}.png", seed=k)
    net = tmp_path / "net.pt"
    args = [
        "style-train",
        "sample:brick",
        "--images",
        str(photos),
        "--steps",
        "2",
        "--size",
        "32",
        "--batch",
        "1",
        "-o",
        str(net),
        "--json",
    ]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_style_train.SCHEMA)
    assert (
        payload["images"] == 2
        and payload["steps"] == 2
        and payload["out"] == str(net)
        and net.is_file()
    )
    return net


def test_style_train_then_stylize(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = _train(tmp_path, capsys)
    a, b = (
        _image(tmp_path / "a.png", 37, 45, seed=3),
        _image(tmp_path / "sub" / "a.png", 30, 30, seed=4),
    )
    out = tmp_path / "styled"
    code = main(
        [
            "stylize",
            str(a),
            str(b),
            str(tmp_path / "missing.png"),
            "--net",
            str(net),
            "-o",
            str(out),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2  # one bad input; the good ones are still written
    payload = json.loads(captured.out)
    jsonschema.validate(payload, cmd_stylize.SCHEMA)
    assert len(payload["errors"]) == 1 and "missing.png" in payload["errors"][0]
    files = [Path(r["file"]) for r in payload["images"]]
    assert [f.name for f in files] == ["a.png", "a-2.png"]  # same stem twice: both kept
    for f, size in zip(files, [(45, 37), (30, 30)]):
        with Image.open(f) as im:
            assert im.size == size
    assert (
        main(["stylize", str(a), "--net", str(net), "--size", "64", "-o", str(tmp_path / "big")])
        == 0
    )
    with Image.open(tmp_path / "big" / "a.png") as im:
        assert max(im.size) == 64
    capsys.readouterr()
    nothing = tmp_path / "nothing"
    assert (
        main(
            [
                "stylize",
                str(tmp_path / "missing.png"),
                "--net",
                str(net),
                "-o",
                str(nothing),
                "--json",
            ]
        )
        == 2
    )
    assert json.loads(capsys.readouterr().out)["images"] == [] and not nothing.exists()


def test_cue_conflict_writes_what_shape_bias_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shapes, textures = tmp_path / "shapes", tmp_path / "textures"
    _image(shapes / "cat" / "x.png", seed=1)
    _image(shapes / "dog" / "y.png", seed=2)
    _image(textures / "elephant" / "t.png", seed=3)
    _image(textures / "cat" / "u.png", seed=4)
    out = tmp_path / "cc"
    assert (
        main(
            [
                "cue-conflict",
                str(shapes),
                str(textures),
                "--size",
                "32",
                "--steps",
                "1",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_cue_conflict.SCHEMA)
    assert payload["pairs"] == 3  # cat-elephant, dog-elephant, dog-cat (cat-cat skipped)
    assert sorted(Path(f).relative_to(out).as_posix() for f in payload["files"]) == [
        "cat/cat1-elephant1.png",
        "dog/dog1-cat1.png",
        "dog/dog1-elephant1.png",
    ]
    report = tmp_path / "sb"
    assert (
        main(
            [
                "robustness",
                "shape-bias",
                str(out),
                "--labels",
                payload["labels"],
                "-o",
                str(report),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert "shape_bias" in json.dumps(summary)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["style-train", "{missing}", "-o", "{out}/net.pt"], "missing.png"),
        (
            ["style-train", "sample:brick", "--images", "{missing}", "-o", "{out}/net.pt"],
            "--images",
        ),
        (["style-train", "sample:brick", "--steps", "0", "-o", "{out}/net.pt"], "steps"),
        (["style-train", "sample:brick", "-o", "{out}/net.png"], ".pt"),
        (["stylize", "{photo}", "--net", "{garbage}", "-o", "{out}"], "garbage.pt"),
        (["stylize", "{photo}", "--net", "{missing}", "-o", "{out}"], "missing.png"),
        (["cue-conflict", "{missing}", "{tmp}", "-o", "{out}"], "missing.png"),
        (["cue-conflict", "{tmp}/shapes", "{tmp}/shapes", "-o", "{out}"], "different categories"),
        (
            ["cue-conflict", "{tmp}/shapes", "{tmp}/shapes", "--pairs", "0", "-o", "{out}"],
            "--pairs",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    photo = _image(tmp_path / "shapes" / "cat" / "one.png")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 broken zip")
    out = tmp_path / "out"
    filled = [
        a.format(
            photo=photo, missing=tmp_path / "missing.png", garbage=garbage, out=out, tmp=tmp_path
        )
        for a in args
    ]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
