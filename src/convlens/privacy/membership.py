"""Membership inference: was this example in the model's training set?

Two attacks, side by side, on a target model the experiment trains itself:

- **Loss threshold** (Yeom, Giacomelli, Fredrikson & Jha, "Privacy Risk in Machine
  Learning: Analyzing the Connection to Overfitting", CSF 2018, arXiv:1709.01604). The
  score of ``(x, y)`` is ``-CE(f(x), y) = log p_y(x)``; members are predicted where the
  loss is at most the target's mean training loss ``tau`` (the adversary is assumed to
  know it): ``member <=> CE(f(x), y) <= tau``.
- **Shadow models** (Shokri, Stronati, Song & Shmatikov, "Membership Inference Attacks
  against Machine Learning Models", S&P 2017, arXiv:1610.05820). The attacker trains
  ``k`` shadow models like the target on its own data from the same distribution, half
  of it "in" and half "out", and learns, per class ``y``, an attack classifier
  ``A_y(log softmax f_shadow(x)) -> P(member)`` from the shadows' outputs. ``A_y`` is then
  applied to the target's outputs.

Metrics over a balanced set of members (the target's training data) and non-members
(held out from it): attack accuracy, ROC AUC (Mann-Whitney U / (n_pos n_neg), ties
counted one half) and the true-positive rate at 1 % false positives (Carlini et al.,
"Membership Inference Attacks From First Principles", S&P 2022, arXiv:2112.03570, argue
for reporting the low-FPR regime). :func:`overfitting_sweep` shows the attacks gain as the
target overfits (more epochs, less weight decay).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.errors import BadInputError
from convlens.models.training import TrainConfig, random_translate, seeded
from convlens.privacy._common import (
    ProgressFn,
    accuracy,
    as_model,
    check_dataset,
    full_dataset,
    pixel_logits,
    split_generator,
    train_module,
)
from convlens.results import Result, make_provenance

__all__ = [
    "DEFAULT_MEMBERS",
    "OVERFIT",
    "REGULARISED",
    "AttackMetrics",
    "ShadowAttack",
    "TargetRecipe",
    "attack_metrics",
    "loss_threshold_scores",
    "membership_experiment",
    "membership_inference",
    "overfitting_sweep",
    "roc_auc",
    "roc_curve",
    "tpr_at_fpr",
]


# -- metrics -----------------------------------------------------------------------------
def _check_scores(scores: Tensor, member: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    m = torch.as_tensor(member).flatten().bool()
    if s.shape != m.shape:
        raise BadInputError(
            f"{s.numel()} scores but {m.numel()} membership labels; pass one label per score"
        )
    if not torch.isfinite(s).all():
        raise BadInputError("membership scores must be finite")
    if m.all() or not m.any():
        raise BadInputError("membership labels need both members (True) and non-members (False)")
    return s, m


def roc_curve(scores: Tensor, member: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """False- and true-positive rates of "member if score >= t" at every distinct threshold.

    Returns ``(fpr, tpr, thresholds)``, float64, starting at ``(0, 0)`` (threshold ``+inf``)
    and ending at ``(1, 1)``; tied scores form one step.
    """
    s, m = _check_scores(scores, member)
    order = torch.argsort(s, descending=True, stable=True)
    s, m = s[order], m[order].double()
    tps, fps = torch.cumsum(m, 0), torch.cumsum(1 - m, 0)
    # keep the last index of each run of equal scores: ties cross the threshold together
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), tps[last] / m.sum()])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), fps[last] / (1 - m).sum()])
    thresholds = torch.cat([torch.full((1,), float("inf"), dtype=torch.float64), s[last]])
    return fpr, tpr, thresholds


def roc_auc(scores: Tensor, member: Tensor) -> float:
    """Area under the ROC curve: P(score of a member > score of a non-member), ties 1/2.

    Computed from average ranks (the Mann-Whitney U statistic divided by ``n_pos n_neg``).
    """
    s, m = _check_scores(scores, member)
    order = torch.argsort(s, stable=True)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, s.numel() + 1, dtype=torch.float64)
    # average ranks over ties
    unique, inverse = torch.unique(s, return_inverse=True)
    sums = torch.zeros(unique.numel(), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(unique.numel(), dtype=torch.float64).index_add_(
        0, inverse, torch.ones_like(ranks)
    )
    ranks = (sums / counts)[inverse]
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    u = float(ranks[m].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def tpr_at_fpr(scores: Tensor, member: Tensor, fpr: float = 0.01) -> float:
    """The highest true-positive rate of a threshold whose false-positive rate is <= ``fpr``."""
    if not 0 <= fpr <= 1:
        raise BadInputError(f"fpr={fpr!r} must be in [0, 1]")
    f, t, _ = roc_curve(scores, member)
    return float(t[f <= fpr + 1e-12].max())


@dataclass(frozen=True)
class AttackMetrics:
    """How well one attack separates members from non-members."""

    accuracy: float
    auc: float
    tpr_at_1_fpr: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def attack_metrics(scores: Tensor, predicted: Tensor, member: Tensor) -> AttackMetrics:
    """Accuracy of the attack's hard decisions ``predicted``, ROC AUC and TPR at 1 % FPR of ``scores``."""
    _, m = _check_scores(scores, member)
    p = torch.as_tensor(predicted).flatten().bool()
    if p.shape != m.shape:
        raise BadInputError(f"{p.numel()} decisions but {m.numel()} membership labels")
    return AttackMetrics(
        float((p == m).double().mean()), roc_auc(scores, member), tpr_at_fpr(scores, member, 0.01)
    )


