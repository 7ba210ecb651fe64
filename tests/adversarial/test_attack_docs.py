"""The attack table of docs/features/attacks.md says what the registry says: the same
attacks, papers, kinds, norms, default steps and budgets."""

from __future__ import annotations

import re
from pathlib import Path

from convlens.adversarial.registry import ATTACKS, attack_names

DOC = Path(__file__).resolve().parents[2] / "docs" / "features" / "attacks.md"


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `([a-z0-9-]+)`[^|]*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [cell.strip() for cell in m.group(2).split("|")]
    return rows


def _find(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    assert m is not None, (pattern, text)
    return m.group(1)


def test_the_docs_table_matches_the_registry() -> None:
    rows = _rows()
    assert list(rows) == list(attack_names())
    for name, (paper, kind, norms, steps, budget) in rows.items():
        spec = ATTACKS[name]
        assert _find(r"(arXiv:\S+)", paper) == _find(r"(arXiv:\S+)", spec.paper), name
        assert kind == f"{spec.box}-box", name
        shown = ["0"] if norms.startswith("L0") else [n.strip() for n in norms.split(",")]
        assert tuple(shown) == spec.norms, name
        assert budget.split(":")[0] == spec.budget, name
        if spec.steps_param is None:
            assert steps == "(one step)", name
        else:
            default = int(_find(r"\(([\d,]+)\)", steps).replace(",", ""))
            assert default == spec.steps and steps.startswith(spec.steps_means), name
