"""User models from a spec: files, packages, TorchScript, checkpoints, labels, config files,
and the one-line refusals (convlens.models.spec)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import convlens
from convlens.errors import BadInputError
from convlens.models.spec import (
    ModelSpec,
    find_config,
    load_config,
    load_labels,
    load_recorded,
    load_spec,
    parse_model_list,
    require_class_scores,
)

from helpers.user_model import LABELS, MEAN, SIZE, STD, import_user_file, write_user_model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_user_model(tmp_path_factory.mktemp("user"))


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _reference(files: dict[str, Path], weights: bool = True) -> torch.nn.Module:
    net = import_user_file(files["net"]).build()
    if weights:
        net.load_state_dict(torch.load(files["weights"], weights_only=True))
    return net.eval()


def test_a_file_factory_with_weights_labels_and_preprocessing(files: dict[str, Path]) -> None:
    spec = ModelSpec(
        f"{files['net']}:build",
        weights=str(files["weights"]),
        input_size=(SIZE, SIZE),
        mean=(MEAN,),
        std=(STD,),
        labels=str(files["labels"]),
    )
    model = load_spec(spec)
    x = _x()
    torch.testing.assert_close(model.logits(x), _reference(files)(x))
    # the checkpoint really replaced the factory's weights
    assert not torch.allclose(model.logits(x), _reference(files, weights=False)(x))
    assert (
        model.input_size == (SIZE, SIZE)
        and model.preprocessing.mean == (MEAN,) * 3
        and model.preprocessing.std == (STD,) * 3
    )
    assert list(model.labels.names) == LABELS
    # pixels (0.75) normalise to (0.75 - 0.5) / 0.25 = 1
    assert torch.allclose(model.normalize(torch.full((1, 3, 2, 2), 0.75)), torch.ones(1, 3, 2, 2))
    prov = model.provenance()
    assert prov["spec"]["weights"] == str(files["weights"]) and len(prov["weights_sha256"]) == 64


def test_an_importable_module_factory(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "teamnets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "vision.py").write_text(files["net"].read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_spec(ModelSpec("teamnets.vision:build", input_size=(SIZE, SIZE)))
    x = _x(1)
    torch.testing.assert_close(model.logits(x), _reference(files, weights=False)(x))
    with pytest.raises(BadInputError, match=r"cannot import 'teamnets\.nothere'"):
        load_spec(ModelSpec("teamnets.nothere:build"))


def test_a_factory_may_return_a_convlens_model(tmp_path: Path) -> None:
    (tmp_path / "wrapped.py").write_text(
        "import convlens\nfrom torch import nn\ndef build():\n    return convlens.wrap(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), input_size=2, mean=0.1, std=0.2, channels=3, labels=['a', 'b'], name='mine')\n"
    )
    model = load_spec(ModelSpec(f"{tmp_path / 'wrapped.py'}:build"))
    assert (
        model.input_size == (2, 2)
        and list(model.labels.names) == ["a", "b"]
        and model.preprocessing.mean == (0.1,) * 3
    )
    # flags still override what the factory brought
    model = load_spec(ModelSpec(f"{tmp_path / 'wrapped.py'}:build", mean=(0.3,)))
    assert model.preprocessing.mean == (0.3,) * 3 and model.input_size == (2, 2)


@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")
def test_torchscript_predicts_and_refuses_hook_methods_instead_of_a_silent_plain_gradient(
    files: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(_reference(files)), str(path))
    model = load_spec(ModelSpec(str(path), input_size=(SIZE, SIZE)))
    x = _x(2)
    torch.testing.assert_close(model.logits(x), _reference(files)(x))
    saliency = convlens.explain(model, x.clone(), "saliency", target=1).tensors["attribution"]
    xr = model.normalize(x.clone()).requires_grad_(True)
    (expected,) = torch.autograd.grad(_reference(files)(xr)[:, 1].sum(), xr)
    torch.testing.assert_close(saliency, expected)
    for method in ("guided_backprop", "gradcam"):
        with pytest.raises(BadInputError, match="TorchScript"):
            convlens.explain(model, x.clone(), method, target=1)
    with pytest.raises(BadInputError, match="carries its own weights"):
        load_spec(ModelSpec(str(path), weights=str(files["weights"])))


def test_a_pickled_module_needs_trust(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(_reference(files), path)
    with pytest.raises(BadInputError, match="trust-checkpoint"):
        load_spec(ModelSpec(str(path), input_size=(SIZE, SIZE)))
    model = load_spec(ModelSpec(str(path), input_size=(SIZE, SIZE), trust_checkpoint=True))
    torch.testing.assert_close(model.logits(_x()), _reference(files)(_x()))


def test_checkpoint_wrappers_prefixes_and_refusals(files: dict[str, Path], tmp_path: Path) -> None:
    state = torch.load(files["weights"], weights_only=True)
    spec = ModelSpec(f"{files['net']}:build", input_size=(SIZE, SIZE))
    expected = _reference(files)(_x())
    wrapped, prefixed = tmp_path / "wrapped.pt", tmp_path / "ddp.pt"
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    torch.save({f"module.{k}": v for k, v in state.items()}, prefixed)
    for path in (wrapped, prefixed):
        torch.testing.assert_close(
            load_spec(spec.replace(weights=str(path))).logits(_x()), expected
        )

    pickled = tmp_path / "pickled.pt"
    torch.save(
        {"state_dict": state, "optimizer": {"lr": __import__("fractions").Fraction(1, 10)}}, pickled
    )
    with pytest.raises(
        BadInputError, match=r"refused the object fractions\.Fraction.*--trust-checkpoint"
    ):
        load_spec(spec.replace(weights=str(pickled)))
    torch.testing.assert_close(
        load_spec(spec.replace(weights=str(pickled), trust_checkpoint=True)).logits(_x()), expected
    )

    renamed = tmp_path / "renamed.pt"
    broken = dict(state)
    broken["head.weight"] = broken.pop("fc.weight")
    torch.save(broken, renamed)
    with pytest.raises(
        BadInputError,
        match=r"1 missing \(first: fc\.weight\); 1 unexpected \(first: head\.weight\)",
    ):
        load_spec(spec.replace(weights=str(renamed)))
    resized = tmp_path / "resized.pt"
    torch.save({**state, "fc.weight": torch.zeros(10, 8)}, resized)
    with pytest.raises(
        BadInputError, match=r"fc\.weight has shape \(10, 8\) in the checkpoint but \(4, 8\)"
    ):
        load_spec(spec.replace(weights=str(resized)))
    with pytest.raises(BadInputError, match="no such file"):
        load_spec(spec.replace(weights=str(tmp_path / "missing.pt")))


def test_factory_errors_are_one_line(files: dict[str, Path], tmp_path: Path) -> None:
    net = files["net"]
    cases = {
        f"{net}:nothere": r"'nothere' is not defined there; it defines .*build",
        f"{net}:broken": r"broken\(\) raised ValueError: no GPU here",
        f"{tmp_path / 'absent.py'}:build": "no such file",
        "not_a_model_anywhere": "unknown model .not_a_model_anywhere",
        f"{net}:torch": "'torch' is a module, not a callable",
    }
    for text, pattern in cases.items():
        with pytest.raises(BadInputError, match=pattern) as info:
            load_spec(ModelSpec(text))
        assert "\n" not in str(info.value)
    (tmp_path / "crash.py").write_text("raise RuntimeError('import-time failure')\n")
    with pytest.raises(
        BadInputError, match=r"running crash\.py raised RuntimeError: import-time failure"
    ):
        load_spec(ModelSpec(f"{tmp_path / 'crash.py'}:build"))


def test_label_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("cat\n\ndog\n")
    (tmp_path / "b.json").write_text(json.dumps(["cat", "dog"]))
    (tmp_path / "c.json").write_text(json.dumps({"1": "dog", "0": "cat"}))
    for name in ("a.txt", "b.json", "c.json"):
        assert list(load_labels(tmp_path / name).names) == ["cat", "dog"]
    (tmp_path / "gap.json").write_text(json.dumps({"0": "cat", "2": "dog"}))
    (tmp_path / "bad.json").write_text("[1, 2")
    for name, pattern in (
        ("gap.json", "without gaps"),
        ("bad.json", "not valid JSON"),
        ("none.txt", "no such file"),
    ):
        with pytest.raises(BadInputError, match=pattern):
            load_labels(tmp_path / name)


def test_outputs_that_are_not_class_scores_are_refused_with_what_the_command_needs(
    files: dict[str, Path], tmp_path: Path
) -> None:
    seg = load_spec(ModelSpec(f"{files['net']}:segmenter", input_size=(SIZE, SIZE)))
    with pytest.raises(
        BadInputError,
        match=r"convlens predict needs class scores \(N, classes\).* returns a tensor of shape \(N, 3, 16, 16\)",
    ):
        require_class_scores(seg, "predict")
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    wrong = load_spec(
        ModelSpec(
            f"{files['net']}:build", input_size=(SIZE, SIZE), labels=str(tmp_path / "three.txt")
        )
    )
    with pytest.raises(BadInputError, match="3 labels for 4 outputs"):
        require_class_scores(wrong, "predict")
    linear = tmp_path / "flat.py"
    linear.write_text(
        "from torch import nn\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))\n"
    )
    with pytest.raises(
        BadInputError, match=r"forward pass on a \(2, 3, 224, 224\) batch failed.*--input-size"
    ):
        require_class_scores(load_spec(ModelSpec(f"{linear}:build")), "predict")
    require_class_scores(load_spec(ModelSpec(f"{linear}:build", input_size=(32, 32))), "predict")


def test_channels_follow_the_first_convolution(tmp_path: Path) -> None:
    (tmp_path / "grey.py").write_text(
        "from torch import nn\ndef build():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))\n"
    )
    model = load_spec(ModelSpec(f"{tmp_path / 'grey.py'}:build", input_size=(8, 8)))
    assert (
        model.channels == 1
        and model.preprocessing.mean == (0.0,)
        and model.preprocessing.std == (1.0,)
    )


def test_config_file_defaults_named_models_and_flags_that_win(
    files: dict[str, Path], tmp_path: Path
) -> None:
    folder = files["net"].parent
    config_path = tmp_path / "convlens.toml"
    rel = Path("..") / folder.name  # paths relative to the config file's folder
    config_path.write_text(
        f'[model]\nmodel = "{folder}/net.py:build"\nweights = "{folder}/ckpt.pt"\ninput-size = {SIZE}\nmean = {MEAN}\nstd = [{STD}, {STD}, {STD}]\nlabels = "{folder}/labels.txt"\n\n[models.fresh]\nmodel = "{rel}/net.py:build"\ninput-size = "{SIZE}x{SIZE}"\n'
    )
    assert (
        find_config(folder=tmp_path) == config_path
        and find_config(folder=folder / "nowhere") is None
    )
    config = load_config(config_path)
    (default,) = parse_model_list(None, {}, config)
    model = default.load()
    torch.testing.assert_close(model.logits(_x()), _reference(files)(_x()))
    assert list(model.labels.names) == LABELS
    fresh, builtin = parse_model_list("fresh,digits_cnn", {}, config)
    assert (
        fresh.name == "fresh"
        and Path(fresh.model.rpartition(":")[0]).resolve() == files["net"].resolve()
    )
    torch.testing.assert_close(fresh.load().logits(_x()), _reference(files, weights=False)(_x()))
    assert builtin == ModelSpec("digits_cnn")
    (flagged,) = parse_model_list(None, {"input_size": "20", "weights": None}, config)
    assert flagged.input_size == (20, 20) and flagged.weights == str(Path(folder / "ckpt.pt"))
    with pytest.raises(BadInputError, match="apply to one model"):
        parse_model_list("fresh,digits_cnn", {"weights": "x.pt"}, config)
    with pytest.raises(BadInputError, match="distinct names"):
        parse_model_list("digits_cnn,digits_cnn")
    bad = tmp_path / "bad.toml"
    for text, pattern in (
        ("[model]\nmodle = 'x'\n", "unknown key 'modle'"),
        ("[model\n", "not valid TOML"),
        ("[other]\n", "unknown table"),
        ("[model]\nweights = 'x'\n", "needs a `model = ...`"),
    ):
        bad.write_text(text)
        with pytest.raises(BadInputError, match=pattern):
            load_config(bad)
    with pytest.raises(BadInputError, match=r"--config .*: no such file"):
        find_config(tmp_path / "absent.toml")


def test_a_recorded_spec_loads_the_same_model_again(files: dict[str, Path]) -> None:
    spec = ModelSpec(
        f"{files['net']}:build", weights=str(files["weights"]), input_size=(SIZE, SIZE), name="mine"
    )
    model = spec.load()
    again = load_recorded(model.name, json.loads(json.dumps(model.provenance())))
    assert again.name == "mine" and again.weights_sha256 == model.weights_sha256
    torch.testing.assert_close(again.logits(_x()), model.logits(_x()))
    assert load_recorded("digits_linear", {}).name == "digits_linear"


def test_fast_key_in_a_config_table_turns_fast_mode_on_for_that_model(
    files: dict[str, Path], tmp_path: Path
) -> None:
    folder = files["net"].parent
    config_path = tmp_path / "convlens.toml"
    config_path.write_text(
        f'[models.quick]\nmodel = "{folder}/net.py:build"\nweights = "{folder}/ckpt.pt"\ninput-size = {SIZE}\nmean = {MEAN}\nstd = [{STD}, {STD}, {STD}]\nfast = true\n\n[models.plain]\nmodel = "digits_cnn"\n'
    )
    quick, plain = parse_model_list("quick,plain", {}, load_config(config_path))
    assert quick.fast and not plain.fast
    model = quick.load()
    assert model.fast is not None  # fast mode on: what it used is recorded
    torch.testing.assert_close(model.logits(_x()), _reference(files)(_x()), rtol=1e-4, atol=1e-5)
    assert plain.load().fast is None
    # recorded with the user model, so a feature folder's model loads fast again
    assert model.info["spec"]["fast"] is True
    assert load_recorded("quick", {"spec": model.info["spec"]}).fast is not None
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nmodel = "digits_cnn"\nfast = "yes"\n')
    with pytest.raises(BadInputError, match="fast must be true or false"):
        load_config(bad)
