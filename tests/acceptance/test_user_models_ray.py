"""A user's network file on the Ray engine: the model's class lives in a module that the
Ray workers cannot import (convlens imported the file under a private name), so the engine
ships that module by value. Features on Ray equal the local engine's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlens.models.spec import ModelSpec
from convlens.represent import extract_features, load_features

from helpers.user_model import MEAN, SIZE, STD, write_user_model

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]


def test_features_of_a_user_file_model_on_ray_equal_local(tmp_path: Path, one_thread: None) -> None:
    ray = pytest.importorskip("ray", reason="ray is in the test extra")
    files = write_user_model(tmp_path / "user")
    model = ModelSpec(
        f"{files['net']}:build",
        weights=str(files["weights"]),
        input_size=(SIZE, SIZE),
        mean=(MEAN,),
        std=(STD,),
    ).load()
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for i in range(8):
        Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)).save(
            photos / f"{i}.png"
        )
    items = sorted(str(p) for p in photos.iterdir())
    extract_features(model, items, "block", tmp_path / "local", batch_size=2, shard_size=2)
    os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        report = extract_features(
            model,
            items,
            "block",
            tmp_path / "ray",
            batch_size=2,
            shard_size=2,
            engine="ray",
            workers=2,
        )
    finally:
        ray.shutdown()
    assert report.n_done == 8 and not report.failed
    local, remote = load_features(tmp_path / "local"), load_features(tmp_path / "ray")
    assert local.paths == remote.paths
    np.testing.assert_array_equal(local.predictions, remote.predictions)
    np.testing.assert_allclose(local.codes, remote.codes, rtol=1e-4, atol=1e-5)
    assert remote.provenance["spec"]["model"] == f"{files['net']}:build"
