"""Rows for the CAM family: Grad-CAM, Grad-CAM++, LayerCAM, guided Grad-CAM, Score-CAM.

Floors (issue 4, "Speed"):

- Grad-CAM, Grad-CAM++ and LayerCAM are measured against a **hand-written forward +
  backward to the layer**: EfficientNet-Lite's parts called one by one, everything below
  ``head_act`` under ``torch.no_grad``, the feature map made a leaf that requires grad,
  the head run and ``autograd.grad(score, A)`` taken (parameters frozen, eval mode). That
  is the least any gradient CAM can do; target: <= 1.1x.
- Guided Grad-CAM is measured against the gradient floor (one forward + one backward to
  the input); target: <= 1.15x.
- Score-CAM is measured against its own hand-written floor: the masked forward passes it
  needs (one per usable channel, in chunks of 64, no autograd) plus the forward that
  reads the activations. It runs at ``blocks.4`` (40 channels at 28 x 28) so a row takes
  seconds, not minutes: at ``head_act`` (1,280 channels, ~460 usable per photo) one call
  is hundreds of forward passes on every side of the table.

Peers: Captum ``LayerGradCam`` (+ ``LayerAttribution.interpolate``, bilinear) and
``GuidedGradCam`` (bilinear), with the parameters as loaded and frozen, inputs requiring
grad as Captum's docs do; pytorch-grad-cam ``GradCAM``, ``GradCAMPlusPlus``, ``LayerCAM``
and ``ScoreCAM``. Peer differences:

- Captum's guided backprop hooks only ``nn.ReLU``; on the ReLU6 EfficientNet it silently
  uses the plain gradient, so its guided Grad-CAM differs from convlens's (the ``peer diff``
  column shows by how much). Its Grad-CAM is the same computation (diff ~0).
- pytorch-grad-cam returns min-max normalised numpy maps ``(N, H, W)`` resized with
  OpenCV, so its outputs are not compared (``peer diff`` empty). It needs the parameters to
  require grad (it back-propagates into them) and its ``ScoreCAM`` upsamples with
  ``align_corners=True`` and masks every channel, constant ones included.
- pytorch-grad-cam imports torchvision for image helpers the CAM classes never call.
  torchvision is not a convlens dependency, so when it is absent this file imports
  pytorch-grad-cam with a throw-away stand-in module for ``torchvision`` (removed from
  ``sys.modules`` right after the import); if even that fails the peer reads
  ``not installed``. Install it with ``pip install --no-deps grad-cam ttach``.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import types
from collections.abc import Callable
from contextlib import nullcontext, redirect_stderr
from typing import Any

import torch
from harness import BenchRow, Context, PeerSetting, SetupFn

from convlens.attribution.cam import gradcam, gradcam_pp, guided_gradcam, layercam, scorecam
from convlens.hooks import eval_mode, frozen

__all__ = ["CAM_LAYER", "ROWS", "SCORECAM_LAYER", "cam_floor_setup", "scorecam_floor_setup"]

#: The default CAM layer of EfficientNet-Lite (the last feature map, 1280 x 7 x 7).
CAM_LAYER = "head_act"
#: Score-CAM's layer in the benchmark (40 channels): see the module docstring.
SCORECAM_LAYER = "blocks.4"
SCORECAM_CHUNK = 64


# -- floors ------------------------------------------------------------------------------


def _features(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite up to ``head_act``, written out by hand."""
    h = module.stem_act(module.stem_bn(module.stem_conv(x)))
    h = module.blocks(h)
    return module.head_act(module.head_bn(module.head_conv(h)))


def _head(module: torch.nn.Module, a: torch.Tensor) -> torch.Tensor:
    return module.classifier(module.dropout(module.pool(a).flatten(1)))


def cam_floor_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    """Forward (no autograd below the layer) + backward from the class logits to ``head_act``."""
    module = ctx.model.module
    x, classes = ctx.x, ctx.classes[:, None]

    def run() -> torch.Tensor:
        with frozen(module), eval_mode(module):
            with torch.no_grad():
                a = _features(module, x)
            a.requires_grad_()
            score = _head(module, a).gather(1, classes)
            (grad,) = torch.autograd.grad(score.sum(), a)
        return grad

    return run


