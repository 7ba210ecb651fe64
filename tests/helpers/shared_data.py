"""Where the shared test data lives: ``../shared/data`` beside the checkout (CI copies it
there), else the work area's copy."""

from __future__ import annotations

from pathlib import Path

import pytest

_BESIDE = Path(__file__).resolve().parents[3] / "shared" / "data"
SHARED_DATA = _BESIDE if _BESIDE.is_dir() else Path("/work/shared/data")
CUE_CONFLICT_DEV = SHARED_DATA / "cue-conflict-dev"


def require_cue_conflict_dev() -> Path:
    """The cue-conflict set; a failure (not a skip) when it is missing, since CI always has it."""
    if not CUE_CONFLICT_DEV.is_dir():
        pytest.fail(
            f"{CUE_CONFLICT_DEV} is missing: the cue-conflict set ships in ../shared/data beside the checkout"
        )
    return CUE_CONFLICT_DEV
