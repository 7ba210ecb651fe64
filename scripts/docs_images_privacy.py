"""The pictures of docs/features/privacy.md (a few minutes on one CPU thread).

    python scripts/docs_images_privacy.py                       # everything
    python scripts/docs_images_privacy.py membership backdoor   # only these experiments

Writes docs/images/privacy_*.png and prints the numbers the page quotes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
EXPERIMENTS = ("membership", "inversion", "backdoor")


def membership_images() -> None:
    from convlens.privacy.membership import membership_experiment, overfitting_sweep
    from convlens.render.figures import save_figure
    from convlens.render.privacy import roc_figure, sweep_figure

    results = membership_experiment("digits", seeds=(0, 1, 2))
    save_figure(roc_figure(results), OUT / "privacy_roc.png")
    for r in results:
        p = r.provenance["params"]
        print(
            f"membership {p['recipe']['name']} seed {r.provenance['seed']}: held-out {p['held_out_accuracy']:.3f}, loss {p['loss_threshold']}, shadow {p['shadow']}"
        )
    rows = overfitting_sweep("digits", seed=0)
    save_figure(sweep_figure(rows), OUT / "privacy_sweep.png")
    for row in rows:
        print(
            f"sweep {row['axis']}={row['value']}: train {row['train_accuracy']:.3f} held-out {row['held_out_accuracy']:.3f} loss AUC {row['loss_threshold']['auc']:.3f} shadow AUC {row['shadow']['auc']:.3f}"
        )


def inversion_images() -> None:
    from convlens.privacy.inversion import inversion_experiment
    from convlens.render.figures import save_figure
    from convlens.render.privacy import reconstructions_figure

    for dataset in ("digits", "mnist"):
        result = inversion_experiment(dataset, seed=0)
        save_figure(reconstructions_figure(result), OUT / f"privacy_inversion_{dataset}.png")
        p = result.provenance["params"]
        print(
            f"inversion {dataset}: judge {p['judge_held_out_accuracy']:.3f}; white {p['white_box']}; black {p['black_box']}"
        )


def backdoor_images() -> None:
    from convlens.privacy.backdoor import backdoor_experiment
    from convlens.render.figures import save_figure
    from convlens.render.privacy import backdoor_figure

    for dataset in ("digits", "mnist"):
        result = backdoor_experiment(dataset, seed=0)
        save_figure(backdoor_figure(result), OUT / f"privacy_backdoor_{dataset}.png")
        p = result.provenance["params"]
        ac = {k: v for k, v in p["activation_clustering"].items() if k != "per_label"}
        print(
            f"backdoor {dataset}: clean {p['clean_model_accuracy']:.4f} poisoned {p['backdoored_accuracy']:.4f} success {p['attack_success']:.4f} AC {ac} SS {p['spectral_signatures']} NC {p['neural_cleanse']}"
        )


def main(argv: list[str] | None = None) -> None:
    """Write the privacy pictures into docs/images/ (all, or the experiments named)."""
    wanted = list(argv if argv is not None else sys.argv[1:]) or list(EXPERIMENTS)
    unknown = [w for w in wanted if w not in EXPERIMENTS]
    if unknown:
        sys.exit(f"unknown experiment {unknown[0]!r}; choose from {', '.join(EXPERIMENTS)}")
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        {
            "membership": membership_images,
            "inversion": inversion_images,
            "backdoor": backdoor_images,
        }[name]()


if __name__ == "__main__":
    main()