def scorecam_floor_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    """One forward plus the masked forwards Score-CAM needs at :data:`SCORECAM_LAYER`."""
    module = ctx.model.module
    x = ctx.x
    with eval_mode(module), torch.no_grad():
        act = {}
        h = module.stem_act(module.stem_bn(module.stem_conv(x)))
        for index, block in enumerate(module.blocks):
            h = block(h)
            if f"blocks.{index}" == SCORECAM_LAYER:
                act["a"] = h
        a = act["a"]
    usable = int((a.amax(dim=(2, 3)) > a.amin(dim=(2, 3))).sum())
    chunk = x[torch.arange(SCORECAM_CHUNK) % x.shape[0]].contiguous()
    sizes = [SCORECAM_CHUNK] * (usable // SCORECAM_CHUNK) + (
        [usable % SCORECAM_CHUNK] if usable % SCORECAM_CHUNK else []
    )

    def run() -> torch.Tensor:
        with frozen(module), eval_mode(module), torch.no_grad():
            out = module(x)
            for size in sizes:
                out = module(chunk[:size])
        return out

    return run


# -- convlens ----------------------------------------------------------------------------


def _ours(method: Callable[..., torch.Tensor], **options: Any) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        model, x, classes = ctx.model, ctx.x, ctx.classes
        model.layers()  # the layer table is built once per model: not part of the timed call
        return lambda: method(model, x, classes, **options)

    return setup


# -- Captum ------------------------------------------------------------------------------


def _captum_gradcam(freeze: bool) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        from captum.attr import LayerAttribution, LayerGradCam

        module = ctx.model.module
        cam = LayerGradCam(module, module.get_submodule(CAM_LAYER))
        x = ctx.x.detach().clone().requires_grad_()
        target, size = ctx.classes, tuple(ctx.x.shape[-2:])

        def run() -> torch.Tensor:
            with frozen(module) if freeze else nullcontext():
                layer_map = cam.attribute(x, target=target, relu_attributions=True)
            return LayerAttribution.interpolate(layer_map, size, interpolate_mode="bilinear")

        return run

    return setup


def _captum_guided_gradcam(freeze: bool) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        import warnings

        from captum.attr import GuidedGradCam

        module = ctx.model.module
        cam = GuidedGradCam(module, module.get_submodule(CAM_LAYER))
        x = ctx.x.detach().clone().requires_grad_()
        target = ctx.classes

        def run() -> torch.Tensor:
            with warnings.catch_warnings(), frozen(module) if freeze else nullcontext():
                warnings.simplefilter("ignore")  # Captum warns about its ReLU hooks on every call
                return cam.attribute(x, target=target, interpolate_mode="bilinear")

        return run

    return setup


# -- pytorch-grad-cam --------------------------------------------------------------------


def _import_pytorch_grad_cam() -> types.ModuleType:
    """``pytorch_grad_cam``, importable without torchvision (see the module docstring)."""
    if "pytorch_grad_cam" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        import pytorch_grad_cam

        return pytorch_grad_cam
    names = [
        "torchvision",
        "torchvision.transforms",
        "torchvision.transforms.functional",
        "torchvision.ops",
    ]
    stubs = {name: types.ModuleType(name) for name in names}
    for name in ("Compose", "Normalize", "ToTensor"):
        setattr(stubs["torchvision.transforms"], name, type(name, (), {}))
    stubs["torchvision.transforms.functional"].resize = None  # type: ignore[attr-defined]
    stubs["torchvision"].transforms = stubs["torchvision.transforms"]  # type: ignore[attr-defined]
    stubs["torchvision"].ops = stubs["torchvision.ops"]  # type: ignore[attr-defined]
    sys.modules.update(stubs)
    try:
        import pytorch_grad_cam
    except Exception as exc:
        raise ModuleNotFoundError(
            f"pytorch_grad_cam does not import without torchvision: {exc}", name="pytorch_grad_cam"
        ) from exc
    finally:
        for name in names:
            sys.modules.pop(name, None)
    return pytorch_grad_cam


