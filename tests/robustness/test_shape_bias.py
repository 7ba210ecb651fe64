"""Shape bias (Geirhos et al. 2019): the decision rule, the counting, both input layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens
from convlens.errors import BadInputError
from convlens.robustness import (
    GEIRHOS_CATEGORIES,
    category_decisions,
    category_probabilities,
    load_categories,
    scan_cue_conflict,
    shape_bias,
    summarize_shape_bias,
)

from helpers.shared_data import CUE_CONFLICT_DEV, require_cue_conflict_dev

DEV = CUE_CONFLICT_DEV


def test_decision_is_the_mean_probability_of_a_category_not_the_sum_or_the_top_class() -> None:
    probs = torch.zeros(1, 1000)
    dog = GEIRHOS_CATEGORIES["dog"]
    probs[0, dog[0]] = 0.30  # the single most likely class is a dog, and "dog" has the largest sum,
    probs[0, dog[1]] = 0.20
    probs[0, 404] = 0.10  # but airplane's one class has the highest mean (0.10 > 0.5 / 117)
    probs[0, 281] = 0.08  # cat: 0.08 / 6
    probs[0, 999] = 0.32  # toilet tissue: in no category
    assert category_decisions(probs) == ["airplane"]
    table = category_probabilities(probs)
    names = list(GEIRHOS_CATEGORIES)
    assert float(table[0, names.index("dog")]) == pytest.approx(0.5 / len(dog))
    assert float(table[0, names.index("cat")]) == pytest.approx(0.08 / 6)
    # Without the cat and with less airplane, the dog wins: 0.5 / 117 > 0.003
    probs[0, 404], probs[0, 281] = 0.003, 0.0
    assert category_decisions(probs) == ["dog"]


def test_builtin_mapping_is_the_authors() -> None:
    path = require_cue_conflict_dev() / "categories.json"
    published = {k: tuple(v) for k, v in json.loads(path.read_text()).items()}
    assert published == GEIRHOS_CATEGORIES
    assert load_categories(path) == GEIRHOS_CATEGORIES
    assert len(GEIRHOS_CATEGORIES) == 16


def test_counting_by_hand() -> None:
    decisions = ["cat", "dog", "car", "cat", "clock", "bear", "cat"]
    shapes = ["cat", "cat", "cat", "cat", "clock", "bear", "dog"]
    textures = ["dog", "dog", "dog", "cat", "knife", "clock", "car"]
    s = summarize_shape_bias(decisions, shapes, textures)
    # conflicts: 1 shape (cat), 2 texture (dog), 3 other (car); 4 excluded (cat/cat);
    # 5 shape (clock); 6 shape (bear); 7 other (cat for dog/car)
    assert (s.shape, s.texture, s.other, s.n_conflict, s.n_excluded) == (3, 1, 2, 6, 1)
    assert s.shape_bias == pytest.approx(3 / 4)
    assert s.per_category["cat"] == {"shape": 1, "texture": 1, "other": 1, "shape_bias": 0.5}
    assert s.per_category["dog"]["shape_bias"] is None  # neither cue chosen
    with pytest.raises(BadInputError):
        summarize_shape_bias(["cat"], ["cat", "dog"], ["dog", "cat"])


def _stimulus(path: Path, rgb: tuple[int, int, int], size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), rgb, dtype=np.uint8)).save(path)


class _RedIsAirplane(nn.Module):
    """A fake ImageNet model: airplane (404) when the image is red, cat (281) when green, else clock."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 1000)
        r, g = x[:, 0].mean(dim=(1, 2)), x[:, 1].mean(dim=(1, 2))
        logits[:, 404] = 10 * r
        logits[:, 281] = 10 * g
        logits[:, 409] = 2.0
        return logits


def test_shape_bias_end_to_end_on_both_layouts(tmp_path: Path) -> None:
    red, green, grey = (250, 0, 0), (0, 250, 0), (128, 128, 128)
    # Geirhos layout: folder = shape, after the dash = texture
    _stimulus(tmp_path / "geirhos" / "airplane" / "airplane1-cat2.png", red)  # shape
    _stimulus(tmp_path / "geirhos" / "airplane" / "airplane2-cat1.png", green)  # texture
    _stimulus(tmp_path / "geirhos" / "cat" / "cat1-airplane1.png", red)  # texture
    _stimulus(tmp_path / "geirhos" / "cat" / "cat3-cat1.png", green)  # excluded
    _stimulus(tmp_path / "geirhos" / "cat" / "cat2-bear1.png", grey)  # other (clock)
    model = convlens.wrap(_RedIsAirplane(), input_size=32, mean=0.5, std=0.5, labels="imagenet")
    result = shape_bias(model, tmp_path / "geirhos", batch_size=2)
    p = result.provenance["params"]
    assert (p["shape"], p["texture"], p["other"], p["n_excluded"]) == (1, 2, 1, 1)
    assert p["shape_bias"] == pytest.approx(1 / 3)
    assert p["per_category"]["airplane"]["shape_bias"] == pytest.approx(0.5)
    assert result["category_probabilities"].shape == (5, 16)
    # The same stimuli through a labels CSV (header, relative paths), as-is preprocessing
    rows = ["path,shape,texture"] + [
        f"{i.path.relative_to(tmp_path)},{i.shape},{i.texture}"
        for i in scan_cue_conflict(tmp_path / "geirhos")
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    again = shape_bias(model, tmp_path / "labels.csv", preprocess="as-is")
    assert again.provenance["params"]["decisions"] == p["decisions"]


def test_standard_preprocessing_crops_even_at_input_size(tmp_path: Path) -> None:
    # A 32 px image with a 2 px red border: standard = resize to 37 and crop the centre 32,
    # which cuts most of the border away; as-is keeps it all.
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:2], image[-2:], image[:, :2], image[:, -2:] = 255, 255, 255, 255
    (tmp_path / "cat").mkdir()
    Image.fromarray(image).save(tmp_path / "cat" / "cat1-dog1.png")
    seen: list[torch.Tensor] = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 1000)

    model = convlens.wrap(Spy(), input_size=32, mean=0.0, std=1.0, labels="imagenet")
    shape_bias(model, tmp_path, preprocess="as-is")
    shape_bias(model, tmp_path, preprocess="standard")
    as_is, standard = seen
    assert torch.equal(as_is[0].permute(1, 2, 0), torch.from_numpy(image).float() / 255)
    assert float(standard.mean()) < float(as_is.mean()) - 0.05


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda d: _stimulus(d / "cat" / "tabby.png", (1, 2, 3)), "does not follow"),
        (lambda d: _stimulus(d / "cat" / "dog1-cat2.png", (1, 2, 3)), "folder"),
        (lambda d: _stimulus(d / "cat" / "cat1-unicorn2.png", (1, 2, 3)), "unicorn"),
        (lambda d: (d / "empty").mkdir(), "no cue-conflict images"),
    ],
)
def test_bad_layouts_are_refused(tmp_path: Path, setup: object, needle: str) -> None:
    setup(tmp_path)  # type: ignore[operator]
    with pytest.raises(BadInputError) as info:
        scan_cue_conflict(tmp_path)
    assert needle in str(info.value)


def test_bad_csv_rows_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("path,shape,texture\nmissing.png,cat,dog\n")
    with pytest.raises(BadInputError, match="line 2"):
        scan_cue_conflict(tmp_path / "a.csv")
    _stimulus(tmp_path / "x.png", (0, 0, 0))
    (tmp_path / "b.csv").write_text("x.png,cat\n")
    with pytest.raises(BadInputError, match="columns"):
        scan_cue_conflict(tmp_path / "b.csv")
