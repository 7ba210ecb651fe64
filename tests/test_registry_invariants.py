"""Shared invariants over every method in tests/registry.py (DESIGN.md "Testing")."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import convlens
from convlens.adversarial.registry import AttackSpec
from convlens.errors import LayerReusedError

from helpers.tiny import ReusedReluNet, assert_unchanged, module_hook_count, snapshot, tiny_model
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


# ---------------------------------------------------------------------------------------------
# The attack registry (convlens.adversarial.registry): every registered attack, same invariants


def _attack_specs() -> list[AttackSpec]:
    from convlens.adversarial.registry import ATTACKS, attack_names

    return [ATTACKS[n] for n in attack_names()]


ATTACK_CASES = [pytest.param(s, id=s.name) for s in _attack_specs()]

#: cheapest settings that still run every attack's loop at least once
ATTACK_STEPS = {"square": 30, "zoo": 2 * 32 + 1, "one-pixel": 2}
ATTACK_OPTIONS: dict = {"one-pixel": {"population": 10}, "cw": {"search_steps": 1}}


def _attack(
    spec: AttackSpec, model: convlens.Model, x: torch.Tensor, seed: int = 0, **extra: Any
) -> convlens.Result:
    from convlens.adversarial import attack

    eps = 8 / 255 if spec.budget != "none" else None
    options = {**ATTACK_OPTIONS.get(spec.name, {}), **extra}
    steps = ATTACK_STEPS.get(spec.name, 3)
    return attack(model, x, spec.name, eps=eps, steps=steps, seed=seed, **options)


@pytest.mark.parametrize("spec", ATTACK_CASES)
def test_attack_is_documented_with_its_paper(spec: AttackSpec) -> None:
    import re

    arxiv = re.search(r"arXiv:\d{4}\.\d{4,5}", spec.paper)
    assert arxiv and re.search(r"\b(19|20)\d\d\b", spec.paper), spec.paper
    doc = spec.fn.__doc__ or ""
    # the docstring cites the same paper (first author and arXiv id) and gives a formula
    assert arxiv.group(0) in doc and spec.paper.split()[0].rstrip(",") in doc
    assert spec.box in ("white", "black") and spec.norms and spec.steps >= 1
    assert spec.budget in ("required", "optional", "none")
    # an attack that iterates reports progress (library functions stay quiet but take one)
    assert spec.steps_param is None or "progress" in spec.parameters


def test_attack_names_and_aliases_are_unique() -> None:
    from convlens.adversarial.registry import get_attack

    names = [s.name for s in _attack_specs()]
    aliases = [a for s in _attack_specs() for a in s.aliases]
    assert len(set(names + aliases)) == len(names) + len(aliases)
    for s in _attack_specs():
        for alias in (s.name.upper(), *s.aliases):
            assert get_attack(alias) is s


@pytest.mark.parametrize("spec", ATTACK_CASES)
def test_attack_options_are_validated(spec: AttackSpec) -> None:
    import inspect as pyinspect

    from convlens.errors import BadInputError

    params = pyinspect.signature(spec.fn).parameters
    for name in spec.options:  # every option is optional: the attack runs without any
        assert params[name].default is not pyinspect.Parameter.empty, name
    model, x = tiny_model(), torch.rand(1, 3, 16, 16)
    with pytest.raises(BadInputError) as info:
        _attack(spec, model, x, not_an_option=1)
    message = str(info.value)
    assert "not_an_option" in message and "\n" not in message
    assert all(o in message for o in spec.options) or "takes no options" in message
    # settings the driver owns are not options either (steps is `steps`, not `max_queries`)
    from convlens.adversarial.registry import check_attack_options

    for owned in {"eps", "targeted", "progress", spec.steps_param} & set(params):
        with pytest.raises(BadInputError, match=str(owned)):
            check_attack_options(spec, {owned: 1})


@pytest.mark.parametrize("spec", ATTACK_CASES)
def test_attack_leaves_model_input_and_global_state_unchanged(spec: AttackSpec) -> None:
    model = tiny_model(seed=5)
    model.module.train()  # the attack runs in eval mode and switches back
    model.module.get_parameter(FROZEN["conv"]).requires_grad_(False)
    before = snapshot(model.module)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    x_copy = x.clone()
    threads = torch.get_num_threads()
    torch.set_num_threads(ODD_THREADS)
    try:
        rng = torch.random.get_rng_state()
        with torch.no_grad():
            result = _attack(spec, model, x)
            assert not torch.is_grad_enabled()
        assert torch.get_num_threads() == ODD_THREADS
        assert torch.equal(torch.random.get_rng_state(), rng), "the global RNG moved"
    finally:
        torch.set_num_threads(threads)
    assert_unchanged(model.module, before)
    assert module_hook_count(model.module) == 0
    assert torch.equal(x, x_copy)
    adv, original = result["adversarial"], result["original"]
    # 8-bit, in range, inside the budget the spec declares
    assert torch.equal(adv, torch.round(adv * 255) / 255) and adv.min() >= 0 and adv.max() <= 1
    change = (adv - original).flatten(1)
    norm = result.provenance["params"]["norm"]
    assert norm == spec.norms[0]
    if spec.budget != "none":
        size = change.abs().amax(dim=1) if norm == "inf" else change.norm(dim=1)
        assert float(size.max()) <= 8 / 255 + 1e-6
    if norm == "0":  # one pixel: every other pixel untouched
        assert int((adv - original).abs().amax(dim=1).flatten(1).ne(0).sum(dim=1).max()) <= 1
    queries = result["queries"]
    assert bool((queries > 0).all()) if spec.black_box else bool((queries == 0).all())
    assert result.provenance["params"]["black_box"] is spec.black_box


@pytest.mark.parametrize("spec", ATTACK_CASES)
def test_attack_is_seeded(spec: AttackSpec) -> None:
    model = tiny_model(seed=6)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    a, b = _attack(spec, model, x, seed=4), _attack(spec, model, x, seed=4)
    assert torch.equal(a["adversarial"], b["adversarial"])
    assert torch.equal(a["queries"], b["queries"])


@pytest.mark.parametrize("spec", ATTACK_CASES)
def test_dispatch_equals_calling_the_attack_function(spec: AttackSpec) -> None:
    # wiring: the registry's driver gives each function exactly the settings it declares,
    # so calling the function by hand with those settings gives the same images
    from convlens.adversarial import Oracle, pixel_forward
    from convlens.adversarial.attack import run_method

    model = tiny_model(seed=7)
    forward = pixel_forward(model)
    x = (
        torch.round(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7)) * 255)
        / 255
    )
    labels = torch.tensor([1, 3])
    eps = 8 / 255 if spec.budget != "none" else None
    steps = ATTACK_STEPS.get(spec.name, 3)
    options = ATTACK_OPTIONS.get(spec.name, {})
    got, queries = run_method(
        forward, x, labels, spec.name, eps=eps, norm=spec.norms[0], steps=steps,
        targeted=False, generator=torch.Generator().manual_seed(1), seed=2, options=options,
    )  # fmt: skip
    by_hand: dict = {"targeted": False, **options}
    if spec.steps_param is not None:
        by_hand[spec.steps_param] = steps
    for key, value in {"eps": eps, "norm": spec.norms[0], "seed": 2}.items():
        if key in spec.parameters:
            by_hand[key] = value
    if "generator" in spec.parameters:
        by_hand["generator"] = torch.Generator().manual_seed(1)
    args = (labels,) if "labels" in spec.parameters else ()
    if spec.black_box:
        want, want_queries = spec.fn(Oracle(forward), x, *args, **by_hand)
        assert torch.equal(queries, want_queries)
    else:
        if "targeted" not in spec.parameters:
            by_hand.pop("targeted")
        want = spec.fn(forward, x, *args, **by_hand)
        assert bool((queries == 0).all())
    assert torch.equal(got, want)


def test_untargeted_only_attacks_refuse_a_target() -> None:
    from convlens.errors import BadInputError

    for spec in _attack_specs():
        if not spec.targeted:
            with pytest.raises(BadInputError, match="untargeted"):
                _attack(spec, tiny_model(), torch.rand(1, 3, 16, 16), target=1)


def test_an_attack_that_does_not_apply_is_refused() -> None:
    from convlens.adversarial import attack, register_attack
    from convlens.adversarial.registry import ATTACKS
    from convlens.errors import BadInputError

    def noop(
        forward: Any, x: torch.Tensor, labels: torch.Tensor, eps: float, *, targeted: bool = False
    ) -> torch.Tensor:
        """Returns the images unchanged (Nobody 2000, arXiv:0000.00000)."""
        return x

    register_attack(
        "noop-for-test",
        box="white",
        norms=("inf",),
        budget="required",
        steps=1,
        steps_param=None,
        steps_means="one step",
        paper="Nobody 2000, arXiv:0000.00000",
        applies=lambda model: model.name != "tiny-conv",
    )(noop)
    try:
        with pytest.raises(BadInputError, match="does not apply to model tiny-conv"):
            attack(tiny_model(), torch.rand(1, 3, 16, 16), "noop-for-test")
        other = convlens.wrap(tiny_model().module, input_size=16, resize=None, name="other")
        assert attack(other, torch.rand(1, 3, 16, 16), "noop-for-test")["adversarial"].shape[0] == 1
    finally:
        del ATTACKS["noop-for-test"]
