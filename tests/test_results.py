"""Result: save/load round trip with provenance, display, notebook PNG."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from convlens.errors import BadInputError
from convlens.inspect import activations, gradients
from convlens.results import Result

from helpers.tiny import tiny_model


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((24, 30, 3)) * 255).astype(np.uint8)


def test_save_load_round_trip(tmp_path) -> None:
    model = tiny_model()
    result = gradients(model, [_image(0), _image(1)], target=2)
    path = result.save(tmp_path / "run" / "grads")
    assert path.name == "grads.npz" and (tmp_path / "run" / "grads.json").is_file()
    assert not list((tmp_path / "run").glob("*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("grads.npz", "grads.json"):  # readable like any file the user writes, not 0600
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o666 & ~umask
    back = Result.load(tmp_path / "run" / "grads.json")
    assert back.kind == "gradients"
    assert set(back.tensors) == set(result.tensors)
    for k, v in result.tensors.items():
        assert torch.equal(back.tensors[k], v.cpu())
    assert back.provenance == json.loads(json.dumps(result.provenance))
    for a, b in zip(back.display, result.display):
        assert torch.equal(torch.isnan(a), torch.isnan(b))
        torch.testing.assert_close(torch.nan_to_num(a), torch.nan_to_num(b))
    # originals come back 8-bit quantised
    torch.testing.assert_close(
        back.originals[0], result.originals[0], atol=0.5 / 255 + 1e-6, rtol=0
    )


def test_provenance_says_what_made_it() -> None:
    model = tiny_model()
    result = activations(model, _image(), "relu1")
    prov = result.provenance
    assert prov["method"] == "activations" and prov["layer"] == "relu1"
    assert prov["model"] == "tiny-conv"
    assert {"convlens", "torch", "numpy", "python"} <= set(prov["versions"])
    assert "time" in prov


def test_display_map_is_on_the_original_image() -> None:
    model = tiny_model()  # 16x16 input, resize straight to the crop
    result = activations(model, _image(), "relu1")
    assert result.display[0].shape == (24, 30)  # the original size, not 16x16


def test_repr_png_is_a_png() -> None:
    result = activations(tiny_model(), _image(), "relu1")
    png = result._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_refuses_missing_files(tmp_path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        Result.load(tmp_path / "nothing")


def test_typed_accessors_read_the_stored_fields(tmp_path) -> None:
    """The accessors are the one place that knows the key names: each reads what the
    method stored, and the default target is the class the model predicts."""
    from typing import get_type_hints

    from convlens import explain
    from convlens.results import ProvenanceRecord, TargetRecord

    model = tiny_model()
    images = [_image(0), _image(1)]
    result = explain(model, images, "saliency", layer=None)
    predicted = model.logits(model.prepare(images).x).argmax(dim=1).tolist()
    for r in (result, Result.load(result.save(tmp_path / "saliency"))):
        assert torch.equal(r.map, r.tensors["map"]) and r.map.shape[0] == 2
        assert r.method == "saliency" and r.model_id == "tiny-conv"
        assert r.params["reduce"] == result.provenance["params"]["reduce"]
        assert r.seconds == result.provenance["params"]["seconds"] and r.seconds >= 0
        assert r.target_classes == predicted
        assert r.layer is None and r.seed is None
        assert r.weights_sha256 == model.weights_sha256
    # a method's own keys stay within the documented records (a new key is documented)
    assert set(result.provenance) <= set(get_type_hints(ProvenanceRecord))
    assert set(result.target) <= set(get_type_hints(TargetRecord))
    acts = activations(model, _image(), "relu1")
    assert acts.layer == "relu1" and acts.target_classes == []
    with pytest.raises(KeyError, match="'activations' result has no 'map' tensor"):
        _ = acts.map
