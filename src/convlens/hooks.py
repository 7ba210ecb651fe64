"""The one place in convlens that touches module hooks.

Everything here is a context manager that removes its handles in ``finally``, so no
hook outlives the ``with`` block, even when the forward pass raises.

- :func:`capture` saves the outputs (and optionally gradients) of named layers.
- :func:`backward_rules` replaces the backward pass of chosen modules by a rule
  (guided backprop, deconvnet, LRP), acting per call through autograd, never by
  swapping modules or flipping ``inplace``.
- :func:`trace_calls` records every module call in execution order (layer tables,
  receptive fields).
- :func:`edit_output` replaces a layer's output by a function of it (channel ablation,
  pruning curves) for the duration of the block.
- :func:`eval_mode` and :func:`frozen` switch the model to eval mode / freeze the
  parameters and restore every flag afterwards.

In-place activations: forward hooks hand a *clone* of the output downstream, so a later
``ReLU(inplace=True)`` cannot overwrite what convlens saved; backward rules clone the
module's input in a pre-hook so the module's own in-place op cannot destroy it.
Module reuse: a named layer that runs more than once in a forward raises
:class:`~convlens.errors.LayerReusedError` when read, unless ``call_index`` picks a call;
backward rules keep per-call stacks, so shared activation modules are handled.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from convlens.errors import BadInputError, LayerReusedError
from convlens.layer_names import resolve_layer

__all__ = [
    "ACTIVATION_TYPES",
    "BackwardRule",
    "Call",
    "Capture",
    "backward_rules",
    "capture",
    "edit_output",
    "eval_mode",
    "forward_until_captured",
    "frozen",
    "inference_context",
    "is_activation",
    "trace_calls",
]

LayerRef = str | nn.Module

#: Activation modules that backward rules apply to by default (the ReLU family).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh)

#: ``rule(module, input, output, grad_output) -> grad_input``
BackwardRule = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def is_activation(name: str, module: nn.Module) -> bool:
    """Default selector of :func:`backward_rules`: modules of :data:`ACTIVATION_TYPES`."""
    return isinstance(module, ACTIVATION_TYPES)


@contextmanager
def _removing(handles: list[RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        handles.clear()


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode and restore every submodule's ``training`` flag on exit."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Turn off ``requires_grad`` on all parameters (faster input gradients); restore on exit."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass
class Capture(Mapping[str, torch.Tensor]):
    """Outputs (and gradients) of named layers, filled during the ``with`` block.

    ``capture[name]`` is the layer's output (graph-connected, so gradients can be taken
    w.r.t. it). ``capture.gradients[name]`` is filled by the backward pass when the
    capture was opened with ``gradients=True``.
    """

    names: list[str]
    call_index: int | None = None
    calls: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    grads: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)

    def _pick(self, name: str, values: Sequence[Any]) -> Any:
        if not values:
            raise KeyError(f"layer {name!r} did not run in the forward pass")
        if self.call_index is None:
            if len(values) > 1:
                raise LayerReusedError(
                    f"layer {name!r} ran {len(values)} times in one forward pass; pass call_index= to choose one call, or give each use its own module"
                )
            return values[0]
        if not -len(values) <= self.call_index < len(values):
            raise LayerReusedError(
                f"call_index={self.call_index} but layer {name!r} ran {len(values)} times"
            )
        return values[self.call_index]

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.calls:
            raise KeyError(name)
        return self._pick(name, self.calls[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def n_calls(self, name: str) -> int:
        """How many times layer ``name`` ran since the capture opened."""
        return len(self.calls.get(name, []))

    @property
    def gradients(self) -> dict[str, torch.Tensor]:
        """Gradients w.r.t. each layer's output, for the layers the backward pass reached."""
        out = {}
        for name, values in self.grads.items():
            if values and all(v is not None for v in values):
                out[name] = self._pick(name, values)
        return out

    def clear(self) -> None:
        """Forget saved outputs (reuse one capture for several forwards)."""
        for values in self.calls.values():
            values.clear()
        for grads in self.grads.values():
            grads.clear()


def require_hookable(module: nn.Module) -> None:
    """Refuse TorchScript modules: they take no Python hooks, and a rule that silently
    found no layer to act on would return the plain gradient under another name."""
    if isinstance(module, torch.jit.ScriptModule):
        raise BadInputError(
            "this needs forward/backward hooks on the model's layers, which a TorchScript model does not support; methods on the input gradient alone (saliency, integrated_gradients, smoothgrad, occlusion) work on it, or load the Python model (--model file.py:factory --weights ckpt.pt) for layer methods"
        )


