"""Shared CLI number checks (convlens.cli.validators) and the commands that use them."""

from __future__ import annotations

from pathlib import Path

import pytest

from convlens.cli.main import main
from convlens.cli.validators import at_least, between, fraction, fraction_list, greater_than
from convlens.errors import BadInputError


def test_bounds() -> None:
    assert at_least(1, 1, "--steps") == 1 and at_least(0.0, 0, "--tv") == 0.0
    assert greater_than(1e-9, 0, "--lr") == 1e-9
    with pytest.raises(BadInputError, match=r"^--steps 0: must be >= 1$"):
        at_least(0, 1, "--steps")
    with pytest.raises(BadInputError, match=r"^--size 15: must be >= 16$"):
        at_least(15, 16, "--size")
    with pytest.raises(BadInputError, match=r"^--lr 0: must be > 0$"):
        greater_than(0.0, 0, "--lr")
    with pytest.raises(BadInputError, match="must be >= 0"):
        at_least(float("nan"), 0, "--tv")  # NaN is not a number of anything


def test_fractions() -> None:
    assert fraction("4/255", "--eps") == 4 / 255
    assert fraction(" 0.03 ", "--eps") == 0.03
    assert fraction("1", "--eps") == 1.0 and fraction("0/7", "--eps") == 0.0
    assert fraction_list("0,1/255, 2/255", "--eps") == [0.0, 1 / 255, 2 / 255]
    for text, needle in [
        ("4/0", "a fraction such as 4/255"),
        ("four", "a fraction such as 4/255"),
        ("1/2/3", "a fraction such as"),
        ("2", r"must be in \[0, 1\]"),
        ("-1/255", r"must be in \[0, 1\]"),
    ]:
        with pytest.raises(BadInputError, match=needle):
            fraction(text, "--eps")
    with pytest.raises(BadInputError, match="values must increase"):
        fraction_list("2/255,1/255", "--eps")
    with pytest.raises(BadInputError, match="at least one value"):
        fraction_list(" , ", "--eps")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["attack", "sample:cat", "--steps", "0"], "--steps 0: must be >= 1"),
        (
            ["attack", "sample:cat", "--eps", "5/0"],
            "--eps '5/0': expected a number or a fraction such as 4/255",
        ),
        (["attack", "sample:cat", "--top-k", "0"], "--top-k 0: must be >= 1"),
        (["report", "sample:cat", "--top-k", "0"], "--top-k 0: must be >= 1"),
        (["visualize", "class", "3", "--lr", "0"], "--lr 0: must be > 0"),
    ],
)
def test_commands_refuse_with_one_line_before_loading_a_model(
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_model(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr("convlens.cli.context.Context.model", no_model)
    monkeypatch.setattr("convlens.cli.context.Context.models", no_model)
    assert main([*argv, "--model", "digits_cnn"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_between() -> None:
    assert between(0, 0, 9, "--target") == 0 and between(0.5, 0, 0.5, "--rate", open_low=True)
    with pytest.raises(BadInputError, match=r"^--rate 0: must be in \(0, 0.5\]$"):
        between(0.0, 0, 0.5, "--rate", open_low=True)
    with pytest.raises(BadInputError, match=r"^--target 10: must be a digit class in \[0, 9\]$"):
        between(10, 0, 9, "--target", what="a digit class")
    with pytest.raises(BadInputError, match=r"^--port 65536: must be in \[0, 65535\]$"):
        between(65536, 0, 65535, "--port")
    with pytest.raises(BadInputError, match="must be in"):
        between(float("nan"), 0, 1, "--rate")
    # integers are shown as written, not in exponent notation
    with pytest.raises(BadInputError, match=r"^--max-bytes 0: must be >= 1$"):
        at_least(0, 1, "--max-bytes")
    with pytest.raises(BadInputError, match=r"^--budget 40: must be >= 41$"):
        at_least(40, 41, "--budget")
    with pytest.raises(BadInputError, match=r"^--big 10000000: must be > 20000000$"):
        greater_than(10_000_000, 20_000_000, "--big")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["predict", "sample:cat", "--top-k", "0"], "--top-k 0: must be >= 1"),
        (["predict", "sample:cat", "--batch-size", "0"], "--batch-size 0: must be >= 1"),
        (["serve", "--port", "70000"], "--port 70000: must be in [0, 65535]"),
        (["serve", "--max-bytes", "0"], "--max-bytes 0: must be >= 1"),
        (["serve", "--max-pixels", "-5"], "--max-pixels -5: must be >= 1"),
        (["features", ".", "--layer", "conv1", "--workers", "0"], "--workers 0: must be >= 1"),
        (
            ["features", ".", "--layer", "conv1", "--shard-size", "0"],
            "--shard-size 0: must be >= 1",
        ),
        (["channels", ".", "--layer", "conv1", "--steps", "0"], "--steps 0: must be >= 1"),
        (["channels", ".", "--layer", "conv1", "--limit", "0"], "--limit 0: must be >= 1"),
        (["style-train", "sample:brick", "--batch", "0"], "--batch 0: must be >= 1"),
        (["style-train", "sample:brick", "--lr", "0"], "--lr 0: must be > 0"),
        (["style-train", "sample:brick", "--tv", "-1"], "--tv -1: must be >= 0"),
        (["stylize", "sample:cat", "--net", "x.pt", "--size", "8"], "--size 8: must be >= 16"),
        (["privacy", "membership", "--seeds", "0"], "--seeds 0: must be >= 1"),
        (["privacy", "membership", "--shadows", "0"], "--shadows 0: must be >= 1"),
        (["privacy", "inversion", "--budget", "40"], "--budget 40: must be >= 41"),
        (["privacy", "backdoor", "--rate", "0.6"], "--rate 0.6: must be in (0, 0.5]"),
        (["privacy", "backdoor", "--rate", "0"], "--rate 0: must be in (0, 0.5]"),
        (["privacy", "backdoor", "--target", "10"], "--target 10: must be a digit class in [0, 9]"),
        (["privacy", "backdoor", "--cleanse-steps", "9"], "--cleanse-steps 9: must be >= 10"),
    ],
)
def test_more_commands_refuse_bad_numbers_with_one_line_naming_the_option(
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    def no_work(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("work started before the options were checked")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("convlens.cli.context.Context.model", no_work)
    monkeypatch.setattr("convlens.cli.context.Context.models", no_work)
    monkeypatch.setattr("convlens.cli.context.Context.model_specs", no_work)
    monkeypatch.setattr("convlens.cli.context.Context.out_path", no_work)
    assert main([*argv, "--model", "digits_cnn"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
