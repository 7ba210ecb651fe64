"""The progress callback type has one home, ``convlens.progress.ProgressFn``."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from typing import get_args

import convlens
from convlens.progress import ProgressFn

SRC = Path(convlens.__file__).parent


def _is_progress_callable(node: ast.AST) -> bool:
    """``Callable[[int, int], None]``, written out."""
    return ast.unparse(node).replace(" ", "") in (
        "Callable[[int,int],None]",
        "collections.abc.Callable[[int,int],None]",
        "typing.Callable[[int,int],None]",
    )


def test_no_module_spells_the_progress_type_itself() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "progress.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [
            f"{path.relative_to(SRC)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Subscript) and _is_progress_callable(node)
        ]
    assert offenders == [], "use convlens.progress.ProgressFn in " + ", ".join(offenders)


def test_modules_that_name_progressfn_share_the_one_alias() -> None:
    seen = 0
    for info in pkgutil.walk_packages(convlens.__path__, "convlens."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # optional extras (web, ray) may be missing
            continue
        alias = vars(module).get("ProgressFn")
        if alias is not None:
            seen += 1
            assert alias is ProgressFn, info.name
    assert seen >= 20  # the long-running modules take progress callbacks


def test_the_alias_is_the_done_total_callable() -> None:
    assert get_args(ProgressFn) == ([int, int], None)
