"""Model-free maps every attribution method must beat.

A faithfulness number means little alone: deletion and insertion curves depend on the
image, the fill and the model. Three maps that know nothing about the model set the bar
(DESIGN.md "Testing": "baselines that a blob or an edge map would beat"):

- :func:`random_map`: uniform noise, the chance level;
- :func:`centre_gaussian_map`: photographers centre their subject, so a blob in the
  middle is a strong prior on ImageNet;
- :func:`sobel_edge_map`: the magnitude of the image's Sobel gradients, which gradient
  maps are often accused of reproducing (Adebayo et al. 2018, arXiv:1810.03292).

All return ``(N, H, W)`` float maps, higher = more important, like ``explain(...).tensors["map"]``.
"""

from __future__ import annotations

import numpy as np
import torch

from convlens.errors import BadInputError

__all__ = ["baseline_maps", "centre_gaussian_map", "random_map", "sobel_edge_map"]

#: ITU-R BT.601 luma weights (grayscale of an RGB image)
_LUMA = (0.299, 0.587, 0.114)


def random_map(
    shape: tuple[int, int, int],
    generator: torch.Generator | None = None,
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Uniform random maps in ``[0, 1)`` of ``shape`` ``(N, H, W)``, drawn from ``generator``.

    The same seeded generator gives the same maps. Drawn on the generator's device (CPU
    when none is given) and moved to ``device``.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise BadInputError(f"shape={tuple(shape)!r}: pass (N, H, W) with positive sizes")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    maps = torch.rand(tuple(int(s) for s in shape), generator=generator, device=gen_device)
    return maps.to(device) if device is not None else maps


def centre_gaussian_map(
    h: int,
    w: int,
    sigma_frac: float = 0.25,
    *,
    n: int = 1,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """A Gaussian blob at the image centre: ``exp(-(dy^2 / 2 sy^2 + dx^2 / 2 sx^2))``.

    ``sy = sigma_frac * h``, ``sx = sigma_frac * w``; ``(dy, dx)`` is the distance of a
    pixel centre from ``((h - 1) / 2, (w - 1) / 2)``. Returns ``(n, h, w)`` (the same map
    ``n`` times), peak value 1 at the centre.
    """
    if h < 1 or w < 1 or n < 1:
        raise BadInputError(f"h={h}, w={w}, n={n}: pass positive sizes")
    if not sigma_frac > 0:
        raise BadInputError(
            f"sigma_frac={sigma_frac!r}: pass a positive fraction of the image size"
        )
    ys = torch.arange(h, dtype=torch.float32, device=device) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32, device=device) - (w - 1) / 2
    blob = torch.exp(
        -(ys[:, None] ** 2) / (2 * (sigma_frac * h) ** 2)
        - xs[None, :] ** 2 / (2 * (sigma_frac * w) ** 2)
    )
    return blob.expand(n, h, w).clone()


def sobel_edge_map(x_pixels: torch.Tensor) -> torch.Tensor:
    """Magnitude of the Sobel gradients of each image's grayscale, ``(N, C, H, W) -> (N, H, W)``.

    ``x_pixels`` is a pixel-space batch (``model.denormalize(x)``, values in [0, 1]);
    RGB is turned into luma with the BT.601 weights, one channel is used as it is, other
    channel counts are averaged. The filter is scikit-image's ``skimage.filters.sobel``
    (reflected borders; magnitude ``sqrt((Gx^2 + Gy^2) / 2)``). Returned on ``x``'s device
    and dtype.
    """
    from skimage.filters import sobel

    if not isinstance(x_pixels, torch.Tensor) or x_pixels.dim() != 4:
        got = (
            tuple(x_pixels.shape) if isinstance(x_pixels, torch.Tensor) else type(x_pixels).__name__
        )
        raise BadInputError(f"sobel_edge_map needs a pixel-space batch (N, C, H, W); got {got}")
    gray = _grayscale(x_pixels.detach()).double().cpu().numpy()
    edges = np.stack([sobel(g) for g in gray])
    return torch.from_numpy(edges).to(x_pixels.device, x_pixels.dtype)


def baseline_maps(
    x_pixels: torch.Tensor, *, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """The three baselines for a pixel-space batch: ``{"random", "centre_gaussian", "sobel_edges"}``."""
    n, _, h, w = x_pixels.shape
    return {
        "random": random_map((n, h, w), generator).to(x_pixels.device, x_pixels.dtype),
        "centre_gaussian": centre_gaussian_map(h, w, n=n, device=x_pixels.device).to(
            x_pixels.dtype
        ),
        "sobel_edges": sobel_edge_map(x_pixels),
    }


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:
        weights = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1)
    return x.mean(dim=1)