# -- the target's training recipe -----------------------------------------------------------
@dataclass(frozen=True)
class TargetRecipe:
    """How the target (and, in Shokri's threat model, the shadows) are trained.

    ``shift`` > 0 adds random translations of up to that many pixels (a regulariser).
    ``arch`` names the architecture (:func:`convlens.privacy._common.architecture`): by
    default a one-hidden-layer MLP (512 units), which memorises its training set more
    than the zoo's CNN and, like Shokri et al.'s targets, is fully connected.
    """

    name: str
    epochs: int
    weight_decay: float = 0.0
    shift: int = 0
    lr: float = 1e-3
    batch_size: int = 32
    arch: str = "mlp"

    def train_config(self, seed: int) -> TrainConfig:
        augment = random_translate(self.shift) if self.shift > 0 else None
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=seed,
            augment=augment,
            num_threads=1,
        )


#: Target training-set size per dataset: small, so the target overfits, yet >= 90 % held out.
DEFAULT_MEMBERS = {"digits": 150, "mnist": 500}

#: Trained long with nothing to stop it memorising: training loss near 0.
OVERFIT = TargetRecipe("overfit", epochs=60)
#: The zoo's convolutional architecture (weight sharing and pooling) trained on random
#: 1-pixel shifts. On 150 digits weight decay, dropout, noise or early stopping of the MLP
#: barely moved either attack's AUC (measured 0.61-0.69); the shifts did.
REGULARISED = TargetRecipe("regularised", epochs=60, shift=1, arch="cnn")


# -- the attacks ----------------------------------------------------------------------------
def _log_probs(module: nn.Module, dataset: str, x: Tensor) -> Tensor:
    return torch.log_softmax(pixel_logits(module, dataset, x).double(), dim=1).float()


def loss_threshold_scores(log_probs: Tensor, labels: Tensor) -> Tensor:
    """Yeom et al.'s score ``log p_y(x) = -CE(f(x), y)`` (higher: more likely a member)."""
    return log_probs.gather(1, labels[:, None])[:, 0]


class ShadowAttack:
    """Shokri et al.'s attack models, one per class, trained on shadow models' outputs.

    Each ``A_y`` is a one-hidden-layer MLP on the clamped log-softmax vector, fitted with
    Adam on binary cross-entropy (in / out of the shadow's training set).
    """

    def __init__(
        self, n_classes: int = 10, *, hidden: int = 32, steps: int = 300, seed: int = 0
    ) -> None:
        self.n_classes = n_classes
        self.hidden = hidden
        self.steps = steps
        self.seed = seed
        self.models: dict[int, nn.Module] = {}

    @staticmethod
    def _features(log_probs: Tensor) -> Tensor:
        # a confidently right prediction has log p ~ -1e-7 and the rest ~ -40; clamping keeps
        # the features in a range an MLP can use
        return log_probs.clamp(min=-30.0) / 10.0

    def fit(self, log_probs: Tensor, labels: Tensor, member: Tensor) -> ShadowAttack:
        """Fit ``A_y`` on the shadows' records ``(log softmax, label, in/out)``."""
        feats, target = self._features(log_probs), member.float()
        with seeded(self.seed), torch.enable_grad():
            for cls in range(self.n_classes):
                rows = labels == cls
                net = nn.Sequential(
                    nn.Linear(feats.shape[1], self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1)
                )
                if rows.sum() == 0 or member[rows].all() or not member[rows].any():
                    self.models[cls] = net  # no usable records: stays at chance
                    continue
                optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
                for _ in range(self.steps):
                    optimizer.zero_grad()
                    loss = F.binary_cross_entropy_with_logits(net(feats[rows])[:, 0], target[rows])
                    loss.backward()
                    optimizer.step()
                net.eval()
                self.models[cls] = net
        return self

    def scores(self, log_probs: Tensor, labels: Tensor) -> Tensor:
        """``P(member)`` of each record under its class's attack model."""
        if not self.models:
            raise BadInputError("ShadowAttack.scores before fit(); fit it on shadow records first")
        feats = self._features(log_probs)
        out = torch.empty(labels.shape[0])
        with torch.no_grad():
            for cls, net in self.models.items():
                rows = labels == cls
                if rows.any():
                    out[rows] = torch.sigmoid(net(feats[rows])[:, 0])
        return out


