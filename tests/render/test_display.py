"""One way to draw a map (render.display + render.overlay): sign modes, percentile clipping,
opacity that scales with the map, averaging onto a smaller picture, per-method defaults,
captions, and ``convlens explain --sign/--clip``; each against hand-computed pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pytest

from convlens.errors import BadInputError
from convlens.render.display import (
    METHOD_SIGNS,
    default_sign,
    display_caption,
    display_settings,
    result_overlay,
    signed_part,
)
from convlens.render.overlay import overlay

GRAY = np.full((8, 8, 3), 128, np.uint8)


def _expected(
    image: np.ndarray, u: np.ndarray, cmap: str, alpha: float, diverging: bool
) -> np.ndarray:
    """Hand-written blend: colour of u (or (u+1)/2 on a diverging map), weight alpha*|u|."""
    colour = np.rint(
        np.asarray(mpl.colormaps[cmap]((u + 1) / 2 if diverging else u))[..., :3] * 255
    )
    w = alpha * np.abs(u)[..., None]
    return np.rint((1 - w) * image + w * colour).astype(np.uint8)


def _half_signed() -> np.ndarray:
    v = np.zeros((8, 8))
    v[:, :4] = np.linspace(0.1, 1.0, 32).reshape(8, 4)  # left: positive
    v[:, 4:] = -np.linspace(0.1, 2.0, 32).reshape(8, 4)  # right: negative, twice as strong
    return v


def test_signed_part_modes() -> None:
    v = np.array([[-2.0, 0.0, 3.0, np.nan]])
    np.testing.assert_array_equal(signed_part(v, "positive"), [[0, 0, 3, np.nan]])
    np.testing.assert_array_equal(signed_part(v, "negative"), [[2, 0, 0, np.nan]])
    np.testing.assert_array_equal(signed_part(v, "absolute"), [[2, 0, 3, np.nan]])
    np.testing.assert_array_equal(signed_part(v, "all"), v)


@pytest.mark.parametrize("sign", ["positive", "negative", "absolute", "all"])
def test_each_sign_mode_equals_the_hand_blend(sign: str) -> None:
    v = _half_signed()
    shown = {
        "positive": np.maximum(v, 0),
        "negative": np.maximum(-v, 0),
        "absolute": np.abs(v),
        "all": v,
    }[sign]
    u = np.clip(shown / np.percentile(np.abs(shown), 99), -1, 1)
    cmap = "RdBu_r" if sign == "all" else "viridis"
    np.testing.assert_array_equal(
        overlay(GRAY, v, sign=sign, alpha=0.8), _expected(GRAY, u, cmap, 0.8, sign == "all")
    )


def test_positive_leaves_the_negative_evidence_unpainted_and_negative_the_reverse() -> None:
    v = _half_signed()
    pos, neg = overlay(GRAY, v, sign="positive"), overlay(GRAY, v, sign="negative")
    np.testing.assert_array_equal(pos[:, 4:], GRAY[:, 4:])
    np.testing.assert_array_equal(neg[:, :4], GRAY[:, :4])
    assert (
        np.abs(pos[:, :4].astype(int) - 128).max() > 40
        and np.abs(neg[:, 4:].astype(int) - 128).max() > 40
    )
    np.testing.assert_array_equal(
        overlay(GRAY, v, sign="absolute"), overlay(GRAY, -v, sign="absolute")
    )
    # all: red (R > B) where clearly positive, blue where clearly negative
    both = overlay(GRAY, v, sign="all", alpha=1.0).astype(int)
    strong = np.abs(v) / np.percentile(np.abs(v), 99) > 0.3
    red, blue = strong & (v > 0), strong & (v < 0)
    assert red.any() and blue.any()
    assert (both[red][:, 0] > both[red][:, 2] + 10).all() and (
        both[blue][:, 2] > both[blue][:, 0] + 10
    ).all()


def test_clip_saturates_outliers_so_the_rest_shows() -> None:
    v = np.tile(np.linspace(0.0, 1.0, 100), (100, 1))
    v[0, 0] = 1000.0  # one extreme pixel
    at99, at100 = (
        overlay(np.zeros((100, 100, 3), np.uint8), v, clip=99),
        overlay(np.zeros((100, 100, 3), np.uint8), v, clip=100),
    )
    # with the maximum as scale every ordinary pixel is under 1/1000 of full colour: black
    assert at100[1:].max() <= 1
    # at the 99th percentile the right edge (just under it) is nearly full yellow at alpha 0.7
    scale = np.percentile(v, 99)
    expected = _expected(np.zeros((100, 100, 3)), np.clip(v / scale, 0, 1), "viridis", 0.7, False)
    np.testing.assert_array_equal(at99, expected)
    assert at99[50, -1].min() > 0 and at99[50, -1, 1] > 100


def test_a_fine_map_is_averaged_onto_a_small_picture_by_its_shown_part() -> None:
    # salt-and-pepper evidence: +1/-1 checkerboard at twice the picture's resolution
    v = np.indices((32, 32)).sum(axis=0) % 2 * 2.0 - 1.0
    small = np.full((16, 16, 3), 128, np.uint8)
    positive = overlay(small, v, sign="positive", alpha=1.0)
    # the positive part averages to about 0.5 everywhere: every pixel visibly coloured ...
    assert np.abs(positive.astype(int) - 128).max(axis=2).min() > 20
    # ... while the signed values cancel: inside (the resize renormalises its weights at the
    # corners, which keeps a net value there) nothing is drawn: "all" shows the net evidence
    both = overlay(small, v, sign="all", alpha=1.0)
    np.testing.assert_array_equal(both[1:-1, 1:-1], small[1:-1, 1:-1])


def test_bad_sign_or_clip_refused() -> None:
    with pytest.raises(BadInputError, match="sign"):
        overlay(GRAY, _half_signed(), sign="both")
    for clip in (0, 101, -5):
        with pytest.raises(BadInputError, match="clip"):
            overlay(GRAY, _half_signed(), clip=clip)


def test_default_sign_per_method_and_from_the_values() -> None:
    assert {
        m: default_sign(m) for m in ("gradient_x_input", "integrated_gradients", "lrp")
    } == dict.fromkeys(("gradient_x_input", "integrated_gradients", "lrp"), "positive")
    assert default_sign("occlusion") == "all" == METHOD_SIGNS["occlusion"]
    assert default_sign("saliency", np.ones((3, 3))) == "positive"
    assert (
        default_sign(None, _half_signed()) == "all"
        and default_sign("unknown", _half_signed()) == "all"
    )
    # overlay's own default (no method known): all for a signed map, positive otherwise
    np.testing.assert_array_equal(
        overlay(GRAY, _half_signed()), overlay(GRAY, _half_signed(), sign="all")
    )


def test_result_overlay_uses_the_method_default_and_states_it(digits: Any) -> None:
    import convlens
    from convlens.render.results import result_figure

    result = convlens.explain(digits, _digit_batch(), "gradient_x_input")
    settings = display_settings(result)
    assert settings == {"sign": "positive", "clip": 99.0, "reduce": "sum"}
    assert display_caption(settings) == "sum over colour channels; positive; clip 99%"
    np.testing.assert_array_equal(
        result_overlay(result), overlay(result.originals[0], result.display[0], sign="positive")
    )
    np.testing.assert_array_equal(
        result_overlay(result, sign="all", clip=90),
        overlay(result.originals[0], result.display[0], sign="all", clip=90),
    )
    fig = result_figure(result, sign="negative")
    assert "negative; clip 99%" in fig.axes[0].get_title()
    cam = convlens.explain(digits, _digit_batch(), "gradcam")
    assert (
        display_caption(display_settings(cam)) == "positive; clip 99%"
    )  # a CAM has no channel reduction


def _digit_batch() -> object:
    import torch

    return torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # a pixel batch


@pytest.fixture(scope="module")
def digits() -> Any:
    from convlens.models.zoo import load_model

    return load_model("digits_cnn")


def test_cli_sign_and_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from convlens.cli.main import main

    digit = np.zeros((8, 8), np.uint8)
    digit[1:7, 3:5] = 200
    Image.fromarray(digit).save(tmp_path / "one.png")
    outs = {}
    for sign in ("positive", "all"):
        outs[sign] = tmp_path / f"{sign}.png"
        assert (
            main(
                [
                    "explain",
                    str(tmp_path / "one.png"),
                    "--model",
                    "digits_cnn",
                    "--method",
                    "gradient_x_input",
                    "--sign",
                    sign,
                    "--clip",
                    "95",
                    "-o",
                    str(outs[sign]),
                ]
            )
            == 0
        )
    assert outs["positive"].read_bytes() != outs["all"].read_bytes()
    capsys.readouterr()
    assert (
        main(
            [
                "explain",
                str(tmp_path / "one.png"),
                "--model",
                "digits_cnn",
                "--clip",
                "0",
                "-o",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--clip" in err and not (tmp_path / "x.png").exists()
