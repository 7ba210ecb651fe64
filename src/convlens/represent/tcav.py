"""TCAV: testing with concept activation vectors, with a significance test.

Kim, Wattenberg, Gilmer, Cai, Wexler, Viegas & Sayres, "Interpretability Beyond Feature
Attribution: Quantitative Testing with Concept Activation Vectors (TCAV)", ICML 2018,
arXiv:1711.11279.

- A *concept activation vector* (CAV) ``v`` at layer ``l``: a linear classifier
  (logistic regression, scikit-learn) separates the layer's flattened activations
  ``f_l(x)`` of concept images from those of random images; ``v`` is the unit normal of
  its boundary, pointing toward the concept.
- The *conceptual sensitivity* of class ``k`` on image ``x`` is the directional derivative
  ``S(x) = grad_{f_l} h_k(f_l(x)) . v`` of the class score along the concept.
- The *TCAV score* of a set of class images ``X_k`` is the share with ``S(x) > 0``.
- Significance: one CAV per random set (concept vs ``R_i``) gives a distribution of
  TCAV scores; CAVs of random sets against each other give the null distribution
  (each ``R_i`` against ``R_{i+1}``, cyclically); a two-sided t-test (Welch) compares
  the two. A concept counts when ``p < alpha``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from convlens.errors import BadInputError
from convlens.hooks import capture, inference_context
from convlens.inspect.activations import layer_activations
from convlens.models.model import Model
from convlens.targets import TargetLike, resolve_target

__all__ = [
    "TCAVResult",
    "concept_activation_vector",
    "conceptual_sensitivity",
    "tcav",
    "tcav_score",
]


@dataclass
class TCAVResult:
    """TCAV scores of one concept for one class at one layer, and their significance.

    ``scores``: one TCAV score per random set (concept vs ``R_i``); ``random_scores``:
    the null (``R_i`` vs ``R_{i+1}``); ``p_value`` of the two-sided Welch t-test;
    ``accuracies``: held-in accuracy of each concept CAV's classifier.
    """

    layer: str
    scores: list[float]
    random_scores: list[float]
    p_value: float
    alpha: float
    accuracies: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def to_dict(self) -> dict[str, object]:
        return {
            "layer": self.layer, "mean": self.mean, "scores": self.scores, "random_scores": self.random_scores,
            "p_value": self.p_value, "alpha": self.alpha, "significant": self.significant, "accuracies": self.accuracies,
        }  # fmt: skip


def _codes(model: Model, images: torch.Tensor, layer: str) -> np.ndarray:
    return layer_activations(model, images, layer).flatten(1).double().cpu().numpy()


def concept_activation_vector(
    model: Model,
    concept: torch.Tensor,
    random: torch.Tensor,
    layer: str,
    *,
    regularization: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, float]:
    """The unit CAV ``(D,)`` separating ``concept`` from ``random`` at ``layer``, and the
    classifier's accuracy on those images.

    Logistic regression (``C = 1 / regularization``) on the flattened activations, labels
    1 for the concept; ``v = w / |w|`` points toward the concept.
    """
    from sklearn.linear_model import LogisticRegression

    if concept.shape[0] < 2 or random.shape[0] < 2:
        raise BadInputError(
            f"a CAV needs at least 2 concept and 2 random images, got {concept.shape[0]} and {random.shape[0]}"
        )
    a, b = _codes(model, concept, layer), _codes(model, random, layer)
    features = np.concatenate([a, b])
    labels = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    clf = LogisticRegression(C=1.0 / regularization, max_iter=2000, random_state=seed).fit(
        features, labels
    )
    w = torch.from_numpy(clf.coef_[0].copy())
    norm = float(w.norm())
    if norm == 0:
        raise BadInputError(
            f"layer {layer}: the concept and random images give the same activations; no CAV"
        )
    return w / norm, float(clf.score(features, labels))


def conceptual_sensitivity(
    model: Model, images: torch.Tensor, target: TargetLike, layer: str, cav: torch.Tensor
) -> torch.Tensor:
    """``S(x) = grad_{f_l} h_k(f_l(x)) . v`` per image ``(N,)``."""
    resolved = resolve_target(model, target, images.shape[0])
    with (
        torch.enable_grad(),
        inference_context(model.module),
        capture(model.module, [layer], root=True) as acts,
    ):
        scores, _ = resolved.scores(model, images.detach())
        (grad,) = torch.autograd.grad(scores.sum(), acts[layer])
    flat = grad.flatten(1).double().cpu()
    if flat.shape[1] != cav.numel():
        raise BadInputError(
            f"layer {layer}: the CAV has {cav.numel()} values but the layer gives {flat.shape[1]}"
        )
    return flat @ cav.double()


def tcav_score(
    model: Model, images: torch.Tensor, target: TargetLike, layer: str, cav: torch.Tensor
) -> float:
    """The share of ``images`` whose class score rises along the concept: ``mean(S(x) > 0)``."""
    return float((conceptual_sensitivity(model, images, target, layer, cav) > 0).double().mean())


def tcav(
    model: Model,
    images: torch.Tensor,
    target: TargetLike,
    layer: str,
    concept: torch.Tensor,
    randoms: Sequence[torch.Tensor],
    *,
    alpha: float = 0.05,
    regularization: float = 1.0,
) -> TCAVResult:
    """TCAV of one concept for the class ``target`` of ``images`` at ``layer``.

    Kim et al. 2018, arXiv:1711.11279 (module docstring). ``images``, ``concept`` and
    each of ``randoms`` are input-space batches; at least 3 random sets (Kim et al. use
    many more: the t-test has as many samples as random sets).
    """
    from scipy.stats import ttest_ind

    if len(randoms) < 3:
        raise BadInputError(
            f"TCAV needs at least 3 random sets for its significance test, got {len(randoms)}"
        )
    if not 0 < alpha < 1:
        raise BadInputError(f"alpha={alpha!r}: pass a significance level in (0, 1)")
    scores, accuracies = [], []
    for i, random in enumerate(randoms):
        cav, accuracy = concept_activation_vector(
            model, concept, random, layer, regularization=regularization, seed=i
        )
        scores.append(tcav_score(model, images, target, layer, cav))
        accuracies.append(accuracy)
    # the null: each random set as the "concept" against the next one (cyclically), so no
    # single random set is in every null CAV and biases them all the same way
    n = len(randoms)
    null = [
        tcav_score(
            model,
            images,
            target,
            layer,
            concept_activation_vector(
                model,
                randoms[i],
                randoms[(i + 1) % n],
                layer,
                regularization=regularization,
                seed=i,
            )[0],
        )
        for i in range(n)
    ]
    if np.std(scores) == 0 and np.std(null) == 0:
        # both distributions constant: equal means are no evidence, different ones are decisive
        p = 1.0 if np.mean(scores) == np.mean(null) else 0.0
    else:
        with warnings.catch_warnings():
            # one constant group (every score 1.0) is fine for Welch's test; scipy warns anyway
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(ttest_ind(scores, null, equal_var=False).pvalue)
    return TCAVResult(layer, scores, null, p, alpha, accuracies)
