"""torchvision:/timm: adapters: clear refusals, and the loading path on a stand-in package.

torchvision and timm are not installable beside this torch build, so the loading path is
exercised with a small stand-in ``torchvision.models`` module that has the same API
(get_model_weights / get_model / list_models, weights with url, transforms(), meta).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import convlens
from convlens.errors import MissingDependencyError, UnknownModelError


class _Transforms:
    def __init__(self) -> None:
        self.crop_size, self.resize_size = [32], [36]
        self.mean, self.std = [0.4, 0.4, 0.4], [0.2, 0.2, 0.2]


class _Weights:
    def __init__(self) -> None:
        self.url = "https://example.invalid/tinynet-abc123.pth"
        self.meta = {"categories": ["alpha", "beta", "gamma"]}

    def transforms(self) -> _Transforms:
        return _Transforms()


def _tinynet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


@pytest.fixture()
def fake_torchvision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    models = types.ModuleType("torchvision.models")
    models.get_model_weights = lambda name: (
        types.SimpleNamespace(DEFAULT=_Weights())
        if name == "tinynet"
        else (_ for _ in ()).throw(ValueError(name))
    )
    models.get_model = lambda name, weights=None: _tinynet()
    models.list_models = lambda: ["tinynet"]
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints" / "tinynet-abc123.pth"


def test_torchvision_weights_missing_is_a_clear_refusal(fake_torchvision: Path) -> None:
    with pytest.raises(MissingDependencyError, match="never downloads") as err:
        convlens.load_model("torchvision:tinynet")
    assert "tinynet-abc123.pth" in str(err.value) and str(fake_torchvision.parent) in str(err.value)
    with pytest.raises(UnknownModelError, match="no model 'nonet'"):
        convlens.load_model("torchvision:nonet")


def test_torchvision_loads_cached_weights_with_its_preprocessing(fake_torchvision: Path) -> None:
    reference = _tinynet()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(1.0)  # different from a fresh _tinynet(): proves the file was loaded
    fake_torchvision.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), fake_torchvision)
    model = convlens.load_model("torchvision:tinynet")
    assert model.name == "torchvision:tinynet"
    assert model.input_size == (32, 32) and model.preprocessing.resize == 36
    assert model.labels is not None and model.labels.resolve("beta") == 1
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(model.normalize(x)), reference((x - 0.4) / 0.2))


def test_missing_packages_are_refused_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match="pip install timm"):
        convlens.load_model("timm:resnet18")
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(MissingDependencyError, match="torchvision"):
        convlens.load_model("torchvision:resnet18")
    with pytest.raises(UnknownModelError, match="needs a name"):
        convlens.load_model("timm:")
