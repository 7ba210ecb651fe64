"""The structural type of a model, for signatures that must not import the wrapper.

:class:`ModelProtocol` lists what library code reads from a model: the network, its
preprocessing and labels, layer lookup, the forward passes and the provenance record.
:class:`convlens.Model` is the implementation every public function receives; code that
would import it only for a type hint (report sections, renderers, style helpers: modules
the wrapper's own imports reach) annotates with this protocol instead, so type checking
covers those calls without an import cycle.

A protocol, not a base class: a test double or an adapter with these members type-checks
without inheriting anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from convlens.layers import LayerInfo
    from convlens.models.labels import Labels
    from convlens.models.model import Batch, Prediction
    from convlens.models.preprocess import Preprocessing

__all__ = ["ModelProtocol"]


class ModelProtocol(Protocol):
    """What convlens reads from a model (see :class:`convlens.Model` for each member)."""

    module: nn.Module
    preprocessing: Preprocessing
    name: str
    labels: Labels | None
    weights_sha256: str | None
    info: dict[str, Any]

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def channels(self) -> int: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def denormalize(self, x: torch.Tensor) -> torch.Tensor: ...

    def prepare(self, images: Any, *, sources: Sequence[str] | None = None) -> Batch: ...

    def logits(self, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor: ...

    def predict(self, images: Any, top_k: int = 5) -> list[Prediction]: ...

    def layer(self, name: str | nn.Module) -> nn.Module: ...

    def layer_names(self) -> list[str]: ...

    def layers(self) -> list[LayerInfo]: ...

    def layer_info(self, name: str) -> LayerInfo: ...

    def provenance(self) -> dict[str, Any]: ...


if TYPE_CHECKING:
    from convlens.models.model import Model

    def _wrapper_is_a_model(model: Model) -> ModelProtocol:
        return model  # mypy checks here that the wrapper satisfies the protocol
