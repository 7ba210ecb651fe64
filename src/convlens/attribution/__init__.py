"""Attribution methods: which input pixels (or layer positions) drove a score.

Every module of this package registers its methods in :data:`METHODS` on import; this
``__init__`` imports them all (a new family is a new file, nothing to list here).
"""

import importlib as _importlib
import pkgutil as _pkgutil

from convlens.attribution.base import (
    METHODS,
    MethodSpec,
    applicable_methods,
    default_cam_layer,
    explain,
    input_gradients,
    record_provenance,
    reduce_channels,
    register_method,
)

for _info in _pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name != "base":
        _importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "METHODS",
    "MethodSpec",
    "applicable_methods",
    "default_cam_layer",
    "explain",
    "input_gradients",
    "record_provenance",
    "reduce_channels",
    "register_method",
]
