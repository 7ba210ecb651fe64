"""White-box attacks: the attacker reads the model's gradients.

Every function takes ``forward``, a pixel-space classifier (``(N, C, H, W)`` in [0, 1] ->
logits; :func:`convlens.adversarial.attack.pixel_forward` makes one from a ``Model``), the
images ``x`` in pixel space and ``labels`` ``(N,)``: the true classes for an untargeted
attack (move away from them) or the target classes when ``targeted=True`` (move toward
them). They return the float adversarial batch in [0, 1]; quantisation to 8 bits and the
success check are done by :func:`convlens.adversarial.attack.attack`. Budgets are in pixel
units; ``norm`` is ``"inf"`` or ``"2"``.

The loss ascended by FGSM, BIM and PGD is the cross-entropy of ``labels`` (its negative
when targeted), as in the papers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convlens.adversarial.budget import (
    Forward,
    batch_norms,
    check_norm,
    project,
    quantize_within,
    random_in_ball,
)
from convlens.adversarial.registry import register_attack
from convlens.errors import BadInputError
from convlens.progress import ProgressFn

__all__ = ["bim", "carlini_wagner_l2", "deepfool", "fgsm", "pgd"]


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def _loss_gradient(
    forward: Forward, x: torch.Tensor, labels: torch.Tensor, targeted: bool
) -> torch.Tensor:
    """d/dx of the summed cross-entropy (negated when targeted): the ascent direction."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(forward(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(-loss if targeted else loss, x)
    return grad


