"""Attribution maps as jobs (``POST /api/jobs/explain``): progress, cancel, cache, safety.

The job's files are compared with the sync route's (bytes) and with the library computed
here for the same arguments (values and overlay bytes), on the digits model.
"""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest

import convlens
from convlens.render.display import display_settings
from convlens.render.figures import array_to_png_bytes
from convlens.render.overlay import overlay

from helpers.web import wait_for_job

pytest.importorskip("fastapi", reason="the web explorer needs the 'web' extra (fastapi, uvicorn)")

#: traversal attempts for an id carried in a JSON body (no URL decoding happens there)
BAD_IDS = [
    "../",
    "..",
    "../../etc/passwd",
    "..\\..\\secret.txt",
    "/etc/passwd",
    "C:\\Windows\\win.ini",
    "%2e%2e%2f",
    "....//",
    "\x00",
    "",
    "0" * 31,
    "0" * 31 + "/",
]


def _upload(client, data: bytes, name: str = "cat.png") -> str:
    r = client.post(f"/api/images?name={name}", content=data)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


def _stored(app, image: str) -> list[str]:
    return sorted(
        p.name
        for p in (app.state.explorer.storage.root / image).iterdir()
        if p.name not in ("source.bin", "meta.json")
    )


def test_info_marks_the_methods_that_report_progress(client_factory) -> None:
    client, _ = client_factory()
    methods = {m["name"]: m["progress"] for m in client.get("/api/info").json()["methods"]}
    assert (
        methods["integrated_gradients"]
        and methods["smoothgrad"]
        and methods["scorecam"]
        and methods["occlusion"]
    )
    assert not methods["saliency"] and not methods["gradcam"]


@pytest.mark.parametrize(
    ("method", "target", "layer", "total"),
    [
        ("integrated_gradients", None, None, 50),
        ("smoothgrad", 8, None, 25),
        ("scorecam", 5, "conv2", None),
        ("saliency", 2, None, 1),
    ],
)
def test_job_files_equal_the_sync_route_and_the_library(
    client_factory, digits_model, photo_png, tmp_path, method, target, layer, total
) -> None:
    (jclient, _), (sclient, _) = (
        client_factory(storage_root=str(tmp_path / "a")),
        client_factory(storage_root=str(tmp_path / "b")),
    )
    jimage, simage = _upload(jclient, photo_png), _upload(sclient, photo_png)
    body = {"method": method, "target": target, "layer": layer}
    started = jclient.post("/api/jobs/explain", json={"image": jimage, **body})
    assert started.status_code == 202, started.text
    job = wait_for_job(jclient, started.json()["id"])
    assert job["status"] == "done", job
    if total is not None:  # integrated gradients: path evaluations; SmoothGrad: noisy images
        assert job["done"] == job["total"] == total
    else:  # Score-CAM: the non-constant channels of conv2, counted by the method
        assert 0 < job["done"] == job["total"] <= 32
    info = job["result"]
    sync = sclient.post(f"/api/images/{simage}/explain", json=body).json()
    assert info["image"] == jimage and info["key"] == sync["key"] and info["files"] == sync["files"]
    assert info["target"] == sync["target"] and info["layer"] == sync["layer"]

    path = tmp_path / "cat.png"
    path.write_bytes(photo_png)
    result = convlens.explain(digits_model, [str(path)], method, target, layer=layer)
    for kind, tensor in (
        ("map", result.tensors["map"][0]),
        ("attribution", result.tensors["attribution"][0]),
        ("display", result.display[0]),
    ):
        got = jclient.get(f"/api/images/{jimage}/files/{info['files'][kind]}").content
        assert got == sclient.get(f"/api/images/{simage}/files/{sync['files'][kind]}").content, kind
        np.testing.assert_array_equal(_npy(got), tensor.float().numpy())
    png = jclient.get(
        f"/api/images/{jimage}/overlays/{info['key']}.png", params={"alpha": 0.4}
    ).content
    sign = display_settings(result, 0)["sign"]  # the report's and the CLI's sign for the method
    assert png == array_to_png_bytes(
        overlay(result.originals[0], result.display[0], alpha=0.4, sign=sign)
    )
    assert (
        png
        == sclient.get(
            f"/api/images/{simage}/overlays/{sync['key']}.png", params={"alpha": 0.4}
        ).content
    )


def test_a_stored_map_comes_back_as_a_done_job_and_the_sync_route_shares_it(
    client_factory, photo_png
) -> None:
    client, app = client_factory()
    image = _upload(client, photo_png)
    body = {"image": image, "method": "integrated_gradients", "target": 3}
    first = wait_for_job(client, client.post("/api/jobs/explain", json=body).json()["id"])
    files = _stored(app, image)
    again = client.post("/api/jobs/explain", json=body)
    assert again.status_code == 202
    cached = again.json()
    assert (
        cached["status"] == "done" and cached["done"] == 0 and cached["id"] != first["id"]
    )  # no work ran
    assert cached["result"] == first["result"]
    assert client.get(f"/api/jobs/{cached['id']}").json()["status"] == "done"
    sync = client.post(
        f"/api/images/{image}/explain", json={"method": "integrated_gradients", "target": 3}
    ).json()
    assert {"image": image, **sync} == first["result"]
    assert _stored(app, image) == files  # nothing recomputed or added


def _slow(monkeypatch, method: str, started: threading.Event, delay: float = 0.01) -> None:
    """Make the real ``method`` take ~``delay`` per progress step (one path point at a time)."""
    import dataclasses

    from convlens.attribution import METHODS

    spec = METHODS[method]

    def slow(model, x, target=None, *, progress=None, **options):
        def tick(done, total):
            started.set()
            time.sleep(delay)
            if progress is not None:
                progress(done, total)

        return spec.fn(model, x, target, progress=tick, chunk=1, **options)

    monkeypatch.setitem(METHODS, method, dataclasses.replace(spec, fn=slow))


