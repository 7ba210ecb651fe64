"""``convlens robustness ... --model a,b``: one table and one picture across models, and each
model's numbers equal the model run alone through the library."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import torch

import convlens
from convlens.cli import (
    cmd_robustness,
    robustness_corruptions,
    robustness_curve,
    robustness_shape_bias,
)
from convlens.cli.main import main
from convlens.data.images import save_image
from convlens.data.samples import labelled_imagenet_files
from convlens.render.robustness import (
    attack_curve_comparison_figure,
    corruption_comparison_figure,
    shape_bias_comparison_figure,
)
from convlens.robustness import summarize_corruptions, summarize_shape_bias

from helpers.shared_data import CUE_CONFLICT_DEV, require_cue_conflict_dev

DEV = CUE_CONFLICT_DEV
DIGITS = ["digits_cnn", "digits_linear"]


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten test digits (one per class) as 8x8 PNGs in class subfolders."""
    from convlens.models.small import load_dataset

    x, y = load_dataset("digits", "test")
    root = tmp_path_factory.mktemp("digits")
    for digit in range(10):
        i = int((y == digit).nonzero()[0])
        save_image(x[i], root / str(digit) / f"d{i}.png")
    return root


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def _csv(path: str | Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def test_attack_curve_across_models_equals_each_model_alone(
    tmp_path: Path, digit_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from convlens.adversarial.curve import attack_curve, load_labelled

    out = tmp_path / "curve"
    eps = [0.0, 0.1, 0.3]
    args = [
        "robustness",
        "attack-curve",
        str(digit_folder),
        "--methods",
        "fgsm,pgd",
        "--eps",
        "0,0.1,0.3",
        "--steps",
        "5",
        "--seed",
        "3",
        "-o",
        str(out),
        "--json",
    ]
    assert main([*args, "--model", ",".join(DIGITS)]) == 0
    payload = _json(capsys)
    jsonschema.validate(payload, robustness_curve.SCHEMA)
    jsonschema.validate(payload, cmd_robustness.SCHEMA)
    assert payload["models"] == DIGITS and [r["model"] for r in payload["results"]] == DIGITS
    table = _csv(payload["files"]["table"])
    assert [(row["model"], row["method"]) for row in table] == [
        (m, k) for m in DIGITS for k in ("fgsm", "pgd")
    ]
    for name, row in zip(DIGITS, payload["results"]):
        model = convlens.load_model(name)
        pixels, labels, _ = load_labelled(model, digit_folder)
        alone = attack_curve(
            model, pixels, labels, methods=["fgsm", "pgd"], eps=eps, steps=5, seed=3
        )
        for i, method in enumerate(("fgsm", "pgd")):
            assert row["accuracy"][method] == [
                round(float(a), 4) for a in alone.tensors["accuracy"][i]
            ]
            cells = next(r for r in table if r["model"] == name and r["method"] == method)
            assert [float(cells[f"{e:g}"]) for e in eps] == row["accuracy"][method]
        # eps 0 is the clean accuracy, counted here by hand from the logits
        with torch.no_grad():
            clean = (
                (model.module(model.normalize(pixels)).argmax(dim=1) == labels)
                .float()
                .mean()
                .item()
            )
        assert row["accuracy"]["fgsm"][0] == pytest.approx(clean, abs=1e-4)
        assert (
            Path(row["files"]["plot"]).parent == out / name
            and Path(row["files"]["result"]).is_file()
        )
    assert (
        payload["results"][0]["accuracy"] != payload["results"][1]["accuracy"]
    )  # two different models
    assert Path(payload["files"]["plot"]).is_file()
    # one model keeps the one-model output, with the same numbers as in the side-by-side run
    assert main([*args, "--model", DIGITS[1], "-o", str(tmp_path / "alone")]) == 0
    single = _json(capsys)
    jsonschema.validate(single, robustness_curve.SINGLE)
    assert single["model"] == DIGITS[1] and "results" not in single
    assert single["accuracy"] == payload["results"][1]["accuracy"]
    assert (tmp_path / "alone" / "curve.png").is_file() and not (
        tmp_path / "alone" / "curve.csv"
    ).exists()


def test_corruptions_across_models_equal_each_model_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("imagecorruptions")
    from convlens.robustness import corruption_robustness

    files = labelled_imagenet_files()[:3]
    if len(files) < 3:
        pytest.fail(
            "the foolbox wheel (test extra) is not installed: its 20 labelled ImageNet JPEGs are the data"
        )
    labelled = tmp_path / "labels.csv"
    labelled.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in files))
    names = ["efficientnet_lite0", "efficientnet_lite1"]
    out = tmp_path / "out"
    args = [
        "robustness",
        "corruptions",
        str(labelled),
        "--model",
        ",".join(names),
        "--corruptions",
        "gaussian_noise,fog",
        "--severities",
        "3,5",
        "--batch-size",
        "1",
        "-o",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    payload = _json(capsys)
    jsonschema.validate(payload, robustness_corruptions.SCHEMA)
    jsonschema.validate(payload, cmd_robustness.SCHEMA)
    assert payload["models"] == names
    stacked = _csv(payload["files"]["table"])
    for name, row in zip(names, payload["results"]):
        model = convlens.load_model(name)
        pixels = model.denormalize(model.prepare([str(p) for p, _ in files]).x)
        alone = corruption_robustness(
            model,
            pixels,
            [label for _, label in files],
            corruptions=["gaussian_noise", "fog"],
            severities=[3, 5],
            seed=0,
        ).provenance["params"]
        assert row["top1_errors"] == alone["errors"]  # fractions of the same counts
        assert row["clean_accuracy"] == pytest.approx(alone["clean_accuracy"])
        assert row["mean_corruption_error"] == pytest.approx(alone["mean_corruption_error"])
        # the table across models is each model's own table with its name in front
        own = _csv(row["files"]["table"])
        assert [
            {k: v for k, v in r.items() if k != "model"} for r in stacked if r["model"] == name
        ] == own
        assert Path(row["files"]["predictions"]).parent == out / name
    assert Path(payload["files"]["figure"]).is_file()


def test_an_unreadable_image_is_reported_per_model_and_the_rest_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("imagecorruptions")
    files = labelled_imagenet_files()[:1]
    if not files:
        pytest.fail(
            "the foolbox wheel (test extra) is not installed: its 20 labelled ImageNet JPEGs are the data"
        )
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    labelled = tmp_path / "mixed.csv"
    labelled.write_text(f"path,label\n{files[0][0]},{files[0][1]}\n{broken},1\n")
    names = ["efficientnet_lite0", "efficientnet_lite1"]
    out = tmp_path / "out"
    assert (
        main(
            [
                "robustness",
                "corruptions",
                str(labelled),
                "--model",
                ",".join(names),
                "--corruptions",
                "pixelate",
                "--severities",
                "2",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 2
    )
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    jsonschema.validate(payload, robustness_corruptions.SCHEMA)
    for name, row in zip(names, payload["results"]):
        assert (
            row["n_images"] == 1
            and len(row["errors"]) == 1
            and row["errors"][0].startswith(f"{name}: ")
            and "broken.jpg" in row["errors"][0]
        )
    assert payload["errors"] == [e for row in payload["results"] for e in row["errors"]]
    assert captured.err.count("broken.jpg") == 2 and Path(payload["files"]["figure"]).is_file()


def test_shape_bias_across_models_equals_each_model_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_cue_conflict_dev()
    from convlens.robustness import shape_bias

    stimuli = tmp_path / "stimuli"
    # images the two models decide differently (lite0: shape, texture, other; lite1: other,
    # other, texture) and one without conflict
    for name in (
        "airplane/airplane3-oven1.png",
        "airplane/airplane1-bicycle2.png",
        "airplane/airplane2-bird3.png",
        "cat/cat1-cat3.png",
    ):
        (stimuli / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEV / name, stimuli / name)
    names = ["efficientnet_lite0", "efficientnet_lite1"]
    out = tmp_path / "sb"
    assert (
        main(
            [
                "robustness",
                "shape-bias",
                str(stimuli),
                "--model",
                ",".join(names),
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = _json(capsys)
    jsonschema.validate(payload, robustness_shape_bias.SCHEMA)
    jsonschema.validate(payload, cmd_robustness.SCHEMA)
    table = _csv(payload["files"]["table"])
    for name, row in zip(names, payload["results"]):
        alone = shape_bias(convlens.load_model(name), stimuli).provenance["params"]
        for key in ("shape", "texture", "other", "n_conflict", "n_excluded", "shape_bias"):
            assert row[key] == alone[key], (name, key)
        assert row["per_category"] == alone["per_category"]
        overall = next(r for r in table if r["model"] == name and r["category"] == "all")
        assert (int(overall["shape"]), int(overall["texture"]), int(overall["other"])) == (
            alone["shape"],
            alone["texture"],
            alone["other"],
        )
        decisions = _csv(row["files"]["decisions"])
        assert [d["decision"] for d in decisions] == alone["decisions"]
    assert (
        payload["results"][0]["shape"] == 1 and payload["results"][1]["shape"] == 0
    )  # the two differ
    assert Path(payload["files"]["figure"]).is_file()


def test_repeated_model_names_are_refused_before_anything_is_written(
    tmp_path: Path, digit_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "robustness",
            "attack-curve",
            str(digit_folder),
            "--model",
            "digits_cnn,digits_cnn",
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and "digits_cnn" in err
        and "Traceback" not in err
        and len(err.strip().splitlines()) == 1
    )
    assert not out.exists()


def _config(tmp_path: Path, name: str, body: str) -> Path:
    """A user model in a file and a convlens.toml naming it (8x8 grey digits' input)."""
    (tmp_path / f"{name}.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n    return " + body + "\n"
    )
    config = tmp_path / "convlens.toml"
    config.write_text(f'[models.{name}]\nmodel = "{name}.py:build"\ninput-size = 8\nchannels = 1\n')
    return config


def test_a_model_without_class_scores_in_the_list_is_refused_up_front(
    tmp_path: Path, digit_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("convlens.models.spec")
    config = _config(
        tmp_path, "dense", "torch.nn.Conv2d(1, 3, 3, padding=1)  # a dense map, not class scores"
    )
    out = tmp_path / "out"
    code = main(
        [
            "robustness",
            "attack-curve",
            str(digit_folder),
            "--model",
            "digits_cnn,dense",
            "--config",
            str(config),
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and "class scores" in err
        and "dense" in err
        and "Traceback" not in err
        and len(err.strip().splitlines()) == 1
    ), err
    assert not out.exists()


def test_a_model_with_too_few_classes_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_cue_conflict_dev()
    out = tmp_path / "out"
    code = main(
        [
            "robustness",
            "shape-bias",
            str(DEV),
            "--model",
            "efficientnet_lite0,digits_cnn",
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and "digits_cnn" in err
        and "ImageNet-1k" in err
        and "(1, 10)" in err
        and len(err.strip().splitlines()) == 1
    ), err
    assert not out.exists()


def test_user_models_take_part_in_a_comparison(
    tmp_path: Path, digit_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = pytest.importorskip("convlens.models.spec")
    from convlens.adversarial.curve import attack_curve, load_labelled

    config = _config(
        tmp_path, "tiny", "torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))"
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "robustness",
                "attack-curve",
                str(digit_folder),
                "--model",
                "digits_cnn,tiny",
                "--config",
                str(config),
                "--methods",
                "fgsm",
                "--eps",
                "0,0.2",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = _json(capsys)
    jsonschema.validate(payload, robustness_curve.SCHEMA)
    assert payload["models"] == ["digits_cnn", "tiny"]
    user = payload["results"][1]
    assert Path(user["files"]["plot"]).parent == out / "tiny"
    # the same user model run alone through the library
    model = spec.load_spec(spec.load_config(config).named["tiny"])
    pixels, labels, _ = load_labelled(model, digit_folder)
    alone = attack_curve(model, pixels, labels, methods=["fgsm"], eps=[0.0, 0.2], seed=0)
    assert user["accuracy"]["fgsm"] == [round(float(a), 4) for a in alone.tensors["accuracy"][0]]


# -- the pictures draw the numbers (read back from the artists) ---------------------------------


def _corruption_params(scale: float) -> dict:
    errors = {"fog": [0.1 * scale, 0.3 * scale], "contrast": [0.2 * scale, 0.6 * scale]}
    return {
        **summarize_corruptions(errors, [1, 5], clean_error=0.05 * scale).to_dict(),
        "n_images": 4,
    }


def test_corruption_comparison_has_a_bar_group_per_model() -> None:
    runs = [("a", _corruption_params(1.0)), ("b", _corruption_params(1.5))]
    fig = corruption_comparison_figure(runs)
    bars, lines = fig.axes[0], fig.axes[1]
    assert [c.get_label() for c in bars.containers] == ["a", "b"]
    for container, (_, p) in zip(bars.containers, runs):
        heights = [r.get_height() for r in container]
        expected = [100 * (p["errors"][c][0] + p["errors"][c][1]) / 2 for c in ("fog", "contrast")]
        assert heights == pytest.approx([*expected, sum(expected) / 2])
    # error vs severity: clean first, then the mean over the corruptions at each severity
    assert [list(line.get_ydata()) for line in lines.lines] == [
        pytest.approx([5.0, 15.0, 45.0]),
        pytest.approx([7.5, 22.5, 67.5]),
    ]
    with pytest.raises(ValueError, match="other corruptions"):
        corruption_comparison_figure(
            [
                ("a", _corruption_params(1.0)),
                ("b", {**_corruption_params(1.0), "severities": [1, 3]}),
            ]
        )


def test_attack_curve_comparison_has_a_line_per_model_and_method(digit_folder: Path) -> None:
    from convlens.adversarial.curve import attack_curve, load_labelled

    runs = []
    for name in DIGITS:
        model = convlens.load_model(name)
        pixels, labels, _ = load_labelled(model, digit_folder, limit=4)
        runs.append(
            (
                name,
                attack_curve(model, pixels, labels, methods=["fgsm", "bim"], eps=[0, 0.2], steps=2),
            )
        )
    ax = attack_curve_comparison_figure(runs).axes[0]
    assert [line.get_label() for line in ax.lines] == [
        "digits_cnn fgsm",
        "digits_cnn bim",
        "digits_linear fgsm",
        "digits_linear bim",
    ]
    for k, (_, result) in enumerate(runs):
        for m in range(2):
            line = ax.lines[2 * k + m]
            assert list(line.get_xdata()) == pytest.approx([0, 0.2 * 255])
            assert list(line.get_ydata()) == pytest.approx(
                [100 * float(a) for a in result.tensors["accuracy"][m]]
            )
    assert ax.lines[0].get_color() == ax.lines[1].get_color() != ax.lines[2].get_color()


def test_shape_bias_comparison_places_each_model_per_category() -> None:
    a = summarize_shape_bias(
        ["cat", "dog", "cat", "clock"],
        ["cat", "cat", "cat", "clock"],
        ["dog", "dog", "bear", "knife"],
        ["cat", "clock"],
    ).to_dict()
    b = summarize_shape_bias(
        ["dog", "dog", "bear", "knife"],
        ["cat", "cat", "cat", "clock"],
        ["dog", "dog", "bear", "knife"],
        ["cat", "clock"],
    ).to_dict()
    ax = shape_bias_comparison_figure([("a", a), ("b", b)]).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    rows = dict(zip(ax.get_yticks(), labels))
    for collection, expected in zip(
        ax.collections, ({"cat": 2 / 3, "clock": 1.0}, {"cat": 0.0, "clock": 0.0})
    ):
        assert {rows[round(y)]: x for x, y in collection.get_offsets()} == pytest.approx(expected)
    # the first model sits above the second within each row
    assert all(
        ya > yb
        for (_, ya), (_, yb) in zip(
            ax.collections[0].get_offsets(), ax.collections[1].get_offsets()
        )
    )
    assert [c.get_label() for c in ax.collections] == ["a 0.750", "b 0.000"]
    assert [
        line.get_xdata()[0] for line in ax.lines if line.get_linewidth() == 1.5
    ] == pytest.approx([0.75, 0.0])
