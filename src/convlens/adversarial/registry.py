"""The attack registry: one :class:`AttackSpec` per attack, added by :func:`register_attack`.

An attack is one decorated function in :mod:`~convlens.adversarial.whitebox` or
:mod:`~convlens.adversarial.blackbox`; everything that lists, checks or runs attacks reads
:data:`ATTACKS` (``attack()``, the CLI's ``--method`` choices and help, the curve's
methods, ``--opt`` validation), so a new attack is a new function and nothing else.

The call shape every attack function has (the driver, :func:`convlens.adversarial.attack.run_method`,
passes only the keywords the function declares)::

    white-box: fn(forward, x, labels, *, eps, norm, <steps>, targeted, generator, progress, **options)
               -> adversarial
    black-box: fn(oracle,  x, labels, *, eps, norm, <steps>, targeted, generator, seed, progress, **options)
               -> (adversarial, queries per image)

``forward`` is the pixel-space classifier, ``oracle`` an
:class:`~convlens.adversarial.oracle.Oracle` on it (scores only, queries counted);
``<steps>`` is the parameter named by ``steps_param`` (``steps``, ``max_queries``,
``generations``). Any other keyword parameter is an option the user may set.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convlens.errors import BadInputError
from convlens.types import ModelProtocol

__all__ = [
    "ATTACKS",
    "AttackSpec",
    "attack_names",
    "check_attack_options",
    "get_attack",
    "register_attack",
]

AttackFn = Callable[..., Any]

#: parameters the driver fills in itself (never user options)
DRIVER_PARAMS = frozenset(
    {"forward", "oracle", "x", "labels", "eps", "norm", "targeted", "generator", "seed", "progress"}
)


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack.

    ``box``: ``"white"`` (reads gradients through ``forward``) or ``"black"`` (sees only an
    :class:`~convlens.adversarial.oracle.Oracle` and returns its query counts).
    ``norms``: the budget norms it supports, the first the default (``"0"``: it changes
    single pixels and takes no norm). ``budget``: ``"required"`` (default ``eps`` 4/255),
    ``"optional"`` or ``"none"`` (it minimises the change, or has none). ``steps``: the
    default of ``steps_param``, the parameter that the public ``steps`` sets (None: one
    step, ``steps`` is ignored). ``steps_means``: what ``steps`` counts, for help texts.
    ``targeted``: it can move toward a class. ``paper``: authors, year, arXiv id.
    ``applies``: ``applies(model) -> bool`` for an attack that needs something most models
    lack; None: every classifier.
    """

    name: str
    fn: AttackFn
    box: str
    norms: tuple[str, ...]
    budget: str
    steps: int
    steps_param: str | None
    steps_means: str
    paper: str
    targeted: bool = True
    aliases: tuple[str, ...] = ()
    applies: Callable[[Any], bool] | None = None
    parameters: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def black_box(self) -> bool:
        return self.box == "black"

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword parameters a user may set (``alpha``, ``c``, ``p_init`` ...), sorted."""
        return tuple(sorted(self.parameters - DRIVER_PARAMS - {self.steps_param}))

    def applies_to(self, model: ModelProtocol) -> bool:
        return self.applies is None or bool(self.applies(model))


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(
    name: str,
    *,
    box: str,
    norms: tuple[str, ...],
    budget: str,
    steps: int,
    steps_means: str,
    paper: str,
    steps_param: str | None = "steps",
    targeted: bool = True,
    aliases: tuple[str, ...] = (),
    applies: Callable[[Any], bool] | None = None,
) -> Callable[[AttackFn], AttackFn]:
    """Decorator adding an attack to :data:`ATTACKS` under ``name`` (see :class:`AttackSpec`)."""
    if box not in ("white", "black") or budget not in ("required", "optional", "none"):
        raise ValueError(f"attack {name}: box {box!r} / budget {budget!r}")

    def add(fn: AttackFn) -> AttackFn:
        params = inspect.signature(fn).parameters
        keywords = frozenset(
            n
            for i, (n, p) in enumerate(params.items())
            if i >= 2 and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        if steps_param is not None and steps_param not in keywords:
            raise ValueError(f"attack {name}: {fn.__name__} has no parameter {steps_param!r}")
        ATTACKS[name] = AttackSpec(
            name,
            fn,
            box,
            tuple(norms),
            budget,
            steps,
            steps_param,
            steps_means,
            paper,
            targeted,
            tuple(aliases),
            applies,
            keywords,
        )
        return fn

    return add


def _load() -> None:
    # the attacks register when their modules are imported
    import convlens.adversarial.blackbox
    import convlens.adversarial.whitebox  # noqa: F401


def attack_names(box: str | None = None) -> tuple[str, ...]:
    """Registered attack names, white-box first, each group in registration order."""
    _load()
    boxes = ("white", "black") if box is None else (box,)
    return tuple(n for b in boxes for n, s in ATTACKS.items() if s.box == b)


def get_attack(method: str) -> AttackSpec:
    """The spec of ``method`` (case-insensitive; aliases such as ``i-fgsm`` accepted)."""
    _load()
    key = method.strip().lower()
    for spec in ATTACKS.values():
        if key == spec.name or key in spec.aliases:
            return spec
    raise BadInputError(f"method {method!r}: choose from {', '.join(attack_names())}")


def check_attack_options(spec: AttackSpec, options: dict[str, Any], *, flag: str = "") -> None:
    """Refuse option keys ``spec``'s function does not take, naming the valid ones."""
    unknown = [k for k in options if k not in spec.options]
    if unknown:
        valid = f"valid: {', '.join(spec.options)}" if spec.options else "it takes no options"
        prefix = f"{flag} " if flag else "option "
        them = "it" if len(unknown) == 1 else "them"
        raise BadInputError(
            f"{prefix}{', '.join(unknown)}: {spec.name} does not take {them}; {valid}"
        )
