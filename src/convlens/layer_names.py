"""Finding a layer of a module by its dotted name or by the module object.

Layers are addressed by their dotted name from ``named_modules()``
(``"blocks.3.expand_conv"``). A name that is not found raises
:class:`~convlens.errors.LayerNotFoundError` listing the three closest real names.

This sits below both :mod:`convlens.hooks` (which hooks layers by name) and
:mod:`convlens.layers` (the layer table, which traces a forward through the hooks), so
neither imports the other in a circle; :mod:`convlens.layers` re-exports
:func:`resolve_layer`.
"""

from __future__ import annotations

import difflib

from torch import nn

from convlens.errors import LayerNotFoundError

__all__ = ["resolve_layer"]


def resolve_layer(module: nn.Module, ref: str | nn.Module) -> tuple[str, nn.Module]:
    """``(dotted name, module)`` for a layer given by name or by module object.

    Raises
    ------
    LayerNotFoundError
        No such name (the message suggests the three closest) or the object is not a
        submodule.
    TypeError
        ``ref`` is neither a string nor a module.
    """
    if isinstance(ref, nn.Module):
        for name, m in module.named_modules():
            if m is ref:
                return name, m
        raise LayerNotFoundError(type(ref).__name__ + " object", [])
    if not isinstance(ref, str):
        raise TypeError(f"a layer is a dotted name or an nn.Module, not {type(ref).__name__}")
    names = [n for n, _ in module.named_modules() if n]
    if ref in names:
        return ref, module.get_submodule(ref)
    close = difflib.get_close_matches(ref, names, n=3, cutoff=0.0) if names else []
    raise LayerNotFoundError(ref, close)
