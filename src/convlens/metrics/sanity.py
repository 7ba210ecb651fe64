"""The model-parameter randomisation sanity check.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for Saliency Maps",
NeurIPS 2018, arXiv:1810.03292. An explanation of a model's decision must depend on the
model: re-initialise the weights layer by layer from the top (classifier first, cascading
down to the stem) and the maps should change. The check reports, after each cumulative
step, the Spearman rank correlation between the trained model's map and the randomised
model's map of the same image; a method whose maps stay highly correlated after the whole
network is random is explaining the image, not the model (the paper found guided
backprop and guided Grad-CAM in that class).

The user's model is never touched: the randomised network is a ``copy.deepcopy`` of the
module, wrapped in a new :class:`~convlens.models.model.Model` with the same
preprocessing and labels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from convlens.attribution.base import METHODS, default_cam_layer, reduce_channels
from convlens.errors import BadInputError
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.targets import Target, TargetLike, resolve_target

__all__ = [
    "method_maps",
    "parameter_randomisation",
    "randomisation_groups",
    "randomise_",
    "spearman_rows",
]

MethodLike = str | Callable[..., torch.Tensor]
Group = str | Sequence[str]

#: modules that belong to the layer before them (a convolution and its normalisation are one layer)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
#: plain containers whose children are the units of randomisation (blocks, stages)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def parameter_randomisation(
    model: Model,
    x: torch.Tensor,
    method: MethodLike,
    target: TargetLike = None,
    *,
    layers: Sequence[Group] | None = None,
    seed: int = 0,
    abs: bool = True,
    layer: str | None = None,
    reduce: str | None = None,
    ssim: bool = False,
    return_maps: bool = False,
    batch_size: int | None = None,
    progress: ProgressFn | None = None,
    **method_options: Any,
) -> dict[str, Any]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018, arXiv:1810.03292).

    The map of ``method`` on the trained model is compared with its map on a copy whose
    parameters are re-initialised group by group, from the output down (cumulatively: step
    ``k`` has groups ``0 .. k`` random). Each parameter tensor is redrawn i.i.d. from a
    normal distribution with that tensor's own mean and standard deviation (from a
    ``torch.Generator`` seeded with ``seed``, drawn on the CPU): the scale of every layer,
    and so the activation statistics, survive; the learned structure does not. Buffers
    (BatchNorm running statistics) are kept. A constant tensor (zero spread, e.g. an
    untrained bias) stays as it is.

    Parameters
    ----------
    model
        The trained model; it is not modified (a deep copy is randomised).
    x
        Input-space batch ``(N, C, H, W)``.
    method
        A registered method name (``"saliency"``, ``"gradcam"`` ...) or a callable with the
        method call shape ``fn(model, x, target, **options) -> Tensor`` (output ``(N, 1, H,
        W)`` is taken as a map; ``(N, C, H, W)`` is reduced with ``reduce``).
    target
        Any target; None = the trained model's predicted class, kept fixed for the
        randomised models (the question is how the map of *that* decision changes).
    layers
        The cumulative randomisation groups, top first: each a module name or a list of
        names randomised together. Default :func:`randomisation_groups` (for
        EfficientNet-Lite: ``classifier``, ``head``, ``blocks.15`` ... ``blocks.0``, ``stem``).
    seed
        Seeds the re-initialisation and the ``generator=`` of random methods (the same
        seed for every map, so SmoothGrad noise is shared and only the model changes).
    abs
        Compare absolute values of the maps (the paper reports both; CAMs and
        ``max_abs`` maps are non-negative anyway).
    layer
        Layer of layer methods (CAMs); default the last spatial layer of the model.
    reduce
        Channel reduction of input attributions; default the method's own.
    ssim
        Also compute the structural similarity (scikit-image) of maps scaled to [0, 1].
    return_maps
        Also return every randomised map ``(G, N, H, W)``.
    batch_size
        Images per method call (bounds memory); default all at once.
    progress
        Optional ``callback(done, total)`` over the ``G + 1`` maps computed.
    **method_options
        Passed to the method (``n_steps=``, ``stdevs=`` ...).

    Returns
    -------
    dict
        ``method``; ``layers``: the group names in cascade order (``G``); ``spearman``:
        tensor ``(G, N)``, the rank correlation per step and image (a constant map shares
        no order with anything: 0); ``spearman_mean``: list of ``G`` means over images;
        ``ssim`` / ``ssim_mean`` when asked; ``original``: the trained model's maps
        ``(N, H, W)``; ``final``: the fully cascaded maps; ``maps`` when ``return_maps``.

    Raises
    ------
    BadInputError
        An unknown method or layer name, an empty group list.
    """
    spec_name, _, _, _, uses_layer, _ = _method(method)
    if layer is None and uses_layer:
        layer = default_cam_layer(model)
    groups = _normalise_groups(model, layers)
    fixed = _fixed_target(model, x, target)

    def map_of(m: Model) -> torch.Tensor:
        reduced = method_maps(
            m,
            x,
            method,
            fixed,
            layer=layer,
            reduce=reduce,
            seed=seed,
            batch_size=batch_size,
            **method_options,
        )
        return reduced.abs() if abs else reduced

    total = len(groups) + 1
    original = map_of(model)
    if progress is not None:
        progress(1, total)
    copy_model = Model(
        copy.deepcopy(model.module),
        model.preprocessing,
        name=f"{model.name}+randomised",
        labels=model.labels,
    )
    generator = torch.Generator().manual_seed(seed)
    spearman, similarity, maps = [], [], []
    current = original
    for k, (_, names) in enumerate(groups):
        for name in names:
            randomise_(copy_model.layer(name), generator)
        current = map_of(copy_model)
        spearman.append(spearman_rows(original, current))
        if ssim:
            similarity.append(_ssim_rows(original, current))
        if return_maps:
            maps.append(current)
        if progress is not None:
            progress(k + 2, total)
    result: dict[str, Any] = {
        "method": spec_name,
        "layers": [label for label, _ in groups],
        "spearman": torch.stack(spearman),
        "original": original,
        "final": current,
    }
    result["spearman_mean"] = result["spearman"].mean(dim=1).tolist()
    if ssim:
        result["ssim"] = torch.stack(similarity)
        result["ssim_mean"] = result["ssim"].mean(dim=1).tolist()
    if return_maps:
        result["maps"] = torch.stack(maps)
    return result


