"""convlens's small ViT against PyTorch's own multi-head attention, its layout and names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.errors import BadInputError
from convlens.hooks import capture
from convlens.models.small import build_module
from convlens.models.vit import VIT_TINY, VisionTransformer, vit_tiny


def test_attention_equals_torch_multihead_attention() -> None:
    torch.manual_seed(0)
    net = VisionTransformer(
        image_size=16, patch=4, dim=24, depth=1, heads=3, channels=3, classes=4
    ).eval()
    attn = net.blocks[0].attn
    reference = nn.MultiheadAttention(24, 3, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(attn.qkv.weight)
        reference.in_proj_bias.copy_(attn.qkv.bias)
        reference.out_proj.weight.copy_(attn.proj.weight)
        reference.out_proj.bias.copy_(attn.proj.bias)
    x = torch.randn(2, 17, 24)
    with torch.no_grad(), capture(net, ["blocks.0.attn.attend"]) as acts:
        ours = attn(x)
    theirs, weights = reference(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # the named softmax module holds exactly the attention probabilities
    torch.testing.assert_close(acts["blocks.0.attn.attend"], weights, atol=1e-6, rtol=1e-5)


def test_forward_by_hand_with_registers_and_class_token() -> None:
    torch.manual_seed(1)
    net = VisionTransformer(
        image_size=(8, 12),
        patch=4,
        dim=8,
        depth=2,
        heads=2,
        channels=1,
        classes=3,
        n_register_tokens=2,
    ).eval()
    x = torch.randn(2, 1, 8, 12)
    with torch.no_grad():
        patches = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (N, 1, 2, 3, 4, 4): row-major patches
        flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 6, 16)
        tokens = flat @ net.patch_embed.proj.weight.reshape(8, 16).T + net.patch_embed.proj.bias
        tokens = (
            torch.cat(
                [net.cls_token.expand(2, -1, -1), net.reg_tokens.expand(2, -1, -1), tokens], dim=1
            )
            + net.pos_embed
        )
        for block in net.blocks:
            tokens = tokens + block.attn(block.norm1(tokens))
            tokens = tokens + block.mlp.fc2(
                torch.nn.functional.gelu(block.mlp.fc1(block.norm2(tokens)))
            )
        expected = net.head(net.norm(tokens)[:, 0])
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)
    assert (
        net.config.grid == (2, 3)
        and net.config.prefix_tokens == 3
        and net.pos_embed.shape == (1, 9, 8)
    )


def test_mean_pooled_without_class_token() -> None:
    torch.manual_seed(2)
    net = VisionTransformer(
        image_size=8, patch=4, dim=8, depth=1, heads=2, channels=1, classes=3, class_token=False
    ).eval()
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad(), capture(net, ["norm"]) as acts:
        out = net(x)
        torch.testing.assert_close(out, net.head(acts["norm"].mean(dim=1)))
    assert acts["norm"].shape == (1, 4, 8)  # four patch tokens, nothing else


def test_readable_names_and_sizes() -> None:
    net = vit_tiny()
    names = dict(net.named_modules())
    assert {
        "patch_embed.proj",
        "blocks.11.attn.attend",
        "blocks.11.norm1",
        "blocks.0.mlp.fc1",
        "norm",
        "head",
    } <= set(names)
    assert isinstance(names["blocks.3.attn.attend"], nn.Softmax)
    assert 5.6e6 < sum(p.numel() for p in net.parameters()) < 5.8e6  # ViT-Tiny/DeiT-Ti: 5.7 M
    assert VIT_TINY.grid == (14, 14)
    digits = build_module("digits_vit")
    assert (
        isinstance(digits, VisionTransformer)
        and digits.config.grid == (4, 4)
        and digits.pos_embed.shape[1] == 17
    )
    assert digits(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_bad_shapes_are_refused() -> None:
    net = VisionTransformer(image_size=8, patch=2, dim=8, depth=1, heads=2, channels=1, classes=3)
    with pytest.raises(BadInputError, match="built for 8 px"):
        net(torch.zeros(1, 1, 12, 12))
    with pytest.raises(BadInputError, match="divisible"):
        VisionTransformer(dim=10, heads=3)
