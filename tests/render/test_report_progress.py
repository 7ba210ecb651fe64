"""The report's progress bar counts steps inside sections: ``progress(done, total)`` gets its
total before any work, ``done`` only rises, advances once per attribution method, class
visualisation step and attack step (numbers read from the report's own summary), and ends
at ``total``; a section that misreports its own progress can neither overshoot nor stall."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import convlens.render.report as report_module
from convlens.models.zoo import load_model
from convlens.render.report import Fragment, ReportSection, SectionUnavailable, build_report

LONG = {"attribution", "class_visualisation", "adversarial"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = np.zeros((8, 8), dtype=np.uint8)
    image[1:7, 2] = image[1:7, 5] = 220
    image[1, 2:6] = image[6, 2:6] = 220
    path = tmp_path_factory.mktemp("progress") / "zero.png"
    Image.fromarray(image).save(path)
    return path


def test_progress_counts_methods_and_steps_inside_sections(digit: Path) -> None:
    model = load_model("digits_cnn")
    calls: list[tuple[int, int, str]] = []
    running = {"section": ""}

    def on_section(title: str, model_name: str) -> None:
        running["section"] = title

    report = build_report(
        model,
        str(digit),
        progress=lambda d, t: calls.append((d, t, running["section"])),
        on_section=on_section,
    )
    summary = {s["name"]: s["models"]["digits_cnn"] for s in report.summary()["sections"]}
    titles = {s["name"]: s["title"] for s in report.sections}
    # what each long section did, from its own summary: methods that ran (or failed trying), optimisation and attack steps
    attribution = summary["attribution"]
    methods = len(attribution["ranking"]) + sum(
        1 for s in attribution["skipped"] if not s["reason"].startswith("slow")
    )
    units = {
        "attribution": methods,
        "class_visualisation": summary["class_visualisation"]["steps"],
        "adversarial": summary["adversarial"]["steps"],
    }
    assert methods >= 10 and units["class_visualisation"] == 32 and units["adversarial"] == 10
    expected_total = sum(units.values()) + len(summary) - len(LONG)

    dones, totals = [c[0] for c in calls], {c[1] for c in calls}
    assert totals == {expected_total}, "one total, known up front"
    assert calls[0][:2] == (0, expected_total) and calls[0][2] == "", (
        "the total is announced before the first section runs"
    )
    assert all(b > a for a, b in pairwise(dones)), "done only rises"
    assert dones[-1] == expected_total
    for name, n in units.items():
        inside = [c for c in calls if c[2] == titles[name]]
        # one call per unit, each one further than the last
        assert len(inside) == n, (name, len(inside), n)
        assert [b[0] - a[0] for a, b in pairwise(inside)] == [1] * (n - 1)
    for name in set(summary) - LONG:
        assert len([c for c in calls if c[2] == titles[name]]) == 1, name


def test_a_section_that_misreports_cannot_overshoot_or_stall(
    monkeypatch: pytest.MonkeyPatch, digit: Path
) -> None:
    def chatty(model: Any, batch: Any, ctx: Any) -> Fragment:
        # declares 4 units, reports in tenths, repeats itself, goes backwards and past the end
        for done in (1, 5, 5, 3, 10, 12):
            ctx.advance(done, 10)
        return Fragment("<p>chatty</p>")

    def quits(model: Any, batch: Any, ctx: Any) -> Fragment:
        ctx.advance(1, 3)
        raise SectionUnavailable("not on this model")

    def silent(model: Any, batch: Any, ctx: Any) -> Fragment:
        return Fragment("<p>silent</p>")

    def show(fragment: Fragment, model: Any, ctx: Any) -> Fragment:
        return fragment  # these sections compute their fragment; drawing adds nothing

    sections = [
        ReportSection("chatty", "Chatty", 1, chatty, show, steps=lambda m, c: 4),
        ReportSection("quits", "Quits", 2, quits, show, steps=lambda m, c: 3),
        ReportSection("silent", "Silent", 3, silent, show),
    ]
    monkeypatch.setattr(report_module, "discover_sections", lambda index=False: sections)
    calls: list[tuple[int, int]] = []
    report = build_report(
        load_model("digits_cnn"), str(digit), progress=lambda d, t: calls.append((d, t))
    )
    # chatty: 1/10 and 5/10 of 4 units -> 0 (not reported) and 2; 10/10 -> 4; 12/10 capped at 4
    # quits: 1/3 of 3 -> 5, then its end -> 7 although it raised; silent: its end -> 8
    assert calls == [(0, 8), (2, 8), (4, 8), (5, 8), (7, 8), (8, 8)]
    assert [c["reason"] for s in report.sections for c in s["cells"]] == [
        None,
        "not on this model",
        None,
    ]
