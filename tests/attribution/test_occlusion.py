"""Occlusion against a slow loop, against Captum, incremental = brute force, and localisation.

The slow reference below occludes one window at a time with slicing and averages with
explicit counts; its window grid is written the way Captum's docstring words it ("the first
patch at 0, strides applied until the dimension is covered"), not with
:func:`window_starts`. The incremental engine is checked on models that exercise every path
it has: strided and TF-'SAME' convolutions (odd and even sizes), depthwise convolutions,
residual sums, pooling windows, a reflect-padded convolution (must run dense), an
untraceable forward (must fall back) and a random EfficientNet-Lite.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

import convlens
from convlens.attribution import occlusion as occlusion_module
from convlens.attribution.occlusion import occlusion, window_starts
from convlens.errors import BadInputError
from convlens.hooks import capture, inference_context
from convlens.models.efficientnet_lite import LITE_CONFIGS, EfficientNetLite, SamePadConv2d
from convlens.targets import Neuron

from helpers.tiny import ResidualNet, TinyConvNet, module_hook_count
from helpers.two_patch import TwoPatchSet, in_box, peaks, train_two_patch_cnn, two_patch_model


def _blur_reference(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """The occlusion blur fill by scipy: edges repeated ("nearest"), radius ceil(3 sigma)."""
    radius = math.ceil(3 * sigma)
    out = [
        [gaussian_filter(ch, sigma, mode="nearest", radius=radius) for ch in img]
        for img in pixels.double().numpy()
    ]
    return torch.from_numpy(np.asarray(out)).to(pixels.dtype)


def _model(module: nn.Module, size: int = 16, classes: int = 5) -> convlens.Model:
    module.eval()
    return convlens.wrap(
        module,
        input_size=size,
        mean=0.5,
        std=0.25,
        resize=None,
        labels=[f"c{i}" for i in range(classes)],
    )


def _x(n: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _randomise_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return module


# -- models for the engine -------------------------------------------------------------


class SameNet(nn.Module):
    """TF 'SAME' convolutions (stride 2 pads the extra row bottom/right), a depthwise one,
    a residual sum with a functional ReLU, a 1x1 stride-2 shortcut, max and average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = SamePadConv2d(3, 8, 3, stride=2)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6(inplace=True)
        self.dw = SamePadConv2d(8, 8, 5, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.down = nn.Conv2d(8, 12, 1, stride=2)
        self.conv = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.maxpool = nn.MaxPool2d(3, stride=1, padding=1)
        self.avgpool = nn.AvgPool2d(2)
        self.head = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.stem(x)))
        x = F.relu(x + self.pw(self.dw(x)))
        x = self.conv(x) * 0.5 + self.down(x)
        x = self.avgpool(self.maxpool(x))
        return self.head(x.mean(dim=(2, 3)))


class ReflectNet(nn.Module):
    """A reflect-padded convolution reads occluded pixels into its padding: must run dense."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect")
        self.conv3 = nn.Conv2d(6, 6, 3, padding="same")
        self.fc = nn.Linear(6 * 16 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.tanh(self.conv3(self.conv2(x)))
        return self.fc(x.flatten(1))


class Untraceable(TinyConvNet):
    """Data-dependent control flow: torch.fx cannot trace it, occlusion must fall back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * 2 if float(x.mean()) > 10 else out


def _tiny_lite(size: int) -> convlens.Model:
    torch.manual_seed(0)
    module = _randomise_bn(EfficientNetLite(LITE_CONFIGS["efficientnet_lite0"], num_classes=7))
    return _model(module, size, classes=7)


# -- the slow reference ----------------------------------------------------------------


def _captum_grid(length: int, patch: int, stride: int) -> list[int]:
    starts = [0]
    while starts[-1] + patch < length:
        starts.append(starts[-1] + stride)
    return starts


def slow_occlusion(
    model: convlens.Model, x: torch.Tensor, score, fill: torch.Tensor, patch: int, stride: int
) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """One window at a time; ``score(image, n) -> float`` runs the model; ``fill`` input space."""
    n_img, c, h, w = x.shape
    out = torch.zeros(n_img, c, h, w, dtype=torch.float64)
    with inference_context(model.module), torch.no_grad():
        for n in range(n_img):
            image = x[n : n + 1]
            fill_n = torch.broadcast_to(fill[n : n + 1] if fill.shape[0] > 1 else fill, image.shape)
            base = score(image, n)
            total = torch.zeros(h, w, dtype=torch.float64)
            count = torch.zeros(h, w, dtype=torch.float64)
            for y0 in _captum_grid(h, patch, stride):
                for x0 in _captum_grid(w, patch, stride):
                    occluded = image.clone()
                    occluded[..., y0 : y0 + patch, x0 : x0 + patch] = fill_n[
                        ..., y0 : y0 + patch, x0 : x0 + patch
                    ]
                    total[y0 : y0 + patch, x0 : x0 + patch] += base - score(occluded, n)
                    count[y0 : y0 + patch, x0 : x0 + patch] += 1
            out[n] = total / count
    return out.float()


