"""Tests of the small self-trained models, their data and the cache.

Each model trains once into a module-scoped temporary CONVLENS_CACHE_DIR; the cache tests
reuse those files (copied into their own folders where they damage them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import convlens.models.cache as cache_mod
from convlens.errors import BadInputError, UnknownModelError
from convlens.models import small
from convlens.models.cache import atomic_torch_save, cache_dir, file_sha256
from convlens.models.training import evaluate_accuracy

SRC = Path(small.__file__).resolve().parents[2]
NAMES = ["digits_cnn", "digits_linear", "mnist_cnn"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("convlens-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONVLENS_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def trained(shared_cache: Path) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    return {name: small.get_trained(name) for name in NAMES}


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder of its own, for tests that damage or race on files."""
    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def train_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count calls of train_classifier made by small.get_trained (they still train)."""
    calls: list[str] = []
    real = small.train_classifier

    def counting(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append("train")
        return real(*args, **kwargs)

    monkeypatch.setattr(small, "train_classifier", counting)
    return calls


def _forbid_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("get_trained retrained although a valid cache entry exists")

    monkeypatch.setattr(small, "train_classifier", fail)


def _copy_cached(name: str, source: Path, dest: Path) -> tuple[Path, Path]:
    stem = f"{name}-v{small.CACHE_VERSION}"
    for suffix in (".pt", ".json"):
        shutil.copy2(source / f"{stem}{suffix}", dest / f"{stem}{suffix}")
    return dest / f"{stem}.pt", dest / f"{stem}.json"


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- data -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dataset", "size", "n_train", "n_test"),
    [("digits", 8, 1438, 359), ("mnist", 28, 4000, 1000)],
)
def test_split_is_stratified_disjoint_and_complete(
    dataset: str, size: int, n_train: int, n_test: int
) -> None:
    x_train, y_train = small.load_dataset(dataset, "train")
    x_test, y_test = small.load_dataset(dataset, "test")
    assert x_train.shape == (n_train, 1, size, size) and x_test.shape == (n_test, 1, size, size)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert float(x_train.min()) >= 0.0 and float(x_train.max()) == 1.0
    # Stratified: each class's held-out share is 20 % of that class (rounded).
    train_counts = torch.bincount(y_train, minlength=10)
    test_counts = torch.bincount(y_test, minlength=10)
    for k in range(10):
        assert int(test_counts[k]) == round(0.2 * int(train_counts[k] + test_counts[k]))
    # Disjoint by content: no held-out image is also a training image.
    train_images = {row.numpy().tobytes() for row in x_train.reshape(n_train, -1)}
    assert not any(row.numpy().tobytes() in train_images for row in x_test.reshape(n_test, -1))
    # The same split on every call, and a fresh tensor each time.
    x_again, y_again = small.load_dataset(dataset, "test")
    assert torch.equal(x_again, x_test) and torch.equal(y_again, y_test)
    x_again.zero_()
    assert torch.equal(small.load_dataset(dataset, "test")[0], x_test)


def test_digits_pixels_are_sklearn_values_over_16() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = small.load_dataset("digits", "train")
    # Every training image is one of sklearn's images /16 with the same label.
    lookup = {
        row.tobytes(): int(t)
        for row, t in zip((bunch.data / 16.0).astype(np.float32), bunch.target)
    }
    for img, label in zip(x.reshape(len(x), 64).numpy()[:200], y[:200]):
        assert lookup[img.tobytes()] == int(label)


def test_mnist_loader_returns_real_labelled_digits() -> None:
    x_train, y_train = small.load_dataset("mnist", "train")
    x_test, y_test = small.load_dataset("mnist", "test")
    assert torch.bincount(y_train).tolist() == [400] * 10
    train_means = torch.stack([x_train[y_train == k].mean(0).flatten() for k in range(10)])
    test_means = torch.stack([x_test[y_test == k].mean(0).flatten() for k in range(10)])
    corr = np.corrcoef(torch.cat([train_means, test_means]).numpy())[:10, 10:]
    # Class k's mean image resembles held-out class k more than any other class: wrong
    # labels (e.g. the first pixel column read as the label) or a shuffled layout fail.
    assert corr.argmax(axis=1).tolist() == list(range(10))
    assert corr[0, 0] > corr[0, 1] + 0.2
    # Ink is bright on a dark background: the border is empty, the centre is not.
    border = torch.cat([x_train[..., :2, :].flatten(), x_train[..., -2:, :].flatten()])
    assert float(border.mean()) < 0.01 < 0.2 < float(x_train[..., 10:18, 10:18].mean())


def test_normalisation_constants_match_the_training_split() -> None:
    for dataset, mean, std in (
        ("digits", small.DIGITS_MEAN, small.DIGITS_STD),
        ("mnist", small.MNIST_MEAN, small.MNIST_STD),
    ):
        x, _ = small.load_dataset(dataset, "train")
        assert float(x.mean()) == pytest.approx(mean, abs=1e-3)
        assert float(x.std()) == pytest.approx(std, abs=1e-3)


def test_bad_names_are_refused() -> None:
    with pytest.raises(BadInputError, match="'cifar'"):
        small.load_dataset("cifar", "train")
    with pytest.raises(BadInputError, match="'val'"):
        small.load_dataset("digits", "val")
    with pytest.raises(UnknownModelError, match=r"'resnet'.*digits_cnn"):
        small.build_module("resnet")
    with pytest.raises(UnknownModelError):
        small.get_trained("resnet")


# -- architectures ----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_architecture_names_and_no_module_reuse(name: str) -> None:
    spec = small.SPECS[name]
    module = small.build_module(name)
    names = [n for n, _ in module.named_modules() if n]
    assert names[-1] == "classifier" and isinstance(module.classifier, nn.Linear)
    assert all("." not in n for n in names)  # flat, readable dotted names
    calls: dict[str, int] = {}
    for n, m in module.named_modules():
        if n:
            m.register_forward_hook(
                lambda _m, _i, _o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1)
            )
    out = module(torch.zeros(3, spec.channels, *spec.input_size))
    assert out.shape == (3, 10)
    assert calls == dict.fromkeys(names, 1)  # every layer, ReLUs included, runs exactly once
    relus = [n for n, m in module.named_modules() if isinstance(m, nn.ReLU)]
    assert all(n.startswith("act") for n in relus)
    assert len({id(module.get_submodule(n)) for n in relus}) == len(relus)
    if name == "digits_linear":
        assert names == ["flatten", "classifier"]
        assert module.classifier.weight.shape == (10, 64)


# -- trained models ---------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_trained_models_reach_the_accuracy_floor(name: str, trained: dict[str, Any]) -> None:
    module, meta = trained[name]
    spec = small.SPECS[name]
    x, y = small.load_dataset(spec.dataset, "test")
    assert not module.training
    # Recount independently of evaluate_accuracy.
    with torch.no_grad():
        predicted = module((x - spec.mean) / spec.std).argmax(dim=1)
    accuracy = float((predicted == y).float().mean())
    assert accuracy >= (0.93 if name == "digits_linear" else 0.97)
    assert accuracy == pytest.approx(meta["held_out_accuracy"], abs=1e-6)
    assert evaluate_accuracy(module, spec.normalize(x), y) == pytest.approx(accuracy, abs=1e-6)


def test_linear_weights_are_digit_templates(trained: dict[str, Any]) -> None:
    module, _ = trained["digits_linear"]
    spec = small.SPECS["digits_linear"]
    x, y = small.load_dataset("digits", "train")
    means = torch.stack([spec.normalize(x[y == k]).mean(0).flatten() for k in range(10)])
    templates = module.classifier.weight.detach().reshape(10, 8, 8).flatten(1)
    corr = np.corrcoef(torch.cat([templates, means]).numpy())[:10, 10:]
    assert corr.argmax(axis=1).tolist() == list(range(10))


def test_metadata_and_files(trained: dict[str, Any], shared_cache: Path) -> None:
    for name in NAMES:
        _, meta = trained[name]
        weights, sidecar = small.cache_paths(name)
        assert weights == shared_cache / f"{name}-v1.pt" and weights.exists()
        assert json.loads(sidecar.read_text()) == meta
        assert meta["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert meta["name"] == name and meta["seed"] == small.train_config(name).seed
        assert meta["epochs"] == small.train_config(name).epochs
        assert meta["torch"] == torch.__version__ and meta["created"].endswith("+00:00")
        state = torch.load(weights, weights_only=True)
        assert set(state) == set(small.build_module(name).state_dict())
    assert not list(shared_cache.glob("*.tmp"))


# -- the cache --------------------------------------------------------------------------
def test_second_call_loads_from_the_cache(
    trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_training(monkeypatch)
    for name in NAMES:
        module, meta = small.get_trained(name)
        assert not module.training
        assert _state_equal(module, trained[name][0])
        assert meta == trained[name][1]


def test_cache_dir_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "nested" / "cache"
    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(target))
    assert cache_dir() == target and target.is_dir()
    assert small.cache_paths("digits_cnn")[0].parent == target
    default = tmp_path / "platform-default"
    monkeypatch.delenv("CONVLENS_CACHE_DIR")
    monkeypatch.setattr(
        cache_mod.platformdirs, "user_cache_dir", lambda appname: str(default / appname)
    )
    assert cache_dir() == default / "convlens" and cache_dir().is_dir()


def test_training_writes_into_the_env_folder(fresh_cache: Path, train_calls: list[str]) -> None:
    calls: list[tuple[int, int]] = []
    _, meta = small.get_trained("digits_linear", progress=lambda d, t: calls.append((d, t)))
    assert train_calls == ["train"]
    epochs = small.train_config("digits_linear").epochs
    assert calls[-1] == (epochs, epochs) and len(calls) == epochs
    assert sorted(p.name for p in fresh_cache.iterdir()) == [
        "digits_linear-v1.json",
        "digits_linear-v1.pt",
    ]
    assert meta["sha256"] == file_sha256(fresh_cache / "digits_linear-v1.pt")


@pytest.mark.parametrize(
    "damage", ["flip_byte", "truncate", "bad_json", "missing_sidecar", "other_weights"]
)
def test_damaged_cache_is_retrained(
    damage: str,
    trained: dict[str, Any],
    shared_cache: Path,
    fresh_cache: Path,
    train_calls: list[str],
) -> None:
    weights, sidecar = _copy_cached("digits_linear", shared_cache, fresh_cache)
    if damage == "flip_byte":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "bad_json":
        sidecar.write_text("{not json")
    elif damage == "missing_sidecar":
        sidecar.unlink()
    else:
        # Two writers interleaved: weights from one training, sidecar from another. The
        # other weights load fine, so only the hash check can catch the mismatch.
        other = small.build_module("digits_linear")
        atomic_torch_save(other.state_dict(), weights)
    module, meta = small.get_trained("digits_linear")
    assert train_calls == ["train"]
    assert _state_equal(module, trained["digits_linear"][0])  # seeded: the same weights again
    assert meta["sha256"] == file_sha256(weights) == json.loads(sidecar.read_text())["sha256"]
    small.get_trained("digits_linear")
    assert train_calls == ["train"]  # the repaired entry is used


def test_retrain_flag_overwrites(
    shared_cache: Path, fresh_cache: Path, train_calls: list[str]
) -> None:
    _, sidecar = _copy_cached("digits_linear", shared_cache, fresh_cache)
    before = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**before, "marker": "old entry"}))  # still a valid entry
    _, meta = small.get_trained("digits_linear", retrain=True)
    assert train_calls == ["train"]
    assert meta["sha256"] == before["sha256"]  # deterministic training, same bytes
    assert "marker" not in json.loads(sidecar.read_text())


def test_two_processes_training_at_once_leave_a_valid_cache(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = (
        "from convlens.models.small import get_trained; get_trained('digits_linear', retrain=True)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "CONVLENS_CACHE_DIR": str(fresh_cache)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    assert sorted(p.name for p in fresh_cache.iterdir()) == [
        "digits_linear-v1.json",
        "digits_linear-v1.pt",
    ]
    # Both children train the same seeded model, so whichever wrote last, the weights and
    # the sidecar agree and the entry loads without retraining.
    _forbid_training(monkeypatch)
    module, meta = small.get_trained("digits_linear")
    assert meta["sha256"] == file_sha256(fresh_cache / "digits_linear-v1.pt")
    x, y = small.load_dataset("digits", "test")
    assert evaluate_accuracy(module, small.SPECS["digits_linear"].normalize(x), y) >= 0.93


# -- cache helpers ----------------------------------------------------------------------
def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_atomic_save_round_trips_and_never_leaves_partial_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "w.pt"
    state = {"a": torch.arange(5.0)}
    atomic_torch_save(state, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], state["a"])
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails inside torch.save
        atomic_torch_save({"f": lambda: 0}, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["w.pt"]
