"""Acceptance of issue 18 part 1 on EfficientNet-Lite0: every method's map is visible.

For every method the model can run (``applicable_methods``) on the bundled cat and hopper,
the overlay the library draws by default (``render.display.result_overlay``) at about the
size a report or demo tile shows it (256 px wide) must

- cover a sane share of the part of the photo the model saw: at least 2 % and at most 85 %
  of its pixels differ visibly from the photo (some channel by >= 48 of 255), so it is
  neither empty nor a colour wash over everything; and
- show what the map holds: at least 80 % of the pixels where the shown map is in its top
  1 % differ visibly (the strongest evidence is never a pale veil).

The rendering before issue 18 (normalised at the 99.5th percentile at the map's own size,
constant opacity for unsigned maps, ``alpha * sqrt(|u|)`` on a diverging map for signed
ones) is re-implemented here from its formula and fails the same check on the cat: every
unsigned map covers everything (saliency, CAMs) and integrated gradients and LRP hide their
strongest pixels. Measured numbers are printed (``-s``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import matplotlib as mpl
import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(900)]

WIDTH, VISIBLE, LOW, HIGH, HOT_HIT = 256, 48, 0.02, 0.85, 0.8
PHOTOS = ("cat", "hopper")
#: quick options where the defaults are slow (as the report's quick settings)
QUICK = {
    "integrated_gradients": {"n_steps": 16},
    "smoothgrad": {"n_samples": 8},
    "smoothgrad_sq": {"n_samples": 8},
    "vargrad": {"n_samples": 8},
    "occlusion": {"patch": 56, "stride": 28},
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small(pixels: np.ndarray) -> np.ndarray:
    height = round(pixels.shape[0] * WIDTH / pixels.shape[1])
    return np.asarray(Image.fromarray(pixels).resize((WIDTH, height), Image.Resampling.BILINEAR))


def _resized(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bilinear resize with NaN kept out (PIL 'F' images, an implementation apart from render/)."""
    valid = np.isfinite(values)

    def rs(a: np.ndarray) -> np.ndarray:
        return np.asarray(
            Image.fromarray(a.astype(np.float32)).resize(
                (shape[1], shape[0]), Image.Resampling.BILINEAR
            ),
            dtype=np.float64,
        )

    filled, weight = rs(np.where(valid, values, 0.0)), rs(valid.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight >= 0.5, filled / weight, np.nan)


def _old_overlay(image: np.ndarray, values: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """The rendering before issue 18, from its formula."""
    v = values.astype(np.float64)
    finite = v[np.isfinite(v)]
    low, high = -finite.min(), finite.max()
    signed = low > 0 and high > 0 and min(low, high) >= 0.01 * max(low, high)
    if signed:
        u = np.clip(v / np.percentile(np.abs(finite), 99.5), -1, 1)
    else:
        lo = 0.0 if finite.min() >= 0 else finite.min()
        u = np.clip((v - lo) / (np.percentile(finite, 99.5) - lo), 0, 1)
    u = _resized(u, image.shape)
    nan = np.isnan(u)
    colour = np.rint(
        np.asarray(
            mpl.colormaps["RdBu_r" if signed else "viridis"](
                np.nan_to_num((u + 1) / 2 if signed else u)
            )
        )[..., :3]
        * 255
    )
    weight = np.where(nan, 0.0, alpha * (np.sqrt(np.abs(np.nan_to_num(u))) if signed else 1.0))[
        ..., None
    ]
    return np.rint((1 - weight) * image + weight * colour).astype(np.uint8)


def _check(photo: np.ndarray, drawn: np.ndarray, shown: np.ndarray) -> tuple[float, float]:
    """(coverage of the model's view, share of the top 1 % that is visible)."""
    valid = np.isfinite(shown)
    visible = np.abs(drawn.astype(int) - photo.astype(int)).max(axis=2) >= VISIBLE
    hot = valid & (np.nan_to_num(shown, nan=-np.inf) >= np.nanpercentile(shown, 99))
    return float(visible[valid].mean()), float(visible[hot].mean())


@pytest.fixture(scope="module")
def measured(lite0: Any) -> dict[tuple[str, str], dict[str, Any]]:
    from convlens.attribution import applicable_methods, explain
    from convlens.render.display import display_image, display_settings, result_overlay

    out = {}
    for photo in PHOTOS:
        batch = lite0.prepare([f"sample:{photo}"])
        for method in applicable_methods(lite0):
            if method == "scorecam" and photo != "cat":
                continue  # one forward per channel of a 1280-channel layer: once is enough
            result = explain(lite0, batch, method, **QUICK.get(method, {}))
            small = display_image(result.originals[0], WIDTH)
            sign = display_settings(result)["sign"]
            values = result.display[0].double().numpy()
            part = {"positive": np.maximum(values, 0), "negative": np.maximum(-values, 0)}.get(
                sign, np.abs(values)
            )
            shown = _resized(np.where(np.isnan(values), np.nan, part), small.shape)
            new = _check(small, result_overlay(result, max_side=WIDTH), shown)
            old = _check(small, _old_overlay(small, values), shown)
            out[(photo, method)] = {"sign": sign, "new": new, "old": old}
            print(
                f"{photo:7s} {method:22s} {sign:8s} new cover {new[0]:.2f} hot {new[1]:.2f} | old cover {old[0]:.2f} hot {old[1]:.2f}"
            )
    return out


def test_every_method_is_visible_but_not_a_wash(
    measured: dict[tuple[str, str], dict[str, Any]], lite0: Any
) -> None:
    from convlens.attribution import applicable_methods

    assert {m for (_, m) in measured} == set(applicable_methods(lite0))
    bad = {
        k: v["new"]
        for k, v in measured.items()
        if not (LOW <= v["new"][0] <= HIGH and v["new"][1] >= HOT_HIT)
    }
    assert not bad, bad


def test_the_old_rendering_fails_the_same_check(
    measured: dict[tuple[str, str], dict[str, Any]],
) -> None:
    def fails(key: tuple[str, str]) -> bool:
        cover, hot = measured[key]["old"]
        return not (LOW <= cover <= HIGH and hot >= HOT_HIT)

    # signed maps: their strongest pixels were a pale veil; unsigned ones: a wash over everything
    for method in (
        "integrated_gradients",
        "lrp",
        "saliency",
        "gradcam",
        "guided_backprop",
        "smoothgrad",
    ):
        assert fails(("cat", method)), (method, measured[("cat", method)]["old"])
    assert measured[("cat", "gradcam")]["old"][0] > HIGH
    assert measured[("cat", "integrated_gradients")]["old"][1] < HOT_HIT
