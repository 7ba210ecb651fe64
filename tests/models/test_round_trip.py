"""Round trip (DESIGN.md): pixels saved as an 8-bit PNG at model size are classified exactly as reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

import convlens
from convlens.data.images import load_image, quantize_8bit, save_image


def test_png_at_input_size_round_trips_exactly(tmp_path: Path, lite0: convlens.Model) -> None:
    g = torch.Generator().manual_seed(0)
    pixels = quantize_8bit(torch.rand(3, 224, 224, generator=g))  # e.g. an adversarial image
    path = save_image(pixels, tmp_path / "adv.png")
    assert torch.equal(load_image(path), pixels)
    batch = lite0.prepare([str(path)])
    assert batch.geometries[0].identity
    expected = lite0.logits(lite0.normalize(pixels[None])).softmax(1)[0]
    reported = lite0.predict(batch, top_k=3)[0]
    assert reported.classes == expected.topk(3).indices.tolist()
    torch.testing.assert_close(
        torch.tensor(reported.probabilities), expected.topk(3).values, rtol=0, atol=1e-6
    )
    # and through the command line, in another process
    proc = subprocess.run(
        [sys.executable, "-m", "convlens.cli.main", "predict", str(path), "--json", "--top-k", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    cli = json.loads(proc.stdout)["predictions"][0]["top"]
    assert [t["class"] for t in cli] == reported.classes
    assert abs(cli[0]["probability"] - reported.probabilities[0]) < 1e-6
