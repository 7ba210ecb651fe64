"""Commonly used public functions leave the caller's global state as they found it.

The registry (tests/test_registry_invariants.py) checks every attribution method; this walks
the rest a user calls every day: loading (and training) a small model, explain, attack, class
visualisation, inversion, features over a folder (also in worker processes), embeddings, the
nearest-neighbour index, corruptions, style transfer and the command line run in-process.
After each: torch's thread count (set to an odd value first, so a function that sets any
count of its own shows), torch's global RNG, grad mode, NumPy's and Python's global RNGs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn.datasets  # noqa: F401  imported before the checks: rich, which it imports, draws from Python's RNG once at import
import torch
from PIL import Image

import convlens
from convlens.cli.main import main

from helpers.tiny import tiny_model

#: a count no library code picks by itself (1 for training, the core count, 2 in the conftest)
ODD_THREADS = 3


@pytest.fixture(autouse=True)
def _odd_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(ODD_THREADS)
    yield
    torch.set_num_threads(before)


def _state() -> dict[str, Any]:
    return {
        "threads": torch.get_num_threads(),
        "grad": torch.is_grad_enabled(),
        "torch_rng": torch.random.get_rng_state(),
        "numpy_rng": np.random.get_state()[1].copy(),  # type: ignore[index]
        "python_rng": random.getstate(),
    }


def _assert_leaves_state(call: Callable[[], object]) -> None:
    before = _state()
    call()
    after = _state()
    assert after["threads"] == before["threads"] == ODD_THREADS, (
        f"thread count {before['threads']} -> {after['threads']}"
    )
    assert after["grad"] is before["grad"], "grad mode changed"
    assert torch.equal(after["torch_rng"], before["torch_rng"]), "torch's global RNG moved"
    assert np.array_equal(after["numpy_rng"], before["numpy_rng"]), "NumPy's global RNG moved"
    assert after["python_rng"] == before["python_rng"], "Python's global RNG moved"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / str(c)).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                root / str(c) / f"{i}.png"
            )
    return root


def test_loading_a_small_model_trained_then_cached() -> None:
    # the first call trains (one thread inside, seeded), the second builds and loads the cache:
    # building a module draws initial weights from the global RNG unless the loader forks it
    _assert_leaves_state(lambda: convlens.load_model("digits_cnn"))
    _assert_leaves_state(lambda: convlens.load_model("digits_cnn"))


def test_explain_attack_and_optimisation_on_digits() -> None:
    model = convlens.load_model("digits_cnn")
    pixels = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    from convlens.optimize.invert import invert
    from convlens.optimize.visualize import visualize_class

    for method in ("saliency", "gradcam", "smoothgrad", "integrated_gradients"):
        _assert_leaves_state(lambda method=method: convlens.explain(model, pixels, method))
    for method in ("fgsm", "pgd", "square"):
        _assert_leaves_state(
            lambda method=method: convlens.attack(model, pixels, method, eps=0.1, steps=3)
        )
    _assert_leaves_state(lambda: visualize_class(model, [3], steps=3, seed=0))
    _assert_leaves_state(
        lambda: invert(
            model,
            pixels[:1],
            "relu1" if "relu1" in dict(model.module.named_modules()) else _first_layer(model),
            steps=3,
        )
    )
    with torch.no_grad():  # a caller evaluating under no_grad keeps it
        _assert_leaves_state(lambda: convlens.explain(model, pixels, "saliency"))


def _first_layer(model: convlens.Model) -> str:
    return next(name for name, m in model.module.named_modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("workers", [1, 2])
def test_features_embedding_and_index(folder: Path, tmp_path: Path, workers: int) -> None:
    from convlens.represent import build_index, embed, extract_features, load_features

    model = tiny_model()
    out = tmp_path / "features"
    _assert_leaves_state(
        lambda: extract_features(model, str(folder), "relu2", out, shard_size=4, workers=workers)
    )
    features = load_features(out)
    if workers == 1:
        for method in ("pca", "tsne"):
            _assert_leaves_state(lambda method=method: embed(features, method))
        index_dir = tmp_path / "index"
        index_dir.mkdir()
        _assert_leaves_state(lambda: build_index(features.codes, folder=index_dir, n_queries=5))


def test_corruptions() -> None:
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    from convlens.robustness import corrupt

    # glass blur shuffles pixels in numba, impulse noise draws in skimage, the rest in NumPy
    for name in ("gaussian_noise", "impulse_noise", "glass_blur", "fog"):
        _assert_leaves_state(lambda name=name: corrupt(pixels, name, 2))


def test_style_transfer() -> None:
    model = tiny_model()
    content = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    style = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    _assert_leaves_state(
        lambda: convlens.style_transfer(
            model,
            content,
            style,
            content_layers=["relu2"],
            style_layers=["relu1", "relu2"],
            steps=3,
        )
    )


def test_command_line_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    # --threads sets torch's count for the command; a caller that runs main() in its own
    # process (a notebook, a test, the web explorer) keeps its setting
    _assert_leaves_state(
        lambda: main(["predict", "sample:cat", "--model", "digits_cnn", "--threads", "1", "--json"])
    )
    _assert_leaves_state(lambda: main(["predict", "sample:cat", "--model", "digits_cnn", "--json"]))
    capsys.readouterr()
