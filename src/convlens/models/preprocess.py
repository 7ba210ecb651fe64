"""Preprocessing as differentiable torch ops, with the geometry to map maps back.

Image space (any size, float RGB in [0, 1]) -> pixel space (the model's input resolution)
-> input space (normalised). Resize and crop are torch ops, so a gradient can flow from
the network back to the user's original image; :class:`Geometry` remembers where the
crop came from so a (H, W) map over the model input can be drawn over the original image.

Round trip (DESIGN.md): an image already at the model's input size is used as it is, with
no resize and no crop, so an 8-bit PNG saved at model resolution is classified exactly as
reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Geometry", "Preprocessing", "map_to_original"]


@dataclass(frozen=True)
class Geometry:
    """Where the model's input came from in the original image.

    The model input is the box ``(top, left, height, width)`` of the original image
    (in original pixels, possibly fractional), resampled to ``input_size``.
    """

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    top: float
    left: float
    height: float
    width: float

    @property
    def identity(self) -> bool:
        """True when the input is the original image unchanged (the round-trip case)."""
        return self.original_size == self.input_size and self.top == 0 and self.left == 0

    def to_dict(self) -> dict[str, object]:
        return {
            "original_size": list(self.original_size),
            "input_size": list(self.input_size),
            "crop_box": [self.top, self.left, self.height, self.width],
        }


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side to ``resize``, centre-crop ``input_size``, normalise.

    ``mean``/``std`` act in pixel space ([0, 1]); the TF-Lite convention
    ``(uint8 - 127) / 128`` is ``mean = 127/255, std = 128/255``.
    """

    input_size: tuple[int, int]
    resize: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3

    def geometry(self, height: int, width: int) -> Geometry:
        """The crop box, in original pixels, for an image of this size."""
        th, tw = self.input_size
        if (height, width) == (th, tw):
            return Geometry((height, width), (th, tw), 0.0, 0.0, float(th), float(tw))
        short = self.resize if self.resize is not None else min(th, tw)
        scale = short / min(height, width)
        rh, rw = max(th, round(height * scale)), max(tw, round(width * scale))
        top, left = (rh - th) // 2, (rw - tw) // 2
        sy, sx = height / rh, width / rw
        return Geometry((height, width), (th, tw), top * sy, left * sx, th * sy, tw * sx)

    def to_pixels(self, image: torch.Tensor) -> tuple[torch.Tensor, Geometry]:
        """Image space ``(C, H, W)`` in [0, 1] -> pixel space ``(channels, h, w)`` and its geometry.

        Differentiable: resize is bilinear with antialiasing, the crop a slice.
        """
        image = self.match_channels(image)
        h, w = image.shape[-2:]
        geometry = self.geometry(h, w)
        if geometry.identity:
            return image, geometry
        th, tw = self.input_size
        short = self.resize if self.resize is not None else min(th, tw)
        scale = short / min(h, w)
        rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
        resized = F.interpolate(
            image[None], size=(rh, rw), mode="bilinear", align_corners=False, antialias=True
        )[0]
        top, left = (rh - th) // 2, (rw - tw) // 2
        return resized[:, top : top + th, left : left + tw].clamp(0, 1), geometry

    def match_channels(self, image: torch.Tensor) -> torch.Tensor:
        """``(C, H, W)`` pixels with the model's channel count (RGB -> BT.601 luma, gray -> RGB)."""
        if image.shape[0] == self.channels:
            return image
        if self.channels == 1 and image.shape[0] == 3:
            # ITU-R BT.601 luma, as PIL's "L" conversion uses.
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
            return (image * weights[:, None, None]).sum(0, keepdim=True)
        if self.channels == 3 and image.shape[0] == 1:
            return image.expand(3, -1, -1)
        raise ValueError(
            f"cannot convert a {image.shape[0]}-channel image to {self.channels} channels"
        )

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel space -> input space."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Input space -> pixel space."""
        mean, std = self._stats(x)
        return x * std + mean

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        return mean, std


def map_to_original(values: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Place a map over the model input onto the original image's pixel grid.

    ``values`` is ``(H, W)`` or ``(C, H, W)`` at any resolution covering the model input.
    The result has the original image's size; pixels outside the crop are NaN (drawn
    transparent by the renderers).
    """
    squeeze = values.dim() == 2
    v = values[None] if squeeze else values
    oh, ow = geometry.original_size
    out = torch.full((v.shape[0], oh, ow), float("nan"), dtype=torch.float32, device=v.device)
    y0, x0 = round(geometry.top), round(geometry.left)
    y1 = min(oh, round(geometry.top + geometry.height))
    x1 = min(ow, round(geometry.left + geometry.width))
    if y1 > y0 and x1 > x0:
        patch = F.interpolate(
            v[None].float(), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False
        )[0]
        out[:, y0:y1, x0:x1] = patch
    return out[0] if squeeze else out
