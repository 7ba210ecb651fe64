"""Module discovery (convlens.discovery): on a package written for the test, then the real
registries against the files on disk."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from convlens.discovery import collect, submodule_names, submodules


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "discovery_fixture_pkg"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("class Thing:\n    pass\n")
    files = {
        "b_second.py": "from discovery_fixture_pkg import Thing\nSECTION = Thing()\nORDER = 2\n",
        "a_first.py": "from discovery_fixture_pkg import Thing\nSECTION = Thing()\nORDER = 1\n",
        "c_other.py": "SECTION = 'not a Thing'\n",
        "d_plain.py": "VALUE = 4\n",
        "_helper.py": "from discovery_fixture_pkg import Thing\nSECTION = Thing()\n",
        "cmd_go.py": "IMPORTED = True\n",
    }
    for file, text in files.items():
        (root / file).write_text(text)
    (root / "sub").mkdir()
    (root / "sub" / "__init__.py").write_text("")
    (root / "notes.txt").write_text("not a module")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def test_names_are_sorted_and_filtered(package: str) -> None:
    public = ["a_first", "b_second", "c_other", "cmd_go", "d_plain", "sub"]
    assert submodule_names(package) == public
    assert submodule_names(package, private=True) == ["_helper", *public]
    assert submodule_names(package, prefix="cmd_") == ["cmd_go"]
    assert submodule_names(package, skip=("c_other", "sub")) == [
        "a_first",
        "b_second",
        "cmd_go",
        "d_plain",
    ]
    assert f"{package}.a_first" not in sys.modules  # names only: nothing imported


def test_submodules_imports_them_in_name_order(package: str) -> None:
    modules = submodules(package, prefix="cmd_")
    assert [m.__name__ for m in modules] == [f"{package}.cmd_go"]
    assert modules[0].IMPORTED is True
    assert sys.modules[f"{package}.cmd_go"] is modules[0]


def test_collect_keeps_instances_of_the_kind(package: str) -> None:
    thing = __import__(package).Thing
    found = collect(package, "SECTION", thing)
    # c_other's string and d_plain (no SECTION) are passed over; _helper is private
    assert found == [
        sys.modules[f"{package}.a_first"].SECTION,
        sys.modules[f"{package}.b_second"].SECTION,
    ]
    assert len(collect(package, "SECTION", thing, private=True)) == 3


def test_a_plain_module_is_refused() -> None:
    with pytest.raises(TypeError, match="not a package"):
        submodule_names("convlens.errors")


def test_the_cli_registers_every_cmd_file_on_disk() -> None:
    import convlens.cli
    from convlens.cli.main import build_parser

    on_disk = sorted(p.stem for p in Path(convlens.cli.__file__).parent.glob("cmd_*.py"))
    assert submodule_names("convlens.cli", prefix="cmd_") == on_disk
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert len(sub.choices) >= len(on_disk)  # a module may register more than one command


def test_report_and_demo_sections_come_from_their_files() -> None:
    import convlens.demo
    import convlens.render.report
    from convlens.demo import discover_sections as demo_sections
    from convlens.render.report import discover_sections as report_sections

    for package, sections in (
        (convlens.demo, demo_sections()),
        (convlens.render.report, report_sections(index=True)),
    ):
        files = [
            p for p in Path(package.__file__).parent.glob("*.py") if "SECTION =" in p.read_text()
        ]
        assert len(sections) == len(files) > 0, package.__name__
        assert [(s.order, s.name) for s in sections] == sorted((s.order, s.name) for s in sections)
