"""``convlens demo``: one run that shows what convlens does, on the built-in model.

Sections register themselves: every module in this package defines ``SECTION``, a
:class:`DemoSection`. A feature adds its part of the demo by adding a module here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.discovery import collect
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model

__all__ = ["DemoSection", "discover_sections", "run_demo"]


@dataclass(frozen=True)
class DemoSection:
    """One part of the demo.

    ``run(model, out_dir, progress, full)`` writes its files into ``out_dir`` and returns a
    JSON-able summary (including the names of the files it wrote under ``"files"``);
    ``full`` asks for the slow, complete variant (``convlens demo --full``).
    """

    name: str
    title: str
    order: int
    run: Callable[[Any, Path, ProgressFn | None, bool], dict[str, Any]]
    full_only: bool = False


def discover_sections() -> list[DemoSection]:
    """Every ``SECTION`` defined by a module of this package, in order."""
    return sorted(collect(__name__, "SECTION", DemoSection), key=lambda s: (s.order, s.name))


def run_demo(
    model: Model,
    out_dir: str | Path,
    *,
    full: bool = False,
    only: list[str] | None = None,
    on_section: Callable[[DemoSection], Any] | None = None,
) -> dict[str, Any]:
    """Run every demo section into ``out_dir``; returns (and writes) ``summary.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"model": model.name, "full": full, "sections": {}}
    for section in discover_sections():
        if (section.full_only and not full) or (only and section.name not in only):
            continue
        progress = on_section(section) if on_section else None
        started = time.perf_counter()
        result = section.run(model, out, progress, full)
        result["seconds"] = round(time.perf_counter() - started, 2)
        result["title"] = section.title
        summary["sections"][section.name] = result
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
