"""White-box attacks against closed forms, torchattacks, and their budgets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convlens.adversarial import bim, carlini_wagner_l2, deepfool, fgsm, pgd
from convlens.adversarial.budget import quantize_within


def _torchattacks():  # type: ignore[no-untyped-def]
    """The test-only peer (`pip install --no-deps torchattacks`: it would pull torchvision)."""
    return pytest.importorskip("torchattacks")


def _images(
    n: int, shape: tuple[int, ...] = (3, 8, 8), seed: int = 0, margin: float = 0.0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return margin + (1 - 2 * margin) * torch.rand((n, *shape), generator=g)


def _conv_forward(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU6(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    )
    return net.eval().requires_grad_(False)


def test_fgsm_on_a_linear_model_is_the_closed_form() -> None:
    # logits [0, w.x + b] with label 0: d CE / dx = softmax_1 * w, whose sign is sign(w),
    # so FGSM must give exactly x + eps * sign(w) (pixels chosen so that nothing clips)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3 * 8 * 8, generator=g)
    b = torch.tensor(0.3)

    def forward(x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ w + b
        return torch.stack([torch.zeros_like(z), z], dim=1)

    x = _images(4, margin=0.1)
    eps = 3 / 255
    labels = torch.zeros(4, dtype=torch.long)
    expected = x + eps * w.sign().view(1, 3, 8, 8)
    torch.testing.assert_close(fgsm(forward, x, labels, eps), expected, rtol=0, atol=1e-7)
    # targeted toward class 1 is the same direction; toward class 0 from label 1 the opposite
    torch.testing.assert_close(
        fgsm(forward, x, torch.ones(4, dtype=torch.long), eps, targeted=True),
        expected,
        rtol=0,
        atol=1e-7,
    )
    # L2 version: x + eps * w / ||w||
    expected_l2 = x + eps * (w / w.norm()).view(1, 3, 8, 8)
    torch.testing.assert_close(
        fgsm(forward, x, labels, eps, norm="2"), expected_l2, rtol=0, atol=1e-6
    )


def test_fgsm_clips_to_the_pixel_range() -> None:
    w = torch.ones(3 * 8 * 8)

    def forward(x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ w
        return torch.stack([torch.zeros_like(z), z], dim=1)

    x = torch.full((1, 3, 8, 8), 0.99)
    out = fgsm(forward, x, torch.zeros(1, dtype=torch.long), 8 / 255)
    assert float(out.max()) == 1.0


@pytest.mark.parametrize("eps", [1 / 255, 4 / 255, 0.01, 3.5 / 255])
@pytest.mark.parametrize("method", ["fgsm", "bim", "pgd", "fgsm-l2", "pgd-l2"])
def test_budget_and_range_are_kept_before_and_after_quantisation(method: str, eps: float) -> None:
    net = _conv_forward()
    x = torch.round(_images(6, seed=2) * 255) / 255  # an 8-bit original, as attack() uses
    y = net(x).argmax(dim=1)
    norm = "2" if method.endswith("l2") else "inf"
    budget = eps * 20 if norm == "2" else eps  # L2 budgets are larger for the same visibility
    g = torch.Generator().manual_seed(0)
    if method.startswith("fgsm"):
        adv = fgsm(net, x, y, budget, norm=norm)
    elif method == "bim":
        adv = bim(net, x, y, budget, steps=5)
    else:
        adv = pgd(net, x, y, budget, norm=norm, steps=5, generator=g)
    for image in (adv, quantize_within(x, adv, budget, norm)):
        delta = (image - x).flatten(1)
        assert float(image.min()) >= 0 and float(image.max()) <= 1
        if norm == "inf":
            assert float(delta.abs().max()) <= budget + 1e-6
        else:
            assert float(delta.norm(dim=1).max()) <= budget + 1e-5
    q = quantize_within(x, adv, budget, norm)
    torch.testing.assert_close(
        q * 255, torch.round(q * 255), rtol=0, atol=1e-4
    )  # on the 8-bit grid


class _PixelModel(nn.Module):
    """Normalisation inside the module, so torchattacks gets pixel-space input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.5) / 0.25)


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_linf_with_the_same_random_start_equals_torchattacks(targeted: bool) -> None:
    model = _PixelModel(_conv_forward(3)).eval()
    x = _images(8, seed=4)
    y = model(x).argmax(dim=1)
    goal = (y + 1) % 5 if targeted else y
    eps, alpha, steps = 8 / 255, 2 / 255, 7
    atk = _torchattacks().PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    if targeted:
        atk.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 5)
    # both draw the random start from the same global stream: torchattacks' formula
    torch.manual_seed(123)
    start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    torch.manual_seed(123)
    theirs = atk(x, y)
    ours = pgd(model, x, goal, eps, steps=steps, alpha=alpha, start=start, targeted=targeted)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert not torch.equal(ours, x)


