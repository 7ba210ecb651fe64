"""``convlens features``: codes equal the library's, the JSON schema, bad files reported
(exit 2, outputs kept), bad input refused with one line and nothing written, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

import convlens
from convlens.cli import cmd_features
from convlens.cli.main import main
from convlens.represent import extract_features, load_features


def _digit(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    image = np.zeros((8, 8), dtype=np.uint8)  # digits_cnn's input size
    image[1:7, 2 + seed % 4 : 4 + seed % 4] = rng.integers(150, 255, (6, 2), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture
def digits(tmp_path: Path) -> Path:
    root = tmp_path / "digits"
    for label in (1, 7):
        for i in range(3):
            _digit(root / str(label) / f"{i}.png", 10 * label + i)
    return root


def test_codes_equal_the_library_and_json_validates(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "feat"
    code = main(
        [
            "features",
            str(digits),
            "--model",
            "digits_cnn",
            "--layer",
            "act2",
            "--shard-size",
            "4",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_features.SCHEMA)
    assert (
        payload["items"] == payload["done"] == 6
        and payload["failed"] == []
        and payload["errors"] == []
    )
    assert payload["shape"] == [32, 8, 8] and payload["dim"] == 32 and payload["pooled"] is True
    assert payload["shards"] == ["shard-00000.parquet", "shard-00001.parquet"] and payload[
        "computed_shards"
    ] == [0, 1]
    features = load_features(out)
    extract_features(
        convlens.load_model("digits_cnn"), digits, "act2", tmp_path / "lib", shard_size=4
    )
    library = load_features(tmp_path / "lib")
    assert features.paths == library.paths and features.labels.tolist() == [1, 1, 1, 7, 7, 7]
    np.testing.assert_allclose(features.codes, library.codes, rtol=1e-6, atol=1e-7)
    # the same command again resumes: nothing recomputed
    assert (
        main(
            [
                "features",
                str(digits),
                "--model",
                "digits_cnn",
                "--layer",
                "act2",
                "--shard-size",
                "4",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["computed_shards"] == []


def test_full_maps_and_bad_files_exit_2_with_outputs_kept(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (digits / "7" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "full"
    code = main(
        [
            "features",
            str(digits),
            "--model",
            "digits_cnn",
            "--layer",
            "pool",
            "--full",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert code == 2
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert payload["done"] == 6 and [Path(f["path"]).name for f in payload["failed"]] == [
        "broken.png"
    ]
    assert payload["dim"] == 32 * 4 * 4 and len(payload["errors"]) == 1
    assert "broken.png" in captured.err and "Traceback" not in captured.err
    assert load_features(out).codes.shape == (6, 512)


def test_decode_workers_give_the_same_shards(
    digits: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    import convlens.data.runner as runner

    monkeypatch.setattr(runner, "usable_cpus", lambda: torch.get_num_threads() + 1)
    shards = {}
    for n in ("0", "2", None):
        out = tmp_path / f"feat{n}"
        extra = [] if n is None else ["--decode-workers", n]
        args = ["features", str(digits), "--model", "digits_cnn", "--layer", "act2"]
        assert main([*args, "--shard-size", "4", "-o", str(out), "--json", *extra]) == 0
        payload = json.loads(capsys.readouterr().out)
        jsonschema.validate(payload, cmd_features.SCHEMA)
        # default: one, as a CPU is left free below (the rule: test_decode_workers.py)
        assert payload["decode_workers"] == (1 if n is None else int(n))
        shards[n] = {p.name: p.read_bytes() for p in sorted(out.glob("shard-*"))}
    assert len(shards["0"]) == 2 and shards["2"] == shards["0"] and shards[None] == shards["0"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--layer", "no.such"], "no.such"),
        (["--layer", "act2", "--workers", "0"], "--workers 0"),
        (["--layer", "act2", "--batch-size", "0"], "--batch-size 0"),
        (["--layer", "act2", "--decode-workers", "-1"], "--decode-workers -1"),
        (["--layer", "act2", "--engine", "spark"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    out = tmp_path / "out"
    try:
        code = main(["features", str(digits), "--model", "digits_cnn", "-o", str(out), *extra])
    except SystemExit as exit_:  # argparse's own usage errors exit directly
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and not out.exists()


def test_missing_folder_and_ray_without_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        main(["features", str(tmp_path / "nope"), "--model", "digits_cnn", "--layer", "act2"]) == 2
    )
    assert "no such folder" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)
    (tmp_path / "d").mkdir()
    _digit(tmp_path / "d" / "a.png", 0)
    assert (
        main(
            [
                "features",
                str(tmp_path / "d"),
                "--model",
                "digits_cnn",
                "--layer",
                "act2",
                "--engine",
                "ray",
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        err == "convlens: error: --engine ray needs Ray: pip install 'convlens[ray]'"
        and not (tmp_path / "o").exists()
    )


def test_another_layer_into_the_same_folder_is_refused(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(["features", str(digits), "--model", "digits_cnn", "--layer", "act2", "-o", str(out)])
        == 0
    )
    assert (
        main(["features", str(digits), "--model", "digits_cnn", "--layer", "act1", "-o", str(out)])
        == 2
    )
    assert "overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "features",
                str(digits),
                "--model",
                "digits_cnn",
                "--layer",
                "act1",
                "-o",
                str(out),
                "--overwrite",
            ]
        )
        == 0
    )
    assert load_features(out).layer == "act1"


def test_no_predictions_then_embed_by_prediction_is_refused_and_neighbors_say_minus_one(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from convlens.cli import cmd_neighbors

    out = tmp_path / "feat"
    args = ["features", str(digits), "--model", "digits_cnn", "--layer", "act1", "-o", str(out)]
    assert main([*args, "--no-predictions", "--json"]) == 0
    capsys.readouterr()
    features = load_features(out)
    assert not features.has_predictions and (features.predictions == -1).all()
    page = tmp_path / "map.html"
    embed = ["embed", str(out), "--method", "pca", "-o", str(page)]
    assert main([*embed, "--color", "prediction"]) == 2
    err = capsys.readouterr().err
    assert "--no-predictions" in err and len(err.strip().splitlines()) == 1
    assert not page.exists()  # refused before anything was written
    assert main([*embed, "--color", "label"]) == 0 and page.is_file()
    capsys.readouterr()
    query = sorted(digits.rglob("*.png"))[0]
    grid = tmp_path / "grid.png"
    command = ["neighbors", str(query), "--index", str(out), "--k", "2", "-o", str(grid)]
    assert main([*command, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_neighbors.SCHEMA)
    assert [n["prediction"] for n in payload["neighbors"]] == [-1, -1]
