"""Rows for occlusion: the incremental engine against brute force and Captum's ``Occlusion``.

- **occlusion 16/8** (patch 16, stride 8, black fill: 27 x 27 = 729 windows per image,
  ``batch_size=64``) with ``incremental=True``: the early layers run on crops around each
  window, the tail on the batch (``src/convlens/attribution/occlusion.py``). Its floor is
  convlens's own brute force (``incremental=False``: every occluded image through the whole
  model, in batches of 64), so ``x floor`` is the engine's speed-up over recomputing
  everything. The issue's target: <= 0.5x Captum with maps allclose (rtol 1e-4).
- **Peer**: Captum ``Occlusion.attribute(x, sliding_window_shapes=(3, 16, 16),
  strides=(3, 8, 8), baselines=<black>, target=...)`` swept over
  ``perturbations_per_eval`` (its default of 1 runs 729 single-image forwards and is far
  slower; it is not swept). Both convlens paths keep activations channels-last (faster
  oneDNN convolutions on CPU), so Captum is also timed with a channels-last input, which
  is what a user could do to help it; the fastest setting is reported.

Run at batch 1 (the rows take minutes per round)::

    python benchmarks/run.py --only occlusion --batch-sizes 1
    python benchmarks/rows/occlusion_rows.py --memory       # peak memory of each callable
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __name__ == "__main__":  # run as a script for --memory: make harness and convlens importable
    sys.path[:0] = [
        str(Path(__file__).resolve().parents[1]),
        str(Path(__file__).resolve().parents[2] / "src"),
    ]

from harness import BenchRow, Context, PeerSetting, SetupFn

from convlens.attribution.occlusion import occlusion
from convlens.hooks import eval_mode

__all__ = ["BATCH", "PATCH", "ROWS", "STRIDE"]

PATCH, STRIDE, BATCH = 16, 8, 64


def _occlusion(incremental: bool) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        model, x, classes = ctx.model, ctx.x, ctx.classes
        return lambda: occlusion(
            model,
            x,
            classes,
            patch=PATCH,
            stride=STRIDE,
            fill="zero",
            batch_size=BATCH,
            incremental=incremental,
        )

    return setup


def _captum(per_eval: int, channels_last: bool = False) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        from captum.attr import Occlusion

        module = ctx.model.module
        x = ctx.x.contiguous(memory_format=torch.channels_last) if channels_last else ctx.x
        baseline = ctx.model.normalize(
            torch.zeros(1, x.shape[1], 1, 1, dtype=x.dtype, device=x.device)
        )
        occluder = Occlusion(module)
        c = x.shape[1]

        def run() -> torch.Tensor:
            with eval_mode(module):
                return occluder.attribute(
                    x,
                    sliding_window_shapes=(c, PATCH, PATCH),
                    strides=(c, STRIDE, STRIDE),
                    baselines=baseline,
                    target=ctx.classes,
                    perturbations_per_eval=per_eval,
                )

        return run

    return setup


_SETTINGS = {"patch": PATCH, "stride": STRIDE, "fill": "zero", "batch_size": BATCH}

ROWS = [
    BenchRow(
        f"occlusion {PATCH}/{STRIDE} incremental",
        "occlusion",
        _occlusion(True),
        settings={**_SETTINGS, "incremental": True},
        floor=_occlusion(False),
        floor_name="convlens brute force (incremental=False)",
        peers=[
            *(
                PeerSetting(
                    "captum", {"method": "Occlusion", "perturbations_per_eval": n}, _captum(n)
                )
                for n in (32, 64, 128)
            ),
            PeerSetting(
                "captum",
                {"method": "Occlusion", "perturbations_per_eval": 64, "input": "channels_last"},
                _captum(64, True),
            ),
        ],
    ),
]


# -- peak memory -------------------------------------------------------------------------------

_MEMORY_CHILD = r"""
import resource, sys, torch
sys.path[:0] = {paths!r}
import convlens
from harness import make_contexts
import rows.occlusion_rows as r
torch.set_num_threads(2)
model = convlens.load_model()
ctx = make_contexts(model, [{batch}], 2)[{batch}]
row = r.ROWS[{index}]
fn = ({pick})(ctx)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fn()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024)
"""


def _peak_mb(index: int, pick: str, batch: int) -> str:
    import subprocess

    here = Path(__file__).resolve()
    paths = [str(here.parents[1]), str(here.parents[2] / "src")]
    code = _MEMORY_CHILD.format(paths=paths, batch=batch, index=index, pick=pick)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return "error: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return f"{float(done.stdout.strip()):.0f} MB"


def memory_report(batch: int = 1) -> str:
    """Peak-RSS growth of each row, its floor and each peer setting (one subprocess each)."""
    lines = [f"Peak resident memory growth over set-up, batch {batch} (MB, ru_maxrss):", ""]
    for index, row in enumerate(ROWS):
        lines.append(
            f"- {row.name}: {_peak_mb(index, 'row.setup', batch)}; floor ({row.floor_name}): {_peak_mb(index, 'row.floor', batch)}"
        )
        for i, peer in enumerate(row.peers):
            settings = ", ".join(f"{k}={v}" for k, v in peer.settings.items())
            lines.append(
                f"  - {peer.library} ({settings}): {_peak_mb(index, f'row.peers[{i}].setup', batch)}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    if "--memory" not in sys.argv:
        sys.exit(
            "usage: python benchmarks/rows/occlusion_rows.py --memory [--batch N]  (timings: benchmarks/run.py --only occlusion --batch-sizes 1)"
        )
    print(
        memory_report(int(sys.argv[sys.argv.index("--batch") + 1]) if "--batch" in sys.argv else 1)
    )
