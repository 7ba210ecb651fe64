"""A compositional pattern-producing network (CPPN) as an image parameterisation.

Stanley 2007, "Compositional pattern producing networks: A novel abstraction of
development" (Genetic Programming and Evolvable Machines 8(2)); used for fooling images by
Nguyen, Yosinski & Clune 2015 (arXiv:1412.1897, evolved) and as a differentiable
parameterisation by Mordvintsev, Pezzotti, Schubert & Olah 2018 ("Differentiable Image
Parameterizations", Distill, doi:10.23915/distill.00012). Each pixel's colour is a small
network's output at that pixel's coordinates,

    image(x, y) = sigmoid( W_L h_{L-1} + b_L ),   h_0 = (x, y, r),   r = sqrt(x^2 + y^2)
    h_i = [ tanh(z_i), sin(z_i) ],               z_i = W_i h_{i-1} + b_i

so the image is a smooth composition of periodic and saturating functions of position:
stripes, rings, blobs and their repetitions, never pixel noise. The weights are what the
optimiser changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from convlens.errors import BadInputError
from convlens.optimize.param import ImageParam, _shape

__all__ = ["CPPNParam"]


class CPPNParam(ImageParam):
    """Images drawn by a small coordinate network (see the module docstring).

    Parameters
    ----------
    shape
        ``(B, C, H, W)``; each of the ``B`` images has its own network.
    generator
        Draws the initial weights, ``N(0, gain^2 / fan_in)``.
    width
        Units per hidden layer (each gives a tanh and a sin output).
    depth
        Hidden layers.
    gain
        Scale of the initial weights: larger gives busier patterns.
    device, dtype
        Where the weights live.

    Examples
    --------
    >>> param = CPPNParam((1, 3, 224, 224), torch.Generator().manual_seed(0))
    >>> param().shape
    torch.Size([1, 3, 224, 224])
    """

    def __init__(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        *,
        width: int = 16,
        depth: int = 6,
        gain: float = 2.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.shape = _shape(shape)
        if width < 1 or depth < 1 or not gain > 0:
            raise BadInputError(
                f"CPPN width and depth must be >= 1 and gain > 0, got {width}, {depth}, {gain}"
            )
        self.width, self.depth, self.gain = width, depth, float(gain)
        b, c, h, w = self.shape
        # coordinates with unit variance over the image, so the first layer's scale is size-free
        ys = torch.linspace(-1, 1, h, dtype=torch.float64) * math.sqrt(3)
        xs = torch.linspace(-1, 1, w, dtype=torch.float64) * math.sqrt(3)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([gx, gy, (gx**2 + gy**2).sqrt()], -1).reshape(h * w, 3)
        self.coords = coords.to(device=device, dtype=dtype)
        sizes = [3] + [2 * width] * depth
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        for fan_in, fan_out in zip(sizes, [width] * depth + [c]):
            weight = torch.randn(b, fan_in, fan_out, generator=generator, dtype=torch.float64) * (
                gain / math.sqrt(fan_in)
            )
            self.weights.append(weight.to(device=device, dtype=dtype).requires_grad_(True))
            self.biases.append(
                torch.zeros(b, 1, fan_out, device=device, dtype=dtype, requires_grad=True)
            )

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def __call__(self) -> torch.Tensor:
        b, c, h, w = self.shape
        hidden = self.coords.expand(b, -1, -1)
        for weight, bias in zip(self.weights[:-1], self.biases[:-1]):
            z = hidden @ weight + bias
            hidden = torch.cat([torch.tanh(z), torch.sin(z)], dim=-1)
        out = torch.sigmoid(hidden @ self.weights[-1] + self.biases[-1])  # (B, H*W, C)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def set_image(self, pixels: torch.Tensor, eps: float = 1e-3) -> None:
        raise BadInputError(
            "a CPPN image cannot be set to given pixels; use PixelParam or FourierParam for that"
        )

    def describe(self) -> str:
        return f"cppn(width={self.width}, depth={self.depth}, gain={self.gain:g})"