def test_cancel_stops_the_method_mid_way_and_stores_nothing(
    client_factory, photo_png, monkeypatch
) -> None:
    started = threading.Event()
    _slow(monkeypatch, "integrated_gradients", started)  # 50 steps, ~0.5 s
    client, app = client_factory()
    image = _upload(client, photo_png)
    before = _stored(app, image)
    job = client.post(
        "/api/jobs/explain", json={"image": image, "method": "integrated_gradients"}
    ).json()
    assert started.wait(30)
    deadline = time.monotonic() + 30
    while client.get(f"/api/jobs/{job['id']}").json()["done"] < 3 and time.monotonic() < deadline:
        time.sleep(0.002)
    assert client.delete(f"/api/jobs/{job['id']}").json()["status"] in ("running", "cancelled")
    ended = wait_for_job(client, job["id"])
    assert ended["status"] == "cancelled" and ended["result"] is None
    assert 3 <= ended["done"] < ended["total"] == 50  # stopped by the method's next report
    assert _stored(app, image) == before  # no map, no metadata, no half-written file
    # the model's lock was released: the same map now computes, through the sync route too
    assert (
        client.post(f"/api/images/{image}/explain", json={"method": "saliency"}).status_code == 200
    )
    again = wait_for_job(
        client,
        client.post(
            "/api/jobs/explain", json={"image": image, "method": "integrated_gradients"}
        ).json()["id"],
    )
    assert again["status"] == "done" and again["done"] == 50


def test_cancel_after_a_silent_method_ran_stores_nothing(
    client_factory, photo_png, monkeypatch
) -> None:
    """A method that reports no progress cannot stop mid-way; a cancel that arrives while it
    runs still keeps its files out (the job checks once more before writing)."""
    import dataclasses

    from convlens.attribution import METHODS

    running, release = threading.Event(), threading.Event()
    spec = METHODS["saliency"]

    def held(model, x, target=None):
        running.set()
        assert release.wait(30)
        return spec.fn(model, x, target)

    monkeypatch.setitem(METHODS, "saliency", dataclasses.replace(spec, fn=held))
    client, app = client_factory()
    image = _upload(client, photo_png)
    before = _stored(app, image)
    job = client.post("/api/jobs/explain", json={"image": image, "method": "saliency"}).json()
    assert running.wait(30)
    client.delete(f"/api/jobs/{job['id']}")
    release.set()
    assert wait_for_job(client, job["id"])["status"] == "cancelled"
    assert _stored(app, image) == before


def test_bad_requests_are_refused_before_a_job_starts(client_factory, photo_png) -> None:
    client, app = client_factory()
    image = _upload(client, photo_png)
    cases = [
        ({"image": image, "method": "nosuch"}, 400, "unknown method"),
        ({"image": image, "method": "scorecam", "layer": "conv9"}, 400, "conv9"),
        ({"image": image, "method": "saliency", "model": "resnet"}, 400, "unknown model"),
        ({"image": "0" * 32, "method": "saliency"}, 404, "unknown image id"),
        ({"method": "saliency"}, 422, "image"),
    ]
    for body, status, words in cases:
        r = client.post("/api/jobs/explain", json=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert app.state.explorer.jobs._jobs == {}  # none of them became a job
    # what only the method can judge ends the job with its one-line reason
    job = wait_for_job(
        client,
        client.post(
            "/api/jobs/explain", json={"image": image, "method": "scorecam", "layer": "fc"}
        ).json()["id"],
    )
    assert (
        job["status"] == "error"
        and "not a (C, h, w) feature map" in job["error"]
        and "\n" not in job["error"]
    )
    # occlusion's default window fits the 8 px digits (it used to be a 16 px window: an error)
    job = wait_for_job(
        client,
        client.post("/api/jobs/explain", json={"image": image, "method": "occlusion"}).json()["id"],
    )
    assert job["status"] == "done", job
    job = wait_for_job(
        client,
        client.post(
            "/api/jobs/explain", json={"image": image, "method": "smoothgrad", "target": 12}
        ).json()["id"],
    )
    assert job["status"] == "error" and "12" in job["error"]


def test_path_traversal_in_the_job_body_refused(client_factory, photo_png, raw, tmp_path) -> None:
    client, app = client_factory()
    (tmp_path / "secret.txt").write_text("TOP-SECRET-CONTENT")
    image = _upload(client, photo_png)
    for bad in [*BAD_IDS, f"{image}/../../secret.txt", f"{image}/../{image}", image.upper()]:
        status, content = raw(
            app,
            "POST",
            b"/api/jobs/explain",
            json.dumps({"image": bad, "method": "saliency"}).encode(),
        )
        assert status == 400, (bad, status, content)
        assert b"TOP-SECRET" not in content and "\n" not in json.loads(content)["detail"]
    for bad in ["../", "%2e%2e%2f", "..%2f..%2fsecret.txt"]:  # in the URL of the job it started
        status, _ = raw(app, "GET", f"/api/jobs/{bad}".encode())
        assert 400 <= status < 500
    assert app.state.explorer.jobs._jobs == {}
    assert (
        raw(
            app,
            "POST",
            b"/api/jobs/explain",
            json.dumps({"image": image, "method": "saliency"}).encode(),
        )[0]
        == 202
    )


def test_the_route_is_in_the_schema(client_factory) -> None:
    client, _ = client_factory()
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/api/jobs/explain"]
