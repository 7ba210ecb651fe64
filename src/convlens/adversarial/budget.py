"""Budgets in pixel space: norms, projection onto the ball, and 8-bit quantisation inside it.

Every attack works in pixel space (DESIGN.md "Spaces"): images in [0, 1] at the model's
input size, budgets such as ``4/255`` measured there. Attacks start from the **8-bit**
original (what a PNG at model resolution holds) so that the quantised adversarial image
can be kept inside the budget exactly: with an original on the 8-bit grid, rounding the
perturbation to whole levels and clipping it to ``floor(255 eps)`` levels never leaves the
L-inf ball, and rounding toward zero never leaves the L2 ball.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from convlens.data.images import quantize_8bit
from convlens.errors import BadInputError

__all__ = ["Forward", "batch_norms", "check_norm", "project", "quantize_within", "random_in_ball"]

#: a pixel-space classifier: (N, C, H, W) in [0, 1] -> logits (N, K)
Forward = Callable[[torch.Tensor], torch.Tensor]

_NORMS = {"inf": "inf", "linf": "inf", "l-inf": "inf", "2": "2", "l2": "2"}


def check_norm(norm: str | float | int) -> str:
    """``"inf"`` or ``"2"`` from the spellings people use (``inf``, ``Linf``, ``2``, ``L2``, ``float('inf')``)."""
    key = str(norm).strip().lower()
    if key not in _NORMS:
        raise BadInputError(f"norm {norm!r}: expected inf or 2")
    return _NORMS[key]


def batch_norms(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image L-inf and L2 norms of a perturbation batch, ``(N,)`` each."""
    flat = delta.detach().flatten(1)
    return flat.abs().amax(dim=1), flat.norm(dim=1)


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The nearest perturbation inside the ``norm`` ball of radius ``eps`` (per image)."""
    if norm == "inf":
        return delta.clamp(-eps, eps)
    length = delta.flatten(1).norm(dim=1)
    factor = torch.where(length > eps, eps / length.clamp_min(1e-12), torch.ones_like(length))
    return delta * _per_image(factor, delta)


def random_in_ball(
    shape: torch.Size | tuple[int, ...],
    eps: float,
    norm: str,
    generator: torch.Generator | None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A uniform random point of the ball (L-inf: uniform per pixel; L2: uniform in volume)."""
    if norm == "inf":
        return torch.empty(shape, dtype=dtype).uniform_(-eps, eps, generator=generator).to(device)
    direction = torch.randn(shape, generator=generator, dtype=dtype)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(
        -1, *([1] * (len(shape) - 1))
    )
    d = direction[0].numel()
    radius = torch.rand(shape[0], generator=generator, dtype=dtype) ** (1.0 / d) * eps
    return (direction * radius.view(-1, *([1] * (len(shape) - 1)))).to(device)


def quantize_within(
    original: torch.Tensor, adversarial: torch.Tensor, eps: float | None = None, norm: str = "inf"
) -> torch.Tensor:
    """The 8-bit adversarial image, kept inside the budget and the [0, 1] range.

    Parameters
    ----------
    original
        The 8-bit original (values ``k / 255``; ``quantize_8bit`` of it is itself).
    adversarial
        The float adversarial image, same shape.
    eps, norm
        The budget; None for attacks without one (plain rounding).

    Returns
    -------
    torch.Tensor
        Values on the 8-bit grid; ``|q - original|`` within ``eps`` in the given norm
        (up to float rounding of ``k / 255``).
    """
    if eps is None:
        return quantize_8bit(adversarial)
    work = torch.float64
    levels = (adversarial.detach().to(work) - original.to(work)) * 255
    if norm == "inf":
        cap = torch.floor(torch.tensor(eps * 255 + 1e-6, dtype=work))
        steps = levels.round().clamp(-cap, cap)
    else:
        steps = levels.round()
        too_far = steps.flatten(1).norm(dim=1) / 255 > eps + 1e-9
        if too_far.any():
            # rounding toward zero never grows any coordinate, so never the L2 norm; the
            # small offset keeps values a float error below a whole level on that level
            toward_zero = torch.trunc(levels + levels.sign() * 1e-4)
            steps = torch.where(_per_image(too_far, steps), toward_zero, steps)
    return quantize_8bit((original.to(work) + steps / 255).clamp(0, 1)).to(adversarial.dtype)
