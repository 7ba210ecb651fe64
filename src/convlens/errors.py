"""Exceptions raised by convlens.

Every error convlens raises on purpose derives from :class:`ConvlensError`.
Errors caused by what the user handed in derive from :class:`BadInputError`;
the command line turns those into one line on stderr and exit code 2. ::

    ConvlensError
    ├── BadInputError (ValueError)              input convlens cannot use
    │   ├── ImageReadError                      an image file or array that cannot be read
    │   ├── LayerNotFoundError (KeyError)       a layer name that is not in the model
    │   ├── LayerReusedError                    a named layer runs more than once in a forward
    │   ├── TargetError                         a target that cannot be resolved
    │   │   └── AmbiguousLabelError             a label that names several classes
    │   └── UnknownModelError                   a model name convlens does not know
    ├── MissingDependencyError (ImportError)    an optional extra is not installed
    └── QueryBudgetError (RuntimeError)         an oracle was asked beyond its query budget

Messages say what was given, what was expected and the likely fix.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousLabelError",
    "BadInputError",
    "ConvlensError",
    "ImageReadError",
    "LayerNotFoundError",
    "LayerReusedError",
    "MissingDependencyError",
    "QueryBudgetError",
    "TargetError",
    "UnknownModelError",
]


class ConvlensError(Exception):
    """Root of every exception convlens raises on purpose."""


class BadInputError(ConvlensError, ValueError):
    """The user's input cannot be used (CLI exit code 2)."""


class ImageReadError(BadInputError):
    """An image cannot be read; the message names the source and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class LayerNotFoundError(BadInputError, KeyError):
    """A layer name is not in the model; the message lists the closest names."""

    def __init__(self, name: str, suggestions: list[str] | None = None) -> None:
        self.name = name
        self.suggestions = list(suggestions or [])
        hint = (
            f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?"
            if self.suggestions
            else ""
        )
        super().__init__(f"no layer named {name!r} in the model{hint} (see `convlens layers`)")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class LayerReusedError(BadInputError):
    """A layer the user named ran more than once in one forward pass."""


class TargetError(BadInputError):
    """A target (class, label, neuron, callable) cannot be resolved."""


class AmbiguousLabelError(TargetError):
    """A label matches several classes; the message lists them."""

    def __init__(self, label: str, candidates: list[tuple[int, str]]) -> None:
        self.label = label
        self.candidates = candidates
        listed = ", ".join(f"{i} ({name})" for i, name in candidates)
        super().__init__(
            f"label {label!r} names {len(candidates)} classes: {listed}; pass the class index or wnid instead"
        )


class UnknownModelError(BadInputError):
    """A model name that convlens does not know."""


class MissingDependencyError(ConvlensError, ImportError):
    """An optional dependency is missing; the message gives the pip command."""


class QueryBudgetError(ConvlensError, RuntimeError):
    """An attack asked its :class:`~convlens.adversarial.oracle.Oracle` for more queries than
    its budget allows (also importable as ``convlens.adversarial.QueryBudgetExceeded``)."""
