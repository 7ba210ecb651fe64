"""The HTML report: everything convlens says about one image, in one self-contained file.

``convlens report IMAGE -o report.html`` (and :func:`build_report`) runs every report
section on one image with one or more models and writes a single HTML file: pictures are
inlined as ``data:`` URIs, the CSS is inline, no URL points outside the
file, so it opens from disk and can be mailed. Photos, overlays and feature-map grids are JPEG
at the size they are shown (twice the CSS width, for high-density screens), which keeps the
report of one photo under 2 MB; pictures whose every pixel matters (the adversarial image,
its original and perturbation, the class visualisation, the filters) stay PNG.

Sections register themselves: every module of this package that defines ``SECTION`` (a
:class:`ReportSection`) is one section, ordered by ``order``. A feature adds its part of
the report by adding a module here; a feature that has not landed has no module and its
section is absent. A section that cannot run on a given model (for example occlusion
patches larger than an 8x8 digit) raises :class:`SectionUnavailable`, and the page says
so for that model instead of showing a picture.

A section is two functions: ``compute`` calls the library's own functions (``explain``,
``faithfulness_ranking``, ``attack``, ``visualize_class`` ...) and ``render`` its own
renderers (``overlay``, ``filters_mosaic`` ...), never a re-implementation, so every picture
equals what the library returns for the arguments recorded in the picture's provenance (the
tests check this by hash), and drawing never runs the model.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.atomic import atomic_write_text
from convlens.discovery import collect
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model

__all__ = [
    "Fragment",
    "Report",
    "ReportContext",
    "ReportImage",
    "ReportSection",
    "SectionUnavailable",
    "build_report",
    "discover_sections",
    "figure_html",
]


class SectionUnavailable(Exception):
    """A section cannot run on this model (the reason is shown in the report)."""


@dataclass(frozen=True)
class ReportImage:
    """One inlined picture: its encoded bytes (``png`` for history: PNG, JPEG or WebP as
    ``mime`` says), a caption and what made it."""

    name: str
    png: bytes
    caption: str
    provenance: dict[str, Any] = field(default_factory=dict)
    mime: str = "image/png"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.png).hexdigest()

    @property
    def data_uri(self) -> str:
        return f"data:{self.mime};base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Fragment:
    """What a section made for one model: HTML, the pictures it embeds, a JSON summary."""

    html: str
    images: list[ReportImage] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportContext:
    """Options shared by all sections, and what earlier sections recorded for later ones.

    ``full`` asks for the slow, complete variants; ``records`` maps a section name to the
    parameters it used (the provenance section lists them).
    """

    full: bool = False
    seed: int = 0
    top_k: int = 5
    source: str = ""
    records: dict[str, Any] = field(default_factory=dict)
    index: str | None = None  # a `convlens features` folder, for the neighbours section
    #: how attribution maps are drawn (``render.display``): the sign (None: each method's
    #: default) and the percentile drawn at full colour (None: 99)
    sign: str | None = None
    clip: float | None = None
    #: ``progress(done, total)`` inside the running section (set by :func:`build_report`;
    #: sections report through :meth:`advance` or hand it to a library ``progress=``)
    progress: ProgressFn | None = field(default=None, repr=False, compare=False)

    def advance(self, done: int, total: int) -> None:
        """Report that ``done`` of the running section's ``total`` units are finished."""
        if self.progress is not None:
            self.progress(done, total)