def test_pgd_l2_without_random_start_equals_torchattacks() -> None:
    model = _PixelModel(_conv_forward(5)).eval()
    x = _images(8, seed=6)
    y = model(x).argmax(dim=1)
    atk = _torchattacks().PGDL2(model, eps=0.5, alpha=0.1, steps=6, random_start=False)
    ours = pgd(model, x, y, 0.5, norm="2", steps=6, alpha=0.1, random_start=False)
    torch.testing.assert_close(ours, atk(x, y), rtol=0, atol=1e-5)


def test_pgd_random_start_is_seeded_and_stronger_than_fgsm_on_average() -> None:
    model = _PixelModel(_conv_forward(7)).eval()
    x = _images(32, seed=8)
    y = model(x).argmax(dim=1)
    runs = [
        pgd(model, x, y, 4 / 255, steps=10, generator=torch.Generator().manual_seed(s))
        for s in (0, 0, 1)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    loss_pgd = F.cross_entropy(model(runs[0]), y)
    loss_fgsm = F.cross_entropy(model(fgsm(model, x, y, 4 / 255)), y)
    assert loss_pgd > loss_fgsm > F.cross_entropy(model(x), y)


def _binary_linear(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, object]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3 * 8 * 8, generator=g) * 0.3
    b = torch.tensor(0.1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ w + b
        return torch.stack([torch.zeros_like(z), z], dim=1)

    return w, b, forward


def test_deepfool_and_cw_against_the_exact_distance_to_a_linear_boundary() -> None:
    # for a 2-class affine classifier the smallest L2 change is |w.x + b| / ||w||, reached in
    # one DeepFool step; CW can only be as good or worse (with 8-bit rounding slack)
    w, b, forward = _binary_linear()
    x = torch.round(_images(6, seed=9, margin=0.3) * 255) / 255
    z = x.flatten(1) @ w + b
    exact = z.abs() / w.norm()
    y = (z > 0).long()
    slack = 0.02  # 8-bit rounding of ~192 pixels moves L2 by ~sqrt(192) * 0.29/255 ~ 0.016
    adv_df = deepfool(forward, x, steps=10, candidates=2)
    l2_df = (adv_df - x).flatten(1).norm(dim=1)
    assert bool((forward(adv_df).argmax(dim=1) != y).all())
    assert bool((l2_df >= exact - slack).all()) and bool((l2_df <= 1.1 * exact + slack).all()), (
        l2_df,
        exact,
    )
    adv_cw = carlini_wagner_l2(forward, x, y, steps=200, search_steps=6, lr=0.02)
    l2_cw = (adv_cw - x).flatten(1).norm(dim=1)
    assert bool((forward(adv_cw).argmax(dim=1) != y).all())
    assert bool((l2_cw >= exact - slack).all()) and bool(
        (l2_cw <= 1.5 * exact + 3 * slack).all()
    ), (l2_cw, exact)


def test_targeted_cw_reaches_the_target_on_digits(digits: tuple) -> None:
    model, x, y = digits
    forward = lambda p: model.module(model.normalize(p))  # noqa: E731
    goal = (y[:6] + 1) % 10
    adv = carlini_wagner_l2(forward, x[:6], goal, targeted=True, steps=100, search_steps=5, lr=0.05)
    with torch.no_grad():
        reached = forward(adv).argmax(dim=1) == goal
    assert int(reached.sum()) >= 5
