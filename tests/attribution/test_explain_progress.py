"""``explain(..., progress=cb)``: the callback is forwarded to slow methods, watches without
changing the result, and stays out of the provenance (which must remain JSON)."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

import convlens
from convlens.attribution import METHODS


@pytest.fixture(scope="module")
def digits():
    return convlens.load_model("digits_cnn")


def _calls(digits, method: str, **options) -> tuple[list[tuple[int, int]], convlens.Result]:
    calls: list[tuple[int, int]] = []
    result = convlens.explain(
        digits,
        ["sample:cat", "sample:coffee"],
        method,
        progress=lambda d, t: calls.append((d, t)),
        **options,
    )
    return calls, result


def test_every_method_that_reports_progress_takes_it_by_name() -> None:
    """The server picks job-capable methods by signature: the slow ones must be among them."""
    import convlens.attribution  # noqa: F401  (registers every method)

    reporting = {n for n, s in METHODS.items() if "progress" in inspect.signature(s.fn).parameters}
    assert {"integrated_gradients", "smoothgrad", "occlusion", "scorecam"} <= reporting
    assert "saliency" not in reporting and "gradcam" not in reporting


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("integrated_gradients", {"n_steps": 12, "chunk": 5}),  # 2 images x 12 steps in chunks of 5
        ("smoothgrad", {"n_samples": 6, "chunk": 4}),
        ("scorecam", {"batch_size": 3}),
        ("occlusion", {"patch": 2, "stride": 2, "batch_size": 5}),
    ],
)
def test_progress_rises_to_the_total_and_changes_nothing(
    digits, method: str, options: dict
) -> None:
    calls, watched = _calls(digits, method, **options)
    plain = convlens.explain(digits, ["sample:cat", "sample:coffee"], method, **options)
    assert len(calls) >= 2, calls  # reported during the work, not only at the end
    dones = [d for d, _ in calls]
    totals = {t for _, t in calls}
    assert (
        len(totals) == 1 and dones == sorted(dones) and dones[0] > 0 and dones[-1] == totals.pop()
    )
    assert len(set(dones)) == len(dones)  # strictly rising
    torch.testing.assert_close(
        watched.tensors["attribution"], plain.tensors["attribution"], rtol=0, atol=0
    )
    torch.testing.assert_close(watched.tensors["map"], plain.tensors["map"], rtol=0, atol=0)
    assert "progress" not in watched.provenance["params"]
    text = json.dumps(watched.provenance)  # raises on anything that is not JSON
    assert "lambda" not in text and "<locals>" not in text
    seconds = ("seconds",)
    strip = lambda p: {k: v for k, v in p["params"].items() if k not in seconds}  # noqa: E731
    assert strip(watched.provenance) == strip(plain.provenance)


def test_integrated_gradients_counts_path_evaluations(digits) -> None:
    calls, _ = _calls(digits, "integrated_gradients", n_steps=12, chunk=5)
    assert calls == [(5, 24), (10, 24), (15, 24), (20, 24), (24, 24)]


def test_saved_result_round_trips_with_progress(digits, tmp_path) -> None:
    _, result = _calls(digits, "smoothgrad", n_samples=4, chunk=2)
    result.save(tmp_path / "r")
    back = convlens.Result.load(tmp_path / "r")
    assert back.provenance == json.loads(json.dumps(result.provenance))
