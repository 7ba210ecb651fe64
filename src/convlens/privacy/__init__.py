"""Attacks on training data and the supply chain, and their detection.

- :mod:`~convlens.privacy.membership`: was this example in the training set? Loss-threshold
  (Yeom 2018) and shadow-model (Shokri 2017) attacks; accuracy, ROC AUC, TPR at 1 % FPR.
- :mod:`~convlens.privacy.inversion`: a representative input per class from the classifier
  alone (Fredrikson 2015), white-box and with a query budget, through the attacks'
  :class:`~convlens.adversarial.oracle.Oracle` (:func:`ModelOracle` builds one).
- :mod:`~convlens.privacy.backdoor`: BadNets poisoning (Gu 2017), clean accuracy and attack
  success.
- :mod:`~convlens.privacy.detect`: activation clustering (Chen 2018), spectral signatures
  (Tran 2018) and Neural Cleanse (Wang 2019).

The experiments train their own small digit models (seconds each on a CPU) through
:func:`convlens.models.training.train_classifier`.
"""

from convlens.privacy.backdoor import (
    FEATURE_LAYER,
    Trigger,
    attack_success,
    backdoor_experiment,
    default_trigger,
    poison,
)
from convlens.privacy.detect import (
    activation_clustering,
    anomaly_index,
    detection_metrics,
    mask_iou,
    neural_cleanse,
    spectral_signatures,
)
from convlens.privacy.inversion import (
    ModelOracle,
    QueryBudgetError,
    inversion_experiment,
    invert_black_box,
    invert_white_box,
)
from convlens.privacy.membership import (
    OVERFIT,
    REGULARISED,
    ShadowAttack,
    TargetRecipe,
    attack_metrics,
    loss_threshold_scores,
    membership_experiment,
    membership_inference,
    overfitting_sweep,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)

__all__ = [
    "FEATURE_LAYER",
    "OVERFIT",
    "REGULARISED",
    "ModelOracle",
    "QueryBudgetError",
    "ShadowAttack",
    "TargetRecipe",
    "Trigger",
    "activation_clustering",
    "anomaly_index",
    "attack_metrics",
    "attack_success",
    "backdoor_experiment",
    "default_trigger",
    "detection_metrics",
    "inversion_experiment",
    "invert_black_box",
    "invert_white_box",
    "loss_threshold_scores",
    "mask_iou",
    "membership_experiment",
    "membership_inference",
    "neural_cleanse",
    "overfitting_sweep",
    "poison",
    "roc_auc",
    "roc_curve",
    "spectral_signatures",
    "tpr_at_fpr",
]
