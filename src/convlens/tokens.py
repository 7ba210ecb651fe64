"""Token layers as spatial grids: what a vision transformer's ``(N, T, C)`` output looks like.

A vision transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words",
arXiv:2010.11929) cuts the image into an ``h x w`` grid of patches and carries one token
per patch, plus ``k`` extra tokens that belong to no place in the image: a class token
and, in some models, register tokens (Darcet et al. 2024, "Vision Transformers Need
Registers", arXiv:2309.16588). A block's output is ``(N, T, C)`` with ``T = k + h * w``
(channels last, as in timm and vit-pytorch). The extra tokens come first (timm's
``num_prefix_tokens``; convlens's own :class:`~convlens.models.vit.VisionTransformer`).

:func:`token_grid` finds ``(h, w, k)`` from ``T``: the smallest ``k`` in ``0..8`` such that
``T - k`` tokens fill a grid. Without an input size the grid is square. With the model's
input size ``(H, W)`` it is the ``h x w`` grid a patch stride makes of that image (an
integer ``p`` with ``H // p == h`` and ``W // p == w``), so non-square inputs get the grid
whose shape matches the image's (224 x 320 with 16-pixel patches: 14 x 20). ``reshape=(h,
w)`` forces the grid (``k = T - h * w``); ``prefix_tokens=k`` forces the count of extra
tokens. :func:`tokens_to_grid` then drops the extra tokens and returns the feature map
``(N, C, h, w)`` that CAMs, activations and top patches work on, and a record of what it
did (for provenance). Gradients w.r.t. a token layer have the same shape as the layer's
output, so the same call reshapes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from convlens.errors import BadInputError

__all__ = ["MAX_EXTRA_TOKENS", "GridLike", "parse_reshape", "token_grid", "tokens_to_grid"]

#: The most class + register tokens :func:`token_grid` considers when it infers a grid.
MAX_EXTRA_TOKENS = 8

GridLike = tuple[int, int] | Sequence[int] | str | None


def parse_reshape(reshape: GridLike) -> tuple[int, int] | None:
    """``(h, w)`` from ``(h, w)``, ``[h, w]``, ``"HxW"`` or ``"H,W"`` (the CLI's ``--opt reshape=4x4``); None stays None."""
    if reshape is None:
        return None
    parts: Sequence[Any]
    if isinstance(reshape, str):
        parts = reshape.lower().replace(",", "x").split("x")
    else:
        parts = list(reshape)
    try:
        h, w = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise BadInputError(
            f"reshape={reshape!r}: give the token grid as (h, w) or 'HxW', e.g. reshape=(14, 14)"
        ) from None
    if h < 1 or w < 1:
        raise BadInputError(f"reshape={reshape!r}: the grid sides must be >= 1")
    return h, w


def _fits(n: int, input_size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The grid of ``n`` tokens for an image of ``input_size`` (square without one), or None."""
    if n < 1:
        return None
    if input_size is None:
        side = math.isqrt(n)
        return (side, side) if side * side == n else None
    big_h, big_w = input_size
    for h in range(1, n + 1):
        if n % h:
            continue
        w = n // h
        # some integer stride p with H // p == h and W // p == w: p in (H/(h+1), H/h] and the same for W
        low = max(big_h // (h + 1), big_w // (w + 1)) + 1
        high = min(big_h // h, big_w // w)
        if low <= high:
            return h, w
    return None


def token_grid(
    tokens: int,
    *,
    input_size: tuple[int, int] | None = None,
    reshape: GridLike = None,
    prefix_tokens: int | None = None,
    shape: Sequence[int | str] | None = None,
) -> tuple[int, int, int]:
    """``(h, w, k)``: the patch grid of a layer with ``tokens`` tokens and its ``k`` extra tokens.

    Parameters
    ----------
    tokens
        ``T``, the layer's token count.
    input_size
        The model's input ``(H, W)``: the grid then has the image's aspect ratio.
    reshape
        Force the grid ``(h, w)``; the ``T - h * w`` extra tokens come first.
    prefix_tokens
        Force the number of extra tokens; the grid of the rest is inferred.
    shape
        The layer's full output shape, quoted in the error message.

    Raises
    ------
    BadInputError
        No grid fits (the message names the shape and what was tried).
    """
    seen = (
        "(" + ", ".join(str(s) for s in (shape if shape is not None else ("N", tokens, "C"))) + ")"
    )
    grid = parse_reshape(reshape)
    if grid is not None:
        extra = tokens - grid[0] * grid[1]
        if extra < 0 or (prefix_tokens is not None and extra != prefix_tokens):
            wanted = f" with {prefix_tokens} extra tokens" if prefix_tokens is not None else ""
            raise BadInputError(
                f"reshape={grid}: a {grid[0]}x{grid[1]} grid needs {grid[0] * grid[1]} tokens{wanted}, but the layer outputs shape {seen} ({tokens} tokens)"
            )
        return grid[0], grid[1], extra
    candidates = (
        [prefix_tokens]
        if prefix_tokens is not None
        else range(min(MAX_EXTRA_TOKENS, tokens - 1) + 1)
    )
    # a square image whose patch embedding pads (a ceil grid) still has a square grid
    sizes = (
        [input_size, None]
        if input_size is not None and input_size[0] == input_size[1]
        else [input_size]
    )
    for size in sizes:
        for extra in candidates:
            fit = _fits(tokens - extra, size)
            if fit is not None:
                return fit[0], fit[1], extra
    where = (
        f"a grid of the input's {input_size[0]}x{input_size[1]} shape"
        if input_size is not None
        else "a square grid"
    )
    tried = (
        f"{prefix_tokens} extra tokens"
        if prefix_tokens is not None
        else f"0-{MAX_EXTRA_TOKENS} class/register tokens"
    )
    raise BadInputError(
        f"layer output shape {seen} (N, tokens, channels) cannot be reshaped to {where} with {tried}; pass reshape=(h, w)"
    )


def tokens_to_grid(
    t: torch.Tensor,
    reshape: GridLike = None,
    prefix_tokens: int | None = None,
    *,
    input_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """A token tensor ``(N, T, C)`` as a feature map ``(N, C, h, w)``, extra tokens dropped.

    Token ``k + i * w + j`` (row-major after the ``k`` extra tokens, as a patch-embedding
    convolution flattens its output) becomes position ``(i, j)``. Differentiable, so the
    gradient w.r.t. the tokens reshapes the same way.

    Parameters
    ----------
    t
        ``(N, T, C)``, channels last.
    reshape, prefix_tokens, input_size
        As :func:`token_grid`.

    Returns
    -------
    grid : torch.Tensor
        ``(N, C, h, w)`` (a view of ``t`` permuted: contiguous only when copied).
    info : dict
        ``{"grid": [h, w], "dropped_tokens": k}``.

    Raises
    ------
    BadInputError
        ``t`` is not 3-D, or no grid fits.

    Examples
    --------
    >>> grid, info = tokens_to_grid(torch.zeros(2, 197, 192))
    >>> grid.shape, info
    (torch.Size([2, 192, 14, 14]), {'grid': [14, 14], 'dropped_tokens': 1})
    """
    if t.dim() != 3:
        raise BadInputError(
            f"a token layer outputs (N, tokens, channels); got shape {tuple(t.shape)}"
        )
    h, w, extra = token_grid(
        t.shape[1],
        input_size=input_size,
        reshape=reshape,
        prefix_tokens=prefix_tokens,
        shape=tuple(t.shape),
    )
    grid = t[:, extra:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
    return grid, {"grid": [h, w], "dropped_tokens": extra}
