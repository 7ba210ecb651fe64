"""The CLI contract: exit codes, one-line errors, --json schemas, progress off when piped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from convlens.cli import cmd_info, cmd_layers, cmd_predict
from convlens.cli.main import main


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess (stdin closed, like CI)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "convlens.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_predict_json_validates_and_mixed_good_bad_files(tmp_path: Path, photo: Path) -> None:
    missing = tmp_path / "missing.jpg"
    text = tmp_path / "notes.jpg"
    text.write_text("hello, not a picture")
    proc = run_cli(
        "predict", "sample:coffee", str(missing), str(photo), str(text), "--json", "--top-k", "3"
    )
    assert proc.returncode == 2, proc.stderr
    payload = json.loads(proc.stdout)
    jsonschema.validate(payload, cmd_predict.SCHEMA)
    assert [p["source"] for p in payload["predictions"]] == ["sample:coffee", str(photo)]
    assert payload["predictions"][0]["top"][0]["class"] == 967
    errors = [line for line in proc.stderr.splitlines() if line.startswith("convlens: error:")]
    assert len(errors) == 2
    assert str(missing) in errors[0] and str(text) in errors[1]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["layers", "--model", "no_such_model"], "unknown model 'no_such_model'"),
        (
            ["activations", "sample:cat", "--layer", "blocks.3.depthwise_cnv"],
            "did you mean 'blocks.3.depthwise_conv'",
        ),
        (["predict", "sample:cat", "--top-k", "0"], "--top-k 0"),
        (["predict", "sample:nothing"], "sample:nothing"),
        (["predict", "sample:cat", "--no-such-option"], "unrecognized arguments"),
        (["gradients", "sample:cat", "--target", "crane"], "134"),
        (["predict", "sample:cat", "--device", "cuda:7"], "--device"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], needle: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_unexpected_error_exits_1_and_interrupt_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(ctx: object) -> int:
        raise RuntimeError("kaboom")

    def interrupted(ctx: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd_info, "run", boom)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert "kaboom" in err and "Traceback" not in err
    monkeypatch.setattr(cmd_info, "run", interrupted)
    assert main(["info"]) == 130


def test_info_and_layers_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    jsonschema.validate(info, cmd_info.SCHEMA)
    assert {m["name"] for m in info["models"]} >= {"efficientnet_lite0", "digits_cnn", "mnist_cnn"}
    assert main(["layers", "--json", "--filter", "blocks.3."]) == 0
    table = json.loads(capsys.readouterr().out)
    jsonschema.validate(table, cmd_layers.SCHEMA)
    names = [r["name"] for r in table["layers"]]
    assert "blocks.3.depthwise_conv" in names and all("blocks.3." in n for n in names)


def test_no_progress_bar_when_not_a_terminal(photo: Path) -> None:
    proc = run_cli("predict", str(photo), env={"CI": ""})
    assert proc.returncode == 0
    assert "\r" not in proc.stderr and "━" not in proc.stderr  # rich bar characters
    assert proc.stdout.startswith(str(photo))


def test_entry_point_is_installed() -> None:
    import importlib.metadata

    eps = importlib.metadata.entry_points(group="console_scripts")
    assert any(ep.name == "convlens" and ep.value == "convlens.cli.main:main" for ep in eps)
