"""``convlens robustness corruptions`` and ``shape-bias``: files, JSON schemas, resumable runs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from convlens.cli import robustness_corruptions, robustness_shape_bias
from convlens.cli.main import main
from convlens.data.samples import labelled_imagenet_files

from helpers.shared_data import CUE_CONFLICT_DEV, require_cue_conflict_dev

DEV = CUE_CONFLICT_DEV


@pytest.fixture()
def labelled_csv(tmp_path: Path) -> Path:
    files = labelled_imagenet_files()[:2]
    if len(files) < 2:
        pytest.skip("the foolbox wheel's ImageNet images are not installed")
    path = tmp_path / "labels.csv"
    path.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in files))
    return path


def test_corruptions_json_files_and_resume(
    tmp_path: Path, labelled_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("imagecorruptions")
    out = tmp_path / "out"
    args = [
        "robustness",
        "corruptions",
        str(labelled_csv),
        "--corruptions",
        "fog,contrast",
        "--severities",
        "1,5",
        "-o",
        str(out),
        "--json",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, robustness_corruptions.SCHEMA)
    assert payload["corruptions"] == ["fog", "contrast"] and payload["severities"] == [1, 5]
    assert payload["n_images"] == 2 and payload["mce"] is None and not payload["complete"]
    for name in ("corruptions.csv", "corruptions.png", "corruptions.npz", "corruptions.json"):
        assert (out / name).is_file()
    # the same run again resumes the finished shards and gives the same numbers
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["top1_errors"] == payload["top1_errors"]
    table = (out / "corruptions.csv").read_text().splitlines()
    assert table[0].startswith("corruption,error_s1,error_s5") and table[1].startswith("fog,")


def test_shape_bias_cli_on_folder_and_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_cue_conflict_dev()
    stimuli = tmp_path / "stimuli"
    for name in ("cat/cat1-airplane1.png", "cat/cat1-cat3.png", "clock/clock1-bear1.png"):
        (stimuli / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEV / name, stimuli / name)
    out = tmp_path / "sb"
    assert (
        main(["robustness", "shape-bias", str(stimuli), "-o", str(out), "--json", "--threads", "1"])
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, robustness_shape_bias.SCHEMA)
    assert payload["n_conflict"] == 2 and payload["n_excluded"] == 1
    assert payload["shape"] + payload["texture"] + payload["other"] == 2
    for name in ("shape_bias.png", "shape_bias.csv", "decisions.csv"):
        assert (out / name).is_file()
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,shape,texture\ncat/cat1-airplane1.png,cat,airplane\nclock/clock1-bear1.png,clock,bear\n"
    )
    assert (
        main(
            [
                "robustness",
                "shape-bias",
                str(stimuli),
                "--labels",
                str(labels),
                "-o",
                str(tmp_path / "sb2"),
                "--json",
            ]
        )
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert (again["shape"], again["texture"], again["other"]) == (
        payload["shape"],
        payload["texture"],
        payload["other"],
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["robustness", "corruptions", "{csv}", "--severities", "7"], "--severities"),
        (["robustness", "corruptions", "{csv}", "--severities", "a-b"], "--severities"),
        (["robustness", "corruptions", "{csv}", "--corruptions", "rain"], "rain"),
        (["robustness", "corruptions", "{missing}"], "missing"),
        (
            ["robustness", "corruptions", "{flat}", "--corruptions", "fog", "--severities", "1"],
            "no label",
        ),
        (["robustness", "shape-bias"], "DIR"),
        (["robustness", "shape-bias", "{missing}"], "missing"),
        (["robustness", "shape-bias", "{flat}"], "no cue-conflict images"),
        (["robustness", "shape-bias", "{flat}", "--categories", "{csv}"], "categories"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path,
    labelled_csv: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(labelled_imagenet_files()[0][0], flat / "a.jpg")
    out = tmp_path / "out"
    filled = [a.format(csv=labelled_csv, missing=tmp_path / "missing", flat=flat) for a in args]
    assert main([*filled, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_an_unreadable_image_is_reported_and_the_rest_evaluated(
    tmp_path: Path, labelled_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("imagecorruptions")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    first = labelled_csv.read_text().splitlines()[1]
    csv = tmp_path / "mixed.csv"
    csv.write_text(f"path,label\n{first}\n{broken},1\n")
    out = tmp_path / "out"
    assert (
        main(
            [
                "robustness",
                "corruptions",
                str(csv),
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
    assert (
        payload["n_images"] == 1
        and len(payload["errors"]) == 1
        and "broken.jpg" in payload["errors"][0]
    )
    assert "broken.jpg" in captured.err and (out / "corruptions.png").is_file()
