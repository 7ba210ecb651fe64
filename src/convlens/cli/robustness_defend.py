"""``convlens robustness defend DIR --defence jpeg,bits,noise,pgd-trained``: defences evaluated honestly.

A subcommand of the ``robustness`` group (see :mod:`convlens.cli.cmd_robustness`). For each
defence it prints clean accuracy, accuracy under PGD crafted on the undefended model
(transfer), under PGD with the defended system's own gradients (non-adaptive), and under
the adaptive attack (BPDA / EOT; white-box PGD for an adversarially trained model), and how
much of the apparent gain disappears (:func:`convlens.adversarial.defence_eval.evaluate_defences`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from typing_extensions import NotRequired, TypedDict

from convlens.atomic import atomic_write_text
from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.errors import BadInputError

NAME: Final = "defend"
#: what ``--defence`` accepts
CHOICES = ("jpeg", "bits", "noise", "pgd-trained")


class Defence(TypedDict):
    name: Annotated[str, "none (the undefended model), jpegQ, bitsB, noiseS or pgd-trained"]
    clean: float
    transfer: Annotated[float, "accuracy under PGD crafted on the undefended model"]
    non_adaptive: Annotated[float, "under PGD with the defended system's own gradients"]
    adaptive: Annotated[
        float, "under PGD with BPDA / EOT gradients (white-box PGD for pgd-trained)"
    ]
    apparent_gain: Annotated[
        float, "non_adaptive minus the undefended model's accuracy under attack"
    ]
    real_gain: Annotated[float, "adaptive minus the undefended model's accuracy under attack"]
    gain_lost: Annotated[
        float | None, "1 - real_gain / apparent_gain; null when there is no apparent gain"
    ]


class DefendOutput(TypedDict):
    model: str
    subcommand: Literal["defend"]
    source: str
    images: int
    norm: Literal["inf"]
    eps: float
    steps: int
    eot_samples: int
    robust_model: NotRequired[str | None]
    defences: Annotated[
        list[Defence], "the undefended model first, then each defence in the order given"
    ]
    files: Annotated[
        dict[str, Any], "plot (defences.png), table (defences.csv), result (defences.npz)"
    ]
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(DefendOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        NAME,
        parents=[common],
        help="defences (JPEG, bit depth, noise, PGD training) under non-adaptive and adaptive attacks: table + plot",
        description="Evaluate defences on a labelled folder (class subfolders or a path,label CSV): clean accuracy, accuracy under L-inf PGD crafted on the undefended model (transfer), under PGD with the defended system's own gradients (non-adaptive: zero through bit depth, none through JPEG, one draw of noise), and under the adaptive attack (BPDA: identity backward through the transform; EOT: average over noise draws; Athalye et al. 2018). Prints how much of each defence's apparent gain disappears and saves a plot (defences.png), a table (defences.csv) and the raw result. pgd-trained compares with the model's adversarially trained counterpart (digits_cnn -> digits_cnn_pgd).",
    )
    p.add_argument(
        "folder",
        metavar="DIR",
        help="labelled folder (class subfolders named by index, wnid or label) or a path,label CSV",
    )
    p.add_argument(
        "--defence",
        "--defense",
        dest="defence",
        default="jpeg,bits,noise,pgd-trained",
        help="comma-separated: jpeg, bits, noise, pgd-trained (default all four; pgd-trained needs a model with a trained counterpart)",
    )
    p.add_argument(
        "--eps",
        default="0.2",
        help="L-inf budget in pixel units, fractions allowed (default 0.2, for 8x8 digits; try 4/255 for photos)",
    )
    p.add_argument(
        "--steps", type=int, default=20, help="PGD iterations of every attack (default 20)"
    )
    p.add_argument(
        "--eot",
        type=int,
        default=8,
        help="noise draws per gradient step of the EOT attack (default 8)",
    )
    p.add_argument("--quality", type=int, default=75, help="JPEG quality 1-95 (default 75)")
    p.add_argument(
        "--bits",
        type=int,
        default=1,
        help="bits per channel of bit-depth reduction, 1-8 (default 1, Xu et al.'s setting for MNIST)",
    )
    p.add_argument(
        "--sigma",
        type=float,
        default=0.2,
        help="standard deviation of the random Gaussian noise, pixel units (default 0.2)",
    )
    p.add_argument("--batch-size", type=int, default=128, help="images per batch (default 128)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output folder (default defend/): defences.png, defences.csv, defences.npz/.json",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.adversarial.curve import load_labelled
    from convlens.adversarial.defence_eval import evaluate_defences
    from convlens.adversarial.defences import make_defence
    from convlens.cli.robustness_curve import _eps_text
    from convlens.cli.validators import fraction
    from convlens.models.adversarial_training import ROBUST_COUNTERPARTS
    from convlens.models.zoo import load_model
    from convlens.render.defences import defences_figure
    from convlens.render.figures import save_figure

    args = ctx.args
    chosen = [d.strip().lower() for d in args.defence.split(",") if d.strip()]
    unknown = [d for d in chosen if d not in CHOICES]
    if not chosen or unknown:
        raise BadInputError(f"--defence {args.defence!r}: choose from {', '.join(CHOICES)}")
    eps = fraction(args.eps, "--eps")
    if eps <= 0:
        raise BadInputError(f"--eps {args.eps}: must be > 0")
    for flag, value in (
        ("--steps", args.steps),
        ("--eot", args.eot),
        ("--batch-size", args.batch_size),
        ("--limit", args.limit if args.limit is not None else 1),
    ):
        if value < 1:
            raise BadInputError(f"{flag} {value}: must be >= 1")
    settings = {
        "jpeg": {"quality": args.quality},
        "bits": {"bits": args.bits},
        "noise": {"sigma": args.sigma},
    }
    defences = [
        make_defence(d, **settings[d]) for d in chosen if d != "pgd-trained"
    ]  # bad settings refused here
    model = ctx.model(class_scores=True)
    robust = None
    if "pgd-trained" in chosen:
        if model.name not in ROBUST_COUNTERPARTS:
            known = ", ".join(f"{a} -> {b}" for a, b in ROBUST_COUNTERPARTS.items())
            raise BadInputError(
                f"--defence pgd-trained: model {model.name!r} has no adversarially trained counterpart (built in: {known}); drop pgd-trained"
            )
        with ctx.progress(
            f"loading {ROBUST_COUNTERPARTS[model.name]} (trained on first use)"
        ) as update:
            robust = load_model(ROBUST_COUNTERPARTS[model.name], device=ctx.device, progress=update)
    pixels, labels, sources = load_labelled(model, args.folder, limit=args.limit)
    out = ctx.out_path("defend", folder=True)
    rows = 1 + len(defences) + (robust is not None)
    with ctx.progress("defences", rows) as update:
        result = evaluate_defences(
            model,
            pixels,
            labels,
            defences,
            robust_model=robust,
            eps=eps,
            steps=args.steps,
            eot_samples=args.eot,
            seed=args.seed or 0,
            batch_size=args.batch_size,
            progress=update,
        )
    result.sources = sources
    files = {
        "plot": str(out / "defences.png"),
        "table": str(out / "defences.csv"),
        "result": str(out / "defences.npz"),
    }
    save_figure(defences_figure(result), files["plot"])
    result.save(out / "defences")
    table = _rows(result)
    atomic_write_text(Path(files["table"]), _csv(table), newline="")
    params = result.params
    payload: DefendOutput = {
        "model": model.name,
        "subcommand": NAME,
        "source": args.folder,
        "images": params["images"],
        "norm": "inf",
        "eps": eps,
        "steps": args.steps,
        "eot_samples": args.eot,
        "robust_model": params["robust_model"],
        "defences": table,
        "files": files,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
        return ctx.exit_code()
    print(
        f"accuracy of {model.name} on {params['images']} images of {args.folder}: L-inf PGD eps {_eps_text(eps)}, {args.steps} steps, EOT {args.eot} draws"
    )
    head = [
        "defence",
        "clean",
        "transfer",
        "non-adaptive",
        "adaptive",
        "apparent gain",
        "real gain",
        "gain lost",
    ]
    body = [
        [
            r["name"],
            *[f"{r[k]:.1%}" for k in ("clean", "transfer", "non_adaptive", "adaptive")],
            f"{r['apparent_gain']:+.1%}",
            f"{r['real_gain']:+.1%}",
            "-" if r["gain_lost"] is None else f"{r['gain_lost']:.0%}",
        ]
        for r in table
    ]
    widths = [max(len(line[j]) for line in [head, *body]) for j in range(len(head))]
    for line in [head, *body]:
        print(
            "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))
            )
        )
    print(
        "non-adaptive: PGD with the defended system's own gradients; adaptive: BPDA / EOT (white-box PGD for pgd-trained)"
    )
    print(f"-> {out}")
    return ctx.exit_code()


def _rows(result: Any) -> list[Defence]:
    params = result.params
    accuracy = result.tensors["accuracy"]
    return [
        {
            "name": name,
            "clean": round(float(accuracy[i, 0]), 4),
            "transfer": round(float(accuracy[i, 1]), 4),
            "non_adaptive": round(float(accuracy[i, 2]), 4),
            "adaptive": round(float(accuracy[i, 3]), 4),
            "apparent_gain": params["apparent_gain"][i],
            "real_gain": params["real_gain"][i],
            "gain_lost": params["gain_lost"][i],
        }
        for i, name in enumerate(params["defences"])
    ]


def _csv(rows: Sequence[Mapping[str, object]]) -> str:
    keys = [
        "name",
        "clean",
        "transfer",
        "non_adaptive",
        "adaptive",
        "apparent_gain",
        "real_gain",
        "gain_lost",
    ]
    lines = [",".join(keys)] + [
        ",".join("" if r[k] is None else str(r[k]) for k in keys) for r in rows
    ]
    return "\n".join(lines) + "\n"
