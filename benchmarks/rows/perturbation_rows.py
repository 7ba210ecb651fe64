"""Rows for LIME and KernelSHAP on superpixels against Captum's ``Lime`` and ``KernelShap``.

Both sides get the same work: the same SLIC superpixels (computed once in the set-up,
untimed, ``n_segments=50``), the same ``N_SAMPLES`` coalitions (Captum is handed
convlens's draws through its ``perturb_func`` / a ``KernelShap`` subclass, so
``peer diff`` checks that the maps agree), black fill, one image.

- **lime**: convlens ``lime(n_samples=64, batch_size=16)`` (LIME kernel, ridge alpha 1)
  against ``captum.attr.Lime`` with the same similarity function, ``SkLearnRidge(1.0)``,
  ``perturbations_per_eval`` 16 or 64, and 16 with a channels-last input (what a user
  could do to help it: on CPU small batches and channels-last are both faster).
- **kernel_shap**: convlens ``kernel_shap(n_samples=64)`` (the two ends as an exact
  constraint) against ``captum.attr.KernelShap`` (``n_samples + 2``: Captum spends two of
  them on the ends, weighted 10^6).
- **floor**: the forward passes themselves: the ``N_SAMPLES (+2)`` coalition images built
  and run through the module in batches of 16, channels-last, without a graph.

- **superpixel_ablation on a grid**: ``superpixel_ablation`` with a mask of 16 x 16 px
  windows (196 on a 224 px image), mean fill, which runs as incremental occlusion; its
  floor is the same call with ``incremental=False`` (197 whole forwards in batches of
  16), so ``x floor`` is the incremental path's share of the plain path's time; the peer
  is ``captum.attr.FeatureAblation`` with the same mask and baseline.

The issue's target is ``x peer <= 1.0``. Run::

    python benchmarks/run.py --only perturbation --batch-sizes 1
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from harness import BenchRow, Context, PeerSetting, SetupFn

from convlens.attribution.perturbation import (
    kernel_shap,
    lime,
    lime_coalitions,
    shapley_coalitions,
    superpixel_ablation,
    superpixels,
)
from convlens.hooks import eval_mode

__all__ = ["BATCH", "N_SAMPLES", "ROWS"]

N_SAMPLES, BATCH, SEED, WIDTH, WINDOW = 64, 16, 0, 0.25, 16


def _inputs(ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = ctx.x[:1]
    labels = superpixels(ctx.model, x, 50)
    return x, labels, ctx.model.normalize(torch.zeros_like(x))


def _draws(method: str, m: int) -> torch.Tensor:
    """The coalitions convlens draws for one image at ``SEED`` (see ``_image_seed``)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(SEED)).item())
    g = torch.Generator().manual_seed(seed)
    return (
        lime_coalitions(m, N_SAMPLES, g)
        if method == "lime"
        else shapley_coalitions(m, N_SAMPLES, g)[0]
    )


def _convlens(method: str) -> SetupFn:
    fn = lime if method == "lime" else kernel_shap

    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        x, labels, _ = _inputs(ctx)
        cls = int(ctx.classes[0])
        return lambda: fn(
            ctx.model,
            x,
            cls,
            segments=labels,
            fill="zero",
            n_samples=N_SAMPLES,
            batch_size=BATCH,
            generator=torch.Generator().manual_seed(SEED),
        )

    return setup


def _forwards(method: str) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        x, labels, black = _inputs(ctx)
        m = int(labels.max()) + 1
        z = _draws(method, m).bool()
        if method != "lime":
            z = torch.cat(
                [torch.ones(1, m, dtype=torch.bool), torch.zeros(1, m, dtype=torch.bool), z]
            )
        module = ctx.model.module

        def run() -> torch.Tensor:
            out = []
            with eval_mode(module), torch.no_grad():
                for start in range(0, z.shape[0], BATCH):
                    mask = z[start : start + BATCH][:, labels[0]].unsqueeze(1)
                    images = torch.where(mask, x, black).contiguous(
                        memory_format=torch.channels_last
                    )
                    out.append(module(images)[:, int(ctx.classes[0])])
            return torch.cat(out)

        return run

    return setup