@dataclass(frozen=True)
class ReportSection:
    """One part of the report, in two steps that never mix.

    ``compute(model, batch, ctx)`` calls the library (``explain``, ``attack``, metrics ...:
    everything that runs the model or does maths) and returns what the section shows, or
    raises :class:`SectionUnavailable` when it cannot run on the model.
    ``render(data, model, ctx)`` only draws: it turns ``data`` into a :class:`Fragment`
    with the library's renderers, reading nothing from the model but its names and labels
    (a test runs every section's render with the model's forward disabled).
    """

    name: str
    title: str
    order: int
    compute: Callable[[Any, Any, ReportContext], Any]
    render: Callable[[Any, Any, ReportContext], Fragment]
    needs_index: bool = False  # part of the page only when the report is given an index
    #: ``steps(model, ctx)``: how many units of the progress bar the section is worth on
    #: ``model`` (its methods, optimisation steps ...), known before it runs; default 1
    steps: Callable[[Any, ReportContext], int] | None = None

    def build(self, model: Model, batch: Any, ctx: ReportContext) -> Fragment:
        """:attr:`compute`, then :attr:`render`: the section's fragment for ``model``."""
        return self.render(self.compute(model, batch, ctx), model, ctx)

    def weight(self, model: Model, ctx: ReportContext) -> int:
        """The section's share of the report's progress total on ``model`` (at least 1)."""
        return max(1, int(self.steps(model, ctx))) if self.steps is not None else 1


def discover_sections(*, index: bool = False) -> list[ReportSection]:
    """Every ``SECTION`` defined by a module of this package, in order (with ``index``, also
    the sections that need a features index)."""
    sections = collect(__name__, "SECTION", ReportSection)
    return sorted(
        (s for s in sections if index or not s.needs_index), key=lambda s: (s.order, s.name)
    )


def figure_html(image: ReportImage, *, width: int | None = None) -> str:
    """An inlined ``<figure>`` with the caption and the picture's provenance (folded)."""
    style = f' style="width:{int(width)}px"' if width else ""
    prov = html.escape(json.dumps(image.provenance, indent=1, default=str))
    return (
        f'<figure data-name="{html.escape(image.name)}" data-sha256="{image.sha256}">'
        + f'<img src="{image.data_uri}" alt="{html.escape(image.caption)}"{style}>'
        + f"<figcaption>{html.escape(image.caption)}</figcaption>"
        + f"<details><summary>provenance</summary><pre>{prov}</pre></details></figure>"
    )


