"""The local web explorer's HTTP API and page: :func:`create_app`.

The server only wires. Every number and picture comes from the library
(:meth:`Model.predict`, :func:`convlens.explain`, :func:`convlens.inspect.activations`,
:func:`convlens.optimize.visualize.visualize_neuron`, :func:`convlens.attack`) and
``render/`` (:func:`~convlens.render.overlay.overlay`, colormaps, grids, PNG encoding).

Safety, by construction:

- There is no "current image": each upload gets a server-generated id and every route
  names the image it works on, so several tabs never see each other's state.
- Files live in one private temp area (:class:`~convlens.server.storage.Storage`); ids
  and file names are matched against strict patterns and resolved paths are checked to
  lie inside it.
- Uploads are capped in bytes while they stream in and in pixels from the image header,
  before decoding; what does not decode is refused with the reader's one-line reason.
- One lock per model: hooks live on the module, so two requests never run it at once.
- Errors are JSON ``{"detail": "<one line>"}`` with a 4xx status.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import threading
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from convlens.errors import BadInputError, ConvlensError, ImageReadError
from convlens.progress import ProgressFn
from convlens.server.jobs import JobManager
from convlens.server.patches import FeatureFolders, PatchesRequest, patches_job
from convlens.server.report import ReportJobRequest, report_job, report_sections
from convlens.server.storage import Storage

if TYPE_CHECKING:
    from convlens.models.model import Model

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "LOOPBACK_HOSTS",
    "Explorer",
    "create_app",
    "reports_progress",
]

DEFAULT_MAX_BYTES = 20_000_000
DEFAULT_MAX_PIXELS = 40_000_000
STATIC = Path(__file__).parent / "static"
#: Host header values of a loopback-bound server (``allowed_hosts``)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: feature-map tiles shown per layer (strongest channels first)
FEATURE_TILES = 16
#: the page's default channel-visualisation length (steps of the optimiser)
VISUALIZE_STEPS = 64
MEDIA = {".png": "image/png", ".npy": "application/octet-stream", ".json": "application/json"}


class HTTPError(Exception):
    """An error answered as ``{"detail": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- request bodies --------------------------------------------------------------------
class ExplainRequest(BaseModel):
    model: str | None = None
    method: str = "saliency"
    target: int | str | None = None
    layer: str | None = None


class ExplainJobRequest(ExplainRequest):
    image: str


class ActivationsRequest(BaseModel):
    model: str | None = None
    layer: str


class VisualizeRequest(BaseModel):
    model: str | None = None
    layer: str
    channel: int = Field(ge=0)
    steps: int = Field(default=VISUALIZE_STEPS, ge=1, le=1024)


class AttackRequest(BaseModel):
    image: str
    model: str | None = None
    method: str = "pgd"
    #: the budget of budgeted attacks (``/api/info`` lists which); ignored by the others
    eps: float = Field(default=4 / 255, gt=0, le=1)
    steps: int = Field(default=10, ge=1, le=1000)
    target: int | str | None = None


@dataclass
class _Slot:
    model: Model
    lock: threading.Lock


def _key(*parts: Any) -> str:
    """A file-name-safe hash of the arguments that made a file (16 hex digits)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _png(array: np.ndarray) -> bytes:
    from convlens.render.figures import array_to_png_bytes

    return array_to_png_bytes(array)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def reports_progress(method: str) -> bool:
    """Whether a registered attribution method takes ``progress=`` (read from its signature)."""
    from convlens.attribution import METHODS

    spec = METHODS.get(method)
    return spec is not None and "progress" in inspect.signature(spec.fn).parameters


class Explorer:
    """The app's state: models with their locks, the storage area, the jobs."""

    def __init__(
        self,
        models: Mapping[str, Any],
        storage: Storage,
        *,
        max_bytes: int,
        max_pixels: int,
        workers: int = 1,
        features: FeatureFolders | None = None,
    ) -> None:
        if not models:
            raise BadInputError("the explorer needs at least one model")
        self.slots = {name: _Slot(m, threading.Lock()) for name, m in models.items()}
        self.default_model = next(iter(self.slots))
        self.storage = storage
        self.jobs = JobManager(workers=workers)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.features = features if features is not None else FeatureFolders()

    # -- lookups ---------------------------------------------------------------------
    def slot(self, name: str | None) -> _Slot:
        key = name or self.default_model
        if key not in self.slots:
            raise BadInputError(f"unknown model {key!r}; this server has {', '.join(self.slots)}")
        return self.slots[key]

    def image_meta(self, image_id: str) -> dict[str, Any]:
        try:
            return self.storage.meta(image_id)
        except KeyError:
            raise HTTPError(
                404, "unknown image id (expired or never issued); upload the image again"
            ) from None

    def file(self, image_id: str, name: str) -> Path:
        self.image_meta(image_id)
        return self.storage.file(image_id, name)

    def source(self, image_id: str) -> tuple[Any, str]:
        """What ``Model.prepare`` reads for this image, and its display name."""
        meta = self.image_meta(image_id)
        if meta.get("sample"):
            return f"sample:{meta['sample']}", str(meta["name"])
        return str(self.storage.file(image_id, "source.bin")), str(meta["name"])

    def batch(self, slot: _Slot, image_id: str) -> Any:
        source, name = self.source(image_id)
        return slot.model.prepare([source], sources=[name])

    def original(self, image_id: str) -> Any:
        """The image in image space, as ``Batch.originals`` holds it."""
        from convlens.data.images import load_image
        from convlens.data.samples import load_sample

        source, _ = self.source(image_id)
        if source.startswith("sample:"):
            return load_image(load_sample(source), name=source)
        return load_image(source)

    # -- uploads ---------------------------------------------------------------------
    def add_upload(self, data: bytes, name: str) -> dict[str, Any]:
        from PIL import Image

        from convlens.data.images import load_image

        size: tuple[int, int] | None = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns of large images; we decide below
            try:
                with Image.open(io.BytesIO(data)) as im:
                    size = im.size
            except Image.DecompressionBombError:
                raise HTTPError(
                    413, f"{name}: image is over the server's limit of {self.max_pixels:,} pixels"
                ) from None
            except Exception:
                size = None  # not identifiable: load_image gives the precise reason below
        if size is not None and size[0] * size[1] > self.max_pixels:
            raise HTTPError(
                413,
                f"{name}: {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels is over the server's limit of {self.max_pixels:,}",
            )
        try:
            image = load_image(data, name=name)
        except ImageReadError as exc:
            raise HTTPError(
                415, f"{name}: not an image this server can read ({exc.reason})"
            ) from None
        height, width = int(image.shape[1]), int(image.shape[2])
        image_id = self.storage.add_image(data, {"name": name, "width": width, "height": height})
        return {"id": image_id, "name": name, "width": width, "height": height}

    def add_sample(self, sample: str) -> dict[str, Any]:
        from convlens.data.samples import SAMPLES, load_sample

        if sample not in SAMPLES:
            raise HTTPError(
                404, f"no bundled photo named {sample[:40]!r}; choose from {', '.join(SAMPLES)}"
            )
        image = load_sample(sample)
        name = f"sample:{sample}"
        image_id = self.storage.add_image(
            b"",
            {
                "name": name,
                "sample": sample,
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
            },
        )
        return {
            "id": image_id,
            "name": name,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
        }

    # -- computations (each under its model's lock) ----------------------------------
    def predictions(self, image_id: str, model: str | None, top_k: int) -> dict[str, Any]:
        slot = self.slot(model)
        path = self.file(image_id, f"pred-{_key(slot.model.name, top_k)}.json")
        if not path.exists():
            with slot.lock:
                prediction = slot.model.predict(self.batch(slot, image_id), top_k=top_k)[0]
            self.storage.write(
                path, json.dumps({"model": slot.model.name, **prediction.to_dict()}).encode()
            )
        return dict(json.loads(path.read_text()))

    def _explain_plan(
        self, image_id: str, request: ExplainRequest
    ) -> tuple[_Slot, str | None, str, Path]:
        """Check an explain request before any work: its model, method, layer and image;
        the cache key of its files and the path of their metadata."""
        from convlens.attribution import METHODS

        slot = self.slot(request.model)
        if request.method not in METHODS:
            raise BadInputError(
                f"unknown method {request.method!r}; choose from {', '.join(sorted(METHODS))}"
            )
        layer = request.layer if METHODS[request.method].uses_layer else None
        if layer is not None:
            slot.model.layer(layer)  # a bad layer is refused now, also before a job starts
        key = _key(slot.model.name, request.method, request.target, layer)
        return slot, layer, key, self.file(image_id, f"expl-{key}.json")

    def _explain_store(
        self,
        slot: _Slot,
        image_id: str,
        request: ExplainRequest,
        layer: str | None,
        key: str,
        progress: ProgressFn | None = None,
    ) -> None:
        """Compute one map with :func:`convlens.explain` and store its files, metadata last.

        The one place the sync route and the job compute: both write the same files.
        ``progress`` goes to methods that take it; it is also called once more before
        anything is written, so a job cancelled at the end of a method that reports no
        progress (or after its last report) still stores nothing.
        """
        from convlens.attribution import explain
        from convlens.render.display import DEFAULT_CLIP, display_settings

        last = [0, 1]  # a method that reports nothing counts as one step

        def watch(done: int, total: int) -> None:
            last[:] = [done, total]
            if progress is not None:
                progress(done, total)

        options: dict[str, Any] = (
            {"progress": watch}
            if (progress is not None and reports_progress(request.method))
            else {}
        )
        with slot.lock:
            result = explain(
                slot.model,
                self.batch(slot, image_id),
                request.method,
                request.target,
                layer=layer,
                **options,
            )
        if result.display is None:
            raise BadInputError(f"method {request.method!r} gives no map to draw")

        if progress is not None:
            progress(
                last[1], last[1]
            )  # the last chance to notice a cancel: raises before any write
        target = result.target or {}
        classes = target.get("classes") or []
        cls = int(classes[0]) if classes else None
        labels = slot.model.labels
        meta = {
            "key": key,
            "model": slot.model.name,
            "method": request.method,
            "layer": result.layer,
            "target": {
                "class": cls,
                "label": labels.name(cls) if (labels is not None and cls is not None) else None,
            },
            "seconds": result.params.get("seconds"),
            # how the overlay route draws the map unless asked otherwise (the report's default)
            "display": display_settings(result, 0, clip=DEFAULT_CLIP),
            "files": {
                "map": f"map-{key}.npy",
                "display": f"display-{key}.npy",
                "attribution": f"attr-{key}.npy",
            },
        }
        self.storage.write(
            self.file(image_id, f"map-{key}.npy"),
            _npy(result.map[0].float().cpu().numpy()),
        )
        self.storage.write(
            self.file(image_id, f"display-{key}.npy"), _npy(result.display[0].float().cpu().numpy())
        )
        self.storage.write(
            self.file(image_id, f"attr-{key}.npy"),
            _npy(result.tensors["attribution"][0].float().cpu().numpy()),
        )
        self.storage.write(self.file(image_id, f"expl-{key}.json"), json.dumps(meta).encode())

    def explain(self, image_id: str, request: ExplainRequest) -> dict[str, Any]:
        """An attribution map, computed in the request (fast methods; the job route for slow ones)."""
        slot, layer, key, info = self._explain_plan(image_id, request)
        if not info.exists():
            self._explain_store(slot, image_id, request, layer, key)
        return dict(json.loads(info.read_text()))

    def overlay(
        self, image_id: str, key: str, alpha: float, sign: str | None = None, clip: float = 99.0
    ) -> Path:
        """The map drawn over the image by ``render.overlay``.

        ``sign`` None: the method's default, as the report and the CLI draw it
        (:func:`convlens.render.display.default_sign`); ``clip``: the percentile drawn at full
        colour (rounded to 0.01, like ``alpha``)."""
        from convlens.render.display import check_clip, check_sign, default_sign
        from convlens.render.overlay import overlay

        percent = round(alpha * 100)
        clip = round(check_clip(clip), 2)
        display = self.file(image_id, f"display-{key}.npy")
        info = self.file(image_id, f"expl-{key}.json")
        if not (display.exists() and info.exists()):
            raise HTTPError(404, "no map with that key for this image; run explain first")
        heat = np.load(display, allow_pickle=False)
        method = json.loads(info.read_text())["method"]
        sign = check_sign(sign) if sign is not None else default_sign(method, heat)
        path = self.file(image_id, f"overlay-{key}-a{percent}c{round(clip * 100)}-{sign}.png")
        if not path.exists():
            self.storage.write(
                path,
                _png(
                    overlay(
                        self.original(image_id), heat, alpha=percent / 100, sign=sign, clip=clip
                    )
                ),
            )
        return path

    def original_png(self, image_id: str) -> Path:
        from convlens.render.overlay import to_uint8_image

        path = self.file(image_id, "original.png")
        if not path.exists():
            self.storage.write(path, _png(to_uint8_image(self.original(image_id))))
        return path

    def feature_maps(self, image_id: str, request: ActivationsRequest) -> dict[str, Any]:
        from convlens.inspect.activations import activations
        from convlens.render.colormaps import apply_colormap
        from convlens.render.grid import tile_grid

        slot = self.slot(request.model)
        key = _key(slot.model.name, request.layer)
        info = self.file(image_id, f"acts-{key}.json")
        if not info.exists():
            with slot.lock:
                result = activations(slot.model, self.batch(slot, image_id), request.layer)
            acts = result.tensors["activations"][0].float().cpu()
            if acts.dim() != 3:
                raise BadInputError(
                    f"layer {request.layer!r} has output shape {tuple(acts.shape)}: no spatial feature maps; pick a convolutional layer"
                )
            order = result.tensors["channel_order"][0].tolist()[:FEATURE_TILES]
            strength = result.tensors["channel_strength"][0]
            tiles = {c: apply_colormap(acts[c].numpy())[:, :, :3] for c in order}
            for c, tile in tiles.items():
                self.storage.write(self.file(image_id, f"fmap-{key}-c{c}.png"), _png(tile))
            self.storage.write(
                self.file(image_id, f"fmaps-{key}.png"),
                _png(tile_grid([tiles[c] for c in order], ncols=4)),
            )
            self.storage.write(self.file(image_id, f"acts-{key}.npy"), _npy(acts.numpy()))
            meta = {
                "key": key,
                "model": slot.model.name,
                "layer": request.layer,
                "shape": list(acts.shape),
                "channels": [
                    {"channel": c, "strength": float(strength[c]), "file": f"fmap-{key}-c{c}.png"}
                    for c in order
                ],
                "files": {"grid": f"fmaps-{key}.png", "activations": f"acts-{key}.npy"},
            }
            self.storage.write(info, json.dumps(meta).encode())
        return dict(json.loads(info.read_text()))

    # -- jobs ------------------------------------------------------------------------
    def visualize_job(self, request: VisualizeRequest) -> dict[str, Any]:
        from convlens.optimize.visualize import visualize_neuron
        from convlens.render.overlay import to_uint8_image

        slot = self.slot(request.model)
        slot.model.layer(request.layer)  # a bad layer is refused now, not in the job
        key = _key(slot.model.name, request.layer, request.channel, request.steps)
        path = self.storage.shared_file(f"vis-{key}.png")

        def work(progress: ProgressFn) -> dict[str, Any]:
            if not path.exists():
                with slot.lock:
                    result = visualize_neuron(
                        slot.model,
                        request.layer,
                        request.channel,
                        steps=request.steps,
                        seed=0,
                        progress=progress,
                    )
                self.storage.write(
                    path, _png(to_uint8_image(result.image[0].detach().float().cpu()))
                )
            return {
                "file": f"/api/shared/{path.name}",
                "layer": request.layer,
                "channel": request.channel,
                "steps": request.steps,
            }

        return self.jobs.submit("visualize", work).to_dict()

    def explain_job(self, request: ExplainJobRequest) -> dict[str, Any]:
        """:meth:`explain` as a job: progress from methods that report it, cancel mid-way.

        The request is checked before the job starts (a bad id, model, method or layer is
        a 4xx now); a map already stored comes back as a job that is already done.
        """
        image_id = request.image
        slot, layer, key, info = self._explain_plan(image_id, request)

        def answer() -> dict[str, Any]:
            return {"image": image_id, **json.loads(info.read_text())}

        if info.exists():
            return self.jobs.finished("explain", answer()).to_dict()

        def work(progress: ProgressFn) -> dict[str, Any]:
            if not info.exists():  # an identical job may have stored it while this one queued
                self._explain_store(slot, image_id, request, layer, key, progress)
            return answer()

        return self.jobs.submit("explain", work).to_dict()

    def attack_job(self, request: AttackRequest) -> dict[str, Any]:
        from convlens.adversarial import attack
        from convlens.adversarial.registry import get_attack
        from convlens.render.optimize import amplified_difference
        from convlens.render.overlay import to_uint8_image

        spec = get_attack(request.method)  # an unknown method: 400 naming the registered ones
        eps = None if spec.budget == "none" else request.eps
        slot = self.slot(request.model)
        self.image_meta(request.image)
        image_id = request.image
        key = _key(slot.model.name, spec.name, eps, request.steps, request.target)
        info = self.file(image_id, f"attack-{key}.json")

        def top(classes: Any, probs: Any) -> list[dict[str, Any]]:
            labels = slot.model.labels
            return [
                {
                    "class": int(c),
                    "label": labels.name(int(c)) if labels is not None else str(int(c)),
                    "probability": float(p),
                }
                for c, p in zip(classes.tolist(), probs.tolist())
            ]

        def work(progress: ProgressFn) -> dict[str, Any]:
            if not info.exists():
                source, _ = self.source(image_id)
                with slot.lock:
                    result = attack(
                        slot.model,
                        [source],
                        spec.name,
                        eps=eps,
                        steps=request.steps,
                        target=request.target,
                        seed=0,
                        progress=progress,
                    )
                t = result.tensors
                self.storage.write(
                    self.file(image_id, f"adv-{key}.png"), _png(to_uint8_image(t["adversarial"][0]))
                )
                self.storage.write(
                    self.file(image_id, f"pert-{key}.png"),
                    _png(to_uint8_image(amplified_difference(t["perturbation"][0]))),
                )
                self.storage.write(
                    self.file(image_id, f"pert-{key}.npy"),
                    _npy(t["perturbation"][0].float().numpy()),
                )
                meta = {
                    "key": key,
                    "method": result.params["method"],
                    "eps": eps,
                    "steps": request.steps,
                    "success": bool(t["success"][0]),
                    "linf": float(t["linf"][0]),
                    "before": top(t["top_classes_before"][0], t["top_probs_before"][0]),
                    "after": top(t["top_classes_after"][0], t["top_probs_after"][0]),
                    "files": {
                        "adversarial": f"adv-{key}.png",
                        "perturbation": f"pert-{key}.png",
                        "perturbation_raw": f"pert-{key}.npy",
                    },
                }
                self.storage.write(info, json.dumps(meta).encode())
            return {"image": image_id, **json.loads(info.read_text())}

        return self.jobs.submit("attack", work).to_dict()

    def job(self, job_id: str, cancel: bool = False) -> dict[str, Any]:
        self.storage.check_token(job_id, "job id")
        try:
            return (self.jobs.cancel(job_id) if cancel else self.jobs.get(job_id)).to_dict()
        except KeyError:
            raise HTTPError(404, "unknown job id (finished long ago or never issued)") from None

    def close(self) -> None:
        self.jobs.shutdown()
        self.storage.close()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def _file_response(path: Path, download: bool) -> FileResponse:
    if not path.exists():
        raise HTTPError(404, "no such file for this image (compute it first)")
    headers = {"Cache-Control": "no-store"}
    disposition = "attachment" if download else "inline"
    return FileResponse(
        path,
        media_type=MEDIA.get(path.suffix, "application/octet-stream"),
        headers=headers,
        content_disposition_type=disposition,
        filename=path.name,
    )


def create_app(
    model_names: Sequence[str] = ("efficientnet_lite0",),
    *,
    models: Mapping[str, Any] | None = None,
    device: str | None = None,
    storage_root: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_images: int = 64,
    workers: int = 1,
    allowed_hosts: Sequence[str] | None = None,
    features: Sequence[str | Path] = (),
) -> FastAPI:
    """The explorer as a FastAPI app (serve it with uvicorn; ``convlens serve`` does).

    Parameters
    ----------
    model_names
        Zoo names loaded at start (ignored when ``models`` is given).
    models
        Already loaded :class:`~convlens.models.model.Model` objects by name (tests, notebooks).
    device
        Torch device for the zoo models.
    storage_root
        The temp area's folder (default: a fresh private temp folder, removed at shutdown).
    max_bytes, max_pixels
        Upload limits: bytes of the file, width x height from its header.
    max_images
        Images kept in the temp area (least recently used dropped first).
    workers
        Threads for long jobs (attacks, visualisations).
    allowed_hosts
        Host header values accepted (None: any). ``convlens serve`` on a loopback address
        passes the loopback names, so a web page that rebinds its own domain name to
        127.0.0.1 (DNS rebinding) cannot reach the API.
    features
        Folders written by ``convlens features`` with one of the models: the layer browser
        shows a channel's top patches over the images of the folder made at its layer, and
        the report's nearest-neighbours section searches the first folder of the model.

    Returns
    -------
    fastapi.FastAPI
        With the explorer state at ``app.state.explorer``; the OpenAPI schema at ``/openapi.json``.
    """
    if models is None:
        from convlens.models.zoo import load_model

        models = {name: load_model(name, device=device) for name in model_names}
    folders = FeatureFolders.load(features, [m.name for m in models.values()])
    explorer = Explorer(
        models,
        Storage(storage_root, max_images=max_images),
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        workers=workers,
        features=folders,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        explorer.close()

    from convlens import __version__

    # no /docs or /redoc: FastAPI's pages load scripts from a CDN; the schema is enough
    app = FastAPI(
        title="convlens explorer",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        lifespan=lifespan,
    )
    app.state.explorer = explorer
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=exc.status)

    @app.exception_handler(BadInputError)
    async def _bad_input(request: Request, exc: BadInputError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=400)

    @app.exception_handler(ConvlensError)
    async def _convlens_error(request: Request, exc: ConvlensError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": _one_line(f"unexpected error: {type(exc).__name__}: {exc}")}, status_code=500
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(
            {"detail": _one_line(f"{where}: {first.get('msg', 'invalid request')}")},
            status_code=422,
        )

    # -- page ----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- models --------------------------------------------------------------------------
    @app.get(
        "/api/info",
        summary="Models, attribution methods, attacks, bundled photos and upload limits",
    )
    def info() -> dict[str, Any]:
        from convlens.adversarial.registry import ATTACKS, attack_names
        from convlens.attribution import METHODS
        from convlens.data.samples import SAMPLES

        return {
            "models": list(explorer.slots),
            "default_model": explorer.default_model,
            "methods": [
                {
                    "name": s.name,
                    "output": s.output,
                    "uses_layer": s.uses_layer,
                    "progress": reports_progress(s.name),
                    "paper": s.paper,
                    # the page offers a method only for the models that can run it (attention maps: transformers)
                    "models": [
                        name for name, slot in explorer.slots.items() if s.applies_to(slot.model)
                    ],
                }
                for s in sorted(METHODS.values(), key=lambda s: s.name)
            ],
            "attacks": [
                {
                    "name": a.name,
                    "box": a.box,
                    "norms": list(a.norms),
                    "budget": a.budget,
                    "steps": a.steps,
                    "steps_means": a.steps_means,
                    "targeted": a.targeted,
                    "paper": a.paper,
                }
                for a in (ATTACKS[n] for n in attack_names())
            ],
            "samples": [
                {"name": s.name, "source": s.source, "expected": list(s.expected)}
                for s in SAMPLES.values()
            ],
            "limits": {"max_bytes": explorer.max_bytes, "max_pixels": explorer.max_pixels},
        }

    @app.get(
        "/api/models/{model}/labels", summary="The model's class labels (index, name, WordNet id)"
    )
    def labels(model: str) -> list[dict[str, Any]]:
        m = explorer.slot(model).model
        if m.labels is None:
            return []
        return [
            {"class": i, "label": m.labels.name(i), "wnid": m.labels.wnid(i)}
            for i in range(len(m.labels))
        ]

    @app.get(
        "/api/models/{model}/layers", summary="The model's layer table and its default CAM layer"
    )
    def layers(model: str) -> dict[str, Any]:
        from convlens.attribution.base import default_cam_layer

        slot = explorer.slot(model)
        with slot.lock:
            table = [row.to_dict() for row in slot.model.layers()]
            try:
                cam = default_cam_layer(slot.model)
            except BadInputError:
                cam = None
        return {"layers": table, "default_cam_layer": cam}

    @app.get(
        "/api/models/{model}/report-sections",
        summary="The HTML report's sections for this model, in order, with their progress units",
    )
    def sections(model: str) -> dict[str, Any]:
        return report_sections(explorer, model)

    @app.get(
        "/api/models/{model}/features",
        summary="The features folders this server has for the model (layer browser's top patches)",
    )
    def feature_folders(model: str) -> list[dict[str, Any]]:
        slot = explorer.slot(model)
        return [f.to_dict() for f in explorer.features.for_model(slot.model.name)]

    # -- images --------------------------------------------------------------------------
    @app.post(
        "/api/images", summary="Upload an image (the raw file as the request body)", status_code=201
    )
    async def upload(
        request: Request, name: str = Query(default="upload", max_length=200)
    ) -> dict[str, Any]:
        label = "".join(ch for ch in name if ch.isprintable()) or "upload"
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > explorer.max_bytes:
            raise HTTPError(
                413,
                f"{label}: {int(declared):,} bytes is over the server's limit of {explorer.max_bytes:,}",
            )
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > explorer.max_bytes:
                raise HTTPError(
                    413, f"{label}: over the server's limit of {explorer.max_bytes:,} bytes"
                )
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            raise HTTPError(400, f"{label}: empty upload; send the image file as the request body")
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(explorer.add_upload, data, label)

    @app.post("/api/samples/{sample}", summary="Start from a bundled photo", status_code=201)
    def sample(sample: str) -> dict[str, Any]:
        return explorer.add_sample(sample)

    @app.get("/api/images/{image_id}", summary="An image's name and size")
    def image(image_id: str) -> dict[str, Any]:
        meta = explorer.image_meta(image_id)
        return {
            "id": image_id,
            "name": meta["name"],
            "width": meta["width"],
            "height": meta["height"],
        }

    @app.get(
        "/api/images/{image_id}/original.png", summary="The image as PNG", response_class=Response
    )
    def original(image_id: str, download: bool = False) -> FileResponse:
        return _file_response(explorer.original_png(image_id), download)

    @app.get("/api/images/{image_id}/predictions", summary="Top-k classes (Model.predict)")
    def predictions(
        image_id: str, model: str | None = None, top_k: int = Query(default=5, ge=1, le=1000)
    ) -> dict[str, Any]:
        return explorer.predictions(image_id, model, top_k)

    @app.post(
        "/api/images/{image_id}/explain",
        summary="An attribution map (convlens.explain); files for the overlay and raw maps",
    )
    def explain(image_id: str, body: ExplainRequest) -> dict[str, Any]:
        return explorer.explain(image_id, body)

    @app.get(
        "/api/images/{image_id}/overlays/{key}.png",
        summary="A map drawn over the image (render.overlay) at an opacity (rounded to 0.01)",
        response_class=Response,
    )
    def overlay(
        image_id: str,
        key: str,
        alpha: float = Query(default=0.5, ge=0, le=1),
        sign: Literal["positive", "absolute", "negative", "all"] | None = None,
        clip: float = Query(default=99.0, gt=0, le=100),
        download: bool = False,
    ) -> FileResponse:
        if not (len(key) == 16 and all(c in "0123456789abcdef" for c in key)):
            raise HTTPError(400, "map key is not one this server issues")
        return _file_response(explorer.overlay(image_id, key, alpha, sign, clip), download)

    @app.post(
        "/api/images/{image_id}/activations",
        summary="Feature maps of a layer, strongest channels first",
    )
    def activations(image_id: str, body: ActivationsRequest) -> dict[str, Any]:
        return explorer.feature_maps(image_id, body)

    @app.get(
        "/api/images/{image_id}/files/{name}",
        summary="Download a file computed for this image (PNG or .npy)",
        response_class=Response,
    )
    def image_file(image_id: str, name: str, download: bool = False) -> FileResponse:
        if name in ("source.bin", "meta.json"):
            raise HTTPError(404, "no such file for this image")
        return _file_response(explorer.file(image_id, name), download)

    @app.get(
        "/api/shared/{name}",
        summary="A cached picture shared by all images (channel visualisations)",
        response_class=Response,
    )
    def shared_file(name: str, download: bool = False) -> FileResponse:
        return _file_response(explorer.storage.shared_file(name), download)

    # -- jobs ----------------------------------------------------------------------------
    @app.post(
        "/api/jobs/explain",
        summary="Start an attribution map (slow methods report progress; cached maps come back done); poll /api/jobs/{id}",
        status_code=202,
    )
    def explain_job(body: ExplainJobRequest) -> dict[str, Any]:
        return explorer.explain_job(body)

    @app.post(
        "/api/jobs/visualize",
        summary="Start a channel visualisation (cached); poll /api/jobs/{id}",
        status_code=202,
    )
    def visualize(body: VisualizeRequest) -> dict[str, Any]:
        return explorer.visualize_job(body)

    @app.post(
        "/api/jobs/attack",
        summary="Start an adversarial attack on an image; poll /api/jobs/{id}",
        status_code=202,
    )
    def attack(body: AttackRequest) -> dict[str, Any]:
        return explorer.attack_job(body)

    @app.post(
        "/api/jobs/report",
        summary="Run HTML report sections on an image (all when none named); poll /api/jobs/{id}",
        status_code=202,
    )
    def report(body: ReportJobRequest) -> dict[str, Any]:
        return report_job(explorer, body)

    @app.post(
        "/api/jobs/patches",
        summary="Top patches of a channel over the features folder of its layer; poll /api/jobs/{id}",
        status_code=202,
    )
    def patches(body: PatchesRequest) -> dict[str, Any]:
        return patches_job(explorer, body)

    @app.get("/api/jobs/{job_id}", summary="A job's status, progress and result")
    def job(job_id: str) -> dict[str, Any]:
        return explorer.job(job_id)

    @app.delete("/api/jobs/{job_id}", summary="Cancel a job")
    def cancel(job_id: str) -> dict[str, Any]:
        return explorer.job(job_id, cancel=True)

    return app
