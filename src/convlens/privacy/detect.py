"""Finding a backdoor: in the training data (activation clustering, spectral signatures)
and in the trained model (Neural Cleanse).

- **Activation clustering** (Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy &
  Srivastava, "Detecting Backdoor Attacks on Deep Neural Networks by Activation
  Clustering", 2018, arXiv:1811.03728). Per label, the penultimate activations are
  projected to a few dimensions (PCA here; the paper uses ICA) and split by 2-means. A
  poisoned label splits into a tight cluster of triggered images far from the clean ones;
  a clean label splits into two loose halves. A label is flagged when its split is clear
  (silhouette >= ``min_silhouette``) and the small cluster holds at most
  ``max_fraction`` of it; the small cluster's members are flagged.
- **Spectral signatures** (Tran, Li & Madry, "Spectral Signatures in Backdoor Attacks",
  NeurIPS 2018, arXiv:1811.00636). Per label, with centred representations ``R - mean``
  and their top right singular vector ``v``, each example scores ``((r - mean) . v)^2``.
  The paper removes the ``1.5 eps n`` highest scores of every label (``eps``: a bound on
  the poisoned fraction); without a known ``eps``, examples whose projection
  ``p = (r - mean) . v`` is a robust outlier of its label,
  ``|p - median(p)| / (1.4826 MAD(p)) > z``, are flagged.
- **Neural Cleanse** (Wang, Yao, Shan, Li, Viswanath, Zheng & Zhao, "Neural Cleanse:
  Identifying and Mitigating Backdoor Attacks in Neural Networks", S&P 2019). For each
  label ``t`` find the smallest mask ``M`` and pattern ``P`` that send clean images to
  ``t``: ``min CE(f((1 - M) x + M P), t) + lambda |M|_1``, with ``lambda`` raised while
  the attack succeeds and lowered while it does not. A backdoored label needs a far smaller
  mask than the others: anomaly index ``(median - |M_t|_1) / (1.4826 MAD)`` above 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.errors import BadInputError
from convlens.hooks import capture, inference_context
from convlens.progress import ProgressFn

__all__ = [
    "MAD_SCALE",
    "DetectionMetrics",
    "activation_clustering",
    "anomaly_index",
    "detection_metrics",
    "kmeans2",
    "layer_features",
    "mask_iou",
    "neural_cleanse",
    "silhouette",
    "spectral_signatures",
]

#: 1 / Phi^-1(3/4): makes the median absolute deviation estimate a normal's sigma.
MAD_SCALE = 1.4826


@dataclass(frozen=True)
class DetectionMetrics:
    """Flagged training examples against the truly poisoned ones."""

    precision: float
    recall: float
    false_positive_rate: float
    flagged: int

    def to_dict(self) -> dict[str, float]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "false_positive_rate": self.false_positive_rate,
            "flagged": self.flagged,
        }


def detection_metrics(flagged: Tensor, poisoned: Tensor) -> DetectionMetrics:
    """Precision, recall and false-positive rate of boolean ``flagged`` vs ``poisoned``."""
    f, p = flagged.bool().flatten(), poisoned.bool().flatten()
    if f.shape != p.shape:
        raise BadInputError(f"{f.numel()} flags but {p.numel()} poisoned labels")
    tp, fp = int((f & p).sum()), int((f & ~p).sum())
    return DetectionMetrics(
        precision=tp / max(1, int(f.sum())),
        recall=tp / max(1, int(p.sum())),
        false_positive_rate=fp / max(1, int((~p).sum())),
        flagged=int(f.sum()),
    )


def layer_features(module: nn.Module, x: Tensor, layer: str, batch_size: int = 512) -> Tensor:
    """Flattened outputs of ``layer`` for the (module-space) inputs ``x``, ``(N, D)``."""
    chunks = []
    with inference_context(module), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            with capture(module, [layer]) as acts:
                module(x[start : start + batch_size])
            chunks.append(acts[layer].flatten(1).cpu())
    return torch.cat(chunks)


# -- clustering ---------------------------------------------------------------------------
def kmeans2(points: Tensor, *, seed: int = 0, restarts: int = 10, iterations: int = 100) -> Tensor:
    """2-means (Lloyd's algorithm, k-means++ starts, best of ``restarts``): labels 0/1 ``(N,)``."""
    x = points.double()
    generator = torch.Generator().manual_seed(int(seed))
    best, best_cost = torch.zeros(x.shape[0], dtype=torch.int64), float("inf")
    for _ in range(restarts):
        first = x[torch.randint(x.shape[0], (1,), generator=generator)]
        d2 = ((x - first) ** 2).sum(1)
        if float(d2.sum()) == 0:
            return best
        second = x[torch.multinomial(d2 / d2.sum(), 1, generator=generator)]
        centres = torch.cat([first, second])
        assign = torch.zeros(x.shape[0], dtype=torch.int64)
        for _ in range(iterations):
            new = torch.cdist(x, centres).argmin(1)
            if _ > 0 and torch.equal(new, assign):
                break
            assign = new
            for k in range(2):
                if (assign == k).any():
                    centres[k] = x[assign == k].mean(0)
        cost = float(((x - centres[assign]) ** 2).sum())
        if cost < best_cost:
            best, best_cost = assign.clone(), cost
    return best


def silhouette(points: Tensor, assign: Tensor) -> float:
    """Mean silhouette coefficient (Rousseeuw 1987) of a 2-cluster assignment (0 if degenerate)."""
    x = points.double()
    if assign.unique().numel() < 2:
        return 0.0
    d = torch.cdist(x, x)
    scores = torch.empty(x.shape[0], dtype=torch.float64)
    for k in range(2):
        own, other = assign == k, assign != k
        n_own = int(own.sum())
        a = d[own][:, own].sum(1) / max(1, n_own - 1)
        b = d[own][:, other].mean(1)
        s = (b - a) / torch.maximum(a, b).clamp_min(1e-12)
        scores[own] = torch.where(torch.tensor(n_own > 1), s, torch.zeros_like(s))
    return float(scores.mean())


def _pca(x: Tensor, n_components: int) -> Tensor:
    centred = x.double() - x.double().mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[:n_components].T


def activation_clustering(
    features: Tensor,
    labels: Tensor,
    *,
    n_components: int = 10,
    max_fraction: float = 0.45,
    min_silhouette: float = 0.3,
    seed: int = 0,
) -> dict[str, Any]:
    """Chen et al.'s activation clustering: flag the small, well-separated cluster of a label.

    Parameters
    ----------
    features
        Penultimate activations ``(N, D)`` of the (possibly poisoned) training set.
    labels
        Their training labels ``(N,)``.
    n_components
        PCA dimensions before clustering.
    max_fraction
        A label's smaller cluster is suspicious only if it holds at most this fraction.
    min_silhouette
        ... and only if the 2-means split has at least this silhouette.
    seed
        Seeds k-means.

    Returns
    -------
    dict
        ``flagged`` (bool ``(N,)``), ``per_label``: ``{label: {"silhouette", "fraction", "flagged"}}``.
    """
    _check_features(features, labels)
    flagged = torch.zeros(labels.shape[0], dtype=torch.bool)
    per_label: dict[int, dict[str, Any]] = {}
    for cls in labels.unique().tolist():
        rows = torch.nonzero(labels == cls)[:, 0]
        if rows.numel() < 4:
            continue
        reduced = _pca(features[rows], min(n_components, rows.numel() - 1, features.shape[1]))
        assign = kmeans2(reduced, seed=seed)
        small = int((assign == 1).sum() < (assign == 0).sum())
        fraction = float((assign == small).double().mean())
        score = silhouette(reduced, assign)
        suspicious = score >= min_silhouette and fraction <= max_fraction
        if suspicious:
            flagged[rows[assign == small]] = True
        per_label[int(cls)] = {"silhouette": score, "fraction": fraction, "flagged": suspicious}
    return {"flagged": flagged, "per_label": per_label}


def spectral_signatures(
    features: Tensor, labels: Tensor, *, eps: float | None = None, z: float = 4.0
) -> dict[str, Any]:
    """Tran et al.'s outlier scores along each label's top singular direction.

    Parameters
    ----------
    features, labels
        As :func:`activation_clustering`.
    eps
        The paper's rule: flag the ``ceil(1.5 eps n_label)`` highest scores of every label.
    z
        Without ``eps``: flag projections more than ``z`` robust standard deviations from
        the label's median (``|p - median| / (1.4826 MAD) > z``).

    Returns
    -------
    dict
        ``scores`` ``(N,)`` and ``flagged`` (bool ``(N,)``).
    """
    _check_features(features, labels)
    if eps is not None and not 0 < eps < 1:
        raise BadInputError(f"eps={eps!r} must be in (0, 1)")
    scores = torch.zeros(labels.shape[0], dtype=torch.float64)
    flagged = torch.zeros(labels.shape[0], dtype=torch.bool)
    for cls in labels.unique().tolist():
        rows = torch.nonzero(labels == cls)[:, 0]
        if rows.numel() < 2:
            continue
        centred = features[rows].double() - features[rows].double().mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        projection = centred @ vh[0]
        s = projection**2
        scores[rows] = s
        if eps is not None:
            k = min(
                rows.numel(), math.ceil(1.5 * eps * rows.numel() - 1e-9)
            )  # 1.5 * 0.2 * 190 is 57.000...01
            flagged[rows[torch.topk(s, k).indices]] = True
        else:
            median = projection.median()
            mad = (projection - median).abs().median().clamp_min(1e-12)
            flagged[rows[(projection - median).abs() / (MAD_SCALE * mad) > z]] = True
    return {"scores": scores, "flagged": flagged}


def _check_features(features: Tensor, labels: Tensor) -> None:
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise BadInputError(
            f"features {tuple(features.shape)} and labels {tuple(labels.shape)}: expected (N, D) and (N,)"
        )


# -- Neural Cleanse -----------------------------------------------------------------------------
def anomaly_index(norms: Tensor) -> Tensor:
    """Wang et al.'s anomaly index per label: ``(median - norm) / (1.4826 MAD)`` (MAD of the norms).

    Positive for norms below the median (a small trigger: suspicious); > 2 flags a backdoor.
    """
    n = norms.double().flatten()
    median = n.median()
    mad = (n - median).abs().median()
    if float(mad) == 0:
        return torch.zeros_like(n)
    return (median - n) / (MAD_SCALE * mad)


def mask_iou(recovered: Tensor, true: Tensor, threshold: float = 0.5) -> float:
    """Intersection over union of ``recovered > threshold`` and the boolean ``true`` mask."""
    a, b = recovered.flatten() > threshold, true.flatten().bool()
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def neural_cleanse(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    n_classes: int = 10,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 0.1,
    init_lambda: float = 1e-2,
    target_success: float = 0.99,
    smoothness: float = 0.0,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, Tensor]:
    """Reverse-engineer the smallest trigger for every label; anomaly index per label.

    Parameters
    ----------
    forward
        Pixel-space images ``(N, C, H, W)`` in [0, 1] to logits (normalisation inside).
    images
        Clean pixel-space images the defender holds (labels are not needed).
    n_classes
        Labels to try.
    steps, batch_size, lr
        Adam steps per label on the mask and pattern logits, batch of clean images per step.
    init_lambda
        Starting weight of ``|M|_1`` (mean over pixels); every 10 steps it is multiplied by
        1.5 if the batch's attack success reached ``target_success``, else divided by 1.5.
    target_success
        A mask counts only if it sends this fraction of the batch to the label; the smallest
        such mask is kept (the last one if none qualified).
    smoothness
        Weight of ``lambda * smoothness * TV(M)`` (sum of absolute neighbour differences)
        added to the loss: a scattered mask costs more than a compact one, as in TABOR's
        "scattered trigger" penalty (Guo, Wang, Xing, Du & Song 2019, arXiv:1908.01763).
        0 is Wang et al.'s objective.
    seed
        Seeds initial values and batch draws.
    progress
        ``progress(done, total)`` over all labels' steps.

    Returns
    -------
    dict
        ``masks`` ``(K, H, W)`` in [0, 1], ``patterns`` ``(K, C, H, W)``, ``norms`` ``(K,)``
        (L1 of each mask), ``success`` ``(K,)`` (attack success of the kept mask on all
        ``images``), ``anomaly_index`` ``(K,)``.
    """
    if images.dim() != 4 or images.shape[0] < 2:
        raise BadInputError(f"images {tuple(images.shape)}: expected (N, C, H, W) with N >= 2")
    generator = torch.Generator().manual_seed(int(seed))
    _, c, h, w = images.shape
    masks, patterns, norms, success = [], [], [], []
    for t in range(n_classes):
        mask_logit = torch.full((1, 1, h, w), -2.0) + 0.1 * torch.randn(
            1, 1, h, w, generator=generator
        )
        pattern_logit = 0.1 * torch.randn(1, c, h, w, generator=generator)
        mask_logit.requires_grad_(True)
        pattern_logit.requires_grad_(True)
        optimizer = torch.optim.Adam([mask_logit, pattern_logit], lr=lr, betas=(0.5, 0.9))
        lam, hits = init_lambda, []
        best: tuple[float, Tensor, Tensor] | None = None
        target = torch.full((batch_size,), t, dtype=torch.int64)
        for step in range(steps):
            idx = torch.randint(images.shape[0], (batch_size,), generator=generator)
            with torch.enable_grad():
                m, p = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
                stamped = (1 - m) * images[idx] + m * p
                logits = forward(stamped)
                tv = (m[..., 1:, :] - m[..., :-1, :]).abs().sum() + (
                    m[..., :, 1:] - m[..., :, :-1]
                ).abs().sum()
                loss = F.cross_entropy(logits, target) + lam * (m.sum() + smoothness * tv)
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
            hit = float((logits.detach().argmax(1) == t).double().mean())
            hits.append(hit)
            norm = float(m.detach().sum())
            if hit >= target_success and (best is None or norm < best[0]):
                best = (norm, m.detach()[0, 0].clone(), p.detach()[0].clone())
            if (step + 1) % 10 == 0:
                lam = lam * 1.5 if min(hits) >= target_success else lam / 1.5
                hits = []
            if progress is not None:
                progress(t * steps + step + 1, n_classes * steps)
        if best is None:  # never reached target_success: keep the last mask
            m_last = torch.sigmoid(mask_logit.detach())[0, 0]
            best = (float(m_last.sum()), m_last, torch.sigmoid(pattern_logit.detach())[0])
        norm, m, p = best
        with torch.no_grad():
            rate = float((forward((1 - m) * images + m * p).argmax(1) == t).double().mean())
        masks.append(m)
        patterns.append(p)
        norms.append(norm)
        success.append(rate)
    norms_t = torch.tensor(norms, dtype=torch.float64)
    return {
        "masks": torch.stack(masks),
        "patterns": torch.stack(patterns),
        "norms": norms_t,
        "success": torch.tensor(success, dtype=torch.float64),
        "anomaly_index": anomaly_index(norms_t),
    }
