"""Acceptance (issue 4): Integrated Gradients' completeness error against steps on the real model.

On EfficientNet-Lite0 and the cat photo (black baseline, the predicted class), the
completeness error ``|sum IG - (F(x) - F(x'))| / |F(x) - F(x')|`` of the uniform midpoint
rule, the trapezoid rule and the adaptive steps at 8 ... 128 gradient evaluations is printed
as a Markdown table (run with ``-s`` to see it; docs/features/integrated-gradients.md shows
a run). The adaptive steps must reach < 1 % with fewer gradient evaluations than the uniform
rules need (the smallest step count from which every larger tabulated count stays < 1 %;
a rule that never gets there within 128 steps needs more than 128).
"""

from __future__ import annotations

import time

import pytest

from convlens.attribution.integrated import integrated_gradients_with_error

pytestmark = pytest.mark.acceptance

STEPS = (8, 16, 32, 64, 128)
N_SCAN = 16  # the default: 17 forward passes without a graph


def _needed(errors: dict[int, float], tolerance: float = 0.01) -> int | None:
    """The smallest step count from which the error stays below ``tolerance``."""
    counts = sorted(errors)
    for i, n in enumerate(counts):
        if all(errors[m] < tolerance for m in counts[i:]):
            return n
    return None


@pytest.mark.timeout(2400)  # ~1 minute on an idle machine; allow for shared, busy ones
def test_error_against_steps_and_adaptive_needs_fewer_gradients(lite0) -> None:  # type: ignore[no-untyped-def]
    x = lite0.prepare(["sample:cat"]).x
    target = int(lite0.logits(x).argmax())
    errors: dict[str, dict[int, float]] = {}
    seconds: dict[str, dict[int, float]] = {}
    plan = {"riemann": STEPS, "trapezoid": STEPS, "adaptive": STEPS}
    for quadrature, counts in plan.items():
        for n in counts:
            started = time.perf_counter()
            _, error = integrated_gradients_with_error(
                lite0, x, target, n_steps=n, quadrature=quadrature, n_scan=N_SCAN
            )
            seconds.setdefault(quadrature, {})[n] = time.perf_counter() - started
            errors.setdefault(quadrature, {})[n] = float(error)
    rows = [
        "| quadrature | "
        + " | ".join(f"{n} steps" for n in plan["riemann"])
        + " | gradients for < 1 % |",
        "|---" * (len(plan["riemann"]) + 2) + "|",
    ]
    for quadrature, counts in plan.items():
        cells = [f"{100 * errors[quadrature][n]:.2f} %" for n in counts]
        needed = _needed(errors[quadrature])
        rows.append(
            f"| {quadrature} | "
            + " | ".join(cells)
            + f" | {needed if needed is not None else f'> {max(counts)}'} |"
        )
    print(
        f"\nIG completeness error, EfficientNet-Lite0, sample:cat, class {target}, black baseline"
    )
    print("(adaptive: plus 17 forward passes without a graph for the scan)\n")
    print("\n".join(rows))
    print(
        "\nseconds per call: "
        + "; ".join(
            f"{q} " + ", ".join(f"{n}: {s:.1f}" for n, s in t.items()) for q, t in seconds.items()
        )
    )
    adaptive = _needed(errors["adaptive"])
    assert adaptive is not None, errors["adaptive"]
    for quadrature in ("riemann", "trapezoid"):
        uniform = _needed(errors[quadrature])
        assert uniform is None or adaptive < uniform, (quadrature, errors)
