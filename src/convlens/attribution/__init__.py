"""Attribution methods: which input pixels (or layer positions) drove a score.

Every module of this package registers its methods in :data:`METHODS` on import; this
``__init__`` imports them all (a new family is a new file, nothing to list here).
"""

from convlens.attribution.base import (
    METHODS,
    MethodSpec,
    applicable_methods,
    default_cam_layer,
    explain,
    record_provenance,
    reduce_channels,
    register_method,
)
from convlens.discovery import submodules as _submodules

_submodules(__name__, skip=("base",))

__all__ = [
    "METHODS",
    "MethodSpec",
    "applicable_methods",
    "default_cam_layer",
    "explain",
    "record_provenance",
    "reduce_channels",
    "register_method",
]
