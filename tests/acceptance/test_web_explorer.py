"""Acceptance of issue 9, web explorer (pytest -m acceptance).

Headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright's Python package;
no browser download) against a real uvicorn serving the built-in model:

- upload a photo through the page's file input; the prediction text equals
  ``convlens predict --json`` run as a separate process;
- switch method, layer, target and opacity; after each switch the overlay's bytes
  (fetched from the ``img`` element's ``src``) equal ``render.overlay`` of
  ``convlens.explain`` for the same arguments, computed here;
- feature maps, a channel visualisation and an attack run from the page, with the
  attacked prediction equal to ``convlens.attack``;
- a screenshot is saved (``docs/images/serve.png`` with ``CONVLENS_DOC_IMAGES=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import convlens
from convlens.render.figures import array_to_png_bytes
from convlens.render.overlay import overlay

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live(web_server):
    return web_server[0]


def _expected_overlay(model, path: Path, method: str, target, layer, alpha: float) -> bytes:
    result = convlens.explain(model, [str(path)], method, target, layer=layer)
    return array_to_png_bytes(overlay(result.originals[0], result.display[0], alpha=alpha))


def test_explorer_in_a_real_browser(browser, live, lite0, tmp_path) -> None:
    from PIL import Image

    from convlens.data.samples import load_sample

    photo = tmp_path / "moped.jpg"
    Image.fromarray(load_sample("moped")).save(photo, quality=92)

    page = browser.new_page(viewport={"width": 1500, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # an image whose src changes again before it loaded is aborted by the browser: not an error
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
    assert page.locator("#labels option").count() == 1000  # the searchable target list

    # -- upload, predictions -------------------------------------------------------------
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#predictions li >> nth=4")
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "convlens.cli.main",
            "predict",
            "--json",
            "--top-k",
            "5",
            str(photo),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "1"},
        check=True,
    )
    top = json.loads(cli.stdout)["predictions"][0]["top"]
    shown = page.locator("#predictions li").all_inner_texts()
    assert shown == [f"{t['label']} ({t['class']}) {t['probability'] * 100:.1f}%" for t in top]
    assert top[0]["class"] in (665, 670)  # the moped is a moped

    def overlay_bytes() -> tuple[str, bytes]:
        page.wait_for_selector("#overlay[data-ready='1']")
        src = page.get_attribute("#overlay", "src")
        return src, page.request.get(live + src).body()

    # -- method, layer, target, opacity switches -----------------------------------------
    default_layer = page.input_value("#layer")
    assert page.input_value("#method") == "gradcam" and default_layer == "head_act"
    _, got = overlay_bytes()
    assert got == _expected_overlay(lite0, photo, "gradcam", None, "head_act", 0.5)

    page.select_option("#method", "saliency")
    _, got = overlay_bytes()
    assert got == _expected_overlay(lite0, photo, "saliency", None, None, 0.5)

    page.select_option("#method", "gradcam")
    page.select_option("#layer", "blocks.12")
    page.wait_for_function(
        "document.querySelector('#overlay-caption').textContent.includes('blocks.12')"
    )
    _, got = overlay_bytes()
    assert got == _expected_overlay(lite0, photo, "gradcam", None, "blocks.12", 0.5)

    page.fill("#target", "285 Egyptian cat")
    page.press("#target", "Tab")  # change event
    page.wait_for_function(
        "document.querySelector('#overlay-caption').textContent.includes('(285)')"
    )
    _, got = overlay_bytes()
    assert got == _expected_overlay(lite0, photo, "gradcam", 285, "blocks.12", 0.5)

    page.fill("#opacity", "0.8")
    page.wait_for_function(
        "document.querySelector('#overlay').getAttribute('src').includes('alpha=0.80')"
    )
    _, got = overlay_bytes()
    assert got == _expected_overlay(lite0, photo, "gradcam", 285, "blocks.12", 0.8)
    assert page.get_attribute("#download-overlay", "href").endswith("download=true")

    # -- feature maps, channel visualisation, attack --------------------------------------
    page.click("#show-maps")
    page.wait_for_selector("#maps img >> nth=15")
    page.click("#maps img >> nth=0")
    page.wait_for_selector("#vis[src]", timeout=300_000)
    assert page.request.get(live + page.get_attribute("#vis", "src")).body().startswith(b"\x89PNG")

    page.fill("#steps", "5")
    page.click("#run-attack")
    page.wait_for_selector("#attack-predictions li >> nth=4", timeout=300_000)
    expected = convlens.attack(lite0, [str(photo)], "pgd", eps=4 / 255, steps=5, seed=0)
    after = [
        int(c)
        for c in page.locator("#attack-predictions li").evaluate_all(
            "els => els.map(e => e.dataset.class)"
        )
    ]
    assert after == expected["top_classes_after"][0].tolist()

    # back to the predicted class at the default layer for the picture
    page.fill("#target", "")
    page.press("#target", "Tab")
    page.select_option("#layer", "head_act")
    page.wait_for_function(
        "(c) => { const t = document.querySelector('#overlay-caption').textContent; return t.includes('head_act') && t.includes(c); }",
        arg=f"({top[0]['class']})",
    )
    _, got = overlay_bytes()
    assert got == _expected_overlay(lite0, photo, "gradcam", None, "head_act", 0.8)
    page.wait_for_selector(
        "#maps[data-layer='head_act'] img >> nth=15"
    )  # the maps follow the layer

    out = (
        ROOT / "docs" / "images" / "serve.png"
        if os.environ.get("CONVLENS_DOC_IMAGES") == "1"
        else tmp_path / "serve.png"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 10_000
    assert errors == []
    page.close()
