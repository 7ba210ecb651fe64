"""Token layers as grids: grid inference (class and register tokens, non-square inputs),
refusal, the reshape against hand indexing, and token layers in activations."""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.errors import BadInputError
from convlens.inspect import activations
from convlens.tokens import parse_reshape, token_grid, tokens_to_grid

from helpers.tiny_vit import TinyViT


@pytest.mark.parametrize(
    ("tokens", "input_size", "expected"),
    [
        (197, None, (14, 14, 1)),  # ViT-B/16 at 224: class token + 14x14
        (196, None, (14, 14, 0)),  # no class token (mean-pooled ViT)
        (201, (224, 224), (14, 14, 5)),  # class token + 4 registers
        (17, (8, 8), (4, 4, 1)),  # the digits ViT
        (281, (224, 320), (14, 20, 1)),  # non-square: 224x320 with 16 px patches
        (281, (320, 224), (20, 14, 1)),  # portrait: the grid follows the image
        (16, (8, 32), (2, 8, 0)),  # 4x4 would be square; the 1:4 image makes 2x8
    ],
)
def test_grid_inference(
    tokens: int, input_size: tuple[int, int] | None, expected: tuple[int, int, int]
) -> None:
    assert token_grid(tokens, input_size=input_size) == expected


def test_forced_grid_and_prefix() -> None:
    assert token_grid(197, reshape=(14, 14)) == (14, 14, 1)
    assert token_grid(197, reshape="7x28") == (7, 28, 1)
    assert token_grid(20, prefix_tokens=4) == (
        4,
        4,
        4,
    )  # 16 left: 4x4, although 20 - 4 = 16 = 4^2 anyway
    assert token_grid(26, prefix_tokens=1) == (5, 5, 1)  # inference alone would drop 1 as well
    assert token_grid(26, prefix_tokens=10) == (4, 4, 10)  # more extra tokens than inference tries
    assert (
        parse_reshape([3, 5]) == (3, 5)
        and parse_reshape("3,5") == (3, 5)
        and parse_reshape(None) is None
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"tokens": 300}, "(N, 300, C)"),  # 300 - k is no square for k <= 8
        ({"tokens": 197, "reshape": (15, 15)}, "needs 225 tokens"),
        ({"tokens": 197, "reshape": (14, 14), "prefix_tokens": 2}, "with 2 extra tokens"),
        ({"tokens": 197, "reshape": "fourteen"}, "reshape="),
        ({"tokens": 281, "input_size": (224, 320), "prefix_tokens": 0}, "224x320"),
    ],
)
def test_refusals_name_the_shape(kwargs: dict, needle: str) -> None:
    with pytest.raises(BadInputError, match=r"reshape|grid") as err:
        token_grid(**kwargs)
    assert needle in str(err.value)


def test_tokens_to_grid_equals_hand_indexing() -> None:
    n, h, w, extra, c = 2, 3, 5, 2, 4
    t = torch.randn(n, extra + h * w, c)
    grid, info = tokens_to_grid(t, reshape=(h, w))
    assert info == {"grid": [h, w], "dropped_tokens": extra}
    assert grid.shape == (n, c, h, w)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                assert torch.equal(grid[b, :, i, j], t[b, extra + i * w + j])
    with pytest.raises(BadInputError, match=r"\(2, 4\)"):
        tokens_to_grid(torch.zeros(2, 4))  # not (N, T, C)


def test_tokens_to_grid_carries_gradients() -> None:
    t = torch.randn(1, 17, 3, requires_grad=True)
    grid, _ = tokens_to_grid(t)
    (grid * torch.arange(48.0).view(1, 3, 4, 4)).sum().backward()
    assert t.grad is not None and torch.equal(
        t.grad[0, 0], torch.zeros(3)
    )  # the class token is dropped
    assert t.grad[0, 1 + 2 * 4 + 3, 1] == 16 + 2 * 4 + 3  # channel 1, row 2, column 3


