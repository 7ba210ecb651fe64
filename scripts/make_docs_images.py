"""Regenerate the pictures in docs/images/ from the demo (run after changing a view).

    python scripts/make_docs_images.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import convlens
from convlens.demo import run_demo


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    model = convlens.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_demo(model, tmp)
        for section in summary["sections"].values():
            for name in section["files"]:
                if name.endswith(".png"):
                    shutil.copy(Path(tmp) / name, out / name)
                    print(f"docs/images/{name}")


if __name__ == "__main__":
    main()
