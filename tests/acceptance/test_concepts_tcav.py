"""TCAV finds the planted shortcut of the biased digits model (pytest -m acceptance).

``bias_digits_cnn`` learned that the background colour gives the class away (95 % of its
training images); ``fair_digits_cnn`` is the same net trained where the background is
random. The concept "background of class c's colour" (digits of every class on that
colour, from the unbiased split) against random sets (digits on other colours) must score
near 1 and significantly for class c on the biased model, and not significantly on the
fair one.
"""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.attribution.base import default_cam_layer
from convlens.data.biased import BiasedSet, make_biased
from convlens.represent.tcav import TCAVResult, tcav

pytestmark = pytest.mark.acceptance

CLASS = 3


def _run(name: str, unbiased: BiasedSet, test: BiasedSet) -> TCAVResult:
    model = convlens.load_model(name)
    images = model.normalize(test.pixels[test.labels == CLASS][:30])
    concept = model.normalize(unbiased.pixels[unbiased.backgrounds == CLASS][:30])
    pool = unbiased.pixels[unbiased.backgrounds != CLASS]
    g = torch.Generator().manual_seed(0)
    randoms = [
        model.normalize(pool[torch.randperm(len(pool), generator=g)[:30]]) for _ in range(10)
    ]
    return tcav(model, images, CLASS, default_cam_layer(model), concept, randoms)


def test_the_background_concept_drives_the_biased_model_only() -> None:
    unbiased, test = make_biased("unbiased"), make_biased("test")
    biased, fair = _run("bias_digits_cnn", unbiased, test), _run("fair_digits_cnn", unbiased, test)
    assert biased.mean >= 0.9 and biased.significant and biased.p_value < 1e-3
    assert not fair.significant
    assert biased.mean >= fair.mean + 0.3
