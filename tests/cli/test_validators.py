"""Shared CLI number checks (convlens.cli.validators) and the commands that use them."""

from __future__ import annotations

import pytest

from convlens.cli.main import main
from convlens.cli.validators import at_least, fraction, fraction_list, greater_than
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
