"""Fast mode (``Model(..., fast=True)``, CLI ``--fast``): a quicker eager floor, same maps.

Three changes, all exact up to float rounding, chosen by measurement on EfficientNet-Lite0
(benchmarks/README.md, "Fast mode" and "Allocator"):

- **freed memory kept** (:func:`convlens.memory.keep_freed_memory`, process-wide): glibc
  maps every activation afresh and the kernel zero-fills each page on first touch; kept,
  the next batch reuses the pages (Lite0's eager forward at batch 8: 199 -> 108 ms). The
  ``convlens`` command does this for every command; ``fast=True`` does it for library
  users. ``CONVLENS_MALLOC=default`` keeps glibc's defaults.

- **channels-last weights** for every call. oneDNN runs a convolution channels-last when
  its weight is channels-last, whatever the input's layout, so storing the 4-D weights
  that way makes the whole network (depthwise convolutions above all) run in the layout
  the CPU kernels prefer. The module, its layer names and every hook stay as they are; only
  the weights' memory layout changes (their values do not).
- **batch norm folded into the convolution before it**, for forward-only work without
  gradients (:meth:`~convlens.models.model.Model.forward_module`: logits, features) and
  for input gradients taken while nothing is hooked on the original module
  (:meth:`~convlens.models.model.Model.score_module`: saliency, gradient x input,
  integrated gradients, SmoothGrad, GradientSHAP); an eval-mode batch norm is a fixed
  affine map, so ``d S / d x`` through the folded convolution is the original's. A
  convolution ``y = W * x + b`` followed by an eval-mode batch norm
  ``z = gamma (y - mu) / sqrt(var + eps) + beta`` is the convolution with
  ``W' = s W`` and ``b' = s (b - mu) + beta``, ``s = gamma / sqrt(var + eps)`` per output
  channel (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference", arXiv:1712.05877, section 3.2). The folded copy keeps
  every layer name (a folded batch norm becomes ``nn.Identity``, so it outputs the folded
  convolution's result, which is the batch norm's output); a folded convolution's own
  output is not the original's, so work that reads one uses the original module, and so
  do methods that hook or rewrite the backward pass of modules (guided backprop, deconvnet,
  DeepLIFT, LRP, CAMs, layer gradients: their hooks are on the original).

Measured and not used: bfloat16 autocast (max relative gradient error ~0.4 on Lite0: maps
change) and ``torch.compile`` (minutes of compilation per shape on 2 cores, recompiles or
graph breaks under the Python hooks every layer method uses). Everything falls back
silently: a module without 4-D weights, or with inputs smaller than
:data:`CHANNELS_LAST_MIN_SIDE`, stays as it is, a pair whose folded copy does not
reproduce the original's outputs (to 1e-4 relative) is not folded, and what was used is
recorded in the provenance (``fast``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

__all__ = [
    "CHANNELS_LAST_MIN_SIDE",
    "FOLD_RTOL",
    "FOLD_SCOPE",
    "FastState",
    "enable_fast",
    "fold_batchnorm",
    "has_hooks",
    "to_channels_last",
]

#: smallest input side for channels-last weights: below it the layout reorders cost more
#: than they save (an input gradient of digits_cnn, 8x8, took 1.8x as long channels-last;
#: mnist_cnn, 28x28, was even; Lite0, 224x224, 0.7x)
CHANNELS_LAST_MIN_SIDE = 32

#: largest relative difference (max |folded - original| / max |original|) a folded copy may
#: show on a random input; float32 folding is ~1e-6, so a larger gap means a pair was wrong
FOLD_RTOL = 1e-4


#: what the folded copy serves (recorded in provenance as ``fast.fold_batchnorm_scope``)
FOLD_SCOPE = " ".join(
    [
        "forward-only calls (logits, features) and input gradients of methods that hook",
        "no module (saliency, gradient x input, integrated gradients, SmoothGrad, GradientSHAP)",
    ]
)


@dataclass
class FastState:
    """What fast mode uses on one model (recorded in provenance by :meth:`to_dict`)."""

    channels_last: bool = False
    folded: nn.Module | None = field(default=None, repr=False)
    folded_convs: frozenset[str] = frozenset()
    folded_pairs: int = 0
    fingerprint: tuple[Any, ...] = ()
    kept_freed_memory: bool = False
    notes: list[str] = field(default_factory=list)  # why something fell back

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels_last": self.channels_last,
            "fold_batchnorm": self.folded_pairs,
            "fold_batchnorm_scope": FOLD_SCOPE,
            "kept_freed_memory": self.kept_freed_memory,
            "bfloat16": False,
            "compile": False,
            "fallbacks": list(self.notes),
        }


def _has_4d_weights(module: nn.Module) -> bool:
    return any(p.dim() == 4 for p in module.parameters())


def to_channels_last(module: nn.Module) -> tuple[bool, str | None]:
    """Store the module's 4-D parameters and buffers channels-last, in place (values unchanged).

    Returns ``(used, reason)``: ``reason`` says why it was not used.
    """
    if isinstance(module, torch.jit.ScriptModule):
        return False, "channels_last: a TorchScript module keeps its own layout"
    if not _has_4d_weights(module):
        return False, "channels_last: no 4-D (convolution) weights"
    try:
        # Any: torch's stubs omit Module.to's memory_format keyword, which it accepts
        cast(Any, module).to(memory_format=torch.channels_last)
    except Exception as exc:  # some exotic module refuses the layout: stay eager
        return False, f"channels_last: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return True, None


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def has_hooks(module: nn.Module) -> bool:
    """Whether any forward/backward hook is registered on ``module``, one of its submodules
    or globally: a method's captures and backward rules are hooks on the original module,
    so a copy would silently skip them."""
    from torch.nn.modules import module as torch_module

    if any(getattr(torch_module, f"_global{name}", None) for name in _HOOK_DICTS):
        return True
    return any(getattr(m, name, None) for m in module.modules() for name in _HOOK_DICTS)


def fingerprint(module: nn.Module) -> tuple[Any, ...]:
    """Identity and version counter of every parameter and buffer: changes when weights are
    trained, loaded, replaced or moved, which makes a folded copy stale."""
    tensors = [*module.parameters(), *module.buffers()]
    return tuple((t.data_ptr(), t._version, t.device.type) for t in tensors)


def _conv_bn_pairs(module: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv name, batch-norm name)`` pairs where the batch norm's input is the very tensor
    the convolution returned, each module called once (one traced forward pass)."""
    from convlens.hooks import eval_mode, trace_calls

    with torch.no_grad(), eval_mode(module), trace_calls(module, leaves_only=True) as calls:
        module(example)
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.name] = counts.get(call.name, 0) + 1
    produced = {
        id(c.output): c
        for c in calls
        if isinstance(c.module, nn.Conv2d) and c.output is not None and counts[c.name] == 1
    }
    pairs = []
    for call in calls:
        bn = call.module
        if not isinstance(bn, nn.BatchNorm2d) or counts[call.name] != 1 or not call.inputs:
            continue
        if bn.running_mean is None or bn.running_var is None:
            continue
        conv_call = produced.get(id(call.inputs[0]))
        if conv_call is not None and conv_call.output is call.inputs[0]:
            pairs.append((conv_call.name, call.name))
    return pairs


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


