"""``--target-region CLASS:MASK.png`` and ``--target-similar IMAGE`` in ``explain`` and ``gradients``:
maps equal to the library's with the same targets, masks at the image's size carried through
the preprocessing, and bad input refused with one line, exit 2 and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

import convlens
from convlens.cli import cmd_explain
from convlens.cli.main import main
from convlens.models.segmentation import make_shapes
from convlens.targets import region, similarity


def _png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One shapes image (32x32) with its square and disc masks, and a 2x larger copy of each."""
    folder = tmp_path_factory.mktemp("shapes")
    pixels, labels = make_shapes(1, seed=11)
    rgb = (pixels[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    square = ((labels[0] == 1).numpy() * 255).astype(np.uint8)
    files = {
        "image": _png(rgb, folder / "image.png"),
        "square": _png(square, folder / "square.png"),
        "disc": _png(((labels[0] == 2).numpy() * 255).astype(np.uint8), folder / "disc.png"),
    }
    files["image64"] = _png(rgb.repeat(2, 0).repeat(2, 1), folder / "image64.png")
    files["square64"] = _png(square.repeat(2, 0).repeat(2, 1), folder / "square64.png")
    return files


def _raw(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[torch.Tensor, dict]:
    raw = tmp_path / "raw.npy"
    assert main([*argv, "--raw", str(raw), "-o", str(tmp_path / "out.png"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_explain.SCHEMA)
    assert (tmp_path / "out.png").stat().st_size > 1000
    return torch.from_numpy(np.load(raw)), payload


def test_region_maps_equal_the_library(
    shapes: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = convlens.load_model("shapes_segnet")
    for method, layer in (("saliency", []), ("gradcam", ["--layer", "act5"])):
        saved, payload = _raw(
            tmp_path,
            [
                "explain",
                str(shapes["image"]),
                "--model",
                "shapes_segnet",
                "--method",
                method,
                *layer,
                "--target-region",
                f"square:{shapes['square']}",
            ],
            capsys,
        )
        expected = convlens.explain(
            model,
            str(shapes["image"]),
            method,
            region("square", shapes["square"]),
            layer=layer[-1] if layer else None,
        )
        torch.testing.assert_close(saved, expected.tensors["attribution"].float())
        target = payload["images"][0]["results"][0]["target"]
        assert target["callable"].startswith("region(class=1 (square), mask=") and target["helper"][
            "mask_pixels"
        ] == [int((np.asarray(Image.open(shapes["square"])) > 0).sum())]
    # the class by index and the disc's mask give another map
    other, _ = _raw(
        tmp_path,
        [
            "explain",
            str(shapes["image"]),
            "--model",
            "shapes_segnet",
            "--target-region",
            f"2:{shapes['disc']}",
        ],
        capsys,
    )
    torch.testing.assert_close(
        other,
        convlens.explain(model, str(shapes["image"]), "saliency", region(2, shapes["disc"]))
        .tensors["attribution"]
        .float(),
    )
    assert not torch.allclose(other, saved)


def test_a_mask_at_the_image_size_follows_the_resize(
    shapes: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 64x64 image is resized to the 32x32 input; its 64x64 mask (2x2 blocks of the 32x32 one)
    must land on the same pixels as the 32x32 mask does on the 32x32 input."""
    model = convlens.load_model("shapes_segnet")
    saved, _ = _raw(
        tmp_path,
        [
            "explain",
            str(shapes["image64"]),
            "--model",
            "shapes_segnet",
            "--target-region",
            f"square:{shapes['square64']}",
        ],
        capsys,
    )
    expected = convlens.explain(
        model, str(shapes["image64"]), "saliency", region("square", shapes["square"])
    )
    torch.testing.assert_close(saved, expected.tensors["attribution"].float())


def test_similarity_maps_equal_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    image, reference = (
        _png(rng.integers(0, 255, (8, 8), dtype=np.uint8), tmp_path / f"{n}.png")
        for n in ("a", "b")
    )
    saved, payload = _raw(
        tmp_path,
        ["explain", str(image), "--model", "digits_cnn", "--target-similar", str(reference)],
        capsys,
    )
    model = convlens.load_model("digits_cnn")
    expected = convlens.explain(model, str(image), "saliency", similarity(str(reference))).tensors[
        "attribution"
    ]
    torch.testing.assert_close(saved, expected.float())
    assert (
        payload["images"][0]["results"][0]["target"]["callable"]
        == f"similarity(reference={reference})"
    )
    # gradients: the dense target is the score of the input gradient
    out = tmp_path / "g.png"
    assert (
        main(
            [
                "gradients",
                str(image),
                "--model",
                "digits_cnn",
                "--target-similar",
                str(reference),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert out.stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--target-region", "square:{tmp}/none.png"], "none.png: no such file"),
        (["--target-region", "{square}"], "expected CLASS:MASK.png"),
        (["--target-region", "triangle:{square}"], "'triangle'"),
        (
            ["--target-region", "7:{square}"],
            "class 7 is out of range: shapes_segnet has 3 output classes",
        ),
        (["--target-region", "square:{empty}"], "has no non-zero pixel"),
        (["--target-region", "square:{small}"], "the mask is 20x20 but the image"),
        (
            ["--target-region", "square:{square}", "--target", "1"],
            "--target-region and --target are exclusive",
        ),
        (["--target-region", "square:{square}", "--target-similar", "{image}"], "are exclusive"),
        (["--target-similar", "{tmp}/none.png"], "--target-similar"),
    ],
)
def test_bad_dense_targets_exit_2_with_one_line_and_write_nothing(
    shapes: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    _png(np.zeros((32, 32), np.uint8), tmp_path / "empty.png")
    _png(np.full((20, 20), 255, np.uint8), tmp_path / "small.png")
    names = {
        "tmp": tmp_path,
        "empty": tmp_path / "empty.png",
        "small": tmp_path / "small.png",
        **shapes,
    }
    out = tmp_path / "out.png"
    args = [a.format(**names) for a in argv]
    assert (
        main(["explain", str(shapes["image"]), "--model", "shapes_segnet", "-o", str(out), *args])
        == 2
    )
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_region_on_a_classifier_and_gradients_exclusivity(
    shapes: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digit = _png(np.zeros((8, 8), np.uint8), tmp_path / "d.png")
    mask = _png(np.full((8, 8), 255, np.uint8), tmp_path / "m.png")
    out = tmp_path / "out.png"
    assert (
        main(
            [
                "explain",
                str(digit),
                "--model",
                "digits_cnn",
                "--target-region",
                f"1:{mask}",
                "-o",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "needs a segmentation model, whose output is (N, classes, H, W); digits_cnn gives (1, 10)"
        in err
        and len(err.strip().splitlines()) == 1
    )
    assert (
        main(
            [
                "gradients",
                str(digit),
                "--model",
                "digits_cnn",
                "--input-target",
                "3",
                "--target-similar",
                str(digit),
                "-o",
                str(out),
            ]
        )
        == 2
    )
    assert "--target-similar and --input-target are exclusive" in capsys.readouterr().err
    assert not out.exists()
