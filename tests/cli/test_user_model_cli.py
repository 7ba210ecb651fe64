"""Every command on a user's own network (``--model file.py:factory`` and the model flags):
attributions equal Captum's, report/serve/features/neighbors work on it, and bad input is
one line, exit 2, nothing written."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import convlens
from convlens.cli.main import main
from convlens.models.spec import ModelSpec

from helpers.user_model import (
    LABELS,
    MEAN,
    SIZE,
    STD,
    import_user_file,
    model_flags,
    write_user_model,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_user_model(tmp_path_factory.mktemp("user"))


def _library_model(files: dict[str, Path]) -> convlens.Model:
    return ModelSpec(
        f"{files['net']}:build",
        weights=str(files["weights"]),
        input_size=(SIZE, SIZE),
        mean=(MEAN,),
        std=(STD,),
        labels=str(files["labels"]),
    ).load()


@pytest.mark.captum
@pytest.mark.parametrize("method", ["saliency", "guided_backprop", "deconvnet"])
def test_cli_attributions_on_a_user_file_equal_captum(
    files: dict[str, Path], tmp_path: Path, method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    raw = tmp_path / "raw.npy"
    code = main(
        [
            "explain",
            str(files["image"]),
            *model_flags(files),
            "--method",
            method,
            "--target",
            "bird",
            "--raw",
            str(raw),
            "-o",
            str(tmp_path / "m.png"),
            "--json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    ours = torch.from_numpy(np.load(raw))
    # Captum on the same file and weights, built and fed by hand (not through convlens)
    net = import_user_file(files["net"]).build(inplace=True)
    net.load_state_dict(torch.load(files["weights"], weights_only=True))
    net.eval()
    from PIL import Image

    pixels = torch.from_numpy(
        np.asarray(Image.open(files["image"]).convert("RGB"), dtype=np.float32) / 255
    ).permute(2, 0, 1)[None]
    x = ((pixels - MEAN) / STD).requires_grad_(True)
    bird = LABELS.index("bird")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum's backward-hook notices
        if method == "saliency":
            ref = captum_attr.Saliency(net).attribute(x, target=bird, abs=False)
        elif method == "guided_backprop":
            ref = captum_attr.GuidedBackprop(net).attribute(x, target=bird)
        else:
            ref = captum_attr.Deconvolution(net).attribute(x, target=bird)
    torch.testing.assert_close(ours, ref.detach(), atol=1e-4, rtol=0)
    if (
        method != "saliency"
    ):  # the rule changed something: not the plain gradient under another name
        (plain,) = torch.autograd.grad(net(x)[0, bird], x)
        assert (ours - plain).abs().max() > 1e-3


def _refused(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str], pattern: str) -> None:
    import re

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err
    assert not out.exists(), f"{out} was written"


def test_bad_user_models_are_one_line_and_write_nothing(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, net = str(files["image"]), files["net"]
    out = tmp_path / "out.png"
    renamed = tmp_path / "renamed.pt"
    state = torch.load(files["weights"], weights_only=True)
    state["classifier.weight"] = state.pop("fc.weight")
    torch.save(state, renamed)
    cases = [
        (["--model", f"{tmp_path / 'absent.py'}:build"], "no such file"),
        (["--model", f"{net}:nothere"], "'nothere' is not defined there"),
        (["--model", f"{net}:broken"], r"broken\(\) raised ValueError: no GPU here"),
        (
            ["--model", f"{net}:build", "--weights", str(renamed), "--input-size", "16"],
            r"missing \(first: fc\.weight\).*unexpected \(first: classifier\.weight\)",
        ),
        (["--model", f"{net}:build", "--weights", str(tmp_path / "none.pt")], "no such file"),
        (
            [
                "--model",
                f"{net}:build",
                "--input-size",
                "16",
                "--labels",
                str(tmp_path / "none.txt"),
            ],
            "no such file",
        ),
        (["--model", f"{net}:build", "--input-size", "sixteen"], "input-size 'sixteen'"),
        (
            ["--model", f"{net}:build,digits_cnn", "--weights", str(files["weights"])],
            "apply to one model",
        ),
    ]
    for flags, pattern in cases:
        _refused(
            ["explain", image, *flags, "--method", "saliency", "-o", str(out)], out, capsys, pattern
        )
    # a dense output where the command needs class scores: the message says who needs what
    for command in (
        ["predict", image],
        ["attack", image, "-o", str(out)],
        ["explain", image, "--method", "saliency", "-o", str(out)],
    ):
        _refused(
            [*command, "--model", f"{net}:segmenter", "--input-size", "16"],
            out,
            capsys,
            rf"convlens {command[0]} needs class scores \(N, classes\).*\(N, 3, 16, 16\)",
        )


def test_config_file_in_the_working_folder_and_flags_that_win(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = files["net"].parent
    (tmp_path / "convlens.toml").write_text(
        f'[model]\nmodel = "{folder}/net.py:build"\nweights = "{folder}/ckpt.pt"\ninput-size = {SIZE}\nmean = {MEAN}\nstd = {STD}\nlabels = "{folder}/labels.txt"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(files["image"]), "--json", "--top-k", "4"]) == 0
    got = json.loads(capsys.readouterr().out)
    expected = _library_model(files).predict([str(files["image"])], top_k=4)[0]
    top = got[0]["top"] if isinstance(got, list) else got["predictions"][0]["top"]
    assert [t["label"] for t in top] == expected.labels
    np.testing.assert_allclose([t["probability"] for t in top], expected.probabilities, atol=1e-6)
    # a flag wins over the file: other statistics give other probabilities
    assert main(["predict", str(files["image"]), "--json", "--top-k", "4", "--mean", "0.2"]) == 0
    flagged = json.loads(capsys.readouterr().out)
    top2 = flagged[0]["top"] if isinstance(flagged, list) else flagged["predictions"][0]["top"]
    assert not np.allclose([t["probability"] for t in top2], [t["probability"] for t in top])


def test_report_on_a_user_model(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(files["image"]), *model_flags(files), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    html = out.read_text(encoding="utf-8")
    expected = _library_model(files).predict([str(files["image"])], top_k=1)[0]
    assert expected.labels[0] in html and f"{files['net'].name}:build" in html
    assert summary["out"] == str(out)


def test_serve_loads_a_user_model(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    import uvicorn

    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: captured.update(app=app, **kw))
    assert main(["serve", *model_flags(files), "--port", "0"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    with TestClient(captured["app"], base_url="http://127.0.0.1") as client:
        info = client.get("/api/info").json()
        assert info["models"] == ["net.py:build"]  # the URL key of a user file: no slash
        assert len(client.get("/api/models/net.py:build/labels").json()) == len(LABELS)
        image = client.post("/api/images?name=img.png", content=files["image"].read_bytes()).json()
        got = client.get(f"/api/images/{image['id']}/predictions", params={"top_k": 2}).json()
        expected = _library_model(files).predict([str(files["image"])], top_k=2)[0]
        assert [t["label"] for t in got["top"]] == expected.labels
        np.testing.assert_allclose(
            [t["probability"] for t in got["top"]], expected.probabilities, atol=1e-6
        )


def test_features_then_neighbors_load_the_user_model_again(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)).save(
            photos / f"{i}.png"
        )
    index = tmp_path / "index"
    assert (
        main(
            [
                "features",
                str(photos),
                *model_flags(files),
                "--layer",
                "block",
                "-o",
                str(index),
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    # neighbors is not told the model: it loads it from what the features folder recorded
    assert (
        main(
            [
                "neighbors",
                str(photos / "2.png"),
                "--index",
                str(index),
                "--k",
                "2",
                "-o",
                str(tmp_path / "n.png"),
                "--json",
            ]
        )
        == 0
    )
    got = json.loads(capsys.readouterr().out)
    first = got["neighbors"][0] if "neighbors" in got else got["results"][0]
    assert Path(first["path"]).name == "2.png" and first["distance"] == pytest.approx(0, abs=1e-4)


def test_help_lists_the_model_flags() -> None:
    from convlens.cli.main import build_parser

    helptext = build_parser()._subparsers._group_actions[0].choices["explain"].format_help()  # type: ignore[union-attr]
    for flag in (
        "--weights",
        "--trust-checkpoint",
        "--input-size",
        "--mean",
        "--std",
        "--channels",
        "--labels",
        "--config",
    ):
        assert flag in helptext
    assert sys.executable  # the subprocess form runs in the acceptance tier
