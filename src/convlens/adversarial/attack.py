"""The public ``attack()``: any method, a batch of images, a :class:`~convlens.results.Result`.

The round trip (DESIGN.md): attacks start from the **8-bit** image at the model's input
size (what a PNG at model resolution holds), the adversarial image is quantised to 8 bits
inside the budget, and success is decided on that quantised image, so the saved PNG given
to ``convlens predict`` is classified exactly as reported.

Each attack is one function registered with
:func:`~convlens.adversarial.registry.register_attack`; :data:`ATTACKS
<convlens.adversarial.registry.ATTACKS>` holds what this driver needs (white or black box,
norms, budget, default steps and what they count). ``docs/features/attacks.md`` tables
them (a test keeps the table equal to the registry).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from convlens.adversarial.budget import Forward, batch_norms, check_norm
from convlens.adversarial.oracle import Oracle
from convlens.adversarial.registry import (
    ATTACKS,
    AttackSpec,
    attack_names,
    check_attack_options,
    get_attack,
)
from convlens.data.images import quantize_8bit
from convlens.errors import BadInputError
from convlens.hooks import inference_context
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance
from convlens.targets import resolve_target

__all__ = [
    "BLACK_BOX",
    "DEFAULT_EPS",
    "METHODS",
    "WHITE_BOX",
    "attack",
    "pixel_forward",
    "run_method",
]


WHITE_BOX = attack_names("white")
BLACK_BOX = attack_names("black")
METHODS = WHITE_BOX + BLACK_BOX
#: budget used when a budgeted method is called without ``eps``
DEFAULT_EPS = 4 / 255


def pixel_forward(model: Model) -> Forward:
    """Pixel space -> logits through the model's own normalisation."""
    return lambda pixels: model.module(model.normalize(pixels))


def _check_targeted(spec: AttackSpec, targeted: bool) -> None:
    if targeted and not spec.targeted:
        able = [n for n in attack_names() if ATTACKS[n].targeted]
        raise BadInputError(
            f"{spec.name} is untargeted; use one of {', '.join(able)} with a target"
        )


def _method_settings(
    method: str,
    eps: float | None,
    norm: str | None,
    steps: int | None,
    *,
    targeted: bool = False,
    options: dict[str, Any] | None = None,
) -> tuple[str, float | None, str, int]:
    """Canonical name, budget, norm and steps of a call, or a one-line :class:`BadInputError`."""
    spec = get_attack(method)
    name, allowed = spec.name, spec.norms
    use_norm = allowed[0] if norm is None else check_norm(norm)
    if allowed == ("0",) and norm is not None:
        raise BadInputError(f"{name} changes one pixel (an L0 budget); drop the norm")
    if use_norm not in allowed:
        raise BadInputError(f"{name}: norm {use_norm} is not supported; use {' or '.join(allowed)}")
    if spec.budget == "none" and eps is not None:
        why = (
            "it changes one pixel"
            if allowed == ("0",)
            else f"it minimises the L{allowed[0]} change"
        )
        raise BadInputError(f"{name} has no budget ({why}); drop eps")
    if spec.budget == "required" and eps is None:
        eps = DEFAULT_EPS
    if eps is not None and not 0 <= eps <= 1:
        raise BadInputError(f"eps {eps}: a budget in pixel units must be in [0, 1] (e.g. 4/255)")
    use_steps = spec.steps if steps is None else steps
    if use_steps < 1:
        raise BadInputError(f"steps {use_steps}: must be >= 1")
    _check_targeted(spec, targeted)
    check_attack_options(spec, dict(options or {}))
    return name, eps, use_norm, use_steps


