"""``convlens schema COMMAND``: prints the schema each command's --json output is checked with."""

from __future__ import annotations

import json

import jsonschema
import pytest

from convlens.cli import cmd_predict, cmd_robustness, cmd_schema
from convlens.cli.main import main


def test_prints_the_commands_own_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "predict"]) == 0
    assert json.loads(capsys.readouterr().out) == cmd_predict.SCHEMA
    assert main(["schema", "robustness", "attack-curve"]) == 0
    assert json.loads(capsys.readouterr().out) == cmd_robustness.SCHEMAS["attack-curve"]


def test_json_wraps_it_and_follows_its_own_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "style-train", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_schema.SCHEMA)
    from convlens.cli import cmd_style_train

    assert payload == {"command": "style-train", "schema": cmd_style_train.SCHEMA}


def test_every_command_is_listed() -> None:
    names = set(cmd_schema.command_schemas())
    assert {"predict", "top-patches", "schema", "robustness defend"} <= names
    assert "robustness" not in names  # a group has no output of its own


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["schema", "nope"], "schema nope: no such command; choose from "),
        (["schema", "robustness"], "schema robustness: give a subcommand (attack-curve, "),
        (["schema", "robustness", "nope"], "schema robustness nope: no such command"),
    ],
)
def test_unknown_names_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
