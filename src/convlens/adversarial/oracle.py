"""The black-box wrapper: scores or labels only, every image counted, no gradients.

Black-box attacks (:mod:`convlens.adversarial.blackbox`) see the model only through an
:class:`Oracle`. Each call runs the model under :func:`torch.inference_mode` on a detached
copy of the input and returns a fresh tensor with no autograd history, so no gradient of
the model can flow back to the attacker: ``oracle(x).sum().backward()`` raises, and
``x.grad`` stays None even if ``x`` requires grad. Every image passed in counts as one
query; ``queries`` is the running total.
"""

from __future__ import annotations

import torch

from convlens.adversarial.budget import Forward
from convlens.errors import BadInputError

__all__ = ["Oracle", "QueryBudgetExceeded"]


class QueryBudgetExceeded(RuntimeError):
    """The oracle was asked more than its ``max_queries``."""


class Oracle:
    """Query access to a classifier: probabilities (``"scores"``) or top-1 classes (``"labels"``).

    Parameters
    ----------
    forward
        Pixel-space classifier ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K)``. Kept private:
        attacks get only :meth:`__call__`.
    output
        ``"scores"``: softmax probabilities ``(N, K)``; ``"labels"``: classes ``(N,)``.
    max_queries
        Optional hard cap on the total; a call beyond it raises :class:`QueryBudgetExceeded`.

    Examples
    --------
    >>> oracle = Oracle(pixel_forward(model))
    >>> probs = oracle(x)          # (N, K), counted, no gradient
    >>> oracle.queries
    """

    def __init__(
        self, forward: Forward, *, output: str = "scores", max_queries: int | None = None
    ) -> None:
        if output not in ("scores", "labels"):
            raise BadInputError(f"output {output!r}: expected 'scores' or 'labels'")
        self.__forward = forward
        self.output = output
        self.max_queries = max_queries
        self.queries = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (or labels) of a pixel batch; counts ``len(x)`` queries."""
        if x.dim() != 4:
            raise BadInputError(
                f"the oracle takes a pixel batch (N, C, H, W); got shape {tuple(x.shape)}"
            )
        n = int(x.shape[0])
        if self.max_queries is not None and self.queries + n > self.max_queries:
            raise QueryBudgetExceeded(
                f"{self.queries} + {n} queries exceed the budget of {self.max_queries}"
            )
        self.queries += n
        with torch.inference_mode():
            logits = self.__forward(x.detach().clone())
            out = logits.softmax(dim=1) if self.output == "scores" else logits.argmax(dim=1)
        # a normal tensor (not an inference tensor), with no history: nothing to backprop into
        return out.clone()

    def __repr__(self) -> str:
        return f"Oracle(output={self.output!r}, queries={self.queries})"
