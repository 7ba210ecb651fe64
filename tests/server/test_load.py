"""A real uvicorn on a loopback port: 500 requests at 50 at a time, no error, bounded memory.

Two "tabs" work on two different images at once; every answer is checked against the
answer for its own image, so a server that mixed up state between requests would fail.
"""

from __future__ import annotations

import asyncio
import http.client
import time
from urllib.parse import urlsplit

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the web explorer needs the 'web' extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn")

REQUESTS, CONCURRENCY, RSS_LIMIT_MB = 500, 50, 100


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture()
def live(digits_model, tmp_path):
    from convlens.server import create_app
    from convlens.server.background import serve_in_background

    app = create_app(models={"digits_cnn": digits_model}, storage_root=str(tmp_path / "area"))
    with serve_in_background(app) as url:
        yield url, app


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (no client-side ``../`` clean-up)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_500_requests_at_50_concurrent(live, digit_png, photo_png) -> None:
    url, _ = live

    async def scenario() -> tuple[list[str], float, float]:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
            tabs = []
            for name, data in (("digit.png", digit_png), ("cat.png", photo_png)):
                image = (await client.post(f"/api/images?name={name}", content=data)).json()
                predictions = (await client.get(f"/api/images/{image['id']}/predictions")).json()
                explained = (
                    await client.post(
                        f"/api/images/{image['id']}/explain", json={"method": "saliency"}
                    )
                ).json()
                overlay = (
                    await client.get(
                        f"/api/images/{image['id']}/overlays/{explained['key']}.png?alpha=0.5"
                    )
                ).content
                tabs.append((image["id"], predictions, explained, overlay))
            assert tabs[0][1] != tabs[1][1]  # the two images really differ
            errors: list[str] = []
            semaphore = asyncio.Semaphore(CONCURRENCY)

            async def one(k: int) -> None:
                image, predictions, explained, overlay = tabs[k % 2]
                kind = (k // 2) % 5
                async with semaphore:
                    try:
                        if kind == 0:
                            r = await client.get(f"/api/images/{image}/predictions")
                            ok = r.status_code == 200 and r.json() == predictions
                        elif kind == 1:
                            r = await client.post(
                                f"/api/images/{image}/explain", json={"method": "saliency"}
                            )
                            ok = r.status_code == 200 and r.json() == explained
                        elif kind == 2:
                            r = await client.get(
                                f"/api/images/{image}/overlays/{explained['key']}.png?alpha=0.5"
                            )
                            ok = r.status_code == 200 and r.content == overlay
                        elif kind == 3:
                            r = await client.get("/api/info")
                            ok = r.status_code == 200 and r.json()["models"] == ["digits_cnn"]
                        else:  # a fresh upload each time: storage grows, the oldest images are evicted
                            r = await client.post("/api/images?name=again.png", content=digit_png)
                            ok = r.status_code == 201
                        if not ok:
                            errors.append(
                                f"request {k} kind {kind}: HTTP {r.status_code} {r.text[:120]}"
                            )
                    except httpx.HTTPError as exc:
                        errors.append(f"request {k} kind {kind}: {type(exc).__name__} {exc}")

            # warm-up round, then measure: allocator and caches settle in the first round
            await asyncio.gather(*(one(k) for k in range(100)))
            before = _rss_mb()
            started = time.perf_counter()
            await asyncio.gather(*(one(k) for k in range(REQUESTS)))
            seconds = time.perf_counter() - started
            return errors, _rss_mb() - before, seconds

    errors, growth, seconds = asyncio.run(scenario())
    print(
        f"{REQUESTS} requests at {CONCURRENCY} concurrent in {seconds:.1f} s; RSS growth {growth:.1f} MB"
    )
    assert errors == []
    assert growth < RSS_LIMIT_MB


def test_traversal_refused_on_the_wire(live) -> None:
    url, app = live
    secret = app.state.explorer.storage.root.parent / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    for path in [
        "/api/images/../../secret.txt",
        "/api/images/..%2f..%2fsecret.txt/predictions",
        "/api/images/%2e%2e%2f%2e%2e%2fsecret.txt/files/map-0000000000000000.npy",
        "/api/shared/..%2fsecret.txt",
        "/api/shared/..%5csecret.txt",
        "/api/shared/%2e%2e/secret.txt",
        "/static/../../secret.txt",
        "/static/..%2f..%2fsecret.txt",
        "/api/shared//etc/passwd",
    ]:
        status, body = _raw_get(url, path)
        assert 400 <= status < 500, (path, status)
        assert b"TOP-SECRET" not in body and b"root:" not in body
