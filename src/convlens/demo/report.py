"""Demo section: the HTML report of one bundled photo (``convlens report`` on the cat).

One self-contained page (images inlined, no external URL) with every landed report
section; ``--full`` adds the slow ones (Score-CAM, more metric steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model

PHOTO = "sample:cat"


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool) -> dict[str, Any]:
    from convlens.render.report import build_report

    report = build_report(model, PHOTO, full=full, progress=progress)
    report.save(out / "report.html")
    summary = report.summary()
    return {
        "files": ["report.html"],
        "photo": PHOTO,
        "sections": [s.get("name") for s in summary.get("sections", [])],
    }


SECTION = DemoSection("report", "The HTML report of one photo", 90, run)
