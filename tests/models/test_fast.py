"""Fast mode (convlens.models.fast): the same maps as eager mode, and silent fallbacks.

The reference is eager mode itself: the same model loaded without ``fast``, the same
seeds. Fast mode changes only float rounding (channels-last kernels, folded batch norms),
so every registered attribution method must agree within a stated tolerance; folding is
also checked against the batch-norm formula on a net with known statistics.
"""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convlens
from convlens.attribution import applicable_methods
from convlens.hooks import capture, eval_mode
from convlens.models import fast as fast_mode

from helpers.tiny import TinyConvNet
from registry import ATTRIBUTION_OPTIONS

#: fast vs eager: max |fast - eager| <= RTOL * max |eager| (float32 rounding is ~1e-6;
#: sign-dependent rules and regressions over coalitions can amplify it a little)
RTOL = 1e-4


def _tiny(fast: bool, module: nn.Module | None = None) -> convlens.Model:
    model = convlens.wrap(
        module if module is not None else TinyConvNet(seed=3),
        input_size=16,
        mean=0.5,
        std=0.25,
        resize=None,
        labels=[f"c{i}" for i in range(5)],
        name="tiny",
    )
    return model.use_fast() if fast else model


def _relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(autouse=True)
def _layout_on_small_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test nets are 8x8 and 16x16, below the size where fast mode turns channels-last
    on: force it, so the tests exercise the layout (test_small_inputs_keep_their_layout
    checks the default)."""
    monkeypatch.setattr(fast_mode, "CHANNELS_LAST_MIN_SIDE", 1)


@pytest.fixture(scope="module")
def digits_pair() -> tuple[convlens.Model, convlens.Model]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_mode, "CHANNELS_LAST_MIN_SIDE", 1)
        return convlens.load_model("digits_cnn"), convlens.load_model("digits_cnn", fast=True)


def test_small_inputs_keep_their_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_mode, "CHANNELS_LAST_MIN_SIDE", 32)
    fast = _tiny(True)  # 16x16 inputs
    record = fast.fast
    assert record is not None and record["channels_last"] is False
    assert record["fallbacks"] == [
        "channels_last: inputs of 16x16 are below 32x32, where it is slower"
    ]
    assert record["fold_batchnorm"] == 1  # folding does not depend on the size
    assert fast.module.conv2.weight.is_contiguous()


def test_every_method_matches_eager_on_digits(digits_pair) -> None:  # type: ignore[no-untyped-def]
    eager, fast = digits_pair
    assert fast.fast is not None and fast.fast["channels_last"]
    # the fast path really runs: a multi-channel conv weight is stored channels-last
    conv = next(m for m in fast.module.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    pixels = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    methods = applicable_methods(eager)
    assert len(methods) > 15
    for name in methods:
        options = ATTRIBUTION_OPTIONS.get(name, {})
        want = convlens.explain(eager, pixels, name, target=3, **options)
        got = convlens.explain(fast, pixels, name, target=3, **options)
        gap = _relative_gap(got["attribution"], want["attribution"])
        assert gap <= RTOL, f"{name}: fast differs from eager by {gap:.2e}"
        assert got.provenance["fast"]["channels_last"] is True
        assert "fast" not in want.provenance


def test_folding_matches_the_batch_norm_formula() -> None:
    eager, fast = _tiny(False), _tiny(True)
    assert fast.fast is not None and fast.fast["fold_batchnorm"] == 1
    net: TinyConvNet = eager.module  # type: ignore[assignment]
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        copy = fast.forward_module()
        assert copy is not fast.module and isinstance(copy.bn2, nn.Identity)
        # the folded conv2 = the batch-norm formula applied to eager conv2's output
        h = net.relu1(net.conv1(x))
        bn = net.bn2
        expected = (net.conv2(h) - bn.running_mean[:, None, None]) / torch.sqrt(
            bn.running_var[:, None, None] + bn.eps
        ) * bn.weight[:, None, None] + bn.bias[:, None, None]
        assert torch.allclose(copy.conv2(h), expected, atol=1e-5, rtol=1e-5)
        assert torch.allclose(fast.logits(x), eager.logits(x), atol=1e-5, rtol=1e-5)


def test_forward_module_keeps_layer_meanings() -> None:
    fast = _tiny(True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # the batch norm's name still reads the batch norm's output on the folded copy
        module = fast.forward_module(["bn2"])
        assert module is not fast.module
        with capture(module, ["bn2"]) as got:
            module(x)
        with eval_mode(fast.module), capture(fast.module, ["bn2"]) as want:
            fast.module(x)
        assert torch.allclose(got["bn2"], want["bn2"], atol=1e-5, rtol=1e-5)
        # a folded convolution's own output differs: the original module serves it
        assert fast.forward_module(["conv2"]) is fast.module
        assert fast.forward_module([fast.module.conv2]) is fast.module
    # with gradients on, always the original (hooks and backward rules act on it)
    assert fast.forward_module() is fast.module


def test_folded_copy_follows_weight_changes() -> None:
    eager, fast = _tiny(False), _tiny(True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for model in (eager, fast):  # an in-place update, as an optimiser step makes
            model.module.conv2.weight.mul_(-2.0)
            model.module.bn2.running_mean.add_(0.3)
        assert torch.allclose(fast.logits(x), eager.logits(x), atol=1e-5, rtol=1e-5)


class _NoBiasConv(nn.Conv2d):
    """A convolution that ignores its bias: folding a batch norm into it would be wrong."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, None, self.stride, self.padding)