def _vit_model() -> convlens.Model:
    module = TinyViT(seed=0).eval()
    return convlens.wrap(
        module,
        input_size=16,
        mean=0.5,
        std=0.25,
        resize=None,
        labels=[f"c{i}" for i in range(5)],
        name="tiny-vit",
    )


def test_activations_of_a_token_layer_are_a_grid() -> None:
    model = _vit_model()
    x = torch.rand(2, 3, 16, 16)
    result = activations(model, model.prepare(x), "blocks.0")
    # by hand: the block output's tokens, class and register token dropped, on the 4x4 grid
    with torch.no_grad():
        m = model.module
        tokens = (
            torch.cat(
                [
                    m.cls_token.expand(2, -1, -1),
                    m.reg_tokens.expand(2, -1, -1),
                    m.patch_embed(model.normalize(x)),
                ],
                dim=1,
            )
            + m.pos_embed
        )
        out = m.blocks[0](tokens)
    expected = out[:, 2:].reshape(2, 4, 4, 16).permute(0, 3, 1, 2)
    torch.testing.assert_close(result.tensors["activations"], expected, atol=1e-5, rtol=1e-5)
    assert result.provenance["params"]["tokens"] == {"grid": [4, 4], "dropped_tokens": 2}
    assert result.display is not None and result.display[0].shape[-2:] == (16, 16)
    strongest = int(result.tensors["channel_order"][0, 0])
    assert strongest == int(expected[0].mean(dim=(1, 2)).argmax())


def _images(folder, n: int = 6) -> list:  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _grid_by_hand(model: convlens.Model, paths: list, layer: str) -> torch.Tensor:  # type: ignore[type-arg]
    x = model.prepare([str(p) for p in paths]).x
    seen = {}
    handle = model.module.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: seen.__setitem__("t", out.detach())
    )
    try:
        with torch.no_grad():
            model.module(x)
    finally:
        handle.remove()
    n, _, c = seen["t"].shape
    return (
        seen["t"][:, 2:].reshape(n, 4, 4, c).permute(0, 3, 1, 2)
    )  # class + register token dropped


def test_features_of_a_token_layer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from convlens.represent import extract_features, load_features

    model = _vit_model()
    paths = _images(tmp_path)
    expected = _grid_by_hand(model, paths, "blocks.1")
    extract_features(model, paths, "blocks.1", tmp_path / "pooled", batch_size=4)
    extract_features(model, paths, "blocks.1", tmp_path / "full", pooled=False, batch_size=4)
    pooled, full = load_features(tmp_path / "pooled"), load_features(tmp_path / "full")
    assert pooled.shape == (16, 4, 4) and full.shape == (16, 4, 4)
    np_pooled = expected.mean(dim=(2, 3)).numpy()
    assert abs(pooled.codes - np_pooled).max() < 1e-5  # the mean of the 16 patch tokens
    assert abs(full.codes - expected.flatten(1).numpy()).max() < 1e-5  # the grid, channel-major


def test_top_patches_of_a_token_layer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from convlens.represent import top_patches

    model = _vit_model()
    paths = _images(tmp_path)
    expected = _grid_by_hand(model, paths, "blocks.0")
    result = top_patches(model, paths, "blocks.0", channels=[0, 5], k=3, patch_size=None)
    for row, c in enumerate([0, 5]):
        best = expected[:, c].flatten(1).max(dim=1)
        order = best.values.argsort(descending=True)[:3]
        assert result.tensors["items"][row].tolist() == order.tolist()
        for rank, item in enumerate(order.tolist()):
            pos = int(best.indices[item])
            y, x = divmod(pos, 4)
            assert result.tensors["positions"][row, rank].tolist() == [y, x]
            # the token's own 4x4 patch of the image
            assert result.tensors["boxes"][row, rank].tolist() == [
                4 * y,
                4 * x,
                4 * y + 4,
                4 * x + 4,
            ]
    with pytest.raises(BadInputError, match="token layer"):
        top_patches(model, paths, "blocks.0", channels=[0], k=1, guided=True)
