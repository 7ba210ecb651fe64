"""Acceptance of issue 18, part 3: the web explorer does what the report does (pytest -m acceptance).

Headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright's Python package) on
the digits model, with a features folder of twelve real digits at ``conv2``. What the page
shows is compared by content, never by pixels of a screenshot:

- an uploaded digit's predictions equal ``Model.predict``;
- integrated gradients starts at the sign the report draws it with (``positive``), and the
  overlay's bytes equal ``render.overlay`` for the default and for a sign and clip chosen
  on the page;
- a report section, then all of them, run from the page, and one redrawn with the panel's
  sign and clip (a full run is cancelled first,
  with its progress bar moving): the pictures' bytes, read back from the DOM's ``data:``
  URIs, hash to the pictures of ``build_report`` on the same file;
- the layer browser: a layer without a features folder says so; a channel of ``conv2``
  shows the top patches of ``convlens.represent.top_patches`` over the folder's images;
- no page error, console error or failed request.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest

import convlens
from convlens.render.figures import array_to_png_bytes
from convlens.render.overlay import overlay, to_uint8_image

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits():
    return convlens.load_model("digits_cnn")


@pytest.fixture(scope="module")
def reference():
    """A second copy of the model for the references: the server runs the first one on its
    own threads, and two callers' hooks on one module would see each other's forwards."""
    return convlens.load_model("digits_cnn")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, digits):
    """Twelve real digits (8x8 PNGs) and their features at conv2 (``convlens features``)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from convlens.cli.main import main

    root = tmp_path_factory.mktemp("explorer")
    images = root / "images"
    images.mkdir()
    data = load_digits()
    for i in range(12):
        pixels = (data.images[i] * 255 / 16).round().astype(np.uint8)
        Image.fromarray(pixels).save(images / f"d{i:02d}-{data.target[i]}.png")
    features = root / "features-conv2"
    argv = ["features", str(images), "--layer", "conv2", "--model", "digits_cnn", "-q"]
    assert main([*argv, "-o", str(features)]) == 0
    return images, features


@pytest.fixture(scope="module")
def live(digits, folder):
    pytest.importorskip("fastapi", reason="the web explorer needs the 'web' extra")
    from convlens.server import create_app
    from convlens.server.background import serve_in_background

    app = create_app(models={"digits_cnn": digits}, features=[str(folder[1])])
    with serve_in_background(app) as url:
        yield url


def _data_uri_bytes(uri: str) -> bytes:
    head, _, payload = uri.partition(",")
    assert head.startswith("data:image/") and head.endswith(";base64")
    return base64.b64decode(payload)


