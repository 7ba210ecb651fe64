"""Input-transform defences: a ``Model`` whose module transforms the pixels before the network.

Each defence is a pixel-space transform ``[0, 1] -> [0, 1]`` applied to every input:

- **JPEG re-encoding** (Dziugaite, Ghahramani & Roy 2016, arXiv:1608.00853; Guo, Rana, Cisse
  & van der Maaten 2018, arXiv:1711.00117): each image is encoded as an 8-bit JPEG at
  ``quality`` with Pillow and decoded again. Not differentiable (it leaves torch).
- **Bit-depth reduction** (Xu, Evans & Qi 2018, "Feature squeezing", arXiv:1704.01155)::

      x' = round(x * (2^b - 1)) / (2^b - 1)

  Its gradient is zero almost everywhere.
- **Random noise** (in the spirit of Zhang & Liang 2019, arXiv:1903.00073)::

      x' = clip_[0,1]( x + sigma * n ),   n ~ N(0, I), a new draw at every forward pass

:func:`defend` wraps a model: the returned :class:`~convlens.models.model.Model` shares the
user's network (never modified, never copied) and its preprocessing and labels; its module
maps the normalised input back to pixels, applies the transform, normalises again and runs
the network. Gradients taken through it are those of the real defended system: zero for
bit depth, none for JPEG, one random draw for noise. That is what makes such defences look
strong against a plain gradient attack and why :mod:`convlens.adversarial.adaptive` attacks
them with BPDA and EOT instead.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from convlens.data.images import quantize_8bit
from convlens.errors import BadInputError
from convlens.models.model import Model

__all__ = [
    "DEFENCES",
    "Defence",
    "DefendedModule",
    "bit_depth",
    "defend",
    "jpeg",
    "make_defence",
    "random_noise",
]

#: input-transform defences :func:`make_defence` knows
DEFENCES = ("jpeg", "bits", "noise")


def jpeg(pixels: Tensor, quality: int = 75) -> Tensor:
    """Encode each image as an 8-bit JPEG at ``quality`` (Pillow) and decode it.

    Parameters
    ----------
    pixels
        ``(N, C, H, W)`` in [0, 1], ``C`` 1 (greyscale JPEG) or 3 (RGB JPEG, Pillow's
        default 4:2:0 chroma subsampling).
    quality
        JPEG quality 1-95.

    Returns
    -------
    Tensor
        The decoded images, same shape, on the 8-bit grid, detached (JPEG is not
        differentiable).
    """
    from PIL import Image

    if pixels.dim() != 4 or pixels.shape[1] not in (1, 3):
        raise BadInputError(f"jpeg: expected (N, 1 or 3, H, W) pixels, got {tuple(pixels.shape)}")
    if not 1 <= int(quality) <= 95:
        raise BadInputError(f"jpeg quality {quality}: must be in 1-95")
    levels = (quantize_8bit(pixels.detach()) * 255).round().to(torch.uint8).cpu().numpy()
    out = np.empty_like(levels)
    for i, image in enumerate(levels):
        mode = "L" if image.shape[0] == 1 else "RGB"
        array = image[0] if mode == "L" else image.transpose(1, 2, 0)
        buffer = io.BytesIO()
        Image.fromarray(array, mode).save(buffer, format="JPEG", quality=int(quality))
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(mode))
        out[i] = decoded[None] if mode == "L" else decoded.transpose(2, 0, 1)
    return torch.from_numpy(out).to(pixels.device, pixels.dtype) / 255


def bit_depth(pixels: Tensor, bits: int) -> Tensor:
    """Reduce each pixel to ``2^bits`` levels: ``round(x (2^b - 1)) / (2^b - 1)`` (Xu et al. 2018).

    Rounding is torch's (half to even, as NumPy's ``np.round``). Values are clamped to
    [0, 1] first.
    """
    if not 1 <= int(bits) <= 8:
        raise BadInputError(f"bit depth {bits}: must be in 1-8")
    top = 2 ** int(bits) - 1
    return torch.round(pixels.clamp(0, 1) * top) / top


def random_noise(pixels: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """``clip_[0,1](x + sigma n)`` with ``n`` standard normal, drawn from ``generator`` (on CPU)."""
    if not sigma >= 0:
        raise BadInputError(f"noise sigma {sigma}: must be >= 0")
    noise = torch.randn(pixels.shape, generator=generator, dtype=pixels.dtype).to(pixels.device)
    return (pixels + sigma * noise).clamp(0, 1)


@dataclass(frozen=True)
class Defence:
    """A named pixel-space transform.

    Parameters
    ----------
    name
        Short id shown in tables (``jpeg75``, ``bits1``, ``noise0.3``).
    kind
        ``"jpeg"``, ``"bits"`` or ``"noise"``.
    transform
        ``transform(pixels, generator) -> pixels``; deterministic defences ignore the generator.
    random
        A new random draw at every call (attack it with EOT).
    differentiable
        Gradients through ``transform`` are meaningful (noise: yes; JPEG, bit depth: no).
    """

    name: str
    kind: str
    transform: Callable[[Tensor, torch.Generator | None], Tensor]
    random: bool
    differentiable: bool

    def __call__(self, pixels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.transform(pixels, generator)


def make_defence(kind: str, *, quality: int = 75, bits: int = 1, sigma: float = 0.2) -> Defence:
    """One of :data:`DEFENCES` with its setting.

    Parameters
    ----------
    kind
        ``"jpeg"`` (uses ``quality``), ``"bits"`` (``bits``) or ``"noise"`` (``sigma``).
    """
    if kind == "jpeg":
        if not 1 <= int(quality) <= 95:
            raise BadInputError(f"jpeg quality {quality}: must be in 1-95")
        return Defence(
            f"jpeg{quality}",
            "jpeg",
            lambda p, g: jpeg(p, quality),
            random=False,
            differentiable=False,
        )
    if kind == "bits":
        if not 1 <= int(bits) <= 8:
            raise BadInputError(f"bit depth {bits}: must be in 1-8")
        return Defence(
            f"bits{bits}",
            "bits",
            lambda p, g: bit_depth(p, bits),
            random=False,
            differentiable=False,
        )
    if kind == "noise":
        if not 0 < sigma <= 1:
            raise BadInputError(f"noise sigma {sigma}: must be in (0, 1]")
        return Defence(
            f"noise{sigma:g}",
            "noise",
            lambda p, g: random_noise(p, sigma, g),
            random=True,
            differentiable=True,
        )
    raise BadInputError(f"defence {kind!r}: choose from {', '.join(DEFENCES)}")


class DefendedModule(nn.Module):
    """``network(normalize(defence(denormalize(x))))``: the defence in front of an unchanged network.

    The network is held, not copied, so its parameters are the user's. Random defences draw
    from ``self.generator`` (CPU), which :meth:`reseed` resets for repeatable evaluations.
    """

    def __init__(
        self,
        network: nn.Module,
        defence: Defence,
        normalize: Callable[[Tensor], Tensor],
        denormalize: Callable[[Tensor], Tensor],
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.network = network
        self.defence = defence
        self._normalize = normalize
        self._denormalize = denormalize
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random defence's noise stream at ``seed``."""
        self.generator.manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        pixels = self.defence(self._denormalize(x).clamp(0, 1), self.generator)
        return self.network(self._normalize(pixels))


def defend(model: Model, defence: Defence | str, *, seed: int = 0, **settings: float) -> Model:
    """``model`` behind an input-transform defence, as a new :class:`Model` sharing its network.

    Parameters
    ----------
    model
        The classifier to protect (not modified).
    defence
        A :class:`Defence` or a kind from :data:`DEFENCES` (then ``settings``: ``quality``,
        ``bits``, ``sigma``).
    seed
        Seeds the noise of a random defence.

    Returns
    -------
    Model
        Same preprocessing and labels; name ``"{model.name}+{defence.name}"``.

    Examples
    --------
    >>> squeezed = defend(load_model("digits_cnn"), "bits", bits=1)
    >>> squeezed.predict(["digit.png"])
    """
    if isinstance(defence, str):
        defence = make_defence(defence, **settings)  # type: ignore[arg-type]
    module = DefendedModule(model.module, defence, model.normalize, model.denormalize, seed)
    info = {**model.info, "defence": defence.name, "base_model": model.name}
    return Model(
        module,
        model.preprocessing,
        name=f"{model.name}+{defence.name}",
        labels=model.labels,
        weights_sha256=model.weights_sha256,
        info=info,
    )