# -- the experiment ---------------------------------------------------------------------------
def _split(dataset: str, seed: int, n_members: int | None) -> dict[str, tuple[Tensor, Tensor]]:
    """Target members, target non-members and the attacker's shadow pool, disjoint."""
    x_train, y_train, x_test, y_test = full_dataset(dataset)
    x, y = torch.cat([x_train, x_test]), torch.cat([y_train, y_test])
    order = torch.randperm(x.shape[0], generator=split_generator(seed))
    n = n_members if n_members is not None else DEFAULT_MEMBERS[dataset]
    if not isinstance(n, int) or not 10 <= n <= x.shape[0] // 4:
        raise BadInputError(
            f"n_members={n_members!r} must be an int between 10 and {x.shape[0] // 4} for {dataset}"
        )
    parts = {"members": order[:n], "non_members": order[n : 2 * n], "shadow": order[2 * n :]}
    return {k: (x[idx], y[idx]) for k, idx in parts.items()}


def membership_inference(
    dataset: str = "digits",
    recipe: TargetRecipe = OVERFIT,
    *,
    seed: int = 0,
    n_shadow: int = 4,
    n_members: int | None = None,
    progress: ProgressFn | None = None,
) -> Result:
    """Train a target with ``recipe``, attack it with both attacks, measure them.

    Parameters
    ----------
    dataset
        ``"digits"`` or ``"mnist"``. All its images are pooled and split (seeded) into the
        target's members, as many non-members, and the attacker's shadow pool (the rest;
        each shadow trains on as many examples as the target, with as many left out).
    recipe
        How the target and the shadow models are trained.
    seed
        Seeds the split, the target, the shadows' splits and training, the attack models.
    n_shadow
        Shadow models (each trained on a random half of the shadow pool).
    n_members
        Target training-set size (default :data:`DEFAULT_MEMBERS`).
    progress
        ``progress(done, total)`` after each model trained (``total = 1 + n_shadow``).

    Returns
    -------
    Result
        Kind ``"membership"``: tensors ``member`` (bool, members first), ``loss_scores``
        and ``shadow_scores`` (one per record), ``labels``; params ``held_out_accuracy``
        and ``train_accuracy`` of the target, ``loss_threshold`` and ``shadow``
        (:class:`AttackMetrics` as dicts), the recipe, sizes and ``seconds``.

    Raises
    ------
    BadInputError
        Unknown dataset, ``n_shadow < 1`` or an impossible ``n_members``.
    """
    check_dataset(dataset)
    if not isinstance(n_shadow, int) or n_shadow < 1:
        raise BadInputError(f"n_shadow={n_shadow!r} must be an int >= 1")
    started = time.perf_counter()
    parts = _split(dataset, seed, n_members)
    total, done = 1 + n_shadow, 0
    x_in, y_in = parts["members"]
    x_out, y_out = parts["non_members"]
    target = train_module(dataset, x_in, y_in, recipe.train_config(seed), arch=recipe.arch)
    done += 1
    if progress is not None:
        progress(done, total)
    lp_in, lp_out = _log_probs(target, dataset, x_in), _log_probs(target, dataset, x_out)
    x_pool, y_pool = parts["shadow"]
    train_acc = float((lp_in.argmax(1) == y_in).double().mean())
    # held-out accuracy on everything the target never saw (non-members and the pool)
    held_out = accuracy(target, dataset, torch.cat([x_out, x_pool]), torch.cat([y_out, y_pool]))
    log_probs, labels = torch.cat([lp_in, lp_out]), torch.cat([y_in, y_out])
    member = torch.cat(
        [torch.ones(len(y_in), dtype=torch.bool), torch.zeros(len(y_out), dtype=torch.bool)]
    )

    # Yeom: threshold at the target's mean training loss
    loss_scores = loss_threshold_scores(log_probs, labels)
    tau = float(-loss_threshold_scores(lp_in, y_in).mean())
    loss_metrics = attack_metrics(loss_scores, -loss_scores <= tau, member)

    # Shokri: shadows trained like the target, on as many examples, from the attacker's pool
    records: list[tuple[Tensor, Tensor, Tensor]] = []
    generator = split_generator(seed + 7919)
    for k in range(n_shadow):
        order = torch.randperm(x_pool.shape[0], generator=generator)
        n = len(y_in)
        inside, outside = order[:n], order[n : 2 * n]
        shadow = train_module(
            dataset,
            x_pool[inside],
            y_pool[inside],
            recipe.train_config(seed * 100 + k + 1),
            arch=recipe.arch,
        )
        for idx, is_in in ((inside, True), (outside, False)):
            records.append(
                (
                    _log_probs(shadow, dataset, x_pool[idx]),
                    y_pool[idx],
                    torch.full((len(idx),), is_in),
                )
            )
        done += 1
        if progress is not None:
            progress(done, total)
    attack = ShadowAttack(seed=seed).fit(*(torch.cat(r) for r in zip(*records)))
    shadow_scores = attack.scores(log_probs, labels)
    shadow_metrics = attack_metrics(shadow_scores, shadow_scores > 0.5, member)

    params: dict[str, Any] = {
        "dataset": dataset,
        "recipe": asdict(recipe),
        "n_members": len(y_in),
        "n_shadow": n_shadow,
        "train_accuracy": train_acc,
        "held_out_accuracy": held_out,
        "loss_threshold": {**loss_metrics.to_dict(), "tau": tau},
        "shadow": shadow_metrics.to_dict(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {
        "member": member,
        "loss_scores": loss_scores,
        "shadow_scores": shadow_scores,
        "labels": labels,
    }
    model = as_model(target, dataset, f"membership-target:{dataset}:{recipe.name}")
    return Result(
        "membership",
        tensors,
        make_provenance(model, "membership_inference", params=params, seed=seed),
    )


def membership_experiment(
    dataset: str = "digits",
    *,
    seeds: Sequence[int] = (0, 1, 2),
    recipes: Sequence[TargetRecipe] = (OVERFIT, REGULARISED),
    n_shadow: int = 4,
    n_members: int | None = None,
    progress: ProgressFn | None = None,
) -> list[Result]:
    """:func:`membership_inference` for every recipe and seed (recipe-major order)."""
    if not seeds or not recipes:
        raise BadInputError("membership_experiment needs at least one seed and one recipe")
    results, total = [], len(seeds) * len(recipes) * (1 + n_shadow)
    for r, recipe in enumerate(recipes):
        for s, seed in enumerate(seeds):
            offset = (r * len(seeds) + s) * (1 + n_shadow)

            def step(done: int, _total: int, offset: int = offset) -> None:
                if progress is not None:
                    progress(offset + done, total)

            results.append(
                membership_inference(
                    dataset,
                    recipe,
                    seed=seed,
                    n_shadow=n_shadow,
                    n_members=n_members,
                    progress=step,
                )
            )
    return results


def overfitting_sweep(
    dataset: str = "digits",
    *,
    epochs: Sequence[int] = (2, 5, 15, 40, 80),
    weight_decays: Sequence[float] = (0.0, 1e-3, 1e-2, 1e-1),
    base: TargetRecipe = OVERFIT,
    seed: int = 0,
    n_shadow: int = 4,
    n_members: int | None = None,
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Attack success as the target overfits: one row per epoch count, then per weight decay.

    The epoch sweep uses ``base`` with no weight decay; the weight-decay sweep uses
    ``base.epochs`` epochs. Each row: ``axis`` (``"epochs"`` / ``"weight_decay"``),
    ``value``, the target's ``train_accuracy`` and ``held_out_accuracy``, and both attacks'
    metrics.
    """
    points: list[tuple[str, float, TargetRecipe]] = [
        ("epochs", e, replace(base, name=f"epochs={e}", epochs=int(e), weight_decay=0.0))
        for e in epochs
    ]
    points += [
        ("weight_decay", w, replace(base, name=f"wd={w:g}", weight_decay=float(w)))
        for w in weight_decays
    ]
    rows: list[dict[str, Any]] = []
    for i, (axis, value, recipe) in enumerate(points):
        result = membership_inference(
            dataset, recipe, seed=seed, n_shadow=n_shadow, n_members=n_members
        )
        p = result.provenance["params"]
        rows.append(
            {
                "axis": axis,
                "value": value,
                "train_accuracy": p["train_accuracy"],
                "held_out_accuracy": p["held_out_accuracy"],
                "loss_threshold": p["loss_threshold"],
                "shadow": p["shadow"],
            }
        )
        if progress is not None:
            progress(i + 1, len(points))
    return rows
