"""Layer lookup by dotted name, and the layer table with receptive fields.

Layers are addressed by their dotted name from ``named_modules()`` (``"blocks.3.expand_conv"``):
:func:`resolve_layer` (from :mod:`convlens.layer_names`, re-exported here) raises
:class:`~convlens.errors.LayerNotFoundError` listing the three closest real names.

Receptive fields are computed once per model by following one traced forward pass:
for each unit of a layer's output, the input pixels that can influence it form a box
of ``size`` pixels; unit ``(y, x)`` is centred on input pixel ``offset + (y, x) * stride``
(pixel indices, so ``offset`` may be fractional or negative near padding). Per axis,
a convolution or pooling with kernel ``k``, stride ``s``, dilation ``d`` and
leading padding ``p`` maps ``(size r, stride j, offset o)`` to
``(r + (k - 1) d j, j s, o + ((k - 1) d / 2 - p) j)`` (Araujo et al., "Computing
Receptive Fields of Convolutional Neural Networks", Distill 2019). Elementwise layers
keep the geometry; where branches meet (a residual sum) the larger field wins; global
pooling and fully connected layers see the whole input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from convlens.hooks import eval_mode, trace_calls
from convlens.layer_names import resolve_layer

__all__ = ["LayerInfo", "ReceptiveField", "layer_table", "resolve_layer"]


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one layer's output units, per axis ``(y, x)``, in input pixels."""

    size: tuple[float, float]
    stride: tuple[float, float]
    offset: tuple[float, float]
    is_global: bool = False


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer table."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    parameters: int
    calls: int
    receptive_field: ReceptiveField | None
    is_leaf: bool

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape) if self.output_shape else None
        return d


_Geom = tuple[float, float, float, float, float, float]  # size y/x, stride y/x, offset y/x


def _pair(v: object) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)  # type: ignore[call-overload]


def _leading_padding(m: nn.Module, inp: torch.Tensor) -> tuple[float, float] | None:
    """Padding before the first row/column, or None when the layer is not a window op."""
    same_padding = getattr(m, "same_padding", None)
    if same_padding is not None:
        left, _, top, _ = same_padding(inp.shape[-2], inp.shape[-1])
        return float(top), float(left)
    padding = getattr(m, "padding", 0)
    if padding == "same":
        k, d = _pair(m.kernel_size), _pair(getattr(m, "dilation", 1))
        return tuple(float(((ki - 1) * di) // 2) for ki, di in zip(k, d))  # type: ignore[return-value]
    if padding == "valid":
        return 0.0, 0.0
    p = _pair(padding)
    return float(p[0]), float(p[1])


def _apply_window(
    g: _Geom, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int], p: tuple[float, float]
) -> _Geom:
    ry, rx, jy, jx, oy, ox = g
    return (
        ry + (k[0] - 1) * d[0] * jy,
        rx + (k[1] - 1) * d[1] * jx,
        jy * s[0],
        jx * s[1],
        oy + ((k[0] - 1) * d[0] / 2 - p[0]) * jy,
        ox + ((k[1] - 1) * d[1] / 2 - p[1]) * jx,
    )


def _leaf_geometry(m: nn.Module, inp: torch.Tensor, out: torch.Tensor, g: _Geom) -> _Geom | None:
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(m.kernel_size)
        s = _pair(m.stride if m.stride is not None else m.kernel_size)
        d = _pair(getattr(m, "dilation", 1))
        p = _leading_padding(m, inp)
        return _apply_window(g, k, s, d, p or (0.0, 0.0))
    if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):
        left, _, top, _ = m.padding
        ry, rx, jy, jx, oy, ox = g
        return (ry, rx, jy, jx, oy - top * jy, ox - left * jx)
    if out.dim() == 4 and inp.dim() == 4 and out.shape[-2:] == inp.shape[-2:]:
        return g  # elementwise or 1x1-like: same geometry
    return None