def _pgc(class_name: str, layer: str = CAM_LAYER, batch_size: int | None = None) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        pgc = _import_pytorch_grad_cam()
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        module = ctx.model.module
        cam_class = getattr(pgc, class_name)
        target_layer = module.get_submodule(layer)
        targets = [ClassifierOutputTarget(int(c)) for c in ctx.classes]
        x = ctx.x

        def run() -> torch.Tensor:
            # constructed per call and used as a context: its hooks live only inside the call
            # (its ScoreCAM draws a tqdm bar on stderr per image: muted)
            with (
                cam_class(model=module, target_layers=[target_layer]) as cam,
                redirect_stderr(io.StringIO()),
            ):
                if batch_size is not None:
                    cam.batch_size = batch_size
                return torch.from_numpy(cam(input_tensor=x, targets=targets))

        return run

    return setup


def _pgc_peer(
    class_name: str, layer: str = CAM_LAYER, batch_size: int | None = None
) -> PeerSetting:
    settings: dict[str, Any] = {"method": class_name, "params": "as loaded"}
    if batch_size is not None:
        settings["batch_size"] = batch_size
    return PeerSetting(
        "pytorch-grad-cam",
        settings,
        _pgc(class_name, layer, batch_size),
        package="pytorch_grad_cam",
    )


_CAM_FLOOR = "hand-written forward + backward to head_act"
_CAPTUM_GRADCAM = [
    PeerSetting(
        "captum",
        {"method": "LayerGradCam+interpolate", "params": "as loaded"},
        _captum_gradcam(False),
    ),
    PeerSetting(
        "captum", {"method": "LayerGradCam+interpolate", "params": "frozen"}, _captum_gradcam(True)
    ),
]

ROWS = [
    BenchRow(
        "cam floor: forward + backward to head_act",
        "cam",
        cam_floor_setup,
        settings={"below the layer": "torch.no_grad"},
        floor=cam_floor_setup,
        floor_name=_CAM_FLOOR,
    ),
    BenchRow(
        "gradcam",
        "cam",
        _ours(gradcam),
        peers=[*_CAPTUM_GRADCAM, _pgc_peer("GradCAM")],
        settings={"layer": CAM_LAYER},
        floor=cam_floor_setup,
        floor_name=_CAM_FLOOR,
    ),
    BenchRow(
        "gradcam_pp",
        "cam",
        _ours(gradcam_pp),
        peers=[_pgc_peer("GradCAMPlusPlus")],
        settings={"layer": CAM_LAYER},
        floor=cam_floor_setup,
        floor_name=_CAM_FLOOR,
    ),
    BenchRow(
        "layercam",
        "cam",
        _ours(layercam),
        peers=[_pgc_peer("LayerCAM")],
        settings={"layer": CAM_LAYER},
        floor=cam_floor_setup,
        floor_name=_CAM_FLOOR,
    ),
    BenchRow(
        "guided_gradcam",
        "cam",
        _ours(guided_gradcam),
        peers=[
            PeerSetting(
                "captum",
                {"method": "GuidedGradCam", "params": "as loaded"},
                _captum_guided_gradcam(False),
            ),
            PeerSetting(
                "captum",
                {"method": "GuidedGradCam", "params": "frozen"},
                _captum_guided_gradcam(True),
            ),
        ],
        settings={"layer": CAM_LAYER, "passes": "1 forward + 1 backward"},
    ),
    BenchRow(
        "scorecam",
        "cam",
        _ours(scorecam, layer=SCORECAM_LAYER, batch_size=SCORECAM_CHUNK),
        peers=[
            _pgc_peer("ScoreCAM", SCORECAM_LAYER, 16),
            _pgc_peer("ScoreCAM", SCORECAM_LAYER, 64),
        ],
        settings={"layer": SCORECAM_LAYER, "batch_size": SCORECAM_CHUNK},
        floor=scorecam_floor_setup,
        floor_name="1 + usable-channel forwards (no autograd, chunks of 64)",
    ),
]
