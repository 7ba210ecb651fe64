"""Localisation: does the map point at the object?

The pointing game (Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down Neural
Attention by Excitation Backprop", ECCV 2016 / IJCV 2018, arXiv:1608.00507): a map scores
a *hit* when its maximum lies on the annotated object, with a tolerance of 15 pixels
(the point may be up to 15 px, Euclidean, from the object region).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from convlens.errors import BadInputError

__all__ = ["pointing_game"]

BoxesOrMasks = torch.Tensor | Sequence[torch.Tensor | Sequence[Sequence[float]] | Sequence[float]]


def pointing_game(
    maps: torch.Tensor, boxes_or_masks: BoxesOrMasks, tolerance: float = 15
) -> torch.Tensor:
    """Hit or miss of each map's maximum on the object, with a tolerance in pixels.

    Zhang et al. 2016/2018, arXiv:1608.00507. The point is the map's maximum (the first in
    raster order when several pixels share it); it is a hit when its Euclidean distance to
    the object region is at most ``tolerance`` pixels (a disk dilation of the region).

    Parameters
    ----------
    maps
        ``(N, H, W)`` or ``(N, 1, H, W)`` maps over the model input.
    boxes_or_masks
        Either masks, a bool or 0/1 tensor ``(N, H, W)`` / ``(N, 1, H, W)`` (non-zero =
        object), or boxes ``(x_min, y_min, x_max, y_max)`` in pixel indices of the map,
        inclusive (as ``torchvision.ops.masks_to_boxes`` gives them): a tensor ``(N, 4)``,
        or a length-``N`` list of ``(K_i, 4)`` boxes when an image has several objects
        (a hit on any of them counts).
    tolerance
        Largest distance, in pixels, from the point to the region that still counts as a
        hit (15 in the paper; 0 = exactly inside).

    Returns
    -------
    Tensor
        ``(N,)`` bool, True for a hit (on the maps' device).

    Raises
    ------
    BadInputError
        Shapes that do not match, a negative tolerance, boxes with ``x_max < x_min``.
    """
    maps = _maps(maps)
    if not tolerance >= 0:
        raise BadInputError(f"tolerance={tolerance!r}: pass a distance in pixels >= 0")
    n, h, w = maps.shape
    flat_index = maps.reshape(n, -1).argmax(dim=1)  # first maximum in raster order
    py, px = (flat_index // w).double(), (flat_index % w).double()
    if isinstance(boxes_or_masks, torch.Tensor) and boxes_or_masks.dim() in (3, 4):
        distance = _distance_to_masks(py, px, boxes_or_masks, (n, h, w))
    else:
        distance = _distance_to_boxes(py, px, boxes_or_masks, n)
    return (distance <= tolerance).to(maps.device)


def _maps(maps: torch.Tensor) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor):
        raise BadInputError(f"maps must be a tensor (N, H, W), not {type(maps).__name__}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise BadInputError(f"maps have shape {tuple(maps.shape)}; pass (N, H, W) or (N, 1, H, W)")
    return maps.detach()


def _distance_to_masks(
    py: torch.Tensor, px: torch.Tensor, masks: torch.Tensor, shape: tuple[int, int, int]
) -> torch.Tensor:
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if tuple(masks.shape) != shape:
        raise BadInputError(
            f"masks have shape {tuple(masks.shape)} but maps are {shape}; pass one (H, W) mask per map"
        )
    n, h, w = shape
    masks = masks.to(py.device) != 0
    ys = torch.arange(h, device=py.device, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, device=py.device, dtype=torch.float64).view(1, 1, w)
    squared = (ys - py.view(n, 1, 1)) ** 2 + (xs - px.view(n, 1, 1)) ** 2
    squared = torch.where(masks, squared, torch.full_like(squared, float("inf")))
    return squared.reshape(n, -1).min(dim=1).values.sqrt()  # inf for an empty mask: a miss


def _distance_to_boxes(
    py: torch.Tensor, px: torch.Tensor, boxes: BoxesOrMasks, n: int
) -> torch.Tensor:
    per_image = _box_list(boxes, n)
    distances = []
    for i, b in enumerate(per_image):
        if b.numel() == 0:
            distances.append(torch.tensor(float("inf"), dtype=torch.float64))
            continue
        x0, y0, x1, y1 = b.unbind(dim=1)
        # distance from a point to an axis-aligned box: 0 inside, else to the nearest side
        dx = (x0 - px[i].cpu()).clamp(min=0) + (px[i].cpu() - x1).clamp(min=0)
        dy = (y0 - py[i].cpu()).clamp(min=0) + (py[i].cpu() - y1).clamp(min=0)
        distances.append(torch.sqrt(dx**2 + dy**2).min())
    return torch.stack(distances).to(py.device)


def _box_list(boxes: BoxesOrMasks, n: int) -> list[torch.Tensor]:
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise BadInputError(
                f"boxes have shape {tuple(boxes.shape)}; pass (N, 4) boxes (x_min, y_min, x_max, y_max) or (N, H, W) masks"
            )
        items: list[torch.Tensor] = [b.view(1, 4) for b in boxes]
    elif isinstance(boxes, Sequence):
        items = [
            torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4) if len(b) else torch.zeros(0, 4)
            for b in boxes
        ]
    else:
        raise BadInputError(
            f"boxes_or_masks must be a tensor or a list of boxes, not {type(boxes).__name__}"
        )
    if len(items) != n:
        raise BadInputError(
            f"{len(items)} boxes (or box lists) for {n} maps; pass one entry per map"
        )
    items = [b.detach().double().cpu() for b in items]
    for b in items:
        if b.numel() and ((b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any()):
            raise BadInputError(
                f"box {b.tolist()} has x_max < x_min or y_max < y_min; boxes are (x_min, y_min, x_max, y_max)"
            )
    return items
