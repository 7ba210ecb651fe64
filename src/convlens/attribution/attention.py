"""What a vision transformer attends to: raw attention maps and attention rollout.

Both read the attention probabilities ``A`` ``(N, heads, T, T)`` (row ``i`` is how token
``i`` weighs every token; rows sum to 1) of the model's attention layers. They are
found automatically: one probe forward pass (once per model and input shape) records every
leaf module whose output is such a probability tensor, in forward order (an ``nn.Softmax``
like ``blocks.3.attn.attend`` in convlens's ViT or vit-pytorch's ``attend``; timm's
``attn_drop`` when timm runs without fused attention). An identity right after one (a
dropout in eval mode) is the same layer and is not counted twice. ``attention_layers=``
names them explicitly instead.

Both maps are **target-independent**: attention does not depend on the class being
explained (the target is validated and ignored). Both return the class token's row over
the patch tokens on the patch grid (:func:`convlens.tokens.token_grid`: class and register
tokens dropped), upsampled bilinearly to the input size: ``(N, 1, H, W)``, unnormalised.
On a model without a class token (``token="mean"`` or a grid with no extra tokens), the
mean of all rows is used: what a mean-pooled head reads.

A model whose attention probabilities never leave one fused kernel (PyTorch's
``scaled_dot_product_attention``, timm's default) has nothing to read: it is refused with a
clear message (for timm, set ``TIMM_FUSED_ATTN=0`` before importing timm).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convlens.attribution.base import record_provenance, register_method
from convlens.errors import BadInputError
from convlens.hooks import capture, inference_context, trace_calls
from convlens.layers import resolve_layer
from convlens.models.model import Model
from convlens.targets import TargetLike, resolve_target
from convlens.tokens import GridLike, token_grid

__all__ = ["attention_map", "attention_rollout", "find_attention_layers", "has_attention_layers"]

HEAD_FUSIONS = ("mean", "max", "min")

# per module: input shape (C, H, W) -> the attention layers' names in call order
_FOUND: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _is_probability(t: torch.Tensor) -> bool:
    """``(N, heads, T, T)`` with non-negative rows that sum to 1."""
    if t.dim() != 4 or t.shape[-1] != t.shape[-2] or t.shape[-1] < 2 or not t.is_floating_point():
        return False
    rows = t.detach().double().sum(dim=-1)
    return bool(t.amin() >= -1e-6) and bool((rows - 1).abs().amax() < 1e-3)


def find_attention_layers(model: Model, x: torch.Tensor | None = None) -> list[str]:
    """The model's attention layers (modules whose output is attention probabilities), in call order.

    A module that runs several times per forward is listed once per call. One probe forward
    of ``x[:1]`` (default: a blank image at the model's input size), cached per model and
    input shape.

    Raises
    ------
    BadInputError
        No module outputs attention probabilities (a CNN, or fused attention).
    """
    if x is None:
        h, w = model.input_size
        x = torch.zeros(1, model.channels, h, w, device=model.device, dtype=model.dtype)
    key = tuple(int(s) for s in x.shape[1:])
    found = _FOUND.setdefault(model.module, {})
    if key not in found:
        names: list[str] = []
        previous: torch.Tensor | None = None
        with (
            inference_context(model.module),
            torch.no_grad(),
            trace_calls(model.module, leaves_only=True) as calls,
        ):
            model.module(x[:1].detach())
        for call in sorted(calls, key=lambda c: c.order):
            out = call.output
            if out is None or not _is_probability(out):
                continue
            same = (
                previous is not None
                and bool(call.inputs)
                and call.inputs[0].shape == previous.shape
                and torch.equal(call.inputs[0], previous)
            )
            if not same:  # an identity after the softmax (dropout in eval) is the same layer
                names.append(call.name)
            previous = out
        found[key] = tuple(names)
    if not found[key]:
        raise BadInputError(
            f"model {model.name} has no attention layer: no module outputs attention probabilities (N, heads, T, T) whose rows sum to 1. "
            + "Attention maps need a vision transformer whose softmax is a module (nn.Softmax); for timm set TIMM_FUSED_ATTN=0 before importing timm "
            + "(fused attention keeps the probabilities inside one kernel), or pass attention_layers=[names]"
        )
    return list(found[key])


def has_attention_layers(model: Model) -> bool:
    """Whether :func:`find_attention_layers` finds any (the methods' ``applies`` test)."""
    try:
        return bool(find_attention_layers(model))
    except BadInputError:
        return False
    except (RuntimeError, TypeError, ValueError):
        return False  # a model the blank probe cannot run is not one to offer attention maps for


def _attentions(
    model: Model, x: torch.Tensor, attention_layers: Sequence[str | nn.Module] | None
) -> list[torch.Tensor]:
    """The attention probabilities ``(N, heads, T, T)`` of every attention layer, in call order."""
    if attention_layers is None:
        sequence = find_attention_layers(model, x)
    else:
        sequence = [resolve_layer(model.module, ref)[0] for ref in attention_layers]
        if not sequence:
            raise BadInputError(
                "attention_layers is empty; pass at least one layer name, or None to find them"
            )
    unique = list(dict.fromkeys(sequence))
    with inference_context(model.module), torch.no_grad(), capture(model.module, unique) as acts:
        model.module(x.detach())
    taken = dict.fromkeys(unique, 0)
    maps = []
    for name in sequence:
        calls = acts.calls.get(name, [])
        if taken[name] >= len(calls):
            raise BadInputError(
                f"attention layer {name!r} ran {len(calls)} times, but is listed {sequence.count(name)} times"
            )
        a = calls[taken[name]]
        taken[name] += 1
        if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
            raise BadInputError(
                f"layer {name!r} outputs shape {tuple(a.shape)}, not attention probabilities (N, heads, T, T)"
            )
        maps.append(a)
    return maps


def _check_fusion(head_fusion: str) -> None:
    if head_fusion not in HEAD_FUSIONS:
        raise BadInputError(f"head_fusion={head_fusion!r}: choose {', '.join(HEAD_FUSIONS)}")


def _fuse(a: torch.Tensor, head_fusion: str) -> torch.Tensor:
    """``(N, heads, T, T) -> (N, T, T)``: the mean, max or min over heads."""
    if head_fusion == "max":
        return a.amax(dim=1)
    if head_fusion == "min":
        return a.amin(dim=1)
    return a.mean(dim=1)


def _class_row_on_grid(
    matrix: torch.Tensor, x: torch.Tensor, reshape: GridLike, token: int | str
) -> torch.Tensor:
    """The row of ``matrix`` ``(N, T, T)`` for the class token (or the mean row), over the
    patch tokens, as ``(N, 1, H, W)`` upsampled to ``x``'s size."""
    n, t, _ = matrix.shape
    h, w, extra = token_grid(
        t, input_size=(int(x.shape[-2]), int(x.shape[-1])), reshape=reshape, shape=(n, t, t)
    )
    record_provenance("tokens", {"grid": [h, w], "dropped_tokens": extra})
    if token == "auto":
        token = 0 if extra > 0 else "mean"
    if token == "mean":
        row = matrix.mean(dim=1)
    elif isinstance(token, int) and not isinstance(token, bool) and -t <= token < t:
        row = matrix[:, token]
    else:
        raise BadInputError(
            f"token={token!r}: pass 'auto', 'mean' or a token index in 0..{t - 1} (0 is the class token)"
        )
    grid = row[:, extra:].reshape(n, 1, h, w)
    return F.interpolate(grid, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False).to(
        x.dtype
    )


_PAPER_MAP = "Abnar & Zuidema 2020, arXiv:2005.00928 (raw attention); Dosovitskiy et al. 2021, arXiv:2010.11929"


@register_method("attention_map", output="cam", paper=_PAPER_MAP, applies=has_attention_layers)
def attention_map(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    attention_layer: int | str = -1,
    head_fusion: str = "mean",
    token: int | str = "auto",
    attention_layers: Sequence[str | nn.Module] | None = None,
    reshape: GridLike = None,
) -> torch.Tensor:
    """Raw attention: how the class token weighs each patch in one attention layer.

    The "raw attention" baseline of Abnar & Zuidema, "Quantifying Attention Flow in
    Transformers", ACL 2020, arXiv:2005.00928; the attention pictures of Dosovitskiy et al.
    2021, arXiv:2010.11929. For layer ``l`` with probabilities ``A_l`` ``(heads, T, T)``::

        map[i, j] = fuse_heads(A_l)[cls, k + i * w + j]

    with ``fuse_heads`` the mean (default), max or min over heads and ``k`` the number of
    class and register tokens. Target-independent.

    Parameters
    ----------
    model, x, target
        As :func:`~convlens.attribution.cam.gradcam` (``target`` is validated, not used).
    attention_layer
        Which attention layer: an index into the layers in call order (default -1, the
        last) or a dotted name among them.
    head_fusion
        ``"mean"``, ``"max"`` or ``"min"`` over heads.
    token
        The row to show: ``"auto"`` (the class token, token 0, when the grid leaves extra
        tokens; else the mean row), ``"mean"`` or a token index.
    attention_layers
        Names of the attention-probability modules, instead of finding them.
    reshape
        The patch grid ``(h, w)`` (default: inferred from ``T`` and the input's shape).

    Returns
    -------
    torch.Tensor
        ``(N, 1, H, W)``, non-negative.

    Raises
    ------
    BadInputError
        The model has no attention layer (see the module docstring), or a bad option.
    """
    resolve_target(model, target, x.shape[0])
    _check_fusion(head_fusion)
    maps = _attentions(model, x, attention_layers)
    names = (
        list(attention_layers) if attention_layers is not None else find_attention_layers(model, x)
    )
    if isinstance(attention_layer, str):
        if attention_layer not in names:
            raise BadInputError(
                f"attention_layer={attention_layer!r} is not one of the attention layers: {', '.join(map(str, names))}"
            )
        index = names.index(attention_layer)
    elif (
        isinstance(attention_layer, int)
        and not isinstance(attention_layer, bool)
        and -len(maps) <= attention_layer < len(maps)
    ):
        index = attention_layer
    else:
        raise BadInputError(
            f"attention_layer={attention_layer!r}: the model has {len(maps)} attention layers; pass an index in {-len(maps)}..{len(maps) - 1} or a name"
        )
    record_provenance("attention_layer", str(names[index]))
    return _class_row_on_grid(_fuse(maps[index], head_fusion), x, reshape, token)


@register_method(
    "attention_rollout",
    output="cam",
    paper="Abnar & Zuidema 2020, arXiv:2005.00928",
    applies=has_attention_layers,
)
def attention_rollout(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    token: int | str = "auto",
    attention_layers: Sequence[str | nn.Module] | None = None,
    reshape: GridLike = None,
) -> torch.Tensor:
    """Attention rollout: attention propagated through every layer and the residual paths.

    Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020,
    arXiv:2005.00928. Each layer's attention, heads fused, is mixed with the identity for
    the residual connection and its rows renormalised; the layers are multiplied from the
    first to the last::

        A'_l = normalise_rows(0.5 * fuse_heads(A_l) + 0.5 * I)
        R    = A'_L @ ... @ A'_2 @ A'_1
        map[i, j] = R[cls, k + i * w + j]

    ``R[i, j]`` is how much of token ``j`` of the input reaches token ``i`` of the last
    layer. Target-independent.

    Parameters
    ----------
    model, x, target, head_fusion, token, attention_layers, reshape
        As :func:`attention_map`.
    discard_ratio
        Before the identity is added, set this fraction of each layer's smallest fused
        weights (per image, over the whole ``T x T`` matrix) to 0: the noise filter of
        common rollout code (0.9 is typical). 0 (default) is the paper's rollout.

    Returns
    -------
    torch.Tensor
        ``(N, 1, H, W)``, non-negative.
    """
    resolve_target(model, target, x.shape[0])
    _check_fusion(head_fusion)
    if not 0.0 <= float(discard_ratio) < 1.0:
        raise BadInputError(f"discard_ratio={discard_ratio!r}: pass a fraction in [0, 1)")
    maps = _attentions(model, x, attention_layers)
    n, _, t, _ = maps[0].shape
    eye = torch.eye(t, dtype=maps[0].dtype, device=maps[0].device)
    rollout = eye.expand(n, t, t)
    for a in maps:
        if a.shape[-1] != t:
            raise BadInputError(
                f"attention layers have different token counts ({t} and {a.shape[-1]}); pass attention_layers= with one stage"
            )
        fused = _fuse(a, head_fusion)
        drop = int(t * t * float(discard_ratio))
        if drop:
            flat = fused.reshape(n, t * t)
            lowest = flat.topk(drop, dim=1, largest=False).indices
            fused = flat.scatter(1, lowest, 0.0).reshape(n, t, t)
        mixed = 0.5 * fused + 0.5 * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    return _class_row_on_grid(rollout, x, reshape, token)