def test_fold_fallback_when_the_folded_copy_differs() -> None:
    net = TinyConvNet(seed=3)
    old = net.conv2
    net.conv2 = _NoBiasConv(6, 8, 3, stride=2, padding=1, bias=False)
    net.conv2.weight.data.copy_(old.weight.data)
    eager, fast = _tiny(False, net), _tiny(True, __import__("copy").deepcopy(net))
    record = fast.fast
    assert record is not None and record["fold_batchnorm"] == 0
    assert any(
        note.startswith("fold_batchnorm: the folded copy differs") for note in record["fallbacks"]
    )
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert fast.forward_module() is fast.module
        assert torch.allclose(fast.logits(x), eager.logits(x), atol=1e-5, rtol=1e-5)


def test_channels_last_fallback_when_unsupported() -> None:
    module = TinyConvNet(seed=3)

    def refuse(*args: object, **kwargs: object) -> nn.Module:
        raise RuntimeError("memory format not supported here")

    module.to = refuse  # type: ignore[method-assign]  # force "unsupported"
    fast, eager = _tiny(True, module), _tiny(False, TinyConvNet(seed=3))
    record = fast.fast
    assert record is not None and record["channels_last"] is False
    assert "channels_last: RuntimeError: memory format not supported here" in record["fallbacks"]
    assert fast.module.conv2.weight.is_contiguous()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = convlens.explain(fast, x, "saliency", target=1)
    want = convlens.explain(eager, x, "saliency", target=1)
    assert _relative_gap(result["attribution"], want["attribution"]) <= RTOL
    assert result.provenance["fast"]["channels_last"] is False


def test_no_convolutions_falls_back_silently() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    model = convlens.wrap(mlp, input_size=4, mean=0.5, std=0.25, resize=None)
    model.use_fast()
    record = model.fast
    assert record is not None and record["channels_last"] is False
    assert record["fold_batchnorm"] == 0 and len(record["fallbacks"]) == 2
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(model.logits(x), mlp(x))


def test_cli_fast_turns_fast_mode_on() -> None:
    from convlens.cli.context import Context
    from convlens.cli.main import build_parser

    parser = build_parser()
    on = Context(parser.parse_args(["predict", "x.png", "--model", "digits_cnn", "--fast"]))
    off = Context(parser.parse_args(["predict", "x.png", "--model", "digits_cnn"]))
    assert on.model().fast is not None and on.model().fast["channels_last"] is True
    assert off.model().fast is None
    assert on.model().provenance()["fast"] == on.model().fast


