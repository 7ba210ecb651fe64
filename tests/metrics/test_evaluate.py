"""``convlens.metrics.evaluate`` and ``convlens evaluate``: the numbers of the metric functions,
per image, in chunks, with baselines; masks and boxes land on the right input pixels."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens
from convlens.cli import cmd_evaluate
from convlens.cli.main import main
from convlens.errors import BadInputError
from convlens.metrics import deletion_auc, insertion_auc, method_maps, pointing_game
from convlens.metrics.evaluate import BASELINES, evaluate, summary_rows
from convlens.models.preprocess import Preprocessing


class CornerDetector(nn.Module):
    """Class 0's logit is the brightness of the top-left 6x6 corner (through a conv, so that
    gradient methods see it); class 1's is a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, :, 1, 1] = 1.0
            self.conv.bias.zero_()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.conv(x))
        corner = a[:, 0, :6, :6].mean(dim=(1, 2))
        return torch.stack([4 * corner - 1, torch.ones_like(corner)], dim=1)


@pytest.fixture(scope="module")
def corner() -> tuple[convlens.Model, torch.Tensor]:
    model = convlens.wrap(
        CornerDetector(),
        input_size=16,
        mean=0.0,
        std=1.0,
        resize=None,
        labels=["corner", "other"],
        name="corner",
    )
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5
    return model, x


def test_rows_equal_the_metric_functions_image_by_image_in_any_chunking(corner) -> None:  # type: ignore[no-untyped-def]
    model, x = corner
    whole = evaluate(
        model, x, ["saliency", "gradient_x_input"], 0, steps=8, fill="zero", batch_size=5
    )
    chunked = evaluate(
        model, x, ["saliency", "gradient_x_input"], 0, steps=8, fill="zero", batch_size=2
    )
    assert whole.provenance["params"]["rows"] == ["saliency", "gradient_x_input", *BASELINES]
    for key in ("deletion_auc", "insertion_auc"):
        torch.testing.assert_close(whole.tensors[key][:2], chunked.tensors[key][:2])
    for r, name in enumerate(["saliency", "gradient_x_input"]):
        maps = method_maps(model, x, name, 0)
        torch.testing.assert_close(
            whole.tensors["deletion_auc"][r],
            deletion_auc(model, x, maps, 0, steps=8, fill="zero")[0].double(),
        )
        torch.testing.assert_close(
            whole.tensors["insertion_auc"][r],
            insertion_auc(model, x, maps, 0, steps=8, fill="zero")[0].double(),
        )


def test_a_faithful_method_beats_every_baseline_where_the_answer_is_known(corner) -> None:  # type: ignore[no-untyped-def]
    model, x = corner
    result = evaluate(model, x, ["saliency"], 0, steps=16, fill="zero")
    rows = {row["method"]: row for row in summary_rows(result)}
    # saliency is exactly the corner here; deleting it first kills class 0 at once
    for baseline in BASELINES:
        assert rows["saliency"]["deletion_auc"] < rows[baseline]["deletion_auc"] - 0.05, baseline
        assert rows["saliency"]["insertion_auc"] > rows[baseline]["insertion_auc"] + 0.05, baseline
    assert rows["saliency"]["deletion_sem"] >= 0 and result.tensors["target"].tolist() == [0] * 5


def test_pointing_game_rows_and_the_sanity_column(corner) -> None:  # type: ignore[no-untyped-def]
    model, x = corner
    masks = torch.zeros(5, 16, 16, dtype=torch.bool)
    masks[:, :6, :6] = True
    result = evaluate(model, x, ["saliency"], 0, masks=masks, steps=4, sanity_images=2)
    hits = result.tensors["pointing"]
    assert hits[0].tolist() == [1.0] * 5  # saliency peaks in the corner
    torch.testing.assert_close(
        hits[1],
        pointing_game(
            torch.rand(5, 16, 16, generator=torch.Generator().manual_seed(0)), masks
        ).double(),
    )
    sanity = result.tensors["sanity_spearman"]
    assert (
        not torch.isnan(sanity[0]) and torch.isnan(sanity[1:]).all()
    )  # baselines have no model to randomise


def test_bad_arguments_are_refused(corner) -> None:  # type: ignore[no-untyped-def]
    model, x = corner
    with pytest.raises(BadInputError, match="unknown method"):
        evaluate(model, x, ["nope"])
    with pytest.raises(BadInputError, match="masks"):
        evaluate(model, x, ["saliency"], masks=torch.ones(5, 8, 8))
    with pytest.raises(BadInputError, match="class targets"):
        evaluate(model, x, ["saliency"], "conv:0")


def _photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_boxes_in_original_pixels_land_on_the_preprocessed_input() -> None:
    # 448 x 300 image -> short side 256 -> 382 x 256 -> centre crop 224: scale 256/300
    pre = Preprocessing(input_size=(224, 224), resize=256, mean=(0.5,) * 3, std=(0.5,) * 3)
    geometry = pre.geometry(300, 448)
    image = torch.zeros(3, 300, 448)
    image[:, 100:200, 150:300] = 1.0  # the box, drawn, goes through the real resize + crop
    drawn = pre.to_pixels(image)[0].mean(0) > 0.5

    class Stub:
        preprocessing = pre

    mask = cmd_evaluate._mask(Stub(), "a.jpg", geometry, {"a.jpg": [[150, 100, 299, 199]]}, None)
    disagree = (mask != drawn).sum().item()
    assert mask.sum() > 0 and disagree <= 2 * (mask.shape[0] + mask.shape[1]), (
        disagree
    )  # at most the rim


def test_cli_writes_table_csv_picture_and_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "set"
    for cls in ("1", "3"):
        (folder / cls).mkdir(parents=True)
        _photo(folder / cls / f"img{cls}.png", (40, 30), int(cls))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"img1.png": [[0, 0, 9, 9]], "img3.png": [[20, 10, 39, 29]]}))
    out = tmp_path / "out"
    code = main(
        [
            "evaluate",
            str(folder),
            "--model",
            "digits_cnn",
            "--methods",
            "saliency",
            "--steps",
            "4",
            "--boxes",
            str(boxes),
            "-o",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_evaluate.SCHEMA)
    assert payload["target"] == "labels" and payload["images"] == 2
    assert [r["method"] for r in payload["rows"]] == ["saliency", *BASELINES]
    assert all(0 <= r["deletion_auc"] <= 1 and 0 <= r["pointing"] <= 1 for r in payload["rows"])
    assert (out / "metrics.png").stat().st_size > 1000 and (
        out / "metrics.csv"
    ).read_text().startswith("method,")
    saved = convlens.Result.load(out / "evaluation")
    assert saved.tensors["target"].tolist() == [1, 3] and saved.sources[0].endswith("img1.png")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--methods", "nope"], "unknown method"),
        (["--steps", "0"], "--steps 0"),
        (["--opt", "n_steps=3"], "none of the methods"),
        (["--masks", "/nonexistent"], "not a folder"),
    ],
)
def test_cli_bad_arguments_exit_2_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    _photo(tmp_path / "a.png", (28, 28), 0)
    out = tmp_path / "out"
    assert (
        main(["evaluate", str(tmp_path / "a.png"), "--model", "digits_cnn", "-o", str(out), *extra])
        == 2
    )
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
