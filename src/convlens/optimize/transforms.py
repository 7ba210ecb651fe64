"""Random transforms (robustness during optimisation) and periodic image operations.

**Random transforms** make the optimised image work under small shifts, zooms and
rotations, so it cannot rely on a pixel-exact adversarial pattern (Mordvintsev, Olah &
Tyka 2015, "Inceptionism"; Olah, Mordvintsev & Schubert 2017, "Feature Visualization",
Distill, "transformation robustness"). They follow torchvision v2's split:
``make_params(x, generator)`` draws every random number (per image) from a
``torch.Generator``, and ``apply(x, params)`` is deterministic, so a seed reproduces a run
bit for bit. ``t(x, generator)`` does both.

Shifts, zooms and rotations are affine maps; :func:`compose` multiplies consecutive ones
into one matrix per image and resamples once (one ``affine_grid`` + ``grid_sample`` per
batch), which is faster and blurs less than resampling after each. Geometry: a transform
moves the *content* -- ``jitter`` by ``(dy, dx)`` gives ``out[y, x] = in[y - dy, x - dx]``,
``random_scale`` by ``s > 1`` magnifies about the centre, ``random_rotate`` by a positive
angle turns the content counter-clockwise as displayed. Where a transform samples outside
the image, ``padding_mode`` decides: ``"reflection"`` (default), ``"border"``, ``"zeros"``
(black) or ``"grey"`` (0.5).

**Periodic operations** on the image (Yosinski, Clune, Nguyen, Fuchs & Lipson 2015,
"Understanding Neural Networks Through Deep Visualization", arXiv:1506.06579), which the
engine applies every few steps: :func:`gaussian_blur`, :func:`clip_small_pixels` and
:func:`clip_small_gradients`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from convlens import blur
from convlens.errors import BadInputError

__all__ = [
    "AffineTransform",
    "Compose",
    "Pad",
    "Transform",
    "clip_small_gradients",
    "clip_small_pixels",
    "compose",
    "gaussian_blur",
    "jitter",
    "pad",
    "random_rotate",
    "random_scale",
    "standard_transforms",
]

Params = dict[str, Any]
_PADDING_MODES = ("reflection", "border", "zeros", "grey")


class Transform:
    """A (random) image transform: ``make_params`` draws, ``apply`` is deterministic.

    Subclasses override :meth:`make_params` and :meth:`apply`, not ``__call__``.
    """

    #: whether :meth:`make_params` draws random numbers (L-BFGS needs none)
    random: bool = True
    description: str = "transform"

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None) -> Params:
        return {}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.make_params(x, generator))

    def __repr__(self) -> str:
        return self.description


def _uniform(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _choice(values: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    idx = torch.randint(len(values), (n,), generator=generator)
    return values[idx]


def _check_padding_mode(mode: str) -> str:
    if mode not in _PADDING_MODES:
        raise BadInputError(f"padding_mode={mode!r}: choose one of {', '.join(_PADDING_MODES)}")
    return mode


def _check_image(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise BadInputError(f"transforms take an image batch (B, C, H, W), got {got}")


class AffineTransform(Transform):
    """A per-image affine map of the content, as a 3x3 matrix in centred pixel coordinates
    ``(x - (W-1)/2, y - (H-1)/2)``. Subclasses implement :meth:`matrices`."""

    padding_mode: str = "reflection"

    def matrices(self, params: Params, batch: int) -> torch.Tensor:
        """``(B, 3, 3)`` float64 forward maps (where each input point goes)."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        _check_image(x)
        return warp_affine(x, self.matrices(params, x.shape[0]), self.padding_mode)


