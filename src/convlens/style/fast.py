"""Fast feed-forward stylisation: a transformation network trained with perceptual losses.

Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
Super-Resolution", ECCV 2016 (arXiv:1603.08155): instead of optimising every image
(:func:`~convlens.style.transfer.style_transfer`), train one network ``T`` once per style
so that, over a set of photos ``c``,

    min_T  E_c [ alpha * L_content(T(c), c) + beta * L_style(T(c), s) + lambda_TV * TV(T(c)) ]

with the *same* losses and layers as the optimisation (:mod:`convlens.style.losses`,
:func:`~convlens.style.losses.default_layers`), evaluated on the loss model's features of
``T(c)``. A new photo is then stylised by one forward pass of ``T``.

``T`` follows Johnson et al.'s design with instance normalisation in place of batch
normalisation (Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing
Ingredient for Fast Stylization", 2016, arXiv:1607.08022):

    9x9 conv -> two stride-2 3x3 convs -> residual blocks -> two (nearest x2 upsample +
    3x3 conv) -> 9x9 conv -> sigmoid

with reflection padding everywhere, and upsample-then-convolve rather than transposed
convolutions, which leave checkerboard artefacts (Odena, Dumoulin & Olah 2016,
"Deconvolution and Checkerboard Artifacts", Distill). The sigmoid keeps the output in
pixel space [0, 1]. At the default width (16) and 3 residual blocks it has 0.28 M
parameters and trains in minutes on two CPU cores.

The default training set is :func:`training_images`: the bundled photos and the 20 foolbox
ImageNet photos, minus :data:`HELD_OUT` (kept for evaluation), as seeded random square crops.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from convlens.atomic import atomic_write_bytes
from convlens.data.images import find_images, load_image
from convlens.data.samples import labelled_imagenet_files, load_sample, sample_names
from convlens.errors import BadInputError
from convlens.optimize.engine import evaluate_objective
from convlens.optimize.objectives import Objective, ObjectiveContext, total_variation
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance
from convlens.style.losses import (
    content_loss,
    default_layers,
    layer_codes,
    style_loss,
    style_targets,
)
from convlens.style.transfer import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_TV,
    load_style_image,
)
from convlens.types import ModelProtocol

__all__ = [
    "DEFAULT_STEPS",
    "DEFAULT_TRAIN_ALPHA",
    "HELD_OUT",
    "TRAINING_EXCLUDED",
    "StyleNet",
    "TrainedStyleNet",
    "load_style_net",
    "perceptual_losses",
    "save_style_net",
    "stylize",
    "train_style_net",
    "training_images",
]

#: bundled photos never used for training: the evaluation set of the acceptance check and docs
HELD_OUT = ("cat", "coffee", "daisy")
#: bundled images that are not photos of scenes (the style textures, and a star field)
TRAINING_EXCLUDED = ("brick", "grass", "gravel", "hubble")

#: defaults, measured in docs/features/fast-style.md
DEFAULT_STEPS = 300
DEFAULT_SIZE = 256
DEFAULT_BATCH = 1
DEFAULT_LR = 3e-3
#: content weight of training: 2.5 x style_transfer's (see train_style_net)
DEFAULT_TRAIN_ALPHA = 2.5 * DEFAULT_ALPHA
DEFAULT_WIDTH = 16
DEFAULT_BLOCKS = 3
DEFAULT_SKIP = False

_FORMAT = "convlens-style-net"
_FORMAT_VERSION = 1


# -- the transformation network ---------------------------------------------------------------
def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    # reflection padding: zero padding darkens the borders of every stylised image
    return nn.Sequential(
        nn.ReflectionPad2d(kernel // 2), nn.Conv2d(c_in, c_out, kernel, stride=stride)
    )


def _conv_in_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        _conv(c_in, c_out, kernel, stride), nn.InstanceNorm2d(c_out, affine=True), nn.ReLU()
    )


class _Residual(nn.Module):
    """``x + IN(conv(ReLU(IN(conv(x)))))`` (Johnson et al.'s residual block, no final ReLU)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_in_relu(channels, channels, 3),
            _conv(channels, channels, 3),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv + IN + ReLU (no transposed convolution)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = _conv_in_relu(c_in, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class StyleNet(nn.Module):
    """Johnson et al.'s transformation network with instance normalisation.

    Maps pixels ``(B, 3, H, W)`` in [0, 1] (any size >= 16) to stylised pixels of the same
    size in [0, 1]. ``width`` is the channels of the first layer (doubled at each of the two
    downsamplings); ``blocks`` the residual blocks at quarter resolution. With ``skip`` the
    output is ``sigmoid(net(x) + logit(x))`` and starts as the identity, as the optimisation
    starts from the content; it keeps the photo but learns the style far more slowly (Lite0,
    brick, 300 steps: loss 2.3x the optimisation's on the cat, against 1.1x without), so it
    is off by default.

    ``config`` holds the constructor arguments, ``provenance`` what trained it (filled by
    :func:`train_style_net` and kept by :func:`save_style_net` / :func:`load_style_net`).
    """

    def __init__(
        self, width: int = DEFAULT_WIDTH, blocks: int = DEFAULT_BLOCKS, skip: bool = DEFAULT_SKIP
    ) -> None:
        super().__init__()
        for name, value, low in (("width", width, 1), ("blocks", blocks, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BadInputError(f"{name} must be a whole number >= {low}, got {value!r}")
        if not isinstance(skip, bool):
            raise BadInputError(f"skip must be True or False, got {skip!r}")
        self.config: dict[str, Any] = {"width": width, "blocks": blocks, "skip": skip}
        self.provenance: dict[str, Any] = {}
        w = width
        self.down = nn.Sequential(
            _conv_in_relu(3, w, 9), _conv_in_relu(w, 2 * w, 3, 2), _conv_in_relu(2 * w, 4 * w, 3, 2)
        )
        self.res = nn.Sequential(*[_Residual(4 * w) for _ in range(blocks)])
        self.up = nn.Sequential(_Upsample(4 * w, 2 * w), _Upsample(2 * w, w))
        self.out = _conv(w, 3, 9)
        if skip:  # start as the identity: the net only has to learn the change
            conv = cast(nn.Conv2d, self.out[1])
            nn.init.zeros_(conv.weight)
            if conv.bias is not None:  # it has one: _conv builds it with a bias
                nn.init.zeros_(conv.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise BadInputError(
                f"a style net takes RGB pixels (B, 3, H, W), got {tuple(pixels.shape)}"
            )
        h, w = pixels.shape[-2:]
        if min(h, w) < 16:
            raise BadInputError(
                f"a style net needs images of at least 16 x 16 pixels, got {h} x {w}"
            )
        # pad to a multiple of 4 so the two downsamplings and upsamplings give back H x W
        ph, pw = -h % 4, -w % 4
        x = F.pad(pixels, (0, pw, 0, ph), mode="reflect") if ph or pw else pixels
        x = self.up(self.res(self.down(x - 0.5)))
        x = self.out(x)[..., :h, :w]
        if self.config["skip"]:
            x = x + torch.logit(pixels.clamp(1 / 512, 1 - 1 / 512))
        return torch.sigmoid(x)


# -- the training set -------------------------------------------------------------------------
def training_images() -> list[tuple[str, Any]]:
    """The default (named, offline) training set as ``(name, source)`` pairs.

    The bundled photos except :data:`HELD_OUT` and :data:`TRAINING_EXCLUDED` (so rocket,
    moped, palace, hopper, astronaut), then the 20 foolbox ImageNet JPEGs (when foolbox is
    installed).
    """
    skip = set(HELD_OUT) | set(TRAINING_EXCLUDED)
    photos: list[tuple[str, Any]] = [
        (f"sample:{n}", load_sample(n)) for n in sample_names() if n not in skip
    ]
    photos += [(f"foolbox:{path.name}", path) for path, _ in labelled_imagenet_files()]
    return photos


def _load_training_set(images: Any, size: int) -> tuple[list[torch.Tensor], list[str]]:
    """Each training image resized so its shorter side is ``size`` (crops then fit)."""
    if images is None:
        named = training_images()
    elif isinstance(images, (str, os.PathLike)):
        files = find_images(images)
        named = [(str(f), f) for f in files]
    elif isinstance(images, Sequence):
        named = [
            (str(i) if isinstance(i, (str, os.PathLike)) else f"<image {k}>", i)
            for k, i in enumerate(images)
        ]
    else:
        raise BadInputError(
            f"images must be a folder, a list of images or None (the default set), got {type(images).__name__}"
        )
    if not named:
        raise BadInputError(f"no training images found in {images}")
    tensors = []
    for name, source in named:
        image = (
            load_image(source, name=name)[None]
            if not (isinstance(source, str) and source.startswith("sample:"))
            else load_style_image(source)
        )
        h, w = image.shape[-2:]
        scale = size / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        tensors.append(
            F.interpolate(
                image, size=new, mode="bilinear", align_corners=False, antialias=scale < 1
            ).clamp(0, 1)[0]
        )
    return tensors, [n for n, _ in named]


def _random_crops(
    images: Sequence[torch.Tensor], size: int, batch: int, gen: torch.Generator
) -> torch.Tensor:
    """``batch`` random ``size x size`` crops (images drawn with replacement, random flips)."""
    crops = []
    for _ in range(batch):
        image = images[int(torch.randint(len(images), (1,), generator=gen))]
        h, w = image.shape[-2:]
        y = int(torch.randint(h - size + 1, (1,), generator=gen))
        x = int(torch.randint(w - size + 1, (1,), generator=gen))
        crop = image[:, y : y + size, x : x + size]
        if bool(torch.rand(1, generator=gen) < 0.5):
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.stack(crops)


# -- losses -----------------------------------------------------------------------------------
def _perceptual_objective(
    model: ModelProtocol,
    contents: torch.Tensor,
    targets: Any,
    layers: Any,
    *,
    alpha: float,
    beta: float,
    tv_weight: float,
    parts: dict[str, torch.Tensor],
) -> Objective:
    """``-(alpha L_c + beta L_s + tv TV)`` for these content images; stores the parts."""
    c_loss = content_loss(layer_codes(model, contents, layers.content))
    s_loss = style_loss(
        targets, layers.style, transform=layers.transform, statistic=layers.statistic
    )
    tv = total_variation(2.0)

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        c, s = c_loss(ctx), s_loss(ctx)
        parts["content"], parts["style"] = c.detach(), s.detach()
        return -(alpha * c + beta * s + tv_weight * tv(ctx))

    return Objective(
        fn,
        layers=(*c_loss.layers, *s_loss.layers),
        description=f"-({alpha:g} {c_loss.description} + {beta:g} {s_loss.description} + {tv_weight:g} TV)",
    )


def perceptual_losses(
    model: ModelProtocol, images: torch.Tensor, contents: torch.Tensor, style: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """The content and style penalties of ``images`` as :func:`style_transfer` defines them.

    ``images`` and ``contents`` are pixels ``(B, 3, H, W)`` of one size; the style image is
    resized to their longer side (``style_scale=1``), and the model's default layers,
    transform and statistic are used. Returns ``(content (B,), style (B,))``.
    """
    layers = default_layers(model)
    side = max(contents.shape[-2:])
    style_pixels = load_style_image(style, side).to(model.device, model.dtype)
    targets = style_targets(
        model,
        [style_pixels],
        list(layers.style),
        transform=layers.transform,
        statistic=layers.statistic,
    )
    parts: dict[str, torch.Tensor] = {}
    objective = _perceptual_objective(
        model,
        contents.to(model.device, model.dtype),
        targets,
        layers,
        alpha=1.0,
        beta=1.0,
        tv_weight=0.0,
        parts=parts,
    )
    with torch.no_grad():
        evaluate_objective(model, objective, images.to(model.device, model.dtype), truncate=True)
    return parts["content"].cpu(), parts["style"].cpu()


def _check_positive(name: str, value: Any, *, integer: bool = False, zero: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if (
        isinstance(value, bool)
        or not ok
        or not math.isfinite(value)
        or (value < 0 if zero else value <= 0)
    ):
        raise BadInputError(
            f"{name} must be {'a whole number' if integer else 'a number'} {'>= 0' if zero else '> 0'}, got {value!r}"
        )


class TrainedStyleNet(NamedTuple):
    """What :func:`train_style_net` returns: the network and the training record."""

    net: StyleNet
    result: Result


def train_style_net(
    model: ModelProtocol,
    style: Any,
    images: Any = None,
    *,
    steps: int = DEFAULT_STEPS,
    size: int = DEFAULT_SIZE,
    batch: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    alpha: float = DEFAULT_TRAIN_ALPHA,
    beta: float = DEFAULT_BETA,
    tv_weight: float = DEFAULT_TV,
    width: int = DEFAULT_WIDTH,
    blocks: int = DEFAULT_BLOCKS,
    skip: bool = DEFAULT_SKIP,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> TrainedStyleNet:
    """Train a feed-forward style network for one style (Johnson et al. 2016).

    Parameters
    ----------
    model
        The convlens ``Model`` whose features define the losses (its default style layers).
    style
        The style image (path, ``"sample:NAME"``, array, PIL, tensor); used at ``size``
        pixels on its longer side, as :func:`style_transfer` uses it at ``size``.
    images
        Training photos: a folder, a list of images, or None for :func:`training_images`.
    steps, batch, lr
        Adam steps, crops per step and learning rate.
    size
        Side of the square random crops.
    alpha, beta, tv_weight
        Weights of content, style and total variation. ``beta`` and ``tv_weight`` default to
        :func:`style_transfer`'s, ``alpha`` to 2.5 times its: the optimisation keeps the
        photo because it starts from it, while a net trained from random weights with
        style_transfer's own weights settles on texture alone (Lite0, brick, 300 steps: a
        grey brick wall with no cat, at a loss 1.07x the optimisation's). With 2.5x the cat,
        cup and flower stay recognisable (docs/features/fast-style.md).
    width, blocks
        Size of the :class:`StyleNet`.
    seed
        Seeds the network's initial weights and every crop.
    progress
        ``progress(done, total)`` after each step.

    Returns
    -------
    TrainedStyleNet
        ``net`` (in eval mode, on the model's device, with ``provenance``) and ``result`` of
        kind ``"style_training"`` with ``history``, ``content_loss`` and ``style_loss``
        ``(steps,)`` (batch means at each step) and ``style`` (the style image).
    """
    started = time.perf_counter()
    _check_positive("steps", steps, integer=True)
    _check_positive("batch", batch, integer=True)
    _check_positive("lr", lr)
    for name, value in (("alpha", alpha), ("beta", beta), ("tv_weight", tv_weight)):
        _check_positive(name, value, zero=True)
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise BadInputError(f"size must be a whole number of pixels >= 32, got {size!r}")
    layers = default_layers(model)
    style_pixels = load_style_image(style, size).to(model.device, model.dtype)
    targets = style_targets(
        model,
        [style_pixels],
        list(layers.style),
        transform=layers.transform,
        statistic=layers.statistic,
    )
    photos, names = _load_training_set(images, size)

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the global RNG
        torch.manual_seed(seed)
        net = StyleNet(width, blocks, skip)
    net.to(model.device, model.dtype).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history = torch.empty(steps, dtype=torch.float64)
    c_hist, s_hist = torch.empty_like(history), torch.empty_like(history)
    for step in range(steps):
        contents = _random_crops(photos, size, batch, gen).to(model.device, model.dtype)
        parts: dict[str, torch.Tensor] = {}
        objective = _perceptual_objective(
            model,
            contents,
            targets,
            layers,
            alpha=alpha,
            beta=beta,
            tv_weight=tv_weight,
            parts=parts,
        )
        loss = -evaluate_objective(model, objective, net(contents), truncate=True).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history[step] = loss.item()
        c_hist[step], s_hist[step] = parts["content"].mean().item(), parts["style"].mean().item()
        if not math.isfinite(history[step].item()):
            raise BadInputError(
                f"training diverged at step {step + 1} (loss {history[step].item()}); try a smaller lr (now {lr:g})"
            )
        if progress is not None:
            progress(step + 1, steps)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    params = {
        "style": style if isinstance(style, (str, os.PathLike)) else f"<{type(style).__name__}>",
        "images": names if len(names) <= 40 else f"{len(names)} images",
        "held_out": list(HELD_OUT) if images is None else None,
        "steps": steps,
        "size": size,
        "batch": batch,
        "lr": lr,
        "alpha": alpha,
        "beta": beta,
        "tv_weight": tv_weight,
        "content_layers": list(layers.content),
        "style_layers": dict(layers.style),
        "transform": layers.transform,
        "statistic": layers.statistic,
        "net": dict(net.config),
        "seconds": round(time.perf_counter() - started, 3),
    }
    net.provenance = make_provenance(model, "style_net", params=params, seed=seed)
    tensors = {
        "history": history,
        "content_loss": c_hist,
        "style_loss": s_hist,
        "style": style_pixels.cpu(),
    }
    return TrainedStyleNet(net, Result("style_training", tensors, net.provenance))


# -- use, save, load --------------------------------------------------------------------------
def stylize(net: StyleNet, image: Any, *, size: int | None = None) -> Result:
    """Stylise one image with a trained :class:`StyleNet` (one forward pass).

    ``image`` is a path, ``"sample:NAME"``, array, PIL image or tensor; with ``size`` it is
    first resized to that longer side. Returns kind ``"stylized"``: ``image (1, 3, H, W)``
    and ``content`` (the input as used), with the net's provenance.
    """
    if not isinstance(net, StyleNet):
        raise BadInputError(
            f"stylize needs a StyleNet (see load_style_net), got {type(net).__name__}"
        )
    started = time.perf_counter()
    content = load_style_image(image, size)
    param = next(net.parameters())
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(content.to(param.device, param.dtype)).cpu().float()
    finally:
        net.train(was_training)
    provenance = {
        "method": "stylize",
        "params": {
            "size": list(out.shape[-2:]),
            "net": dict(net.config),
            "seconds": round(time.perf_counter() - started, 4),
        },
        "net_provenance": dict(net.provenance),
        "model": net.provenance.get("model"),
    }
    return Result("stylized", {"image": out, "content": content}, provenance, originals=[out[0]])


def save_style_net(net: StyleNet, path: str | os.PathLike[str]) -> Path:
    """Save a :class:`StyleNet` as a ``.pt`` file (state dict, config, provenance), atomically."""
    if not isinstance(net, StyleNet):
        raise BadInputError(f"save_style_net needs a StyleNet, got {type(net).__name__}")
    target = Path(path)
    payload = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "config": dict(net.config),
        # through JSON: plain str/int/float/list/dict only (torch.__version__ is a str subclass
        # that weights_only loading refuses)
        "provenance": json.loads(json.dumps(net.provenance, default=str)),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(target, buffer.getvalue())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def load_style_net(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> StyleNet:
    """Load a :class:`StyleNet` saved by :func:`save_style_net`.

    Read with ``torch.load(weights_only=True)``: only tensors and plain containers are
    unpickled, so a crafted file cannot run code. Any file that is not such a network
    raises :class:`~convlens.errors.BadInputError` with one line.
    """
    source = Path(path)
    if not source.is_file():
        raise BadInputError(
            f"{source}: no such style-net file (make one with `convlens style-train`)"
        )
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as exc:  # corrupt files raise many types (UnpicklingError, RuntimeError, EOFError, ...)
        raise BadInputError(f"{source}: not a readable style-net file ({_one_line(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise BadInputError(f"{source}: not a convlens style net (no {_FORMAT!r} marker)")
    if payload.get("version") != _FORMAT_VERSION:
        raise BadInputError(
            f"{source}: style-net format version {payload.get('version')!r}; this convlens reads {_FORMAT_VERSION}"
        )
    config, state = payload.get("config"), payload.get("state_dict")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise BadInputError(f"{source}: style-net file without a config or state dict")
    try:
        net = StyleNet(**config)
        net.load_state_dict(state)
    except (BadInputError, TypeError, RuntimeError) as exc:
        raise BadInputError(
            f"{source}: style-net weights do not fit its config ({_one_line(exc)})"
        ) from None
    provenance = payload.get("provenance")
    net.provenance = provenance if isinstance(provenance, dict) else {}
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(device).eval()
