"""Fooling images: nudge a real photo until the model calls it another class.

The CS231n exercise after Szegedy et al. 2014 ("Intriguing properties of neural networks",
arXiv:1312.6199) and Nguyen, Yosinski & Clune 2015 (arXiv:1412.1897): gradient ascent on
the target class from a real photo, in pixel space at the model's resolution,

    x_{t+1} = clip_[0,1]( clip_{x0 +- eps}( x_t + alpha * sign(d log p_target(x_t) / dx) ) )

ascending the target's log-probability (its logit minus the log-sum-exp of all logits: the
target must win, not just grow). The change is kept inside an L-inf ball of radius ``eps``
that starts small and widens only when the steps at a radius do not succeed, so the image
found is close to the smallest change this simple ascent reaches. Success is checked on the
**8-bit quantised** image, which is what is saved, so ``convlens predict`` on the PNG
agrees (DESIGN.md "Round trip").

Attacks with budgets, norms and robustness curves belong to ``convlens.adversarial``; this
is the visualisation: how little it takes.

:func:`fool_from_noise` makes fooling images with no photo at all (Nguyen, Yosinski & Clune
2015, "Deep Neural Networks are Easily Fooled: High Confidence Predictions for
Unrecognizable Images", arXiv:1412.1897): images unrecognisable to people that the network
assigns to a chosen class with >= 99 % confidence. The paper evolves them; its section 3.3
also produces them by gradient ascent, which is what is done here, with Adam on the
target's log-probability ``log p_target(image(theta))`` over one of two encodings:

- ``"noise"`` (the paper's *direct encoding*): ``theta`` holds one sigmoid logit per pixel,
  starting from uniform random noise; the result still looks like noise.
- ``"pattern"`` (its *indirect encoding*, a CPPN): ``theta`` are the weights of a small
  coordinate network (:class:`~convlens.optimize.cppn.CPPNParam`); the result is a smooth,
  often repetitive pattern.

As for :func:`fool`, success is checked on the 8-bit image, which is what is saved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from convlens.data.images import quantize_8bit
from convlens.errors import BadInputError
from convlens.hooks import inference_context
from convlens.models.model import Model
from convlens.optimize.cppn import CPPNParam
from convlens.optimize.param import ImageParam, PixelParam
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance
from convlens.targets import resolve_target

__all__ = ["DEFAULT_BUDGETS", "NOISE_PATTERNS", "fool", "fool_from_noise"]


#: L-inf radii tried in turn (pixel units)
DEFAULT_BUDGETS = (2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255)
#: encodings of :func:`fool_from_noise`, with their default Adam learning rates
NOISE_PATTERNS = {"noise": 0.05, "pattern": 0.01}


def fool(
    model: Model,
    pixels: torch.Tensor,
    target: int | str,
    *,
    min_probability: float = 0.9,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    steps_per_budget: int = 40,
    step_fraction: float = 0.125,
    progress: ProgressFn | None = None,
) -> Result:
    """A copy of ``pixels`` that the model assigns to ``target`` with ``>= min_probability``.

    Parameters
    ----------
    model
        The classifier.
    pixels
        One image in pixel space at the model's input size, ``(C, H, W)`` or ``(1, C, H, W)``
        in [0, 1] (``model.denormalize(model.prepare(photo).x)``).
    target
        Class index or label (``"daisy"``, a wnid ...).
    min_probability
        Success: the quantised image's softmax probability of ``target`` reaches this.
    budgets
        Increasing L-inf radii in pixel units; the next is used when ``steps_per_budget``
        steps at one radius do not succeed.
    steps_per_budget
        Sign-gradient steps per radius.
    step_fraction
        Step size ``alpha`` as a fraction of the current radius (at least one 8-bit level).
    progress
        ``progress(done, total)`` after each step (``total``: all steps of all budgets).

    Returns
    -------
    Result
        Kind ``"fooling"``: ``image`` (quantised, ``(1, C, H, W)``), ``original``,
        ``difference`` (``image - original``), ``probabilities`` ``(K,)`` of the image and
        ``original_probabilities`` of the photo;
        provenance params ``success``, ``linf`` and ``l2`` of the change (pixel units),
        ``steps``, ``probability`` of the target, ``predicted`` class, ``budget`` reached.
    """
    if not 0 < min_probability < 1:
        raise BadInputError(f"min_probability must be in (0, 1), got {min_probability!r}")
    if not budgets or any(not (0 < b <= 1) for b in budgets) or list(budgets) != sorted(budgets):
        raise BadInputError(f"budgets must be increasing radii in (0, 1], got {list(budgets)!r}")
    if steps_per_budget < 1 or not 0 < step_fraction <= 1:
        raise BadInputError("steps_per_budget must be >= 1 and step_fraction in (0, 1]")
    x0 = _as_pixels(model, pixels)
    resolved = resolve_target(model, target, 1)
    if resolved.kind != "class" or resolved.classes is None or resolved.classes.numel() != 1:
        raise BadInputError(f"target {target!r}: a fooling image needs one class")
    cls = int(resolved.classes.item())
    started = time.perf_counter()
    total, done = len(budgets) * steps_per_budget, 0
    x = x0.clone()
    success, probs, used = False, None, budgets[-1]
    with inference_context(model.module):
        probs = before = _probabilities(model, quantize_8bit(x))
        success = float(probs[cls]) >= min_probability
        for eps in budgets:
            if success:
                break
            alpha = max(step_fraction * eps, 1 / 255)
            for _ in range(steps_per_budget):
                x = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    log_p = torch.log_softmax(model.module(model.normalize(x)), dim=1)[0, cls]
                    (grad,) = torch.autograd.grad(log_p, x)
                x = torch.minimum(
                    torch.maximum(x.detach() + alpha * grad.sign(), x0 - eps), x0 + eps
                ).clamp(0, 1)
                probs = _probabilities(model, quantize_8bit(x))
                done += 1
                if progress is not None:
                    progress(done, total)
                if float(probs[cls]) >= min_probability:
                    success, used = True, eps
                    break
    image = quantize_8bit(x.detach())
    difference = image - x0
    params = {
        "target": cls,
        "min_probability": min_probability,
        "success": success,
        "probability": float(probs[cls]),
        "predicted": int(probs.argmax()),
        "linf": float(difference.abs().max()),
        "l2": float(difference.flatten().norm()),
        "steps": done,
        "budget": used if success else None,
        "budgets": list(budgets),
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {
        "image": image,
        "original": x0,
        "difference": difference,
        "probabilities": probs.detach().cpu(),
        "original_probabilities": before.cpu(),
    }
    return Result(
        "fooling",
        tensors,
        make_provenance(model, "fool", params=params, target=resolved),
        originals=[image[0].cpu()],
    )


def fool_from_noise(
    model: Model,
    target: int | str,
    *,
    pattern: str = "noise",
    min_probability: float = 0.99,
    steps: int = 300,
    lr: float | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> Result:
    """An unrecognisable image that the model assigns to ``target`` with ``>= min_probability``.

    Parameters
    ----------
    model
        The classifier; the image is made at its input size.
    target
        Class index or label.
    pattern
        ``"noise"`` (direct encoding: free pixels from uniform noise) or ``"pattern"`` (a
        CPPN's weights), see the module docstring.
    min_probability
        Success: the quantised image's softmax probability of ``target`` reaches this.
    steps
        Most Adam steps; it stops at the first step whose 8-bit image succeeds.
    lr
        Adam's learning rate (default :data:`NOISE_PATTERNS` of ``pattern``).
    seed
        Seeds the starting noise or the CPPN's initial weights.
    progress
        ``progress(done, steps)`` after each step.

    Returns
    -------
    Result
        Kind ``"fooling"``: ``image`` (quantised ``(1, C, H, W)``), ``start`` (the starting
        image), ``probabilities (K,)`` of the image, ``start_probabilities``, ``history``
        (the target's probability at each step, before 8-bit rounding); params ``success``,
        ``probability``, ``predicted``, ``steps``, ``pattern``, ``lr``, ``mean_change``
        (mean absolute change from the start, pixel units).

    Examples
    --------
    >>> r = fool_from_noise(model, "goldfish")
    >>> r.provenance["params"]["probability"] >= 0.99
    True
    """
    if pattern not in NOISE_PATTERNS:
        raise BadInputError(f"pattern={pattern!r}: choose one of {', '.join(NOISE_PATTERNS)}")
    if not 0 < min_probability < 1:
        raise BadInputError(f"min_probability must be in (0, 1), got {min_probability!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise BadInputError(f"steps must be a whole number >= 1, got {steps!r}")
    rate = NOISE_PATTERNS[pattern] if lr is None else lr
    if not rate > 0:
        raise BadInputError(f"lr must be > 0, got {lr!r}")
    resolved = resolve_target(model, target, 1)
    if resolved.kind != "class" or resolved.classes is None or resolved.classes.numel() != 1:
        raise BadInputError(f"target {target!r}: a fooling image needs one class")
    cls = int(resolved.classes.item())
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    shape = (1, model.channels, *model.input_size)
    param: ImageParam
    if pattern == "noise":
        noise = torch.rand(shape, generator=gen, dtype=torch.float64).to(model.device, model.dtype)
        param = PixelParam.from_image(noise)
    else:
        param = CPPNParam(shape, gen, device=model.device, dtype=model.dtype)
    opt = torch.optim.Adam(param.parameters(), lr=rate)
    history: list[float] = []
    success, done = False, 0
    with inference_context(model.module):
        start = quantize_8bit(param().detach())
        start_probs = _probabilities(model, start)
        image, probs = start, start_probs
        for done in range(1, steps + 1):
            with torch.enable_grad():
                current = param()
                log_p = torch.log_softmax(model.module(model.normalize(current)), dim=1)[0]
                p_float = float(log_p[cls].detach().exp())
                history.append(p_float)
                # the rounded image is checked only when the float one is there already
                if p_float >= min_probability:
                    image = quantize_8bit(current.detach())
                    probs = _probabilities(model, image)
                    if float(probs[cls]) >= min_probability:
                        success = True
                        break
                opt.zero_grad(set_to_none=True)
                (-log_p[cls]).backward()
            opt.step()
            if progress is not None:
                progress(done, steps)
        if not success:
            image = quantize_8bit(param().detach())
            probs = _probabilities(model, image)
            success = float(probs[cls]) >= min_probability
    for leaf in param.parameters():
        leaf.grad = None
    params = {
        "target": cls,
        "pattern": pattern,
        "param": param.describe(),
        "min_probability": min_probability,
        "success": success,
        "probability": float(probs[cls]),
        "predicted": int(probs.argmax()),
        "steps": done,
        "max_steps": steps,
        "lr": rate,
        "mean_change": float((image - start).abs().mean()),
        "linf": float((image - start).abs().max()),
        "l2": float((image - start).flatten().norm()),
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {
        "image": image,
        "start": start,
        "probabilities": probs.detach().cpu(),
        "start_probabilities": start_probs.cpu(),
        "history": torch.tensor(history, dtype=torch.float64),
    }
    provenance = make_provenance(
        model, f"fool_from_{pattern}", params=params, target=resolved, seed=seed
    )
    return Result("fooling", tensors, provenance, originals=[image[0].cpu()])


def _as_pixels(model: Model, pixels: torch.Tensor) -> torch.Tensor:
    if (
        not isinstance(pixels, torch.Tensor)
        or pixels.dim() not in (3, 4)
        or (pixels.dim() == 4 and pixels.shape[0] != 1)
    ):
        raise BadInputError("pixels: expected one image (C, H, W) or (1, C, H, W) in [0, 1]")
    x = (pixels if pixels.dim() == 4 else pixels[None]).to(model.device, model.dtype).detach()
    if tuple(x.shape[1:]) != (model.channels, *model.input_size):
        raise BadInputError(
            f"pixels of shape {tuple(x.shape[1:])}: expected the model's input {(model.channels, *model.input_size)} (model.prepare(...) gives it)"
        )
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise BadInputError("pixels must be finite and in [0, 1]")
    return x


def _probabilities(model: Model, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model.module(model.normalize(pixels)), dim=1)[0]