def _step(grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    """The steepest-ascent step of size ``alpha`` in the norm: sign for L-inf, unit gradient for L2."""
    if norm == "inf":
        return alpha * grad.sign()
    length = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return alpha * grad / _per_image(length, grad)


@register_attack(
    "fgsm",
    box="white",
    norms=("inf", "2"),
    budget="required",
    steps=1,
    steps_param=None,
    steps_means="one step",
    paper="Goodfellow, Shlens & Szegedy 2014, arXiv:1412.6572",
)
def fgsm(
    forward: Forward,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    norm: str = "inf",
    targeted: bool = False,
) -> torch.Tensor:
    """Fast gradient sign method: one step to the edge of the budget.

    Goodfellow, Shlens & Szegedy 2014, "Explaining and harnessing adversarial examples",
    arXiv:1412.6572::

        x' = clip_[0,1]( x + eps * sign(grad_x L(x, y)) )          (L-inf)
        x' = clip_[0,1]( x + eps * grad / ||grad||_2 )              (L2, the fast gradient method)

    Example: ``fgsm(f, x, y, 4 / 255)``.
    """
    norm = check_norm(norm)
    return (x + _step(_loss_gradient(forward, x, labels, targeted), eps, norm)).clamp(0, 1).detach()


@register_attack(
    "bim",
    box="white",
    norms=("inf",),
    budget="required",
    steps=10,
    steps_means="iterations",
    paper="Kurakin, Goodfellow & Bengio 2016, arXiv:1607.02533",
    aliases=("i-fgsm", "ifgsm"),
)
def bim(
    forward: Forward,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    alpha: float | None = None,
    targeted: bool = False,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Basic iterative method / I-FGSM: FGSM steps from the image itself, clipped to the L-inf ball.

    Kurakin, Goodfellow & Bengio 2016, "Adversarial examples in the physical world",
    arXiv:1607.02533::

        x_0 = x,   x_{t+1} = Clip_{x, eps}( x_t + alpha * sign(grad_x L(x_t, y)) )

    ``alpha`` defaults to ``1.25 * eps / steps`` (the paper: one level per step for about
    ``1.25 * eps`` steps). PGD without the random start.
    """
    alpha = 1.25 * eps / steps if alpha is None and steps >= 1 else alpha
    return pgd(
        forward,
        x,
        labels,
        eps,
        norm="inf",
        steps=steps,
        alpha=alpha,
        random_start=False,
        targeted=targeted,
        progress=progress,
    )


@register_attack(
    "pgd",
    box="white",
    norms=("inf", "2"),
    budget="required",
    steps=10,
    steps_means="iterations",
    paper="Madry, Makelov, Schmidt, Tsipras & Vladu 2017, arXiv:1706.06083",
)
def pgd(
    forward: Forward,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    norm: str = "inf",
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = True,
    start: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    targeted: bool = False,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Projected gradient descent (here ascent on the loss) with a random start.

    Madry, Makelov, Schmidt, Tsipras & Vladu 2017, "Towards deep learning models resistant
    to adversarial attacks", arXiv:1706.06083::

        x_0     = clip_[0,1]( x + U(ball(eps)) )                     (random start)
        x_{t+1} = clip_[0,1]( x + Proj_eps( x_t + alpha * s_t - x ) )

    with ``s_t`` the sign of the gradient (L-inf) or the unit gradient (L2) of the loss.

    Parameters
    ----------
    alpha
        Step size; default ``2.5 * eps / steps`` (Madry et al.).
    random_start
        Start at a uniform random point of the ball (L-inf: per pixel; L2: in volume),
        drawn from ``generator``.
    start
        An explicit starting point instead (e.g. to compare with another implementation).
    """
    norm = check_norm(norm)
    if steps < 1:
        raise BadInputError(f"steps {steps}: must be >= 1")
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x = x.detach()
    if start is not None:
        adv = start.detach().to(x)
    elif random_start and eps > 0:
        adv = (
            x + random_in_ball(x.shape, eps, norm, generator, dtype=x.dtype, device=x.device)
        ).clamp(0, 1)
    else:
        adv = x.clone()
    for i in range(steps):
        adv = adv + _step(_loss_gradient(forward, adv, labels, targeted), alpha, norm)
        # project the change onto the ball first, then the image onto the valid range
        adv = (x + project(adv - x, eps, norm)).clamp(0, 1).detach()
        if progress is not None:
            progress(i + 1, steps)
    return adv


def _margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """CW's f: how far the image is from the goal (<= 0 reached). Untargeted:
    ``Z_y - max_{i != y} Z_i``; targeted: ``max_{i != t} Z_i - Z_t``."""
    own = logits.gather(1, labels[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(
        dim=1
    )
    return others - own if targeted else own - others


@register_attack(
    "cw",
    box="white",
    norms=("2",),
    budget="none",
    steps=100,
    steps_means="Adam steps per search round",
    paper="Carlini & Wagner 2017, arXiv:1608.04644",
    aliases=("carlini-wagner", "cw-l2"),
)
def carlini_wagner_l2(
    forward: Forward,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool = False,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    search_steps: int = 5,
    lr: float = 0.01,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Carlini-Wagner L2: the smallest L2 change that reaches the goal, by Adam in tanh space.

    Carlini & Wagner 2017, "Towards evaluating the robustness of neural networks",
    arXiv:1608.04644::

        minimise_w  ||x'(w) - x||_2^2 + c * max(f(x'(w)), -kappa),   x'(w) = (tanh(w) + 1) / 2

    with ``f`` the logit margin (:func:`_margin`). ``c`` is found per image by binary
    search over ``search_steps`` rounds (x10 until the first success, then bisection).
    The best image kept is the one with the smallest L2 whose **8-bit** version succeeds
    (checked at every step), since a point exactly on the decision boundary would not
    survive rounding. Images never fooled are returned unchanged.
    """
    if steps < 1 or search_steps < 1:
        raise BadInputError(f"steps {steps} and search_steps {search_steps}: must be >= 1")
    x = x.detach()
    n = x.shape[0]
    const = torch.full((n,), float(c), dtype=x.dtype, device=x.device)
    lower = torch.zeros_like(const)
    upper = torch.full_like(const, float("inf"))
    best = x.clone()
    best_l2 = torch.full_like(const, float("inf"))
    w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    total, done = steps * search_steps, 0
    for _ in range(search_steps):
        w = w0.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=lr)
        reached = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(steps):
            with torch.enable_grad():
                adv = (torch.tanh(w) + 1) / 2
                distance = (adv - x).flatten(1).pow(2).sum(dim=1)
                loss = distance + const * _margin(forward(adv), labels, targeted).clamp_min(-kappa)
                optimizer.zero_grad()
                loss.sum().backward(inputs=[w])
            optimizer.step()
            with torch.no_grad():
                candidate = quantize_within(x, (torch.tanh(w) + 1) / 2)
                ok = _margin(forward(candidate), labels, targeted) < 0
                _, l2 = batch_norms(candidate - x)
                better = ok & (l2 < best_l2)
                best = torch.where(_per_image(better, x), candidate, best)
                best_l2 = torch.where(better, l2, best_l2)
                reached |= ok
            done += 1
            if progress is not None:
                progress(done, total)
        upper = torch.where(reached, torch.minimum(upper, const), upper)
        lower = torch.where(reached, lower, torch.maximum(lower, const))
        const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
    return best


@register_attack(
    "deepfool",
    box="white",
    norms=("2",),
    budget="none",
    steps=50,
    steps_means="max iterations",
    paper="Moosavi-Dezfooli, Fawzi & Frossard 2016, arXiv:1511.04599",
    targeted=False,
)
def deepfool(
    forward: Forward,
    x: torch.Tensor,
    *,
    steps: int = 50,
    overshoot: float = 0.02,
    candidates: int = 10,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """DeepFool (L2): step to the nearest linearised decision boundary until the class changes.

    Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to
    fool deep neural networks", arXiv:1511.04599. With ``k0`` the original class and, for
    each other candidate ``k``, ``w_k = grad f_k - grad f_k0``, ``f_k = Z_k - Z_k0``::

        l   = argmin_k |f_k| / ||w_k||_2
        r_i = (|f_l| + 1e-4) / ||w_l||_2^2 * w_l,    x_{i+1} = x + (1 + overshoot) * sum_i r_i

    Candidates are the ``candidates`` top classes of the original image (the paper's
    implementation does the same for ImageNet). Untargeted only. If the 8-bit version of
    the result does not change the class, the total step is lengthened (x1.1, x1.25, x1.5,
    x2) until it does; each image keeps the first that works.
    """
    if steps < 1 or candidates < 2:
        raise BadInputError(f"steps {steps} must be >= 1 and candidates {candidates} >= 2")
    x = x.detach()
    n = x.shape[0]
    with torch.no_grad():
        logits0 = forward(x)
    k = min(candidates, logits0.shape[1])
    classes = logits0.topk(k, dim=1).indices  # (N, k); column 0 is the original class
    original = classes[:, 0]
    r_total = torch.zeros_like(x)
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    for i in range(steps):
        adv = (x + (1 + overshoot) * r_total).clamp(0, 1).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = forward(adv)
            picked = logits.gather(1, classes)  # (N, k)
            # images are independent in eval mode, so the gradient of a batch sum gives
            # every image its own gradient: one backward per candidate column
            grads = torch.stack(
                [
                    torch.autograd.grad(picked[:, j].sum(), adv, retain_graph=j < k - 1)[0]
                    for j in range(k)
                ],
                dim=1,
            )
        with torch.no_grad():
            active &= logits.argmax(dim=1) == original
            if not active.any():
                break
            f = picked[:, 1:] - picked[:, :1]  # (N, k-1)
            w = grads[:, 1:] - grads[:, :1]  # (N, k-1, C, H, W)
            w_norm = w.flatten(2).norm(dim=2).clamp_min(1e-8)
            best = (f.abs() / w_norm).argmin(dim=1)
            idx = torch.arange(n, device=x.device)
            r = ((f[idx, best].abs() + 1e-4) / w_norm[idx, best] ** 2).view(
                -1, *([1] * (x.dim() - 1))
            ) * w[idx, best]
            r_total = r_total + r * _per_image(active, r).to(r.dtype)
        if progress is not None:
            progress(i + 1, steps)
    with torch.no_grad():
        result = quantize_within(x, (x + (1 + overshoot) * r_total).clamp(0, 1))
        fooled = forward(result).argmax(dim=1) != original
        for scale in (1.1, 1.25, 1.5, 2.0):
            if bool(fooled.all()):
                break
            longer = quantize_within(x, (x + scale * (1 + overshoot) * r_total).clamp(0, 1))
            works = (forward(longer).argmax(dim=1) != original) & ~fooled
            result = torch.where(_per_image(works, x), longer, result)
            fooled |= works
    return result
