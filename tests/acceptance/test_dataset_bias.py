"""Acceptance of issue 17 part 1: detecting dataset bias (the wolf/snow example) through the command.

``convlens bias make`` writes coloured digits whose background gives the class away 95 % of
the time (test split) and a counter-cue split (background of another class). Then
``convlens bias`` runs Grad-CAM on the model trained on the biased set and on the same net
trained on random backgrounds (the known answer: only the first can use the shortcut):

- the biased model's mean outside-object share is far above the fair model's (by >= 0.2;
  measured 0.780 vs 0.416, background area 0.806);
- its counter-cue accuracy drops (measured 0.939 -> 0.006) while the fair model's does not
  (0.953 -> 0.958);
- both numbers appear in the printed table and in the JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from convlens.cli.main import main

pytestmark = pytest.mark.acceptance


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """One torch thread (tests/conftest.py)."""


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_biased_model_looks_outside_the_digit_and_fails_the_counter_cues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "set"
    _run(["bias", "make", str(data), "--splits", "test,counter", "-q"], capsys)
    base = [
        "bias",
        str(data / "test"),
        "--masks",
        str(data / "masks" / "test"),
        "--counter",
        str(data / "counter"),
        "-q",
    ]
    got, tables = {}, {}
    for name in ("bias_digits_cnn", "fair_digits_cnn"):
        got[name] = json.loads(
            _run([*base, "--model", name, "--json", "-o", str(tmp_path / f"{name}.png")], capsys)
        )
        tables[name] = _run([*base, "--model", name, "-o", str(tmp_path / f"{name}-t.png")], capsys)
    with capsys.disabled():
        for name, table in tables.items():
            print(f"\n{name}:\n{table}")
    biased, fair = got["bias_digits_cnn"], got["fair_digits_cnn"]
    assert (
        biased["method"] == "gradcam"
        and biased["main"]["images"] == 359 == biased["counter"]["images"]
    )
    # attribution outside the object: far above the fair model's
    assert biased["main"]["mean_outside_share"] >= fair["main"]["mean_outside_share"] + 0.2
    assert biased["counter"]["mean_outside_share"] >= fair["counter"]["mean_outside_share"] + 0.2
    # the fair model looks at the digit: well below the background's area fraction
    assert fair["main"]["mean_outside_share"] < fair["main"]["mean_background_fraction"] - 0.25
    # counter-cue accuracy: drops for the biased model only
    assert (
        biased["main"]["accuracy"] >= 0.9
        and biased["counter_accuracy"] <= biased["main"]["accuracy"] - 0.4
    )
    assert (
        fair["counter_accuracy"] >= 0.9
        and abs(fair["counter_accuracy"] - fair["main"]["accuracy"]) <= 0.05
    )
    # the misclassified images are ranked by share, largest first
    shares = [r["outside_share"] for r in biased["counter"]["misclassified"]]
    assert shares == sorted(shares, reverse=True) and len(shares) == 10
    # both numbers are printed in the table as the JSON gives them
    for name, table in tables.items():
        rows = {
            m.group(1): m
            for m in re.finditer(
                r"^(main|counter-cue)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", table, re.M
            )
        }
        assert float(rows["main"].group(4)) == pytest.approx(
            got[name]["main"]["mean_outside_share"], abs=6e-4
        )
        assert float(rows["counter-cue"].group(3)) == pytest.approx(
            got[name]["counter_accuracy"], abs=6e-4
        )
        assert f"counter-cue accuracy {got[name]['counter_accuracy']:.3f}" in table
