"""2-D and 3-D maps of a collection's codes: PCA, t-SNE and UMAP.

The course's "t-SNE of the classifier's code" (Karpathy's CNN-codes map; CS231n): each
image's feature vector is placed in the plane so that images the network codes alike land
close together.

- **PCA**: projection on the two (or three) leading principal axes of the centred codes,
  ``Y = (X - mean) V[:, :k]`` with ``X - mean = U S V^T`` (Pearson 1901).
- **t-SNE** (van der Maaten & Hinton 2008, JMLR 9): minimise ``KL(P || Q)`` between
  Gaussian affinities ``p_ij`` of the codes (perplexity-calibrated) and Student-t
  affinities ``q_ij ∝ (1 + |y_i - y_j|^2)^-1`` of the map. The codes are first reduced to
  at most 50 principal components (the usual practice: it removes noise and makes the
  affinities cheaper), then scikit-learn's Barnes-Hut t-SNE runs from a PCA start.
- **UMAP** (McInnes, Healy & Melville 2018, arXiv:1802.03426): a fuzzy k-NN graph laid
  out by stochastic gradient descent (umap-learn, the optional extra ``represent``).

All are seeded: the same codes and seed give the same map. ``dims=3`` asks each method for
three components (``n_components=3``) instead of two: a map to rotate.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convlens.errors import BadInputError, MissingDependencyError

__all__ = ["EMBED_DIMS", "EMBED_METHODS", "Embedding", "embed"]

EMBED_METHODS = ("tsne", "pca", "umap")
EMBED_DIMS = (2, 3)


@dataclass
class Embedding:
    """2-D or 3-D coordinates of a collection, with what made them.

    Attributes
    ----------
    coords
        ``(N, 2)`` or ``(N, 3)`` float32.
    paths, labels, predictions
        Per point, from the features (``labels`` -1 where unlabelled).
    method
        ``"tsne"``, ``"pca"`` or ``"umap"``.
    provenance
        Method, parameters, seed, and the features' provenance (``"features"``).
    """

    coords: np.ndarray
    paths: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    method: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def _repr_png_(self) -> bytes:
        """Jupyter's picture: the map coloured by label (:func:`~convlens.render.embedding.embedding_figure`)."""
        from convlens.render.embedding import embedding_figure
        from convlens.render.figures import figure_to_png_bytes

        return figure_to_png_bytes(embedding_figure(self))


def _pca(x: np.ndarray, n: int) -> np.ndarray:
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    # A sign convention (largest |loading| positive per axis) so the map does not flip
    # between runs or machines.
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
    vt = vt * np.where(signs == 0, 1, signs)[:, None]
    return centred @ vt[:n].T


def embed(
    features: Any,
    method: str = "tsne",
    *,
    seed: int = 0,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    pca_dims: int = 50,
    dims: int = 2,
) -> Embedding:
    """Map a collection's codes to 2-D (or 3-D).

    Parameters
    ----------
    features
        A ``Features`` (``codes`` ``(N, D)``, ``paths``, ``labels``, ``predictions``,
        ``provenance``), e.g. from ``load_features(OUT)``.
    method
        ``"tsne"`` (default), ``"pca"`` or ``"umap"``.
    seed
        Random seed (t-SNE, UMAP).
    perplexity
        t-SNE perplexity; lowered to ``(N - 1) / 3`` for small collections.
    n_neighbors
        UMAP neighbourhood size; lowered to ``N - 1`` for small collections.
    pca_dims
        t-SNE: codes are reduced to this many principal components first.
    dims
        2 (default) or 3: the number of map coordinates (``n_components``).

    Returns
    -------
    Embedding

    Raises
    ------
    BadInputError
        Unknown method, ``dims`` not 2 or 3, fewer than 3 codes, or non-finite codes.
    MissingDependencyError
        ``umap`` without umap-learn installed.
    """
    if method not in EMBED_METHODS:
        raise BadInputError(f"method {method!r}: choose one of {', '.join(EMBED_METHODS)}")
    if dims not in EMBED_DIMS:
        raise BadInputError(f"dims {dims!r}: a map has 2 or 3 dimensions")
    codes = np.asarray(features.codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] < 3:
        raise BadInputError(
            f"an embedding needs at least 3 codes in an (N, D) array, got shape {codes.shape}"
        )
    if not np.isfinite(codes).all():
        raise BadInputError("the codes hold NaN or infinite values")
    n = codes.shape[0]
    started = time.perf_counter()
    params: dict[str, Any] = {"n": n, "dim": int(codes.shape[1]), "dims": dims}
    if method == "pca":
        coords = _pca(codes, dims)
        if coords.shape[1] < dims:  # codes of fewer dimensions than the map: flat along the rest
            coords = np.concatenate([coords, np.zeros((n, dims - coords.shape[1]))], axis=1)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        reduced = (
            _pca(codes, min(pca_dims, codes.shape[1], n)) if codes.shape[1] > pca_dims else codes
        )
        perp = float(min(perplexity, max(1.0, (n - 1) / 3)))
        tsne = TSNE(
            n_components=dims,
            perplexity=perp,
            init="pca" if reduced.shape[1] >= dims else "random",
            learning_rate="auto",
            random_state=seed,
            method="barnes_hut" if n > 200 else "exact",
        )
        coords = tsne.fit_transform(reduced)
        params.update(
            perplexity=perp,
            pca_dims=int(reduced.shape[1]),
            kl_divergence=float(tsne.kl_divergence_),
        )
    else:
        try:
            with warnings.catch_warnings():
                # umap warns at import when TensorFlow (ParametricUMAP) is absent: irrelevant here
                warnings.simplefilter("ignore", ImportWarning)
                import umap
        except ImportError:
            raise MissingDependencyError(
                "--method umap needs umap-learn; pip install 'convlens[represent]'"
            ) from None
        nn = int(min(n_neighbors, n - 1))
        reducer = umap.UMAP(
            n_components=dims,
            n_neighbors=nn,
            random_state=seed,
            n_jobs=1,
            init="spectral" if n > nn + 2 else "random",
        )
        with warnings.catch_warnings():
            # Separate clusters make a disconnected k-NN graph; umap lays each component out
            # on its own, which is what a map of distinct classes should show.
            warnings.filterwarnings("ignore", message="Graph is not fully connected")
            coords = reducer.fit_transform(codes.astype(np.float32))
        params.update(n_neighbors=nn)
    params["seconds"] = time.perf_counter() - started
    provenance = {
        "method": f"embed_{method}",
        "params": params,
        "seed": seed,
        "features": dict(getattr(features, "provenance", {}) or {}),
    }
    return Embedding(
        coords=np.asarray(coords, dtype=np.float32),
        paths=list(features.paths),
        labels=np.asarray(features.labels, dtype=np.int64),
        predictions=np.asarray(features.predictions, dtype=np.int64),
        method=method,
        provenance=provenance,
    )
