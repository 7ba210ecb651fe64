"""Acceptance of issue 18 part 4: the example notebooks in docs/notebooks run and show pictures.

Each notebook is executed top to bottom in a fresh Jupyter kernel (nbclient, a time limit
per cell, one torch thread), so an API change that breaks a cell fails here instead of in a
reader's hands. Every cell after the first (imports and models) ends by showing a result,
and must produce an ``image/png`` output that decodes to a picture that is not blank: a
broken ``_repr_png_`` (an exception, None, an empty figure) fails. Cells that show a batch
must also produce the ``text/html`` block with one inlined PNG per image. Measured run times
are printed (``-s``).
"""

from __future__ import annotations

import base64
import io
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(600)]

nbformat = pytest.importorskip("nbformat", reason="needs nbformat (test extra)")
nbclient = pytest.importorskip("nbclient", reason="needs nbclient and ipykernel (test extra)")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "docs" / "notebooks"
CELL_TIMEOUT = 240  # seconds, per cell
#: notebook -> (at least this many cells with pictures, images in each batch cell by its first line)
EXPECTED = {
    "attribution-tour.ipynb": (
        6,
        {'convlens.explain(model, ["sample:cat", "sample:hopper"], "gradcam")': 2},
    ),
    "optimisation-tour.ipynb": (5, {"visualize_class(digits, [0, 3, 7], steps=200, seed=0)": 3}),
}


def _picture(data: str) -> np.ndarray:
    raw = base64.b64decode(data)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(int)


def _execute(path: Path, tmp_path: Path) -> Any:
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working folder
    )
    # one torch thread: the machine is shared (the kernel inherits this environment)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        client.execute()
    print(f"{path.name}: {time.perf_counter() - started:.1f} s")
    return notebook


def test_the_docs_hold_the_notebooks() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)
    for name in EXPECTED:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        # stored clean: the docs carry the code, the test (and the reader) the outputs
        assert all(
            not c.get("outputs") and c.get("execution_count") is None
            for c in notebook.cells
            if c.cell_type == "code"
        ), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_and_every_result_shows_a_picture(name: str, tmp_path: Path) -> None:
    notebook = _execute(NOTEBOOKS / name, tmp_path)
    least, batches = EXPECTED[name]
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    with_pictures = 0
    for cell in code_cells[1:]:
        pngs = [o.data["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        assert pngs, f"{name}: no picture from cell\n{cell.source}"
        for data in pngs:
            pixels = _picture(data)
            assert min(pixels.shape[:2]) >= 150, (
                f"{name}: a tiny picture {pixels.shape}\n{cell.source}"
            )
            assert pixels.std(axis=(0, 1)).max() > 20, f"{name}: a blank picture\n{cell.source}"
        with_pictures += 1
        expected_images = next((n for first, n in batches.items() if first in cell.source), None)
        if expected_images is not None:
            html = next(
                o.data["text/html"] for o in cell.outputs if "text/html" in o.get("data", {})
            )
            inlined = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
            assert len(inlined) == expected_images
            for data in inlined:
                assert _picture(data).std(axis=(0, 1)).max() > 20
    assert with_pictures >= least
