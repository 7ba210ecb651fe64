"""The explorer's HTTP API against the library it wires (digits model, in-process app).

Every picture and array the server hands out is compared with the library computed
independently here for the same arguments: bytes for PNGs, values for .npy files.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch

import convlens
from convlens.render.display import display_settings
from convlens.render.figures import array_to_png_bytes
from convlens.render.overlay import overlay

from helpers.web import wait_for_job

pytest.importorskip("fastapi", reason="the web explorer needs the 'web' extra (fastapi, uvicorn)")


def _upload(client, data: bytes, name: str = "digit.png") -> dict:
    r = client.post(f"/api/images?name={name}", content=data)
    assert r.status_code == 201, r.text
    return r.json()


def _stored_images(app) -> list[str]:
    return sorted(
        p.name
        for p in app.state.explorer.storage.root.iterdir()
        if p.is_dir() and p.name != "shared"
    )


def _npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


# -- predictions, overlays, raw maps ---------------------------------------------------
def test_predictions_equal_model_predict(client_factory, digits_model, digit_png, tmp_path) -> None:
    client, _ = client_factory()
    image = _upload(client, digit_png)
    assert (image["width"], image["height"]) == (8, 8)
    got = client.get(f"/api/images/{image['id']}/predictions", params={"top_k": 3}).json()
    path = tmp_path / "digit.png"
    path.write_bytes(digit_png)
    expected = digits_model.predict([str(path)], top_k=3)[0]
    assert [t["class"] for t in got["top"]] == expected.classes
    assert [t["label"] for t in got["top"]] == expected.labels
    np.testing.assert_allclose(
        [t["probability"] for t in got["top"]], expected.probabilities, rtol=0, atol=1e-7
    )
    assert (
        got["top"][0]["class"] == 3
    )  # a real "3": the model gets it, so the image went through intact


@pytest.mark.parametrize(
    ("method", "target", "layer"),
    [("saliency", None, None), ("gradcam", 5, "conv1"), ("integrated_gradients", "8", None)],
)
def test_overlay_and_maps_equal_library_render(
    client_factory, digits_model, photo_png, tmp_path, method, target, layer
) -> None:
    client, _ = client_factory()
    image = _upload(client, photo_png, "cat.png")
    r = client.post(
        f"/api/images/{image['id']}/explain",
        json={"method": method, "target": target, "layer": layer},
    )
    assert r.status_code == 200, r.text
    info = r.json()
    path = tmp_path / "cat.png"
    path.write_bytes(photo_png)
    result = convlens.explain(digits_model, [str(path)], method, target, layer=layer)
    expected_class = int(result.provenance["target"]["classes"][0])
    assert info["target"]["class"] == expected_class
    # drawn with the sign the report and the CLI use for the method (render.display)
    sign = display_settings(result, 0)["sign"]
    for alpha in (0.5, 0.3):
        png = client.get(
            f"/api/images/{image['id']}/overlays/{info['key']}.png", params={"alpha": alpha}
        )
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content == array_to_png_bytes(
            overlay(result.originals[0], result.display[0], alpha=alpha, sign=sign)
        )
    raw_map = _npy(client.get(f"/api/images/{image['id']}/files/{info['files']['map']}").content)
    np.testing.assert_array_equal(raw_map, result.tensors["map"][0].numpy())
    attribution = _npy(
        client.get(f"/api/images/{image['id']}/files/{info['files']['attribution']}").content
    )
    np.testing.assert_array_equal(attribution, result.tensors["attribution"][0].numpy())
    download = client.get(
        f"/api/images/{image['id']}/files/{info['files']['map']}", params={"download": "true"}
    )
    assert download.headers["content-disposition"].startswith("attachment")


def test_overlay_differs_between_targets(client_factory, photo_png) -> None:
    """A cache keyed wrongly would hand the first map back for every target."""
    client, _ = client_factory()
    image = _upload(client, photo_png, "cat.png")
    a = client.post(
        f"/api/images/{image['id']}/explain", json={"method": "saliency", "target": 1}
    ).json()
    b = client.post(
        f"/api/images/{image['id']}/explain", json={"method": "saliency", "target": 7}
    ).json()
    assert a["key"] != b["key"]
    map_a = _npy(client.get(f"/api/images/{image['id']}/files/{a['files']['map']}").content)
    map_b = _npy(client.get(f"/api/images/{image['id']}/files/{b['files']['map']}").content)
    assert not np.allclose(map_a, map_b)


def test_feature_maps_equal_layer_activations(
    client_factory, digits_model, photo_png, tmp_path
) -> None:
    from convlens.inspect.activations import layer_activations

    client, _ = client_factory()
    image = _upload(client, photo_png, "cat.png")
    info = client.post(f"/api/images/{image['id']}/activations", json={"layer": "conv2"}).json()
    path = tmp_path / "cat.png"
    path.write_bytes(photo_png)
    acts = layer_activations(digits_model, digits_model.prepare([str(path)]).x, "conv2")[0]
    got = _npy(
        client.get(f"/api/images/{image['id']}/files/{info['files']['activations']}").content
    )
    np.testing.assert_array_equal(got, acts.numpy())
    means = acts.flatten(1).mean(dim=1)
    shown = [c["channel"] for c in info["channels"]]
    assert shown == means.argsort(descending=True).tolist()[: len(shown)]
    tile = client.get(f"/api/images/{image['id']}/files/{info['channels'][0]['file']}")
    assert tile.status_code == 200 and tile.content.startswith(b"\x89PNG")
    bad = client.post(f"/api/images/{image['id']}/activations", json={"layer": "fc"})
    assert bad.status_code == 400 and "no spatial feature maps" in bad.json()["detail"]


def test_sample_photos_and_attack_match_library(client_factory, digits_model) -> None:
    client, _ = client_factory()
    image = client.post("/api/samples/cat").json()
    assert image["name"] == "sample:cat"
    got = client.get(f"/api/images/{image['id']}/predictions").json()
    assert [t["class"] for t in got["top"]] == digits_model.predict(["sample:cat"])[0].classes
    job = client.post(
        "/api/jobs/attack", json={"image": image["id"], "eps": 0.1, "steps": 5}
    ).json()
    job = wait_for_job(client, job["id"])
    assert job["status"] == "done", job
    expected = convlens.attack(digits_model, ["sample:cat"], "pgd", eps=0.1, steps=5, seed=0)
    assert job["result"]["success"] == bool(expected["success"][0])
    assert [t["class"] for t in job["result"]["after"]] == expected["top_classes_after"][0].tolist()
    png = client.get(
        f"/api/images/{image['id']}/files/{job['result']['files']['adversarial']}"
    ).content
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)))
    want = (expected["adversarial"][0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pixels, np.broadcast_to(want, pixels.shape))  # gray shown as RGB
    assert client.post("/api/samples/nosuchphoto").status_code == 404


# -- upload limits and non-images ------------------------------------------------------
def test_oversize_bytes_refused_and_nothing_stored(client_factory, to_png) -> None:
    client, app = client_factory(max_bytes=2000)
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    data = to_png(noise)
    assert len(data) > 2000
    r = client.post("/api/images", content=data)
    assert r.status_code == 413 and "limit of 2,000" in r.json()["detail"]

    def chunks():  # no Content-Length: the cap is enforced while the body streams in
        for start in range(0, len(data), 500):
            yield data[start : start + 500]

    r = client.post("/api/images", content=chunks())
    assert r.status_code == 413
    assert _stored_images(app) == []
    assert (
        client.post("/api/images", content=data[:1500]).status_code == 415
    )  # under the cap: judged as an image


def test_oversize_pixels_refused_from_the_header(client_factory, to_png) -> None:
    from PIL import Image

    client, app = client_factory(max_pixels=10_000)
    r = client.post("/api/images?name=big.png", content=to_png(np.zeros((101, 100), np.uint8)))
    assert r.status_code == 413 and "10,100 pixels" in r.json()["detail"]
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, format="PNG")  # 64 MP, a few kB: a would-be bomb
    r = client.post("/api/images?name=bomb.png", content=buffer.getvalue())
    assert r.status_code == 413 and "64,000,000 pixels" in r.json()["detail"]
    assert (
        client.post("/api/images", content=to_png(np.zeros((100, 100), np.uint8))).status_code
        == 201
    )
    assert len(_stored_images(app)) == 1


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"%PDF-1.4 this is not a picture", 415, "not an image"),
        (b"hello, I am text", 415, "not an image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", 415, "not an image"),
        (b"", 400, "empty upload"),
    ],
)
def test_non_images_refused_with_one_line(client_factory, data, status, words) -> None:
    client, app = client_factory()
    r = client.post("/api/images?name=thing.bin", content=data)
    assert r.status_code == status
    detail = r.json()["detail"]
    assert words in detail and "\n" not in detail and "Traceback" not in detail
    assert _stored_images(app) == []


# -- path traversal --------------------------------------------------------------------
BAD_IDS = [
    "../",
    "..",
    "..%2f",
    "%2e%2e%2f",
    "%2e%2e",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "..%5c..%5csecret.txt",
    "%5c..%5csecret.txt",
    "%2fetc%2fpasswd",
    "%2Fetc%2Fpasswd",
    "C:%5cWindows%5cwin.ini",
    "....%2f%2f",
    "%00",
    "..%252f",
]


def _routes(image: str, key: str, name: str) -> list[tuple[str, str]]:
    """Every route that takes an id or a name, with ``{}`` where the bad value goes."""
    return [
        ("GET", "/api/images/{}"),
        ("GET", "/api/images/{}/original.png"),
        ("GET", "/api/images/{}/predictions"),
        ("POST", "/api/images/{}/explain"),
        ("POST", "/api/images/{}/activations"),
        ("GET", f"/api/images/{{}}/overlays/{key}.png"),
        ("GET", f"/api/images/{image}/overlays/{{}}.png"),
        ("GET", f"/api/images/{{}}/files/{name}"),
        ("GET", f"/api/images/{image}/files/{{}}"),
        ("GET", "/api/shared/{}"),
        ("POST", "/api/samples/{}"),
        ("GET", "/api/jobs/{}"),
        ("DELETE", "/api/jobs/{}"),
        ("GET", "/api/models/{}/labels"),
        ("GET", "/api/models/{}/layers"),
        ("GET", "/static/{}"),
    ]


def test_path_traversal_refused_in_every_route(client_factory, photo_png, raw, tmp_path) -> None:
    client, app = client_factory()
    secret = tmp_path / "secret.txt"  # beside the storage area, one level up
    secret.write_text("TOP-SECRET-CONTENT")
    image = _upload(client, photo_png, "cat.png")["id"]
    info = client.post(f"/api/images/{image}/explain", json={"method": "saliency"}).json()
    name = info["files"]["map"]
    routes = _routes(image, info["key"], name)
    bodies = {"/explain": b'{"method": "saliency"}', "/activations": b'{"layer": "conv1"}'}
    checked = 0
    for method, template in routes:
        body = next((b for suffix, b in bodies.items() if template.endswith(suffix)), b"{}")
        for bad in [
            *BAD_IDS,
            f"{image}%2f..%2f..%2fsecret.txt",
            f"{name}%2f..",
            "source.bin",
            "meta.json",
        ]:
            status, content = raw(app, method, template.format(bad).encode(), body)
            assert 400 <= status < 500, (method, template, bad, status)
            assert b"TOP-SECRET" not in content and b"root:" not in content
            if content and status != 404:
                assert "\n" not in json.loads(content)["detail"]
            checked += 1
    # the attack job takes the image id in its JSON body
    for bad in BAD_IDS:
        status, _ = raw(
            app,
            "POST",
            b"/api/jobs/attack",
            json.dumps({"image": bad.replace("%2f", "/")}).encode(),
        )
        assert status == 400
    assert checked == len(routes) * (len(BAD_IDS) + 4)
    # the legitimate requests still work through the same raw path
    assert raw(app, "GET", f"/api/images/{image}/files/{name}".encode())[0] == 200
    assert raw(app, "GET", b"/static/app.js")[0] == 200


def test_files_are_per_image(client_factory, photo_png) -> None:
    """A file name of one image does not open through another image's id."""
    client, _ = client_factory()
    a = _upload(client, photo_png, "a.png")["id"]
    b = _upload(client, photo_png, "b.png")["id"]
    name = client.post(f"/api/images/{a}/explain", json={"method": "saliency"}).json()["files"][
        "map"
    ]
    assert client.get(f"/api/images/{a}/files/{name}").status_code == 200
    assert client.get(f"/api/images/{b}/files/{name}").status_code == 404
    unknown = "0" * 32
    assert client.get(f"/api/images/{unknown}/predictions").status_code == 404


