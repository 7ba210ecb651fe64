"""Run the explorer on a background thread (notebooks, tests): :func:`serve_in_background`."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["serve_in_background"]


@contextmanager
def serve_in_background(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread; yields the base URL, stops on exit.

    ``port=0`` takes a free port: the socket is bound here and handed to uvicorn, so no
    other process can grab the port in between.

    Examples
    --------
    >>> with serve_in_background(create_app()) as url:
    ...     print(url)  # http://127.0.0.1:41235
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="convlens-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the explorer did not start on {host}:{bound}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound}" if ":" not in host else f"http://[{host}]:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
