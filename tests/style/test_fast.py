"""Fast feed-forward stylisation: the network's geometry, training that lowers the perceptual
loss, the same losses as the optimisation, and a safe save/load round trip."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from convlens.errors import BadInputError
from convlens.style.fast import (
    HELD_OUT,
    StyleNet,
    load_style_net,
    perceptual_losses,
    save_style_net,
    stylize,
    train_style_net,
    training_images,
)
from convlens.style.transfer import style_transfer

TINY = {"width": 4, "blocks": 1}


def photo(seed: int, h: int = 40, w: int = 48) -> torch.Tensor:
    """A smooth, structured test 'photo' (1, 3, H, W): blobs and a gradient, no flat areas."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    image = torch.stack([xx, yy, 1 - xx * yy])
    for _ in range(4):
        cy, cx, r = torch.rand(3, generator=g).tolist()
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.05 * r))
        image = image + blob * (torch.rand(3, 1, 1, generator=g) - 0.5)
    return image.clamp(0, 1)[None]


def stripes(h: int = 48, w: int = 48, period: int = 6) -> torch.Tensor:
    """A high-contrast texture (1, 3, H, W): diagonal coloured stripes."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    phase = ((yy + xx) // (period // 2)) % 2
    return torch.stack([phase * 0.9, 0.2 + 0.0 * phase, 1.0 - phase * 0.8]).float()[None]


def _train(model, steps: int, seed: int = 0, **kw):
    images = [photo(s)[0] for s in range(6)]
    return train_style_net(
        model, stripes(), images, steps=steps, size=32, batch=2, lr=1e-2, seed=seed, **TINY, **kw
    )


@pytest.mark.parametrize(("h", "w"), [(16, 16), (37, 50), (64, 33)])
def test_output_has_the_input_size_and_stays_in_0_1(h: int, w: int) -> None:
    torch.manual_seed(0)
    net = StyleNet(4, 1, skip=False)
    with torch.no_grad():
        for p in net.parameters():  # large weights: the sigmoid saturates, still inside [0, 1]
            p.mul_(20)
        out = net(torch.rand(2, 3, h, w))
    assert out.shape == (2, 3, h, w)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 0.05  # not a constant image


def test_untrained_skip_net_is_the_identity() -> None:
    # with skip=True the output conv starts at zero, so sigmoid(logit(x)) = x wherever x is not clamped
    x = torch.rand(1, 3, 24, 20) * 0.98 + 0.01
    with torch.no_grad():
        out = StyleNet(4, 2, skip=True)(x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_bad_net_settings_and_images_are_refused() -> None:
    with pytest.raises(BadInputError, match="width"):
        StyleNet(0)
    with pytest.raises(BadInputError, match="16 x 16"):
        StyleNet(4, 1)(torch.rand(1, 3, 8, 40))
    with pytest.raises(BadInputError, match="RGB"):
        StyleNet(4, 1)(torch.rand(1, 1, 32, 32))


def test_training_lowers_the_loss_on_unseen_photos(loss_model) -> None:
    """The perceptual loss of held-out photos falls from the untrained (identity) net's."""
    held_out = torch.cat([photo(s, 32, 32) for s in (10, 11, 12)])  # the crops' size and scale

    def loss(net: StyleNet) -> float:
        with torch.no_grad():
            out = net(held_out)
        c, s = perceptual_losses(loss_model, out, held_out, stripes())
        return float((c + 10 * s).mean())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = StyleNet(**TINY).eval()
    net, result = _train(loss_model, steps=60)
    before, after = loss(untrained), loss(net)
    assert after < 0.7 * before, (before, after)  # measured: 21.4 -> 10.3
    history = result.tensors["history"]
    assert history.shape == (60,) and float(history[-10:].mean()) < float(history[:10].mean())
    assert result.provenance["params"]["steps"] == 60 and net.provenance["method"] == "style_net"


def test_training_uses_the_losses_of_the_optimisation(loss_model) -> None:
    """perceptual_losses (what the net is trained on) reproduces style_transfer's own numbers."""
    content, style = photo(3), stripes()
    result = style_transfer(loss_model, content, style, size=40, steps=3, seed=0)
    c, s = perceptual_losses(loss_model, result.tensors["image"], result.tensors["content"], style)
    torch.testing.assert_close(c, result.tensors["content_loss"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(s, result.tensors["style_loss"], rtol=1e-5, atol=1e-7)


def test_training_is_seeded(loss_model) -> None:
    a, _ = _train(loss_model, steps=3, seed=1)
    b, _ = _train(loss_model, steps=3, seed=1)
    c, _ = _train(loss_model, steps=3, seed=2)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(
        not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values())
    )


def test_bad_training_settings_are_refused(loss_model) -> None:
    with pytest.raises(BadInputError, match="steps"):
        train_style_net(loss_model, stripes(), [photo(0)[0]], steps=0)
    with pytest.raises(BadInputError, match="size"):
        train_style_net(loss_model, stripes(), [photo(0)[0]], size=8)
    with pytest.raises(BadInputError, match="no training images"):
        train_style_net(loss_model, stripes(), [], steps=1)


def test_default_training_set_holds_out_the_evaluation_photos() -> None:
    names = [name for name, _ in training_images()]
    assert names and not any(name == f"sample:{h}" for name in names for h in HELD_OUT)
    assert not any(t in name for name in names for t in ("brick", "grass", "gravel"))


def test_save_load_round_trip_gives_identical_outputs(loss_model, tmp_path: Path) -> None:
    net, _ = _train(loss_model, steps=2)
    path = save_style_net(net, tmp_path / "net.pt")
    loaded = load_style_net(path)
    x = photo(7)
    assert torch.equal(stylize(net, x)["image"], stylize(loaded, x)["image"])
    assert loaded.config == net.config and loaded.provenance == net.provenance
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "kind", ["garbage", "truncated", "pickle_code", "other_dict", "wrong_shapes", "empty"]
)
def test_a_bad_file_is_one_clean_bad_input_error(loss_model, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.pt"
    if kind == "garbage":
        path.write_bytes(b"\x89not a torch file at all" * 10)
    elif kind == "truncated":
        net, _ = _train(loss_model, steps=1)
        save_style_net(net, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "pickle_code":  # weights_only loading must refuse to run code
        torch.save(
            {"format": "convlens-style-net", "x": _Evil()},
            path,
            pickle_protocol=pickle.DEFAULT_PROTOCOL,
        )
    elif kind == "other_dict":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "wrong_shapes":
        torch.save(
            {
                "format": "convlens-style-net",
                "version": 1,
                "config": {"width": 4, "blocks": 1, "skip": True},
                "state_dict": StyleNet(8, 1).state_dict(),
            },
            path,
        )
    else:
        path.write_bytes(b"")
    with pytest.raises(BadInputError) as info:
        load_style_net(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_missing_file_is_a_bad_input_error(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such style-net file"):
        load_style_net(tmp_path / "none.pt")
