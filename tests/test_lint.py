"""ruff is clean (lint rules, including implicit string concatenation and sorted
``__all__``) and the tree is formatted with ``ruff format`` at the line length set
in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["src", "tests", "scripts", "benchmarks"]


def _ruff() -> str:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is part of the test extra: pip install -e '.[test]'")
    return ruff


def test_ruff_is_clean() -> None:
    proc = subprocess.run(
        [_ruff(), "check", "--output-format", "concise", *CHECKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tree_is_ruff_formatted() -> None:
    # The pinned ruff in the test extra decides the layout; run `ruff format .` to fix.
    proc = subprocess.run(
        [_ruff(), "format", "--check", *CHECKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, "run `ruff format .`:\n" + proc.stdout + proc.stderr
