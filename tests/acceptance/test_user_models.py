"""Issue 16 part 1, as a user runs it: the `convlens` command in a subprocess on a network
defined in the user's own file (reused in-place ReLU, residual block, batch norm), with a
checkpoint, labels and preprocessing flags, or the same in convlens.toml."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.user_model import (
    LABELS,
    MEAN,
    SIZE,
    STD,
    import_user_file,
    model_flags,
    write_user_model,
)

pytestmark = pytest.mark.acceptance


def _cli(
    *args: str, cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("convlens")
    cmd = [exe] if exe else [sys.executable, "-m", "convlens.cli.main"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_user_model(tmp_path_factory.mktemp("user"))


def _captum_reference(files: dict[str, Path], method: str, target: int) -> torch.Tensor:
    from captum.attr import Deconvolution, GuidedBackprop, Saliency

    net = import_user_file(files["net"]).build(inplace=True)
    net.load_state_dict(torch.load(files["weights"], weights_only=True))
    net.eval()
    pixels = torch.from_numpy(
        np.asarray(Image.open(files["image"]).convert("RGB"), dtype=np.float32) / 255
    ).permute(2, 0, 1)[None]
    x = ((pixels - MEAN) / STD).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "saliency":
            return Saliency(net).attribute(x, target=target, abs=False).detach()
        cls = GuidedBackprop if method == "guided_backprop" else Deconvolution
        return cls(net).attribute(x, target=target).detach()


@pytest.mark.parametrize("method", ["saliency", "guided_backprop", "deconvnet"])
def test_explain_in_a_subprocess_equals_captum_on_the_same_net(
    files: dict[str, Path], tmp_path: Path, method: str
) -> None:
    raw = tmp_path / f"{method}.npy"
    done = _cli(
        "explain",
        str(files["image"]),
        *model_flags(files),
        "--method",
        method,
        "--target",
        "fish",
        "--raw",
        str(raw),
        "-o",
        str(tmp_path / f"{method}.png"),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["models"] == [f"{files['net']}:build"]
    ours = torch.from_numpy(np.load(raw))
    torch.testing.assert_close(
        ours, _captum_reference(files, method, LABELS.index("fish")), atol=1e-4, rtol=0
    )


def test_the_same_model_from_convlens_toml_and_report(
    files: dict[str, Path], tmp_path: Path
) -> None:
    folder = files["net"].parent
    (tmp_path / "convlens.toml").write_text(
        f'[model]\nmodel = "{folder}/net.py:build"\nweights = "{folder}/ckpt.pt"\ninput-size = {SIZE}\nmean = {MEAN}\nstd = {STD}\nlabels = "{folder}/labels.txt"\n'
    )
    raw = tmp_path / "g.npy"
    done = _cli(
        "explain",
        str(files["image"]),
        "--method",
        "guided_backprop",
        "--target",
        "fish",
        "--raw",
        str(raw),
        "-o",
        "g.png",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    torch.testing.assert_close(
        torch.from_numpy(np.load(raw)),
        _captum_reference(files, "guided_backprop", LABELS.index("fish")),
        atol=1e-4,
        rtol=0,
    )
    report = _cli("report", str(files["image"]), "-o", "r.html", "--json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert summary["images"] > 3 and "net.py:build" in html
    assert all(label in html for label in LABELS)


def test_bad_user_input_is_one_line_exit_2_and_writes_nothing(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "never.png"
    for flags in (
        ["--model", f"{files['net']}:broken"],
        ["--model", f"{files['net']}:segmenter", "--input-size", "16"],
        ["--model", f"{tmp_path}/none.py:build"],
    ):
        done = _cli("explain", str(files["image"]), *flags, "--method", "saliency", "-o", str(out))
        assert (
            done.returncode == 2
            and len(done.stderr.strip().splitlines()) == 1
            and "Traceback" not in done.stderr
        ), done.stderr
        assert not out.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_on_a_user_model(files: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    port = _free_port()
    exe = shutil.which("convlens")
    cmd = [exe] if exe else [sys.executable, "-m", "convlens.cli.main"]
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [*cmd, "serve", *model_flags(files), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # up to 60 s for imports and the model
            try:
                with urllib.request.urlopen(f"{base}/api/info", timeout=2) as r:
                    info = json.loads(r.read())
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                time.sleep(0.2)
        else:
            pytest.fail("the explorer did not answer within 60 s")
        assert info["models"] == ["net.py:build"]
        request = urllib.request.Request(
            f"{base}/api/images?name=img.png", data=files["image"].read_bytes(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            image = json.loads(r.read())
        with urllib.request.urlopen(
            f"{base}/api/images/{image['id']}/predictions?top_k=4", timeout=30
        ) as r:
            top = json.loads(r.read())["top"]
        net = import_user_file(files["net"]).build()
        net.load_state_dict(torch.load(files["weights"], weights_only=True))
        net.eval()
        pixels = torch.from_numpy(
            np.asarray(Image.open(files["image"]).convert("RGB"), dtype=np.float32) / 255
        ).permute(2, 0, 1)[None]
        with torch.no_grad():
            probabilities = net((pixels - MEAN) / STD).softmax(1)[0]
        order = probabilities.argsort(descending=True).tolist()
        assert [t["label"] for t in top] == [LABELS[i] for i in order]
        np.testing.assert_allclose(
            [t["probability"] for t in top], probabilities[order].numpy(), atol=1e-5
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
