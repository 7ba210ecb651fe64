"""SmoothGrad, SmoothGrad-squared and VarGrad around any attribution method.

Smilkov, Thorat, Kim, Viégas & Wattenberg, "SmoothGrad: removing noise by adding noise",
2017, arXiv:1706.03825; VarGrad: Adebayo, Gilmer, Goodfellow & Kim, "Local Explanation
Methods for Deep Neural Networks Lack Sensitivity to Parameter Values", 2018,
arXiv:1810.03307. For a method ``M`` and ``n`` noisy copies ``x + e_s``::

    mean: (1/n) sum_s M(x + e_s)          (SmoothGrad)
    sq:   (1/n) sum_s M(x + e_s)^2        (SmoothGrad-squared)
    var:  (1/n) sum_s (M(x + e_s) - mean)^2   (VarGrad, the population variance)

The noise follows the paper's noise *level*: its standard deviation is ``sigma`` times the
range ``max(x) - min(x)`` of each image (over all channels, in input space), so
``sigma = 0.15`` means 15 % of the image's range whatever the normalisation. Sample ``s``
adds ``sigma * range_i * z_s`` to image ``i``, where ``z_s`` is the ``s``-th draw of
``torch.randn(C, H, W, generator=generator)``: every image of a batch sees the same noise
pattern, so a batch equals its items one by one and a seed reproduces a result exactly.

Noisy copies run through the inner method ``chunk`` at a time (memory bounded by
``chunk``); the mean and variance are accumulated in one pass (Welford's update), so
``sigma = 0`` returns exactly the inner method's output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from convlens.attribution.base import METHODS, default_cam_layer, register_method
from convlens.attribution.integrated import _fixed_target, _rows_target
from convlens.errors import BadInputError
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.targets import Target, TargetLike

__all__ = ["MODES", "smooth", "smoothgrad", "smoothgrad_sq", "vargrad"]

MODES = ("mean", "sq", "var")


_SMOOTHED = ("smoothgrad", "smoothgrad_sq", "vargrad")


def _inner(
    method: str | Callable[..., torch.Tensor],
    model: Model,
    generator: torch.Generator | None,
    options: dict[str, Any],
) -> Callable[[Model, torch.Tensor, Target], torch.Tensor]:
    """The wrapped method as ``f(model, x, target)`` with its options bound (a random
    registered method gets the generator, a layer method its default layer)."""
    if callable(method):
        fn = method
    elif isinstance(method, str) and method in METHODS and method not in _SMOOTHED:
        spec = METHODS[method]
        fn = spec.fn
        if spec.random and "generator" not in options:
            options = {**options, "generator": generator}
        if spec.uses_layer and "layer" not in options:
            options = {**options, "layer": default_cam_layer(model)}
    elif method in _SMOOTHED:
        raise BadInputError(
            f"base_method={method!r}: smoothing a smoothed method is not supported; pass a gradient method such as 'saliency'"
        )
    else:
        known = ", ".join(sorted(n for n in METHODS if n not in _SMOOTHED))
        raise BadInputError(
            f"method {method!r} is not an attribution method; pass a callable or one of {known}"
        )
    return lambda m, x, target: fn(m, x, target, **options)


def _check(n_samples: int, sigma: float, mode: str, chunk: int) -> None:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise BadInputError(
            f"n_samples={n_samples!r}: pass a whole number of noisy copies >= 1 (25 is common)"
        )
    if not sigma >= 0:
        raise BadInputError(
            f"sigma={sigma!r}: the noise level is a fraction of the image's range, >= 0 (0.1-0.2 is common)"
        )
    if mode not in MODES:
        raise BadInputError(f"mode={mode!r}: choose {', '.join(MODES)}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise BadInputError(
            f"chunk={chunk!r}: pass the number of noisy images per inner call, >= 1"
        )


class _Moments:
    """Running mean and sum of squared deviations per image (Welford's one-pass update:
    no cancellation, and identical inputs give exactly their value back)."""

    def __init__(self, n: int, like: torch.Tensor, with_variance: bool) -> None:
        self.count = [0] * n
        self.mean = torch.zeros((n, *like.shape[1:]), dtype=like.dtype, device=like.device)
        self.m2 = torch.zeros_like(self.mean) if with_variance else None

    def add(self, items: list[int], values: torch.Tensor) -> None:
        for value, i in zip(values, items):
            self.count[i] += 1
            delta = value - self.mean[i]
            self.mean[i] += delta / self.count[i]
            if self.m2 is not None:
                self.m2[i] += delta * (value - self.mean[i])


class _Noise:
    """``z_s``: the ``s``-th ``torch.randn(C, H, W)`` draw, drawn in order and forgotten
    once every image has used it (rows come sample-major)."""

    def __init__(self, x: torch.Tensor, generator: torch.Generator | None) -> None:
        self.x, self.generator = x, generator
        self.drawn: dict[int, torch.Tensor] = {}
        self.next = 0

    def take(self, samples: list[int]) -> torch.Tensor:
        for old in [k for k in self.drawn if k < samples[0]]:
            del self.drawn[old]
        while self.next <= samples[-1]:
            self.drawn[self.next] = torch.randn(
                self.x.shape[1:], generator=self.generator, device=self.x.device, dtype=self.x.dtype
            )
            self.next += 1
        return torch.stack([self.drawn[s] for s in samples])


def smooth(
    method: str | Callable[..., torch.Tensor],
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    /,
    *,
    n_samples: int = 25,
    sigma: float = 0.15,
    mode: str = "mean",
    chunk: int = 8,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    **method_options: Any,
) -> torch.Tensor:
    """Average an attribution method over noisy copies of each image (SmoothGrad family).

    Smilkov et al. 2017, arXiv:1706.03825 (``mean``, ``sq``); Adebayo et al. 2018,
    arXiv:1810.03307 (``var``). See the module docstring for the formulas and the noise.

    Parameters
    ----------
    method
        A registered method name (``"saliency"``, ``"guided_backprop"``,
        ``"integrated_gradients"``, ...) or a callable ``method(model, x, target, **options)``.
    model, x, target
        The model, the input-space batch and the target (see :func:`~convlens.attribution.explain`);
        a predicted-class target means the class predicted for the clean ``x``.
    n_samples
        Noisy copies per image.
    sigma
        Noise standard deviation as a fraction of each image's value range.
    mode
        ``"mean"`` (SmoothGrad), ``"sq"`` (mean of squares) or ``"var"`` (VarGrad).
    chunk
        Noisy images per call of the inner method (peak memory grows with it).
    generator
        Random source of the noise (and of a random inner method).
    progress
        Optional ``progress(done, total)`` callback, in noisy images.
    **method_options
        Options of the inner method (e.g. ``n_steps`` for Integrated Gradients; an option
        named like one of ``smooth``'s own, such as ``chunk``, goes to ``smooth``).

    Returns
    -------
    torch.Tensor
        Shaped like the inner method's output for ``x``.

    Raises
    ------
    BadInputError
        Bad ``n_samples``, ``sigma``, ``mode``, ``chunk`` or an unknown method.
    """
    _check(n_samples, sigma, mode, chunk)
    if x.dim() < 2 or x.shape[0] == 0:
        raise BadInputError(
            f"x of shape {tuple(x.shape)} holds no images; pass a batch (N, C, H, W) with N >= 1"
        )
    run = _inner(method, model, generator, dict(method_options))
    x = x.detach()
    fixed = _fixed_target(model, x, target)
    n, total = x.shape[0], x.shape[0] * n_samples
    scale = sigma * (x.flatten(1).amax(dim=1) - x.flatten(1).amin(dim=1))
    noise = _Noise(x, generator)
    moments: _Moments | None = None
    for start in range(0, total, chunk):
        rows = range(start, min(start + chunk, total))
        items, samples = [r % n for r in rows], [r // n for r in rows]
        idx = torch.tensor(items, device=x.device)
        noisy = x[idx] + scale[idx].view(-1, *[1] * (x.dim() - 1)) * noise.take(samples)
        out = run(model, noisy, _rows_target(fixed, idx)).detach()
        if mode == "sq":
            out = out * out
        moments = moments or _Moments(n, out, with_variance=mode == "var")
        moments.add(items, out)
        if progress is not None:
            progress(rows.stop, total)
    if moments is None:  # the batch was empty (checked above; keeps the type checker sure)
        raise BadInputError("x holds no images")
    return moments.m2 / n_samples if moments.m2 is not None else moments.mean


_PAPER = "Smilkov et al. 2017, arXiv:1706.03825"


@register_method("smoothgrad", reduce="max_abs", random=True, paper=_PAPER)
def smoothgrad(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    n_samples: int = 25,
    sigma: float = 0.15,
    chunk: int = 8,
    base_method: str = "saliency",
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    **method_options: Any,
) -> torch.Tensor:
    """SmoothGrad: ``(1/n) sum_s M(x + e_s)``, ``e_s ~ N(0, (sigma * (max x - min x))^2)``.

    Smilkov, Thorat, Kim, Viégas & Wattenberg, "SmoothGrad: removing noise by adding
    noise", 2017, arXiv:1706.03825. ``M`` is ``base_method`` (default the saliency
    gradient; any registered method by name); options as :func:`smooth`.
    """
    return smooth(
        base_method,
        model,
        x,
        target,
        n_samples=n_samples,
        sigma=sigma,
        mode="mean",
        chunk=chunk,
        generator=generator,
        progress=progress,
        **method_options,
    )


@register_method("smoothgrad_sq", reduce="sum", random=True, paper=_PAPER)
def smoothgrad_sq(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    n_samples: int = 25,
    sigma: float = 0.15,
    chunk: int = 8,
    base_method: str = "saliency",
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    **method_options: Any,
) -> torch.Tensor:
    """SmoothGrad-squared: ``(1/n) sum_s M(x + e_s)^2`` (noise as :func:`smoothgrad`).

    Smilkov et al. 2017, arXiv:1706.03825 (the squared variant evaluated by Hooker, Erhan,
    Kindermans & Kim 2019, arXiv:1806.10758).
    """
    return smooth(
        base_method,
        model,
        x,
        target,
        n_samples=n_samples,
        sigma=sigma,
        mode="sq",
        chunk=chunk,
        generator=generator,
        progress=progress,
        **method_options,
    )


@register_method(
    "vargrad", reduce="sum", random=True, paper="Adebayo et al. 2018, arXiv:1810.03307"
)
def vargrad(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    n_samples: int = 25,
    sigma: float = 0.15,
    chunk: int = 8,
    base_method: str = "saliency",
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    **method_options: Any,
) -> torch.Tensor:
    """VarGrad: ``(1/n) sum_s (M(x + e_s) - mean_s M(x + e_s))^2`` (noise as :func:`smoothgrad`).

    Adebayo, Gilmer, Goodfellow & Kim, "Local Explanation Methods for Deep Neural Networks
    Lack Sensitivity to Parameter Values", 2018, arXiv:1810.03307 (the population variance).
    """
    return smooth(
        base_method,
        model,
        x,
        target,
        n_samples=n_samples,
        sigma=sigma,
        mode="var",
        chunk=chunk,
        generator=generator,
        progress=progress,
        **method_options,
    )
