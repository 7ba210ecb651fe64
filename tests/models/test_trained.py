"""The shared cache entry of self-trained models (convlens.models.trained): a valid entry is
loaded, anything else is trained again, and the four model families go through it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from convlens.models import adversarial_training, biased, segmentation, small
from convlens.models.trained import CacheEntry, load_or_train


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONVLENS_CACHE_DIR", str(tmp_path))
    return tmp_path


class _Trainer:
    """Builds a 2->2 linear layer with weights set from a counter, so a retrain is visible."""

    def __init__(self) -> None:
        self.calls = 0

    def build(self) -> nn.Module:
        return nn.Linear(2, 2)

    def train(self) -> tuple[nn.Module, dict[str, Any]]:
        self.calls += 1
        module = self.build()
        with torch.no_grad():
            module.weight.fill_(float(self.calls))
            module.bias.fill_(-float(self.calls))
        return module, {"name": "toy", "version": 3, "calls": self.calls}


def test_first_call_trains_and_writes_weights_then_sidecar_with_their_hash(cache: Path) -> None:
    trainer, entry = _Trainer(), CacheEntry("toy", 3)
    module, meta = load_or_train(entry, trainer.build, trainer.train)
    weights, sidecar = entry.paths()
    assert (weights, sidecar) == (cache / "toy-v3.pt", cache / "toy-v3.json")
    assert sorted(p.name for p in cache.iterdir()) == ["toy-v3.json", "toy-v3.pt"]
    on_disk = json.loads(sidecar.read_text())
    assert on_disk == meta and meta["calls"] == 1 and meta["total_seconds"] >= 0
    assert meta["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    state = torch.load(weights, weights_only=True)
    assert torch.equal(state["weight"], module.weight.detach())


def test_a_valid_entry_is_loaded_in_eval_mode_and_retrain_overrides_it(cache: Path) -> None:
    trainer, entry = _Trainer(), CacheEntry("toy", 3)
    load_or_train(entry, trainer.build, trainer.train)
    module, meta = load_or_train(entry, trainer.build, trainer.train)
    assert trainer.calls == 1 and meta["calls"] == 1 and not module.training
    assert torch.equal(module.weight, torch.ones(2, 2))
    module, meta = load_or_train(entry, trainer.build, trainer.train, retrain=True)
    assert trainer.calls == 2 and torch.equal(module.weight, torch.full((2, 2), 2.0))
    assert json.loads(entry.paths()[1].read_text())["calls"] == 2


@pytest.mark.parametrize(
    "damage",
    ["truncate weights", "other weights", "sidecar garbage", "no sidecar", "wrong name"],
)
def test_an_invalid_entry_is_trained_again(cache: Path, damage: str) -> None:
    trainer, entry = _Trainer(), CacheEntry("toy", 3)
    load_or_train(entry, trainer.build, trainer.train)
    weights, sidecar = entry.paths()
    if damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "other weights":  # a complete file, but not the one the sidecar hashed
        torch.save(nn.Linear(2, 2).state_dict(), weights)
    elif damage == "sidecar garbage":
        sidecar.write_text("{not json")
    elif damage == "no sidecar":
        sidecar.unlink()
    else:
        meta = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**meta, "name": "other"}))
    assert entry.load(trainer.build) is None
    module, _ = load_or_train(entry, trainer.build, trainer.train)
    assert trainer.calls == 2 and torch.equal(module.weight, torch.full((2, 2), 2.0))


def test_another_version_is_another_entry(cache: Path) -> None:
    trainer = _Trainer()
    load_or_train(CacheEntry("toy", 3), trainer.build, trainer.train)
    assert CacheEntry("toy", 4).load(trainer.build) is None
    # a sidecar claiming another version is refused even under the right file name
    sidecar = CacheEntry("toy", 3).paths()[1]
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "version": 4}))
    assert CacheEntry("toy", 3).load(trainer.build) is None


def test_the_model_families_keep_their_file_names(cache: Path) -> None:
    # the names the existing caches were written under (changing them would retrain everyone)
    assert small.cache_paths("digits_cnn") == (
        cache / "digits_cnn-v1.pt",
        cache / "digits_cnn-v1.json",
    )
    assert small.cache_paths("mnist_cnn")[0] == cache / "mnist_cnn-v1.pt"
    assert segmentation.cache_paths()[0] == cache / "shapes_segnet-v1.pt"
    assert biased.cache_paths("fair_digits_cnn")[0] == cache / "fair_digits_cnn-v2.pt"
    assert adversarial_training.cache_paths()[0] == cache / "digits_cnn_pgd-v1.pt"


def test_metadata_puts_name_and_version_first_and_versions_and_time_last() -> None:
    meta = CacheEntry("toy", 3).metadata(seed=0, epochs=2, held_out_accuracy=0.9)
    assert list(meta) == [
        "name",
        "version",
        "seed",
        "epochs",
        "held_out_accuracy",
        "torch",
        "created",
    ]
    assert (meta["name"], meta["version"], meta["torch"]) == ("toy", 3, torch.__version__)
