"""Black-box attacks: the attacker sees only scores through an :class:`~convlens.adversarial.oracle.Oracle`.

Each function takes the oracle (never the model), the 8-bit images ``x`` in pixel space and
``labels`` (true classes, or targets when ``targeted=True``), and returns
``(adversarial, queries)``: the 8-bit adversarial batch and the number of oracle queries
spent on each image (including the final check). An image stops costing queries once it
succeeds. Success is decided on 8-bit images: Square and one-pixel only ever query 8-bit
candidates; ZOO's finite differences query float images, but it stops on the 8-bit check.

The objective is the margin of log-probabilities, ``log p_y - max_{i != y} log p_i``
(untargeted; ``max_{i != t} log p_i - log p_t`` targeted): below zero means success.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from convlens.adversarial.budget import check_norm, project, quantize_within
from convlens.adversarial.oracle import Oracle
from convlens.adversarial.registry import register_attack
from convlens.errors import BadInputError
from convlens.progress import ProgressFn

__all__ = ["one_pixel", "square", "zoo"]


def _margin(scores: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    logp = scores.clamp_min(1e-30).log()
    own = logp.gather(1, labels[:, None])[:, 0]
    others = logp.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return others - own if targeted else own - others


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def _square_fraction(p_init: float, i: int, iterations: int) -> float:
    """The paper's schedule: the square's area fraction halves at fixed points of a
    10,000-iteration run, rescaled to ``iterations``."""
    t = int(i / iterations * 10000)
    halvings = sum(t > b for b in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2**halvings


@register_attack(
    "square",
    box="black",
    norms=("inf",),
    budget="required",
    steps=10000,
    steps_param="max_queries",
    steps_means="max queries per image",
    paper="Andriushchenko, Croce, Flammarion & Hein 2020, arXiv:1912.00049",
)
def square(
    oracle: Oracle,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    norm: str = "inf",
    max_queries: int = 10000,
    p_init: float = 0.05,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square Attack (L-inf): random square updates at the vertices of the ball, kept if they help.

    Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient
    black-box adversarial attack via random search", arXiv:1912.00049. Start from vertical
    stripes of ``+-eps``; at step ``i`` draw a square of side ``round(sqrt(p_i * H * W))``
    at a random place, set it to a random ``+-eps`` per channel, and keep the change when
    the margin loss goes down. ``p_i`` follows the paper's halving schedule from ``p_init``
    (the paper: 0.05 on ImageNet, 0.8 on MNIST).
    """
    if check_norm(norm) != "inf":
        raise BadInputError("square: only the L-inf version is implemented; use --norm inf")
    if max_queries < 1 or not 0 < p_init <= 1:
        raise BadInputError(
            f"square: max_queries {max_queries} must be >= 1 and p_init {p_init} in (0, 1]"
        )
    n, c, h, w = x.shape
    dev, dt = x.device, x.dtype

    def signs(shape: tuple[int, ...]) -> torch.Tensor:
        return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(dev, dt) * eps

    adv = quantize_within(x, (x + signs((n, c, 1, w))).clamp(0, 1), eps, "inf")
    margin = _margin(oracle(adv), labels, targeted)
    queries = torch.ones(n, dtype=torch.long)
    rows = torch.arange(h, device=dev).view(1, 1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, 1, w)
    for i in range(1, max_queries):
        active = (margin >= 0).cpu()
        if not active.any():
            break
        idx = active.nonzero()[:, 0]
        m = len(idx)
        side = max(
            1, min(h, w, round(float(np.sqrt(_square_fraction(p_init, i, max_queries) * h * w))))
        )
        top = torch.randint(0, h - side + 1, (m,), generator=generator).to(dev).view(m, 1, 1, 1)
        left = torch.randint(0, w - side + 1, (m,), generator=generator).to(dev).view(m, 1, 1, 1)
        window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        base, current = x[idx.to(dev)], adv[idx.to(dev)]
        delta = torch.where(window, signs((m, c, 1, 1)), current - base)
        candidate = quantize_within(base, (base + delta).clamp(0, 1), eps, "inf")
        new_margin = _margin(oracle(candidate), labels[idx.to(dev)], targeted)
        queries[idx] += 1
        better = new_margin < margin[idx.to(dev)]
        adv[idx.to(dev)] = torch.where(_per_image(better, candidate), candidate, current)
        margin[idx.to(dev)] = torch.where(better, new_margin, margin[idx.to(dev)])
        if progress is not None:
            progress(i, max_queries - 1)
    return adv, queries