def warp_affine(
    x: torch.Tensor, forward: torch.Tensor, padding_mode: str = "reflection"
) -> torch.Tensor:
    """Resample ``x`` so its content moves by the forward maps ``(B, 3, 3)`` (centred pixel
    coordinates), bilinear, one ``affine_grid`` + ``grid_sample`` for the batch."""
    b, _, h, w = x.shape
    # grid_sample's normalised coordinates (align_corners=False) are centred pixels scaled by 2/W, 2/H
    d = torch.diag(torch.tensor([w / 2, h / 2, 1.0], dtype=torch.float64))
    d_inv = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], dtype=torch.float64))
    theta = d_inv @ torch.linalg.inv(forward) @ d  # output point -> where to sample the input
    grid = F.affine_grid(
        theta[:, :2].to(x.device, x.dtype), [b, x.shape[1], h, w], align_corners=False
    )
    if padding_mode == "grey":
        return (
            F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            + 0.5
        )
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


class _Jitter(AffineTransform):
    def __init__(self, d: int, padding_mode: str) -> None:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise BadInputError(f"jitter takes a whole number of pixels >= 0, got {d!r}")
        self.d = d
        self.padding_mode = _check_padding_mode(padding_mode)
        self.random = d > 0
        self.description = f"jitter({d})"

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None) -> Params:
        n = x.shape[0]
        shift = torch.randint(-self.d, self.d + 1, (n, 2), generator=generator)
        return {"dy": shift[:, 0].double(), "dx": shift[:, 1].double()}

    def matrices(self, params: Params, batch: int) -> torch.Tensor:
        m = torch.eye(3, dtype=torch.float64).repeat(batch, 1, 1)
        m[:, 0, 2] = torch.as_tensor(params["dx"], dtype=torch.float64)
        m[:, 1, 2] = torch.as_tensor(params["dy"], dtype=torch.float64)
        return m


def jitter(d: int, *, padding_mode: str = "reflection") -> AffineTransform:
    """Shift each image by a random whole number of pixels, ``dy, dx`` uniform in ``[-d, d]``.

    ``apply(x, {"dy": ..., "dx": ...})`` with per-image tensors shifts by known offsets.
    """
    return _Jitter(d, padding_mode)


class _Scale(AffineTransform):
    def __init__(self, scales: Sequence[float], padding_mode: str) -> None:
        values = torch.as_tensor([float(s) for s in scales], dtype=torch.float64)
        if values.numel() == 0 or not bool((values > 0).all()):
            raise BadInputError(
                f"random_scale takes a non-empty list of positive factors, got {list(scales)!r}"
            )
        self.values = values
        self.padding_mode = _check_padding_mode(padding_mode)
        self.random = values.numel() > 1
        self.description = f"random_scale({min(values.tolist()):g}-{max(values.tolist()):g})"

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None) -> Params:
        return {"scale": _choice(self.values, x.shape[0], generator)}

    def matrices(self, params: Params, batch: int) -> torch.Tensor:
        m = torch.eye(3, dtype=torch.float64).repeat(batch, 1, 1)
        s = torch.as_tensor(params["scale"], dtype=torch.float64)
        m[:, 0, 0] = s
        m[:, 1, 1] = s
        return m


def random_scale(scales: Sequence[float], *, padding_mode: str = "reflection") -> AffineTransform:
    """Zoom each image about its centre by a factor chosen uniformly from ``scales``."""
    if isinstance(scales, (int, float)):
        raise BadInputError(
            "random_scale takes a list of factors to choose from, e.g. [0.9, 1.0, 1.1]"
        )
    return _Scale(scales, padding_mode)