def run_method(
    forward: Forward,
    x: torch.Tensor,
    labels: torch.Tensor,
    method: str,
    *,
    eps: float | None,
    norm: str,
    steps: int,
    targeted: bool,
    generator: torch.Generator,
    seed: int,
    progress: ProgressFn | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One method on one 8-bit batch: ``(float adversarial, queries per image)``.

    White-box methods get ``forward`` and report 0 queries; black-box ones see only an
    :class:`Oracle`. Each function gets the driver's settings it declares (see
    :mod:`convlens.adversarial.registry`) and the caller's ``options``.
    """
    spec = get_attack(method)
    _check_targeted(spec, targeted)
    settings: dict[str, Any] = {
        "labels": labels,
        "eps": None if eps is None else float(eps),
        "norm": norm,
        "targeted": targeted,
        "generator": generator,
        "seed": seed,
        "progress": progress,
    }
    if spec.steps_param is not None:
        settings[spec.steps_param] = steps
    call = {k: v for k, v in settings.items() if k in spec.parameters}
    if spec.black_box:
        return spec.fn(Oracle(forward, output="scores"), x, **call, **dict(options or {}))
    adversarial = spec.fn(forward, x, **call, **dict(options or {}))
    return adversarial, torch.zeros(x.shape[0], dtype=torch.long)


def attack(
    model: Model,
    images: Any,
    method: str = "pgd",
    eps: float | None = None,
    norm: str | None = None,
    target: Any = None,
    steps: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    *,
    labels: Sequence[int] | torch.Tensor | None = None,
    top_k: int = 5,
    batch_size: int = 16,
    **options: Any,
) -> Result:
    """Attack images and report what changed, on the 8-bit adversarial images.

    Parameters
    ----------
    model
        The classifier.
    images
        Paths, ``sample:NAME``, arrays, PIL images, or a pixel batch ``(N, C, H, W)`` in
        [0, 1] at the model's input size (``model.prepare`` rules).
    method
        One of :data:`METHODS` (see the module table).
    eps
        Budget in pixel units (``4 / 255``); default 4/255 for budgeted methods.
    norm
        ``"inf"`` or ``"2"``; default the method's own.
    target
        None: untargeted (move away from ``labels``, default the predicted classes).
        A class (index, label, wnid) or one per image: targeted.
    steps
        Iterations, queries or generations (module table); default per method.
    seed
        Seeds every random choice (random starts, squares, coordinates, DE).
    progress
        ``progress(done, total)`` as the attack advances.
    labels
        True classes for untargeted attacks (default: the model's prediction).
    top_k
        Classes listed before and after.
    batch_size
        Images attacked together.
    options
        Method-specific settings (``alpha``, ``c``, ``kappa``, ``p_init``, ``pixels`` ...).

    Returns
    -------
    Result
        Kind ``"adversarial"``: ``adversarial`` (8-bit, ``(N, C, H, W)``), ``original``
        (the 8-bit original), ``perturbation`` (their difference), ``labels`` (the
        classes moved away from, or the targets), ``top_classes_before/after`` and
        ``top_probs_before/after`` ``(N, k)``, ``linf``, ``l2``, ``queries``, ``success``
        ``(N,)``. Provenance params: method, eps, norm, steps, targeted, success rate.

    Examples
    --------
    >>> result = attack(model, ["sample:cat"], "pgd", eps=1 / 255, steps=20)
    >>> bool(result["success"][0])
    """
    name, eps, norm, steps = _method_settings(
        method, eps, norm, steps, targeted=target is not None, options=options
    )
    if not ATTACKS[name].applies_to(model):
        raise BadInputError(f"{name} does not apply to model {model.name}")
    if top_k < 1 or batch_size < 1:
        raise BadInputError(f"top_k {top_k} and batch_size {batch_size}: must be >= 1")
    batch = model.prepare(images)
    x0 = quantize_8bit(model.denormalize(batch.x).clamp(0, 1)).detach()
    n = x0.shape[0]
    forward = pixel_forward(model)
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    with inference_context(model.module):
        with torch.no_grad():
            before = torch.cat([forward(chunk).softmax(dim=1) for chunk in x0.split(batch_size)])
        targeted = target is not None
        if targeted:
            resolved = resolve_target(model, target, n)
            if resolved.kind != "class" or resolved.classes is None:
                raise BadInputError(
                    f"target {target!r}: an attack targets classes (an index, label or wnid)"
                )
            goal = resolved.classes.expand(n) if resolved.classes.numel() == 1 else resolved.classes
        elif labels is not None:
            goal = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
            if goal.numel() != n:
                raise BadInputError(f"labels has {goal.numel()} entries but there are {n} images")
        else:
            goal = before.argmax(dim=1)
        goal = goal.to(x0.device)
        classes = before.shape[1]
        if int(goal.min()) < 0 or int(goal.max()) >= classes:
            raise BadInputError(f"classes must be in 0-{classes - 1}")
        chunks = list(range(0, n, batch_size))
        advs, queries = [], []
        for ci, lo in enumerate(chunks):
            inner = (
                None
                if progress is None
                else (lambda done, total, ci=ci: progress(ci * total + done, len(chunks) * total))
            )
            x = x0[lo : lo + batch_size]
            adv, q = run_method(
                forward,
                x,
                goal[lo : lo + batch_size],
                name,
                eps=eps,
                norm=norm,
                steps=steps,
                targeted=targeted,
                generator=generator,
                seed=seed + lo,
                progress=inner,
                options=options,
            )
            advs.append(quantize_within_budget(x, adv, eps, norm))
            queries.append(q)
        adversarial = torch.cat(advs)
        with torch.no_grad():
            after = torch.cat(
                [forward(chunk).softmax(dim=1) for chunk in adversarial.split(batch_size)]
            )
    predicted = after.argmax(dim=1)
    success = predicted == goal if targeted else predicted != goal
    perturbation = adversarial - x0
    linf, l2 = batch_norms(perturbation)
    k = min(top_k, classes)
    top_before, top_after = before.topk(k, dim=1), after.topk(k, dim=1)
    tensors = {
        "adversarial": adversarial.cpu(),
        "original": x0.cpu(),
        "perturbation": perturbation.cpu(),
        "labels": goal.cpu(),
        "top_classes_before": top_before.indices.cpu(),
        "top_probs_before": top_before.values.cpu(),
        "top_classes_after": top_after.indices.cpu(),
        "top_probs_after": top_after.values.cpu(),
        "linf": linf.cpu(),
        "l2": l2.cpu(),
        "queries": torch.cat(queries),
        "success": success.cpu(),
    }
    params = {
        "method": name,
        "eps": eps,
        "norm": "0" if name == "one-pixel" else norm,
        "steps": steps,
        "targeted": targeted,
        "black_box": name in BLACK_BOX,
        "success_rate": float(success.float().mean()),
        "seconds": round(time.perf_counter() - started, 3),
        **{
            key: value
            for key, value in options.items()
            if isinstance(value, (int, float, str, bool))
        },
    }
    provenance = make_provenance(
        model, f"attack.{name}", params=params, target=goal.cpu() if targeted else None, seed=seed
    )
    return Result(
        "adversarial",
        tensors,
        provenance,
        sources=list(batch.sources),
        originals=list(adversarial.cpu()),
    )


def quantize_within_budget(
    x: torch.Tensor, adversarial: torch.Tensor, eps: float | None, norm: str
) -> torch.Tensor:
    """8-bit adversarial inside the budget (one-pixel has none: plain rounding)."""
    from convlens.adversarial.budget import quantize_within

    return quantize_within(x, adversarial, eps, norm if norm in ("inf", "2") else "inf")
