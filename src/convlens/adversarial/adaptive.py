"""Adaptive attacks on input-transform defences: BPDA and EOT, as pixel-space forwards for PGD.

A defence ``g`` in front of a network ``f`` hides the gradient when ``g`` is not
differentiable (JPEG), has zero gradient (bit depth) or is random (noise). Athalye, Carlini &
Wagner 2018, "Obfuscated gradients give a false sense of security", arXiv:1802.00420, attack
such defences by changing only how the gradient is computed:

- **BPDA** (backward pass differentiable approximation): on the forward pass use ``g(x)``
  exactly; on the backward pass replace ``g`` by the identity, since ``g(x) ~ x``::

      forward: f(g(x)),    backward: grad_x ~ grad_z f(z) |_{z = g(x)}

  Written as the straight-through expression ``x + (g(x) - x).detach()``.
- **EOT** (expectation over transformation; Athalye, Engstrom, Ilyas & Kwok 2018,
  arXiv:1707.07397): for a random ``g``, attack the expected prediction over its draws.
  :func:`adaptive_forward` returns ``log( (1/K) sum_k softmax(f(g_k(x))) )``, so the
  cross-entropy PGD ascends is ``-log E_g[p_y(x)]``, estimated with ``K`` draws per step.

The functions return a :data:`~convlens.adversarial.budget.Forward`, so the existing
:func:`~convlens.adversarial.whitebox.pgd` runs them unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from convlens.adversarial.budget import Forward
from convlens.adversarial.defences import DefendedModule
from convlens.errors import BadInputError
from convlens.models.model import Model

__all__ = ["adaptive_forward", "bpda"]


def bpda(transform: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``transform`` on the forward pass, the identity on the backward pass (straight-through).

    Parameters
    ----------
    transform
        Any pixel-space map with output shaped like its input (differentiable or not).

    Returns
    -------
    Callable
        ``x -> x + (transform(x) - x).detach()``: equal to ``transform(x)`` in value, with
        Jacobian the identity.
    """

    def approximated(x: Tensor) -> Tensor:
        with torch.no_grad():
            out = transform(x.detach())
        return x + (out - x.detach())

    return approximated


def adaptive_forward(defended: Model, *, samples: int = 1) -> Forward:
    """Pixel space -> log-probabilities of a defended model, with BPDA and EOT gradients.

    Parameters
    ----------
    defended
        A model made by :func:`~convlens.adversarial.defences.defend`.
    samples
        EOT draws per call for a random defence (ignored for deterministic ones, where one
        draw is exact).

    Returns
    -------
    Forward
        ``x -> log (1/K) sum_k softmax(f(normalize(g_k(x))))`` with ``g_k`` applied through
        :func:`bpda`. For one draw this is ``log_softmax`` of the logits: PGD's cross-entropy
        and arg-max are the same as on the logits.
    """
    module = defended.module
    if not isinstance(module, DefendedModule):
        raise BadInputError(
            f"adaptive_forward: model {defended.name!r} has no input-transform defence; make it with defend()"
        )
    if samples < 1:
        raise BadInputError(f"EOT samples {samples}: must be >= 1")
    draws = samples if module.defence.random else 1
    network, defence = module.network, module.defence
    # a random defence draws from the defended module's own stream, so a seeded evaluation repeats
    transform = bpda(lambda p: defence(p, module.generator))

    def forward(pixels: Tensor) -> Tensor:
        logp = torch.stack(
            [
                network(defended.normalize(transform(pixels))).log_softmax(dim=1)
                for _ in range(draws)
            ]
        )
        return torch.logsumexp(logp, dim=0) - math.log(draws)

    return forward
