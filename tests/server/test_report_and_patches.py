"""The explorer's report sections, sign/clip overlay controls and layer browser's top patches.

References: a report built by :func:`convlens.render.report.build_report` from the same file
(pictures compared by SHA-256), ``render.overlay`` with the sign the report draws
(``render.display``), and ``convlens top-patches`` run as a command on the same images.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

import convlens
from convlens.render.figures import array_to_png_bytes
from convlens.render.overlay import overlay

from helpers.web import wait_for_job

pytest.importorskip("fastapi")


def _upload(client, data: bytes, name: str = "digit.png") -> str:
    r = client.post(f"/api/images?name={name}", content=data)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """Twelve real digits of scikit-learn's set as 8x8 PNGs, and their features at conv2."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from convlens.cli.main import main

    root = tmp_path_factory.mktemp("digits")
    images = root / "images"
    images.mkdir()
    digits = load_digits()
    for i in range(12):
        pixels = (digits.images[i] * 255 / 16).round().astype(np.uint8)
        Image.fromarray(pixels).save(images / f"d{i:02d}-{digits.target[i]}.png")
    features = root / "features-conv2"
    argv = ["features", str(images), "--layer", "conv2", "--model", "digits_cnn", "-q"]
    assert main([*argv, "-o", str(features)]) == 0
    return images, features


# -- report sections -------------------------------------------------------------------
def test_report_sections_equal_build_report(client_factory, digits_model, digit_png, tmp_path):
    from convlens.render.report import build_report, discover_sections

    client, _ = client_factory()
    listed = client.get("/api/models/digits_cnn/report-sections").json()
    assert [s["name"] for s in listed["sections"]] == [s.name for s in discover_sections()]
    assert listed["index"] is None and "neighbors" not in [s["name"] for s in listed["sections"]]

    image = _upload(client, digit_png)
    job = client.post("/api/jobs/report", json={"image": image}).json()
    done = wait_for_job(client, job["id"], timeout=300)
    assert done["status"] == "done", done
    assert done["done"] == done["total"] == sum(s["steps"] for s in listed["sections"])
    got = done["result"]["sections"]

    path = tmp_path / "digit.png"
    path.write_bytes(digit_png)
    # the same file under the same name (figure titles show it)
    expected = build_report(digits_model, str(path), name="digit.png")
    assert [s["name"] for s in got] == [s["name"] for s in expected.sections]
    for section, reference in zip(got, expected.sections):
        fragment = reference["cells"][0]["fragment"]
        assert section["available"] == (fragment is not None)
        if fragment is None:  # unavailable on this model (fast mode changes nothing on 8x8)
            assert not section["images"], section["name"]
            continue
        assert [i["sha256"] for i in section["images"]] == [i.sha256 for i in fragment.images], (
            section["name"]
        )
        for picture in fragment.images:  # the fragment inlines the very same bytes
            assert picture.data_uri in section["html"]
    provenance = next(s for s in got if s["name"] == "provenance")
    assert provenance["summary"]["source"] == "digit.png"  # the upload's name, not a temp path
    assert set(provenance["summary"]["sections"]) >= {"attribution"}

    # one section alone: the same pictures, and a second identical request is served stored
    one = client.post("/api/jobs/report", json={"image": image, "sections": ["gradcam"]}).json()
    one = wait_for_job(client, one["id"])
    (gradcam,) = one["result"]["sections"]
    reference = next(s for s in got if s["name"] == "gradcam")
    assert [i["sha256"] for i in gradcam["images"]] == [i["sha256"] for i in reference["images"]]
    again = client.post("/api/jobs/report", json={"image": image, "sections": ["gradcam"]}).json()
    assert again["status"] == "done" and again["result"] == one["result"]


def test_report_job_cancel_stores_nothing(client_factory, digit_png) -> None:
    client, app = client_factory()
    image = _upload(client, digit_png)
    job = client.post("/api/jobs/report", json={"image": image, "full": True}).json()
    deadline = time.monotonic() + 60
    while client.get(f"/api/jobs/{job['id']}").json()["done"] < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 200
    ended = wait_for_job(client, job["id"], timeout=120)
    assert ended["status"] == "cancelled" and 1 <= ended["done"] < ended["total"]
    assert not list((app.state.explorer.storage.root / image).glob("report-*.json"))


def test_report_requests_checked_before_the_job(client_factory, digit_png) -> None:
    client, _ = client_factory()
    image = _upload(client, digit_png)
    bad = client.post("/api/jobs/report", json={"image": image, "sections": ["nope"]})
    assert bad.status_code == 400 and "unknown report section 'nope'" in bad.json()["detail"]
    empty = client.post("/api/jobs/report", json={"image": image, "sections": []})
    assert empty.status_code == 400
    missing = client.post("/api/jobs/report", json={"image": "0" * 32})
    assert missing.status_code == 404


