"""Fixtures of the web explorer tests: the digits model, PNG bytes, a raw ASGI caller."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from urllib.parse import unquote

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


@pytest.fixture(scope="session")
def digits_model():
    import convlens

    return convlens.load_model("digits_cnn")


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def digit_png() -> bytes:
    """A real handwritten digit of scikit-learn's set (a 3), as an 8x8 grayscale PNG."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    index = int(np.flatnonzero(digits.target == 3)[0])
    return png_bytes((digits.images[index] * 255 / 16).round().astype(np.uint8))


@pytest.fixture(scope="session")
def photo_png() -> bytes:
    """The bundled cat photo as RGB PNG bytes (any size works: the model resizes)."""
    from convlens.data.samples import load_sample

    return png_bytes(load_sample("cat")[::4, ::4].copy())


@pytest.fixture()
def client_factory(digits_model, tmp_path) -> Iterator:
    """``make(**create_app_options) -> (TestClient, app)``; closes them at the end."""
    import warnings

    from convlens.server import create_app

    with warnings.catch_warnings():
        # starlette's TestClient warns that plain httpx is deprecated there; harmless
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    made = []

    def make(**options):
        options.setdefault("storage_root", str(tmp_path / "area"))
        app = create_app(models={"digits_cnn": digits_model}, **options)
        client = TestClient(app)
        client.__enter__()
        made.append(client)
        return client, app

    yield make
    for client in made:
        client.__exit__(None, None, None)


def raw_request(app, method: str, raw_path: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One request straight into the ASGI app, the path left exactly as given.

    HTTP clients normalise ``../`` away before sending; uvicorn does not. This builds
    the scope as uvicorn does (``path`` = percent-decoded ``raw_path``, no dot-segment
    removal) so traversal attempts reach the routes unchanged.
    """
    path, _, query = raw_path.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path.decode("ascii")),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    messages: list[dict] = []

    async def call() -> None:
        finished = asyncio.Event()
        sent_body = False

        async def receive() -> dict:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()  # then the client goes away, as a real one does
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            messages.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished.set()

        await app(scope, receive, send)

    asyncio.run(call())
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    return status, b"".join(
        m.get("body", b"") for m in messages if m["type"] == "http.response.body"
    )


@pytest.fixture(scope="session")
def raw():
    """:func:`raw_request`, for tests (conftest modules are not importable by name)."""
    return raw_request


@pytest.fixture(scope="session")
def to_png():
    """:func:`png_bytes`, for tests."""
    return png_bytes
