"""Backdoor detectors on planted structure; Neural Cleanse's anomaly index by hand."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import silhouette_score

from convlens.privacy.detect import (
    activation_clustering,
    anomaly_index,
    detection_metrics,
    kmeans2,
    mask_iou,
    neural_cleanse,
    silhouette,
    spectral_signatures,
)


def _planted(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """10 labels of 150 Gaussian features (dim 32); label 4 also holds 40 points of a tight
    cluster far along a random direction (the 'poisoned' ones)."""
    g = torch.Generator().manual_seed(seed)
    feats, labels = [], []
    for k in range(10):
        centre = 3 * torch.randn(32, generator=g)
        feats.append(centre + torch.randn(150, 32, generator=g))
        labels.append(torch.full((150,), k))
    direction = torch.randn(32, generator=g)
    direction = 8 * direction / direction.norm()
    feats.append(feats[4][:1].mean(0) + direction + 0.3 * torch.randn(40, 32, generator=g))
    labels.append(torch.full((40,), 4))
    poisoned = torch.cat([torch.zeros(1500, dtype=torch.bool), torch.ones(40, dtype=torch.bool)])
    return torch.cat(feats), torch.cat(labels), poisoned


@pytest.mark.parametrize("seed", [0, 1])
def test_activation_clustering_finds_the_planted_cluster(seed: int) -> None:
    feats, labels, poisoned = _planted(seed)
    out = activation_clustering(feats, labels, seed=seed)
    m = detection_metrics(out["flagged"], poisoned)
    assert m.recall >= 0.95 and m.false_positive_rate <= 0.02
    assert out["per_label"][4]["flagged"]
    assert sum(v["flagged"] for v in out["per_label"].values()) == 1  # clean labels split loosely


@pytest.mark.parametrize("seed", [0, 1])
def test_spectral_signatures_find_the_planted_cluster(seed: int) -> None:
    feats, labels, poisoned = _planted(seed)
    out = spectral_signatures(feats, labels)
    m = detection_metrics(out["flagged"], poisoned)
    assert m.recall >= 0.95 and m.false_positive_rate <= 0.05
    # the paper's rule with eps: the 1.5 eps n top scores of each label
    rule = spectral_signatures(feats, labels, eps=0.25)
    assert int(rule["flagged"][labels == 4].sum()) == 72  # ceil(1.5 * 0.25 * 190)
    assert detection_metrics(rule["flagged"], poisoned).recall == 1.0


def test_kmeans_and_silhouette_against_sklearn() -> None:
    g = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(30, 3, generator=g), torch.randn(20, 3, generator=g) + 6])
    assign = kmeans2(points, seed=0)
    truth = torch.cat([torch.zeros(30), torch.ones(20)]).long()
    assert torch.equal(assign, truth) or torch.equal(assign, 1 - truth)
    noisy = torch.randint(2, (50,), generator=g)
    for a in (assign, noisy):
        assert silhouette(points, a) == pytest.approx(
            silhouette_score(points.double().numpy(), a.numpy()), abs=1e-9
        )


def test_anomaly_index_by_hand() -> None:
    norms = torch.tensor([10.0, 12.0, 11.0, 2.0, 13.0, 9.0, 11.0])
    # median 11; |deviations| 1, 1, 0, 9, 2, 2, 0 -> sorted 0 0 1 1 2 2 9 -> MAD 1
    expected = (11 - norms) / 1.4826
    assert anomaly_index(norms) == pytest.approx(expected.double())
    assert float(anomaly_index(norms)[3]) == pytest.approx(9 / 1.4826)


def test_mask_iou_and_detection_metrics_by_hand() -> None:
    true = torch.zeros(4, 4, dtype=torch.bool)
    true[2:, 2:] = True  # 4 pixels
    recovered = torch.zeros(4, 4)
    recovered[3, 1:] = 0.9  # 3 pixels, 2 inside
    assert mask_iou(recovered, true) == pytest.approx(2 / 5)
    m = detection_metrics(
        torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool),
        torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool),
    )
    assert (m.precision, m.recall, m.false_positive_rate, m.flagged) == pytest.approx(
        (1 / 3, 1 / 2, 2 / 3, 3)
    )


def test_neural_cleanse_names_a_one_pixel_backdoor() -> None:
    # A nearest-prototype classifier on 8x8 images, plus a backdoor: pixel (6, 6) bright
    # sends everything to label 3. Reaching any other label needs a large part of the image.
    g = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(10, 1, 8, 8, generator=g) > 0.5).float()
    prototypes[:, :, 6, 6] = 0

    def forward(x: torch.Tensor) -> torch.Tensor:
        logits = -20 * ((x[:, None] - prototypes[None]) ** 2).flatten(2).mean(2)
        logits[:, 3] = logits[:, 3] + 40 * x[:, 0, 6, 6]
        return logits

    images = prototypes[torch.randint(10, (64,), generator=g)] * 0.8 + 0.1 * torch.rand(
        64, 1, 8, 8, generator=g
    )
    images[:, :, 6, 6] = 0
    out = neural_cleanse(forward, images, steps=150, batch_size=32, seed=0)
    assert int(out["anomaly_index"].argmax()) == 3 and float(out["anomaly_index"][3]) > 2
    mask = out["masks"][3]
    assert (
        int(mask.argmax()) == 6 * 8 + 6 and float(mask.flatten().topk(2).values[1]) < 0.05
    )  # that pixel only
    assert float(out["success"][3]) >= 0.95
    assert float(out["norms"][3]) < 0.1 * float(out["norms"].median())
