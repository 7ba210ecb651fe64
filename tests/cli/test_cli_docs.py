"""docs/cli.md is generated from the parser and the schemas; it must be current."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_docs_are_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_cli_docs", ROOT / "scripts" / "make_cli_docs.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    assert (ROOT / "docs" / "cli.md").read_text() == module.render(), (
        "run: python scripts/make_cli_docs.py"
    )


def test_every_command_has_a_json_schema() -> None:
    from convlens.cli.main import _command_modules

    for name in _command_modules():
        module = importlib.import_module(f"convlens.cli.{name}")
        assert isinstance(getattr(module, "SCHEMA", None), dict), name