def _logit(model: convlens.Model, cls: int):  # type: ignore[no-untyped-def]
    return lambda image, n: float(model.module(image)[0, cls])


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    # atol relative to the map's scale: drops far from the object are differences of
    # nearly equal scores, where float32 noise (~1e-6 of the logit) is all there is
    torch.testing.assert_close(a, b, rtol=rtol, atol=1e-5 * float(b.abs().max()) + 1e-7)


# -- windows, hand-checkable cases -----------------------------------------------------


@pytest.mark.parametrize(
    ("length", "patch", "stride"),
    [(224, 16, 8), (16, 5, 3), (16, 4, 4), (16, 16, 1), (15, 3, 2), (7, 2, 2)],
)
def test_window_grid_is_captums(length: int, patch: int, stride: int) -> None:
    assert window_starts(length, patch, stride) == _captum_grid(length, patch, stride)


def test_window_grid_examples() -> None:
    assert window_starts(224, 16, 8) == list(range(0, 209, 8))  # 27 windows, none cut
    assert window_starts(16, 5, 3) == [0, 3, 6, 9, 12]  # the last covers 12..15 only


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_linear_model_by_hand() -> None:
    """For S = w.x + b and fill f, a window's drop is sum_window w (x - f); a pixel covered
    by windows {u} gets their mean. With patch 2 and stride 2 the windows tile the image, so
    each pixel's value is exactly its own 2x2 block's sum."""
    torch.manual_seed(0)
    model = _model(Linear(), size=8, classes=2)
    x = _x(1, 8)
    got = occlusion(model, x, 1, patch=2, stride=2, fill=0.5)  # pixel 0.5 = input 0
    contrib = (model.module.fc.weight[1].view(3, 8, 8) * x[0]).sum(0).detach()
    blocks = contrib.view(4, 2, 4, 2).sum(dim=(1, 3))
    expected = blocks.repeat_interleave(2, 0).repeat_interleave(2, 1)
    _close(got[0, 0], expected)
    assert torch.equal(got[0, 0], got[0, 1]) and torch.equal(got[0, 0], got[0, 2])


# -- incremental = brute force = slow loop ---------------------------------------------


@pytest.mark.parametrize("kind", ["tiny", "residual", "same", "reflect", "untraceable"])
@pytest.mark.parametrize(("patch", "stride"), [(4, 4), (5, 3), (3, 2), (16, 1)])
def test_incremental_equals_brute_force_equals_slow_loop(
    kind: str, patch: int, stride: int
) -> None:
    module = {
        "tiny": TinyConvNet,
        "residual": ResidualNet,
        "same": SameNet,
        "reflect": ReflectNet,
        "untraceable": Untraceable,
    }[kind]()
    model = _model(_randomise_bn(module))
    x = _x(2, seed=patch)
    fast = occlusion(model, x, 3, patch=patch, stride=stride, fill="zero", batch_size=7)
    brute = occlusion(
        model, x, 3, patch=patch, stride=stride, fill="zero", incremental=False, batch_size=5
    )
    slow = slow_occlusion(
        model, x, _logit(model, 3), model.normalize(torch.zeros(1, 3, 1, 1)), patch, stride
    )
    _close(brute, slow)
    _close(fast, brute)
    assert module_hook_count(module) == 0


# even and odd sizes: TF 'SAME' pads stride-2 convolutions differently
@pytest.mark.parametrize(
    ("size", "patch", "stride", "fill"), [(64, 8, 8, "zero"), (61, 12, 5, "blur")]
)
def test_incremental_equals_brute_force_on_a_random_efficientnet_lite(
    size: int, patch: int, stride: int, fill: str
) -> None:
    model = _tiny_lite(size)
    x = _x(1, size, seed=size)
    fast = occlusion(model, x, 4, patch=patch, stride=stride, fill=fill)
    brute = occlusion(model, x, 4, patch=patch, stride=stride, fill=fill, incremental=False)
    _close(fast, brute)