def test_features_folder_adds_the_neighbours_section(
    client_factory, digits_model, digit_png, digit_folder, tmp_path
) -> None:
    from convlens.render.report import build_report

    _, features = digit_folder
    client, _ = client_factory(features=[str(features)])
    listed = client.get("/api/models/digits_cnn/report-sections").json()
    assert "neighbors" in [s["name"] for s in listed["sections"]]
    image = _upload(client, digit_png)
    job = client.post("/api/jobs/report", json={"image": image, "sections": ["neighbors"]}).json()
    (got,) = wait_for_job(client, job["id"], timeout=120)["result"]["sections"]
    path = tmp_path / "digit.png"
    path.write_bytes(digit_png)
    reference = build_report(
        digits_model, str(path), only=["neighbors"], index=features, name="digit.png"
    )
    fragment = reference.sections[0]["cells"][0]["fragment"]
    assert got["available"] and got["summary"] == fragment.summary
    assert [i["sha256"] for i in got["images"]] == [i.sha256 for i in fragment.images]


# -- sign and clip ---------------------------------------------------------------------
def test_overlay_default_sign_is_the_reports(client_factory, digits_model, photo_png, tmp_path):
    """Integrated gradients is signed: drawn by the data's sign it would be 'all'; the report
    and CLI draw it 'positive' (display.METHOD_SIGNS), and so must the explorer."""
    from convlens.render.display import METHOD_SIGNS, default_sign

    client, _ = client_factory()
    image = _upload(client, photo_png, "cat.png")
    info = client.post(
        f"/api/images/{image}/explain", json={"method": "integrated_gradients"}
    ).json()
    path = tmp_path / "cat.png"
    path.write_bytes(photo_png)
    result = convlens.explain(digits_model, [str(path)], "integrated_gradients")
    original, display = result.originals[0], result.display[0]
    assert default_sign(None, display) == "all"  # the data alone would say 'all'
    assert info["display"]["sign"] == METHOD_SIGNS["integrated_gradients"] == "positive"
    url = f"/api/images/{image}/overlays/{info['key']}.png"

    def drawn(**query) -> bytes:
        r = client.get(url, params={"alpha": 0.5, **query})
        assert r.status_code == 200, r.text
        return r.content

    default = drawn()
    assert default == array_to_png_bytes(overlay(original, display, alpha=0.5, sign="positive"))
    assert default != array_to_png_bytes(overlay(original, display, alpha=0.5, sign="all"))
    for sign, clip in [("all", 95.0), ("negative", 99.5), ("absolute", 80.0)]:
        assert drawn(sign=sign, clip=clip) == array_to_png_bytes(
            overlay(original, display, alpha=0.5, sign=sign, clip=clip)
        )
    assert client.get(url, params={"sign": "both"}).status_code == 422
    assert client.get(url, params={"clip": 0}).status_code == 422


# -- layer browser: top patches from a features folder ---------------------------------
def test_top_patches_equal_the_command(client_factory, digit_folder, tmp_path) -> None:
    from PIL import Image

    from convlens.cli.main import main
    from convlens.render.overlay import to_uint8_image
    from convlens.results import Result

    images, features = digit_folder
    client, _ = client_factory(features=[str(features)])
    folders = client.get("/api/models/digits_cnn/features").json()
    assert folders == [
        {"name": features.name, "model": "digits_cnn", "layer": "conv2", "images": 12}
    ]
    job = client.post("/api/jobs/patches", json={"layer": "conv2", "channel": 5, "k": 4}).json()
    done = wait_for_job(client, job["id"], timeout=120)
    assert done["status"] == "done", done
    assert done["total"] == 12  # progress over the folder's images
    got = done["result"]

    out = tmp_path / "cli"
    argv = ["top-patches", str(images), "--layer", "conv2", "--channels", "5", "--k", "4"]
    assert main([*argv, "--model", "digits_cnn", "-q", "-o", str(out)]) == 0
    cli = Result.load(out / "patches")
    paths = cli.provenance["params"]["paths"][0]
    assert [p["path"] for p in got["patches"]] == paths
    np.testing.assert_array_equal([p["value"] for p in got["patches"]], cli["values"][0].numpy())
    assert [p["box"] for p in got["patches"]] == cli["boxes"][0].tolist()
    raw = np.load(io.BytesIO(client.get(got["files"]["patches"]).content))
    np.testing.assert_array_equal(raw, cli["patches"][0].numpy())
    for rank, patch in enumerate(got["patches"]):
        png = client.get(patch["file"]).content
        shown = np.asarray(Image.open(io.BytesIO(png)))
        np.testing.assert_array_equal(shown, to_uint8_image(cli["patches"][0, rank]))
    # stored: asking again answers at once with the same patches
    again = client.post("/api/jobs/patches", json={"layer": "conv2", "channel": 5, "k": 4}).json()
    assert again["status"] == "done" and again["result"] == got


