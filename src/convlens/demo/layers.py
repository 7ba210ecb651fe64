"""Demo: the layer table with output shapes and receptive fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convlens.demo import DemoSection
from convlens.progress import ProgressFn

if TYPE_CHECKING:
    from convlens.models.model import Model


def run(model: Model, out: Path, progress: ProgressFn | None, full: bool = False) -> dict[str, Any]:
    rows = [r for r in model.layers() if r.is_leaf]
    (out / "layers.json").write_text(json.dumps([r.to_dict() for r in rows], indent=2))
    lines = [f"{'layer':<32} {'type':<16} {'output':<14} {'RF size':>8} {'RF stride':>9}"]
    for r in rows:
        rf = r.receptive_field
        shape = "x".join(map(str, r.output_shape)) if r.output_shape else "-"
        size = "global" if rf and rf.is_global else (f"{rf.size[0]:g}" if rf else "?")
        stride = "" if not rf or rf.is_global else f"{rf.stride[0]:g}"
        lines.append(f"{r.name:<32} {r.type:<16} {shape:<14} {size:>8} {stride:>9}")
    (out / "layers.txt").write_text("\n".join(lines) + "\n")
    if progress:
        progress(1, 1)
    return {"files": ["layers.json", "layers.txt"], "layers": len(rows)}


SECTION = DemoSection("layers", "Layers and receptive fields", 20, run)