class _Rotate(AffineTransform):
    def __init__(self, degrees: float | Sequence[float], padding_mode: str) -> None:
        if isinstance(degrees, (int, float)):
            if not math.isfinite(degrees) or degrees < 0:
                raise BadInputError(
                    f"random_rotate takes a maximum angle >= 0 or a list of angles, got {degrees!r}"
                )
            self.max_angle = float(degrees)
            self.values: torch.Tensor | None = None
            self.random = degrees > 0
            self.description = f"random_rotate({degrees:g})"
        else:
            values = torch.as_tensor([float(a) for a in degrees], dtype=torch.float64)
            if values.numel() == 0:
                raise BadInputError("random_rotate got an empty list of angles")
            self.max_angle, self.values = 0.0, values
            self.random = values.numel() > 1
            self.description = f"random_rotate({min(values.tolist()):g}-{max(values.tolist()):g})"
        self.padding_mode = _check_padding_mode(padding_mode)

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None) -> Params:
        n = x.shape[0]
        if self.values is not None:
            return {"degrees": _choice(self.values, n, generator)}
        return {"degrees": (2 * _uniform(n, generator) - 1) * self.max_angle}

    def matrices(self, params: Params, batch: int) -> torch.Tensor:
        rad = torch.deg2rad(torch.as_tensor(params["degrees"], dtype=torch.float64))
        cos, sin = torch.cos(rad), torch.sin(rad)
        m = torch.eye(3, dtype=torch.float64).repeat(batch, 1, 1)
        # y points down: counter-clockwise on screen is (x, y) -> (x cos + y sin, -x sin + y cos)
        m[:, 0, 0], m[:, 0, 1] = cos, sin
        m[:, 1, 0], m[:, 1, 1] = -sin, cos
        return m


def random_rotate(
    degrees: float | Sequence[float], *, padding_mode: str = "reflection"
) -> AffineTransform:
    """Rotate each image about its centre: uniform in ``[-degrees, degrees]`` for a number,
    or chosen uniformly from a list of angles. Positive is counter-clockwise on screen."""
    return _Rotate(degrees, padding_mode)


class Pad(Transform):
    """Pad every side by ``n`` pixels (deterministic; the image grows by ``2n``)."""

    random = False

    def __init__(self, n: int, mode: str, value: float) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise BadInputError(f"pad takes a whole number of pixels >= 0, got {n!r}")
        if mode not in ("constant", "reflect", "replicate", "circular"):
            raise BadInputError(
                f"pad mode={mode!r}: choose constant, reflect, replicate or circular"
            )
        self.n, self.mode, self.value = n, mode, float(value)
        self.description = f"pad({n}, {mode})"

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        _check_image(x)
        if self.n == 0:
            return x
        if self.mode == "constant":
            return F.pad(x, (self.n,) * 4, mode="constant", value=self.value)
        return F.pad(x, (self.n,) * 4, mode=self.mode)


def pad(n: int, mode: str = "constant", value: float = 0.5) -> Transform:
    """Pad by ``n`` pixels: ``mode`` ``"constant"`` (``value``, grey by default), ``"reflect"``,
    ``"replicate"`` or ``"circular"``. The model must accept the larger size."""
    return Pad(n, mode, value)


