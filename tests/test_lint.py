"""ruff (with the implicit-string-concatenation and sorted-__all__ rules) is clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is part of the test extra: pip install -e '.[test]'")
    proc = subprocess.run([ruff, "check", "--output-format", "concise", "src", "tests", "scripts", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
