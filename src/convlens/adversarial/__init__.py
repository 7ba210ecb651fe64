"""Adversarial attacks and robust accuracy.

White-box (gradients): FGSM, BIM / I-FGSM, PGD (L-inf, L2), Carlini-Wagner L2, DeepFool.
Black-box (scores only, through a query-counting :class:`Oracle` that forbids autograd):
Square Attack, ZOO, one-pixel. Transfer attacks (craft on one model, test on others) and
accuracy-vs-budget curves over a folder. Defences (JPEG, bit depth, noise as model wrappers)
and their honest evaluation under adaptive attacks (BPDA, EOT): :mod:`.defences`,
:mod:`.adaptive`, :mod:`.defence_eval`.

>>> from convlens.adversarial import attack
>>> result = attack(model, ["sample:cat"], "pgd", eps=1 / 255, steps=20)
>>> result["success"], result["linf"] * 255

Each attack is one function registered with :func:`register_attack` (:data:`ATTACKS`
holds their :class:`AttackSpec`); ``attack()``, the CLI and the curve read that registry.

Every attack starts from the 8-bit image at the model's input size and decides success on
the 8-bit adversarial image, inside the budget (DESIGN.md "Round trip").
"""

from convlens.adversarial.adaptive import adaptive_forward, bpda
from convlens.adversarial.attack import BLACK_BOX, METHODS, WHITE_BOX, attack, pixel_forward
from convlens.adversarial.blackbox import one_pixel, square, zoo
from convlens.adversarial.budget import batch_norms, project, quantize_within
from convlens.adversarial.curve import attack_curve, load_labelled
from convlens.adversarial.defence_eval import evaluate_defences
from convlens.adversarial.defences import defend, make_defence
from convlens.adversarial.oracle import Oracle, QueryBudgetExceeded
from convlens.adversarial.registry import ATTACKS, AttackSpec, register_attack
from convlens.adversarial.transfer import transfer_table
from convlens.adversarial.whitebox import bim, carlini_wagner_l2, deepfool, fgsm, pgd

__all__ = [
    "ATTACKS",
    "BLACK_BOX",
    "METHODS",
    "WHITE_BOX",
    "AttackSpec",
    "Oracle",
    "QueryBudgetExceeded",
    "adaptive_forward",
    "attack",
    "attack_curve",
    "batch_norms",
    "bim",
    "bpda",
    "carlini_wagner_l2",
    "deepfool",
    "defend",
    "evaluate_defences",
    "fgsm",
    "load_labelled",
    "make_defence",
    "one_pixel",
    "pgd",
    "pixel_forward",
    "project",
    "quantize_within",
    "register_attack",
    "square",
    "transfer_table",
    "zoo",
]
