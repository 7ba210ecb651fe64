"""Top patches against a brute-force search over every image and position.

Oracles written here, independent of convlens.layers and the runner: activations from a
plain forward hook on every image, a full sort of the per-image maxima, and receptive
fields as the support of each unit's input gradient (nonzero exactly on its field, since
the test network uses tanh).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.errors import BadInputError
from convlens.represent.patches import field_box, merge_top_k, top_patches

from helpers.conv_bn import ConvBNNet

pytestmark = pytest.mark.usefixtures(
    "one_thread_per_module"
)  # one torch thread (tests/conftest.py)


def _pixels(path) -> torch.Tensor:
    return torch.from_numpy(
        np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    ).permute(2, 0, 1)


def _activations(model, layer: str, x: torch.Tensor) -> torch.Tensor:
    saved = []
    handle = model.module.get_submodule(layer).register_forward_hook(
        lambda m, i, o: saved.append(o)
    )
    try:
        model.module(x)
    finally:
        handle.remove()
    return saved[0]


def _support_box(
    model, layer: str, pixels: torch.Tensor, c: int, y: int, x: int
) -> tuple[int, int, int, int]:
    """Bounding box of the input pixels whose gradient on unit (c, y, x) is nonzero."""
    x_in = model.normalize(pixels[None]).requires_grad_(True)
    act = _activations(model, layer, x_in)
    (grad,) = torch.autograd.grad(act[0, c, y, x], x_in)
    rows, cols = np.nonzero(grad[0].abs().sum(0).numpy() > 0)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


@pytest.mark.parametrize("layer", ["conv1", "act1", "conv2", "act2", "conv3"])
def test_field_box_equals_gradient_support(field_model, image_folder, layer) -> None:
    info = field_model.layer_info(layer)
    pixels = _pixels(image_folder[0])
    _, h, w = info.output_shape
    for y in range(h):
        for x in range(w):
            top, left, bottom, right = field_box(info.receptive_field, y, x)
            clipped = (max(top, 0), max(left, 0), min(bottom, 16), min(right, 16))
            assert clipped == _support_box(field_model, layer, pixels, 0, y, x), (layer, y, x)


def test_merge_top_k_equals_full_sort() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(50, 4)).astype(np.float32)
    values[10, 2] = values[30, 2] = 9.0  # a tie: the earlier item wins
    argmax = rng.integers(0, 20, size=(50, 4))
    shards = [
        (list(range(s, min(s + 7, 50))), {"max": values[s : s + 7], "argmax": argmax[s : s + 7]})
        for s in range(0, 50, 7)
    ]
    best_v, best_i, best_a = merge_top_k(iter(shards), 5)
    for c in range(4):
        order = sorted(range(50), key=lambda i: (-values[i, c], i))[:5]
        assert best_i[c].tolist() == order
        np.testing.assert_array_equal(best_v[c], values[order, c])
        np.testing.assert_array_equal(best_a[c], argmax[order, c])
    assert best_i[2, :2].tolist() == [10, 30]


@pytest.mark.parametrize("layer", ["act2", "conv3"])
def test_top_patches_equal_brute_force(field_model, image_folder, layer, tmp_path) -> None:
    channels = [0, 3, 4]
    k = 4
    result = top_patches(
        field_model,
        image_folder,
        layer,
        channels,
        k,
        work_dir=tmp_path / "run",
        batch_size=3,
        shard_size=5,
        patch_size=None,
    )
    pixels = torch.stack([_pixels(p) for p in image_folder])
    with torch.no_grad():
        acts = _activations(field_model, layer, field_model.normalize(pixels))  # (N, C, H, W)
    w_map = acts.shape[-1]
    grey = field_model.denormalize(torch.zeros(1, 3, 1, 1))[0, :, 0, 0]
    for ci, c in enumerate(channels):
        flat = acts[:, c].flatten(1)
        maxima, where = flat.max(dim=1)
        order = torch.argsort(maxima, descending=True)[:k].tolist()
        assert result["items"][ci].tolist() == order
        torch.testing.assert_close(result["values"][ci], maxima[order], rtol=1e-5, atol=1e-6)
        for r, item in enumerate(order):
            y, x = divmod(int(where[item]), w_map)
            assert result["positions"][ci, r].tolist() == [y, x]
            assert result.provenance["params"]["paths"][ci][r] == str(image_folder[item])
            top, left, bottom, right = _support_box(field_model, layer, pixels[item], c, y, x)
            patch = result["patches"][ci, r]
            b_top, b_left = (int(v) for v in result["boxes"][ci, r, :2])
            inside = patch[:, top - b_top : bottom - b_top, left - b_left : right - b_left]
            torch.testing.assert_close(
                inside, pixels[item, :, top:bottom, left:right], rtol=0, atol=1e-6
            )
            outside = torch.ones(patch.shape[1:], dtype=torch.bool)
            outside[top - b_top : bottom - b_top, left - b_left : right - b_left] = False
            if outside.any():  # the part of the field beyond the image: what zero padding feeds
                torch.testing.assert_close(
                    patch[:, outside],
                    grey[:, None].expand(3, int(outside.sum())),
                    rtol=0,
                    atol=1e-6,
                )


def test_resume_and_guided(field_model, field_relu_model, image_folder, tmp_path) -> None:
    # guided patches need ReLU-family modules: on the Tanh net they would be plain gradients
    with pytest.raises(BadInputError, match="plain gradient"):
        top_patches(
            field_model,
            image_folder,
            "act2",
            [1],
            3,
            work_dir=tmp_path / "tanh",
            shard_size=4,
            guided=True,
        )
    relu_model = field_relu_model
    first = top_patches(
        relu_model, image_folder, "act2", [1], 3, work_dir=tmp_path / "run", shard_size=4
    )
    again = top_patches(
        relu_model,
        image_folder,
        "act2",
        [1],
        3,
        work_dir=tmp_path / "run",
        shard_size=4,
        guided=True,
    )
    assert torch.equal(first["items"], again["items"]) and torch.equal(
        first["patches"], again["patches"]
    )
    assert again["guided"].shape == again["patches"].shape
    assert float(again["guided"].min()) >= 0 and float(again["guided"].max()) <= 1
    assert not torch.allclose(again["guided"], torch.full_like(again["guided"], 0.5))


def test_patch_size_downscales(field_model, image_folder) -> None:
    result = top_patches(field_model, image_folder, "conv3", [0], 2, patch_size=6)
    assert max(result["patches"].shape[-2:]) == 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": "fc"}, "feature map"),
        ({"layer": "conv3", "channels": [6]}, "out of range"),
        ({"layer": "conv3", "k": 0}, "k >= 1"),
        ({"layer": "conv3", "engine": "spark"}, "engine"),
    ],
)
def test_bad_input(field_model, image_folder, kwargs, match) -> None:
    with pytest.raises(BadInputError, match=match):
        top_patches(field_model, image_folder[:2], **kwargs)


def test_two_workers_give_the_same_top_k(field_model, image_folder, tmp_path) -> None:
    one = top_patches(field_model, image_folder, "act2", [0, 2], 5, shard_size=3)
    two = top_patches(
        field_model,
        image_folder,
        "act2",
        [0, 2],
        5,
        shard_size=3,
        workers=2,
        work_dir=tmp_path / "two",
    )
    assert torch.equal(one["items"], two["items"]) and torch.equal(
        one["positions"], two["positions"]
    )
    torch.testing.assert_close(one["values"], two["values"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer", ["bn1", "act1", "conv2", "act2"])
def test_fast_mode_top_patches_run_on_the_folded_copy_and_agree(
    image_folder, layer, tmp_path, monkeypatch
) -> None:
    import convlens

    def model(fast: bool) -> convlens.Model:
        wrapped = convlens.wrap(ConvBNNet().eval(), input_size=16, mean=0.5, std=0.25, resize=None)
        return wrapped.use_fast() if fast else wrapped

    eager, fast = model(False), model(True)
    assert fast.fast is not None and fast.fast["fold_batchnorm"] == 2
    ran: list[tuple[list, torch.nn.Module]] = []
    original = type(fast).forward_module

    def spy(self, layers=()):  # type: ignore[no-untyped-def]
        module = original(self, layers)
        if self is fast:  # the class is patched: the eager model's calls pass through too
            ran.append((list(layers), module))
        return module

    monkeypatch.setattr(type(fast), "forward_module", spy)
    kwargs = {"batch_size": 3, "shard_size": 5, "patch_size": None}
    got = top_patches(fast, image_folder, layer, [0, 2, 4], 3, work_dir=tmp_path / "f", **kwargs)
    want = top_patches(eager, image_folder, layer, [0, 2, 4], 3, work_dir=tmp_path / "e", **kwargs)
    # the folded copy ran, except for a folded convolution's own output (conv2), which only
    # the original module computes
    assert ran and all(names == [layer] for names, _ in ran)
    assert all((m is fast.module) == (layer == "conv2") for _, m in ran)
    assert torch.equal(got["items"], want["items"])
    assert torch.equal(got["positions"], want["positions"])
    torch.testing.assert_close(got["values"], want["values"], rtol=1e-5, atol=1e-6)
