"""CLI: `embed`, `neighbors` and `top-patches` on a folder of real scikit-learn digits."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest
from PIL import Image

from convlens.cli import cmd_embed, cmd_neighbors, cmd_top_patches
from convlens.cli.main import main


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory: pytest.TempPathFactory):
    """60 real 8x8 digits in class subfolders (labels = folder names)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    data = load_digits()
    for i in range(60):
        folder = root / "folder" / str(int(data.target[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((data.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"d{i:03d}.png")
    features = root / "features"
    assert (
        main(
            [
                "features",
                str(root / "folder"),
                "--model",
                "digits_cnn",
                "--layer",
                "act2",
                "-o",
                str(features),
                "-q",
            ]
        )
        == 0
    )
    return root / "folder", features


def _json(capsys, schema: dict) -> dict:
    """The command's stdout, validated against its generated --json schema."""
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, schema)
    return payload


def test_embed_writes_html_and_png(digits_folder, tmp_path, capsys) -> None:
    _, features = digits_folder
    out = tmp_path / "map.html"
    assert (
        main(
            [
                "embed",
                str(features),
                "--method",
                "pca",
                "--color",
                "prediction",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = _json(capsys, cmd_embed.SCHEMA)
    assert payload["points"] == 60 and payload["files"]["png"] == str(tmp_path / "map.png")
    page = out.read_text()
    data = json.loads(re.search(r'id="convlens-map-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["points"]) == 60 and all(
        p["thumb"].startswith("data:image/jpeg") for p in data["points"]
    )
    assert sorted({p["label"] for p in data["points"]}) == list(range(10))
    assert (tmp_path / "map.png").is_file()


def test_neighbors_finds_the_query_itself_first(digits_folder, tmp_path, capsys) -> None:
    folder, features = digits_folder
    query = sorted(folder.rglob("*.png"))[5]
    out = tmp_path / "grid.png"
    assert (
        main(
            [
                "neighbors",
                str(query),
                "--index",
                str(features),
                "--k",
                "4",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = _json(capsys, cmd_neighbors.SCHEMA)
    first = payload["neighbors"][0]
    # the query embedded here equals its code from `convlens features` (same model, layer, pooling)
    assert first["path"] == str(query) and first["distance"] < 1e-4
    assert payload["layer"] == "act2" and len(payload["neighbors"]) == 4 and out.is_file()
    assert [n["distance"] for n in payload["neighbors"]] == sorted(
        n["distance"] for n in payload["neighbors"]
    )
    assert (
        main(
            [
                "neighbors",
                str(query),
                "--index",
                str(features),
                "--k",
                "4",
                "--ann",
                "--metric",
                "cosine",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    ann = _json(capsys, cmd_neighbors.SCHEMA)
    assert (
        ann["ann"]
        and 0 <= ann["recall"]["recall"] <= 1
        and (features / "ann-cosine.faiss").is_file()
    )
    assert ann["neighbors"][0]["path"] == str(query)


def test_top_patches_cli(digits_folder, tmp_path, capsys) -> None:
    folder, _ = digits_folder
    out = tmp_path / "tp"
    assert (
        main(
            [
                "top-patches",
                str(folder),
                "--model",
                "digits_cnn",
                "--layer",
                "pool",
                "--channels",
                "0,3",
                "--k",
                "4",
                "--guided",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = _json(capsys, cmd_top_patches.SCHEMA)
    assert [c["channel"] for c in payload["channels"]] == [0, 3] and payload["done"] == 60
    values = [p["value"] for p in payload["channels"][0]["patches"]]
    assert values == sorted(values, reverse=True) and len(values) == 4
    assert payload["receptive_field"]["size"] == [6.0, 6.0]
    assert (out / "patches.png").is_file() and (out / "patches.npz").is_file()


def test_top_patches_cli_same_with_decode_workers(digits_folder, tmp_path, capsys) -> None:
    folder, _ = digits_folder
    payloads = []
    for n in ("0", "2"):
        argv = ["top-patches", str(folder), "--model", "digits_cnn", "--layer", "act2"]
        argv += ["--k", "3", "--decode-workers", n, "-o", str(tmp_path / n), "--json"]
        assert main(argv) == 0
        payloads.append(_json(capsys, cmd_top_patches.SCHEMA))
    assert payloads[1]["channels"] == payloads[0]["channels"]  # values, images, boxes
    saved = [np.load(tmp_path / n / "patches.npz") for n in ("0", "2")]
    np.testing.assert_array_equal(saved[1]["tensor/patches"], saved[0]["tensor/patches"])


@pytest.mark.parametrize(
    "argv",
    [
        ["embed", "{missing}", "--method", "pca"],
        ["embed", "{features}", "--method", "mds"],
        ["embed", "{features}", "-o", "{tmp}/map.txt"],
        ["neighbors", "{image}", "--index", "{missing}"],
        ["neighbors", "{image}", "--index", "{features}", "--k", "0"],
        ["neighbors", "{tmp}/nope.png", "--index", "{features}"],
        ["neighbors", "{image}", "--index", "{features}", "--model", "mnist_cnn"],
        ["top-patches", "{folder}", "--model", "digits_cnn", "--layer", "fc"],
        [
            "top-patches",
            "{folder}",
            "--model",
            "digits_cnn",
            "--layer",
            "act2",
            "--channels",
            "0,x",
        ],
        ["top-patches", "{folder}", "--model", "digits_cnn", "--layer", "act2", "--channels", "99"],
        ["top-patches", "{folder}", "--model", "digits_cnn", "--layer", "nolayer"],
        ["top-patches", "{missing}", "--model", "digits_cnn", "--layer", "act2"],
        [
            "top-patches",
            "{folder}",
            "--model",
            "digits_cnn",
            "--layer",
            "act2",
            "--decode-workers",
            "-1",
        ],
    ],
)
def test_bad_input_exit_2_one_line(digits_folder, tmp_path, capsys, argv) -> None:
    folder, features = digits_folder
    image = sorted(folder.rglob("*.png"))[0]
    values = {
        "missing": tmp_path / "missing",
        "features": features,
        "tmp": tmp_path,
        "image": image,
        "folder": folder,
    }
    args = [a.format(**{k: str(v) for k, v in values.items()}) for a in argv]
    if "-o" not in args and args[0] == "neighbors":
        args += ["-o", str(tmp_path / "o.png")]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse usage errors exit through SystemExit
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and err[0].startswith("convlens: error:")


def test_report_gains_neighbours_only_with_an_index(digits_folder, tmp_path, capsys) -> None:
    from convlens.models.zoo import load_model
    from convlens.render.report import build_report

    folder, features = digits_folder
    image = str(sorted(folder.rglob("*.png"))[7])
    model = load_model("digits_cnn")
    without = build_report(model, image, only=["predictions"])
    assert "neighbors" not in [s["name"] for s in without.summary()["sections"]]
    report = build_report(model, image, only=["predictions", "neighbors"], index=features)
    section = next(s for s in report.summary()["sections"] if s["name"] == "neighbors")["models"][
        "digits_cnn"
    ]
    assert section["available"] and section["nearest"] == image and section["distance"] < 1e-4
    assert not re.search(r"<(script|link|iframe)\b", report.html, flags=re.IGNORECASE)
    out = tmp_path / "r.html"
    assert (
        main(
            [
                "report",
                image,
                "--model",
                "digits_cnn",
                "--sections",
                "predictions,neighbors",
                "--index",
                str(features),
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    assert 'data-section="neighbors"' in out.read_text()