def method_maps(
    model: Model,
    x: torch.Tensor,
    method: MethodLike,
    target: TargetLike = None,
    *,
    layer: str | None = None,
    reduce: str | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    **options: Any,
) -> torch.Tensor:
    """``(N, H, W)`` maps of a method, ready for the metrics (``explain`` without the result).

    CAM-shaped outputs ``(N, 1, H, W)`` are squeezed, input attributions reduced over
    channels with ``reduce`` (default: the method's own, as ``explain(...).tensors["map"]``).
    The predicted-class target is resolved once on the whole batch; ``x`` is processed in
    chunks of ``batch_size`` images, and random methods get a ``generator`` seeded with
    ``seed`` for each chunk. ``method`` is a registered name or a callable (see
    :func:`parameter_randomisation`).
    """
    _, fn, output, default_reduce, uses_layer, random = _method(method)
    kwargs = dict(options)
    if uses_layer:
        kwargs["layer"] = layer or default_cam_layer(model)
    elif layer is not None:
        raise BadInputError(f"method {_method(method)[0]!r} takes no layer")
    how = reduce or default_reduce
    fixed = _fixed_target(model, x, target)
    n = x.shape[0]
    step = batch_size or n
    chunks = []
    for lo in range(0, n, step):
        part = _target_slice(fixed, lo, lo + step, n)
        if random:
            kwargs["generator"] = torch.Generator(device=x.device).manual_seed(seed)
        out = fn(model, x[lo : lo + step], part, **kwargs).detach()
        chunks.append(
            out[:, 0] if (output == "cam" or out.shape[1] == 1) else reduce_channels(out, how)
        )
    return torch.cat(chunks)


def randomisation_groups(model: Model) -> list[tuple[str, list[str]]]:
    """The default cascade: ``(label, module names)`` groups with parameters, output first.

    Units are the model's top-level children, with plain containers (``nn.Sequential``,
    ``ModuleList``, ``ModuleDict``) opened one level, so each block of a stage is its own
    unit (``blocks.15``, ``layer4.1``, ``features.28``). A normalisation layer joins the
    unit that runs before it (``head_conv`` + ``head_bn`` = ``head``; the label is the
    names' common prefix, or ``a+b`` when there is none). Units run in forward order
    (the model's layer table) and are returned last to first; units without parameters,
    or that never run, are skipped.
    """
    order = {row.name: i for i, row in enumerate(model.layers())}
    units = [
        (name, m)
        for name, m in _units(model.module)
        if name in order and any(True for _ in m.parameters())
    ]
    units.sort(key=lambda u: order[u[0]])
    merged: list[list[tuple[str, nn.Module]]] = []
    for name, m in units:
        if merged and isinstance(m, _NORMS):
            merged[-1].append((name, m))
        else:
            merged.append([(name, m)])
    groups = [(_label([n for n, _ in g]), [n for n, _ in g]) for g in merged]
    labels = [label for label, _ in groups]
    groups = [
        (label if labels.count(label) == 1 else "+".join(names), names) for label, names in groups
    ]
    return groups[::-1]


