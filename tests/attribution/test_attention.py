"""Attention maps, attention rollout and CAMs on token layers, against hand-written references.

The references read the attention probabilities and token activations with plain forward
hooks written here (not convlens's capture), and compute in NumPy float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convlens
from convlens.attribution import explain
from convlens.attribution.attention import attention_map, attention_rollout, find_attention_layers
from convlens.attribution.base import applicable_methods, default_cam_layer
from convlens.attribution.cam import gradcam
from convlens.errors import BadInputError

from helpers.tiny import tiny_model
from helpers.tiny_vit import TinyViT

PREFIX = 2  # TinyViT: class token + one register token, then a 4x4 grid


def _model(module: nn.Module, size: int = 16, name: str = "tiny-vit") -> convlens.Model:
    module.eval()
    return convlens.wrap(
        module,
        input_size=size,
        mean=0.5,
        std=0.25,
        resize=None,
        labels=[f"c{i}" for i in range(5)],
        name=name,
    )


def _probabilities_by_hand(
    module: nn.Module, x: torch.Tensor, names: list[str]
) -> list[np.ndarray]:
    """Each named module's output, read by plain forward hooks, as float64 arrays."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        module.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: seen.__setitem__(n, out.detach().clone())
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return [seen[n].double().numpy() for n in names]


def _upsample(grid: np.ndarray, size: int) -> torch.Tensor:
    return F.interpolate(
        torch.from_numpy(grid)[:, None], size=(size, size), mode="bilinear", align_corners=False
    )


def _rollout_reference(
    attns: list[np.ndarray], fusion: str = "mean", discard: float = 0.0, prefix: int = PREFIX
) -> np.ndarray:
    n, _, t, _ = attns[0].shape
    joint = np.stack([np.eye(t)] * n)
    for a in attns:
        fused = {"mean": a.mean(axis=1), "max": a.max(axis=1), "min": a.min(axis=1)}[fusion]
        if discard:
            fused = fused.copy()
            for b in range(n):
                flat = fused[b].reshape(-1)
                flat[np.argsort(flat, kind="stable")[: int(t * t * discard)]] = 0.0
        mixed = 0.5 * fused + 0.5 * np.eye(t)
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        joint = np.einsum("bij,bjk->bik", mixed, joint)
    return joint[:, 0, prefix:].reshape(n, 4, 4)


NAMES = ["blocks.0.attn.attend", "blocks.1.attn.attend"]


@pytest.mark.parametrize(
    ("fusion", "discard"), [("mean", 0.0), ("max", 0.0), ("min", 0.0), ("mean", 0.6)]
)
def test_rollout_equals_numpy_reference(fusion: str, discard: float) -> None:
    model = _model(TinyViT(seed=4))
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    attns = _probabilities_by_hand(model.module, x, NAMES)
    expected = _upsample(_rollout_reference(attns, fusion, discard), 16)
    got = attention_rollout(model, x, head_fusion=fusion, discard_ratio=discard)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-5)
    # the rollout is not just the last layer's attention: a method that skipped the product would fail
    assert not torch.allclose(got, attention_map(model, x, head_fusion=fusion), atol=1e-3)


@pytest.mark.parametrize(
    ("layer", "fusion"), [(-1, "mean"), (0, "max"), ("blocks.0.attn.attend", "min")]
)
def test_attention_map_equals_the_class_row(layer: int | str, fusion: str) -> None:
    model = _model(TinyViT(seed=5))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    attns = _probabilities_by_hand(model.module, x, NAMES)
    a = attns[NAMES.index(layer) if isinstance(layer, str) else layer]
    fused = {"mean": a.mean(axis=1), "max": a.max(axis=1), "min": a.min(axis=1)}[fusion]
    expected = _upsample(fused[:, 0, PREFIX:].reshape(2, 4, 4), 16)
    got = attention_map(model, x, attention_layer=layer, head_fusion=fusion)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-5)


def test_target_independent_and_provenance() -> None:
    model = _model(TinyViT(seed=6))
    x = torch.rand(1, 3, 16, 16)
    a, b = (explain(model, x, "attention_rollout", target=t) for t in (0, 3))
    assert torch.equal(a.tensors["map"], b.tensors["map"])
    assert a.provenance["params"]["tokens"] == {"grid": [4, 4], "dropped_tokens": PREFIX}
    single = explain(model, x, "attention_map", attention_layer=0)
    assert single.provenance["params"]["attention_layer"] == "blocks.0.attn.attend"


