"""`convlens attack` and `convlens robustness attack-curve`: files, JSON, round trip, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from convlens.cli import cmd_attack, cmd_robustness, robustness_curve
from convlens.cli.main import build_parser, main
from convlens.data.images import save_image


@pytest.fixture()
def digit_files(tmp_path: Path, digits: tuple) -> tuple[Path, Path]:
    """Six digits as 8x8 PNGs: a flat folder and an ImageFolder-style labelled copy."""
    _, x, y = digits
    flat, labelled = tmp_path / "flat", tmp_path / "labelled"
    for i in range(6):
        save_image(x[i], flat / f"d{i}.png")
        save_image(x[i], labelled / str(int(y[i])) / f"d{i}.png")
    return flat, labelled


def test_attack_cli_saves_files_that_predict_agrees_with(
    tmp_path: Path, digit_files: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    flat, _ = digit_files
    out = tmp_path / "out"
    code = main(
        [
            "attack",
            str(flat),
            "--model",
            "digits_cnn",
            "--method",
            "pgd",
            "--eps",
            "64/255",
            "--steps",
            "10",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_attack.SCHEMA)
    assert len(payload["images"]) == 6 and payload["eps_255"] == 64
    for row in payload["images"]:
        assert row["linf_255"] <= 64 + 1e-3
        assert (
            main(
                [
                    "predict",
                    row["files"]["adversarial"],
                    "--model",
                    "digits_cnn",
                    "--json",
                    "--top-k",
                    "1",
                ]
            )
            == 0
        )
        predicted = json.loads(capsys.readouterr().out)["predictions"][0]["top"][0]["class"]
        assert predicted == row["after"][0]["class"]
        assert (
            Path(row["files"]["figure"]).is_file() and Path(row["files"]["perturbation"]).is_file()
        )
    assert (out / "attack.npz").is_file()


def test_black_box_cli_reports_queries(
    tmp_path: Path, digit_files: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    flat, _ = digit_files
    code = main(
        [
            "attack",
            str(flat / "d0.png"),
            "--model",
            "digits_cnn",
            "--method",
            "square",
            "--eps",
            "0.3",
            "--steps",
            "300",
            "-o",
            str(tmp_path / "sq"),
            "--json",
        ]
    )
    assert code == 0
    row = json.loads(capsys.readouterr().out)["images"][0]
    assert 1 <= row["queries"] <= 300


def test_attack_curve_cli(
    tmp_path: Path, digit_files: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    _, labelled = digit_files
    out = tmp_path / "curve"
    code = main(
        [
            "robustness",
            "attack-curve",
            str(labelled),
            "--model",
            "digits_cnn",
            "--methods",
            "fgsm,pgd",
            "--eps",
            "0,16/255,0.3",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, robustness_curve.SCHEMA)
    jsonschema.validate(payload, cmd_robustness.SCHEMA)
    assert payload["accuracy"]["fgsm"][0] == 1.0  # the fixture keeps correctly classified digits
    assert payload["accuracy"]["pgd"][2] <= payload["accuracy"]["fgsm"][2]
    assert (out / "curve.png").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["attack", "sample:cat", "--eps", "four"], "--eps 'four'"),
        (["attack", "sample:cat", "--method", "cw", "--eps", "1/255"], "drop eps"),
        (["attack", "sample:cat", "--method", "square", "--norm", "2"], "norm 2"),
        (["attack", "sample:cat", "--eps", "2"], "[0, 1]"),
        (["attack", "sample:cat", "--opt", "nope=1"], "valid: alpha, random_start, start"),
        (["attack", "sample:cat", "--method", "fgsm", "--opt", "alpha=1"], "takes no options"),
        (["attack", "sample:cat", "--method", "deepfool", "--target", "1"], "untargeted"),
        (["robustness"], "give a subcommand"),
        (["robustness", "attack-curve", "/no/such/folder"], "/no/such/folder"),
        (["robustness", "attack-curve", "x", "--methods", "cw"], "--methods"),
        (["robustness", "attack-curve", "x", "--eps", "2/255,1/255"], "increase"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*args, "--model", "digits_cnn"] if args != ["robustness"] else args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_unlabelled_folder_is_refused_for_the_curve(
    digit_files: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    flat, _ = digit_files
    assert main(["robustness", "attack-curve", str(flat), "--model", "digits_cnn"]) == 2
    assert "no label" in capsys.readouterr().err


def test_robustness_discovers_subcommand_modules() -> None:
    parser = build_parser()
    group = next(a for a in parser._actions if a.dest == "command").choices["robustness"]
    sub = next(a for a in group._actions if a.dest == "robustness_command")
    names = {cmd_robustness.subcommand_name(m) for m in cmd_robustness.subcommand_modules()}
    assert "attack-curve" in names and names == set(sub.choices)
    assert set(cmd_robustness.SCHEMAS) == names
    # shared options belong to the subcommand
    args = parser.parse_args(["robustness", "attack-curve", "d", "--seed", "5", "--json"])
    assert args.seed == 5 and args.json and args.func is robustness_curve.run


def test_attack_cli_reads_the_registry_and_passes_opt(
    tmp_path: Path, digit_files: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    import convlens
    from convlens.adversarial import attack
    from convlens.adversarial.registry import attack_names

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["attack"]
    method = next(a for a in sub._actions if a.dest == "method")
    assert tuple(method.choices) == attack_names()
    flat, _ = digit_files
    image = str(sorted(flat.iterdir())[0])
    args = ["attack", image, "--model", "digits_cnn", "--eps", "0.2", "--steps", "4"]
    opts = ["--opt", "alpha=0.01", "--opt", "random_start=false"]
    assert main([*args, *opts, "-o", str(tmp_path / "a"), "--json"]) == 0
    capsys.readouterr()
    # the library call with the same options gives the same saved image
    model = convlens.load_model("digits_cnn")
    want = attack(model, [image], "pgd", eps=0.2, steps=4, alpha=0.01, random_start=False)
    got = convlens.Result.load(tmp_path / "a" / "attack")
    assert torch.equal(got["adversarial"], want["adversarial"])
    assert got.provenance["params"]["alpha"] == 0.01
    default = attack(model, [image], "pgd", eps=0.2, steps=4)
    assert not torch.equal(default["adversarial"], want["adversarial"])  # the options mattered
