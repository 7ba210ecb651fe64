"""faithfulness_ranking: the numbers are deletion_auc / insertion_auc, ranked by insertion - deletion;
on a linear model the map that is the true contribution ranks first and its reverse last."""

from __future__ import annotations

import torch
from torch import nn

import convlens
from convlens.metrics import deletion_auc, faithfulness_ranking, insertion_auc


class LinearLogit(nn.Module):
    """logit_0 = <w, x>, logit_1 = 0: pixel i contributes exactly w_i * x_i to class 0."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.w).flatten(1).sum(dim=1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_true_contributions_rank_first_and_numbers_are_the_metrics() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 8, 8, generator=g)
    model = convlens.wrap(
        LinearLogit(w), input_size=8, mean=0.0, std=1.0, channels=1, resize=None, labels=["a", "b"]
    )
    x = torch.rand(1, 1, 8, 8, generator=g) + 0.5
    truth = (w * x[0]).reshape(1, 8, 8)
    maps = {
        "truth": truth,
        "reversed": -truth,
        "random": torch.rand(1, 8, 8, generator=g),
    }
    rows = faithfulness_ranking(model, x, maps, 0, steps=16, fill="zero")
    assert [r.rank for r in rows] == [1, 2, 3]
    assert rows[0].method == "truth" and rows[-1].method == "reversed"
    for row in rows:
        d = float(deletion_auc(model, x, maps[row.method], 0, steps=16, fill="zero")[0][0])
        i = float(insertion_auc(model, x, maps[row.method], 0, steps=16, fill="zero")[0][0])
        assert row.deletion == d and row.insertion == i and row.score == i - d
    assert rows[0].score > rows[1].score > rows[2].score


def test_ties_are_broken_by_name_and_progress_counts_methods() -> None:
    model = convlens.wrap(
        LinearLogit(torch.ones(1, 4, 4)),
        input_size=4,
        mean=0.0,
        std=1.0,
        channels=1,
        resize=None,
        labels=["a", "b"],
    )
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    same = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(2))
    calls: list[tuple[int, int]] = []
    rows = faithfulness_ranking(
        model,
        x,
        {"b": same, "a": same.clone()},
        0,
        steps=4,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert [r.method for r in rows] == ["a", "b"]
    assert calls == [(1, 2), (2, 2)]
