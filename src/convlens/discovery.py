"""Finding the modules of a package: how commands, methods, sections and rows register.

A new feature adds a file instead of editing a central list (DESIGN.md, "Layout"). The
package that collects such files (``convlens.cli`` for ``cmd_*`` commands,
``convlens.attribution`` for methods, ``convlens.render.report`` and ``convlens.demo`` for
sections, ``benchmarks/rows`` for benchmark rows) asks :func:`submodules` for them, and
:func:`collect` when each module holds one object under a known name (``SECTION``).

Modules come in name order, so discovery is the same on every machine and file system.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Collection
from types import ModuleType
from typing import TypeVar

__all__ = ["collect", "submodule_names", "submodules"]

T = TypeVar("T")


def _package(package: ModuleType | str) -> ModuleType:
    module = importlib.import_module(package) if isinstance(package, str) else package
    if not hasattr(module, "__path__"):
        raise TypeError(f"{module.__name__} is a module, not a package: it has no submodules")
    return module


def submodule_names(
    package: ModuleType | str,
    *,
    prefix: str = "",
    private: bool = False,
    skip: Collection[str] = (),
) -> list[str]:
    """Short names of the direct submodules of ``package``, sorted, without importing them.

    Parameters
    ----------
    package
        The package (or its dotted name).
    prefix
        Keep only names starting with it (``"cmd_"``).
    private
        Keep names starting with ``_`` too (helpers, by convention; left out by default).
    skip
        Names to leave out.

    Returns
    -------
    list[str]
        E.g. ``["cmd_attack", "cmd_demo", ...]``.

    Raises
    ------
    TypeError
        ``package`` is a plain module.
    """
    pkg = _package(package)
    return sorted(
        info.name
        for info in pkgutil.iter_modules(pkg.__path__)
        if info.name.startswith(prefix)
        and (private or not info.name.startswith("_"))
        and info.name not in skip
    )


def submodules(
    package: ModuleType | str,
    *,
    prefix: str = "",
    private: bool = False,
    skip: Collection[str] = (),
) -> list[ModuleType]:
    """Import the direct submodules of ``package`` and return them in name order.

    Importing is what registers: a module's decorators and module-level assignments run.
    The options are those of :func:`submodule_names`.
    """
    pkg = _package(package)
    return [
        importlib.import_module(f"{pkg.__name__}.{name}")
        for name in submodule_names(pkg, prefix=prefix, private=private, skip=skip)
    ]


def collect(
    package: ModuleType | str,
    attribute: str,
    kind: type[T],
    *,
    private: bool = False,
) -> list[T]:
    """The ``attribute`` of every submodule of ``package`` that holds a ``kind``.

    Modules without the attribute, or with something else under that name, are passed over
    (a package's helper modules need no marker).

    Parameters
    ----------
    package
        The package (or its dotted name).
    attribute
        The module-level name to read (``"SECTION"``).
    kind
        The type the object must have.
    private
        Look in modules named ``_...`` too.

    Returns
    -------
    list
        In module-name order; callers sort by their own key when they have one.
    """
    found = []
    for module in submodules(package, private=private):
        value = getattr(module, attribute, None)
        if isinstance(value, kind):
            found.append(value)
    return found
