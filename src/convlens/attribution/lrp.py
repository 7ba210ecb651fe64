"""Layer-wise Relevance Propagation (LRP): epsilon, alpha-beta / z+ and the z^B first layer.

Bach, Binder, Montavon, Klauschen, Müller & Samek, "On Pixel-Wise Explanations for
Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation", PLoS ONE 2015,
doi:10.1371/journal.pone.0130140; Montavon, Lapuschkin, Binder, Samek & Müller,
"Explaining Nonlinear Classification Decisions with Deep Taylor Decomposition", 2017,
arXiv:1512.02479 (the z^B rule); Montavon, Binder, Lapuschkin, Samek & Müller,
"Layer-Wise Relevance Propagation: An Overview", 2019 (the gradient implementation).

**Gradient form.** The relevance ``R_k`` of a unit with value ``z_k`` is written as
``R_k = z_k * c_k``; ``c`` is what flows backward through autograd (a *modified gradient*),
and the input relevance is ``R = x * c``. The backward pass starts from ``c = 1`` at the
score, so the score's relevance is the score. For a layer ``z_k = sum_j x_j w_jk + b_k``:

- epsilon: ``R_j = sum_k x_j w_jk / (z_k + eps sign z_k) R_k``, so
  ``c_j = sum_k w_jk s_k`` with ``s_k = c_k z_k / (z_k + eps sign z_k)``, i.e.
  ``c_in = W^T (c_out * z / (z + eps sign z))``;
- alpha-beta (``alpha - beta = 1``): ``R_j = sum_k (alpha (x_j w_jk)^+ / z_k^+ - beta
  (x_j w_jk)^- / z_k^-) R_k`` with ``z^+ = W^+ x^+ + W^- x^- + b^+`` and
  ``z^- = W^- x^+ + W^+ x^- + b^-``; with ``s^± = R / z^±`` this is
  ``c_j = alpha (W^+T s^+)_j - beta (W^-T s^-)_j`` where ``x_j > 0`` and
  ``alpha (W^-T s^+)_j - beta (W^+T s^-)_j`` where ``x_j < 0``; ``zplus`` is alpha=1, beta=0;
- z^B, for the layers that read the input, ``l <= x <= h``: ``R_j = sum_k (x_j w_jk - l_j w^+_jk
  - h_j w^-_jk) / (sum_i x_i w_ik - l_i w^+_ik - h_i w^-_ik) R_k``. This is not of the form
  ``x_j * c_j``, so this rule returns the input relevance itself (added to ``x * c`` of any
  other path from the input).

Activations of the ReLU family pass relevance unchanged (``R(z) = R(a)`` for ``a = f(z)``):
in the gradient form ``c_z = c_a * a / z``, which is the ReLU derivative (so ReLU needs
nothing special) but ``6 / z`` above the ReLU6 ceiling instead of 0.

**Conservation.** A layer passes on all the relevance it receives except what the biases
and the stabiliser keep: with epsilon, unit ``k`` passes on ``(z_k - b_k) / (z_k + eps
sign z_k)`` of ``R_k``; with alpha-beta ``alpha (z^+_k - b^+_k) / z^+_k - beta (z^-_k -
b^-_k) / z^-_k`` of it (so all of it on a bias-free layer, for units that have
contributions of both signs, or positive ones when beta = 0); z^B passes on all of it.

**BatchNorm** is folded into the convolution or linear layer that feeds it, as a
zennit-style canonizer done *inside the rules*: the layer's rule uses ``W' = s W`` and
``b' = s b + t`` (``s = gamma / sqrt(var + eps)``, ``t = beta - s mean``) and the layer's
folded output ``z = s y + t``. The BatchNorm keeps its own backward, ``c_y = s c_z``, and
the layer's rule divides ``s`` out again, so nothing on the model changes. Which BatchNorm reads which layer's output is read from the
module calls of the forward pass itself. A BatchNorm that follows no conv/linear layer
keeps its gradient, which for a per-channel affine map is the LRP-0 rule whatever ``rule``.

**Residual sums** (``h + x`` in EfficientNet's MBConv blocks) and other parameter-free
linear code in ``forward`` (sums, means, reshapes, concatenations) need no rule: in the
gradient form their plain backward sends the same ``c`` to each summand, so summand ``i``
receives ``z_i c = z_i / (sum_j z_j) R``, the proportional split of the LRP literature (the
rule a canonizer gives the sum after making it a module, as zennit does). Max pooling's
gradient is winner-take-all, the usual LRP treatment; average pooling is a linear layer
with the chosen rule.

Supported leaf modules: ``Conv2d`` (zero-padded, or convlens's TF-``SAME`` convolution),
``Linear``, ``BatchNorm1d/2d`` (with running statistics), the ReLU family (ReLU, ReLU6,
LeakyReLU, Hardtanh), ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``MaxPool2d``,
``AdaptiveMaxPool2d``, dropout, ``Flatten``, ``Identity``, ``ZeroPad2d``. Any other module
that runs raises :class:`~convlens.errors.BadInputError` naming it. Nonlinear functions
called as code (``torch.sigmoid`` inside a ``forward``) cannot be seen and are
back-propagated as gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input

from convlens.attribution.base import register_method
from convlens.errors import BadInputError
from convlens.hooks import ACTIVATION_TYPES, Call, backward_rules, inference_context, trace_calls
from convlens.models.efficientnet_lite import SamePadConv2d
from convlens.models.model import Model
from convlens.targets import Neuron, TargetLike, resolve_target

__all__ = ["FIRST_LAYER_RULES", "RULES", "lrp", "lrp_alpha_beta"]

#: Rules for the hidden layers (and, with ``first_layer="same"``, the first one).
RULES = ("epsilon", "alpha_beta", "zplus")
#: Rules for the layers that read the input.
FIRST_LAYER_RULES = ("zB", "same")

_AFFINE = (nn.Conv2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
# Linear maps without bias whose plain gradient is already their LRP rule in the gradient
# form (max pooling: winner-take-all); dropout is the identity in eval mode.
_PASS_THROUGH = (
    nn.MaxPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.ZeroPad2d,
    nn.Sequential,  # an empty Sequential is a leaf that returns its input
)
_SUPPORTED = "Conv2d, Linear, BatchNorm, ReLU/ReLU6/LeakyReLU/Hardtanh, average and max pooling, dropout, Flatten, Identity"


def has_lrp_rules(model: Model) -> bool:
    """Whether every leaf module has an LRP rule (the methods' ``applies`` test, so
    ``--method all`` and the report skip e.g. a vision transformer's LayerNorm and attention).

    A static look at the module tree; the methods themselves still check each layer that
    runs and name the first one without a rule.
    """
    module = model.module
    if isinstance(module, torch.jit.ScriptModule):
        return False
    supported = (*_AFFINE, *_NORMS, *_POOLS, *ACTIVATION_TYPES, *_PASS_THROUGH)
    return all(
        isinstance(m, supported) for m in module.modules() if next(m.children(), None) is None
    )


# -- layers as linear maps ----------------------------------------------------------------


def _channel_view(v: torch.Tensor, like: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``v`` (C,) shaped to broadcast over dimension ``dim`` of ``like``."""
    shape = [1] * like.dim()
    shape[dim] = -1
    return v.reshape(shape)


class _LinearMap:
    """A layer as ``z = W x + b``; ``part`` selects ``W`` (0), ``W^+`` (1) or ``W^-`` (-1)."""

    bias: torch.Tensor | None = None

    def apply(self, x: torch.Tensor, part: int) -> torch.Tensor:
        raise NotImplementedError

    def transpose(self, v: torch.Tensor, part: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def bias_part(self, part: int, like: torch.Tensor) -> torch.Tensor | float:
        if self.bias is None:
            return 0.0
        b = (
            self.bias
            if part == 0
            else self.bias.clamp(min=0)
            if part > 0
            else self.bias.clamp(max=0)
        )
        return _channel_view(b, like, 1 if like.dim() > 2 else -1)


class _Parts(dict):
    """``W``, ``W^+`` and ``W^-`` by ``part`` 0, 1, -1; the clamped parts made on first use
    (the epsilon rule never needs them)."""

    def __missing__(self, part: int) -> torch.Tensor:
        self[part] = self[0].clamp(min=0) if part > 0 else self[0].clamp(max=0)
        return self[part]


def _parts(weight: torch.Tensor) -> _Parts:
    return _Parts({0: weight})


class _DenseMap(_LinearMap):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weights, self.bias = _parts(weight), bias

    def apply(self, x: torch.Tensor, part: int) -> torch.Tensor:
        return F.linear(x, self.weights[part])

    def transpose(self, v: torch.Tensor, part: int, x: torch.Tensor) -> torch.Tensor:
        return v @ self.weights[part]

    def bias_part(self, part: int, like: torch.Tensor) -> torch.Tensor | float:
        if self.bias is None:
            return 0.0
        return (
            self.bias
            if part == 0
            else self.bias.clamp(min=0)
            if part > 0
            else self.bias.clamp(max=0)
        )


class _ConvMap(_LinearMap):
    """A zero-padded 2-D convolution (numeric padding, ``"same"``/``"valid"``, or TF ``SAME``)."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.conv, self.weights, self.bias = conv, _parts(weight), bias

    def _padding(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        c = self.conv
        if isinstance(c, SamePadConv2d):
            return c.same_padding(x.shape[-2], x.shape[-1])
        if c.padding == "valid":
            return 0, 0, 0, 0
        if c.padding == "same":  # torch puts the odd pixel after, like TF
            (th, tw) = (d * (k - 1) for d, k in zip(c.dilation, c.kernel_size))
            return tw // 2, tw - tw // 2, th // 2, th - th // 2
        (ph, pw) = cast("tuple[int, int]", c.padding)  # str paddings were handled above
        return pw, pw, ph, ph

    def apply(self, x: torch.Tensor, part: int) -> torch.Tensor:
        c, pad = self.conv, self._padding(x)
        return F.conv2d(
            F.pad(x, pad) if any(pad) else x,
            self.weights[part],
            None,
            c.stride,
            0,
            c.dilation,
            c.groups,
        )

    def transpose(self, v: torch.Tensor, part: int, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        left, right, top, bottom = self._padding(x)
        size = (x.shape[0], x.shape[1], x.shape[2] + top + bottom, x.shape[3] + left + right)
        # the transposed convolution of the padded input, cropped back: no forward recompute
        grad = conv2d_input(size, self.weights[part], v, c.stride, 0, c.dilation, c.groups)
        return grad[..., top : top + x.shape[2], left : left + x.shape[3]]


class _PoolMap(_LinearMap):
    """Average pooling: all weights positive, no bias."""

    def __init__(self, pool: nn.Module) -> None:
        self.pool = pool

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pool
        if isinstance(p, nn.AdaptiveAvgPool2d):
            return F.adaptive_avg_pool2d(x, p.output_size)
        assert isinstance(p, nn.AvgPool2d)  # only the two pool types are given a _PoolMap
        return F.avg_pool2d(
            x,
            p.kernel_size,
            p.stride,
            p.padding,
            p.ceil_mode,
            p.count_include_pad,
            p.divisor_override,
        )

    def apply(self, x: torch.Tensor, part: int) -> torch.Tensor:
        out = self._forward(x)
        return torch.zeros_like(out) if part < 0 else out

    def transpose(self, v: torch.Tensor, part: int, x: torch.Tensor) -> torch.Tensor:
        if part < 0:
            return torch.zeros_like(x)
        with torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self._forward(xi), xi, v)
        return grad


def _bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` with ``bn(y) = s y + t`` per channel, in eval mode."""
    assert isinstance(bn, _NORMS)
    if bn.running_var is None or bn.running_mean is None:
        raise BadInputError(
            f"lrp cannot fold {type(bn).__name__} without running statistics (track_running_stats=False); its output depends on the whole batch"
        )
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def _affine_map(module: nn.Module, bn: nn.Module | None) -> _LinearMap:
    """The conv/linear layer as a linear map, folded with the BatchNorm ``bn`` after it."""
    weight = cast(torch.Tensor, module.weight).detach()
    bias = cast(torch.Tensor, module.bias).detach() if module.bias is not None else None
    if bn is not None:
        scale, shift = _bn_scale_shift(bn)
        weight = weight * scale.reshape(-1, *[1] * (weight.dim() - 1))
        bias = shift if bias is None else scale * bias + shift
    if isinstance(module, nn.Conv2d):
        return _ConvMap(module, weight, bias)
    return _DenseMap(weight, bias)


# -- the rules -----------------------------------------------------------------------------


def _divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, and 0 where ``den`` is 0 (no unit, no relevance to share)."""
    return torch.nan_to_num_(num / den, nan=0.0, posinf=0.0, neginf=0.0)


def _epsilon_rule(
    op: _LinearMap, x: torch.Tensor, z: torch.Tensor, c: torch.Tensor, eps: float
) -> torch.Tensor:
    """``c_in = W^T (c z / (z + eps sign z))`` (the sign of 0 is its IEEE sign bit)."""
    if eps == 0:
        return op.transpose(_divide(c * z, z), 0, x)
    den = torch.copysign(z.new_tensor(eps), z).add_(z)  # z + eps sign z, never 0
    return op.transpose((c * z).div_(den), 0, x)


def _alpha_beta_rule(
    op: _LinearMap, x: torch.Tensor, z: torch.Tensor, c: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """Modified gradient of the alpha-beta rule (module docstring), both input signs."""
    relevance = z * c
    signed = bool((x < 0).any())  # after ReLU-family layers x >= 0: half the work
    pos, neg = (x.clamp(min=0), x.clamp(max=0)) if signed else (x, None)

    def z_part(part: int) -> torch.Tensor:  # part=1: z^+, part=-1: z^-
        out = op.apply(pos, part)
        if neg is not None:
            out = out.add_(op.apply(neg, -part))
        return out.add_(op.bias_part(part, out))

    def back(
        s: torch.Tensor, part: int
    ) -> torch.Tensor:  # W^{part}^T s where x>0, W^{-part}^T s where x<0
        grad = op.transpose(s, part, x)
        return torch.where(x > 0, grad, op.transpose(s, -part, x)) if signed else grad

    grad = back(_divide(relevance, z_part(1)).mul_(alpha), 1)
    if beta:
        grad = grad - back(_divide(relevance, z_part(-1)).mul_(beta), -1)
    return grad


def _zb_relevance(
    op: _LinearMap,
    x: torch.Tensor,
    z: torch.Tensor,
    c: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
) -> torch.Tensor:
    """Input relevance of the z^B rule (Montavon et al. 2017, arXiv:1512.02479, eq. for l <= x <= h)."""
    s = _divide(z * c, op.apply(x, 0) - op.apply(low, 1) - op.apply(high, -1))
    return x * op.transpose(s, 0, x) - low * op.transpose(s, 1, x) - high * op.transpose(s, -1, x)


def _activation_rule(
    module: nn.Hardtanh, inp: torch.Tensor, out: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    """Relevance passes unchanged: ``c_in = c_out * out / in``."""
    if module.min_val <= 0 <= module.max_val:  # ReLU6 and relatives: in = 0 gives out = 0 (0/0)
        return torch.nan_to_num_(out / inp, nan=1.0).mul_(c)
    return _divide(c * out, inp)


# -- one propagation pass: which module does what, read from its own forward ------------


def _supported_affine(m: nn.Module) -> bool:
    if isinstance(m, SamePadConv2d):
        return True
    if isinstance(m, nn.Conv2d):
        return type(m).forward is nn.Conv2d.forward and m.padding_mode == "zeros"
    return isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward


def _needs_rule(name: str, m: nn.Module) -> bool:
    """Modules whose backward is replaced. ReLU and LeakyReLU are not: their gradient is
    already ``a / z``; a BatchNorm's own gradient is what its conv's rule expects."""
    return isinstance(m, (*_AFFINE, *_POOLS, nn.Hardtanh))


def _check_layer(call: Call) -> None:
    m = call.module
    if isinstance(m, _AFFINE):
        if not _supported_affine(m):
            raise BadInputError(
                f"lrp cannot use layer {call.name!r} ({type(m).__name__}): only Linear and Conv2d with zero padding (padding_mode='zeros', or convlens's SAME-padded conv) and their standard forward are supported; use a gradient method for this model"
            )
    elif isinstance(m, _NORMS) and m.running_var is None:
        raise BadInputError(
            f"lrp cannot use layer {call.name!r} ({type(m).__name__} without running statistics): in eval mode it normalises by the batch, so no per-image relevance exists; use a gradient method"
        )
    elif not isinstance(m, (*_NORMS, *_POOLS, *ACTIVATION_TYPES, *_PASS_THROUGH)):
        raise BadInputError(
            f"lrp has no rule for layer {call.name!r} of type {type(m).__name__}; supported layers: {_SUPPORTED} (use a gradient method such as saliency for this model)"
        )


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.numel() == b.numel() and a.dtype == b.dtype and torch.equal(a.reshape(b.shape), b)


@dataclass
class _Plan:
    """BatchNorm pairs and input layers, read from the calls of the forward pass."""

    folds: dict[nn.Module, nn.Module] = field(default_factory=dict)  # conv/linear -> its BatchNorm
    input_layers: set[nn.Module] = field(
        default_factory=set
    )  # conv/linear layers reading the input


def _make_plan(calls: Sequence[Call], x: torch.Tensor) -> _Plan:
    """Check every layer that ran, pair each BatchNorm with the conv/linear layer whose output
    it reads (one-to-one over all calls), and find the layers that read the input ``x``."""
    plan = _Plan()
    producers: dict[int, Call] = {}
    n_calls: dict[nn.Module, int] = {}
    sources: dict[nn.Module, set[nn.Module | None]] = {}
    for call in calls:
        _check_layer(call)
        n_calls[call.module] = n_calls.get(call.module, 0) + 1
        if isinstance(call.module, _AFFINE):
            if call.output is not None:
                producers[id(call.output)] = call
            if call.inputs and _same_values(call.inputs[0], x):
                plan.input_layers.add(call.module)
        elif isinstance(call.module, _NORMS):
            src = producers.get(id(call.inputs[0])) if call.inputs else None
            found = src.module if src is not None and src.output is call.inputs[0] else None
            sources.setdefault(call.module, set()).add(found)
    for bn, candidates in sources.items():
        (layer,) = candidates if len(candidates) == 1 else (None,)
        if layer is not None and layer not in plan.folds and n_calls[layer] == n_calls[bn]:
            plan.folds[layer] = bn
    return plan


@dataclass
class _Pass:
    """Per-call state of one LRP backward pass: the rule dispatch and the z^B relevance."""

    rule: str
    epsilon: float
    alpha: float
    beta: float
    first_layer: str
    x: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    plan: _Plan = field(default_factory=_Plan)
    maps: dict[
        nn.Module, tuple[_LinearMap, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]
    ] = field(default_factory=dict)
    input_relevance: list[torch.Tensor] = field(default_factory=list)

    def _map(
        self, module: nn.Module
    ) -> tuple[_LinearMap, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
        """The layer's linear map (folded with its BatchNorm) and that BatchNorm's
        ``(scale, shift, 1 / scale)`` (``1 / 0`` taken as 0)."""
        if module not in self.maps:
            if isinstance(module, _POOLS):
                self.maps[module] = (_PoolMap(module), None)
            else:
                bn = self.plan.folds.get(module)
                norm = None
                if bn is not None:
                    scale, shift = _bn_scale_shift(bn)
                    norm = (scale, shift, _divide(torch.ones_like(scale), scale))
                self.maps[module] = (_affine_map(module, bn), norm)
        return self.maps[module]

    def __call__(
        self, module: nn.Module, inp: torch.Tensor, out: torch.Tensor, c: torch.Tensor
    ) -> torch.Tensor:
        if isinstance(module, nn.Hardtanh):  # ReLU6 and relatives
            return _activation_rule(module, inp, out, c)
        op, norm = self._map(module)
        z = out
        if norm is not None:
            # c arrives through the BatchNorm's own backward, c_y = s c_z: the folded layer's
            # output is z = s y + t and its relevance z c_z = z c_y / s (0 where s = 0, where
            # the folded weights are 0 and nothing reaches the input anyway)
            scale, shift, inverse = (
                _channel_view(v, out, 1 if out.dim() > 2 else -1) for v in norm
            )
            z = torch.addcmul(shift, out, scale)
            c = c * inverse
        if (
            self.first_layer == "zB"
            and module in self.plan.input_layers
            and _same_values(inp, self.x)
        ):
            low, high = (
                self.low.expand_as(self.x).reshape(inp.shape),
                self.high.expand_as(self.x).reshape(inp.shape),
            )
            self.input_relevance.append(
                _zb_relevance(op, inp, z, c, low, high).reshape(self.x.shape)
            )
            return torch.zeros_like(inp)
        if self.rule == "epsilon":
            return _epsilon_rule(op, inp, z, c, self.epsilon)
        return _alpha_beta_rule(op, inp, z, c, self.alpha, self.beta)


# -- the method ----------------------------------------------------------------------------


def _check_options(
    rule: str, epsilon: float, alpha: float, beta: float, first_layer: str
) -> tuple[float, float]:
    if rule not in RULES:
        raise BadInputError(f"rule={rule!r}: choose one of {', '.join(RULES)}")
    if first_layer not in FIRST_LAYER_RULES:
        raise BadInputError(
            f"first_layer={first_layer!r}: choose 'zB' (bounded pixels) or 'same' (the rule of the other layers)"
        )
    if not epsilon >= 0:
        raise BadInputError(
            f"epsilon={epsilon}: must be >= 0 (1e-6 is nearly LRP-0; about 0.1-1 smooths the map)"
        )
    if rule == "zplus":
        if (alpha, beta) != (1.0, 0.0):
            raise BadInputError(
                f"rule='zplus' is alpha=1, beta=0 but alpha={alpha}, beta={beta} were given; use rule='alpha_beta' for other values"
            )
        return 1.0, 0.0
    if rule == "alpha_beta" and (beta < 0 or abs(alpha - beta - 1) > 1e-9):
        raise BadInputError(
            f"alpha={alpha}, beta={beta}: the alpha-beta rule needs beta >= 0 and alpha - beta = 1 (e.g. alpha=1, beta=0 or alpha=2, beta=1)"
        )
    return alpha, beta


def _bound(
    value: float | Sequence[float] | torch.Tensor | None,
    pixel: float,
    model: Model,
    x: torch.Tensor,
    name: str,
) -> torch.Tensor:
    """A z^B bound as a tensor broadcasting to ``x``; default: pixel value ``pixel`` in input space."""
    if value is None:
        if x.dim() != 4:
            raise BadInputError(
                f"first_layer='zB' on a {x.dim()}-D input needs {name}= (the input's {'lowest' if name == 'low' else 'highest'} value); or pass first_layer='same'"
            )
        return model.normalize(
            torch.full((1, x.shape[1], 1, 1), pixel, dtype=x.dtype, device=x.device)
        )
    bound = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if bound.dim() == 1 and x.dim() > 2:  # one value per channel
        bound = bound.reshape(1, -1, *[1] * (x.dim() - 2))
    try:
        torch.broadcast_shapes(bound.shape, x.shape)
    except RuntimeError:
        raise BadInputError(
            f"{name} has shape {tuple(bound.shape)}, which does not broadcast to the input {tuple(x.shape)}; pass a number, one value per channel, or a tensor like x"
        ) from None
    return bound


@register_method(
    "lrp",
    reduce="sum",
    paper="Bach et al. 2015, doi:10.1371/journal.pone.0130140; Montavon et al. 2017, arXiv:1512.02479",
    applies=has_lrp_rules,
)
def lrp(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    rule: str = "epsilon",
    epsilon: float = 1e-6,
    alpha: float = 1.0,
    beta: float = 0.0,
    first_layer: str = "zB",
    low: float | Sequence[float] | torch.Tensor | None = None,
    high: float | Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Layer-wise Relevance Propagation: the score redistributed onto the input pixels.

    Bach et al., PLoS ONE 2015, doi:10.1371/journal.pone.0130140; z^B rule: Montavon et
    al. 2017, arXiv:1512.02479; gradient implementation: Montavon et al., "Layer-Wise
    Relevance Propagation: An Overview", 2019. The rules, the BatchNorm folding and the
    residual split are derived in the module docstring. With ``rule="epsilon"``, small
    ``epsilon`` and ``first_layer="same"``, the relevance sums to the score minus what the
    biases absorb (exactly the score for a bias-free network, ReLU6 included).

    Parameters
    ----------
    model, x, target
        As every method (``x`` in input space, default target: the predicted class).
    rule
        ``"epsilon"``: ``R_j = sum_k x_j w_jk / (z_k + epsilon sign z_k) R_k``;
        ``"alpha_beta"``: positive and negative contributions weighted ``alpha`` and
        ``beta``; ``"zplus"``: alpha-beta with alpha=1, beta=0. Applies to every
        conv/linear layer, unpaired BatchNorm and average pooling.
    epsilon
        Absolute stabiliser of the epsilon rule (``1e-6`` is almost LRP-0, i.e. gradient
        times input on ReLU networks; larger values keep only the stronger contributions).
    alpha, beta
        Weights of the alpha-beta rule; ``alpha - beta`` must be 1.
    first_layer
        ``"zB"``: the z^B rule for the layers that read the input, bounded by ``low`` and
        ``high``; ``"same"``: the rule of the other layers.
    low, high
        Input-space bounds of the z^B rule (a number, one value per channel, or a tensor
        broadcasting to ``x``); default the model's pixel values 0 and 1 in input space.

    Returns
    -------
    torch.Tensor
        Relevance shaped like ``x`` (float, on ``x``'s device).

    Raises
    ------
    BadInputError
        An unknown rule or invalid ``epsilon`` / ``alpha`` / ``beta`` / bounds; a layer type
        without an LRP rule (named in the message); ``first_layer="zB"`` when no conv or
        linear layer reads the input directly.

    Examples
    --------
    >>> r = lrp(model, x, 281, rule="alpha_beta", alpha=1, beta=0)
    >>> r.sum(dim=1)  # the relevance map
    """
    alpha, beta = _check_options(rule, epsilon, alpha, beta, first_layer)
    resolved = resolve_target(model, target, x.shape[0])
    module = model.module
    xr = x.detach().clone().requires_grad_(True)
    low_t = _bound(low, 0.0, model, x, "low") if first_layer == "zB" else x.new_zeros(())
    high_t = _bound(high, 1.0, model, x, "high") if first_layer == "zB" else x.new_ones(())
    state = _Pass(rule, float(epsilon), float(alpha), float(beta), first_layer, xr, low_t, high_t)
    with (
        torch.enable_grad(),
        inference_context(module),
        backward_rules(module, state, select=_needs_rule),
    ):  # also inside a caller's no_grad
        # the layer calls are traced during the one forward; the plan they give is used by the
        # rules, which only run in the backward pass
        with trace_calls(module, leaves_only=True) as calls:
            scores, _ = resolved.scores(model, xr)
        state.plan = _make_plan(calls, xr)
        del calls
        if first_layer == "zB" and not state.plan.input_layers:
            raise BadInputError(
                "first_layer='zB' needs a Conv2d or Linear layer that reads the input itself, but the model transforms the input first; pass first_layer='same'"
            )
        if isinstance(
            resolved.neuron, Neuron
        ):  # a score read at a conv/linear layer is on its unfolded output
            state.plan.folds.pop(dict(module.named_modules()).get(resolved.neuron.layer), None)  # type: ignore[arg-type]
        (grad,) = torch.autograd.grad(scores.sum(), xr)
    relevance = x.detach() * grad
    for part in state.input_relevance:
        relevance = relevance + part
    return relevance


@register_method(
    "lrp_alpha_beta",
    reduce="sum",
    paper="Bach et al. 2015, doi:10.1371/journal.pone.0130140",
    applies=has_lrp_rules,
)
def lrp_alpha_beta(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    alpha: float = 1.0,
    beta: float = 0.0,
    first_layer: str = "zB",
    low: float | Sequence[float] | torch.Tensor | None = None,
    high: float | Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`lrp` with ``rule="alpha_beta"`` (default alpha=1, beta=0: the z+ rule), so that
    method lists (``convlens explain --method all``) show both rule families."""
    return lrp(
        model,
        x,
        target,
        rule="alpha_beta",
        alpha=alpha,
        beta=beta,
        first_layer=first_layer,
        low=low,
        high=high,
    )