def test_the_engine_recomputes_only_crops_of_the_early_layers() -> None:
    """The speed comes from here: on EfficientNet-Lite the stem and the early blocks run on
    boxes around each window, and the result for those windows is the full forward's."""
    model = _tiny_lite(64)
    x = _x(1, 64, seed=3)
    engine = occlusion_module._trace(model.module)
    assert engine is not None
    starts = window_starts(64, 8, 8)
    boxes = occlusion_module._window_boxes(starts, starts, (8, 8), x.device)
    fill = occlusion_module._fill_image(model, x, "zero", 8)
    with inference_context(model.module), torch.no_grad():
        clean = engine.run_clean(x)
        out = engine.run_windows(clean, occlusion_module._input_patch(x, fill, boxes, (8, 8)))
        n = boxes.shape[0]
        reference = model.module(
            occlusion_module._occluded(x.expand(n, -1, -1, -1), fill.expand(n, -1, -1, -1), boxes)
        )
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    for name in (
        "stem_conv",
        "blocks_0_depthwise_conv",
        "blocks_1_depthwise_conv",
        "blocks_2_depthwise_conv",
        "add",
    ):
        assert name in engine.patched, name
    assert "classifier" not in engine.patched and "pool" not in engine.patched


def test_untraceable_models_fall_back() -> None:
    assert occlusion_module._trace(Untraceable()) is None
    assert occlusion_module._trace(TinyConvNet()) is not None


@pytest.mark.parametrize("fill", ["zero", "mean", "blur", 0.25])
def test_fill_values_are_pixel_space(fill: str | float) -> None:
    model = _model(TinyConvNet(seed=4))
    x = _x(2, seed=4)
    pixels = model.denormalize(x)
    if fill == "zero":
        fill_x = model.normalize(torch.zeros(1, 3, 1, 1))
    elif fill == "mean":
        fill_x = model.normalize(pixels.mean(dim=(2, 3), keepdim=True))
    elif fill == "blur":
        fill_x = model.normalize(_blur_reference(pixels, 2.0))  # sigma = patch / 2
    else:
        fill_x = model.normalize(torch.full((1, 3, 1, 1), 0.25))
    got = occlusion(model, x, 1, patch=4, stride=2, fill=fill)
    _close(got, slow_occlusion(model, x, _logit(model, 1), fill_x, 4, 2))


def test_probability_neuron_and_callable_targets() -> None:
    model = _model(_randomise_bn(SameNet()))
    x = _x(2, seed=7)
    fill = model.normalize(torch.zeros(1, 3, 1, 1))
    prob = occlusion(model, x, [1, 2], patch=4, stride=3, output="probability")
    expected = [
        slow_occlusion(
            model,
            x[i : i + 1],
            lambda z, n, c=c: float(model.module(z).softmax(1)[0, c]),
            fill,
            4,
            3,
        )
        for i, c in enumerate([1, 2])
    ]
    _close(prob, torch.cat(expected))
    assert prob.abs().max() <= 1

    def second_minus_first(output: torch.Tensor) -> torch.Tensor:
        return output[:, 1] - output[:, 0]

    got = occlusion(model, x, second_minus_first, patch=4, stride=3)
    _close(
        got,
        slow_occlusion(
            model, x, lambda z, n: float(second_minus_first(model.module(z))), fill, 4, 3
        ),
    )

    def unit(z: torch.Tensor, n: int) -> float:
        with capture(model.module, ["maxpool"]) as acts:
            model.module(z)
        return float(acts["maxpool"][0, 2, 1, 1])

    neuron = occlusion(model, x, Neuron("maxpool", 2, 1, 1), patch=4, stride=3)
    _close(neuron, slow_occlusion(model, x, unit, fill, 4, 3))
    assert module_hook_count(model.module) == 0


def test_predicted_class_is_the_default_target_and_explain_wraps_it() -> None:
    model = _model(TinyConvNet(seed=5))
    x = _x(3, seed=5)
    predicted = model.logits(x).argmax(1)
    _close(
        occlusion(model, x, patch=4, stride=4), occlusion(model, x, predicted, patch=4, stride=4)
    )
    result = convlens.explain(model, model.denormalize(x), "occlusion", patch=4, stride=4)
    _close(
        result.tensors["attribution"], occlusion(model, x, predicted, patch=4, stride=4), rtol=1e-3
    )


