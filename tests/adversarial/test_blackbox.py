"""Black-box attacks: the oracle forbids autograd, queries are counted, budgets kept."""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.adversarial import (
    Oracle,
    QueryBudgetExceeded,
    attack,
    one_pixel,
    pixel_forward,
    square,
    zoo,
)


def _forward(model: convlens.Model):  # type: ignore[no-untyped-def]
    return pixel_forward(model)


def test_oracle_returns_no_gradient_path(digits: tuple) -> None:
    model, x, _ = digits
    oracle = Oracle(_forward(model))
    probe = x[:3].clone().requires_grad_(True)
    scores = oracle(probe)
    assert not scores.requires_grad and scores.grad_fn is None
    with pytest.raises(RuntimeError):
        scores.sum().backward()
    with pytest.raises(RuntimeError):
        torch.autograd.grad(scores.sum(), probe)
    assert probe.grad is None
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(3))
    assert oracle.queries == 3
    labels_only = Oracle(_forward(model), output="labels")
    assert labels_only(x[:3]).shape == (3,) and labels_only.queries == 3


def test_oracle_enforces_its_query_budget(digits: tuple) -> None:
    model, x, _ = digits
    oracle = Oracle(_forward(model), max_queries=5)
    oracle(x[:4])
    with pytest.raises(QueryBudgetExceeded):
        oracle(x[:2])


@pytest.mark.parametrize("method", ["square", "zoo", "one-pixel"])
def test_black_box_attacks_never_take_a_gradient(
    digits: tuple, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x, y = digits
    calls: list[str] = []

    def forbidden(name: str):  # type: ignore[no-untyped-def]
        def fail(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise AssertionError(f"{name} called during a black-box attack")

        return fail

    monkeypatch.setattr(torch.autograd, "grad", forbidden("torch.autograd.grad"))
    monkeypatch.setattr(torch.autograd, "backward", forbidden("torch.autograd.backward"))
    monkeypatch.setattr(torch.Tensor, "backward", forbidden("Tensor.backward"))
    hooks = [
        m.register_full_backward_hook(lambda *a: calls.append("backward hook"))
        for m in model.module.modules()
        if not list(m.children())
    ]
    grad_enabled: list[bool] = []
    handle = model.module.register_forward_hook(
        lambda m, i, o: grad_enabled.append(torch.is_grad_enabled())
    )
    try:
        steps = {"square": 300, "zoo": 1000, "one-pixel": 3}[method]
        result = attack(
            model, x[:4], method, eps=0.3 if method == "square" else None, steps=steps, labels=y[:4]
        )
    finally:
        for h in hooks:
            h.remove()
        handle.remove()
    assert calls == []
    assert grad_enabled and not any(grad_enabled), "every forward ran without autograd"
    assert int(result["queries"].min()) >= 1


def test_square_counts_queries_keeps_the_budget_and_succeeds(digits: tuple) -> None:
    model, x, y = digits
    oracle = Oracle(_forward(model))
    adv, queries = square(
        oracle,
        x[:20],
        y[:20],
        0.3,
        max_queries=500,
        p_init=0.8,
        generator=torch.Generator().manual_seed(0),
    )
    assert int(queries.sum()) == oracle.queries
    assert int(queries.max()) <= 500
    delta = adv - x[:20]
    assert (
        float(delta.abs().max()) <= 0.3 + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    )
    torch.testing.assert_close(adv * 255, torch.round(adv * 255), rtol=0, atol=1e-4)
    with torch.no_grad():
        fooled = model.module(model.normalize(adv)).argmax(dim=1) != y[:20]
    assert int(fooled.sum()) >= 16
    # succeeded images stop at success: fewer queries than the cap
    assert int(queries[fooled].max()) < 500
    again, _ = square(
        Oracle(_forward(model)),
        x[:20],
        y[:20],
        0.3,
        max_queries=500,
        p_init=0.8,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(adv, again)


def test_zoo_counts_queries_and_fools_digits(digits: tuple) -> None:
    model, x, y = digits
    oracle = Oracle(_forward(model))
    adv, queries = zoo(
        oracle, x[:6], y[:6], max_queries=8000, generator=torch.Generator().manual_seed(0)
    )
    assert int(queries.sum()) == oracle.queries and int(queries.max()) <= 8000
    with torch.no_grad():
        fooled = model.module(model.normalize(adv)).argmax(dim=1) != y[:6]
    assert int(fooled.sum()) >= 4
    # with a budget the result stays inside it
    adv_b, _ = zoo(
        Oracle(_forward(model)),
        x[:3],
        y[:3],
        eps=0.2,
        max_queries=1000,
        generator=torch.Generator().manual_seed(0),
    )
    assert float((adv_b - x[:3]).abs().max()) <= 0.2 + 1e-6


def test_one_pixel_changes_at_most_one_pixel_and_counts_queries(digits: tuple) -> None:
    model, x, y = digits
    oracle = Oracle(_forward(model))
    adv, queries = one_pixel(oracle, x[:5], y[:5], population=30, generations=5, seed=0)
    changed = (adv != x[:5]).any(dim=1).flatten(1).sum(dim=1)
    assert int(changed.max()) <= 1
    assert int(queries.sum()) == oracle.queries
    # DE evaluates its initial population: at least ~population queries per image
    assert int(queries.min()) >= 30 - 3
