"""Acceptance checks of the inputs issue: awkward files, bad files, digits templates, models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.corpus import make_bad, make_good

pytestmark = pytest.mark.acceptance


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("convlens")
    cmd = [exe] if exe else [sys.executable, "-m", "convlens.cli.main"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_awkward_valid_files_are_all_predicted(tmp_path: Path) -> None:
    good = make_good(tmp_path / "good")
    proc = _cli("predict", *map(str, good), "--json", "--top-k", "1")
    assert proc.returncode == 0, proc.stderr
    sources = [p["source"] for p in json.loads(proc.stdout)["predictions"]]
    assert sources == [str(p) for p in good]


def test_every_bad_file_exits_2_naming_it_without_traceback(tmp_path: Path) -> None:
    for keyword, path in make_bad(tmp_path / "bad").items():
        started = time.perf_counter()
        proc = _cli("predict", str(path))
        assert proc.returncode == 2, (path, proc.stderr)
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], proc.stderr
        assert keyword.lower() in lines[0].lower(), (keyword, lines[0])
        assert time.perf_counter() - started < 60


def test_a_batch_mixing_good_and_bad_files_predicts_the_good_ones(tmp_path: Path) -> None:
    good = make_good(tmp_path / "good")[:4]
    bad = list(make_bad(tmp_path / "bad").values())
    mixed = [str(p) for pair in zip(good, bad[:4]) for p in pair] + [str(p) for p in bad[4:]]
    proc = _cli("predict", *mixed, "--json")
    assert proc.returncode == 2
    payload = json.loads(proc.stdout)
    assert [p["source"] for p in payload["predictions"]] == [str(p) for p in good]
    assert len(payload["errors"]) == len(bad)
    assert "Traceback" not in proc.stderr


def test_digit_templates_look_like_digits() -> None:
    """Each row of the linear classifier's weights, as an 8x8 image, correlates best with its
    own class's mean image (centred by the grand mean) among the ten classes."""
    import convlens
    from convlens.inspect import filters
    from convlens.models.small import load_dataset

    model = convlens.load_model("digits_linear")
    templates = filters(model, "classifier").tensors["weights"].view(10, 64).numpy()
    x, y = load_dataset("digits", "test")
    x = x.view(len(x), 64).numpy()
    means = np.stack([x[y.numpy() == c].mean(0) for c in range(10)])
    centred = means - x.mean(0)
    corr = np.corrcoef(np.concatenate([templates, centred]))[:10, 10:]
    assert (corr.argmax(axis=1) == np.arange(10)).all(), corr.round(2)
    assert np.diag(corr).min() > 0.5
    # the same check fails for a wrong reshape (transposed templates): it is not vacuous
    transposed = templates.reshape(10, 8, 8).transpose(0, 2, 1).reshape(10, 64)
    corr_t = np.corrcoef(np.concatenate([transposed, centred]))[:10, 10:]
    assert (corr_t.argmax(axis=1) == np.arange(10)).sum() < 10 or np.diag(corr_t).min() < np.diag(
        corr
    ).min()


@pytest.mark.parametrize(("name", "floor"), [("digits_cnn", 0.97), ("mnist_cnn", 0.97)])
def test_small_models_reach_their_held_out_accuracy(name: str, floor: float) -> None:
    import convlens
    from convlens.models.small import load_dataset

    model = convlens.load_model(name)
    x, y = load_dataset("digits" if name.startswith("digits") else "mnist", "test")
    with torch.no_grad():
        acc = (model.logits(model.normalize(x)).argmax(1) == y).float().mean().item()
    assert acc >= floor, acc


def test_filters_activations_gradients_commands_write_pictures(tmp_path: Path) -> None:
    from PIL import Image

    for args, out in [
        (["filters"], "f.png"),
        (["filters", "--layer", "blocks.1.depthwise_conv", "--scale", "filter"], "k.pdf"),
        (["activations", "sample:cat", "--layer", "blocks.4.expand_act"], "a.png"),
        (["gradients", "sample:cat", "--input-target", "blocks.5.expand_act:7"], "g.svg"),
    ]:
        proc = _cli(*args, "-o", str(tmp_path / out))
        assert proc.returncode == 0, proc.stderr
        data = (tmp_path / out).read_bytes()
        if out.endswith(".png"):
            with Image.open(tmp_path / out) as im:
                assert im.size[0] > 200
        else:
            assert data[:4] in (b"%PDF", b"<?xm", b"<svg")
