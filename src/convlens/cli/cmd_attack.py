"""``convlens attack IMAGE...|DIR --method M --eps E [--norm inf|2] [--target CLASS] [--steps N] -o OUT/``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import ClassRef, ClassScore, Files
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least, fraction, fraction_list
from convlens.errors import BadInputError


class Image(TypedDict):
    source: str
    success: Annotated[bool, "decided on the saved 8-bit image"]
    before: list[ClassScore]
    after: list[ClassScore]
    linf: float
    linf_255: NotRequired[float]
    l2: float
    queries: Annotated[int, "model queries (black-box methods; 0 for white-box)"]
    files: Files


class AttackOutput(TypedDict):
    model: str
    method: str
    norm: Literal["inf", "2", "0"]
    eps: Annotated[
        float | None,
        "budget in pixel units; null for methods without one (cw, deepfool, one-pixel)",
    ]
    eps_255: NotRequired[float | None]
    steps: int
    targeted: bool
    target: NotRequired[Annotated[ClassRef | None, "the class a targeted attack aims at"]]
    images: list[Image]
    success_rate: float
    out: str
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(AttackOutput)


def parse_eps(text: str, *, flag: str = "--eps") -> float:
    """``"4/255"`` -> 0.01568..., ``"0.03"`` -> 0.03; must be in [0, 1]."""
    return fraction(text, flag)


def parse_eps_list(text: str, *, flag: str = "--eps") -> list[float]:
    """``"0,1/255,2/255"`` -> increasing budgets."""
    return fraction_list(text, flag)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from convlens.adversarial.registry import ATTACKS, attack_names

    white, black = attack_names("white"), attack_names("black")
    budget = {
        b: ", ".join(n for n in white + black if ATTACKS[n].budget == b)
        for b in ("required", "optional", "none")
    }
    steps = "; ".join(
        f"{n} {ATTACKS[n].steps} {ATTACKS[n].steps_means}"
        for n in white + black
        if ATTACKS[n].steps_param is not None
    )
    p = sub.add_parser(
        "attack",
        parents=[common],
        help=f"adversarial examples: white-box ({', '.join(white)}) and black-box ({', '.join(black)})",
        description="Attack images with a white-box or black-box method. Budgets are in pixel units at the model's input size (4/255 allowed); black-box methods see only the model's probabilities and report their query counts. Success is decided on the 8-bit adversarial image saved at the model's resolution, so `convlens predict` on it agrees. An attack that fails to fool still exits 0 (success: false).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file, folder, or sample:NAME")
    p.add_argument("--method", default="pgd", choices=white + black, help="attack (default pgd)")
    p.add_argument(
        "--eps",
        default=None,
        help=f"budget in pixel units, e.g. 4/255 (default 4/255 for {budget['required']}; optional for {budget['optional']}; none for {budget['none']})",
    )
    p.add_argument(
        "--norm",
        choices=sorted({n for s in ATTACKS.values() for n in s.norms} - {"0"}, reverse=True),
        default=None,
        help="budget norm (default: the method's own: "
        + ", ".join(f"{n} L{ATTACKS[n].norms[0].replace('inf', '-inf')}" for n in white + black)
        + ")",
    )
    p.add_argument(
        "--target",
        default=None,
        help="class index, label or wnid for a targeted attack (default untargeted: away from the predicted class)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"what each method counts, and its default: {steps}",
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, e.g. --opt alpha=0.004 for pgd (repeatable; the valid keys are the method's own, listed when a wrong one is given)",
    )
    p.add_argument(
        "--top-k", type=int, default=3, help="classes shown before and after (default 3)"
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output folder (default attack/): per image NAME-adversarial.png, NAME-perturbation.png, NAME-attack.png; attack.npz/.json",
    )
    p.set_defaults(func=run)


def _stems(sources: list[str]) -> list[str]:
    """File-name stems for outputs, unique and safe."""
    stems: list[str] = []
    for source in sources:
        stem = (
            re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source.removeprefix("sample:")).stem) or "image"
        )
        stems.append(stem)
    if len(set(stems)) < len(stems):
        stems = [f"{i:03d}-{s}" for i, s in enumerate(stems)]
    return stems


def run(ctx: Context) -> int:
    from convlens.adversarial.attack import attack
    from convlens.cli.images import iter_images
    from convlens.data.images import save_image
    from convlens.render.adversarial import attack_figure
    from convlens.render.figures import save_figure
    from convlens.render.optimize import amplified_difference
    from convlens.targets import resolve_target

    args = ctx.args
    eps = None if args.eps is None else parse_eps(args.eps)
    if args.steps is not None and args.steps < 1:
        raise BadInputError(f"--steps {args.steps}: must be >= 1")
    at_least(args.top_k, 1, "--top-k")
    from convlens.adversarial.attack import _method_settings
    from convlens.adversarial.registry import check_attack_options, get_attack
    from convlens.cli.cmd_explain import parse_options

    options = parse_options(args.opt)
    check_attack_options(get_attack(args.method), options, flag="--opt")
    # bad combinations fail before any work
    _method_settings(
        args.method, eps, args.norm, args.steps, targeted=args.target is not None, options=options
    )
    model = ctx.model(class_scores=True)
    target = None
    if args.target is not None:
        resolve_target(model, args.target)
        target = args.target
    loaded = list(iter_images(ctx, args.images, "reading images"))
    if not loaded:
        return ctx.exit_code() or 2
    out = ctx.out_path("attack", folder=True)
    with ctx.progress(f"{args.method} attack", None) as update:
        result = attack(
            model,
            [item.image for item in loaded],
            args.method,
            eps=eps,
            norm=args.norm,
            target=target,
            steps=args.steps,
            seed=args.seed or 0,
            progress=update,
            top_k=args.top_k,
            **options,
        )
    sources = [item.source for item in loaded]
    result.sources = sources
    t, params = result.tensors, result.params

    def top(classes: Any, probs: Any) -> list[dict[str, Any]]:
        return [
            {
                "class": int(c),
                "label": model.labels.name(int(c)) if model.labels else str(int(c)),
                "probability": round(float(p), 6),
            }
            for c, p in zip(classes.tolist(), probs.tolist())
        ]

    rows: list[dict[str, Any]] = []
    for i, stem in enumerate(_stems(sources)):
        files = {
            "adversarial": str(out / f"{stem}-adversarial.png"),
            "perturbation": str(out / f"{stem}-perturbation.png"),
            "figure": str(out / f"{stem}-attack.png"),
        }
        # the 8-bit image at model resolution: `convlens predict` on it gives "after"
        save_image(t["adversarial"][i], files["adversarial"])
        save_image(amplified_difference(t["perturbation"][i]), files["perturbation"])
        save_figure(
            attack_figure(result, i, labels=model.labels, top_k=args.top_k), files["figure"]
        )
        rows.append(
            {
                "source": sources[i],
                "success": bool(t["success"][i]),
                "before": top(t["top_classes_before"][i], t["top_probs_before"][i]),
                "after": top(t["top_classes_after"][i], t["top_probs_after"][i]),
                "linf": float(t["linf"][i]),
                "linf_255": round(float(t["linf"][i]) * 255, 3),
                "l2": float(t["l2"][i]),
                "queries": int(t["queries"][i]),
                "files": files,
            }
        )
    result.save(out / "attack")
    goal = None
    if params["targeted"]:
        cls = int(t["labels"][0])
        goal = {"class": cls, "label": model.labels.name(cls) if model.labels else str(cls)}
    payload = {
        "model": model.name,
        "method": params["method"],
        "norm": params["norm"],
        "eps": params["eps"],
        "eps_255": None if params["eps"] is None else round(params["eps"] * 255, 3),
        "steps": params["steps"],
        "targeted": params["targeted"],
        "target": goal,
        "images": rows,
        "success_rate": params["success_rate"],
        "out": str(out),
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        for row in rows:
            b, a = row["before"][0], row["after"][0]
            verdict = "fooled" if row["success"] else "NOT fooled"
            queries = f", {row['queries']} queries" if params["black_box"] else ""
            print(
                f"{row['source']}: {b['label']} {b['probability']:.0%} -> {a['label']} {a['probability']:.0%}, {verdict}; L-inf {row['linf_255']:.1f}/255, L2 {row['l2']:.3f}{queries}"
            )
        print(f"{params['method']}: {params['success_rate']:.0%} fooled -> {out}")
    return ctx.exit_code()
