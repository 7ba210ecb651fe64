"""Shared invariants over every method in tests/registry.py (DESIGN.md "Testing")."""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.errors import LayerReusedError

from helpers.tiny import ReusedReluNet, assert_unchanged, module_hook_count, snapshot
from registry import NETS, REGISTRY, MethodCase

CASES = [pytest.param(c, id=c.name) for c in REGISTRY]


def _model(module: torch.nn.Module) -> convlens.Model:
    return convlens.wrap(
        module,
        input_size=16,
        mean=0.5,
        std=0.25,
        resize=None,
        labels=[f"c{i}" for i in range(5)],
        name="tiny",
    )


def _x(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


#: a parameter the user froze, per net: the method must leave it frozen and the others not
FROZEN = {"conv": "conv2.weight", "vit": "blocks.0.attn.qkv.weight"}


def _net(case: MethodCase, inplace: bool = False, seed: int = 0) -> torch.nn.Module:
    return NETS[case.net](inplace=inplace, seed=seed)


def _run(case: MethodCase, model: convlens.Model, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return case.run(model, x, case.layer, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", CASES)
def test_no_hooks_left_model_and_input_unchanged(case: MethodCase) -> None:
    module = _net(case, inplace=True)
    module.train()  # the method must switch to eval and switch back
    module.get_parameter(FROZEN[case.net]).requires_grad_(False)
    before = snapshot(module)
    x = _x()
    x_copy = x.clone()
    out = _run(case, _model(module), x)
    assert module_hook_count(module) == 0
    assert_unchanged(module, before)
    assert torch.equal(x, x_copy) and x.grad is None
    # contract: float tensor on x's device, batch first, documented shape
    assert isinstance(out, torch.Tensor) and out.dtype == x.dtype and out.device == x.device
    assert case.shape is None or tuple(out.shape) == case.shape(x)


@pytest.mark.parametrize("case", CASES)
def test_no_hooks_left_after_an_exception(case: MethodCase) -> None:
    module = _net(case)
    module.fail = True
    with pytest.raises(RuntimeError, match="on purpose"):
        _run(case, _model(module), _x())
    assert module_hook_count(module) == 0


@pytest.mark.parametrize("case", CASES)
def test_inplace_equals_out_of_place(case: MethodCase) -> None:
    a = _run(case, _model(_net(case, inplace=True, seed=1)), _x(seed=1))
    b = _run(case, _model(_net(case, inplace=False, seed=1)), _x(seed=1))
    torch.testing.assert_close(a, b, atol=case.atol, rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_batch_equals_items_one_by_one(case: MethodCase) -> None:
    model = _model(_net(case, seed=2))
    x = _x(4, seed=2)
    together = _run(case, model, x)
    alone = torch.cat([_run(case, model, x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=case.atol, rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_seeded_repeatability(case: MethodCase) -> None:
    model = _model(_net(case, seed=3))
    x = _x(seed=3)
    assert torch.equal(_run(case, model, x, seed=7), _run(case, model, x, seed=7))


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0].layer is not None])
def test_reused_named_layer_is_refused(case: MethodCase) -> None:
    module = ReusedReluNet()
    with pytest.raises(LayerReusedError, match="ran 2 times"):
        case.run(_model(module), _x(), "relu", torch.Generator().manual_seed(0))
    assert module_hook_count(module) == 0


#: a thread count no method or test would choose by itself, so a method that sets any count shows
ODD_THREADS = 3


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("case", CASES)
def test_global_state_unchanged(case: MethodCase, grad: bool) -> None:
    # torch's thread count, its global RNG (a method draws only from the generator it is
    # given) and grad mode are the caller's: a method leaves them as it found them
    model, x = _model(_net(case, seed=4)), _x(seed=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(ODD_THREADS)
    try:
        rng = torch.random.get_rng_state()
        with torch.set_grad_enabled(grad):
            out = _run(case, model, x)
            assert torch.is_grad_enabled() is grad
        assert torch.get_num_threads() == ODD_THREADS
        assert torch.equal(torch.random.get_rng_state(), rng), "the global RNG moved"
    finally:
        torch.set_num_threads(threads)
    if not grad:  # a caller inside torch.no_grad() gets the same result, not an autograd error
        torch.testing.assert_close(out, _run(case, model, x), atol=case.atol, rtol=1e-5)