@pytest.mark.parametrize("incremental", [True, False])
def test_progress_counts_occluded_images(incremental: bool) -> None:
    model = _model(TinyConvNet())
    calls: list[tuple[int, int]] = []
    occlusion(
        model,
        _x(2),
        1,
        patch=4,
        stride=4,
        batch_size=5,
        incremental=incremental,
        progress=lambda d, t: calls.append((d, t)),
    )
    # 16 windows per image, 2 images; the engine batches one image's windows, brute force mixes images
    done = [5, 10, 15, 16, 21, 26, 31, 32] if incremental else [5, 10, 15, 20, 25, 30, 32]
    assert calls == [(d, 32) for d in done]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"patch": 17}, "larger than the image"),
        ({"patch": 4, "stride": 5}, "larger than patch"),
        ({"patch": 0}, "positive int"),
        ({"fill": "grey"}, "fill="),
        ({"output": "loss"}, "output="),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        occlusion(_model(TinyConvNet()), _x(1), 1, **options)  # type: ignore[arg-type]


def test_probability_needs_a_class_target() -> None:
    with pytest.raises(BadInputError, match="class target"):
        occlusion(_model(TinyConvNet()), _x(1), Neuron("relu1", 0), output="probability")


# -- Captum ----------------------------------------------------------------------------


@pytest.mark.captum
@pytest.mark.parametrize(("patch", "stride"), [(4, 2), (5, 3), (3, 3)])
@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_equals_captum_occlusion(patch: int, stride: int, fill: str) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    model = _model(TinyConvNet(seed=6))
    x = _x(2, seed=6)
    pixels = model.denormalize(x)
    baselines = {
        "zero": model.normalize(torch.zeros(1, 3, 1, 1)),
        "mean": model.normalize(pixels.mean(dim=(2, 3), keepdim=True)),
        "blur": model.normalize(_blur_reference(pixels, patch / 2)),
    }[fill]
    target = [1, 3]
    ref = captum_attr.Occlusion(model.module).attribute(
        x,
        sliding_window_shapes=(3, patch, patch),
        strides=(3, stride, stride),
        baselines=baselines,
        target=target,
        perturbations_per_eval=8,
    )
    for incremental in (False, True):
        _close(
            occlusion(
                model, x, target, patch=patch, stride=stride, fill=fill, incremental=incremental
            ),
            ref,
        )


@pytest.mark.captum
def test_probability_equals_captum_on_softmax() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    model = _model(TinyConvNet(seed=8))
    x = _x(2, seed=8)

    def probabilities(z: torch.Tensor) -> torch.Tensor:
        return model.module(z).softmax(dim=1)

    baseline = model.normalize(torch.full((1, 3, 1, 1), 0.5))
    ref = captum_attr.Occlusion(probabilities).attribute(
        x, sliding_window_shapes=(3, 5, 5), strides=(3, 2, 2), baselines=baseline, target=2
    )
    _close(occlusion(model, x, 2, patch=5, stride=2, fill=0.5, output="probability"), ref)


# -- localisation (issue 4, "Proof") ---------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> tuple[convlens.Model, TwoPatchSet]:
    return train_two_patch_cnn(seed=0)


def _hit_rate(maps: torch.Tensor, boxes: torch.Tensor) -> float:
    has_peak = maps.flatten(1).amax(dim=1) > 0
    return (in_box(peaks(maps), boxes) & has_peak).float().mean().item()


# windows a little smaller than the 8x8 texture patches, filled with the image's mean grey
# (a black square is itself a strong feature for this model: fill="zero" finds < 40 %)
OPTIONS = {"patch": 6, "stride": 3, "fill": "mean", "batch_size": 512, "incremental": False}


def test_occlusion_peaks_on_the_deciding_patch(trained: tuple[convlens.Model, TwoPatchSet]) -> None:
    model, (x, y, deciding, distractor) = trained
    x, y, deciding, distractor = x[:200], y[:200], deciding[:200], distractor[:200]  # held out
    maps = occlusion(model, model.normalize(x), y, **OPTIONS)[:, 0]
    assert _hit_rate(maps, deciding) >= 0.95
    assert _hit_rate(maps, distractor) <= 0.02


def test_switching_the_target_moves_the_occlusion_peak(
    trained: tuple[convlens.Model, TwoPatchSet],
) -> None:
    model, test = trained
    both = test.distractor_texture == 1  # class 0 images whose distractor is vertical stripes
    x = model.normalize(test.x[both])
    other = occlusion(model, x, 1, **OPTIONS)[:, 0]
    assert _hit_rate(other, test.distractor_boxes[both]) >= 0.95


def test_random_weights_do_not_localise(trained: tuple[convlens.Model, TwoPatchSet]) -> None:
    _, (x, y, deciding, _) = trained
    model = two_patch_model(0)
    maps = occlusion(model, model.normalize(x[:100]), y[:100], **OPTIONS)[:, 0]
    assert _hit_rate(maps, deciding[:100]) < 0.6  # trained: 1.0; observed ~0.25 here
