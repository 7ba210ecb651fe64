"""The public names are exactly ``__all__``, sorted, and each resolves (httpx's exported-members test)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = [
    "convlens",
    "convlens.errors",
    "convlens.hooks",
    "convlens.render",
    "convlens.inspect",
    "convlens.data",
    "convlens.optimize",
    "convlens.adversarial",
    "convlens.robustness",
    "convlens.style",
    "convlens.privacy",
    "convlens.render.report",
    "convlens.represent",
    "convlens.server",
    "convlens.tokens",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(set(exported)) == len(exported)  # the order is ruff's RUF022 (tests/test_lint.py)
    for symbol in exported:
        assert hasattr(module, symbol), f"{name}.{symbol} in __all__ but missing"


def test_top_level_public_members_match_all() -> None:
    import convlens

    public = {n for n in dir(convlens) if not n.startswith("_")}
    # every module of the package becomes an attribute once something imports it
    submodules = {info.name for info in pkgutil.iter_modules(convlens.__path__)}
    assert public - submodules == set(convlens.__all__) - {"__version__"}


def test_py_typed_ships() -> None:
    import convlens

    assert (importlib.resources.files(convlens) / "py.typed").is_file()
