"""Results show themselves in Jupyter (issue 18 part 4): every kind of result the library
makes has a picture (or is declared to hold numbers only), the picture of an image result
is that image (colours and layout read back from the decoded PNG), the picture of a
multi-panel kind is its family's renderer, a batch gets an HTML block with one picture per
image in order, and a result with nothing to draw falls back to text."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import convlens
from convlens.errors import BadInputError
from convlens.render.figures import figure_to_png_bytes
from convlens.render.results import FIGURES, NO_PICTURE, result_figure
from convlens.results import Result

from helpers.tiny import tiny_model

SRC = Path(convlens.__file__).parent


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _decode(png: bytes | None) -> np.ndarray:
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _near(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> np.ndarray:
    return np.abs(pixels - np.array(rgb)).max(axis=-1) <= tol


def _made_kinds() -> dict[str, str]:
    """Every ``Result("kind", ...)`` the package constructs, with the text of the call."""
    found = {}
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r'Result\(\s*"([a-z_]+)"', text):
            call = text[m.start() : text.find("\n\n", m.start())]
            found.setdefault(m.group(1), "")
            found[m.group(1)] += call
    return found


def test_every_kind_the_library_makes_has_a_picture_or_is_declared_numbers_only() -> None:
    made = _made_kinds()
    assert len(made) >= 20, sorted(made)  # the scan finds the library's results
    # a kind is drawn by its family's renderer, or is a map/image result (originals given)
    undrawn = [
        k
        for k, call in made.items()
        if k not in FIGURES and k not in NO_PICTURE and "originals=" not in call
    ]
    assert not undrawn, f"result kinds with no picture: {undrawn}"
    assert not set(FIGURES) - set(made), "FIGURES names a kind the library never makes"


def _two_colour_image() -> torch.Tensor:
    image = torch.zeros(3, 40, 40)
    image[0, :, :20] = 1.0  # left half red
    image[2, :, 20:] = 1.0  # right half blue
    return image


def test_an_image_result_shows_its_image() -> None:
    image = _two_colour_image()
    result = Result(
        "dream", {"image": image[None]}, {"method": "deep_dream", "params": {}}, originals=[image]
    )
    pixels = _decode(result._repr_png_())
    red, blue = _near(pixels, (255, 0, 0)), _near(pixels, (0, 0, 255))
    # both halves drawn large (the 5 x 5 inch figure shows the 40 px image at a few hundred px)
    assert red.sum() > 10_000 and blue.sum() > 10_000
    assert abs(int(red.sum()) - int(blue.sum())) < 0.05 * red.sum()
    # red on the left, blue on the right, same rows: not transposed or flipped
    red_x, blue_x = np.nonzero(red)[1].mean(), np.nonzero(blue)[1].mean()
    assert red_x < blue_x
    assert abs(np.nonzero(red)[0].mean() - np.nonzero(blue)[0].mean()) < 3
    assert result._repr_html_() is None  # one picture: the PNG says it all


def test_a_batch_shows_every_image_in_order_as_html() -> None:
    colours = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    images = torch.stack([torch.tensor(c)[:, None, None].expand(3, 24, 24) for c in colours])
    sources = ["<red>", "<green>", "<blue>"]
    result = Result(
        "optimized",
        {"optimized": images, "image": images},
        {"method": "optimize", "params": {}},
        sources=sources,
        originals=list(images),
    )
    page = result._repr_html_()
    assert page is not None
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 3
    for uri, colour, source in zip(uris, colours, sources):
        pixels = _decode(base64.b64decode(uri))
        want = tuple(int(255 * c) for c in colour)
        others = [tuple(int(255 * c) for c in o) for o in colours if o != colour]
        assert _near(pixels, want).sum() > 10_000 and all(
            _near(pixels, o).sum() == 0 for o in others
        )
        assert source.replace("<", "&lt;").replace(">", "&gt;") in page  # captions escaped
    assert result.to_png(2) != result.to_png(0)
    with pytest.raises(BadInputError, match="3 picture"):
        result.to_png(3)


def test_numbers_only_results_fall_back_to_text() -> None:
    result = Result(
        "cue_conflict",
        {"content_loss": torch.ones(3), "style_loss": torch.ones(3)},
        {"method": "cue_conflict", "params": {}},
    )
    assert result._repr_png_() is None and result._repr_html_() is None
    assert "cue_conflict" in repr(result)
    with pytest.raises(BadInputError, match="numbers only"):
        result.to_png()


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_model()


def _pixels(seed: int, n: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _renderer_png(result: Any) -> bytes:
    """The family renderer's picture of ``result``, called directly."""
    from convlens.render.adversarial import attack_figure
    from convlens.render.inspect import activations_figure, gradients_figure
    from convlens.render.style import gram_figure

    t = result.tensors
    direct = {
        "adversarial": lambda: attack_figure(result, 0),
        "activations": lambda: activations_figure(result, 0),
        "gradients": lambda: gradients_figure(result, 0),
        "gram": lambda: gram_figure(
            t["gram"], t["mean"], t["variance"], title=result.provenance["layer"]
        ),
    }
    return figure_to_png_bytes(direct[result.kind]())