@contextmanager
def capture(
    module: nn.Module,
    layers: Iterable[LayerRef],
    *,
    gradients: bool = False,
    call_index: int | None = None,
    root: bool = False,
    stop: bool = False,
) -> Iterator[Capture]:
    """Save the outputs of ``layers`` (dotted names or modules) during the block.

    Parameters
    ----------
    module
        The network (a plain ``nn.Module``; a convlens ``Model`` passes its ``.module``).
    layers
        Dotted names from ``named_modules()`` or module objects.
    gradients
        Also record the gradient of whatever is back-propagated w.r.t. each output.
    call_index
        For a layer that runs several times per forward, which call to return.
    root
        Make each captured output a leaf of the autograd graph (detached, requiring grad
        when grad mode is on) and feed that to the rest of the network: a backward pass
        from the output stops at the layer. With an input that does not require grad and
        frozen parameters, nothing below the layer is recorded at all (Grad-CAM needs
        ``dS/dA`` only, so it skips the cost of recording the lower network).
    stop
        End each forward pass as soon as every layer has produced its output: call the
        module through :func:`forward_until_captured`, which returns None when it stopped.
        The rest of the network never runs (faster, and it works on any input size when
        only fully convolutional layers come before the captured ones).

    Examples
    --------
    >>> with capture(net, ["features.3"]) as acts:
    ...     net(x)
    >>> acts["features.3"].shape
    """
    require_hookable(module)
    resolved = [resolve_layer(module, ref) for ref in layers]
    cap = Capture(names=[name for name, _ in resolved], call_index=call_index)
    handles: list[RemovableHandle] = []

    def make_hook(name: str) -> Callable[..., torch.Tensor]:
        saved = cap.calls.setdefault(name, [])
        grads = cap.grads.setdefault(name, [])

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"layer {name!r} returns {type(output).__name__}; convlens captures tensor outputs only"
                )
            if root:
                output = output.detach().requires_grad_(torch.is_grad_enabled())
            saved.append(output)
            if gradients and output.requires_grad:
                slot = len(grads)
                grads.append(None)

                def store(grad: torch.Tensor) -> None:
                    grads[slot] = grad.detach().clone()

                output.register_hook(store)
            if stop and all(cap.calls[n] for n in cap.names):
                raise _ForwardStopped
            # Hand a clone downstream: a later in-place op cannot change what we saved.
            return output.clone()

        return hook

    with _removing(handles):
        for name, layer in resolved:
            handles.append(layer.register_forward_hook(make_hook(name)))
        yield cap


class _ForwardStopped(Exception):
    """Raised by a ``capture(..., stop=True)`` hook once every layer it waits for has run."""


def forward_until_captured(module: nn.Module, *inputs: Any) -> Any:
    """``module(*inputs)``, or None when a ``capture(..., stop=True)`` ended it early."""
    try:
        return module(*inputs)
    except _ForwardStopped:
        return None


@contextmanager
def edit_output(
    module: nn.Module, layer: LayerRef, edit: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[list[int]]:
    """Replace ``layer``'s output by ``edit(output)`` during the block (zeroing channels,
    feeding a stored activation to the rest of the network).

    ``edit`` receives the output itself and must return a new tensor (never write into the
    output: a later in-place op, or the caller, may still hold it). The model is untouched;
    the hook is removed on exit, also after an exception. Yields a list that counts the
    layer's calls, so a caller can refuse a layer that ran more than once.

    Examples
    --------
    >>> keep = torch.ones(16); keep[3] = 0
    >>> with edit_output(net, "conv1", lambda a: a * keep[:, None, None]):
    ...     logits = net(x)   # channel 3 of conv1 zeroed
    """
    require_hookable(module)
    _, target = resolve_layer(module, layer)
    calls: list[int] = []
    handles: list[RemovableHandle] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"layer {layer!r} returns {type(output).__name__}; convlens edits tensor outputs only"
            )
        calls.append(1)
        return edit(output)

    with _removing(handles):
        handles.append(target.register_forward_hook(hook))
        yield calls


def _output_rule(module: nn.Module, rule: BackwardRule, grad: torch.Tensor) -> torch.Tensor:
    return rule(module, None, None, grad)  # type: ignore[arg-type]


class _RuleFunction(torch.autograd.Function):
    """Identity in the forward pass; the rule's gradient in the backward pass."""

    @staticmethod
    def forward(
        ctx: Any, inp: torch.Tensor, out: torch.Tensor, module: nn.Module, rule: BackwardRule
    ) -> torch.Tensor:
        ctx.save_for_backward(inp, out)
        ctx.module, ctx.rule = module, rule
        return out.clone()

    @staticmethod
    def backward(
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None]:
        inp, out = ctx.saved_tensors
        return ctx.rule(ctx.module, inp, out, grad_output), None, None, None


