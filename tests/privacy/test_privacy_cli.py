"""``convlens privacy ...``: JSON valid against the schema, plots written, bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch

from convlens.cli import cmd_privacy
from convlens.cli.main import main


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["privacy", "backdoor", "--rate", "0.9"], "--rate"),
        (["privacy", "backdoor", "--target", "12"], "--target"),
        (["privacy", "membership", "--seeds", "0"], "--seeds"),
        (["privacy", "inversion", "--budget", "5"], "--budget"),
        (["privacy", "inversion", "--dataset", "cifar"], "--dataset"),
        (["privacy"], "EXPERIMENT"),
        (["privacy", "cifar"], "EXPERIMENT"),
        (["privacy", "membership", "--rate", "0.1"], "applies to `convlens privacy backdoor` only"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    try:
        code = main([*args, "-o", str(out)] if len(args) > 1 else args)
    except SystemExit as exc:  # argparse's own errors (choices, a missing subcommand)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())  # checked before any work or file


def test_membership_json_and_roc_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    # the command trains on one thread (no --threads given); run in-process, it hands the
    # caller's count back (3: a count it would not pick itself)
    torch.set_num_threads(3)
    assert (
        main(["privacy", "membership", "--seeds", "1", "--shadows", "1", "-o", str(out), "--json"])
        == 0
    )
    assert torch.get_num_threads() == 3
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_privacy.SCHEMA)
    assert [r["recipe"] for r in payload["runs"]] == ["overfit", "regularised"]
    assert (out / "roc.png").stat().st_size > 1000


def test_backdoor_table_and_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b"
    assert (
        main(
            [
                "privacy",
                "backdoor",
                "--cleanse-steps",
                "10",
                "--rate",
                "0.05",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_privacy.SCHEMA)
    assert payload["n_poisoned"] == round(0.05 * 1438) and payload["attack_success"] > 0.9
    assert (out / "backdoor.png").stat().st_size > 1000 and (out / "backdoor.npz").exists()