def layer_table(module: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """Every module's type, output shape, parameter count, calls and receptive field.

    Runs one forward pass of ``example`` (``(1, C, H, W)``, input space) under
    :func:`convlens.hooks.trace_calls` with gradients off. Receptive fields are in pixels
    of that input.
    """
    with eval_mode(module), torch.no_grad(), trace_calls(module) as calls:
        module(example)

    h, w = example.shape[-2:]
    whole: _Geom = (float(h), float(w), float(h), float(w), (h - 1) / 2, (w - 1) / 2)
    geoms: dict[int, _Geom] = {id(example): (1.0, 1.0, 1.0, 1.0, 0.0, 0.0)}
    global_ids: set[int] = set()
    # (order, spatial shape, geometry) of every output so far, for inputs made by functional ops
    produced: list[tuple[int, tuple[int, ...], _Geom, int]] = [
        (-1, tuple(example.shape[-2:]), geoms[id(example)], id(example))
    ]
    per_call: dict[tuple[str, int], tuple[_Geom | None, bool]] = {}

    def lookup(t: torch.Tensor, before: int) -> _Geom | None:
        if id(t) in geoms:
            return geoms[id(t)]
        if t.dim() != 4:
            return None
        # Made by a functional op (a residual sum, F.pad, ...): take the widest field among
        # earlier outputs of the same spatial size, which is what a sum of branches sees.
        candidates = [
            g for order, shape, g, _ in produced if order < before and shape == tuple(t.shape[-2:])
        ]
        return max(candidates, key=lambda g: g[0] * g[1]) if candidates else None

    for call in sorted(calls, key=lambda c: c.order):
        out = call.output
        is_leaf = not any(True for _ in call.module.children())
        geom: _Geom | None = None
        is_global = False
        if out is not None and call.inputs:
            inp = call.inputs[0]
            g_in = lookup(inp, call.start)
            if id(inp) in global_ids:
                is_global = True
            if is_leaf:
                adaptive = isinstance(call.module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
                if out.dim() != 4 or (adaptive and out.shape[-2:] != inp.shape[-2:]):
                    is_global = True  # pooled over space, flattened or fully connected
                elif g_in is not None:
                    geom = _leaf_geometry(call.module, inp, out, g_in)
            else:
                if id(out) in global_ids:
                    is_global = True
                elif id(out) in geoms:
                    geom = geoms[id(out)]
                elif out.dim() == 4:
                    inner = [
                        g
                        for order, shape, g, _ in produced
                        if call.start < order < call.order and shape == tuple(out.shape[-2:])
                    ]
                    geom = max(inner, key=lambda g: g[0] * g[1]) if inner else None
                else:
                    is_global = True
        if is_global:
            geom = whole
        if out is not None:
            if geom is not None:
                geoms[id(out)] = geom
                if out.dim() == 4:
                    produced.append((call.order, tuple(out.shape[-2:]), geom, id(out)))
            if is_global:
                global_ids.add(id(out))
        per_call[(call.name, call.order)] = (geom, is_global)

    rows: dict[str, LayerInfo] = {}
    counts: dict[str, int] = {}
    for call in sorted(calls, key=lambda c: c.start):
        counts[call.name] = counts.get(call.name, 0) + 1
    for call in sorted(calls, key=lambda c: c.start):
        if call.name in rows:
            continue
        geom, is_global = per_call[(call.name, call.order)]
        rf = None
        if geom is not None:
            rf = ReceptiveField(
                (geom[0], geom[1]), (geom[2], geom[3]), (geom[4], geom[5]), is_global
            )
        out = call.output
        rows[call.name] = LayerInfo(
            name=call.name or "(model)",
            type=type(call.module).__name__,
            output_shape=tuple(out.shape[1:]) if out is not None else None,
            parameters=sum(p.numel() for p in call.module.parameters()),
            calls=counts[call.name],
            receptive_field=rf,
            is_leaf=not any(True for _ in call.module.children()),
        )
    # Modules that never ran (unused heads) are left out: they have no shape or field.
    return [rows[name] for name in rows]


def leaf_names(table: Sequence[LayerInfo]) -> list[str]:
    """Names of the leaf layers in a table, in execution order."""
    return [row.name for row in table if row.is_leaf]