@contextmanager
def backward_rules(
    module: nn.Module,
    rule: BackwardRule,
    *,
    select: Callable[[str, nn.Module], bool] = is_activation,
    at: str = "input",
) -> Iterator[list[str]]:
    """Replace the backward pass of every selected module by ``rule`` inside the block.

    For each call of a selected module, the gradient that reaches its output,
    ``grad_output``, is turned into ``rule(module, input, output, grad_output)`` and
    sent to the module's input. The module's forward result is unchanged. Parameters of
    selected modules receive no gradient. Yields the names of the selected modules.

    The rule sees the module's true input even for ``inplace=True`` activations (the
    input is cloned before the module runs), and per-call state lives in the autograd
    graph, so a module used several times in one forward gets each call's own input.

    ``at="output"`` is the cheap form for rules that compose with the module's own
    derivative: ``rule(module, None, None, grad_output)`` returns a new gradient for the
    module's *output*, and the module's native backward carries it to the input. Nothing
    is copied or saved, so the cost is the rule's one elementwise op per call (guided
    backprop is ``derivative * relu(g)``: the rule is ``relu``).
    """
    if at not in ("input", "output"):
        raise ValueError(f"at={at!r}: choose 'input' or 'output'")
    require_hookable(module)
    chosen = [(name, m) for name, m in module.named_modules() if select(name, m)]
    handles: list[RemovableHandle] = []
    stacks: dict[int, list[torch.Tensor]] = {}

    def output_hook(m: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if torch.is_grad_enabled() and output.requires_grad:
            # the hook holds the module, not the output: no reference cycle keeps it alive
            output.register_hook(functools.partial(_output_rule, m, rule))

    if at == "output":
        with _removing(handles):
            handles.extend(m.register_forward_hook(output_hook) for _, m in chosen)
            yield [name for name, _ in chosen]
        return

    def pre_hook(m: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        x = inputs[0]
        stacks.setdefault(id(m), []).append(x)
        if not getattr(m, "inplace", False):
            return inputs  # save_for_backward's version check catches any later in-place write
        # The module works on a copy, so its in-place op cannot clobber the saved input.
        return (x.clone(), *inputs[1:])

    def post_hook(m: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        x = stacks[id(m)].pop()
        if not (torch.is_grad_enabled() and (x.requires_grad or output.requires_grad)):
            return output
        return _RuleFunction.apply(x, output.detach(), m, rule)

    with _removing(handles):
        for _, m in chosen:
            handles.append(m.register_forward_pre_hook(pre_hook))
            handles.append(m.register_forward_hook(post_hook))
        yield [name for name, _ in chosen]


@dataclass(frozen=True)
class Call:
    """One module call seen by :func:`trace_calls`."""

    name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    output: torch.Tensor | None
    order: int  # position of the call's end in execution order
    start: int  # position of the call's start (children start after it)


@contextmanager
def trace_calls(module: nn.Module, *, leaves_only: bool = False) -> Iterator[list[Call]]:
    """Record every module call (name, inputs, output) in the order calls finish."""
    require_hookable(module)
    calls: list[Call] = []
    handles: list[RemovableHandle] = []
    counter = {"n": 0}
    starts: dict[int, list[int]] = {}

    def pre(m: nn.Module, _inputs: Any) -> None:
        starts.setdefault(id(m), []).append(counter["n"])
        counter["n"] += 1

    def make_post(name: str) -> Callable[..., None]:
        def post(m: nn.Module, inputs: Any, output: Any) -> None:
            tensors = tuple(t for t in inputs if isinstance(t, torch.Tensor))
            out = output if isinstance(output, torch.Tensor) else None
            calls.append(Call(name, m, tensors, out, counter["n"], starts[id(m)].pop()))
            counter["n"] += 1

        return post

    with _removing(handles):
        for name, m in module.named_modules():
            if leaves_only and any(True for _ in m.children()):
                continue
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(make_post(name)))
        yield calls


@contextmanager
def inference_context(module: nn.Module, *, freeze: bool = True) -> Iterator[nn.Module]:
    """Eval mode plus (optionally) frozen parameters: the setting for input gradients."""
    with ExitStack() as stack:
        stack.enter_context(eval_mode(module))
        if freeze:
            stack.enter_context(frozen(module))
        yield module