def test_library_results_show_their_familys_picture(model: Any, tmp_path: Path) -> None:
    from convlens.inspect import activations, gradients
    from convlens.style.losses import layer_statistics

    made = {
        "adversarial": convlens.attack(model, _pixels(0, 2), "fgsm", eps=8 / 255),
        "activations": activations(model, _pixels(1)[0].permute(1, 2, 0).numpy(), "relu1"),
        "gradients": gradients(
            model, [(_pixels(2)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)], target=1
        ),
        "gram": layer_statistics(model, _pixels(3), "relu1"),
    }
    for kind, result in made.items():
        assert result.kind == kind
        png = result._repr_png_()
        assert png == _renderer_png(result), kind
        pixels = _decode(png)
        assert (pixels.std(axis=(0, 1)) > 10).any(), f"{kind}: a blank picture"
        # saved and loaded back (provenance through JSON), it shows the same picture
        back = Result.load(result.save(tmp_path / kind))
        assert back._repr_png_() == png, kind
    # an attack on 2 images: an HTML block with both, each its own attack figure
    page = made["adversarial"]._repr_html_()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page or "")
    assert [base64.b64decode(u) for u in uris] == [
        made["adversarial"].to_png(0),
        made["adversarial"].to_png(1),
    ]
    assert made["adversarial"].to_png(0) != made["adversarial"].to_png(1)


def test_attribution_shows_the_map_over_the_photo(model: Any) -> None:
    from convlens.render.display import result_overlay

    photo = (_pixels(4)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    result = convlens.explain(model, photo, "saliency", target=0)
    pixels = _decode(result._repr_png_())
    overlay = result_overlay(result, 0).astype(int)
    # the overlay is drawn scaled up; every overlay colour (within 8 levels) appears in the picture
    colours = {tuple(c) for c in (pixels // 8).reshape(-1, 3).tolist()}
    missing = [c for c in (overlay // 8).reshape(-1, 3).tolist() if tuple(c) not in colours]
    assert len(missing) < 0.1 * overlay.shape[0] * overlay.shape[1]


def test_multi_panel_kinds_also_plot_on_one_axis(model: Any) -> None:
    from matplotlib.figure import Figure

    result = convlens.attack(model, _pixels(5), "fgsm", eps=8 / 255)
    fig = Figure()
    ax = result.plot(ax=fig.add_subplot())
    shown = np.asarray(ax.images[0].get_array())
    assert shown.shape == _decode(result.to_png()).shape  # the attack figure, as one picture
    assert isinstance(result_figure(result), Figure)


def test_channel_importance_bars_run_from_most_to_least_important() -> None:
    scores = torch.tensor([0.2, 0.9, -0.1, 0.5, 0.05, 0.7])
    order = torch.argsort(scores, descending=True)
    result = Result(
        "channel_importance",
        {"channel_importance": scores, "scores": scores, "order": order},
        {"method": "channels_ablation", "params": {}, "layer": "act1"},
    )
    pixels = _decode(result._repr_png_())
    bar = _near(pixels, (0x4C, 0x72, 0xB0), tol=6)
    columns = bar.any(axis=0)
    edges = np.flatnonzero(np.diff(np.r_[0, columns.astype(int), 0]))
    runs = list(zip(edges[::2], edges[1::2]))  # [start, end) of each bar, left to right
    assert len(runs) == 6
    # a bar's height in pixels, signed by which side of the zero line it is drawn
    heights = [int(bar[:, a:b].any(axis=1).sum()) for a, b in runs]
    tops = [int(np.flatnonzero(bar[:, a:b].any(axis=1))[0]) for a, b in runs]
    ranked = sorted(scores.tolist(), reverse=True)
    assert tops == sorted(tops), "left to right: most important first"
    ratio = heights[0] / ranked[0]
    for h, s in zip(heights, ranked):
        assert abs(h - abs(s) * ratio) <= 3, (heights, ranked)


def test_an_embedding_shows_its_map() -> None:
    from convlens.render.embedding import embedding_figure
    from convlens.represent.embed import Embedding

    coords = np.array([[0, 0], [1, 1], [0, 1], [1, 0]], dtype=np.float32)
    emb = Embedding(
        coords, ["a", "b", "c", "d"], np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), "pca"
    )
    assert emb._repr_png_() == figure_to_png_bytes(embedding_figure(emb))
