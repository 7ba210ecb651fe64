"""The progress callback every long-running library function takes.

Library functions stay quiet: instead of printing, they accept ``progress=`` and call it as
``progress(done, total)`` after each unit of work (an epoch, a batch, an image, a query
block). The CLI turns the calls into a progress bar, the report and the explorer into their
own meters, and tests into a list of the calls. ``None`` means nobody is listening.

This module is the one home of the type, so a change to the calling convention is made once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

__all__ = ["ProgressFn"]

#: ``progress(done, total)``: ``done`` units of ``total`` are finished (``0 <= done <= total``).
ProgressFn: TypeAlias = Callable[[int, int], None]
