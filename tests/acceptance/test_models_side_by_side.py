"""Acceptance (issue 16, part 4): the course's architecture comparison on the real ImageNet
models, run as a user would (a subprocess with --json), each model's numbers equal to the
model run alone, and EfficientNet-Lite0's shape bias equal to the recorded reference."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

import convlens
from convlens.cli import robustness_curve, robustness_shape_bias

from helpers.shared_data import CUE_CONFLICT_DEV, require_cue_conflict_dev

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(600)]

DEV = CUE_CONFLICT_DEV
MODELS = ["efficientnet_lite0", "efficientnet_lite1"]


def _cli(*args: str) -> dict:
    exe = shutil.which("convlens")
    cmd = [exe] if exe else [sys.executable, "-m", "convlens.cli.main"]
    proc = subprocess.run(
        [*cmd, *args, "--json", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def lite1() -> convlens.Model:
    try:
        return convlens.load_model("efficientnet_lite1")
    except convlens.errors.MissingDependencyError:
        pytest.skip("efficientnet_lite1 needs the lite12 extra")


def test_shape_bias_of_two_architectures_side_by_side(
    tmp_path: Path, lite0: convlens.Model, lite1: convlens.Model
) -> None:
    require_cue_conflict_dev()
    from convlens.robustness import scan_cue_conflict, shape_bias

    out = tmp_path / "sb"
    payload = _cli(
        "robustness", "shape-bias", str(DEV), "--model", ",".join(MODELS), "-o", str(out)
    )
    jsonschema.validate(payload, robustness_shape_bias.SCHEMA)
    assert payload["models"] == MODELS
    first, second = payload["results"]
    print(
        f"\nshape bias on {first['n_conflict']} conflicts: "
        + ", ".join(
            f"{r['model']} {r['shape_bias']:.3f} ({r['shape']} shape / {r['texture']} texture)"
            for r in payload["results"]
        )
    )
    # Lite0 equals the reference recorded beside the stimuli by an independent implementation
    assert (first["shape"], first["texture"], first["n_conflict"]) == (51, 154, 300)
    assert first["shape_bias"] == pytest.approx(0.249, abs=0.001)
    # Lite1 equals Lite1 alone through the library, image by image (on every 5th image: the
    # whole set again would double the time)
    items = scan_cue_conflict(DEV)[::5]
    alone = shape_bias(lite1, items).provenance["params"]
    with open(second["files"]["decisions"], newline="") as handle:
        decided = {row["path"]: row["decision"] for row in csv.DictReader(handle)}
    assert [decided[str(item.path)] for item in items] == alone["decisions"]
    assert second["shape_bias"] != first["shape_bias"]  # two architectures, two numbers
    # one table with both models' rows and their overall numbers, and the picture
    with open(payload["files"]["table"], newline="") as handle:
        overall = {row["model"]: row for row in csv.DictReader(handle) if row["category"] == "all"}
    assert {m: (int(r["shape"]), int(r["texture"])) for m, r in overall.items()} == {
        r["model"]: (r["shape"], r["texture"]) for r in payload["results"]
    }
    assert Path(payload["files"]["figure"]).stat().st_size > 10_000


def test_attack_curves_of_two_architectures_side_by_side(
    tmp_path: Path, lite0: convlens.Model, lite1: convlens.Model
) -> None:
    from convlens.adversarial.curve import attack_curve, load_labelled
    from convlens.data.samples import labelled_imagenet_files

    files = labelled_imagenet_files()
    if len(files) < 20:
        pytest.skip("the foolbox wheel's 20 ImageNet images are not installed")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in files))
    eps = [0.0, 1 / 255, 2 / 255]
    # FGSM: one gradient per image and budget keeps the two models and their lone runs
    # within seconds; at 1/255 it already separates the architectures
    payload = _cli(
        "robustness",
        "attack-curve",
        str(labels),
        "--model",
        ",".join(MODELS),
        "--methods",
        "fgsm",
        "--eps",
        "0,1/255,2/255",
        "-o",
        str(tmp_path / "curve"),
    )
    jsonschema.validate(payload, robustness_curve.SCHEMA)
    assert payload["models"] == MODELS
    for model, row in zip((lite0, lite1), payload["results"]):
        pixels, y, _ = load_labelled(model, labels)
        alone = attack_curve(model, pixels, y, methods=["fgsm"], eps=eps)
        print(f"\n{model.name}: FGSM accuracy at 0, 1/255, 2/255: {row['accuracy']['fgsm']}")
        assert row["accuracy"]["fgsm"] == [round(float(a), 4) for a in alone.tensors["accuracy"][0]]
    assert payload["results"][0]["accuracy"] != payload["results"][1]["accuracy"]
    assert Path(payload["files"]["plot"]).is_file() and Path(payload["files"]["table"]).is_file()
