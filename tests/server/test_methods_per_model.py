"""The explorer offers each model only the methods it can run: attention maps for a
transformer, not for a CNN (MethodSpec.applies_to), and the page's list follows the model."""

from __future__ import annotations

import warnings

import pytest

import convlens
from convlens.attribution import METHODS, applicable_methods

from helpers.tiny_vit import TinyViT


def test_info_lists_for_each_method_the_models_that_can_run_it(digits_model, tmp_path) -> None:
    pytest.importorskip("fastapi")
    from convlens.server import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    vit = convlens.wrap(
        TinyViT(), input_size=16, labels=[str(i) for i in range(5)], name="tiny-vit"
    )
    app = create_app(
        models={"digits_cnn": digits_model, "tiny-vit": vit}, storage_root=str(tmp_path / "area")
    )
    with TestClient(app) as client:
        methods = {m["name"]: m["models"] for m in client.get("/api/info").json()["methods"]}
    assert set(methods) == set(METHODS)
    for model_name, model in (("digits_cnn", digits_model), ("tiny-vit", vit)):
        offered = sorted(name for name, models in methods.items() if model_name in models)
        assert offered == applicable_methods(model)  # computed independently of the route
    assert (
        "digits_cnn" not in methods["attention_rollout"]
        and "tiny-vit" in methods["attention_rollout"]
    )
    assert {"digits_cnn", "tiny-vit"} <= set(methods["saliency"])