def test_oldest_images_evicted(client_factory, photo_png) -> None:
    client, app = client_factory(max_images=2)
    ids = [_upload(client, photo_png, f"{k}.png")["id"] for k in range(3)]
    assert _stored_images(app) == sorted(ids[1:])
    assert client.get(f"/api/images/{ids[0]}").status_code == 404


# -- jobs ------------------------------------------------------------------------------
def test_cancel_stops_a_running_job_and_writes_nothing(client_factory) -> None:
    client, app = client_factory()
    job = client.post(
        "/api/jobs/visualize", json={"layer": "conv2", "channel": 1, "steps": 1024}
    ).json()
    deadline = time.monotonic() + 30
    while client.get(f"/api/jobs/{job['id']}").json()["done"] < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 200
    ended = wait_for_job(client, job["id"])
    assert ended["status"] == "cancelled" and 2 <= ended["done"] < 1024
    shared = app.state.explorer.storage.root / "shared"
    assert not list(shared.glob("vis-*.png"))


def test_cancel_a_queued_job_never_runs_it(client_factory) -> None:
    client, _ = client_factory()
    first = client.post(
        "/api/jobs/visualize", json={"layer": "conv2", "channel": 1, "steps": 1024}
    ).json()
    second = client.post(
        "/api/jobs/visualize", json={"layer": "conv2", "channel": 2, "steps": 3}
    ).json()
    assert client.delete(f"/api/jobs/{second['id']}").json()["status"] == "cancelled"
    client.delete(f"/api/jobs/{first['id']}")
    assert wait_for_job(client, first["id"])["status"] == "cancelled"
    assert wait_for_job(client, second["id"])["done"] == 0


