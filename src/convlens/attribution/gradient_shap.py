"""GradientSHAP: expected gradients between noisy inputs and baselines drawn from a set.

Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017,
arXiv:1705.07874 (SHAP; GradientExplainer of the ``shap`` package), with the expected
gradients of Erion et al. 2019, arXiv:1906.10670. For ``k = 1..n_samples``: a baseline
``b_k`` drawn uniformly from the set ``B``, a noisy input ``x~_k = x + e_k`` with
``e_k ~ N(0, stdev^2)`` and ``a_k ~ U(0, 1)``::

    phi(x) = 1/n sum_k (x~_k - b_k) * dF/dx (b_k + a_k (x~_k - b_k))

(Captum's ``GradientShap`` computes the same estimate). Its expectation is integrated
gradients averaged over the baselines (and the noise), so ``sum phi`` approaches
``F(x) - E_b F(b)`` as ``n_samples`` grows.
"""

from __future__ import annotations

import torch

from convlens.attribution.base import register_method
from convlens.attribution.integrated import _fixed_target, _rows_target, baseline_input
from convlens.errors import BadInputError
from convlens.hooks import inference_context
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.targets import TargetLike

__all__ = ["gradient_shap", "gradient_shap_draws"]


def gradient_shap_draws(
    n_samples: int,
    n_baselines: int,
    shape: tuple[int, ...],
    stdev: float,
    generator: torch.Generator | None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random draws shared by every image: baseline indices ``(n,)``, points on the
    path ``a`` ``(n,)`` and input noise ``(n, *shape)`` (zeros when ``stdev = 0``)."""
    which = torch.randint(0, n_baselines, (n_samples,), generator=generator)
    alphas = torch.rand(n_samples, generator=generator, dtype=dtype)
    noise = (
        torch.randn((n_samples, *shape), generator=generator, dtype=dtype) * stdev
        if stdev > 0
        else torch.zeros((n_samples, *shape), dtype=dtype)
    )
    return which, alphas, noise


@register_method(
    "gradient_shap", reduce="sum", random=True, paper="Lundberg & Lee 2017, arXiv:1705.07874"
)
def gradient_shap(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    baselines: str | torch.Tensor = "black",
    n_samples: int = 32,
    stdev: float = 0.1,
    blur_sigma: float = 10.0,
    chunk: int = 16,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """GradientSHAP: ``1/n sum_k (x~_k - b_k) * dF/dx(b_k + a_k (x~_k - b_k))`` (module docstring).

    Lundberg & Lee 2017, arXiv:1705.07874. Equal to ``captum.attr.GradientShap`` with the
    same baselines, ``stdevs=stdev`` and the same draws.

    Parameters
    ----------
    baselines
        A name (``"black"``, ``"blur"``, ``"noise"``: one baseline per image, see
        :func:`~convlens.attribution.integrated.baseline_input`) or a tensor
        ``(K, C, H, W)`` of ``K`` input-space baselines shared by every image.
    n_samples
        Gradient evaluations per image.
    stdev
        Standard deviation of the Gaussian noise added to the input (input-space units).
    chunk
        Rows per forward/backward pass.
    generator
        Random source of every draw (baselines, ``a``, noise, a ``"noise"`` baseline).
    progress
        ``progress(done, total)`` after each chunk, in gradient evaluations.

    Returns
    -------
    torch.Tensor
        Shaped like ``x``.
    """
    for name, value in (("n_samples", n_samples), ("chunk", chunk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(f"{name}={value!r}: pass a whole number >= 1")
    if not stdev >= 0:
        raise BadInputError(f"stdev={stdev!r}: the noise's standard deviation must be >= 0")
    x = x.detach()
    n = x.shape[0]
    if isinstance(baselines, torch.Tensor):
        pool = baselines.to(x.device, x.dtype)
        pool = pool.unsqueeze(0) if pool.dim() == 3 else pool
        if pool.dim() != 4 or tuple(pool.shape[1:]) != tuple(x.shape[1:]):
            raise BadInputError(
                f"baselines has shape {tuple(baselines.shape)}: pass (K, C, H, W) with (C, H, W) = {tuple(x.shape[1:])}"
            )
        per_image = pool.unsqueeze(0).expand(n, -1, -1, -1, -1)  # (N, K, C, H, W)
    else:
        per_image = baseline_input(
            model, x, baselines, blur_sigma=blur_sigma, generator=generator
        ).unsqueeze(1)
    which, alphas, noise = gradient_shap_draws(
        n_samples, per_image.shape[1], tuple(x.shape[1:]), stdev, generator, x.dtype
    )
    fixed = _fixed_target(model, x, target)
    items = torch.arange(n).repeat_interleave(n_samples)
    samples = torch.arange(n_samples).repeat(n)
    acc = torch.zeros_like(x)
    total = n * n_samples
    with torch.enable_grad(), inference_context(model.module):
        for start in range(0, total, chunk):
            idx, k = items[start : start + chunk], samples[start : start + chunk]
            noisy = x[idx] + noise[k].to(x.device)
            base = per_image[idx, which[k]]
            a = alphas[k].to(x.device).view(-1, 1, 1, 1)
            z = (base + a * (noisy - base)).requires_grad_(True)
            scores = _rows_target(fixed, idx).scores(model, z)[0]
            (grad,) = torch.autograd.grad(scores.sum(), z)
            acc.index_add_(0, idx.to(x.device), (noisy - base) * grad)
            if progress is not None:
                progress(min(start + chunk, total), total)
    return acc / n_samples
