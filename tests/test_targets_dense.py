"""region / box / similarity targets against hand-computed references.

References: direct formulas on the model output, central finite differences in float64,
and a closed-form Grad-CAM for a net whose head is a 1x1 convolution (so dS/dA is known).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens
from convlens.errors import BadInputError, TargetError
from convlens.inspect.gradients import input_gradient
from convlens.targets import box, load_mask, region, resolve_target, similarity

LABELS = ["background", "square", "disc"]


def _seg_net(seed: int = 0, inplace: bool = False) -> nn.Module:
    """conv 3x3 -> relu (``act``) -> 1x1 conv head to 3 classes; output (N, 3, H, W)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        OrderedDict(
            [
                ("conv", nn.Conv2d(3, 5, 3, padding=1)),
                ("act", nn.ReLU(inplace=inplace)),
                ("head", nn.Conv2d(5, 3, 1)),
            ]
        )
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net


def _seg_model(dtype: torch.dtype = torch.float32) -> convlens.Model:
    return convlens.wrap(
        _seg_net().to(dtype),
        input_size=8,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        resize=None,
        labels=LABELS,
        name="tinyseg",
    )


def _x(n: int = 2, size: int = 8, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _square_mask(size: int = 8) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[1:4, 2:6] = True
    return mask


def _finite_diff(
    f, x: torch.Tensor, n: int = 24, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (float64) of a scalar function of x at ``n`` seeded coordinates;
    returns (flat indices, derivatives)."""
    x = x.detach().clone()
    flat = x.view(-1)
    idx = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:n]
    out = torch.zeros(n, dtype=x.dtype)
    with torch.no_grad():
        for j, i in enumerate(idx.tolist()):
            old = float(flat[i])
            flat[i] = old + eps
            up = float(f(x))
            flat[i] = old - eps
            down = float(f(x))
            flat[i] = old
            out[j] = (up - down) / (2 * eps)
    return idx, out


def _assert_fd(grad: torch.Tensor, f, x: torch.Tensor) -> None:
    idx, fd = _finite_diff(f, x)
    assert fd.abs().max() > 1e-3  # the probed coordinates do move the score
    torch.testing.assert_close(grad.reshape(-1)[idx], fd, atol=1e-6, rtol=1e-5)


# -- region -----------------------------------------------------------------------------


def test_region_is_the_sum_of_the_class_logits_over_the_mask() -> None:
    model = _seg_model()
    x = _x()
    mask = _square_mask()
    out = model.module(x)
    scores, resolved = resolve_target(model, region("square", mask)).scores(model, x)
    expected = torch.stack([out[i, 1][mask].sum() for i in range(2)])
    torch.testing.assert_close(scores, expected)
    assert resolved.kind == "callable"
    # per-image masks: image 0 uses the square, image 1 a single pixel
    masks = torch.zeros(2, 8, 8)
    masks[0] = mask.float()
    masks[1, 7, 0] = 0.3  # float masks: non-zero is inside
    scores, _ = resolve_target(model, region(2, masks)).scores(model, x)
    torch.testing.assert_close(scores, torch.stack([out[0, 2][mask].sum(), out[1, 2, 7, 0]]))


def test_region_gradient_matches_finite_differences() -> None:
    model = _seg_model(torch.float64)
    x = _x(1, dtype=torch.float64)
    mask = _square_mask()
    grad = input_gradient(model, x, region(1, mask))
    _assert_fd(grad, lambda z: model.module(z)[0, 1][mask].sum(), x)


def test_region_mask_is_resized_nearest_to_the_output() -> None:
    model = _seg_model()
    x = _x()
    out = model.module(x)
    big = torch.zeros(16, 16, dtype=torch.bool)
    big[2:9, 4:13] = True
    # nearest-exact shrinking by 2 samples the centre of each 2x2 block: pixel (2i+1, 2j+1)
    small = big[1::2, 1::2]
    scores, _ = resolve_target(model, region(1, big)).scores(model, x)
    torch.testing.assert_close(scores, (out[:, 1] * small).sum((1, 2)))
    coarse = torch.zeros(4, 4, dtype=torch.bool)
    coarse[1, 2] = True
    up = coarse.repeat_interleave(2, 0).repeat_interleave(2, 1)  # every pixel doubled
    scores, _ = resolve_target(model, region(1, coarse)).scores(model, x)
    torch.testing.assert_close(scores, (out[:, 1] * up).sum((1, 2)))


def test_region_mask_from_png(tmp_path) -> None:
    mask = _square_mask().numpy()
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha must not count as "inside"
    rgba[mask, 0] = 200  # a red region on black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "g.png")
    assert torch.equal(load_mask(tmp_path / "m.png"), torch.from_numpy(mask))
    assert torch.equal(load_mask(str(tmp_path / "g.png")), torch.from_numpy(mask))
    model = _seg_model()
    x = _x()
    a, _ = resolve_target(model, region("disc", tmp_path / "m.png")).scores(model, x)
    b, _ = resolve_target(model, region(2, torch.from_numpy(mask))).scores(model, x)
    torch.testing.assert_close(a, b)


def test_region_errors(tmp_path) -> None:
    model = _seg_model()
    x = _x()
    with pytest.raises(TargetError, match="no pixel inside"):
        region(1, torch.zeros(8, 8))
    with pytest.raises(BadInputError, match="no such file"):
        region(1, tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(BadInputError, match="not an image"):
        region(1, tmp_path / "bad.png")
    with pytest.raises(BadInputError, match=r"\(H, W\) or \(N, H, W\)"):
        region(1, torch.ones(8))
    with pytest.raises(TargetError, match="out of range: the model output has 3 classes"):
        resolve_target(model, region(5, _square_mask())).scores(model, x)
    with pytest.raises(TargetError, match="'triangle'"):
        resolve_target(model, region("triangle", _square_mask()))
    with pytest.raises(TargetError, match="3 masks but the output has batch size 2"):
        resolve_target(model, region(1, torch.ones(3, 8, 8))).scores(model, x)
    single = torch.zeros(64, 64)
    single[0, 0] = 1
    with pytest.raises(TargetError, match="no pixel left after resizing"):
        resolve_target(model, region(1, single)).scores(model, x)
    with pytest.raises(
        TargetError, match=r"segmentation output \(N, classes, H, W\); the model gives \(2, 3\)"
    ):
        region(1, _square_mask())(torch.zeros(2, 3))
    with pytest.raises(TargetError, match="is a name"):
        region("square", _square_mask())(torch.zeros(2, 3, 8, 8))


def test_integrated_gradients_of_a_region_is_complete() -> None:
    """IG scores the target on batches of path points (not the image batch): a shared mask
    works there, and the attributions sum to S(x) - S(baseline) (Sundararajan et al. 2017)."""
    model = _seg_model(torch.float64)
    pixels = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x = model.normalize(pixels)  # explain() takes pixels; IG runs in input space
    mask = _square_mask()[None]  # one (1, H, W) mask broadcasts over any batch
    baseline = torch.zeros_like(x)
    result = convlens.explain(
        model, pixels, "integrated_gradients", region(1, mask), baseline=baseline, n_steps=256
    )
    with torch.no_grad():
        gap = (model.module(x)[:, 1] * mask).sum((1, 2)) - (
            model.module(baseline)[:, 1] * mask
        ).sum((1, 2))
    torch.testing.assert_close(
        result.tensors["attribution"].sum((1, 2, 3)),
        gap,
        atol=2e-3 * float(gap.abs().max()),
        rtol=0,
    )


def test_region_provenance_says_class_and_pixels() -> None:
    model = _seg_model()
    result = convlens.explain(
        model, torch.rand(1, 3, 8, 8), "saliency", region("square", _square_mask())
    )
    target = result.provenance["target"]
    assert target["kind"] == "callable"
    assert target["callable"] == "region(class=1 (square), mask=12 px of 8x8)"
    assert target["helper"] == {
        "name": "region",
        "class": 1,
        "label": "square",
        "mask_size": [8, 8],
        "mask_pixels": [12],
        "reduction": "sum",
    }


def test_gradcam_of_a_region_equals_the_closed_form() -> None:
    """Head = 1x1 conv W: S = sum_M (W_c . A + b_c), so dS/dA_k = W[c, k] * M and
    Grad-CAM = relu(|M| / (h w) * sum_k W[c, k] A_k)."""
    model = _seg_model()
    pixels = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    mask = _square_mask()
    result = convlens.explain(model, pixels, "gradcam", region(2, mask), layer="act")
    act = torch.relu(model.module.conv(model.normalize(pixels)))
    w = model.module.head.weight[2, :, 0, 0]
    expected = torch.relu(mask.sum() / 64 * torch.einsum("k,nkhw->nhw", w, act))
    torch.testing.assert_close(result.tensors["map"], expected.detach(), atol=1e-6, rtol=1e-5)


def test_region_inplace_relu_gives_the_same_map() -> None:
    x = _x()
    maps = []
    for inplace in (False, True):
        model = convlens.wrap(_seg_net(inplace=inplace), input_size=8, resize=None, labels=LABELS)
        maps.append(
            convlens.explain(model, x, "guided_backprop", region(1, _square_mask())).tensors[
                "attribution"
            ]
        )
    torch.testing.assert_close(maps[0], maps[1])


# -- box --------------------------------------------------------------------------------


def test_box_reads_the_three_output_conventions() -> None:
    g = torch.Generator().manual_seed(0)
    det = torch.randn(2, 5, 4 + 3, generator=g)  # (N, boxes, 4 + classes)
    torch.testing.assert_close(box(3)(det), torch.stack([det[0, 3, 4:].max(), det[1, 3, 4:].max()]))
    torch.testing.assert_close(box(1, class_index=2)(det), det[:, 1, 6])
    scores = torch.rand(2, 5, generator=g)
    torch.testing.assert_close(box(4)({"scores": scores, "boxes": det[..., :4]}), scores[:, 4])
    per_class = torch.rand(2, 5, 3, generator=g)
    torch.testing.assert_close(box(0, 1)({"scores": per_class}), per_class[:, 0, 1])
    dets = [
        {
            "boxes": torch.rand(3, 4),
            "scores": torch.tensor([0.9, 0.5, 0.2]),
            "labels": torch.tensor([7, 7, 1]),
        },
        {
            "boxes": torch.rand(2, 4),
            "scores": torch.tensor([0.8, 0.4]),
            "labels": torch.tensor([7, 3]),
        },
    ]
    torch.testing.assert_close(box(1)(dets), torch.tensor([0.5, 0.4]))
    torch.testing.assert_close(box(0, class_index=7)(dets), torch.tensor([0.9, 0.8]))


def test_box_errors_name_the_convention() -> None:
    det = torch.randn(2, 5, 7)
    with pytest.raises(TargetError, match="box 5 does not exist: the output has 5 boxes"):
        box(5)(det)
    with pytest.raises(TargetError, match="class 3 is out of range"):
        box(0, 3)(det)
    with pytest.raises(TargetError, match=r"\(N, boxes, 4 \+ classes\).*\(2, 10\)"):
        box(0)(torch.zeros(2, 10))
    with pytest.raises(TargetError, match="image 1 has 1 boxes"):
        box(1)([{"scores": torch.rand(2)}, {"scores": torch.rand(1)}])
    with pytest.raises(TargetError, match="image 0: box 0 is labelled 3, not 4"):
        box(0, 4)([{"scores": torch.rand(2), "labels": torch.tensor([3, 4])}])
    with pytest.raises(TargetError, match="int >= 0"):
        box(-1)


class _TinyDetector(nn.Module):
    """Per-position 'boxes' of a 4x4 grid: (N, 16, 4 + 2), coordinates and class logits."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).flatten(2).transpose(1, 2)


def test_box_saliency_matches_finite_differences() -> None:
    model = convlens.wrap(_TinyDetector().double(), input_size=8, resize=None)
    x = _x(1, dtype=torch.float64)
    grad = input_gradient(model, x, box(5, 1))
    _assert_fd(grad, lambda z: model.module(z)[0, 5, 5], x)
    result = convlens.explain(model, x, "saliency", box(5, 1))
    assert result.provenance["target"]["callable"] == "box(index=5, class=1)"


# -- similarity -------------------------------------------------------------------------


class _Embedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.Tanh()
        self.fc = nn.Linear(4 * 8 * 8, 6)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def _embed_model() -> convlens.Model:
    return convlens.wrap(
        _Embedder().double(), input_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, resize=None
    )


def test_similarity_is_the_cosine_to_the_reference() -> None:
    model = _embed_model()
    x = _x(3, dtype=torch.float64)
    ref = np.random.default_rng(0).normal(size=6)
    scores, _ = resolve_target(model, similarity(ref)).scores(model, x)
    e = model.module(x).detach().numpy()
    expected = e @ ref / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref))
    np.testing.assert_allclose(scores.detach().numpy(), expected, rtol=1e-10)
    refs = torch.randn(3, 6, dtype=torch.float64)
    scores, _ = resolve_target(model, similarity(refs)).scores(model, x)
    torch.testing.assert_close(
        scores, torch.nn.functional.cosine_similarity(model.module(x), refs, dim=1)
    )


