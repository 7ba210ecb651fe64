"""Representations at dataset scale: features (codes at a layer), embeddings, nearest
neighbours and maximal patches.

>>> from convlens.represent import extract_features, load_features
>>> extract_features(model, "pets/", "blocks.15", "pets-features/")
>>> features = load_features("pets-features/")
"""

from convlens.represent.embed import EMBED_METHODS, Embedding, embed
from convlens.represent.features import (
    Features,
    code_size,
    extract_features,
    layer_code,
    layer_shape,
    load_features,
)
from convlens.represent.neighbors import (
    AnnIndex,
    Neighbors,
    build_index,
    exact_neighbors,
    load_index,
    query_codes,
    recall_at_k,
    search,
)
from convlens.represent.patches import field_box, merge_top_k, top_patches

__all__ = [
    "EMBED_METHODS",
    "AnnIndex",
    "Embedding",
    "Features",
    "Neighbors",
    "build_index",
    "code_size",
    "embed",
    "exact_neighbors",
    "extract_features",
    "field_box",
    "layer_code",
    "layer_shape",
    "load_features",
    "load_index",
    "merge_top_k",
    "query_codes",
    "recall_at_k",
    "search",
    "top_patches",
]
