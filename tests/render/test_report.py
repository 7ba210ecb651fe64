"""The HTML report on the small digits model: every registered section present, nothing
external, every picture a PNG equal (by hash) to the library's own output recomputed from
the picture's provenance, faithfulness numbers equal to ``convlens.metrics``, provenance
present; two models side by side; ``convlens report`` JSON and bad input (exit 2)."""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from PIL import Image

from convlens.models.zoo import load_model
from convlens.render.report import build_report, discover_sections

from helpers.conv_bn import ConvBNNet
from helpers.report_oracle import figures, library_png

EXPECTED_SECTIONS = {
    "predictions",
    "filters",
    "activations",
    "attribution",
    "gradcam",
    "segmentation",
    "class_visualisation",
    "adversarial",
    "fast_mode",
    "provenance",
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread_per_module: None) -> None:
    """The whole module runs on one torch thread (``one_thread_per_module`` in tests/conftest.py)."""


def _digit(path: Path) -> Path:
    """A handwritten-looking "0" at the model's 8x8 input size (used as is, no resize)."""
    image = np.zeros((8, 8), dtype=np.uint8)
    image[1:7, 2] = image[1:7, 5] = 220
    image[1, 2:6] = image[6, 2:6] = 220
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def digit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _digit(tmp_path_factory.mktemp("report") / "zero.png")


@pytest.fixture(scope="module")
def model() -> Any:
    return load_model("digits_cnn")


@pytest.fixture(scope="module")
def report(model: Any, digit: Path) -> Any:
    return build_report(model, str(digit))


def test_every_registered_section_is_present(report: Any) -> None:
    names = {s.name for s in discover_sections()}
    assert names >= EXPECTED_SECTIONS
    for name in names:
        assert f'data-section="{name}"' in report.html, name
    summary = report.summary()
    assert [s["name"] for s in summary["sections"]] == [s.name for s in discover_sections()]
    # the digits model can run every section: nothing is reported missing, nothing faked
    assert all(s["models"]["digits_cnn"]["available"] for s in summary["sections"])
    assert 'class="na"' not in report.html


def test_no_external_url_script_or_stylesheet(report: Any) -> None:
    links = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', report.html, flags=re.IGNORECASE)
    assert links, "the page has images and a contents list"
    assert not [u for u in links if re.match(r"\s*(https?:)?//", u, flags=re.IGNORECASE)]
    assert all(
        u.startswith(("data:image/png;base64,", "data:image/jpeg;base64,", "#")) for u in links
    )
    assert not re.search(r"<(script|link|iframe|object|embed)\b", report.html, flags=re.IGNORECASE)
    assert "url(" not in report.html  # no CSS fetches either


