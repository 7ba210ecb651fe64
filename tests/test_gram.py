"""convlens.gram.gram_matrix: one Gram matrix, three normalisations, against sums by hand."""

from __future__ import annotations

import pytest
import torch

from convlens import style
from convlens.errors import BadInputError
from convlens.gram import gram_matrix


def _by_hand(f: torch.Tensor) -> torch.Tensor:
    b, c = f.shape[:2]
    flat = f.reshape(b, c, -1)
    out = torch.zeros(b, c, c, dtype=f.dtype)
    for k in range(b):
        for i in range(c):
            for j in range(c):
                out[k, i, j] = sum(flat[k, i, n] * flat[k, j, n] for n in range(flat.shape[2]))
    return out


def test_each_normalisation_divides_the_sum_over_positions() -> None:
    f = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    raw = _by_hand(f)
    torch.testing.assert_close(gram_matrix(f, normalize="none"), raw, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gram_matrix(f, normalize="hw"), raw / 20, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gram_matrix(f), raw / 60, rtol=1e-12, atol=1e-12)  # default C H W


def test_any_spatial_rank_and_a_single_position() -> None:
    g = torch.Generator().manual_seed(1)
    vec = torch.randn(2, 4, dtype=torch.float64, generator=g)  # (B, C): one position
    outer = vec[:, :, None] * vec[:, None, :]
    torch.testing.assert_close(gram_matrix(vec, normalize="hw"), outer)
    torch.testing.assert_close(gram_matrix(vec), outer / 4)
    vol = torch.randn(1, 2, 3, 2, 2, dtype=torch.float64, generator=g)
    torch.testing.assert_close(gram_matrix(vol, normalize="hw"), _by_hand(vol) / 12)


def test_gram_is_symmetric_and_the_style_package_uses_this_function() -> None:
    f = torch.randn(1, 5, 3, 3, generator=torch.Generator().manual_seed(2))
    g = gram_matrix(f)
    torch.testing.assert_close(g, g.transpose(1, 2))
    assert style.gram_matrix is gram_matrix


def test_bad_input_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"\(B, C, H, W\)"):
        gram_matrix(torch.zeros(3))
    with pytest.raises(BadInputError, match="normalize"):
        gram_matrix(torch.zeros(1, 2, 3, 3), normalize="c")  # type: ignore[arg-type]
