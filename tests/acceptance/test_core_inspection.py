"""Acceptance checks of the core issue, on the real model and photos (pytest -m acceptance)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from convlens.cli import cmd_demo, cmd_predict
from convlens.data.samples import SAMPLES, sample_names

pytestmark = pytest.mark.acceptance
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("convlens")
    cmd = [exe] if exe else [sys.executable, "-m", "convlens.cli.main"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_predict_gives_the_expected_class_for_every_bundled_photo() -> None:
    names = sample_names(labelled_only=True)
    proc = _cli("predict", *[f"sample:{n}" for n in names], "--json", "--top-k", "5")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    jsonschema.validate(payload, cmd_predict.SCHEMA)
    for name, pred in zip(names, payload["predictions"]):
        top1 = pred["top"][0]["class"]
        assert top1 in SAMPLES[name].expected, (name, pred["top"][:3])
        probs = [t["probability"] for t in pred["top"]]
        assert probs == sorted(probs, reverse=True)


@pytest.mark.parametrize(
    "variant", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
)
def test_lite_models_on_the_labelled_imagenet_jpegs(variant: str) -> None:
    """Top-1 on the 20 labelled ImageNet JPEGs of the foolbox wheel: about 85-95 % with the
    right resolution and TF-Lite normalisation; a wrong one (ImageNet mean/std, the wrong
    size) loses several images."""
    import convlens
    from convlens.data.samples import labelled_imagenet_files

    files = labelled_imagenet_files()
    if not files:
        pytest.skip("foolbox (test extra) is not installed: no labelled ImageNet JPEGs")
    model = convlens.load_model(variant)
    preds = model.predict([str(f) for f, _ in files], top_k=5)
    top1 = sum(p.classes[0] == label for p, (_, label) in zip(preds, files)) / len(files)
    top5 = sum(label in p.classes for p, (_, label) in zip(preds, files)) / len(files)
    assert top1 >= 0.8 and top5 >= 0.95, (variant, top1, top5)


def test_demo_finishes_under_three_minutes(tmp_path: Path) -> None:
    started = time.perf_counter()
    proc = _cli("demo", "-o", str(tmp_path / "demo"), "--json")
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    jsonschema.validate(summary, cmd_demo.SCHEMA)
    assert seconds < 180, seconds
    assert summary["sections"]["predictions"]["top1_as_expected"] == 7
    for section in summary["sections"].values():
        for name in section["files"]:
            assert (tmp_path / "demo" / name).stat().st_size > 0


def test_readme_quickstart_is_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quickstart, flags=re.S)
    assert len(commands) == 2, commands
    run_cmd, test_cmd = (c.strip() for c in commands)
    assert run_cmd.endswith("convlens demo") and run_cmd.startswith("pip install")
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci, "the CI script must run the README's test command verbatim"
