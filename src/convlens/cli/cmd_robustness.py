"""``convlens robustness SUBCOMMAND``: a command group whose subcommands register themselves.

Contract for a subcommand (a new subcommand is a new file; nothing here changes):

- It is a module ``convlens/cli/robustness_<name>.py`` (for example
  ``robustness_curve.py`` -> ``attack-curve``, ``robustness_corruptions.py`` ->
  ``corruptions``, ``robustness_shape_bias.py`` -> ``shape-bias``). ``cli/main.py``
  discovers only ``cmd_*`` modules, so these are never registered twice.
- It defines ``register(subparsers, common)``. ``subparsers`` is the ``robustness``
  group's subparsers action and ``common`` the shared-options parent parser, exactly as
  for a top-level command: the module calls
  ``subparsers.add_parser(NAME, parents=[common], help=..., description=...)``, adds its
  options and ``set_defaults(func=run)`` with ``run(ctx: Context) -> int``.
- It defines ``SCHEMA`` (a dict, the JSON schema of its ``--json`` output). This module
  exposes them all as ``SCHEMAS`` (subcommand name -> schema) and as ``SCHEMA`` (a
  ``oneOf`` of them), so ``docs/cli.md`` and the CLI tests see every subcommand's schema.
- Optionally ``NAME`` (the subcommand's name); by default the module name after
  ``robustness_`` with ``_`` turned into ``-``. It must match the name given to
  ``add_parser``.
- Heavy imports (torch, the methods, matplotlib) go inside ``run``, so that building the
  parser stays fast.

Modules are registered in sorted order. ``convlens robustness`` without a subcommand is a
usage error (exit 2) naming the subcommands. Shared options go after the subcommand
(``convlens robustness corruptions DIR --json``).
"""

from __future__ import annotations

import argparse
import copy
from types import ModuleType
from typing import Any

from convlens.cli.context import Context
from convlens.discovery import submodules
from convlens.errors import BadInputError

__all__ = ["PREFIX", "SCHEMA", "SCHEMAS", "register", "subcommand_modules"]

PREFIX = "robustness_"


def subcommand_modules() -> list[ModuleType]:
    """Every ``convlens.cli.robustness_*`` module, sorted by module name."""
    return submodules("convlens.cli", prefix=PREFIX)


def subcommand_name(module: ModuleType) -> str:
    """The subcommand a module registers: its ``NAME``, else derived from the module name."""
    default = module.__name__.rsplit(".", 1)[-1].removeprefix(PREFIX).replace("_", "-")
    return str(getattr(module, "NAME", default))


def _schemas() -> dict[str, dict[str, Any]]:
    return {subcommand_name(m): dict(getattr(m, "SCHEMA", {})) for m in subcommand_modules()}


#: the ``--json`` schema of each subcommand, by subcommand name
SCHEMAS: dict[str, dict[str, Any]] = _schemas()
#: the group's ``--json`` output is one of its subcommands' outputs
SCHEMA: dict[str, Any] = {"oneOf": list(SCHEMAS.values())} if SCHEMAS else {"type": "object"}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    modules = subcommand_modules()
    names = ", ".join(subcommand_name(m) for m in modules) or "none installed"
    # The shared options belong to the subcommands (`convlens robustness attack-curve DIR
    # --seed 3`), not to the group: with them on both, a subcommand's default would silently
    # overwrite a value given before the subcommand. The group only carries their defaults
    # so that `convlens robustness` alone reaches its one-line usage error.
    p = sub.add_parser(
        "robustness",
        help=f"robustness evaluations over a folder ({names})",
        description=f"Robustness evaluations over a folder of labelled images. Subcommands: {names}; see `convlens robustness SUBCOMMAND --help`.",
    )
    group = p.add_subparsers(dest="robustness_command", metavar="SUBCOMMAND", parser_class=type(p))
    for module in modules:
        module.register(
            group, copy.deepcopy(common)
        )  # a subcommand may resolve a clash on its copy
    defaults = {a.dest: a.default for a in common._actions if a.dest != "help"}
    p.set_defaults(func=lambda ctx: _missing_subcommand(ctx, names), **defaults)


def _missing_subcommand(ctx: Context, names: str) -> int:
    raise BadInputError(
        f"robustness: give a subcommand ({names}); see `convlens robustness --help`"
    )