def test_visualisation_is_cached_and_equals_library(client_factory, digits_model) -> None:
    from convlens.optimize.visualize import visualize_neuron
    from convlens.render.overlay import to_uint8_image

    client, _ = client_factory()
    request = {"layer": "conv2", "channel": 3, "steps": 8}
    first = wait_for_job(client, client.post("/api/jobs/visualize", json=request).json()["id"])
    assert first["status"] == "done"
    png = client.get(first["result"]["file"]).content
    expected = visualize_neuron(digits_model, "conv2", 3, steps=8, seed=0)
    assert png == array_to_png_bytes(to_uint8_image(expected.tensors["image"][0]))
    second = wait_for_job(client, client.post("/api/jobs/visualize", json=request).json()["id"])
    assert (
        second["result"]["file"] == first["result"]["file"] and second["done"] == 0
    )  # cached: no optimisation step
    bad = client.post("/api/jobs/visualize", json={"layer": "nope", "channel": 0})
    assert bad.status_code == 400 and "nope" in bad.json()["detail"]


# -- schema, page, errors --------------------------------------------------------------
def test_openapi_schema_lists_the_routes(client_factory) -> None:
    client, _ = client_factory()
    paths = client.get("/openapi.json").json()["paths"]
    for route in [
        "/api/info",
        "/api/images",
        "/api/samples/{sample}",
        "/api/images/{image_id}/predictions",
        "/api/images/{image_id}/explain",
        "/api/images/{image_id}/overlays/{key}.png",
        "/api/images/{image_id}/activations",
        "/api/images/{image_id}/files/{name}",
        "/api/jobs/attack",
        "/api/jobs/visualize",
        "/api/jobs/report",
        "/api/jobs/patches",
        "/api/models/{model}/report-sections",
        "/api/models/{model}/features",
        "/api/jobs/{job_id}",
    ]:
        assert route in paths, route
    assert "delete" in paths["/api/jobs/{job_id}"]
    assert client.get("/docs").status_code == 404  # FastAPI's docs page loads a CDN