def test_report_sign_clip_and_layer_browser_in_a_browser(
    browser, live, reference, folder, tmp_path
) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    from convlens.render.report import build_report
    from convlens.represent.features import load_features
    from convlens.represent.patches import top_patches

    data = load_digits()
    index = int(np.flatnonzero(data.target == 7)[3])
    photo = tmp_path / "seven.png"
    Image.fromarray((data.images[index] * 255 / 16).round().astype(np.uint8)).save(photo)

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on(
        "requestfailed",
        lambda req: (
            errors.append(f"{req.url}: {req.failure}")
            if "ERR_ABORTED" not in (req.failure or "")
            else None
        ),
    )
    page.on(
        "response",
        lambda r: errors.append(f"{r.url}: HTTP {r.status}") if r.status >= 400 else None,
    )
    page.goto(live + "/")
    page.wait_for_selector("body[data-ready='1']")

    # -- upload, predictions ---------------------------------------------------------------
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#predictions li >> nth=4")
    top = reference.predict(reference.prepare([str(photo)]), top_k=5)[0]
    shown = [
        int(c)
        for c in page.locator("#predictions li").evaluate_all("e => e.map(x => x.dataset.class)")
    ]
    assert shown == list(top.classes) and shown[0] == 7

    # -- sign and clip ---------------------------------------------------------------------
    result = convlens.explain(reference, [str(photo)], "integrated_gradients")
    original, display = result.originals[0], result.display[0]

    def overlay_shown(contains: str) -> bytes:
        page.wait_for_function(
            "(c) => { const i = document.querySelector('#overlay'); return i.dataset.ready === '1' && i.getAttribute('src').includes(c); }",
            arg=contains,
        )
        return page.request.get(live + page.get_attribute("#overlay", "src")).body()

    page.select_option("#method", "integrated_gradients")
    page.wait_for_function(
        "document.querySelector('#overlay-caption').textContent.startsWith('integrated_gradients')"
    )
    assert page.input_value("#sign") == "positive"  # the report's default, not the data's 'all'
    assert overlay_shown("sign=positive&clip=99") == array_to_png_bytes(
        overlay(original, display, alpha=0.5, sign="positive", clip=99)
    )
    page.select_option("#sign", "all")
    page.fill("#clip", "95")
    page.press("#clip", "Tab")
    assert overlay_shown("sign=all&clip=95") == array_to_png_bytes(
        overlay(original, display, alpha=0.5, sign="all", clip=95)
    )
    assert "all, clip 95%" in page.inner_text("#overlay-caption")

    # -- report: one section, a cancelled full run, then all sections ----------------------
    # the server's features folder is the report's index: the neighbours section is there too
    expected = build_report(reference, str(photo), name="seven.png", index=folder[1])
    pictures = {s["name"]: s["cells"][0]["fragment"] for s in expected.sections}

    def shown_hashes(section: str) -> list[str]:
        uris = page.locator(
            f"#report-output section[data-section='{section}'] figure img"
        ).evaluate_all("e => e.map(x => x.getAttribute('src'))")
        return [hashlib.sha256(_data_uri_bytes(u)).hexdigest() for u in uris]

    docs = ROOT / "docs" / "images" if os.environ.get("CONVLENS_DOC_IMAGES") == "1" else tmp_path
    docs.mkdir(parents=True, exist_ok=True)
    for name in ("gradcam", "predictions"):  # shown in the report's order, whatever the clicks'
        page.click(f"#report-buttons button[data-section='{name}']")
        page.wait_for_selector(f"#report-output section[data-section='{name}'] figure img")
        assert shown_hashes(name) == [i.sha256 for i in pictures[name].images]
    assert page.locator("#report-output section.report-section").evaluate_all(
        "e => e.map(x => x.dataset.section)"
    ) == ["predictions", "gradcam"]
    page.locator("#report-panel").screenshot(path=str(docs / "serve_report_panel.png"))

    page.check("#report-full")
    page.click("#report-buttons button[data-section='all']")
    page.wait_for_selector("#report-job:not([hidden])")
    page.wait_for_function("document.querySelector('#report-progress').value > 0", timeout=60_000)
    page.click("#report-cancel")
    page.wait_for_function("document.querySelector('#status').textContent === 'cancelled'")
    assert page.is_hidden("#report-job")

    page.uncheck("#report-full")
    page.click("#report-buttons button[data-section='all']")
    page.wait_for_selector("#report-output section[data-section='provenance']", timeout=120_000)
    names = page.locator("#report-output section.report-section").evaluate_all(
        "e => e.map(x => x.dataset.section)"
    )
    assert names == [s["name"] for s in expected.sections]
    for name, fragment in pictures.items():
        assert shown_hashes(name) == [i.sha256 for i in fragment.images], name
    ranking = page.locator("#report-output table.ranking tr td:nth-child(2)").all_inner_texts()
    assert ranking == [r["method"] for r in pictures["attribution"].summary["ranking"]]

    # the panel's own sign and clip redraw a section as build_report(sign=, clip=) does
    page.select_option("#report-sign", "all")
    page.fill("#report-clip", "95")
    page.click("#report-buttons button[data-section='gradcam']")
    page.wait_for_function(
        "document.querySelector(\"#report-output section[data-section='gradcam']\").textContent.includes('all; clip 95%')"
    )
    redrawn = build_report(
        reference, str(photo), only=["gradcam"], name="seven.png", sign="all", clip=95
    )
    assert shown_hashes("gradcam") == [i.sha256 for i in redrawn.images]
    assert shown_hashes("gradcam") != [i.sha256 for i in pictures["gradcam"].images]

    # -- layer browser -----------------------------------------------------------------------
    page.select_option("#browse-layer", "conv1")
    page.wait_for_selector("#maps[data-layer='conv1'] img >> nth=15")
    page.click("#maps img >> nth=0")
    page.wait_for_selector("#patches-note[data-missing='conv1']")
    assert "Layer conv1 has no features folder" in page.inner_text("#patches-note")
    assert "convlens features IMAGES --layer conv1" in page.inner_text("#patches-note")

    page.select_option("#browse-layer", "conv2")
    page.wait_for_selector("#maps[data-layer='conv2'] img >> nth=15")
    channel = int(page.get_attribute("#maps img >> nth=2", "data-channel"))
    page.click("#maps img >> nth=2")
    page.wait_for_selector(f"#patches[data-channel='{channel}'] img >> nth=8", timeout=120_000)
    paths = load_features(folder[1]).paths  # the folder's images, in its order
    patches = top_patches(reference, paths, "conv2", [channel], 9)
    sources = page.locator("#patches img").evaluate_all("e => e.map(x => x.getAttribute('src'))")
    assert len(sources) == 9
    for rank, src in enumerate(sources):
        got = np.asarray(Image.open(io.BytesIO(page.request.get(live + src).body())))
        np.testing.assert_array_equal(got, to_uint8_image(patches["patches"][0, rank]))
    captions = page.locator("#patches figcaption").all_inner_texts()
    best = Path(patches.provenance["params"]["paths"][0][0]).name
    assert captions[0].startswith(f"#1 {best}")
    page.wait_for_selector("#vis[src]", timeout=120_000)  # the channel's visualisation too

    out = docs / "serve_report.png"
    # the panels and the report's first sections (the whole report is several screens long)
    page.screenshot(
        path=str(out), full_page=True, clip={"x": 0, "y": 0, "width": 1400, "height": 1300}
    )
    assert errors == []
    page.close()
