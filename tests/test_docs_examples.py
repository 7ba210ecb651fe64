"""The worked examples of docs/adding-a-method.md run as written: every ``python`` block of a
``##`` section, in order, as one program in a fresh interpreter (a registered example
method or attack stays out of this test session's registries)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-method.md"


def _programs() -> dict[str, str]:
    programs: dict[str, str] = {}
    for section in re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.M | re.S)
        if blocks:
            programs[title] = "\n".join(blocks)
    return programs


PROGRAMS = _programs()


def test_every_kind_has_a_worked_example() -> None:
    assert set(PROGRAMS) >= {"Attribution methods", "Attacks", "Report sections", "CLI commands"}


@pytest.mark.parametrize("title", sorted(PROGRAMS))
def test_example_runs(title: str, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAMS[title]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{title}:\n{done.stderr[-3000:]}"