def test_similarity_to_an_image_embeds_it_with_the_model() -> None:
    model = _embed_model()
    g = torch.Generator().manual_seed(2)
    ref_pixels, other_pixels = torch.rand(2, 1, 3, 8, 8, generator=g, dtype=torch.float64)
    x = model.normalize(torch.cat([ref_pixels, other_pixels]))
    scores, _ = resolve_target(model, similarity(ref_pixels)).scores(model, x)
    assert scores[0].item() == pytest.approx(1.0, abs=1e-12)  # an image is its own best match
    e = model.module(x)
    torch.testing.assert_close(scores[1], torch.nn.functional.cosine_similarity(e[1], e[0], dim=0))
    # the gradient of the cosine vanishes at its maximum (the image itself) and not elsewhere
    grad_self = input_gradient(model, x[:1], similarity(ref_pixels))
    grad_other = input_gradient(model, x[1:], similarity(ref_pixels))
    assert grad_self.abs().max() < 1e-9 * grad_other.abs().max() + 1e-12
    _assert_fd(
        grad_other,
        lambda z: torch.nn.functional.cosine_similarity(model.module(z)[0], e[0].detach(), dim=0),
        x[1:],
    )


def test_similarity_errors() -> None:
    model = _embed_model()
    x = _x(2, dtype=torch.float64)
    with pytest.raises(TargetError, match="needs the model"):
        similarity(torch.rand(3, 8, 8))(torch.rand(2, 6))
    with pytest.raises(
        TargetError, match="reference embedding has 5 values but the model's embedding has 6"
    ):
        resolve_target(model, similarity(torch.rand(5))).scores(model, x)
    with pytest.raises(TargetError, match="3 reference embeddings but the output has batch size 2"):
        resolve_target(model, similarity(torch.rand(3, 6))).scores(model, x)
    bound = resolve_target(model, similarity(torch.rand(1, 3, 8, 8)))
    assert bound.describe() == "similarity(reference=<Tensor>)"
    assert bound.to_dict()["helper"] == {
        "name": "similarity",
        "reference": "<Tensor>",
        "dim": 6,
        "measure": "cosine",
    }
