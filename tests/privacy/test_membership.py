"""Membership-inference metrics against sklearn and hand computations; the attacks on toys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from convlens.errors import BadInputError
from convlens.privacy.membership import (
    ShadowAttack,
    TargetRecipe,
    attack_metrics,
    loss_threshold_scores,
    membership_inference,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_roc_match_sklearn_with_ties(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    member = torch.rand(300, generator=g) < 0.4
    # rounded scores: many ties, which a wrong tie rule gets wrong
    scores = (torch.randn(300, generator=g) + 0.7 * member).mul(4).round() / 4
    assert roc_auc(scores, member) == pytest.approx(
        roc_auc_score(member.numpy(), scores.numpy()), abs=1e-12
    )
    fpr, tpr, _ = roc_curve(scores, member)
    sk_fpr, sk_tpr, _ = sk_roc_curve(member.numpy(), scores.numpy(), drop_intermediate=False)
    assert fpr.numpy() == pytest.approx(sk_fpr, abs=1e-12)
    assert tpr.numpy() == pytest.approx(sk_tpr, abs=1e-12)


def test_tpr_at_one_percent_fpr_by_hand() -> None:
    # 100 non-members scored 0..99; members: 30 above every non-member, 20 just below the
    # top non-member (98.5), 50 below all. At <= 1 % FPR (one non-member, 99, may pass) the
    # threshold 98.5 admits 30 + 20 members: TPR 0.5. Without any false positive: 0.3.
    non = torch.arange(100.0)
    members = torch.cat(
        [torch.full((30,), 200.0), torch.full((20,), 98.5), torch.full((50,), -1.0)]
    )
    scores = torch.cat([members, non])
    member = torch.cat([torch.ones(100, dtype=torch.bool), torch.zeros(100, dtype=torch.bool)])
    assert tpr_at_fpr(scores, member, 0.01) == pytest.approx(0.5)
    assert tpr_at_fpr(scores, member, 0.0) == pytest.approx(0.3)
    assert tpr_at_fpr(scores, member, 0.02) == pytest.approx(0.5)  # 98 lets in no new member
    assert tpr_at_fpr(scores, member, 1.0) == pytest.approx(1.0)


def test_attack_accuracy_by_hand_and_bad_input() -> None:
    scores = torch.tensor([0.9, 0.8, 0.3, 0.2])
    member = torch.tensor([True, False, True, False])
    m = attack_metrics(scores, scores > 0.5, member)
    assert m.accuracy == pytest.approx(0.5)  # right on 0.9 and 0.2
    assert m.auc == pytest.approx(0.75)  # pairs (0.9>0.8), (0.9>0.2), (0.3<0.8), (0.3>0.2): 3 of 4
    with pytest.raises(BadInputError):
        roc_auc(scores, torch.ones(4, dtype=torch.bool))
    with pytest.raises(BadInputError):
        roc_auc(scores, member[:3])


def test_loss_threshold_score_is_minus_cross_entropy() -> None:
    logits = torch.randn(20, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(10, (20,), generator=torch.Generator().manual_seed(1))
    scores = loss_threshold_scores(torch.log_softmax(logits, 1), labels)
    assert scores == pytest.approx(-F.cross_entropy(logits, labels, reduction="none"), abs=1e-6)


def test_shadow_attack_learns_a_per_class_rule() -> None:
    # members: confident outputs; non-members: flatter ones. Class 3's rule is reversed, so a
    # single global threshold cannot reach the accuracy per-class models do.
    g = torch.Generator().manual_seed(0)

    def records(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        labels = torch.randint(10, (n,), generator=g)
        member = torch.rand(n, generator=g) < 0.5
        confident = member ^ (labels == 3)
        margin = torch.where(confident, 8.0, 2.0) + torch.randn(n, generator=g)
        logits = torch.randn(n, 10, generator=g)
        logits[torch.arange(n), labels] += margin
        return torch.log_softmax(logits, 1), labels, member

    attack = ShadowAttack(seed=0).fit(*records(2000))
    log_probs, labels, member = records(1000)
    scores = attack.scores(log_probs, labels)
    assert roc_auc(scores, member) > 0.9
    three = labels == 3
    assert roc_auc(scores[three], member[three]) > 0.9


def test_membership_inference_runs_and_reports_consistent_numbers() -> None:
    recipe = TargetRecipe("tiny", epochs=2)
    result = membership_inference("digits", recipe, seed=0, n_shadow=1, n_members=60)
    t, p = result.tensors, result.provenance["params"]
    assert t["member"].sum() == 60 and (~t["member"]).sum() == 60
    assert p["loss_threshold"]["auc"] == pytest.approx(roc_auc(t["loss_scores"], t["member"]))
    assert p["shadow"]["auc"] == pytest.approx(roc_auc(t["shadow_scores"], t["member"]))
    assert 0 <= p["held_out_accuracy"] <= 1 and p["n_shadow"] == 1
    again = membership_inference("digits", recipe, seed=0, n_shadow=1, n_members=60)
    assert torch.equal(again.tensors["loss_scores"], t["loss_scores"])  # seeded
    with pytest.raises(BadInputError):
        membership_inference("cifar", recipe)
    with pytest.raises(BadInputError):
        membership_inference("digits", recipe, n_members=5)
