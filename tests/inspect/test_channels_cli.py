"""``convlens channels`` on the digits model: the printed/JSON numbers are the library's on the
same images, the files are written, unlabelled folders use the model's own predictions, bad
input exits 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from PIL import Image

import convlens
from convlens.cli import cmd_channels
from convlens.cli.main import main
from convlens.inspect.channels import channel_importance, pruning_curve
from convlens.models.small import load_dataset


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


def _folder(
    root: Path, n: int = 40, labelled: bool = True
) -> tuple[Path, torch.Tensor, torch.Tensor]:
    pixels, labels = load_dataset("digits", "test")
    pixels, labels = pixels[:n], labels[:n]
    for i, (image, label) in enumerate(zip(pixels, labels)):
        folder = root / str(int(label)) if labelled else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().byte().numpy()).save(folder / f"{i:03d}.png")
    return root, pixels, labels


def _read_back(model: convlens.Model, root: Path) -> tuple[torch.Tensor, list[Path]]:
    paths = sorted(root.rglob("*.png"))
    return model.denormalize(model.prepare([str(p) for p in paths]).x), paths


def test_numbers_are_the_library_s(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, _ = _folder(tmp_path / "digits")
    out = tmp_path / "out"
    args = [
        "channels",
        str(root),
        "--model",
        "digits_cnn",
        "--layer",
        "act1",
        "--random",
        "3",
        "--steps",
        "4",
        "-o",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_channels.SCHEMA)
    assert payload["channels"] == 16 and payload["images"] == 40 and payload["labelled"]
    assert {p.name for p in out.iterdir()} >= {"channels.csv", "pruning.csv", "pruning.png"}

    model = convlens.load_model("digits_cnn")
    pixels, paths = _read_back(
        model, root
    )  # the order scan_labelled lists: class folders, then names
    labels = torch.tensor([int(p.parent.name) for p in paths])
    for method in ("ablation", "activation", "taylor"):
        lib = channel_importance(model, pixels, "act1", method=method, labels=labels)
        assert payload["rankings"][method]["order"] == lib["order"].tolist()
        torch.testing.assert_close(
            torch.tensor(payload["rankings"][method]["scores"]), lib["scores"], rtol=1e-5, atol=1e-6
        )
    orders = {
        m: torch.tensor(payload["rankings"][m]["order"]).flip(0)
        for m in ("ablation", "activation", "taylor")
    }
    curve = pruning_curve(
        model,
        pixels,
        labels,
        "act1",
        orders,
        counts=payload["curve"]["counts"],
        random_orders=3,
        seed=0,
    )
    for name, row in zip(curve.provenance["params"]["names"], curve["accuracy"]):
        torch.testing.assert_close(
            torch.tensor(payload["curve"]["accuracy"][name]), row, rtol=0, atol=1e-5
        )
    assert payload["curve"]["counts"][0] == 0 and payload["curve"]["counts"][-1] == 16
    assert payload["curve"]["accuracy"]["ablation"][-1] == pytest.approx(
        payload["curve"]["accuracy"]["random"][-1]
    )  # all removed: same net
    with Image.open(out / "pruning.png") as picture:
        assert picture.size[0] > 300


def test_unlabelled_folder_measures_agreement_with_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, _ = _folder(tmp_path / "flat", n=24, labelled=False)
    assert (
        main(
            [
                "channels",
                str(root),
                "--model",
                "digits_cnn",
                "--layer",
                "conv2",
                "--methods",
                "activation",
                "--steps",
                "2",
                "--json",
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert not payload["labelled"] and payload["accuracy"] == 1.0  # agreement with itself
    assert payload["curve"]["accuracy"]["activation"][0] == 1.0 and list(payload["rankings"]) == [
        "activation"
    ]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--layer", "act9"], "act9"),
        (["--layer", "act1", "--methods", "weights"], "--methods"),
        (["--layer", "act1", "--random", "0"], "--random"),
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path, extra: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, _ = _folder(tmp_path / "d", n=4)
    assert main(["channels", str(root), "--model", "digits_cnn", *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