class _PytorchStyleAttention(nn.Module):
    """vit-pytorch's layout: a softmax named ``attend`` followed by a dropout module."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(0.1)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = (
            self.to_qkv(self.norm(x))
            .reshape(n, t, 3, self.heads, c // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        attn = self.dropout(self.attend(q @ k.transpose(-1, -2) * (c // self.heads) ** -0.5))
        return self.to_out((attn @ v).transpose(1, 2).reshape(n, t, c))


class _FusedAttention(_PytorchStyleAttention):
    """timm's default: one fused kernel, no module sees the probabilities."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = (
            self.to_qkv(self.norm(x))
            .reshape(n, t, 3, self.heads, c // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        return self.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, c))


class _SmallTransformer(nn.Module):
    def __init__(self, attention: type[nn.Module], depth: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.layers = nn.ModuleList(attention(8, 2) for _ in range(depth))
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.cat(
            [self.cls.expand(x.shape[0], -1, -1), self.embed(x).flatten(2).transpose(1, 2)], dim=1
        )
        for layer in self.layers:
            t = t + layer(t)
        return self.head(t[:, 0])


def test_finds_vit_pytorch_style_layers_once_each() -> None:
    model = _model(_SmallTransformer(_PytorchStyleAttention), name="vit-pytorch-like")
    # the dropout after each softmax passes the same probabilities on: one layer, not two
    assert find_attention_layers(model) == [f"layers.{i}.attend" for i in range(3)]
    x = torch.rand(2, 3, 16, 16)
    attns = _probabilities_by_hand(model.module, x, [f"layers.{i}.attend" for i in range(3)])
    expected = _upsample(_rollout_reference(attns, prefix=1), 16)  # one class token, no register
    torch.testing.assert_close(attention_rollout(model, x).double(), expected, atol=1e-6, rtol=1e-5)


def test_models_without_attention_are_refused_and_skipped() -> None:
    fused = _model(_SmallTransformer(_FusedAttention), name="fused")
    with pytest.raises(BadInputError, match="TIMM_FUSED_ATTN=0"):
        attention_rollout(fused, torch.rand(1, 3, 16, 16))
    cnn = tiny_model("conv")
    with pytest.raises(BadInputError, match="no attention layer"):
        explain(cnn, torch.rand(1, 3, 16, 16), "attention_map")
    assert {"attention_map", "attention_rollout"}.isdisjoint(applicable_methods(cnn))
    assert {"attention_map", "attention_rollout", "gradcam", "saliency"} <= set(
        applicable_methods(_model(TinyViT()))
    )
    # named explicitly, the layers of the fused model still cannot be read: no such module output
    with pytest.raises(BadInputError, match="not attention probabilities"):
        attention_rollout(fused, torch.rand(1, 3, 16, 16), attention_layers=["layers.0.norm"])


def _gradcam_by_hand(
    module: nn.Module, x: torch.Tensor, layer: str, target: int, prefix: int, grid: tuple[int, int]
) -> torch.Tensor:
    saved: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        out.retain_grad()
        saved["a"] = out

    handle = module.get_submodule(layer).register_forward_hook(hook)
    try:
        logits = module(x)
    finally:
        handle.remove()
    logits[:, target].sum().backward()
    a, g = saved["a"].detach(), saved["a"].grad
    n, _, c = a.shape
    h, w = grid
    a_grid = a[:, prefix:].reshape(n, h, w, c).permute(0, 3, 1, 2)
    g_grid = g[:, prefix:].reshape(n, h, w, c).permute(0, 3, 1, 2)
    cam = torch.relu((g_grid.mean(dim=(2, 3))[:, :, None, None] * a_grid).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize("layer", ["blocks.1.norm1", "blocks.0", "blocks.0.mlp.fc2"])
def test_gradcam_on_a_token_layer_equals_hand_reference(layer: str) -> None:
    model = _model(TinyViT(seed=7))
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    expected = _gradcam_by_hand(model.module, model.normalize(x), layer, 2, PREFIX, (4, 4))
    model.module.zero_grad(set_to_none=True)
    got = gradcam(model, model.normalize(x), 2, layer=layer)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert float(expected.amax()) > 0  # a blank map would make the comparison empty


def test_token_layer_default_and_explain_provenance() -> None:
    model = _model(TinyViT(seed=8))
    # after the last attention, patch tokens only feed themselves: no gradient, a blank CAM
    x = torch.rand(2, 3, 16, 16)
    assert float(gradcam(model, model.normalize(x), 1, layer="blocks.1.norm2").abs().amax()) == 0.0
    assert default_cam_layer(model) == "blocks.1.norm1"
    result = explain(model, x, "gradcam", target=1)
    assert result.provenance["layer"] == "blocks.1.norm1"
    assert result.provenance["params"]["tokens"] == {"grid": [4, 4], "dropped_tokens": PREFIX}
    forced = explain(model, x, "gradcam", target=1, layer="blocks.0", reshape=(2, 8))
    assert forced.provenance["params"]["tokens"] == {"grid": [2, 8], "dropped_tokens": PREFIX}
    with pytest.raises(BadInputError, match=r"\(2, 18, 16\)"):
        explain(model, x, "gradcam", layer="blocks.0", reshape=(5, 5))
    with pytest.raises(BadInputError, match="token layers"):
        explain(tiny_model("conv"), x, "gradcam", layer="relu2", reshape=(4, 4))