class Compose(Transform):
    """Transforms in order; consecutive affine ones with the same padding mode are fused
    into one resampling."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        items: list[Transform] = []
        for t in transforms:
            if isinstance(t, Compose):
                items.extend(t.transforms)
            elif isinstance(t, Transform):
                items.append(t)
            else:
                raise BadInputError(f"compose takes convlens transforms, got {type(t).__name__}")
        self.transforms: list[Transform] = items
        self.random = any(t.random for t in items)
        self.description = "compose([" + ", ".join(t.description for t in items) + "])"

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None) -> Params:
        # Sizes can change (pad): draw with the shape each transform will see.
        params: Params = {}
        shape = x
        for i, t in enumerate(self.transforms):
            params[str(i)] = t.make_params(shape, generator)
            if isinstance(t, Pad) and t.n:
                shape = x.new_empty(
                    (x.shape[0], x.shape[1], shape.shape[2] + 2 * t.n, shape.shape[3] + 2 * t.n)
                )
        return params

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        _check_image(x)
        i, n = 0, len(self.transforms)
        while i < n:
            t = self.transforms[i]
            if not isinstance(t, AffineTransform):
                x = t.apply(x, params[str(i)])
                i += 1
                continue
            forward = t.matrices(params[str(i)], x.shape[0])
            j = i + 1
            while j < n:
                nxt = self.transforms[j]
                if not (isinstance(nxt, AffineTransform) and nxt.padding_mode == t.padding_mode):
                    break
                forward = nxt.matrices(params[str(j)], x.shape[0]) @ forward  # later maps act after
                j += 1
            x = warp_affine(x, forward, t.padding_mode)
            i = j
        return x


def compose(transforms: Sequence[Transform]) -> Compose:
    """Apply ``transforms`` in order (affine runs fused into one resampling)."""
    return Compose(transforms)


def standard_transforms(size: int = 224, *, padding_mode: str = "reflection") -> Compose:
    """The default robustness set, scaled to the image side ``size``.

    Shift by up to ``size/28`` pixels (8 at 224), zoom by 0.9-1.1, rotate by up to 10
    degrees, shift again by up to half as much: the recipe of Olah et al. 2017 (Distill),
    fused into one resampling.
    """
    j = max(1, round(size * 8 / 224))
    return compose(
        [
            jitter(j, padding_mode=padding_mode),
            random_scale([0.9 + 0.02 * i for i in range(11)], padding_mode=padding_mode),
            random_rotate(10.0, padding_mode=padding_mode),
            jitter(max(1, j // 2), padding_mode=padding_mode),
        ]
    )


# -- periodic operations on the image (Yosinski et al. 2015) -------------------------------
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each channel with a Gaussian of standard deviation ``sigma`` pixels.

    Separable, truncated at ``4 sigma`` (at most one pixel less than the image side), with
    mirror padding at the edges (``torch``'s ``"reflect"``, scipy's ``"mirror"``), so a
    constant image is unchanged: :func:`convlens.blur.gaussian_blur` with that radius and
    border, refusing ``sigma = 0`` (the engine's blur is either on or absent).
    """
    _check_image(x)
    if not sigma > 0:
        raise BadInputError(f"blur sigma must be > 0 pixels, got {sigma}")
    return blur.gaussian_blur(x, sigma, radius=blur.gaussian_radius(sigma, 4.0), border="reflect")


def _check_percentile(p: float, what: str) -> float:
    if not 0 <= p < 100:
        raise BadInputError(f"{what} must be a percentile in [0, 100), got {p}")
    return float(p)


def clip_small_pixels(x: torch.Tensor, percentile: float, *, grey: float = 0.5) -> torch.Tensor:
    """Set the pixels of smallest norm to grey.

    Per image, a pixel's norm is ``||x[:, y, x] - grey||`` over the channels; pixels whose
    norm is below the image's ``percentile``-th percentile become ``grey`` (the "clipping
    pixels with small norm" of Yosinski et al. 2015, arXiv:1506.06579, with grey as zero).
    """
    _check_image(x)
    p = _check_percentile(percentile, "clip_pixels_percentile")
    if p == 0:
        return x
    norms = (x - grey).norm(dim=1)  # (B, H, W)
    threshold = torch.quantile(norms.flatten(1).double(), p / 100, dim=1).to(norms.dtype)
    keep = (norms >= threshold[:, None, None]).unsqueeze(1)
    return torch.where(keep, x, torch.full_like(x, grey))


def clip_small_gradients(grad: torch.Tensor, percentile: float) -> torch.Tensor:
    """Zero the gradient where it is smallest.

    Per image, the magnitude at each position is the norm over dimension 1 (channels) and
    over any dimensions after the fourth (the real/imaginary pair of Fourier
    coefficients); entries whose magnitude is below the image's ``percentile``-th
    percentile get zero gradient, so only the parts of the image that matter most move
    (Yosinski et al. 2015, arXiv:1506.06579, "clipping pixels with small contribution").
    """
    p = _check_percentile(percentile, "clip_grads_percentile")
    if p == 0 or grad.dim() < 2:
        return grad
    mag = grad.pow(2)
    while mag.dim() > 4:
        mag = mag.sum(dim=-1)
    mag = mag.sum(dim=1)  # (B, ...)
    threshold = torch.quantile(mag.flatten(1).double(), p / 100, dim=1).to(mag.dtype)
    keep = mag >= threshold.view(-1, *([1] * (mag.dim() - 1)))
    keep = keep.unsqueeze(1)
    while keep.dim() < grad.dim():
        keep = keep.unsqueeze(-1)
    return grad * keep
