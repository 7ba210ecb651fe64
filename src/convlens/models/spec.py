"""A model named on the command line or in a config file: what to load and how to feed it.

``--model`` (and ``model =`` in ``convlens.toml``) takes, in this order:

- a built-in name (``efficientnet_lite0``, ``digits_cnn``, ...; ``convlens info`` lists them)
  or ``torchvision:NAME`` / ``timm:NAME`` (weights already on the machine);
- ``path/to/file.py:factory``: the file is imported and ``factory()`` called; it returns an
  ``nn.Module`` or a :class:`~convlens.models.model.Model`;
- ``package.module:factory``: the same with an importable module;
- ``net.pt`` (or ``.pth``, ``.ts``, ``.jit``): a TorchScript file (``torch.jit.save``); a file
  saved with ``torch.save(module)`` is a pickle of code and is loaded only with
  ``trust_checkpoint``.

Then ``weights`` (a state dict, ``torch.load(weights_only=True)``), ``input_size``,
``mean``, ``std``, ``channels``, ``resize`` and ``labels`` (a file: one name per line, or a
JSON list or ``{index: name}`` object) complete or override what the model brings.

A config file holds the same keys once for a team::

    # convlens.toml
    [model]                      # what --model means when it is not given
    model = "nets/resnet.py:build"
    weights = "runs/best.pt"
    input-size = 32
    mean = [0.49, 0.48, 0.45]
    std = [0.25, 0.24, 0.26]
    labels = "classes.txt"

    [models.small]               # a named model: --model small (or --model small,efficientnet_lite0)
    model = "nets/small.py:build"

Paths in the file are relative to the file's folder; command-line flags win over it.
Every failure is a :class:`~convlens.errors.BadInputError` (CLI exit 2) of one line that
names the file or option and the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convlens.errors import BadInputError, ConvlensError, UnknownModelError
from convlens.hashing import file_sha256
from convlens.models.labels import Labels
from convlens.models.model import Model, wrap
from convlens.progress import ProgressFn

__all__ = [
    "CONFIG_FILE",
    "ModelSpec",
    "describe_output",
    "find_config",
    "load_config",
    "load_labels",
    "load_recorded",
    "load_spec",
    "load_state_dict",
    "parse_model_list",
    "require_class_scores",
]

log = logging.getLogger("convlens")

CONFIG_FILE = "convlens.toml"
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit")
_KEYS = (
    "model",
    "weights",
    "trust_checkpoint",
    "input_size",
    "mean",
    "std",
    "channels",
    "resize",
    "labels",
    "name",
    "fast",
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class ModelSpec:
    """What to load (``model``) and how to feed it; ``None`` fields take the model's own
    values (or :func:`~convlens.models.model.wrap`'s defaults for a bare ``nn.Module``).

    Picklable and JSON-able (:meth:`to_dict`), so dataset workers and feature folders can
    load the same model again.
    """

    model: str
    weights: str | None = None
    trust_checkpoint: bool = False
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int | None = None
    resize: int | None = None
    labels: str | None = None
    name: str | None = None
    #: fast mode (:mod:`convlens.models.fast`) once loaded: ``fast = true`` in a config table
    fast: bool = False

    @property
    def is_builtin(self) -> bool:
        """A zoo name or ``torchvision:``/``timm:`` (no user code involved)."""
        from convlens.models.adapters import ADAPTER_PREFIXES
        from convlens.models.zoo import available_models

        return self.model in available_models() or self.model.startswith(ADAPTER_PREFIXES)

    @property
    def has_overrides(self) -> bool:
        return any(
            getattr(self, k) not in (None, False)
            for k in _KEYS
            if k not in ("model", "name", "fast")
        )

    @property
    def display_name(self) -> str:
        return self.name or self.model

    def to_dict(self) -> dict[str, Any]:
        """JSON form (tuples as lists; paths made absolute so another folder loads the same)."""
        out: dict[str, Any] = {}
        for key in _KEYS:
            value = getattr(self, key)
            if value is None or value is False:
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base: Path | None = None, where: str = "model"
    ) -> ModelSpec:
        """A spec from a config table or :meth:`to_dict` (keys may use ``-`` or ``_``)."""
        values: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = str(raw_key).replace("-", "_")
            if key not in _KEYS:
                raise BadInputError(
                    f"{where}: unknown key {raw_key!r}; known keys: {', '.join(k.replace('_', '-') for k in _KEYS)}"
                )
            values[key] = value
        if "model" not in values:
            raise BadInputError(
                f"{where}: needs a `model = ...` entry (a name, file.py:factory, package.module:factory or a TorchScript file)"
            )
        return cls(**_clean(values, base=base, where=where))

    def replace(self, **changes: Any) -> ModelSpec:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def load(
        self, *, device: str | torch.device | None = None, progress: ProgressFn | None = None
    ) -> Model:
        """Build the :class:`Model` (see :func:`load_spec`)."""
        return load_spec(self, device=device, progress=progress)


def _clean(values: dict[str, Any], *, base: Path | None, where: str) -> dict[str, Any]:
    """Validate and normalise config values; relative paths resolve against ``base``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key in ("model", "weights", "labels", "name"):
            if not isinstance(value, str) or not value.strip():
                raise BadInputError(
                    f"{where}: {key.replace('_', '-')} must be a non-empty string, got {value!r}"
                )
            value = value.strip()
            if base is not None and key in ("weights", "labels"):
                value = str(_resolve_path(value, base))
            if base is not None and key == "model":
                value = _resolve_model_path(value, base)
        elif key in ("trust_checkpoint", "fast"):
            if not isinstance(value, bool):
                raise BadInputError(
                    f"{where}: {key.replace('_', '-')} must be true or false, got {value!r}"
                )
        elif key == "input_size":
            value = _parse_size(value, where)
        elif key in ("mean", "std"):
            value = _parse_floats(value, f"{where}: {key}")
            if key == "std" and any(v <= 0 for v in value):
                raise BadInputError(f"{where}: std values must be positive, got {list(value)}")
        elif key in ("channels", "resize") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise BadInputError(f"{where}: {key} must be a positive integer, got {value!r}")
        out[key] = value
    return out


def _resolve_path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def _resolve_model_path(value: str, base: Path) -> str:
    """``file.py:factory`` and TorchScript paths in a config file are relative to it."""
    file_part, sep, attr = value.rpartition(":")
    if sep and file_part.endswith(".py"):
        return f"{_resolve_path(file_part, base)}:{attr}"
    if value.endswith(TORCHSCRIPT_SUFFIXES):
        return str(_resolve_path(value, base))
    return value


def _parse_size(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, str):
        parts = [p for p in re.split(r"[x,\s]+", value.strip()) if p]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise BadInputError(
                f"{where}: input-size {value!r} is not S, HxW or H,W in pixels"
            ) from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, (list, tuple))
        or len(value) not in (1, 2)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise BadInputError(
            f"{where}: input-size {value!r} is not S, HxW or [H, W] with positive integers"
        )
    return (value[0], value[-1])


