"""Report sections compute through the library and render without it: every section's
``render`` step runs with the model's forward and autograd disabled, and the page it draws
is the same as the one drawn normally."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import convlens.render.report as report_module
from convlens.models.zoo import load_model
from convlens.render.report import build_report, discover_sections


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread_per_module: None) -> None:
    """The whole module runs on one torch thread."""


def _digit(path: Path) -> Path:
    image = np.zeros((8, 8), dtype=np.uint8)
    image[1:7, 2] = image[1:7, 5] = 220
    image[1, 2:6] = image[6, 2:6] = 220
    Image.fromarray(image).save(path)
    return path


class _Forbidden(RuntimeError):
    pass


def _no_compute(render: Any) -> Any:
    """``render`` run with the model's forward and every gradient call raising."""

    def guarded(data: Any, model: Any, ctx: Any) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise _Forbidden("a render step computed")

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(model.module, "forward", refuse)
            mp.setattr(torch.autograd, "grad", refuse)
            mp.setattr(torch.Tensor, "backward", refuse)
            return render(data, model, ctx)

    return guarded


def test_every_render_step_only_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digit = _digit(tmp_path / "zero.png")
    model = load_model("digits_cnn")
    sections = discover_sections()
    plain = build_report(model, str(digit))
    guarded = [dataclasses.replace(s, render=_no_compute(s.render)) for s in sections]
    monkeypatch.setattr(report_module, "discover_sections", lambda index=False: guarded)
    checked = build_report(model, str(digit))
    reasons = {s["name"]: c["reason"] for s in checked.sections for c in s["cells"]}
    assert set(reasons) == {s.name for s in sections}
    assert all(r is None for r in reasons.values()), reasons
    # the guard changed nothing: the same pictures, byte for byte
    assert [i.sha256 for i in checked.images] == [i.sha256 for i in plain.images]


def test_the_guard_catches_a_render_that_runs_the_model(tmp_path: Path) -> None:
    digit = _digit(tmp_path / "zero.png")
    model = load_model("digits_cnn")
    section = next(s for s in discover_sections() if s.name == "predictions")

    def sneaky(data: Any, model: Any, ctx: Any) -> Any:
        model.predict(model.prepare([str(digit)]))  # computing while drawing
        return section.render(data, model, ctx)

    bad = dataclasses.replace(section, render=_no_compute(sneaky))
    batch = model.prepare([str(digit)])
    with pytest.raises(_Forbidden):
        bad.build(model, batch, report_module.ReportContext())
