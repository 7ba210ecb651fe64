"""Class activation maps: Grad-CAM, Grad-CAM++, LayerCAM, Score-CAM, Eigen-CAM, guided Grad-CAM.

A CAM weighs the feature maps ``A_k`` (``k = 1..C``, each ``h x w``) of one layer and
keeps the positive part, ``relu(sum_k w_k A_k)``; the methods differ in the weights. The
default layer is the last spatial layer (:func:`~convlens.attribution.base.default_cam_layer`:
``head_act`` on EfficientNet-Lite0). Every CAM is returned as ``(N, 1, H, W)``, upsampled
bilinearly (``align_corners=False``, as Captum's ``LayerAttribution.interpolate``) to the
input size, unnormalised (displays scale it).

Token layers work too: a vision transformer's block output ``(N, T, C)`` is read as the
``h x w`` patch grid with ``C`` channels (:func:`convlens.tokens.tokens_to_grid`: the class
and register tokens are dropped, the grid is inferred from ``T`` and the input's shape, or
given with ``reshape=(h, w)``), and the gradient is reshaped the same way. The grid and
the number of dropped tokens go into the result's provenance (``params["tokens"]``).
On a ViT the default layer is the last block's input normalisation
(:func:`~convlens.attribution.base.default_cam_layer`): later token layers no longer reach
the class token except through their own position.

The plumbing is written once: :func:`_activations_and_grads` runs the forward pass with
the layer captured and back-propagates the target score *to the layer only* (the cheap
part of the backward pass); each method's body is then its formula. With
``create_graph=True`` the map stays differentiable w.r.t. ``x`` (pass an ``x`` that
requires grad to connect it to your own graph).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convlens.attribution.base import default_cam_layer, record_provenance, register_method
from convlens.attribution.guided import has_relu_family, require_relu_family
from convlens.errors import BadInputError
from convlens.hooks import backward_rules, capture, inference_context, is_activation
from convlens.layers import resolve_layer
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.targets import Target, TargetLike, resolve_target
from convlens.tokens import GridLike, tokens_to_grid

__all__ = ["eigencam", "gradcam", "gradcam_pp", "guided_gradcam", "layercam", "scorecam"]

LayerLike = str | nn.Module | None


# -- shared plumbing -------------------------------------------------------------------


def _layer_name(model: Model, layer: LayerLike) -> str:
    return default_cam_layer(model) if layer is None else resolve_layer(model.module, layer)[0]


def _input_leaf(x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """The tensor fed to the model: ``x`` itself when a differentiable map is asked for
    and ``x`` is part of the caller's graph, else a fresh leaf (``x`` stays untouched)."""
    if create_graph and x.requires_grad:
        return x
    return x.detach().clone().requires_grad_(True)


def _check_spatial(act: torch.Tensor, layer: str, model: Model) -> None:
    if act.dim() not in (3, 4):
        shape = tuple(act.shape[1:])
        suggestion = default_cam_layer(model)
        raise BadInputError(
            f"layer {layer!r} outputs shape {shape}, not a (C, h, w) feature map or (T, C) tokens; a CAM needs a convolutional or token layer such as {suggestion!r}"
        )


def _as_grid(
    t: torch.Tensor, layer: str, model: Model, size: tuple[int, ...], reshape: GridLike = None
) -> torch.Tensor:
    """A layer output (or its gradient) as ``(N, C, h, w)``: feature maps as they are, token
    layers ``(N, T, C)`` on their patch grid (recorded in the provenance)."""
    _check_spatial(t, layer, model)
    if t.dim() == 4:
        if reshape is not None:
            raise BadInputError(
                f"reshape={reshape!r} is for token layers (N, T, C); layer {layer!r} is already a feature map {tuple(t.shape[1:])}"
            )
        return t
    try:
        grid, info = tokens_to_grid(t, reshape, input_size=(int(size[0]), int(size[1])))
    except BadInputError as err:
        raise BadInputError(f"layer {layer!r}: {err}") from None
    record_provenance("tokens", info)
    return grid