def test_page_loads_nothing_from_outside(client_factory) -> None:
    client, _ = client_factory()
    page = client.get("/").text
    assert '<script src="/static/app.js">' in page
    for name in ("", "static/app.js", "static/style.css"):
        text = client.get(f"/{name}").text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "explain", {"method": "nosuch"}, 400, "unknown method"),
        ("POST", "explain", {"method": "gradcam", "layer": "conv9"}, 400, "conv9"),
        ("POST", "explain", {"method": "saliency", "target": 12}, 400, "12"),
        ("POST", "explain", {"method": "saliency", "model": "resnet"}, 400, "unknown model"),
        ("GET", "predictions?top_k=0", None, 422, "top_k"),
    ],
)
def test_bad_requests_answer_one_line(
    client_factory, photo_png, method, path, body, status, words
) -> None:
    client, _ = client_factory()
    image = _upload(client, photo_png, "cat.png")["id"]
    r = client.request(method, f"/api/images/{image}/{path}", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"] and "\n" not in r.json()["detail"]


def test_foreign_host_header_refused_when_restricted(client_factory) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    from convlens.server.app import LOOPBACK_HOSTS

    client, _ = client_factory(allowed_hosts=[*LOOPBACK_HOSTS, "testserver"])
    assert client.get("/api/info").status_code == 200
    assert client.get("/api/info", headers={"Host": "evil.example:8000"}).status_code == 400
    assert client.get("/api/info", headers={"Host": "127.0.0.1:8000"}).status_code == 200


# -- the command -----------------------------------------------------------------------
def test_serve_without_the_web_extra_exits_2(monkeypatch, capsys) -> None:
    import importlib.util

    from convlens.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'convlens[web]'" in err and len(err.splitlines()) == 1


def test_serve_bad_port_exits_2(capsys) -> None:
    from convlens.cli.main import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err


def test_loopback_detection() -> None:
    from convlens.cli.cmd_serve import is_loopback

    assert (
        is_loopback("127.0.0.1")
        and is_loopback("::1")
        and is_loopback("localhost")
        and is_loopback("127.0.0.2")
    )
    assert (
        not is_loopback("0.0.0.0")
        and not is_loopback("192.168.1.5")
        and not is_loopback("example.org")
    )


@pytest.mark.parametrize(
    ("host", "warned", "restricted"), [("127.0.0.1", False, True), ("0.0.0.0", True, False)]
)
def test_serve_wires_uvicorn_and_warns_off_loopback(
    monkeypatch, capsys, host, warned, restricted
) -> None:
    import uvicorn

    from convlens.cli.main import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert main(["serve", "--model", "digits_cnn", "--host", host, "--port", "8765"]) == 0
    ((app, options),) = calls
    assert options["host"] == host and options["port"] == 8765
    assert app.state.explorer.default_model == "digits_cnn"
    assert any("TrustedHost" in str(m.cls) for m in app.user_middleware) == restricted
    err = capsys.readouterr().err
    assert ("NO authentication" in err) == warned
    app.state.explorer.close()


def test_job_errors_are_reported_not_raised(client_factory, photo_png) -> None:
    client, _ = client_factory()
    image = _upload(client, photo_png, "cat.png")["id"]
    job = wait_for_job(
        client,
        client.post(
            "/api/jobs/attack", json={"image": image, "target": "giraffe", "steps": 2}
        ).json()["id"],
    )
    assert job["status"] == "error" and "giraffe" in job["error"]
    assert client.get("/api/info").status_code == 200  # the server carries on


def test_storage_refuses_names_and_links_that_leave_the_area(tmp_path) -> None:
    from convlens.errors import BadInputError
    from convlens.server.storage import Storage

    storage = Storage(tmp_path / "area")
    image = storage.add_image(b"x", {"name": "x"})
    for bad in [
        "../x.png",
        "/etc/passwd",
        "a/b.png",
        "map-..npy",
        "MAP-1.npy",
        "map-1.npy\x00.png",
        "map-1.exe",
        "",
        "..",
    ]:
        with pytest.raises(BadInputError):
            storage.file(image, bad)
    for bad in ["../" + image, image.upper(), image[:-1], image + "0", "/" + image]:
        with pytest.raises(BadInputError):
            storage.image_dir(bad)
    # a link planted inside the area that points outside is caught by the resolved-path check
    (tmp_path / "outside.png").write_bytes(b"secret")
    (storage.root / image / "leak.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(BadInputError, match="outside"):
        storage.file(image, "leak.png")
    assert storage.file(image, "map-0123abcd.npy").parent == storage.root / image