@torch.no_grad()
def fold_batchnorm(
    module: nn.Module, example: torch.Tensor
) -> tuple[nn.Module | None, list[str], str | None]:
    """A copy of ``module`` with every convolution -> batch-norm pair folded (see the module
    docstring), checked against the original on ``example``.

    Returns ``(copy or None, folded convolution names, reason when None)``. The original is
    untouched.
    """
    from convlens.hooks import eval_mode

    if isinstance(module, torch.jit.ScriptModule):
        return None, [], "fold_batchnorm: a TorchScript module takes no hooks to find pairs"
    try:
        pairs = _conv_bn_pairs(module, example)
    except Exception as exc:  # the trace itself failed: nothing to fold safely
        return None, [], f"fold_batchnorm: tracing failed ({type(exc).__name__})"
    if not pairs:
        return None, [], "fold_batchnorm: no convolution followed directly by a batch norm"
    try:
        folded = copy.deepcopy(module)
    except Exception as exc:
        return None, [], f"fold_batchnorm: the module cannot be copied ({type(exc).__name__})"
    folded.eval()
    for conv_name, bn_name in pairs:
        conv = folded.get_submodule(conv_name)
        bn = folded.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        mean, var = bn.running_mean, bn.running_var
        assert mean is not None and var is not None
        gamma = bn.weight if bn.weight is not None else torch.ones_like(mean)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(mean)
        scale = gamma / torch.sqrt(var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        weight = (conv.weight * scale.reshape(shape)).contiguous(
            memory_format=torch.channels_last
            if conv.weight.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        conv.weight = nn.Parameter(weight, requires_grad=False)
        conv.bias = nn.Parameter((bias - mean) * scale + beta, requires_grad=False)
        _set_submodule(folded, bn_name, nn.Identity())
    for p in folded.parameters():
        p.requires_grad_(False)
    with eval_mode(module):
        expected = module(example)
    got = folded(example)
    if not (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor)):
        return None, [], "fold_batchnorm: the model's output is not a tensor"
    gap = float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))
    if not gap <= FOLD_RTOL:  # also catches NaN
        return None, [], f"fold_batchnorm: the folded copy differs by {gap:.1e} (> {FOLD_RTOL})"
    return folded, [c for c, _ in pairs], None


def enable_fast(module: nn.Module, example: torch.Tensor) -> FastState:
    """Apply fast mode to ``module`` (channels-last weights, in place) and build its folded
    copy; every step that does not apply falls back silently and says why in ``notes``."""
    from convlens.memory import keep_freed_memory_unless_disabled

    state = FastState()
    state.kept_freed_memory = keep_freed_memory_unless_disabled()
    if not state.kept_freed_memory:
        state.notes.append(
            "kept_freed_memory: CONVLENS_MALLOC=default, or the C library is not glibc"
        )
    h, w = int(example.shape[-2]), int(example.shape[-1])
    if min(h, w) < CHANNELS_LAST_MIN_SIDE:
        least = CHANNELS_LAST_MIN_SIDE
        used = False
        reason: str | None = (
            f"channels_last: inputs of {h}x{w} are below {least}x{least}, where it is slower"
        )
    else:
        used, reason = to_channels_last(module)
    state.channels_last = used
    if reason:
        state.notes.append(reason)
    refold(module, example, state)
    return state


def refold(module: nn.Module, example: torch.Tensor, state: FastState) -> None:
    """(Re)build the folded copy for the module's current weights."""
    state.notes = [n for n in state.notes if not n.startswith("fold_batchnorm")]
    folded, convs, reason = fold_batchnorm(module, example)
    state.folded, state.folded_convs = folded, frozenset(convs)
    state.folded_pairs = len(convs)
    state.fingerprint = fingerprint(module)
    if reason:
        state.notes.append(reason)
