"""representative_layers: activation layers spread from shallow to deep (what the report shows)."""

from __future__ import annotations

import convlens
from convlens.inspect import representative_layers

from helpers.tiny import tiny_model
from helpers.tiny_vit import TinyViT


def test_conv_model_gets_its_activations_first_to_last() -> None:
    model = tiny_model()
    # TinyConvNet's activation modules, read off the module itself
    acts = [n for n, m in model.module.named_modules() if "ReLU" in type(m).__name__]
    assert acts == ["relu1", "relu2"]
    assert representative_layers(model, 2) == acts
    assert representative_layers(model, 3) == acts  # never more layers than there are
    assert representative_layers(model, 1) == ["relu1"]


def test_vision_transformer_gets_its_blocks() -> None:
    module = TinyViT()
    model = convlens.wrap(
        module, input_size=16, mean=0.5, std=0.25, resize=None, labels=[f"c{i}" for i in range(5)]
    )
    blocks = [f"blocks.{i}" for i in range(len(module.blocks))]
    assert representative_layers(model, 3) == blocks
