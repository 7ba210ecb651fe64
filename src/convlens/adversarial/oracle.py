"""The black-box view of a classifier: outputs only, every image counted, no gradient path.

Black-box attacks (:mod:`convlens.adversarial.blackbox`) and model inversion
(:mod:`convlens.privacy.inversion`) see a model only through an :class:`Oracle`. Each query
runs the model under :func:`torch.inference_mode` on a detached copy of the input and returns
a fresh tensor with no autograd history, so no gradient of the model can flow back to the
attacker: ``oracle(x).sum().backward()`` raises, and ``x.grad`` stays None even if ``x``
requires grad. Every image passed in counts as one query; ``queries`` is the running total
and ``max_queries`` an optional hard cap (a query beyond it raises
:class:`~convlens.errors.QueryBudgetError` and is not counted). A white-box oracle (built by
:meth:`Oracle.from_model` with ``white_box=True``) also answers :meth:`Oracle.gradient`, the
exact ``d log p_c / d x``, each image again one query.

The model lives only in closures: the oracle has ``__slots__`` and no attribute holding the
module, its weights or any data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from convlens.adversarial.budget import Forward
from convlens.errors import BadInputError, QueryBudgetError
from convlens.hooks import inference_context
from convlens.models.model import Model

__all__ = ["Oracle", "QueryBudgetExceeded"]

#: The former name of :class:`~convlens.errors.QueryBudgetError` (the same class).
QueryBudgetExceeded = QueryBudgetError

#: ``(pixels, classes) -> (log p_c(x), d log p_c / dx)``, each ``(N,)`` and ``(N, C, H, W)``
GradientFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_OUTPUTS = ("scores", "labels")


class Oracle:
    """Query access to a classifier: probabilities (``"scores"``) or top-1 classes (``"labels"``).

    Parameters
    ----------
    forward
        Pixel-space classifier ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K)``. Kept private:
        attacks get only the query methods.
    output
        What calling the oracle returns: ``"scores"``, softmax probabilities ``(N, K)``, or
        ``"labels"``, classes ``(N,)``.
    max_queries
        Optional hard cap on the total number of images queried.
    input_shape
        ``(C, H, W)`` a query must have (unchecked when None).
    gradient
        The white-box answer (see :meth:`gradient`); None for a black-box oracle.

    Examples
    --------
    >>> oracle = Oracle(pixel_forward(model))            # black-box, scores
    >>> probs = oracle(x)                                 # (N, K), counted, no gradient
    >>> oracle = Oracle.from_model(model, white_box=True, max_queries=10_000)
    >>> log_p, grad = oracle.gradient(x, classes)
    """

    __slots__ = (
        "_forward",
        "_gradient",
        "input_shape",
        "max_queries",
        "n_classes",
        "output",
        "queries",
    )

    def __init__(
        self,
        forward: Forward,
        *,
        output: str = "scores",
        max_queries: int | None = None,
        input_shape: tuple[int, int, int] | None = None,
        gradient: GradientFn | None = None,
    ) -> None:
        if output not in _OUTPUTS:
            raise BadInputError(f"output {output!r}: expected 'scores' or 'labels'")
        if max_queries is not None and (not isinstance(max_queries, int) or max_queries < 1):
            raise BadInputError(f"max_queries={max_queries!r} must be None or an int >= 1")
        self._forward = forward
        self._gradient = gradient
        self.output = output
        self.max_queries = max_queries
        self.input_shape = input_shape
        #: number of classes, when known (:meth:`from_model` reads it from the model)
        self.n_classes: int | None = None
        self.queries = 0

    @classmethod
    def from_model(
        cls,
        model: Model,
        *,
        white_box: bool = False,
        max_queries: int | None = None,
        output: str = "scores",
    ) -> Oracle:
        """An oracle on a convlens :class:`Model` (pixels normalised as it expects).

        The model runs in eval mode with frozen parameters; outputs come back on the CPU.
        ``white_box`` adds :meth:`gradient`. ``input_shape`` and ``n_classes`` are the model's.
        """
        if not isinstance(model, Model):
            raise BadInputError(f"an oracle wraps a convlens Model, not {type(model).__name__}")
        module, normalize = model.module, model.normalize
        device, dtype = model.device, model.dtype

        def forward(pixels: torch.Tensor) -> torch.Tensor:
            with inference_context(module):
                return module(normalize(pixels.to(device, dtype))).cpu()

        def gradient(
            pixels: torch.Tensor, classes: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            x = pixels.detach().to(device, dtype).requires_grad_(True)
            with inference_context(module), torch.enable_grad():
                log_p = torch.log_softmax(module(normalize(x)), dim=1)
                chosen = log_p.gather(1, classes.to(device)[:, None])[:, 0]
                (grad,) = torch.autograd.grad(chosen.sum(), x)
            return chosen.detach().cpu(), grad.cpu()

        shape = (model.channels, *model.input_size)
        oracle = cls(
            forward,
            output=output,
            max_queries=max_queries,
            input_shape=shape,
            gradient=gradient if white_box else None,
        )
        with torch.inference_mode():  # reading the class count is not a query
            oracle.n_classes = int(forward(torch.zeros(1, *shape)).shape[1])
        return oracle

    @property
    def white_box(self) -> bool:
        """Whether :meth:`gradient` is answered."""
        return self._gradient is not None

    @property
    def remaining(self) -> int | None:
        """Queries left in the budget (None: unlimited)."""
        return None if self.max_queries is None else self.max_queries - self.queries

    def _count(self, x: torch.Tensor) -> None:
        """Check a query's shape and the budget, then count it."""
        if (
            not isinstance(x, torch.Tensor)
            or x.dim() != 4
            or (self.input_shape is not None and tuple(x.shape[1:]) != tuple(self.input_shape))
        ):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            want = "C, H, W" if self.input_shape is None else ", ".join(map(str, self.input_shape))
            raise BadInputError(f"oracle query of shape {got}: expected a pixel batch (N, {want})")
        n = int(x.shape[0])
        if self.max_queries is not None and self.queries + n > self.max_queries:
            raise QueryBudgetError(
                f"{n} more queries would exceed the budget of {self.max_queries} ({self.queries} used)"
            )
        self.queries += n

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        self._count(x)
        with torch.inference_mode():
            return self._forward(x.detach().clone())

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(N, K)`` of a pixel batch (``N`` queries)."""
        with torch.inference_mode():
            out = self._logits(x).softmax(dim=1)
        # a normal tensor (not an inference tensor), with no history: nothing to backprop into
        return out.clone()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (or labels, for ``output="labels"``) of a pixel batch (``N`` queries)."""
        with torch.inference_mode():
            logits = self._logits(x)
            out = logits.softmax(dim=1) if self.output == "scores" else logits.argmax(dim=1)
        return out.clone()

    def gradient(self, x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p_c(x), d log p_c / dx)`` per image (white-box only; ``N`` queries)."""
        if self._gradient is None:
            raise BadInputError(
                "this oracle is black-box: it answers probabilities only, no gradients"
            )
        self._count(x)
        return self._gradient(x.detach(), classes)

    def __repr__(self) -> str:
        kind = "white-box" if self.white_box else "black-box"
        return f"Oracle({kind}, output={self.output!r}, queries={self.queries})"