def _parse_floats(value: Any, where: str) -> tuple[float, ...]:
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
        try:
            return tuple(float(p) for p in parts) or _raise(where, value)
        except ValueError:
            raise BadInputError(
                f"{where} {value!r}: not a number or a comma-separated list of numbers"
            ) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return tuple(float(v) for v in value)
    raise BadInputError(f"{where} {value!r}: not a number or a list of numbers")


def _raise(where: str, value: Any) -> tuple[float, ...]:
    raise BadInputError(f"{where} {value!r}: no numbers given")


# -- config files ---------------------------------------------------------------------------


def find_config(explicit: str | Path | None = None, folder: Path | None = None) -> Path | None:
    """``--config FILE`` (must exist) or ``convlens.toml`` in the working folder, if any."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise BadInputError(f"--config {explicit}: no such file")
        return path
    candidate = (folder or Path.cwd()) / CONFIG_FILE
    return candidate if candidate.is_file() else None


@dataclass(frozen=True)
class Config:
    """A parsed config file: the default model and the named ones."""

    path: Path | None = None
    default: ModelSpec | None = None
    named: dict[str, ModelSpec] = dataclasses.field(default_factory=dict)


def load_config(path: Path | None) -> Config:
    """Parse ``convlens.toml`` (``[model]`` and ``[models.NAME]`` tables)."""
    if path is None:
        return Config()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read the config file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"model", "models"})
    if unknown:
        raise BadInputError(
            f"{path}: unknown table {unknown[0]!r}; a config file has [model] and [models.NAME] tables"
        )
    base = path.resolve().parent
    default = None
    if "model" in data:
        if not isinstance(data["model"], dict):
            raise BadInputError(
                f"{path}: `model` must be a table ([model]), got {type(data['model']).__name__}"
            )
        default = ModelSpec.from_dict(data["model"], base=base, where=f"{path} [model]")
    named: dict[str, ModelSpec] = {}
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise BadInputError(f"{path}: `models` must hold tables ([models.NAME])")
    for key, table in models.items():
        if not isinstance(table, dict):
            raise BadInputError(f"{path}: [models.{key}] must be a table")
        spec = ModelSpec.from_dict(table, base=base, where=f"{path} [models.{key}]")
        named[key] = spec if spec.name else dataclasses.replace(spec, name=key)
    return Config(path, default, named)


def parse_model_list(
    text: str | None, overrides: Mapping[str, Any] | None = None, config: Config | None = None
) -> list[ModelSpec]:
    """``--model a,b,c`` (or the config's default, or the built-in default) as specs.

    ``overrides`` are the command-line flags (``weights``, ``input_size`` ...); they apply
    to one model only: with several, each is defined in the config file instead.
    """
    from convlens.models.zoo import DEFAULT_MODEL

    config = config or Config()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None and v is not False}
    if text is None or not text.strip():
        base_specs = [config.default or ModelSpec(DEFAULT_MODEL)]
    else:
        names = [n.strip() for n in text.split(",")]
        if any(not n for n in names):
            raise BadInputError(f"--model {text!r}: an empty name between commas")
        if len(set(names)) != len(names):
            raise BadInputError(
                f"--model {text!r}: give one model or distinct names separated by commas (a,b)"
            )
        base_specs = [config.named.get(n) or _from_command_line(n) for n in names]
    if overrides and len(base_specs) > 1:
        flags = ", ".join("--" + k.replace("_", "-") for k in overrides)
        raise BadInputError(
            f"{flags} apply to one model; with several models define each in {CONFIG_FILE} as [models.NAME]"
        )
    if overrides:
        cleaned = _clean(dict(overrides), base=Path.cwd(), where="command line")
        base_specs = [dataclasses.replace(base_specs[0], **cleaned)]
    names_seen = [s.display_name for s in base_specs]
    if len(set(names_seen)) != len(names_seen):
        raise BadInputError(
            f"--model {text!r}: two models would share the name {names_seen[0]!r}; name them in {CONFIG_FILE}"
        )
    return base_specs


def _from_command_line(text: str) -> ModelSpec:
    """A ``--model`` entry: user files become absolute (so workers and feature folders
    load them from anywhere) and the text as typed stays the display name."""
    spec = ModelSpec(text)
    if spec.is_builtin:
        return spec
    absolute = _resolve_model_path(text, Path.cwd())
    return ModelSpec(absolute, name=text) if absolute != text else ModelSpec(text, name=text)


# -- loading --------------------------------------------------------------------------------


def load_spec(
    spec: ModelSpec, *, device: str | torch.device | None = None, progress: ProgressFn | None = None
) -> Model:
    """Build the :class:`Model` a spec describes, on ``device`` (default CPU), in eval mode.

    Raises
    ------
    BadInputError
        A file that is not there, a factory that is missing or raises, a checkpoint that
        cannot be read safely or whose keys do not match, labels that do not fit.
    """
    if spec.is_builtin:
        from convlens.models.zoo import load_model

        model = load_model(spec.model, progress=progress)
        if spec.has_overrides or spec.name:
            model = _apply(model, spec, origin=spec.model)
    else:
        module_or_model, sha = _load_user(spec)
        model = _apply(module_or_model, spec, origin=spec.model, source_sha=sha)
    model.module.eval()
    if device is not None:
        model.to(device)
    if spec.fast:
        model.use_fast()
    return model


def _load_user(spec: ModelSpec) -> tuple[nn.Module | Model, str | None]:
    text = spec.display_name  # messages name what the user wrote
    file_part, sep, attr = spec.model.rpartition(":")
    if sep and file_part.endswith(".py"):
        return _call_factory(_import_file(Path(file_part), text), attr, text), file_sha256(
            Path(file_part)
        )
    if spec.model.endswith(TORCHSCRIPT_SUFFIXES):
        path = Path(spec.model)
        if not path.is_file():
            raise BadInputError(f"--model {text}: no such file")
        return _load_serialized(path, spec.trust_checkpoint, text), file_sha256(path)
    if sep and _IDENTIFIER.match(file_part) and _IDENTIFIER.match(attr):
        try:
            module = importlib.import_module(file_part)
        except ModuleNotFoundError as exc:
            raise BadInputError(f"--model {text}: cannot import {file_part!r} ({exc})") from None
        except Exception as exc:
            raise BadInputError(
                f"--model {text}: importing {file_part} raised {type(exc).__name__}: {_first_line(exc)}"
            ) from None
        return _call_factory(module, attr, text), None
    from convlens.models.zoo import available_models

    raise UnknownModelError(
        f"unknown model {text!r}; known models: {', '.join(sorted(available_models()))}; or torchvision:NAME, timm:NAME, path/to/file.py:factory, package.module:factory, a TorchScript .pt file, or a [models.NAME] of convlens.toml"
    )


#: Modules imported from user files, by synthetic name (dataset engines ship them by value).
USER_MODULES: dict[str, Any] = {}


def _import_file(path: Path, text: str) -> Any:
    if not path.is_file():
        raise BadInputError(f"--model {text}: no such file")
    resolved = path.resolve()
    name = f"convlens_user_{re.sub(r'[^0-9A-Za-z_]', '_', resolved.stem)}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    if name in USER_MODULES:
        return USER_MODULES[name]
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise BadInputError(f"--model {text}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    # registered before running, so dataclasses and pickling inside the file find it
    sys.modules[name] = module
    folder = str(resolved.parent)
    added = folder not in sys.path
    if added:  # the file may import its neighbours
        sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise BadInputError(
            f"--model {text}: running {path.name} raised {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    finally:
        if added:
            sys.path.remove(folder)
    USER_MODULES[name] = module
    return module


def _call_factory(module: Any, attr: str, text: str) -> nn.Module | Model:
    factory = getattr(module, attr, None)
    if factory is None:
        defined = sorted(
            n
            for n, v in vars(module).items()
            if callable(v)
            and not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
        )
        hint = f"; it defines {', '.join(defined[:8])}" if defined else ""
        raise BadInputError(f"--model {text}: {attr!r} is not defined there{hint}")
    if not callable(factory):
        raise BadInputError(
            f"--model {text}: {attr!r} is a {type(factory).__name__}, not a callable returning a model"
        )
    try:
        built = factory()
    except Exception as exc:
        raise BadInputError(
            f"--model {text}: {attr}() raised {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if not isinstance(built, (nn.Module, Model)):
        raise BadInputError(
            f"--model {text}: {attr}() returned a {type(built).__name__}, not a torch.nn.Module or convlens.Model"
        )
    return built


def _load_serialized(path: Path, trust: bool, text: str) -> nn.Module:
    try:
        with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; loading still works
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as jit_error:
        # not TorchScript: maybe torch.save(module), a pickle that runs code when loaded
        if not trust:
            raise BadInputError(
                f"--model {text}: not a TorchScript file ({_first_line(jit_error)}); a module saved with torch.save(model) is a pickle that can run code when loaded: add --trust-checkpoint if you trust it, or save it with torch.jit.save"
            ) from None
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise BadInputError(
            f"--model {text}: cannot be loaded ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    if not isinstance(loaded, nn.Module):
        hint = (
            " (a state dict: give the architecture with --model file.py:factory and this file with --weights)"
            if isinstance(loaded, dict)
            else ""
        )
        raise BadInputError(
            f"--model {text}: holds a {type(loaded).__name__}, not a torch.nn.Module{hint}"
        )
    return loaded


def load_state_dict(path: str | Path, *, trust: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, read with ``weights_only=True`` unless ``trust``.

    Accepts a bare state dict, the usual training wrappers (``{"state_dict": ...}``,
    ``{"model": ...}``, ``{"model_state_dict": ...}``) and, when trusted, a whole module.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"--weights {path}: no such file")
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise BadInputError(
                f"--weights {path}: holds more than tensors ({_unsafe_reason(exc)}); loading it could run code: add --trust-checkpoint if you trust the file"
            ) from None
        loaded = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise BadInputError(
            f"--weights {path}: not a torch checkpoint ({type(exc).__name__}: {_first_line(exc)[:160]})"
        ) from None
    if isinstance(loaded, nn.Module):
        loaded = loaded.state_dict()
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "net", "module"):
            inner = loaded.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return dict(inner)
            if isinstance(inner, nn.Module):
                return inner.state_dict()
        if loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            return dict(loaded)
    kind = type(loaded).__name__
    keys = (
        f" with keys {', '.join(map(str, list(loaded)[:6]))}" if isinstance(loaded, Mapping) else ""
    )
    raise BadInputError(
        f"--weights {path}: no state dict inside (a {kind}{keys}); save one with torch.save(model.state_dict(), path)"
    )


def _load_weights(module: nn.Module, path: str, trust: bool) -> None:
    state = load_state_dict(path, trust=trust)
    expected = module.state_dict()
    if not set(state) & set(expected) and all(k.startswith("module.") for k in state):
        # saved from nn.DataParallel / DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        raise BadInputError(
            f"--weights {path}: the checkpoint's keys do not match the model: {'; '.join(parts)}"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise BadInputError(
                f"--weights {path}: {key} has shape {tuple(state[key].shape)} in the checkpoint but {tuple(tensor.shape)} in the model"
            )
    module.load_state_dict(state)


def load_labels(path: str | Path) -> Labels:
    """Class names from a file: one name per line, or JSON (a list, or ``{index: name}``)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"--labels {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"--labels {path}: cannot read ({exc})") from None
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"--labels {path}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            try:
                table = {int(k): str(v) for k, v in data.items()}
            except ValueError:
                raise BadInputError(
                    f'--labels {path}: a JSON object must map class indices to names, e.g. {{"0": "cat"}}'
                ) from None
            if sorted(table) != list(range(len(table))):
                raise BadInputError(
                    f"--labels {path}: the indices must be 0..{len(table) - 1} without gaps"
                )
            names = [table[i] for i in range(len(table))]
        elif isinstance(data, list) and all(isinstance(v, (str, int, float)) for v in data):
            names = [str(v) for v in data]
        else:
            raise BadInputError(
                f"--labels {path}: JSON must be a list of names or an {{index: name}} object"
            )
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise BadInputError(f"--labels {path}: no class names in the file")
    return Labels.from_names(names)


def _apply(
    built: nn.Module | Model, spec: ModelSpec, *, origin: str, source_sha: str | None = None
) -> Model:
    """Weights, preprocessing and labels of ``spec`` on a module or model."""
    if isinstance(built, Model):
        module, base_prep, labels, sha, info = (
            built.module,
            built.preprocessing,
            built.labels,
            built.weights_sha256,
            dict(built.info),
        )
        name = built.name
    else:
        module, base_prep, labels, sha, info, name = built, None, None, None, {}, None
    if spec.weights is not None:
        if isinstance(module, torch.jit.ScriptModule):
            raise BadInputError(
                f"--weights {spec.weights}: a TorchScript model carries its own weights; drop --weights"
            )
        _load_weights(module, spec.weights, spec.trust_checkpoint)
        sha = file_sha256(Path(spec.weights))
    elif sha is None:
        sha = source_sha
    if spec.labels is not None:
        labels = load_labels(spec.labels)
    channels = spec.channels or (base_prep.channels if base_prep else _first_conv_channels(module))
    if (
        base_prep is not None
        and spec.input_size is None
        and spec.mean is None
        and spec.std is None
        and spec.channels is None
        and spec.resize is None
    ):
        prep = base_prep
    else:
        size = spec.input_size or (base_prep.input_size if base_prep else (224, 224))
        mean = spec.mean or (base_prep.mean if base_prep else None)
        std = spec.std or (base_prep.std if base_prep else None)
        if mean is None or std is None:
            if channels == 3:
                mean, std = mean or (0.485, 0.456, 0.406), std or (0.229, 0.224, 0.225)
            else:  # no standard statistics for other channel counts: the raw [0, 1] pixels
                mean, std = mean or (0.0,), std or (1.0,)
        if spec.resize is not None:
            resize: int | str | None = spec.resize
        elif base_prep is not None and spec.input_size is None:
            resize = base_prep.resize
        else:
            resize = "auto"
        try:
            prep = wrap(
                module, input_size=size, mean=mean, std=std, resize=resize, channels=channels
            ).preprocessing
        except BadInputError as exc:
            raise BadInputError(f"--model {origin}: {exc}") from None
    info.update({"spec": spec.to_dict()})
    return Model(
        module, prep, name=spec.name or name or origin, labels=labels, weights_sha256=sha, info=info
    )


def _first_conv_channels(module: nn.Module) -> int:
    """Input channels of the first convolution (3 when there is none to read)."""
    if isinstance(module, torch.jit.ScriptModule):
        return 3
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            return int(sub.in_channels)
    return 3


def _unsafe_reason(exc: BaseException) -> str:
    """What ``weights_only=True`` refused, without torch's multi-paragraph advice."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return (
        f"weights_only=True refused the object {match.group(1)}"
        if match
        else "weights_only=True refused it"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- what the model outputs -------------------------------------------------------------------


def describe_output(model: Model) -> dict[str, Any]:
    """One forward pass on a blank input: the output's type and shape (memoised in ``info``).

    ``{"kind": "tensor", "shape": [N, ...]}``, ``{"kind": "dict", "keys": [...]}`` or
    ``{"kind": "other", "type": ...}``; a forward that fails is a :class:`BadInputError`
    naming the input shape tried.
    """
    if "output" in model.info:
        return model.info["output"]
    from convlens.hooks import eval_mode

    h, w = model.input_size
    blank = torch.zeros(2, model.channels, h, w, device=model.device, dtype=model.dtype)
    try:
        with torch.no_grad(), eval_mode(model.module):
            output = model.module(model.normalize(blank))
    except ConvlensError:
        raise
    except Exception as exc:
        raise BadInputError(
            f"model {model.name}: a forward pass on a (2, {model.channels}, {h}, {w}) batch failed ({type(exc).__name__}: {_first_line(exc)[:200]}); check --input-size and --channels"
        ) from None
    if isinstance(output, torch.Tensor):
        described: dict[str, Any] = {"kind": "tensor", "shape": list(output.shape)}
    elif isinstance(output, Mapping):
        described = {"kind": "dict", "keys": [str(k) for k in output]}
    else:
        described = {"kind": "other", "type": type(output).__name__}
    model.info["output"] = described
    return described


def require_class_scores(model: Model, command: str) -> None:
    """Refuse a model whose output is not class scores ``(N, classes)`` for ``command``."""
    out = describe_output(model)
    if out["kind"] == "tensor" and len(out["shape"]) == 2:
        n_classes = out["shape"][1]
        if model.labels is not None and len(model.labels) != n_classes:
            raise BadInputError(
                f"model {model.name}: {len(model.labels)} labels for {n_classes} outputs; give --labels with one name per output"
            )
        return
    if out["kind"] == "tensor":
        got = f"a tensor of shape ({', '.join(['N', *map(str, out['shape'][1:])])})"
    elif out["kind"] == "dict":
        got = f"a dict with keys {', '.join(out['keys'][:6])}"
    else:
        got = f"a {out['type']}"
    raise BadInputError(
        f"convlens {command} needs class scores (N, classes) from the model; {model.name} returns {got} (explain and gradients take --target-region / --target-similar or a neuron target for such models)"
    )


def load_recorded(
    name: str, provenance: Mapping[str, Any], *, device: str | torch.device | None = None
) -> Model:
    """The model a result or feature folder records: its spec when it was a user model,
    else the built-in ``name``."""
    data = provenance.get("spec")
    spec = (
        ModelSpec.from_dict(data, where=f"the recorded model {name!r}")
        if isinstance(data, Mapping)
        else ModelSpec(name)
    )
    return load_spec(spec, device=device)


def spec_of(model: Model) -> ModelSpec:
    """The spec a model was loaded from (a built-in's name when it has none)."""
    data = model.info.get("spec")
    return ModelSpec.from_dict(data) if data else ModelSpec(model.name)


ModelLoader = Callable[[ModelSpec], Model]