def test_top_patches_refused_where_no_folder(client_factory, digit_folder) -> None:
    _, features = digit_folder
    client, _ = client_factory(features=[str(features)])
    r = client.post("/api/jobs/patches", json={"layer": "conv1", "channel": 0})
    assert r.status_code == 400
    assert "layer conv1 has no features folder" in r.json()["detail"]
    assert "conv2" in r.json()["detail"]  # says which layers have one
    out = client.post("/api/jobs/patches", json={"layer": "conv2", "channel": 32})
    assert out.status_code == 400 and "32 channels" in out.json()["detail"]
    plain, _ = client_factory()
    none = plain.post("/api/jobs/patches", json={"layer": "conv2", "channel": 0})
    assert none.status_code == 400 and "has none" in none.json()["detail"]


def test_serve_features_option(monkeypatch, capsys, digit_folder, tmp_path) -> None:
    import uvicorn

    from convlens.cli.main import main

    _, features = digit_folder
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    argv = ["serve", "--model", "digits_cnn", "--port", "8765"]
    assert main([*argv, "--features", str(features)]) == 0
    explorer = calls[0].state.explorer
    assert [f.layer for f in explorer.features.folders] == ["conv2"]
    explorer.close()
    assert main([*argv, "--features", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "missing" in err[-1] and "Traceback" not in "".join(err)


def test_relative_image_paths_resolved_where_the_server_starts(
    client_factory, digit_folder, tmp_path, monkeypatch
) -> None:
    """`convlens features imgs/ -o DIR` stores `imgs/...` relative to where it ran; readers
    join them to that folder (recorded in the provenance)."""
    import shutil

    from convlens.cli.main import main
    from convlens.errors import BadInputError
    from convlens.server.patches import FeatureFolders

    images, _ = digit_folder
    work = tmp_path / "work"
    shutil.copytree(images, work / "imgs")
    monkeypatch.chdir(work)
    argv = ["features", "imgs", "--layer", "conv2", "--model", "digits_cnn", "-q", "-o", "feat"]
    assert main(argv) == 0
    (folder,) = FeatureFolders.load(["feat"], ["digits_cnn"]).folders
    assert folder.paths == tuple(str(p.resolve()) for p in sorted((work / "imgs").glob("*.png")))
    monkeypatch.chdir(tmp_path)  # elsewhere: joined to where features ran, still found
    (again,) = FeatureFolders.load([str(work / "feat")], ["digits_cnn"]).folders
    assert again.paths == folder.paths
    (work / "imgs").rename(work / "moved")  # images that are gone are reported as such
    with pytest.raises(BadInputError, match="none of its 12 images is found from here"):
        FeatureFolders.load([str(work / "feat")], ["digits_cnn"])
    with pytest.raises(BadInputError, match="made with model 'digits_cnn'"):
        FeatureFolders.load([str(work / "feat")], ["mnist_cnn"])


def test_report_sections_drawn_with_a_chosen_sign_and_clip(
    client_factory, digits_model, digit_png, tmp_path
) -> None:
    from convlens.render.report import build_report

    client, _ = client_factory()
    image = _upload(client, digit_png)
    chosen = {"sections": ["attribution", "gradcam"], "sign": "all", "clip": 95}
    job = client.post("/api/jobs/report", json={"image": image, **chosen}).json()
    got = wait_for_job(client, job["id"], timeout=300)["result"]
    assert got["sign"] == "all" and got["clip"] == 95
    path = tmp_path / "digit.png"
    path.write_bytes(digit_png)
    only = ["attribution", "gradcam"]
    drawn = build_report(digits_model, str(path), only=only, name="digit.png", sign="all", clip=95)
    default = build_report(digits_model, str(path), only=only, name="digit.png")
    for section, reference, plain in zip(got["sections"], drawn.sections, default.sections):
        pictures = reference["cells"][0]["fragment"].images
        assert [i["sha256"] for i in section["images"]] == [i.sha256 for i in pictures]
        assert all(i.provenance["render"]["sign"] == "all" for i in pictures)
        assert all("all; clip 95%" in i["caption"] for i in section["images"])
        if section["name"] == "attribution":  # IG is drawn 'positive' by default: it changed
            ig = next(
                i for i in section["images"] if i["name"] == "attribution:integrated_gradients"
            )
            before = next(
                i
                for i in plain["cells"][0]["fragment"].images
                if i.name == "attribution:integrated_gradients"
            )
            assert ig["sha256"] != before.sha256
    bad = client.post("/api/jobs/report", json={"image": image, "sign": "both"})
    assert bad.status_code == 422
