"""Checks of command-line numbers shared by the commands: bounds and ``a/b`` fractions.

Each raises :class:`~convlens.errors.BadInputError` with one line that names the option,
repeats the value and says what is expected (``--steps 0: must be >= 1``); the CLI turns it
into exit 2 before any work. A command checks its options with these instead of writing
the comparison and the message again.
"""

from __future__ import annotations

from convlens.errors import BadInputError

__all__ = ["at_least", "between", "fraction", "fraction_list", "greater_than"]


def _text(number: float) -> str:
    # ints as written (20000000, not 2e+07); floats short
    return str(number) if isinstance(number, int) else f"{number:g}"


def at_least(value: float, minimum: float, flag: str) -> float:
    """``value`` if ``value >= minimum``, else ``BadInputError("FLAG VALUE: must be >= MINIMUM")``."""
    if not value >= minimum:  # also refuses NaN
        raise BadInputError(f"{flag} {_text(value)}: must be >= {_text(minimum)}")
    return value


def greater_than(value: float, bound: float, flag: str) -> float:
    """``value`` if ``value > bound``, else ``BadInputError("FLAG VALUE: must be > BOUND")``."""
    if not value > bound:
        raise BadInputError(f"{flag} {_text(value)}: must be > {_text(bound)}")
    return value


def between(
    value: float, low: float, high: float, flag: str, *, open_low: bool = False, what: str = ""
) -> float:
    """``value`` if it lies in ``[low, high]`` (``(low, high]`` with ``open_low``), else
    ``BadInputError("FLAG VALUE: must be in [LOW, HIGH]")``, ``what`` (e.g. ``"a digit
    class"``) naming the range in the message.

    >>> between(0.05, 0, 0.5, "--rate", open_low=True)
    0.05
    """
    inside = (low < value if open_low else low <= value) and value <= high  # NaN is outside
    if not inside:
        interval = f"{'(' if open_low else '['}{_text(low)}, {_text(high)}]"
        kind = f"{what} " if what else ""
        raise BadInputError(f"{flag} {_text(value)}: must be {kind}in {interval}")
    return value


def fraction(
    text: str,
    flag: str,
    *,
    low: float = 0.0,
    high: float = 1.0,
    what: str = "a budget in pixel units",
    example: str = "4/255",
) -> float:
    """A number written as a decimal (``0.03``) or a fraction (``4/255``), within ``[low, high]``.

    >>> fraction("4/255", "--eps")
    0.01568627450980392
    """
    s = text.strip()
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(s)
    except (ValueError, ZeroDivisionError):
        raise BadInputError(
            f"{flag} {text!r}: expected a number or a fraction such as {example}"
        ) from None
    if not low <= value <= high:
        raise BadInputError(
            f"{flag} {text!r}: {what} must be in [{low:g}, {high:g}] (e.g. {example})"
        )
    return value


def fraction_list(
    text: str, flag: str, *, increasing: bool = True, low: float = 0.0, high: float = 1.0
) -> list[float]:
    """Comma-separated :func:`fraction` values (``"0,1/255,2/255"``), increasing unless told."""
    values = [fraction(part, flag, low=low, high=high) for part in text.split(",") if part.strip()]
    if not values:
        raise BadInputError(f"{flag} {text!r}: give at least one value")
    if increasing and values != sorted(values):
        raise BadInputError(f"{flag} {text!r}: values must increase")
    return values
