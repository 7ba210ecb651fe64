"""Input-transform defences and the adaptive attacks on them (issue 17 part 3).

References are independent of the code under test: JPEG through Pillow files on disk,
bit depth through NumPy, defended logits composed by hand, BPDA gradients against autograd
at the transformed point, EOT against log-mean-softmax of hand-drawn noise.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convlens.adversarial.adaptive import adaptive_forward, bpda
from convlens.adversarial.defence_eval import COLUMNS, evaluate_defences
from convlens.adversarial.defences import bit_depth, defend, jpeg, make_defence, random_noise
from convlens.errors import BadInputError
from convlens.models.model import Model
from convlens.models.preprocess import Preprocessing


def _pixels(n: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth-ish 8-bit images (JPEG of white noise is a poor test of anything)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, c, size // 4, size // 4, generator=g)
    fine = torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bilinear", align_corners=False
    )
    return (fine * 255).round() / 255


def _tiny_model(channels: int = 1, size: int = 8, seed: int = 0) -> Model:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * size * size, 10),
    )
    prep = Preprocessing(
        input_size=(size, size),
        resize=None,
        mean=(0.3,) * channels,
        std=(0.4,) * channels,
        channels=channels,
    )
    return Model(net.eval(), prep, name="tiny")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_equals_pillow_files_on_disk(tmp_path: Path, channels: int, quality: int) -> None:
    x = _pixels(3, channels, 16, seed=quality)
    got = jpeg(x, quality)
    for i in range(len(x)):
        array = (x[i].numpy() * 255).round().astype(np.uint8)
        image = (
            Image.fromarray(array[0])
            if channels == 1
            else Image.fromarray(array.transpose(1, 2, 0))
        )
        path = tmp_path / f"{i}.jpg"
        image.save(path, quality=quality)
        back = np.asarray(Image.open(path)).astype(np.float32) / 255
        back = back[None] if channels == 1 else back.transpose(2, 0, 1)
        np.testing.assert_array_equal(got[i].numpy(), back)
    # JPEG really changed something, and less at higher quality
    assert (got - x).abs().max() > 1 / 255


def test_jpeg_is_lossier_at_low_quality() -> None:
    x = _pixels(4, 3, 32)
    errors = [float((jpeg(x, q) - x).abs().mean()) for q in (10, 50, 95)]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_bit_depth_equals_numpy(bits: int) -> None:
    x = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(bits))
    top = 2**bits - 1
    expected = np.round(x.numpy() * np.float32(top)) / np.float32(top)
    np.testing.assert_array_equal(bit_depth(x, bits).numpy(), expected)
    assert len(torch.unique(bit_depth(x, bits))) <= 2**bits


def test_bit_depth_by_hand() -> None:
    x = torch.tensor([0.0, 0.2, 0.49, 0.51, 0.9, 1.0]).view(1, 1, 1, 6)
    assert bit_depth(x, 1).flatten().tolist() == [0, 0, 0, 1, 1, 1]
    assert bit_depth(x, 2).flatten().tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    with pytest.raises(BadInputError):
        bit_depth(x, 0)


def test_random_noise_is_seeded_gaussian_and_clipped() -> None:
    x = torch.full((4, 1, 32, 32), 0.5)
    a = random_noise(x, 0.1, torch.Generator().manual_seed(3))
    b = random_noise(x, 0.1, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    noise = (a - x).flatten()
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 0.1) < 0.005
    wide = random_noise(x, 1.0, torch.Generator().manual_seed(3))
    assert wide.min() >= 0 and wide.max() <= 1 and (wide == 0).any() and (wide == 1).any()


def test_defended_model_composes_transform_and_network_without_touching_it() -> None:
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    defended = defend(model, "bits", bits=2)
    assert defended.module.network is model.module
    assert defended.name == "tiny+bits2" and defended.preprocessing is model.preprocessing
    x = _pixels(5, 1, 8)
    with torch.no_grad():
        expected = model.module(model.normalize(bit_depth(x, 2)))
        got = defended.module(defended.normalize(x))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert all(torch.equal(v, model.module.state_dict()[k]) for k, v in before.items())
    # JPEG and noise run through the same wrapper
    with torch.no_grad():
        torch.testing.assert_close(
            defend(model, "jpeg", quality=50).module(model.normalize(x)),
            model.module(model.normalize(jpeg(x, 50))),
            rtol=0,
            atol=1e-5,
        )


def test_bpda_is_the_transform_forward_and_the_identity_backward() -> None:
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    weights = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    out = bpda(lambda p: bit_depth(p, 1))(x)
    assert torch.equal(out.detach(), bit_depth(x.detach(), 1))
    (grad,) = torch.autograd.grad((weights * out).sum(), x)
    torch.testing.assert_close(grad, weights, rtol=0, atol=0)  # identity pass-through
    # the plain transform has zero gradient: this is the masking BPDA removes
    (masked,) = torch.autograd.grad((weights * bit_depth(x, 1)).sum(), x)
    assert torch.count_nonzero(masked) == 0


def test_bpda_through_a_network_is_the_network_gradient_at_the_transformed_point() -> None:
    model = _tiny_model()
    x = _pixels(4, 1, 8)
    y = torch.tensor([1, 2, 3, 4])
    forward = adaptive_forward(defend(model, "jpeg", quality=40))
    xr = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(nn.functional.cross_entropy(forward(xr), y, reduction="sum"), xr)
    z = jpeg(x, 40).requires_grad_(True)
    (expected,) = torch.autograd.grad(
        nn.functional.cross_entropy(model.module(model.normalize(z)), y, reduction="sum"), z
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert got.abs().sum() > 0


def test_eot_is_the_log_mean_probability_over_draws() -> None:
    model = _tiny_model()
    defended = defend(model, make_defence("noise", sigma=0.2), seed=5)
    x = _pixels(3, 1, 8)
    forward = adaptive_forward(defended, samples=4)
    defended.module.reseed(11)
    with torch.no_grad():
        got = forward(x)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        probs = [
            model.module(model.normalize(random_noise(x, 0.2, g))).softmax(dim=1) for _ in range(4)
        ]
    expected = torch.stack(probs).mean(dim=0).log()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # a deterministic defence needs one draw: log-softmax of the defended logits
    bits = defend(model, "bits", bits=3)
    with torch.no_grad():
        torch.testing.assert_close(
            adaptive_forward(bits, samples=8)(x), bits.module(model.normalize(x)).log_softmax(dim=1)
        )
    assert math.isclose(float(got.exp().sum(dim=1).mean()), 1.0, rel_tol=1e-5)


def test_adaptive_forward_refuses_an_undefended_model() -> None:
    with pytest.raises(BadInputError, match="defend"):
        adaptive_forward(_tiny_model())


def test_bad_settings_are_refused_with_one_line() -> None:
    for kind, settings in (
        ("jpeg", {"quality": 0}),
        ("bits", {"bits": 9}),
        ("noise", {"sigma": 0}),
        ("blur", {}),
    ):
        with pytest.raises(BadInputError) as info:
            make_defence(kind, **settings)
        assert "\n" not in str(info.value)


def test_evaluation_table_on_a_tiny_model_is_consistent_with_direct_calls() -> None:
    model = _tiny_model()
    x = _pixels(12, 1, 8)
    with torch.no_grad():
        y = model.module(model.normalize(x)).argmax(dim=1)  # every clean image correct for the base
    result = evaluate_defences(model, x, y, ["bits"], eps=0.1, steps=5, eot_samples=2, batch_size=5)
    acc = result["accuracy"]
    assert result.kind == "defences" and acc.shape == (2, len(COLUMNS))
    assert result.provenance["params"]["defences"] == ["none", "bits1"]
    assert acc[0, 0] == 1.0
    assert acc[0, 1] == acc[0, 2] == acc[0, 3]  # undefended: every attack is white-box PGD on it
    with torch.no_grad():
        clean_bits = (
            (model.module(model.normalize(bit_depth(x, 1))).argmax(dim=1) == y).float().mean()
        )
    assert float(acc[1, 0]) == pytest.approx(float(clean_bits))
    # zero gradient: the naive attack only moves by its random start, which 1-bit rounding mostly undoes
    assert acc[1, 2] >= acc[1, 3]