def _captum(method: str, per_eval: int, channels_last: bool = False) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import KernelShap, Lime

        x, labels, black = _inputs(ctx)
        if channels_last:  # what a user could do to help Captum
            x, black = (
                x.contiguous(memory_format=torch.channels_last),
                black.contiguous(memory_format=torch.channels_last),
            )
        m = int(labels.max()) + 1
        z = _draws(method, m).long()
        module, cls, mask = ctx.model.module, int(ctx.classes[0]), labels[:, None]
        if method == "lime":

            def similarity(original_inp, perturbed_inp, sample, **kwargs):  # type: ignore[no-untyped-def]
                d = 1 - torch.nn.functional.cosine_similarity(
                    sample.double(), torch.ones_like(sample, dtype=torch.float64), eps=1e-12
                )
                return torch.exp(-(d**2) / WIDTH**2)

            def run() -> torch.Tensor:
                draws = iter(z)
                explainer = Lime(
                    module,
                    interpretable_model=SkLearnRidge(alpha=1.0),
                    similarity_func=similarity,
                    perturb_func=lambda *a, **k: next(draws)[None],
                )
                with eval_mode(module):
                    return explainer.attribute(
                        x,
                        baselines=black,
                        target=cls,
                        feature_mask=mask,
                        n_samples=N_SAMPLES,
                        perturbations_per_eval=per_eval,
                    )

            return run

        class SameDraws(KernelShap):
            def kernel_shap_perturb_generator(self, original_inp, **kwargs):  # type: ignore[no-untyped-def]
                yield torch.ones(1, m, dtype=torch.long)
                yield torch.zeros(1, m, dtype=torch.long)
                yield from (row[None] for row in z)

        def run_shap() -> torch.Tensor:
            with eval_mode(module):
                return SameDraws(module).attribute(
                    x,
                    baselines=black,
                    target=cls,
                    feature_mask=mask,
                    n_samples=N_SAMPLES + 2,
                    perturbations_per_eval=per_eval,
                )

        return run_shap

    return setup


def _grid_inputs(ctx: Context) -> tuple[torch.Tensor, torch.Tensor, int]:
    x = ctx.x[:1]
    h, w = x.shape[-2:]
    cols = -(-w // WINDOW)
    labels = (torch.arange(h)[:, None] // WINDOW) * cols + torch.arange(w)[None, :] // WINDOW
    return x, labels, int(ctx.classes[0])


def _grid_ablation(incremental: bool) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        x, labels, cls = _grid_inputs(ctx)
        return lambda: superpixel_ablation(
            ctx.model,
            x,
            cls,
            segments=labels,
            fill="mean",
            batch_size=BATCH,
            incremental=incremental,
        )

    return setup


def _captum_grid(ctx: Context) -> Callable[[], torch.Tensor]:
    from captum.attr import FeatureAblation

    x, labels, cls = _grid_inputs(ctx)
    module = ctx.model.module

    def run() -> torch.Tensor:
        with eval_mode(module):
            return FeatureAblation(module).attribute(
                x,
                baselines=x.mean(dim=(2, 3), keepdim=True).expand_as(x),
                target=cls,
                feature_mask=labels[None, None],
                perturbations_per_eval=BATCH,
            )

    return run


ROWS = [
    BenchRow(
        f"superpixel_ablation {WINDOW} px grid",
        "perturbation",
        _grid_ablation(True),
        settings={
            "segments": f"{WINDOW} px windows",
            "fill": "mean",
            "path": "incremental occlusion",
        },
        floor=_grid_ablation(False),
        floor_name=f"the same call with incremental=False: every window hidden through the whole model, batches of {BATCH}",
        peers=[
            PeerSetting(
                "captum",
                {"method": "FeatureAblation", "perturbations_per_eval": BATCH},
                _captum_grid,
            )
        ],
    ),
    *(
        BenchRow(
            f"{method} {N_SAMPLES} coalitions",
            "perturbation",
            _convlens(method),
            settings={
                "n_samples": N_SAMPLES,
                "batch_size": BATCH,
                "fill": "zero",
                "segments": "SLIC 50",
            },
            floor=_forwards(method),
            floor_name=f"the {N_SAMPLES}{'' if method == 'lime' else ' + 2'} coalition forwards in batches of {BATCH}, channels-last, no graph",
            peers=[
                *(
                    PeerSetting(
                        "captum",
                        {
                            "method": "Lime" if method == "lime" else "KernelShap",
                            "perturbations_per_eval": n,
                        },
                        _captum(method, n),
                    )
                    for n in (16, 64)
                ),
                PeerSetting(
                    "captum",
                    {
                        "method": "Lime" if method == "lime" else "KernelShap",
                        "perturbations_per_eval": 16,
                        "input": "channels_last",
                    },
                    _captum(method, 16, True),
                ),
            ],
        )
        for method in ("lime", "kernel_shap")
    ),
]
