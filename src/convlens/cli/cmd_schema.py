"""``convlens schema COMMAND [SUBCOMMAND]``: the JSON schema of a command's ``--json`` output.

The schemas are generated from each command's payload type (:mod:`convlens.cli.schema`),
so what this prints is what the command's ``--json`` output is validated against.
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Annotated, Any

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.errors import BadInputError


class SchemaOutput(TypedDict):
    command: Annotated[str, "the command (and subcommand) the schema describes"]
    schema: Annotated[dict[str, Any], "a JSON Schema (draft 2020-12 vocabulary)"]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(SchemaOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "schema",
        parents=[common],
        help="the JSON schema of a command's --json output",
        description="Prints the JSON schema that a command's --json output follows (generated from the command's payload type), e.g. `convlens schema predict > predict.schema.json` or `convlens schema robustness attack-curve`. With --json the schema comes wrapped as {command, schema}.",
    )
    p.add_argument("name", metavar="COMMAND", help="a command, e.g. predict")
    p.add_argument(
        "subcommand", metavar="SUBCOMMAND", nargs="?", default=None, help="for a command group"
    )
    p.set_defaults(func=run)


def command_schemas() -> dict[str, dict[str, Any]]:
    """Every command's ``--json`` schema by its name on the command line (a command group's
    subcommands as ``"group sub"``)."""
    from convlens.cli.main import _command_modules

    schemas: dict[str, dict[str, Any]] = {}
    for module_name in _command_modules():
        module = importlib.import_module(f"convlens.cli.{module_name}")
        name = module_name.removeprefix("cmd_").replace("_", "-")
        if hasattr(module, "SCHEMAS"):  # a group: its subcommands
            schemas.update({f"{name} {sub}": s for sub, s in module.SCHEMAS.items()})
        else:
            schemas[name] = module.SCHEMA
    return schemas


def run(ctx: Context) -> int:
    args = ctx.args
    schemas = command_schemas()
    name = args.name if args.subcommand is None else f"{args.name} {args.subcommand}"
    if name not in schemas:
        groups = sorted({k.split(" ")[0] for k in schemas if " " in k})
        if args.subcommand is None and args.name in groups:
            subs = sorted(k.split(" ", 1)[1] for k in schemas if k.startswith(f"{args.name} "))
            raise BadInputError(f"schema {args.name}: give a subcommand ({', '.join(subs)})")
        known = sorted(k for k in schemas if " " not in k) + groups
        raise BadInputError(f"schema {name}: no such command; choose from {', '.join(known)}")
    payload: SchemaOutput = {"command": name, "schema": schemas[name]}
    if ctx.json:
        ctx.emit_json(payload)
    else:
        print(json.dumps(payload["schema"], indent=2))
    return 0