@dataclass
class Report:
    """A built report: the page and, per section and model, the fragment (or why not)."""

    html: str
    source: str
    models: list[str]
    sections: list[dict[str, Any]]
    seconds: float

    @property
    def images(self) -> list[ReportImage]:
        return [
            image
            for s in self.sections
            for cell in s["cells"]
            if cell["fragment"] is not None
            for image in cell["fragment"].images
        ]

    def summary(self) -> dict[str, Any]:
        """JSON-able: models, source, per section and model the numbers or the reason it is missing."""
        sections = []
        for s in self.sections:
            per_model = {}
            for cell in s["cells"]:
                frag = cell["fragment"]
                per_model[cell["model"]] = (
                    {
                        "available": True,
                        "images": len(frag.images),
                        "seconds": cell["seconds"],
                        **frag.summary,
                    }
                    if frag is not None
                    else {"available": False, "reason": cell["reason"], "seconds": cell["seconds"]}
                )
            sections.append({"name": s["name"], "title": s["title"], "models": per_model})
        return {
            "source": self.source,
            "models": self.models,
            "sections": sections,
            "images": len(self.images),
            "bytes": len(self.html.encode()),
            "seconds": round(self.seconds, 2),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the page atomically (a reader never sees half a report)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(out, self.html)


class _Meter:
    """The report's progress: each (section, model) owns ``weight`` units of the total; what
    a section reports as ``(done, total)`` of its own is scaled onto its units, so ``done``
    only rises (a section that reports more or less than it declared cannot overshoot or
    stall the bar) and reaches ``total`` when the last section ends."""

    def __init__(self, progress: ProgressFn | None, total: int) -> None:
        self.progress, self.total, self.done, self.start, self.weight = progress, total, 0, 0, 0

    def _emit(self, done: int) -> None:
        if done > self.done:
            self.done = done
            if self.progress is not None:
                self.progress(done, self.total)

    def section(self, weight: int) -> ProgressFn:
        self.start, self.weight = self.done, weight

        def inner(done: int, total: int) -> None:
            if total > 0:
                self._emit(self.start + min(self.weight, self.weight * max(done, 0) // total))

        return inner

    def finish_section(self) -> None:
        self._emit(self.start + self.weight)


def build_report(
    models: Any | Sequence[Any],
    image: Any,
    *,
    full: bool = False,
    seed: int = 0,
    top_k: int = 5,
    only: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    on_section: Callable[[str, str], None] | None = None,
    index: str | os.PathLike[str] | None = None,
    name: str | None = None,
    sign: str | None = None,
    clip: float | None = None,
) -> Report:
    """Run every report section on ``image`` for each model and assemble the page.

    Parameters
    ----------
    models
        One convlens ``Model`` or several (shown side by side, one column each).
    image
        A path, ``sample:NAME``, array or PIL image (``Model.prepare`` rules).
    full
        Slow, complete variants (every method at its defaults, more steps).
    seed
        Seeds every random choice (SmoothGrad noise, class visualisation, PGD start).
    top_k
        Predictions listed.
    only
        Section names to run (default: all).
    progress
        ``progress(done, total)``: ``total`` is known before the first section runs (each
        section's :meth:`ReportSection.weight` per model: attribution methods, class
        visualisation and attack steps count one each), ``done`` rises inside long sections
        and ends at ``total``.
    on_section
        Called with ``(section title, model name)`` before each section runs.
    index
        A ``convlens features`` folder: adds the nearest-neighbours section.
    name
        How the page names the image (default: the path, or the object's ``name``); the web
        explorer passes the uploaded file's name instead of its temp path.
    sign, clip
        How the attribution, Grad-CAM and segmentation maps are drawn
        (:mod:`convlens.render.display`): ``"positive"``, ``"negative"``, ``"absolute"`` or
        ``"all"`` (None: each method's default) and the percentile drawn at full colour
        (None: 99). The web explorer's report panel passes its controls here.

    Returns
    -------
    Report
        ``.html`` (the page), ``.summary()``, ``.save(path)``.

    Raises
    ------
    BadInputError
        An unreadable image, or ``only`` naming an unknown section.
    """
    from convlens.errors import BadInputError
    from convlens.render.report._page import render_page

    started = time.perf_counter()
    model_list: list[Any] = list(models) if isinstance(models, (list, tuple)) else [models]
    sections = discover_sections(index=index is not None)
    if only:
        known = {s.name for s in sections}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise BadInputError(
                f"unknown report section {unknown[0]!r}; choose from {', '.join(sorted(known))}"
            )
        sections = [s for s in sections if s.name in only]
    source = (
        name
        if name is not None
        else image
        if isinstance(image, str)
        else getattr(image, "name", type(image).__name__)
    )
    batches = [
        model.prepare([image], sources=[str(source)]) for model in model_list
    ]  # bad input fails before any work
    contexts = [
        ReportContext(
            full=full,
            seed=seed,
            top_k=top_k,
            source=str(source),
            index=None if index is None else str(index),
            sign=sign,
            clip=clip,
        )
        for _ in model_list
    ]
    weights = {
        (s.name, i): s.weight(m, ctx)
        for s in sections
        for i, (m, ctx) in enumerate(zip(model_list, contexts))
    }
    meter = _Meter(progress, sum(weights.values()))
    if progress is not None:
        progress(0, meter.total)  # the total, before the first section runs
    built = []
    for section in sections:
        cells = []
        for i, (model, batch, ctx) in enumerate(zip(model_list, batches, contexts)):
            if on_section:
                on_section(section.title, model.name)
            t0 = time.perf_counter()
            fragment, reason = None, None
            ctx.progress = meter.section(weights[section.name, i])
            try:
                fragment = section.build(model, batch, ctx)
            except SectionUnavailable as exc:
                reason = str(exc)
            finally:
                ctx.progress = None
            cells.append(
                {
                    "model": model.name,
                    "fragment": fragment,
                    "reason": reason,
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            meter.finish_section()
        built.append({"name": section.name, "title": section.title, "cells": cells})
    page = render_page(str(source), [m.name for m in model_list], built, full=full, seed=seed)
    return Report(
        page, str(source), [m.name for m in model_list], built, time.perf_counter() - started
    )