def _layer_grad(
    score: torch.Tensor,
    act: torch.Tensor,
    layer: str,
    create_graph: bool,
    retain_graph: bool = False,
) -> torch.Tensor:
    if not score.requires_grad:  # a root capture and a score computed below the layer
        raise BadInputError(
            f"the target score does not depend on layer {layer!r} (a neuron below it?); pick a layer between the input and the target"
        )
    (grad,) = torch.autograd.grad(
        score,
        act,
        create_graph=create_graph,
        retain_graph=retain_graph or create_graph,
        allow_unused=True,
    )
    if grad is None:
        raise BadInputError(
            f"the target score does not depend on layer {layer!r} (a neuron below it?); pick a layer between the input and the target"
        )
    return grad


def _activations_and_grads(
    model: Model,
    x: torch.Tensor,
    target: TargetLike,
    layer: LayerLike,
    create_graph: bool = False,
    reshape: GridLike = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, dS/dA)``: the layer's output and the target score's gradient w.r.t. it,
    both ``(N, C, h, w)`` (a token layer on its patch grid, see :func:`_as_grid`).

    One forward pass (eval mode, parameters frozen) with the layer captured, and a backward
    pass from the score to the layer only: nothing below the layer is back-propagated.
    Both are detached unless ``create_graph``.
    """
    name = _layer_name(model, layer)
    resolved = resolve_target(model, target, x.shape[0])
    # Without create_graph only dS/dA is needed: the layer output becomes the graph's root
    # and nothing below it is recorded (x does not require grad, parameters are frozen).
    # A differentiable map needs the whole graph from x.
    xr = _input_leaf(x, create_graph) if create_graph else x.detach()
    with (
        torch.enable_grad(),
        inference_context(model.module),
        capture(model.module, [name], root=not create_graph) as acts,
    ):
        scores, _ = resolved.scores(model, xr)
        act = acts[name]
        _check_spatial(act, name, model)
        grad = _layer_grad(scores.sum(), act, name, create_graph)
    size = x.shape[-2:]
    act, grad = (
        _as_grid(act, name, model, size, reshape),
        _as_grid(grad, name, model, size, reshape),
    )
    return (act, grad) if create_graph else (act.detach(), grad)


def _upsample(cam: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Bilinear resize of ``(N, 1, h, w)`` maps to ``size`` (identity when equal)."""
    return F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)