def randomise_(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw every parameter of ``module`` in place from ``N(mean, std)`` of that tensor.

    Draws on the CPU from ``generator`` (reproducible on any device); tensors with zero
    spread are left as they are. Only ever called on the sanity check's private copy.
    """
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() < 2:
                continue
            std, mean = torch.std_mean(p.detach().double())
            if not float(std) > 0:
                continue
            fresh = (
                torch.randn(p.shape, generator=generator, dtype=torch.float64) * std.cpu()
                + mean.cpu()
            )
            p.copy_(fresh.to(p.device, p.dtype))


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps ``a[i]``, ``b[i]`` (``(N, ...) -> (N,)``).

    Ranks with ties averaged (``scipy.stats.rankdata``), then the Pearson correlation of
    the ranks. A map with no spread (constant) has no order to share: its correlation is 0.
    """
    from scipy.stats import rankdata

    ra = rankdata(a.detach().reshape(a.shape[0], -1).double().cpu().numpy(), axis=1)
    rb = rankdata(b.detach().reshape(b.shape[0], -1).double().cpu().numpy(), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    numerator = (ra * rb).sum(axis=1)
    rho = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    return torch.from_numpy(rho).float()


def _ssim_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from skimage.metrics import structural_similarity

    values = []
    for ma, mb in zip(a.double().cpu().numpy(), b.double().cpu().numpy()):
        values.append(structural_similarity(_unit_range(ma), _unit_range(mb), data_range=1.0))
    return torch.tensor(values, dtype=torch.float32)


def _unit_range(m: np.ndarray) -> np.ndarray:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _method(method: MethodLike) -> tuple[str, Callable[..., torch.Tensor], str, str, bool, bool]:
    if callable(method):
        return getattr(method, "__name__", "callable"), method, "input", "max_abs", False, False
    import convlens.attribution  # noqa: F401  (registers every method)

    if method not in METHODS:
        raise BadInputError(
            f"unknown method {method!r}; choose from {', '.join(sorted(METHODS))} or pass a callable"
        )
    spec = METHODS[method]
    return spec.name, spec.fn, spec.output, spec.reduce, spec.uses_layer, spec.random


def _fixed_target(model: Model, x: torch.Tensor, target: TargetLike) -> Target:
    resolved = resolve_target(model, target, x.shape[0])
    if resolved.kind == "predicted":
        return Target("class", classes=model.logits(x).argmax(dim=1).cpu())
    return resolved


def _target_slice(target: Target, lo: int, hi: int, n: int) -> Target:
    if (
        target.kind == "class"
        and target.classes is not None
        and target.classes.numel() == n
        and n > 1
    ):
        return Target("class", classes=target.classes[lo:hi])
    return target


def _normalise_groups(model: Model, layers: Sequence[Group] | None) -> list[tuple[str, list[str]]]:
    if layers is None:
        groups = randomisation_groups(model)
    else:
        groups = []
        for g in layers:
            names = [g] if isinstance(g, str) else list(g)
            if not names:
                raise BadInputError(
                    "an empty group in layers=; each group is a module name or a list of names"
                )
            for name in names:
                model.layer(name)  # LayerNotFoundError with suggestions
            groups.append(("+".join(names), names))
    if not groups:
        raise BadInputError(
            f"model {model.name} has no layers with parameters to randomise; pass layers="
        )
    return groups


def _units(module: nn.Module) -> list[tuple[str, nn.Module]]:
    units = []
    for name, child in module.named_children():
        if isinstance(child, _CONTAINERS):
            units += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            units.append((name, child))
    return units


def _label(names: list[str]) -> str:
    """``head_conv`` + ``head_bn`` -> ``head``: the common prefix ending at a separator, else ``a+b``."""
    if len(names) == 1:
        return names[0]
    size = min(len(n) for n in names)
    while any(n[:size] != names[0][:size] for n in names):
        size -= 1
    while size > 0 and not all(len(n) == size or n[size] in "._" for n in names):
        size -= 1
    return names[0][:size].rstrip("._") or "+".join(names)
