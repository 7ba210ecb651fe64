"""``convlens serve [--model M] [--host 127.0.0.1] [--port 8000] [--features DIR ...]``: the
local web explorer."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import sys
from typing import Any

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least, between

log = logging.getLogger("convlens")


class ServeOutput(TypedDict):
    """Printed once the server stops (it serves until interrupted)."""

    url: str
    models: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(ServeOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="local web explorer: predictions, attributions, feature maps, attacks in the browser",
        description=(
            "Serves the explorer page and its JSON API (schema at /openapi.json) until interrupted. Binds to 127.0.0.1 by default: the API has no authentication, so another host is only for trusted networks. `--model a,b` offers several models. Needs the `web` extra: pip install 'convlens[web]'."
        ),
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument(
        "--max-bytes",
        type=int,
        default=20_000_000,
        help="largest upload in bytes (default 20000000)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=40_000_000,
        help="largest upload in width x height (default 40000000)",
    )
    p.add_argument(
        "--features",
        metavar="DIR",
        nargs="+",
        action="extend",
        default=[],
        help="folders written by `convlens features` with a served model: clicking a channel of the folder's layer shows its top patches over the folder's images (the first folder of a model also feeds the report's neighbours section)",
    )
    p.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(ctx: Context) -> int:
    from convlens.errors import MissingDependencyError

    args = ctx.args
    between(args.port, 0, 65535, "--port")
    at_least(args.max_bytes, 1, "--max-bytes")
    at_least(args.max_pixels, 1, "--max-pixels")
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"convlens serve needs {' and '.join(missing)}: pip install 'convlens[web]'"
        )
    ctx.model_specs()  # a bad --model / config fails here, before the warning and the imports
    if not is_loopback(args.host):
        log.warning(
            "WARNING: binding to %s makes the explorer reachable from other machines; it has NO authentication. Use the default 127.0.0.1 unless this network is trusted.",
            args.host,
        )
    import uvicorn

    from convlens.server import create_app
    from convlens.server.app import LOOPBACK_HOSTS

    models: dict[str, Any] = {}
    for model in ctx.models(class_scores=True):
        models[_url_key(model.name, models)] = model
    names = list(models)
    # on loopback only loopback Host headers: a page whose domain rebinds to 127.0.0.1 is refused
    hosts = [*LOOPBACK_HOSTS, args.host] if is_loopback(args.host) else None
    app = create_app(
        models=models,
        max_bytes=args.max_bytes,
        max_pixels=args.max_pixels,
        allowed_hosts=hosts,
        features=args.features,
    )
    url = f"http://{args.host}:{args.port}/"
    print(f"convlens explorer on {url} (Ctrl+C stops it)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    if ctx.json:
        payload: ServeOutput = {"url": url, "models": names}
        ctx.emit_json(payload)
    return 0


def _url_key(name: str, taken: dict[str, object]) -> str:
    """A model's key in the explorer's URLs: its name, or for a user file
    (``nets/resnet.py:build``) the file name and factory, which hold no slash."""
    key = (
        name if "/" not in name and "\\" not in name else name.replace("\\", "/").rsplit("/", 1)[-1]
    )
    base, k = key, 2
    while key in taken:
        key, k = f"{base}-{k}", k + 1
    return key
