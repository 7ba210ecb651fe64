"""Faithfulness and localisation metrics for attribution maps, and the baselines to beat.

- :func:`deletion_auc`, :func:`insertion_auc` (Petsiuk, Das & Saenko 2018, arXiv:1806.07421);
- :func:`parameter_randomisation`, the cascading model-parameter randomisation sanity
  check (Adebayo et al. 2018, arXiv:1810.03292);
- :func:`faithfulness_ranking`: methods' maps of one image ranked by insertion - deletion;
- :func:`pointing_game` (Zhang et al. 2016/2018, arXiv:1608.00507);
- :func:`outside_share` and :func:`bias_check`: attribution mass outside the object and
  counter-cue accuracy, for dataset bias (the wolf/snow example);
- :func:`method_maps`: any method's ``(N, H, W)`` maps in chunks, ready for the above;
- baselines every method is compared with: :func:`random_map`,
  :func:`centre_gaussian_map`, :func:`sobel_edge_map` (all three: :func:`baseline_maps`).

Maps are ``(N, H, W)`` over the model input, as ``explain(...).tensors["map"]``.
"""

from convlens.metrics.baselines import (
    baseline_maps,
    centre_gaussian_map,
    random_map,
    sobel_edge_map,
)
from convlens.metrics.bias import BiasReport, SplitReport, bias_check, outside_share
from convlens.metrics.deletion import deletion_auc, insertion_auc
from convlens.metrics.localisation import pointing_game
from convlens.metrics.ranking import FaithfulnessRow, faithfulness_ranking
from convlens.metrics.sanity import (
    method_maps,
    parameter_randomisation,
    randomisation_groups,
    spearman_rows,
)

__all__ = [
    "BiasReport",
    "FaithfulnessRow",
    "SplitReport",
    "baseline_maps",
    "bias_check",
    "centre_gaussian_map",
    "deletion_auc",
    "faithfulness_ranking",
    "insertion_auc",
    "method_maps",
    "outside_share",
    "parameter_randomisation",
    "pointing_game",
    "random_map",
    "randomisation_groups",
    "sobel_edge_map",
    "spearman_rows",
]
