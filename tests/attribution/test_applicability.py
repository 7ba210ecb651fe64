"""Which methods a model can run (``MethodSpec.applies_to``) agrees with what the methods do:
rules that would find nothing to act on refuse instead of returning the plain gradient, and
defaults fit small inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convlens
from convlens.attribution import METHODS, applicable_methods
from convlens.errors import BadInputError

from helpers.tiny import TinyConvNet
from helpers.tiny_vit import TinyViT

GUIDED = ("guided_backprop", "deconvnet", "guided_gradcam")


class FunctionalReluNet(nn.Module):
    """ReLUs called as functions: no module for a backward rule to hook."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", GUIDED)
def test_guided_rules_refuse_a_model_without_activation_modules(method: str) -> None:
    model = convlens.wrap(FunctionalReluNet(), input_size=16)
    assert method not in applicable_methods(model)
    with pytest.raises(BadInputError, match="would be the plain gradient"):
        METHODS[method].fn(
            model, _x(), 1, **({"layer": "conv"} if METHODS[method].uses_layer else {})
        )
    # and on a net with ReLU modules the same method runs and differs from the gradient
    tiny = convlens.wrap(TinyConvNet(), input_size=16)
    assert method in applicable_methods(tiny)


def test_transformers_get_neither_guided_rules_nor_lrp_and_the_methods_agree() -> None:
    vit = convlens.wrap(TinyViT(), input_size=16)
    usable = applicable_methods(vit)
    for name in (*GUIDED, "lrp", "lrp_alpha_beta"):
        assert name not in usable
    with pytest.raises(BadInputError, match="no rule for layer"):  # what the LRP method itself says
        METHODS["lrp"].fn(vit, _x(), 1)
    with pytest.raises(BadInputError, match="plain gradient"):
        METHODS["guided_backprop"].fn(vit, _x(), 1)
    assert {"attention_rollout", "saliency", "gradcam"} <= set(usable)
    conv = applicable_methods(convlens.wrap(TinyConvNet(), input_size=16))
    assert {"lrp", "lrp_alpha_beta", *GUIDED} <= set(conv) and "attention_rollout" not in conv


def test_occlusion_default_window_fits_small_inputs(one_thread: None) -> None:
    model = convlens.load_model("digits_cnn")
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    default = convlens.explain(model, x, "occlusion", target=3).tensors["attribution"]
    explicit = convlens.explain(model, x, "occlusion", target=3, patch=4, stride=2).tensors[
        "attribution"
    ]
    torch.testing.assert_close(default, explicit)
    # at 32 px and above the default stays 16/8
    big = convlens.wrap(TinyConvNet(), input_size=32)
    xb = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        METHODS["occlusion"].fn(big, big.normalize(xb), 1),
        METHODS["occlusion"].fn(big, big.normalize(xb), 1, patch=16, stride=8),
    )