def test_page_is_well_formed(report: Any) -> None:
    from html.parser import HTMLParser

    void = {"img", "meta", "br", "hr"}

    class Balance(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []
            self.errors: list[str] = []

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag not in void:
                self.stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            if self.stack and self.stack[-1] == tag:
                self.stack.pop()
            else:
                self.errors.append(f"</{tag}> closes {self.stack[-1:]}")

    parser = Balance()
    parser.feed(report.html)
    assert report.html.startswith("<!DOCTYPE html>") and not parser.errors and not parser.stack


#: pictures whose every pixel matters stay lossless; photos and overlays are JPEG
LOSSLESS = {"filters", "visualize_class", "pgd"}


def test_every_img_is_a_data_uri_of_its_format_matching_its_hash(report: Any) -> None:
    found = figures(report.html)
    assert len(found) == report.html.count("<img ") == len(report.images)
    for fig in found:
        assert hashlib.sha256(fig["png"]).hexdigest() == fig["sha256"]
        with Image.open(io.BytesIO(fig["png"])) as image:
            assert image.format == fig["mime"].split("/")[1].upper()
            assert image.format == (
                "PNG" if fig["name"].partition(":")[0] in LOSSLESS else "JPEG"
            ), fig["name"]
            image.load()  # decodes fully (a truncated file raises)
            assert min(image.size) >= 1


def test_each_picture_equals_the_library_render_by_hash(
    report: Any, model: Any, digit: Path
) -> None:
    batch = model.prepare([str(digit)], sources=[str(digit)])
    kinds = set()
    for image in report.images:
        expected = hashlib.sha256(
            library_png(model, batch, image.name, image.provenance)
        ).hexdigest()
        assert image.sha256 == expected, image.name
        kinds.add(image.name.partition(":")[0])
    assert kinds == {
        "image",
        "filters",
        "activations",
        "attribution",
        "gradcam",
        "segment",
        "visualize_class",
        "pgd",
        "fast_mode",
    }


def test_the_hash_check_can_fail(report: Any, model: Any, digit: Path) -> None:
    # a picture drawn with other arguments (another alpha, sign or clip; same encoding)
    # must not match, while the recorded ones do: the check has teeth
    from convlens.attribution import explain
    from convlens.render.display import result_overlay
    from convlens.render.figures import array_to_bytes

    image = next(i for i in report.images if i.name == "attribution:gradient_x_input")
    render = image.provenance["render"]
    batch = model.prepare([str(digit)])
    result = explain(model, batch, "gradient_x_input", image.provenance["target"]["classes"][0])
    recorded = {k: render[k] for k in ("sign", "clip", "alpha", "max_side")}

    def sha(**changed: Any) -> str:
        pixels = result_overlay(result, 0, **{**recorded, **changed})
        return hashlib.sha256(
            array_to_bytes(pixels, render["format"], quality=render["quality"])
        ).hexdigest()

    assert sha() == image.sha256
    for changed in ({"alpha": 0.5}, {"sign": "all"}, {"clip": 99.9}):
        assert sha(**changed) != image.sha256, changed


def test_faithfulness_numbers_are_the_metrics_and_ranked(
    report: Any, model: Any, digit: Path
) -> None:
    from convlens.attribution import applicable_methods, explain
    from convlens.metrics import deletion_auc, insertion_auc

    section = next(s for s in report.summary()["sections"] if s["name"] == "attribution")["models"][
        "digits_cnn"
    ]
    ranking = section["ranking"]
    shown = {r["method"] for r in ranking} | {s["method"] for s in section["skipped"]}
    assert shown == set(applicable_methods(model)) - {
        "segment"
    }  # every method for this model, shown or said why not
    scores = [r["insertion"] - r["deletion"] for r in ranking]
    assert scores == sorted(scores, reverse=True)
    batch = model.prepare([str(digit)])
    target = section["target"]
    assert target == int(model.logits(batch.x).argmax())
    for row in ranking[:: max(1, len(ranking) // 4)]:
        options = next(
            i for i in report.images if i.name == f"attribution:{row['method']}"
        ).provenance["params"]
        options = {k: v for k, v in options.items() if k not in ("reduce", "seconds", "paper")}
        maps = explain(model, batch, row["method"], target, **options).tensors["map"]
        assert float(deletion_auc(model, batch.x, maps, target, steps=20)[0][0]) == pytest.approx(
            row["deletion"], abs=1e-6
        )
        assert float(insertion_auc(model, batch.x, maps, target, steps=20)[0][0]) == pytest.approx(
            row["insertion"], abs=1e-6
        )
        assert row["seconds"] > 0


def test_provenance_is_present(report: Any, model: Any) -> None:
    info = model.provenance()
    section = report.html.split('data-section="provenance"')[1]
    assert info["weights_sha256"] in section and info["model"] in section
    for key, version in info["versions"].items():
        assert f"{key} version" in section and str(version) in section
    record = next(s for s in report.summary()["sections"] if s["name"] == "provenance")["models"][
        "digits_cnn"
    ]
    assert set(record["sections"]) >= {
        "attribution",
        "gradcam",
        "class_visualisation",
        "adversarial",
    }
    for image in report.images:  # every picture carries what made it
        assert (
            image.provenance["model"] == "digits_cnn"
            and image.provenance["weights_sha256"] == info["weights_sha256"]
        )
    assert report.html.count("<summary>provenance</summary>") == len(report.images)


def test_two_models_side_by_side_and_unavailable_is_said(model: Any, digit: Path) -> None:
    linear = load_model("digits_linear")
    two = build_report([model, linear], str(digit), only=["predictions", "activations"])
    for section in ("predictions", "activations"):
        block = two.html.split(f'data-section="{section}"')[1].split("</section>")[0]
        assert block.index('data-model="digits_cnn"') < block.index('data-model="digits_linear"')
    # a linear model has no feature maps: the section says so for it, and shows no picture
    acts = next(s for s in two.summary()["sections"] if s["name"] == "activations")["models"]
    assert acts["digits_cnn"]["available"] and not acts["digits_linear"]["available"]
    assert "spatial" in acts["digits_linear"]["reason"]
    assert all(
        i.provenance["model"] == "digits_cnn"
        for i in two.images
        if i.name.startswith("activations:")
    )
    assert two.html.count("Not available for this model") == 1


def test_cli_json_and_file(tmp_path: Path, digit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from convlens.cli import cmd_report
    from convlens.cli.main import main

    out = tmp_path / "r.html"
    args = [
        "report",
        str(digit),
        "--model",
        "digits_cnn,digits_linear",
        "--sections",
        "predictions,provenance",
        "-o",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_report.SCHEMA)
    assert payload["models"] == ["digits_cnn", "digits_linear"] and payload["out"] == str(out)
    assert [s["name"] for s in payload["sections"]] == ["predictions", "provenance"]
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and payload["bytes"] == len(page.encode())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["{missing}"], "missing.png"),
        (["{digit}", "--sections", "nope"], "nope"),
        (["{digit}", "--model", "digits_cnn,digits_cnn"], "--model"),
        (["{digit}", "--model", "no_such_model"], "no_such_model"),
        (["{digit}", "-o", "{tmp}/r.txt"], ".html"),
        (["{digit}", "--top-k", "0"], "--top-k"),
        (["{digit}", "--clip", "0"], "--clip 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], needle: str, tmp_path: Path, digit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from convlens.cli.main import main

    filled = [a.format(missing=tmp_path / "missing.png", digit=digit, tmp=tmp_path) for a in args]
    if "-o" not in filled:
        filled += ["-o", str(tmp_path / "r.html")]
    if "--model" not in filled:
        filled += ["--model", "digits_cnn"]
    assert main(["report", *filled]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.html")) and not list(
        tmp_path.glob(".*.tmp")
    )  # nothing written


def test_full_runs_every_method_and_reports_progress(model: Any, digit: Path) -> None:
    from convlens.attribution import applicable_methods

    calls: list[tuple[int, int]] = []
    full = build_report(
        model,
        str(digit),
        full=True,
        only=["attribution", "provenance"],
        progress=lambda d, t: calls.append((d, t)),
    )
    section = next(s for s in full.summary()["sections"] if s["name"] == "attribution")["models"][
        "digits_cnn"
    ]
    assert {r["method"] for r in section["ranking"]} == set(applicable_methods(model)) - {
        "segment"
    } and not section["skipped"]
    image = next(i for i in full.images if i.name == "attribution:scorecam")
    assert image.provenance["metrics"]["steps"] == 50
    # one unit per attribution method that ran, one for the provenance section, the total up front
    n = len(section["ranking"])
    assert calls == [(d, n + 1) for d in range(n + 2)]
    record = next(s for s in full.summary()["sections"] if s["name"] == "provenance")["models"][
        "digits_cnn"
    ]
    assert record["full"] is True and record["sections"]["attribution"]["metric_steps"] == 50


def test_cli_sign_and_clip_draw_the_maps(tmp_path: Path, digit: Path, model: Any) -> None:
    """`convlens report --sign all --clip 95` = build_report(sign="all", clip=95), picture for
    picture, and integrated gradients (positive by default) is drawn otherwise."""
    import re

    from convlens.cli.main import main
    from convlens.render.report import build_report

    out = tmp_path / "r.html"
    argv = ["report", str(digit), "--model", "digits_cnn", "--sections", "attribution,gradcam"]
    assert main([*argv, "--sign", "all", "--clip", "95", "-q", "-o", str(out)]) == 0
    shown = re.findall(r'data-name="([^"]+)" data-sha256="([0-9a-f]{64})"', out.read_text())
    only = ["attribution", "gradcam"]
    chosen = build_report(model, str(digit), only=only, sign="all", clip=95)
    assert sorted(shown) == sorted((i.name, i.sha256) for i in chosen.images)
    default = {i.name: i.sha256 for i in build_report(model, str(digit), only=only).images}
    ig = "attribution:integrated_gradients"
    assert dict(shown)[ig] != default[ig]


def test_fast_mode_section_shows_both_maps_their_gap_and_what_did_not_apply(
    report: Any, model: Any, digit: Path
) -> None:
    import convlens

    # digits (8x8, no batch norm): nothing but the allocator applies, and the section says why
    digits = next(s for s in report.summary()["sections"] if s["name"] == "fast_mode")
    numbers = digits["models"]["digits_cnn"]
    expected = convlens.load_model("digits_cnn", fast=True).fast
    assert expected is not None and numbers["fallbacks"] == expected["fallbacks"]
    assert numbers["saliency"]["max_relative_difference"] == 0.0  # the same module ran
    for reason in expected["fallbacks"]:
        assert html.escape(reason) in report.html
    # a model it changes: both pairs folded, channels-last; the maps agree to rounding
    net = convlens.wrap(ConvBNNet().eval(), input_size=32, mean=0.5, std=0.25, resize=None)
    built = build_report(net, str(digit), only=["fast_mode"])
    (section,) = built.summary()["sections"]
    got = section["models"][net.name]
    assert got["fallbacks"] == []
    for method in ("saliency", "gradcam"):
        assert 0 <= got[method]["max_relative_difference"] < 1e-4, got
        assert got[method]["eager_seconds"] > 0 and got[method]["fast_seconds"] > 0
    assert [i.name for i in built.images] == [
        "fast_mode:saliency:eager",
        "fast_mode:saliency:fast",
        "fast_mode:gradcam:eager",
        "fast_mode:gradcam:fast",
    ]