@register_attack(
    "zoo",
    box="black",
    norms=("inf", "2"),
    budget="optional",
    steps=20000,
    steps_param="max_queries",
    steps_means="max queries per image",
    paper="Chen, Zhang, Sharma, Yi & Hsieh 2017, arXiv:1708.03999",
)
def zoo(
    oracle: Oracle,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float | None = None,
    norm: str = "inf",
    max_queries: int = 20000,
    coordinates: int = 32,
    h: float = 1e-4,
    lr: float = 0.01,
    c: float = 10.0,
    kappa: float = 0.0,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ZOO-Adam: coordinate-wise Adam on finite-difference gradients of the CW loss.

    Chen, Zhang, Sharma, Yi & Hsieh 2017, "ZOO: zeroth order optimization based black-box
    attacks to deep neural networks without training substitute models", arXiv:1708.03999.
    Loss ``||x' - x||_2^2 + c * max(margin(x'), -kappa)``; each iteration picks
    ``coordinates`` random pixels per image and estimates

        g_i = (loss(x' + h e_i) - loss(x' - h e_i)) / (2h)

    (``2 * coordinates`` queries), takes an Adam step on those coordinates, clips to [0, 1]
    (and to the ``eps`` ball when given), then spends one query checking the 8-bit image.
    Stops at the first success (this reports success and queries, not the smallest change).
    Without the paper's dimension reduction it suits small inputs (digits, MNIST); on
    224-pixel images it needs far more queries.
    """
    norm = check_norm(norm)
    if max_queries < 2 * coordinates + 1 or coordinates < 1:
        raise BadInputError(
            f"zoo: max_queries {max_queries} must cover one iteration ({2 * coordinates + 1} queries)"
        )
    n = x.shape[0]
    d = x[0].numel()
    k = min(coordinates, d)
    flat_x = x.flatten(1)
    adv = flat_x.clone()
    m_adam = torch.zeros_like(adv)
    v_adam = torch.zeros_like(adv)
    t_adam = torch.zeros_like(adv)
    beta1, beta2 = 0.9, 0.999
    queries = torch.zeros(n, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    result = x.clone()
    per_iteration = 2 * k + 1

    def loss(
        images: torch.Tensor, image_labels: torch.Tensor, originals: torch.Tensor
    ) -> torch.Tensor:
        distance = (images - originals).pow(2).sum(dim=1)
        margin = _margin(oracle(images.view(-1, *x.shape[1:])), image_labels, targeted)
        return distance + c * margin.clamp_min(-kappa)

    iteration = 0
    while True:
        active = (~done) & (queries + per_iteration <= max_queries)
        if not active.any():
            break
        idx = active.nonzero()[:, 0]
        idx_d = idx.to(x.device)
        m = len(idx)
        coords = torch.stack([torch.randperm(d, generator=generator)[:k] for _ in range(m)]).to(
            x.device
        )  # (m, k)
        base = adv[idx_d]
        plus = base[:, None, :].repeat(1, k, 1)
        minus = plus.clone()
        ar = torch.arange(k, device=x.device)
        plus[:, ar, coords] += h
        minus[:, ar, coords] -= h
        both = torch.cat([plus, minus], dim=1).view(m * 2 * k, d)
        lab = labels[idx_d].repeat_interleave(2 * k)
        orig = flat_x[idx_d].repeat_interleave(2 * k, dim=0)
        values = loss(both, lab, orig).view(m, 2 * k)
        grad = (values[:, :k] - values[:, k:]) / (2 * h)  # (m, k)
        rows = torch.arange(m, device=x.device)[:, None]
        sel = (idx_d[:, None], coords)
        t_adam[sel] += 1
        m_adam[sel] = beta1 * m_adam[sel] + (1 - beta1) * grad
        v_adam[sel] = beta2 * v_adam[sel] + (1 - beta2) * grad**2
        m_hat = m_adam[sel] / (1 - beta1 ** t_adam[sel])
        v_hat = v_adam[sel] / (1 - beta2 ** t_adam[sel])
        updated = base.clone()
        updated[rows, coords] = base[rows, coords] - lr * m_hat / (v_hat.sqrt() + 1e-8)
        updated = updated.clamp(0, 1)
        if eps is not None:
            updated = (flat_x[idx_d] + project(updated - flat_x[idx_d], eps, norm)).clamp(0, 1)
        adv[idx_d] = updated
        images = updated.view(m, *x.shape[1:])
        check = quantize_within(x[idx_d], images, eps, norm)
        success = _margin(oracle(check), labels[idx_d], targeted) < 0
        queries[idx] += per_iteration
        result[idx_d] = check
        done[idx] |= success.cpu()
        iteration += 1
        if progress is not None:
            progress(min(int(queries.max()), max_queries), max_queries)
    # images that never succeeded: the last 8-bit iterate (its check was already counted)
    return result, queries


@register_attack(
    "one-pixel",
    box="black",
    norms=("0",),
    budget="none",
    steps=100,
    steps_param="generations",
    steps_means="DE generations",
    paper="Su, Vargas & Sakurai 2019, arXiv:1710.08864",
    aliases=("onepixel", "one_pixel"),
)
def one_pixel(
    oracle: Oracle,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    pixels: int = 1,
    population: int = 100,
    generations: int = 100,
    targeted: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-pixel attack: differential evolution over (row, column, colour) of ``pixels`` pixels.

    Su, Vargas & Sakurai 2019, "One pixel attack for fooling deep neural networks",
    arXiv:1710.08864. Each candidate sets ``pixels`` pixels to 8-bit colours; DE (SciPy's
    ``differential_evolution``, about ``population`` candidates per generation, Latin
    hypercube start) minimises the probability of the true class (maximises the target's
    when targeted) and stops as soon as its best candidate changes the class (one query
    per generation checks it). Queries: every candidate evaluated and every such check.
    """
    from scipy.optimize import OptimizeResult, differential_evolution

    if pixels < 1 or population < 5 or generations < 1:
        raise BadInputError(
            f"one_pixel: pixels {pixels} >= 1, population {population} >= 5, generations {generations} >= 1"
        )
    n, c, h, w = x.shape
    dims = pixels * (2 + c)
    bounds = [(0, h - 1e-6), (0, w - 1e-6)] + [(0, 255.999)] * c
    out = x.clone()
    queries = torch.zeros(n, dtype=torch.long)

    def apply(image: torch.Tensor, genes: np.ndarray) -> torch.Tensor:
        """(dims, S) genes -> S images with the pixels set (values on the 8-bit grid)."""
        s = genes.shape[1]
        batch = image[None].repeat(s, 1, 1, 1)
        g = torch.as_tensor(genes, dtype=torch.float64).view(pixels, 2 + c, s)
        ar = torch.arange(s)
        for p in range(pixels):
            r, col = g[p, 0].floor().long(), g[p, 1].floor().long()
            colour = (g[p, 2:].floor() / 255).to(x.dtype).T  # (S, C)
            batch[ar, :, r, col] = colour.to(x.device)
        return batch

    def problem(
        image: torch.Tensor, label: torch.Tensor
    ) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[OptimizeResult], bool]]:
        def objective(genes: np.ndarray) -> np.ndarray:
            scores = oracle(apply(image, genes.reshape(dims, -1)))
            p = scores[:, int(label)].double().cpu().numpy()
            return -p if targeted else p

        def reached(intermediate_result: OptimizeResult) -> bool:  # SciPy passes the best so far
            return bool(
                _margin(oracle(apply(image, intermediate_result.x[:, None])), label, targeted)[0]
                < 0
            )

        return objective, reached

    for i in range(n):
        start = oracle.queries
        objective, reached = problem(x[i], labels[i : i + 1])
        result = differential_evolution(
            objective,
            bounds,
            popsize=max(1, population // dims),
            maxiter=generations,
            init="latinhypercube",
            recombination=1.0,
            mutation=(0.5, 1.0),
            tol=0.0,
            atol=0.0,
            polish=False,
            seed=seed + i,
            vectorized=True,
            updating="deferred",
            callback=reached,
        )
        out[i] = apply(x[i], result.x[:, None])[0]
        # every candidate and every stopping check the oracle answered for this image
        queries[i] = oracle.queries - start
        if progress is not None:
            progress(i + 1, n)
    return out, queries