def test_feature_codes_match_eager() -> None:
    from convlens.represent.features import _Codes

    eager, fast = _tiny(False), _tiny(True)
    pixels = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for layer in ("bn2", "relu2", "conv2"):  # conv2 is folded: served by the original module
        want = _Codes(eager, layer, pooled=False)(pixels, [])
        got = _Codes(fast, layer, pooled=False)(pixels, [])
        assert torch.allclose(got["code"], want["code"], atol=1e-5, rtol=1e-5), layer
        assert torch.equal(got["prediction"], want["prediction"])


def test_input_gradients_run_on_the_folded_copy() -> None:
    """Saliency, gradient x input, IG, SmoothGrad and GradientSHAP hook nothing: under fast
    mode they differentiate through the folded copy, and must equal eager mode; a method
    that hooks the original (guided backprop, Grad-CAM) must keep the original."""
    eager, fast = _tiny(False), _tiny(True)
    state = fast._fast
    assert state is not None and state.folded is not None and fast.fast is not None
    assert fast.fast["fold_batchnorm"] == 1
    calls = {"folded": 0}

    def count(*_: object) -> None:
        calls["folded"] += 1

    # a hook on the copy (not on the original) only counts the calls that reach it
    state.folded.register_forward_hook(count)
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for name in (
        "saliency",
        "gradient_x_input",
        "integrated_gradients",
        "smoothgrad",
        "gradient_shap",
    ):
        options = ATTRIBUTION_OPTIONS.get(name, {})
        before = calls["folded"]
        want = convlens.explain(eager, pixels, name, target=3, **options)
        got = convlens.explain(fast, pixels, name, target=3, **options)
        assert calls["folded"] > before, f"{name} did not use the folded copy"
        gap = _relative_gap(got["attribution"], want["attribution"])
        assert gap <= RTOL, f"{name}: fast differs from eager by {gap:.2e}"
        assert "input gradients" in got.provenance["fast"]["fold_batchnorm_scope"]
    # neuron targets read a layer: a batch norm's name works on the copy, a folded conv not
    assert fast.score_module(["bn2"]) is state.folded
    assert fast.score_module(["conv2"]) is fast.module
    for name in ("guided_backprop", "gradcam"):
        options = ATTRIBUTION_OPTIONS.get(name, {})
        before = calls["folded"]
        want = convlens.explain(eager, pixels, name, target=3, **options)
        got = convlens.explain(fast, pixels, name, target=3, **options)
        assert calls["folded"] == before, f"{name} ran on the folded copy despite its hooks"
        assert _relative_gap(got["attribution"], want["attribution"]) <= RTOL


def test_hooks_on_the_original_keep_the_original() -> None:
    fast = _tiny(True)
    assert fast.score_module() is not fast.module  # nothing hooked: the folded copy
    with capture(fast.module, ["relu1"]):
        assert fast.score_module() is fast.module
    handle = fast.module.conv1.register_full_backward_hook(lambda *_: None)
    assert fast.score_module() is fast.module
    handle.remove()
    assert fast.score_module() is not fast.module
    eager = _tiny(False)
    assert eager.score_module() is eager.module  # fast mode off


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="keep_freed_memory is glibc's (mallopt)",
)
def test_fast_mode_keeps_freed_memory_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    from convlens import memory

    monkeypatch.setenv("CONVLENS_MALLOC", "default")
    record = _tiny(True).fast
    assert record is not None and record["kept_freed_memory"] is False
    assert any(note.startswith("kept_freed_memory:") for note in record["fallbacks"])
    monkeypatch.delenv("CONVLENS_MALLOC")
    record = _tiny(True).fast
    assert record is not None and record["kept_freed_memory"] is True
    assert memory.kept_freed_memory()