def _weighted_cam(weights: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``relu(sum_k w_k A_k)`` for channel weights ``(N, C)``: ``(N, 1, h, w)``."""
    return torch.relu((weights[:, :, None, None] * act).sum(dim=1, keepdim=True))


# -- gradient CAMs ---------------------------------------------------------------------


@register_method(
    "gradcam", output="cam", uses_layer=True, paper="Selvaraju et al. 2017, arXiv:1610.02391"
)
def gradcam(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    layer: LayerLike = None,
    reshape: GridLike = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """Grad-CAM: ``relu(sum_k w_k A_k)`` with ``w_k = mean_ij dS/dA_k[i, j]``.

    Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra, "Grad-CAM: Visual Explanations from
    Deep Networks via Gradient-based Localization", ICCV 2017, arXiv:1610.02391. ``S`` is
    the unnormalised target score (the class logit).

    Parameters
    ----------
    model, x, target
        The model, an input-space batch ``(N, C, H, W)`` and the target (see
        :func:`~convlens.attribution.base.explain`).
    layer
        Dotted name (or module) of the feature map; default the last spatial layer (on a
        ViT, the last block's ``norm1``).
    reshape
        For a token layer ``(N, T, C)``: the patch grid ``(h, w)`` (default: inferred from
        ``T`` and the input's shape, class and register tokens dropped).
    create_graph
        Keep the map differentiable w.r.t. ``x``.

    Returns
    -------
    torch.Tensor
        ``(N, 1, H, W)``, non-negative, upsampled bilinearly to the input size.

    Raises
    ------
    BadInputError
        The layer has no spatial or token output (or its tokens fill no grid), or the
        target does not depend on it.
    """
    act, grad = _activations_and_grads(model, x, target, layer, create_graph, reshape)
    return _upsample(_weighted_cam(grad.mean(dim=(2, 3)), act), x.shape[-2:])


@register_method(
    "gradcam_pp", output="cam", uses_layer=True, paper="Chattopadhyay et al. 2018, arXiv:1710.11063"
)
def gradcam_pp(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    layer: LayerLike = None,
    reshape: GridLike = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """Grad-CAM++: pixel-weighted gradients, ``w_k = sum_ij alpha_k[i,j] relu(g_k[i,j])``.

    Chattopadhyay, Sarkar, Howlader & Balasubramanian, "Grad-CAM++: Improved Visual
    Explanations for Deep Convolutional Networks", WACV 2018, arXiv:1710.11063.

    With ``g = dS/dA`` for the target score ``S`` and the paper's exponential score
    ``exp(S)`` (whose higher derivatives are powers of ``g`` when the network above the
    layer is piecewise linear), the closed form of the paper's Eq. 19 is::

        alpha_k[i, j] = g_k[i, j]^2 / (2 g_k[i, j]^2 + (sum_ab A_k[a, b]) g_k[i, j]^3)

    (0 where the denominator is 0), and the map is ``relu(sum_k w_k A_k)``. The positive
    factor ``exp(S)`` the paper's weights carry is dropped, as in common implementations:
    it only scales each image's map (and overflows for large logits).

    Parameters and returns as :func:`gradcam`.
    """
    act, grad = _activations_and_grads(model, x, target, layer, create_graph, reshape)
    g2 = grad.pow(2)
    denom = 2 * g2 + act.sum(dim=(2, 3), keepdim=True) * g2 * grad
    nonzero = denom != 0
    # the inner where keeps 0/0 out of the graph (a NaN there would poison create_graph)
    alpha = torch.where(
        nonzero, g2 / torch.where(nonzero, denom, torch.ones_like(denom)), torch.zeros_like(denom)
    )
    weights = (alpha * grad.clamp(min=0)).sum(dim=(2, 3))
    return _upsample(_weighted_cam(weights, act), x.shape[-2:])


@register_method(
    "layercam", output="cam", uses_layer=True, paper="Jiang et al. 2021, IEEE TIP 30:5875-5888"
)
def layercam(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    layer: LayerLike = None,
    reshape: GridLike = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """LayerCAM: ``relu(sum_k relu(g_k) * A_k)``, elementwise weights ``g = dS/dA``.

    Jiang, Zhang, Hou, Cheng & Wei, "LayerCAM: Exploring Hierarchical Class Activation Maps
    for Localization", IEEE Transactions on Image Processing 30, 2021. Each position keeps
    its own positive gradient instead of a channel mean, so shallow layers give usable maps.

    Parameters and returns as :func:`gradcam`.
    """
    act, grad = _activations_and_grads(model, x, target, layer, create_graph, reshape)
    return _upsample(torch.relu((grad.clamp(min=0) * act).sum(dim=1, keepdim=True)), x.shape[-2:])


# -- gradient-free CAMs ----------------------------------------------------------------


def _scorecam_target(resolved: Target, images: torch.Tensor, n: int) -> Target:
    """The target for masked copies of the images at indices ``images``."""
    if resolved.classes is None:
        return resolved  # neuron or callable: the same score on any batch
    classes = resolved.classes.to(images.device)
    classes = classes.expand(n) if classes.numel() == 1 else classes
    return Target("class", classes=classes[images])


@register_method(
    "scorecam", output="cam", uses_layer=True, paper="Wang et al. 2020, arXiv:1910.01279"
)
def scorecam(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    layer: LayerLike = None,
    reshape: GridLike = None,
    batch_size: int = 64,
    create_graph: bool = False,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Score-CAM: channels weighted by the score of the input they mask; no gradient.

    Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu, "Score-CAM: Score-Weighted Visual
    Explanations for Convolutional Neural Networks", CVPR workshops 2020, arXiv:1910.01279.

    Each channel's activation is upsampled to the input size and min-max normalised to
    ``H_k`` in [0, 1]; the masked input ``x * H_k`` is scored, and the weights are a softmax
    over channels of the paper's increase of confidence ``f(x * H_k) - f(x_b)``::

        w = softmax_k(S(x * H_k) - S(x_b)) = softmax_k(S(x * H_k))

    The baseline term is the same for every channel, so it cancels in the softmax and no
    baseline pass is run. ``S`` is the unnormalised target score (class logit, neuron or
    callable). The map is ``relu(sum_k w_k A_k)``. Channels that are constant over space
    give no mask and are skipped (weight 0), as in the authors' code; dead ReLU channels
    then cost nothing.

    Parameters
    ----------
    model, x, target, layer, reshape, create_graph
        As :func:`gradcam`.
    batch_size
        Masked inputs per forward pass (all images' channels share the chunks).
    progress
        Called as ``progress(done, total)`` masked inputs after every chunk.

    Returns
    -------
    torch.Tensor
        ``(N, 1, H, W)``, non-negative.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(
            f"scorecam batch_size={batch_size!r} must be an int >= 1 (masked inputs per forward pass)"
        )
    name = _layer_name(model, layer)
    n = x.shape[0]
    resolved = resolve_target(model, target, n)
    xin = _input_leaf(x, True) if create_graph else x.detach()
    with inference_context(model.module), torch.set_grad_enabled(create_graph):
        with capture(model.module, [name]) as acts:
            _, resolved = resolved.scores(model, xin)  # also fills the predicted classes
            act = _as_grid(acts[name], name, model, x.shape[-2:], reshape)
        valid = act.amax(dim=(2, 3)) > act.amin(dim=(2, 3))
        pairs = valid.nonzero()  # (P, 2): image, channel
        total = pairs.shape[0]
        scores = []
        for start in range(0, total, batch_size):
            image, channel = pairs[start : start + batch_size].unbind(dim=1)
            up = _upsample(act[image, channel].unsqueeze(1), x.shape[-2:])
            lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
            mask = (up - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
            chunk_scores, _ = _scorecam_target(resolved, image, n).scores(model, xin[image] * mask)
            scores.append(chunk_scores)
            if progress is not None:
                progress(min(start + batch_size, total), total)
        logits = act.new_full(valid.shape, float("-inf"))
        if total:
            logits = logits.index_put((pairs[:, 0], pairs[:, 1]), torch.cat(scores).to(act.dtype))
        # an image without any usable channel has all -inf: its weights (NaN) become 0
        weights = torch.nan_to_num(torch.softmax(logits, dim=1), nan=0.0)
    cam = _upsample(_weighted_cam(weights, act), x.shape[-2:])
    return cam if create_graph else cam.detach()


@register_method(
    "eigencam", output="cam", uses_layer=True, paper="Muhammad & Yeasin 2020, arXiv:2008.00299"
)
def eigencam(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    layer: LayerLike = None,
    reshape: GridLike = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """Eigen-CAM: the activations projected on their first principal direction.

    Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
    IJCNN 2020, arXiv:2008.00299. Per image, the ``(h*w, C)`` matrix ``M`` of activations
    (one row per position) is factorised ``M = U S V^T`` and the map is ``M v_1``, the
    projection on the first right singular vector, reshaped to ``h x w``. As in the paper,
    ``M`` is not centred (pytorch-grad-cam centres it). The sign of ``v_1`` is arbitrary:
    it is chosen so that the map sums to a non-negative value, then ``relu`` is applied.

    Class-agnostic: ``target`` is validated but does not change the map, and no gradient is
    computed. Parameters and returns as :func:`gradcam`.
    """
    name = _layer_name(model, layer)
    resolve_target(model, target, x.shape[0])
    xin = _input_leaf(x, True) if create_graph else x.detach()
    with (
        inference_context(model.module),
        torch.set_grad_enabled(create_graph),
        capture(model.module, [name]) as acts,
    ):
        model.module(xin)
        act = _as_grid(acts[name], name, model, x.shape[-2:], reshape)
    n, _, h, w = act.shape
    m = act.flatten(2).transpose(1, 2)  # (N, h*w, C)
    with torch.set_grad_enabled(create_graph):
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
        projection = (m @ vh[:, 0, :, None]).squeeze(2)  # (N, h*w)
        sign = torch.where(projection.sum(dim=1, keepdim=True) < 0, -1.0, 1.0).to(projection.dtype)
        cam = torch.relu(projection * sign).reshape(n, 1, h, w)
        return _upsample(cam, x.shape[-2:])


# -- guided Grad-CAM -------------------------------------------------------------------


def _rules_above(model: Model, layer: str) -> bool:
    """Whether a ReLU-family activation (where guided rules act) may run after ``layer``.

    Read from the model's layer table (execution order of first calls, built once). A rule
    above the layer would change the gradient reaching it; reused activations count as
    above (conservative: that only costs a second pass over the top of the network).
    """
    rows = model.layers()
    names = [row.name for row in rows]
    if layer not in names:
        return True
    position = names.index(layer)
    for index, row in enumerate(rows):
        if (
            not row.is_leaf
            or row.name == "(model)"
            or not is_activation(row.name, model.module.get_submodule(row.name))
        ):
            continue
        inside = row.name.startswith(layer + ".")
        if row.calls > 1 or (index > position and not inside):
            return True
    return False


@register_method(
    "guided_gradcam",
    output="input",
    reduce="abs_sum",
    uses_layer=True,
    paper="Selvaraju et al. 2017, arXiv:1610.02391",
    applies=has_relu_family,
)
def guided_gradcam(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    layer: LayerLike = None,
    reshape: GridLike = None,
) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop times the upsampled Grad-CAM, from one pass.

    Selvaraju et al. 2017, arXiv:1610.02391 (Sec. 3.1): ``GB(x) * up(relu(sum_k w_k A_k))``
    with guided backpropagation ``GB`` (Springenberg et al. 2015, the ReLU-family rules of
    :mod:`convlens.attribution.guided`) and Grad-CAM weights ``w_k`` from the *plain*
    gradient at the layer.

    One forward pass carries both the guided rules and the layer capture, and one backward
    pass gives both gradients: the gradient reaching the layer has passed only the network
    *above* it, so it is the plain gradient as long as no guided rule acts above the layer
    (the usual case: the last feature map is followed by pooling and a linear head). When
    an activation does run above the layer, its rule is switched to the plain derivative for
    a first backward to the layer, then to the guided rule for the backward to the input:
    only the top of the network is traversed twice. Captum runs two full passes.

    Parameters
    ----------
    model, x, target, layer, reshape
        As :func:`gradcam`.

    Returns
    -------
    torch.Tensor
        Shaped like ``x``.
    """
    name = _layer_name(model, layer)
    resolved = resolve_target(model, target, x.shape[0])
    xr = _input_leaf(x, False)
    above = _rules_above(model, name)  # before the hooks: the layer table may run a forward
    state = {"plain": False}

    def rule(
        module: nn.Module, inp: torch.Tensor | None, out: torch.Tensor | None, grad: torch.Tensor
    ) -> torch.Tensor:
        # on the gradient at each activation's output; the activation's own derivative follows
        return grad if state["plain"] else grad.clamp(min=0)

    # backward_rules first: its forward hook must run before the capture's, so the captured
    # output is the one the rest of the network consumes
    with (
        torch.enable_grad(),
        inference_context(model.module),
        backward_rules(model.module, rule, at="output") as chosen,
        capture(model.module, [name]) as acts,
    ):
        require_relu_family(chosen, model, "guided_gradcam")
        scores, _ = resolved.scores(model, xr)
        act = acts[name]
        _check_spatial(act, name, model)
        total = scores.sum()
        if above:
            state["plain"] = True
            act_grad = _layer_grad(total, act, name, create_graph=False, retain_graph=True)
            state["plain"] = False
            (input_grad,) = torch.autograd.grad(total, xr)
        else:
            act_grad, input_grad = torch.autograd.grad(total, [act, xr])
    size = x.shape[-2:]
    grid, grid_grad = (
        _as_grid(act.detach(), name, model, size, reshape),
        _as_grid(act_grad, name, model, size, reshape),
    )
    cam = _upsample(_weighted_cam(grid_grad.mean(dim=(2, 3)), grid), size)
    return input_grad * cam
