"""Image parameterisations: what the optimiser actually changes.

A parameterisation holds tensors to optimise (:meth:`parameters`) and maps them to a
pixel-space batch ``(B, C, H, W)`` in [0, 1] when called. Both kinds end in a sigmoid, so
every image they produce is a valid picture without clamping, and both can start from a
given image (:meth:`from_image`, for DeepDream and fooling) or be set to one between steps
(:meth:`set_image`, for the engine's periodic blur and pixel clipping).

- :class:`PixelParam`: one free logit per pixel and channel.
- :class:`FourierParam`: the image's 2-D Fourier coefficients scaled by ``1/f^decay``,
  mapped through a fixed colour-decorrelation matrix (Olah, Mordvintsev & Schubert 2017,
  "Feature Visualization", Distill, doi:10.23915/distill.00007, "The Enemy of Feature
  Visualization"). Gradient steps then change low frequencies and the main colour axis
  as easily as fine detail, which removes most of the high-frequency noise that plain
  pixel ascent produces.

Random initial values come from a ``torch.Generator`` (never the global RNG); device and
dtype are arguments (the engine passes the model's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from convlens.errors import BadInputError

__all__ = ["COLOR_CORRELATION_SQRT", "FourierParam", "ImageParam", "PixelParam", "fourier_scale"]

# ImageNet colour statistics: the principal components of the RGB values of ImageNet
# training pixels (pixels in [0, 1]) from Krizhevsky, Sutskever & Hinton 2012, "ImageNet
# Classification with Deep Convolutional Neural Networks", section 4.1 ("PCA on the set of
# RGB pixel values throughout the ImageNet training set"), as published with their
# eigenvalues in the Torch ResNet training code (fb.resnet.torch, datasets/imagenet.lua,
# "pca"). Columns are eigenvectors (rows R, G, B); the first is flipped to be positive.
_IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
_IMAGENET_EIGVEC = (
    (0.5675, 0.7192, 0.4009),
    (0.5808, -0.0045, -0.8140),
    (0.5836, -0.6948, 0.4203),
)


def _color_correlation_sqrt() -> torch.Tensor:
    """``V diag(sqrt(lambda))``, a square root of the ImageNet colour covariance
    ``V diag(lambda) V^T``, divided by its largest column norm ``sqrt(lambda_max)`` so that a
    unit step along the main (brightness) axis is a unit step in RGB."""
    vec = torch.tensor(_IMAGENET_EIGVEC, dtype=torch.float64)
    val = torch.tensor(_IMAGENET_EIGVAL, dtype=torch.float64)
    return vec * (val / val.max()).sqrt()[None, :]


#: 3x3 map from decorrelated colour to RGB (see :func:`_color_correlation_sqrt`).
COLOR_CORRELATION_SQRT: torch.Tensor = _color_correlation_sqrt()

# Adam moves every Fourier coefficient by about lr per step; with ``1/f`` scaling the
# lowest frequency is ~max(H, W) times larger than the highest. This gain keeps the
# pixel-space change of one step at lr 0.05 to a few hundredths of a logit.
_FOURIER_GAIN = 0.25


def _shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    dims = tuple(int(s) for s in shape)
    if len(dims) != 4 or min(dims) < 1:
        raise BadInputError(
            f"an image parameterisation needs a shape (B, C, H, W) of positive sizes, got {tuple(shape)}"
        )
    return dims[0], dims[1], dims[2], dims[3]


def _logit(pixels: torch.Tensor, eps: float) -> torch.Tensor:
    p = pixels.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def _check_pixels(pixels: torch.Tensor) -> torch.Tensor:
    if (
        not isinstance(pixels, torch.Tensor)
        or not pixels.is_floating_point()
        or pixels.dim() not in (3, 4)
    ):
        got = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise BadInputError(f"expected a float pixel batch (B, C, H, W) in [0, 1], got {got}")
    return pixels[None] if pixels.dim() == 3 else pixels


class ImageParam:
    """Base of the parameterisations: ``param()`` is the pixel-space batch."""

    shape: tuple[int, int, int, int]

    def parameters(self) -> list[torch.Tensor]:
        """The leaf tensors the optimiser updates."""
        raise NotImplementedError

    def __call__(self) -> torch.Tensor:
        """The images, pixel space ``(B, C, H, W)`` in [0, 1], differentiable."""
        raise NotImplementedError

    @torch.no_grad()
    def set_image(self, pixels: torch.Tensor, eps: float = 1e-3) -> None:
        """Set the parameters (in place) so that ``self()`` returns ``pixels``.

        Pixels are clamped to ``[eps, 1 - eps]`` first (the sigmoid never reaches 0 or 1);
        with the default ``eps`` the 8-bit quantisation of the result equals that of
        ``pixels``.
        """
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    @property
    def batch(self) -> int:
        return self.shape[0]

    def _check_same_shape(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = _check_pixels(pixels)
        if tuple(pixels.shape) != self.shape:
            raise BadInputError(
                f"image has shape {tuple(pixels.shape)} but the parameterisation is {self.shape}"
            )
        return pixels


class PixelParam(ImageParam):
    """Free pixels through a sigmoid: ``image = sigmoid(w)``, ``w`` one logit per value.

    The sigmoid (rather than a clamp) keeps every value in (0, 1) with a gradient
    everywhere; :meth:`from_image` inverts it.

    Parameters
    ----------
    shape
        ``(B, C, H, W)``.
    generator
        Draws the initial logits, ``N(0, init_std^2)`` (grey with a little noise).
    init_std
        Standard deviation of the initial logits.
    device, dtype
        Where the parameters live (the engine passes the model's).

    Examples
    --------
    >>> param = PixelParam((1, 3, 224, 224), torch.Generator().manual_seed(0))
    >>> param().shape
    torch.Size([1, 3, 224, 224])
    """

    def __init__(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        init_std: float = 0.01,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.shape = _shape(shape)
        if not init_std >= 0:
            raise BadInputError(f"init_std must be >= 0, got {init_std}")
        self.init_std = float(init_std)
        # no draw at init_std 0 (from_image): it would move the global RNG for nothing
        noise = (
            torch.randn(self.shape, generator=generator, dtype=torch.float64) * init_std
            if init_std
            else torch.zeros(self.shape, dtype=torch.float64)
        )
        self.logits = noise.to(device=device, dtype=dtype).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.logits]

    def __call__(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @torch.no_grad()
    def set_image(self, pixels: torch.Tensor, eps: float = 1e-3) -> None:
        pixels = self._check_same_shape(pixels)
        self.logits.copy_(_logit(pixels.to(self.logits), eps))

    @classmethod
    def from_image(cls, pixels: torch.Tensor, *, eps: float = 1e-3) -> PixelParam:
        """A parameterisation whose image is ``pixels`` (clamped to ``[eps, 1 - eps]``)."""
        pixels = _check_pixels(pixels)
        param = cls(pixels.shape, init_std=0.0, device=pixels.device, dtype=pixels.dtype)
        param.set_image(pixels, eps)
        return param

    def describe(self) -> str:
        return "pixel"


def fourier_scale(
    h: int, w: int, decay_power: float = 1.0, *, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """The ``(H, W // 2 + 1)`` spectrum weights ``1 / max(f, 1 / max(H, W))^decay_power``.

    ``f`` is the frequency in cycles per pixel of each ``torch.fft.rfft2`` coefficient;
    the floor at one cycle per image keeps the constant term finite. Natural images have
    amplitude spectra falling roughly as ``1/f`` (Field 1987), so white noise in these
    coordinates is a natural-looking image.
    """
    fy = torch.fft.fftfreq(h, dtype=dtype)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=dtype)[None, :]
    freq = (fy**2 + fx**2).sqrt()
    scale: torch.Tensor = freq.clamp_min(1.0 / max(h, w)).pow(-decay_power)
    return scale


class FourierParam(ImageParam):
    """Decorrelated colour in Fourier space through a sigmoid.

    ``image = sigmoid(M · irfft2(S ⊙ s(f)) · g)``: ``S`` the parameters, complex
    coefficients in ``torch.fft.rfft2`` layout (``"ortho"`` normalisation), ``s(f)`` the
    :func:`fourier_scale` weights ``1/f^decay_power``, ``g`` a fixed gain, and ``M``
    :data:`COLOR_CORRELATION_SQRT`, a square root of the ImageNet colour covariance, so the
    decorrelated channels have ImageNet's colour statistics (Olah et al. 2017, Distill;
    Mordvintsev, Pezzotti, Schubert & Olah 2018, "Differentiable Image
    Parameterizations", Distill, doi:10.23915/distill.00012). Models with other than 3
    channels (grayscale) skip the colour matrix.

    Parameters
    ----------
    shape
        ``(B, C, H, W)``.
    generator
        Draws the initial coefficients, ``N(0, init_std^2)``.
    decay_power
        Exponent of the ``1/f`` spectrum weights; 0 gives plain (unweighted) Fourier pixels.
    decorrelate
        Apply the colour matrix (3-channel images only).
    init_std
        Standard deviation of the initial coefficients.
    device, dtype
        Where the parameters live.

    Examples
    --------
    >>> param = FourierParam((4, 3, 224, 224), torch.Generator().manual_seed(0))
    >>> images = param()   # (4, 3, 224, 224) in [0, 1]
    """

    def __init__(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        decay_power: float = 1.0,
        decorrelate: bool = True,
        init_std: float = 0.01,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.shape = _shape(shape)
        if not init_std >= 0:
            raise BadInputError(f"init_std must be >= 0, got {init_std}")
        if not math.isfinite(decay_power) or decay_power < 0:
            raise BadInputError(f"decay_power must be a finite number >= 0, got {decay_power}")
        b, c, h, w = self.shape
        self.decay_power = float(decay_power)
        self.decorrelate = bool(decorrelate) and c == 3
        self.init_std = float(init_std)
        noise = (
            torch.randn((b, c, h, w // 2 + 1, 2), generator=generator, dtype=torch.float64)
            * init_std
        )
        self.spectrum = noise.to(device=device, dtype=dtype).requires_grad_(True)
        self._scale = (fourier_scale(h, w, decay_power) * _FOURIER_GAIN).to(
            device=device, dtype=dtype
        )
        self._color = COLOR_CORRELATION_SQRT.to(device=device, dtype=dtype)

    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def _to_logits(self) -> torch.Tensor:
        _, _, h, w = self.shape
        coeffs = torch.view_as_complex(self.spectrum) * self._scale
        spatial = torch.fft.irfft2(coeffs, s=(h, w), norm="ortho")
        if self.decorrelate:
            spatial = torch.einsum("ij,bjhw->bihw", self._color, spatial)
        logits: torch.Tensor = spatial
        return logits

    def __call__(self) -> torch.Tensor:
        return torch.sigmoid(self._to_logits())

    @torch.no_grad()
    def set_image(self, pixels: torch.Tensor, eps: float = 1e-3) -> None:
        pixels = self._check_same_shape(pixels)
        logits = _logit(pixels.to(self.spectrum), eps)
        if self.decorrelate:
            logits = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self._color), logits)
        coeffs = torch.fft.rfft2(logits, norm="ortho") / self._scale
        self.spectrum.copy_(torch.view_as_real(coeffs))

    @classmethod
    def from_image(
        cls,
        pixels: torch.Tensor,
        *,
        decay_power: float = 1.0,
        decorrelate: bool = True,
        eps: float = 1e-3,
    ) -> FourierParam:
        """A parameterisation whose image is ``pixels`` (clamped to ``[eps, 1 - eps]``)."""
        pixels = _check_pixels(pixels)
        param = cls(
            pixels.shape,
            decay_power=decay_power,
            decorrelate=decorrelate,
            init_std=0.0,
            device=pixels.device,
            dtype=pixels.dtype,
        )
        param.set_image(pixels, eps)
        return param

    def describe(self) -> str:
        return f"fourier(decay_power={self.decay_power:g}, decorrelate={self.decorrelate})"
