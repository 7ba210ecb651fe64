"""Rows for Integrated Gradients and SmoothGrad: steps x floor, Captum, adaptive speed-up, memory.

- **IG-50** (midpoint rule, black baseline, ``chunk=16``) against its own floor: the same
  ``50 x N`` path points through ``autograd.grad`` in batches of 16, nothing else (the
  issue's target is <= 1.05x). Peer: Captum ``IntegratedGradients`` with
  ``method="riemann_middle"`` (the midpoint rule too), swept over ``internal_batch_size``.
  Its ``peer diff`` is ~5e-3, not ~0: Captum's midpoints come from a float32 ``linspace``
  and differ from the exact ``(k + 1/2) / n`` by up to 4e-8, enough to flip a few ReLU6
  units along the path of this piecewise-linear network; given Captum's float32 alphas,
  the two agree to 4e-7. Captum's default (``None``) puts all ``50 x N`` points in one
  batch: at batch 1 that is the ``50`` setting (about 4 GB); at batch 8 it would need
  ~32 GB, so it is not swept.
- **SmoothGrad-25** (saliency, ``sigma=0.15`` of the image range, ``chunk=8``) against 25
  noisy copies through ``autograd.grad`` in batches of 8. Peer: Captum
  ``NoiseTunnel(Saliency)`` swept over ``nt_samples_batch_size``. So that both sides average
  the *same* noisy inputs (and ``peer diff`` checks the algorithm, not two random draws),
  Captum's ``torch.normal`` is handed convlens's noise during its call; that spares Captum
  the draw, which convlens pays inside its timing.
- **Adaptive IG at equal completeness error**: adaptive steps against uniform midpoint
  steps that reach the same completeness error on the same image (the row's floor). The step
  counts come from ``tests/acceptance/test_attribution_integrated_gradients.py`` on the cat photo (batch 1): see
  :data:`ADAPTIVE_STEPS` and :data:`UNIFORM_STEPS_SAME_ERROR`. ``x floor`` below 1 is the
  speed-up (its inverse); the scan's forward passes are inside the adaptive timing.

Peak memory (the harness times only): ``python benchmarks/rows/ig_smooth_rows.py --memory``
runs each callable once in a fresh subprocess and prints the growth of the process's peak
resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over the set-up state.
``tracemalloc`` does not see torch's CPU allocations, and the RSS high-water mark does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

if __name__ == "__main__":  # run as a script for --memory: make harness and convlens importable
    sys.path[:0] = [
        str(Path(__file__).resolve().parents[1]),
        str(Path(__file__).resolve().parents[2] / "src"),
    ]

from harness import BenchRow, Context, PeerSetting, SetupFn

from convlens.attribution.integrated import baseline_input, integrated_gradients
from convlens.attribution.smooth import smoothgrad
from convlens.hooks import eval_mode, frozen

__all__ = [
    "ADAPTIVE_STEPS",
    "IG_CHUNK",
    "IG_STEPS",
    "ROWS",
    "SMOOTH_CHUNK",
    "SMOOTH_SAMPLES",
    "UNIFORM_STEPS_SAME_ERROR",
]

IG_STEPS, IG_CHUNK = 50, 16
SMOOTH_SAMPLES, SMOOTH_CHUNK, SIGMA = 25, 8, 0.15
#: adaptive steps (default scan) on the cat: 0.31 % completeness error ...
ADAPTIVE_STEPS = 64
#: ... and uniform midpoint steps with the same error on the same image: 0.32 % (while 512
#: steps give 2.03 % and 1024 give 0.70 %: the uniform rule's error is erratic)
UNIFORM_STEPS_SAME_ERROR = 256


def _repeated_gradient_floor(
    rows_per_image: int, chunk: int, make_rows: Callable[[Context], torch.Tensor]
) -> SetupFn:
    """``rows_per_image x N`` inputs through ``autograd.grad`` in batches of ``chunk``."""

    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        module = ctx.model.module
        rows = make_rows(ctx)
        classes = ctx.classes.repeat_interleave(rows_per_image)

        def run() -> torch.Tensor:
            total = torch.zeros_like(ctx.x[:1])
            with frozen(module), eval_mode(module):
                for z, c in zip(rows.split(chunk), classes.split(chunk)):
                    z = z.detach().requires_grad_()
                    (grad,) = torch.autograd.grad(module(z).gather(1, c[:, None]).sum(), z)
                    total += grad.sum(0, keepdim=True)
            return total

        return run

    return setup


def _path_rows(n_steps: int) -> Callable[[Context], torch.Tensor]:
    def make(ctx: Context) -> torch.Tensor:
        base = baseline_input(ctx.model, ctx.x, "black")
        alphas = (torch.arange(n_steps, dtype=ctx.x.dtype) + 0.5) / n_steps
        return (base[:, None] + alphas.view(1, -1, 1, 1, 1) * (ctx.x - base)[:, None]).flatten(0, 1)

    return make


def _noisy_rows(ctx: Context) -> torch.Tensor:
    noise = torch.randn(
        ctx.x.shape[0] * SMOOTH_SAMPLES,
        *ctx.x.shape[1:],
        generator=torch.Generator().manual_seed(0),
    )
    return ctx.x.repeat_interleave(SMOOTH_SAMPLES, dim=0) + 0.3 * noise


# -- convlens ------------------------------------------------------------------------------


def _ig(n_steps: int, quadrature: str) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        model, x, classes = ctx.model, ctx.x, ctx.classes
        return lambda: integrated_gradients(
            model, x, classes, n_steps=n_steps, quadrature=quadrature, chunk=IG_CHUNK
        )

    return setup


def _smoothgrad(ctx: Context) -> Callable[[], torch.Tensor]:
    model, x, classes = ctx.model, ctx.x, ctx.classes
    return lambda: smoothgrad(
        model,
        x,
        classes,
        n_samples=SMOOTH_SAMPLES,
        sigma=SIGMA,
        chunk=SMOOTH_CHUNK,
        generator=torch.Generator().manual_seed(0),
    )


# -- Captum ---------------------------------------------------------------------------------


def _captum_ig(internal_batch_size: int) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        from captum.attr import IntegratedGradients

        module = ctx.model.module
        ig = IntegratedGradients(module)
        x = ctx.x.detach().clone().requires_grad_()
        base = baseline_input(ctx.model, ctx.x, "black")

        def run() -> torch.Tensor:
            with frozen(module), eval_mode(module):
                return ig.attribute(
                    x,
                    baselines=base,
                    target=ctx.classes,
                    n_steps=IG_STEPS,
                    method="riemann_middle",
                    internal_batch_size=internal_batch_size,
                )

        return run

    return setup


@contextmanager
def _given_noise(parts: Iterator[torch.Tensor]) -> Iterator[None]:
    """Captum's NoiseTunnel draws ``torch.normal(0, stdev)`` per batch of samples: hand it
    the next of ``parts`` instead."""
    original = torch.normal
    torch.normal = lambda *args, **kwargs: next(parts)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.normal = original


def _captum_noise_tunnel(batch: int | None) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        from captum.attr import NoiseTunnel, Saliency

        module = ctx.model.module
        tunnel = NoiseTunnel(Saliency(module))
        x = ctx.x.detach().clone().requires_grad_()
        # convlens's noise for generator seed 0: (N, samples, C, H, W)
        g = torch.Generator().manual_seed(0)
        z = torch.stack([torch.randn(x.shape[1:], generator=g) for _ in range(SMOOTH_SAMPLES)])
        scale = SIGMA * (ctx.x.flatten(1).amax(1) - ctx.x.flatten(1).amin(1))
        noise = scale.view(-1, 1, 1, 1, 1) * z
        # Captum takes samples in batches of `batch` (the remainder last), item-major in each
        step = batch or SMOOTH_SAMPLES
        parts = [noise[:, k : k + step].flatten(0, 1) for k in range(0, SMOOTH_SAMPLES, step)]

        def run() -> torch.Tensor:
            with frozen(module), eval_mode(module), _given_noise(iter(parts)):
                return tunnel.attribute(
                    x,
                    nt_type="smoothgrad",
                    nt_samples=SMOOTH_SAMPLES,
                    nt_samples_batch_size=batch,
                    stdevs=1.0,
                    target=ctx.classes,
                    abs=False,
                )

        return run

    return setup


ROWS = [
    BenchRow(
        f"integrated_gradients n_steps={IG_STEPS}",
        "ig_smooth",
        _ig(IG_STEPS, "riemann"),
        settings={"quadrature": "riemann (midpoint)", "baseline": "black", "chunk": IG_CHUNK},
        peers=[
            PeerSetting(
                "captum", {"method": "riemann_middle", "internal_batch_size": b}, _captum_ig(b)
            )
            for b in (8, 16, 25, 50)
        ],
        floor=_repeated_gradient_floor(IG_STEPS, IG_CHUNK, _path_rows(IG_STEPS)),
        floor_name=f"{IG_STEPS} x autograd.grad, chunk {IG_CHUNK}",
    ),
    BenchRow(
        f"smoothgrad n_samples={SMOOTH_SAMPLES}",
        "ig_smooth",
        _smoothgrad,
        settings={"base": "saliency", "sigma": SIGMA, "chunk": SMOOTH_CHUNK},
        peers=[
            PeerSetting(
                "captum",
                {"method": "NoiseTunnel(Saliency)", "nt_samples_batch_size": b},
                _captum_noise_tunnel(b),
            )
            for b in (None, 5, 8)
        ],
        floor=_repeated_gradient_floor(SMOOTH_SAMPLES, SMOOTH_CHUNK, _noisy_rows),
        floor_name=f"{SMOOTH_SAMPLES} x autograd.grad, chunk {SMOOTH_CHUNK}",
    ),
    BenchRow(
        f"integrated_gradients adaptive n_steps={ADAPTIVE_STEPS} (same error as uniform {UNIFORM_STEPS_SAME_ERROR})",
        "ig_smooth",
        _ig(ADAPTIVE_STEPS, "adaptive"),
        settings={"quadrature": "adaptive", "n_scan": 16, "chunk": IG_CHUNK},
        floor=_ig(UNIFORM_STEPS_SAME_ERROR, "riemann"),
        floor_name=f"IG riemann n_steps={UNIFORM_STEPS_SAME_ERROR}",
    ),
]


# -- peak memory -------------------------------------------------------------------------------

_MEMORY_CHILD = r"""
import resource, sys, torch
sys.path[:0] = {paths!r}
import convlens
from harness import make_contexts
import rows.ig_smooth_rows as r
torch.set_num_threads(2)
model = convlens.load_model()
ctx = make_contexts(model, [{batch}], 2)[{batch}]
row = next(row for row in r.ROWS if row.name == {row!r})
setup = {pick}
fn = setup(ctx)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fn()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024)
"""


def _peak_mb(row: BenchRow, pick: str, batch: int) -> str:
    import subprocess

    here = Path(__file__).resolve()
    paths = [str(here.parents[1]), str(here.parents[2] / "src")]
    code = _MEMORY_CHILD.format(paths=paths, batch=batch, row=row.name, pick=pick)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return "error: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return f"{float(done.stdout.strip()):.0f} MB"


def memory_report(batch: int = 1) -> str:
    """Peak-RSS growth of each row, its floor and each peer setting (one subprocess each)."""
    lines = [f"Peak resident memory growth over set-up, batch {batch} (MB, ru_maxrss):", ""]
    for row in ROWS:
        lines.append(
            f"- {row.name}: {_peak_mb(row, 'row.setup', batch)}; floor ({row.floor_name}): {_peak_mb(row, 'row.floor', batch)}"
        )
        for i, peer in enumerate(row.peers):
            settings = ", ".join(f"{k}={v}" for k, v in peer.settings.items())
            lines.append(
                f"  - {peer.library} ({settings}): {_peak_mb(row, f'row.peers[{i}].setup', batch)}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    if "--memory" not in sys.argv:
        sys.exit(
            "usage: python benchmarks/rows/ig_smooth_rows.py --memory [--batch N]  (timings: benchmarks/run.py --only ig_smooth)"
        )
    print(
        memory_report(int(sys.argv[sys.argv.index("--batch") + 1]) if "--batch" in sys.argv else 1)
    )
