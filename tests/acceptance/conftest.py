"""Acceptance tier: run with `pytest -m acceptance` (deselected by the default `pytest`).

The web explorer's browser tests share a headless Debian Chromium (driven by Playwright,
never downloaded) and a live server on the built-in model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium floods this machine's closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs the playwright Python package (test extra)"
    )
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def web_server(lite0: Any) -> Iterator[tuple[str, Any]]:
    """``(url, app)`` of the explorer serving the built-in model on a free loopback port."""
    pytest.importorskip("fastapi", reason="the web explorer needs the 'web' extra")
    from convlens.server import create_app
    from convlens.server.background import serve_in_background

    app = create_app(models={"efficientnet_lite0": lite0})
    with serve_in_background(app) as url:
        yield url, app
