"""Real ``--json`` outputs of commands whose other tests do not read them, validated against
their generated schemas, with the numbers checked against torch on the same model."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch

from convlens.cli import cmd_activations, cmd_filters, cmd_gradients
from convlens.cli.main import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str], schema: dict) -> dict:
    assert main([*argv, "--model", "digits_cnn", "--json", "-q"]) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, schema)
    return payload


def _layer_output(layer: str) -> torch.Tensor:
    """``layer``'s output on sample:cat, by a plain forward hook (not convlens.hooks)."""
    import convlens

    model = convlens.load_model("digits_cnn")
    x = model.prepare(["sample:cat"]).x  # input space
    module = dict(model.module.named_modules())[layer]
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            model.module.eval()(x)
    finally:
        handle.remove()
    return seen[0]


def test_activations_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = _run(
        ["activations", "sample:cat", "--layer", "act2", "-o", str(tmp_path / "a.png")],
        capsys,
        cmd_activations.SCHEMA,
    )
    (image,) = payload["images"]
    reference = _layer_output("act2")
    assert image["shape"] == list(reference.shape[1:])
    strengths = [c["strength"] for c in image["top_channels"]]
    assert strengths == sorted(strengths, reverse=True)
    assert all(0 <= c["channel"] < reference.shape[1] for c in image["top_channels"])


def test_gradients_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = _run(
        ["gradients", "sample:cat", "-o", str(tmp_path / "g.png")], capsys, cmd_gradients.SCHEMA
    )
    (image,) = payload["images"]
    import convlens

    model = convlens.load_model("digits_cnn")
    with torch.no_grad():
        logits = model.module.eval()(model.prepare(["sample:cat"]).x)
    assert image["target_class"] == int(logits.argmax())  # the default target: the prediction
    assert image["layers"] and all(row["grad_norm"] >= 0 for row in image["layers"])


def test_filters_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = _run(["filters", "-o", str(tmp_path / "f.png")], capsys, cmd_filters.SCHEMA)
    assert payload["model"] == "digits_cnn"
