"""mypy finds no type errors in src/ (settings in pyproject.toml's [tool.mypy]).

A renamed result key, a wrong argument type or a ``None`` left unchecked fails here, in
the fast tier, instead of in a user's run. The cache lives in the system temp directory,
so a second run only re-checks what changed (measured: cold about 30 s of CPU, most of it
reading torch's stubs, and up to two minutes on a busy machine; warm about 3 s).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_errors() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.fail("mypy is part of the test extra: pip install -e '.[test]'")
    cache = Path(tempfile.gettempdir()) / "convlens-mypy-cache"
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
