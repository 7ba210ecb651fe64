"""The HTML report's sections in the explorer: list them for a model, run them as a job.

The explorer does not re-implement a section: a job calls
:func:`convlens.render.report.build_report` with ``only=`` the chosen sections on the
uploaded image, so every fragment and picture is the report's own (the tests compare them
by hash with a report built from the same file). The fragments are self-contained HTML
(pictures inlined as ``data:`` URIs), which the page inserts as they are.

A features folder given to the server for the model (``convlens serve --features DIR``) is
handed to the report as its index, which adds the nearest-neighbours section.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from convlens.errors import BadInputError

if TYPE_CHECKING:
    from convlens.server.app import Explorer

__all__ = ["ReportJobRequest", "report_job", "report_sections"]


class ReportJobRequest(BaseModel):
    image: str
    model: str | None = None
    #: section names, in any order (they run in the report's order); None: every section
    sections: list[str] | None = None
    full: bool = False
    #: how maps are drawn, as ``convlens explain --sign/--clip`` (None: each method's default; 99)
    sign: Literal["positive", "absolute", "negative", "all"] | None = None
    clip: float | None = Field(default=None, gt=0, le=100)


def _index(explorer: Explorer, model_name: str) -> str | None:
    """The features folder the report uses as its index for this model (the first given)."""
    folders = explorer.features.for_model(model_name)
    return str(folders[0].folder) if folders else None


def report_sections(explorer: Explorer, model: str | None) -> dict[str, Any]:
    """The sections a report on ``model`` has, in order, with their share of the progress."""
    from convlens.render.report import ReportContext, discover_sections

    slot = explorer.slot(model)
    index = _index(explorer, slot.model.name)
    ctx = ReportContext(index=index)
    return {
        "model": slot.model.name,
        "index": index,
        "sections": [
            {"name": s.name, "title": s.title, "steps": s.weight(slot.model, ctx)}
            for s in discover_sections(index=index is not None)
        ],
    }


def _cell(section: dict[str, Any]) -> dict[str, Any]:
    """One built section for one model, JSON-able: HTML, pictures' hashes, summary or reason."""
    cell = section["cells"][0]
    fragment = cell["fragment"]
    out: dict[str, Any] = {
        "name": section["name"],
        "title": section["title"],
        "seconds": cell["seconds"],
        "available": fragment is not None,
    }
    if fragment is None:
        return {**out, "reason": cell["reason"], "html": "", "images": [], "summary": {}}
    return {
        **out,
        "reason": None,
        "html": fragment.html,
        "images": [
            {"name": i.name, "sha256": i.sha256, "caption": i.caption, "mime": i.mime}
            for i in fragment.images
        ],
        "summary": json.loads(json.dumps(fragment.summary, default=str)),
    }


def report_job(explorer: Explorer, request: ReportJobRequest) -> dict[str, Any]:
    """Run report sections on an image as a job (progress and cancel; a stored run comes
    back done). Everything is checked before the job starts: image, model, section names."""
    from convlens.render.report import build_report, discover_sections
    from convlens.server.app import _key

    slot = explorer.slot(request.model)
    image_id = request.image
    explorer.image_meta(image_id)
    index = _index(explorer, slot.model.name)
    known = [s.name for s in discover_sections(index=index is not None)]
    if request.sections is not None:
        if not request.sections:
            raise BadInputError("sections is empty; name at least one or omit it for all")
        unknown = [n for n in request.sections if n not in known]
        if unknown:
            raise BadInputError(
                f"unknown report section {unknown[0][:40]!r}; choose from {', '.join(known)}"
            )
    names = known if request.sections is None else [n for n in known if n in request.sections]
    clip = None if request.clip is None else round(request.clip, 2)
    key = _key(slot.model.name, names, request.full, index, request.sign, clip)
    info = explorer.file(image_id, f"report-{key}.json")

    def answer() -> dict[str, Any]:
        return {"image": image_id, **json.loads(info.read_text())}

    if info.exists():
        return explorer.jobs.finished("report", answer()).to_dict()

    def work(progress: Any) -> dict[str, Any]:
        if not info.exists():
            source, name = explorer.source(image_id)
            total = [1]

            def watch(done: int, all_: int) -> None:
                total[0] = all_
                progress(done, all_)

            with slot.lock:
                report = build_report(
                    slot.model,
                    source,
                    full=request.full,
                    only=names,
                    progress=watch,
                    index=index,
                    name=name,
                    sign=request.sign,
                    clip=clip,
                )
            progress(total[0], total[0])  # a cancel at the very end still stores nothing
            meta = {
                "key": key,
                "model": slot.model.name,
                "full": request.full,
                "sign": request.sign,
                "clip": clip,
                "seconds": round(report.seconds, 2),
                "sections": [_cell(s) for s in report.sections],
            }
            explorer.storage.write(info, json.dumps(meta).encode())
        return answer()

    return explorer.jobs.submit("report", work).to_dict()
