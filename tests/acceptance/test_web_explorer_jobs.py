"""Acceptance of issue 9, "long jobs show progress and can be cancelled", for attribution.

Headless Chromium (Debian's ``/usr/bin/chromium`` through Playwright's Python package) on
the built-in model: a slow method chosen on the page runs as a job (``POST
/api/jobs/explain``), its progress bar moves, Cancel stops it and nothing is stored; a
method that finishes shows an overlay whose bytes equal ``render.overlay`` of
``convlens.explain`` for the same arguments.
"""

from __future__ import annotations

import pytest

import convlens
from convlens.render.figures import array_to_png_bytes
from convlens.render.overlay import overlay

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(900)]


def test_slow_attribution_is_a_job_with_progress_and_cancel(browser, web_server, lite0) -> None:
    url, app = web_server
    page = browser.new_page(viewport={"width": 1500, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "response",
        lambda r: errors.append(f"{r.url}: HTTP {r.status}") if r.status >= 400 else None,
    )
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.click("#samples button[data-sample='moped']")
    page.wait_for_selector("#predictions li >> nth=4")
    page.wait_for_selector("#overlay[data-ready='1']")  # the default Grad-CAM (a quick, sync map)
    image = page.evaluate("document.body.dataset.image")
    folder = app.state.explorer.storage.root / image
    stored = sorted(p.name for p in folder.glob("expl-*.json"))

    # Score-CAM at the last layer masks up to 1,280 channels (~40 s): cancel it once it has moved
    page.select_option("#method", "scorecam")
    page.wait_for_selector("#explain-job:not([hidden])")
    page.wait_for_function("document.querySelector('#explain-progress').value > 0", timeout=120_000)
    maximum = page.evaluate("document.querySelector('#explain-progress').max")
    assert 64 < maximum <= 1280  # the method's count of masked inputs (constant channels skipped)
    page.click("#explain-cancel")
    page.wait_for_function(
        "document.querySelector('#status').textContent === 'cancelled'", timeout=60_000
    )
    assert page.is_hidden("#explain-job")
    assert sorted(p.name for p in folder.glob("expl-*.json")) == stored  # nothing stored
    assert not page.locator("#overlay-caption").inner_text().startswith("scorecam")

    # SmoothGrad (25 noisy images) runs to the end as a job; its overlay equals the library's
    page.select_option("#method", "smoothgrad")
    page.wait_for_function(
        "document.querySelector('#overlay-caption').textContent.startsWith('smoothgrad')",
        timeout=300_000,
    )
    page.wait_for_selector("#overlay[data-ready='1']")
    got = page.request.get(url + page.get_attribute("#overlay", "src")).body()
    result = convlens.explain(lite0, ["sample:moped"], "smoothgrad")
    assert got == array_to_png_bytes(overlay(result.originals[0], result.display[0], alpha=0.5))
    assert errors == []
    page.close()
