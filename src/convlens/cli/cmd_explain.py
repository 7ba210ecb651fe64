"""``convlens explain IMAGE...|DIR --method NAME|all [--target T] [--layer L] -o OUT [--raw out.npy]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.images import expand_image_args, iter_images
from convlens.cli.schema import json_schema
from convlens.cli.targets import add_target_options, parse_target_options
from convlens.errors import BadInputError

if TYPE_CHECKING:
    from convlens.models.model import Model


class Result(TypedDict):
    model: str
    method: str
    target: dict[str, Any]
    layer: NotRequired[str | None]
    seconds: float
    map_min: float
    map_max: float


class Image(TypedDict):
    source: str
    out: str
    results: list[Result]


class ExplainOutput(TypedDict):
    models: list[str]
    methods: list[str]
    images: list[Image]
    raw: NotRequired[str | None]
    dataset: NotRequired[dict[str, Any] | None]
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(ExplainOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "explain",
        parents=[common],
        help="attribution maps: which pixels drove the decision",
        description="Explain the model's decision with an attribution method (saliency, guided_backprop, gradcam, integrated_gradients, ...; `--method all` for a grid of every method). A folder runs through the resumable dataset runner and writes sharded maps.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file, folder or sample:NAME")
    p.add_argument(
        "--method",
        default="saliency",
        help="method name, a comma-separated list, or 'all' (default saliency)",
    )
    p.add_argument(
        "--target",
        default=None,
        help="class index, label or wnid, or a neuron layer:channel[:y:x] (default: predicted class)",
    )
    add_target_options(p)
    p.add_argument(
        "--layer", default=None, help="layer for CAM methods (default: the last spatial layer)"
    )
    p.add_argument(
        "--reduce",
        choices=["max_abs", "sum", "abs_sum", "l2", "none"],
        default=None,
        help="channel reduction of the display map (default: the method's)",
    )
    p.add_argument(
        "--sign",
        choices=["positive", "absolute", "negative", "all"],
        default=None,
        help="which part of the map the picture shows: positive (evidence for the target), negative, absolute, or all on a diverging colormap centred on 0 (default: the method's; see docs/features/display.md)",
    )
    p.add_argument(
        "--clip",
        type=float,
        default=99.0,
        metavar="PERCENTILE",
        help="percentile of the shown magnitude drawn at full colour; higher values saturate (default 99)",
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, e.g. --opt n_steps=32 (repeatable)",
    )
    p.add_argument(
        "--raw",
        default=None,
        metavar="FILE.npy",
        help="also save the raw attributions (input space, N x C x H x W) as .npy",
    )
    p.add_argument(
        "--top-k", type=int, default=3, help="predicted classes shown in the picture (default 3)"
    )
    p.add_argument(
        "--batch-size", type=int, default=8, help="images per batch for folders (default 8)"
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="picture file for one image (default explain.png); a folder for several images or a dataset",
    )
    p.set_defaults(func=run)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["n_steps=32", "baseline=blur"]`` -> ``{"n_steps": 32, "baseline": "blur"}``."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise BadInputError(f"--opt {pair!r}: expected KEY=VALUE, e.g. --opt n_steps=32")
        for cast in (int, float):
            try:
                options[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            options[key] = {"true": True, "false": False, "none": None}.get(value.lower(), value)
    return options


#: parameters of a method that are its call shape or that the command sets itself
#: (--layer, --seed, the progress bar), never ``--opt`` keys
_SET_BY_COMMAND = frozenset({"model", "x", "target", "layer", "generator", "progress"})


def method_options(method: str, options: dict[str, Any] | None = None) -> list[str]:
    """The ``--opt`` keys ``method`` takes: its keyword parameters, less those the command
    sets; a wrapper that forwards ``**options`` to its ``base_method`` (SmoothGrad) also
    takes that method's (the one chosen in ``options``, else its default)."""
    import inspect

    from convlens.attribution import METHODS

    params = inspect.signature(METHODS[method].fn).parameters
    names = {
        n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    } - _SET_BY_COMMAND
    forwards = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if forwards and "base_method" in params:
        base = (options or {}).get("base_method", params["base_method"].default)
        if isinstance(base, str) and base in METHODS and base != method:
            names |= set(method_options(base))
    return sorted(names)


def check_options(options: dict[str, Any], methods: list[str]) -> None:
    """Refuse ``--opt`` keys that none of ``methods`` takes, naming the valid ones."""
    valid = sorted({k for m in methods for k in method_options(m, options)})
    unknown = [k for k in options if k not in valid]
    if unknown:
        which = (
            f"{methods[0]} does not"
            if len(methods) == 1
            else f"none of the methods {', '.join(methods)}"
        )
        valid_text = (
            f"valid: {', '.join(valid)}"
            if valid
            else "they take no options"
            if len(methods) > 1
            else "it takes no options"
        )
        raise BadInputError(
            f"--opt {', '.join(unknown)}: {which} take{'s' if len(methods) > 1 else ''} it; {valid_text}"
        )


def _methods(arg: str) -> list[str]:
    from convlens.attribution import METHODS

    names = sorted(METHODS) if arg == "all" else [m.strip() for m in arg.split(",") if m.strip()]
    for name in names:
        if name not in METHODS:
            raise BadInputError(
                f"--method {name}: unknown method; choose from {', '.join(sorted(METHODS))} or all"
            )
    return names


def run(ctx: Context) -> int:
    from convlens.render.display import check_clip
    from convlens.targets import resolve_target

    args = ctx.args
    methods = _methods(args.method)
    options = parse_options(args.opt)
    check_options(options, methods)  # before any model loads
    try:
        check_clip(args.clip)
    except BadInputError:
        raise BadInputError(
            f"--clip {args.clip:g}: expected a percentile in (0, 100], e.g. 99"
        ) from None
    dense_target = parse_target_options(
        args, "--target", args.target
    )  # bad mask or image files fail before any work
    # class targets (the default: the predicted class) read class scores; a neuron
    # (layer:channel) or a dense target (--target-region / --target-similar) does not
    dense = any(getattr(args, name, None) for name in ("target_region", "target_similar"))
    neuron = (
        isinstance(args.target, str) and ":" in args.target and not args.target.startswith("n0")
    )
    models = ctx.models(class_scores=not (dense or neuron))
    for model in models:
        if args.target is not None:
            resolve_target(model, args.target)  # fail before any work
        if args.layer is not None:
            model.layer(args.layer)
        if dense_target is not None:
            dense_target.check(model, args.images)
    if (
        args.method == "all"
    ):  # the methods every model can run (attention maps need attention layers)
        from convlens.attribution import METHODS

        methods = [m for m in methods if all(METHODS[m].applies_to(model) for model in models)]
    if (
        len(args.images) == 1
        and Path(args.images[0]).is_dir()
        and len(methods) == 1
        and len(models) == 1
        and dense_target is None
    ):
        return _run_dataset(ctx, models[0], methods[0], options)
    return _run_images(ctx, models, methods, options, dense_target)


def _explain_one(
    model: Model,
    batch: Any,
    method: str,
    args: argparse.Namespace,
    options: dict[str, Any],
    target: Any = None,
) -> Any:
    from convlens.attribution import METHODS, explain

    spec = METHODS[method]
    layer = args.layer if spec.uses_layer else None
    accepted = {
        k: v for k, v in options.items() if k in method_options(method, options)
    }  # with several methods, each takes its own
    return explain(
        model,
        batch,
        method,
        args.target if target is None else target,
        layer=layer,
        reduce=args.reduce,
        seed=args.seed,
        **accepted,
    )


def _run_images(
    ctx: Context, models: list[Any], methods: list[str], options: dict[str, Any], dense: Any = None
) -> int:
    import numpy as np

    from convlens.cli.cmd_activations import output_for
    from convlens.render.attribution import attribution_figure, comparison_figure
    from convlens.render.figures import save_figure

    args = ctx.args
    n = len(expand_image_args(args.images))
    raws: list[Any] = []
    rows: list[dict[str, Any]] = []
    with ctx.progress_group() as add_bar:
        update = add_bar("explaining", n * len(methods) * len(models))
        done = 0
        for loaded in iter_images(ctx, args.images, "reading"):
            per_model = []
            for model in models:
                batch = model.prepare([loaded.image], sources=[loaded.source])
                target = dense.for_image(model, loaded.image) if dense is not None else None
                results = []
                for method in methods:
                    results.append(_explain_one(model, batch, method, args, options, target))
                    done += 1
                    update(done, n * len(methods) * len(models))
                per_model.append((model, batch, results))
            out = output_for(ctx, n, loaded.source, "explain.png")
            if len(methods) == 1 and len(models) == 1:
                model, _, results = per_model[0]
                fig = attribution_figure(
                    results[0], 0, labels=model.labels, sign=args.sign, clip=args.clip
                )
            else:
                captions = []
                for model, batch, _ in (
                    per_model if dense is None else []
                ):  # a dense-target model may not classify
                    pred = model.predict(batch, top_k=max(1, args.top_k))[0]
                    captions.append(
                        ", ".join(
                            f"{lab} {p:.0%}" for lab, p in zip(pred.labels, pred.probabilities)
                        )
                    )
                fig = comparison_figure(
                    [(m.name, r) for m, _, r in per_model],
                    0,
                    labels=[m.labels for m, _, _ in per_model],
                    predictions=captions or None,
                    sign=args.sign,
                    clip=args.clip,
                )
            save_figure(fig, out)
            raws.append(per_model[0][2][0].tensors["attribution"].cpu().numpy())
            rows.append(
                {
                    "source": loaded.source,
                    "out": str(out),
                    "results": [
                        {
                            "model": m.name,
                            "method": r.method,
                            "target": r.target or {},
                            "layer": r.layer,
                            "seconds": r.seconds,
                            "map_min": float(r.map.min()),
                            "map_max": float(r.map.max()),
                        }
                        for m, _, results in per_model
                        for r in results
                    ],
                }
            )
    raw_path = None
    if args.raw and raws:
        raw_path = Path(args.raw)
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(raw_path, np.concatenate(raws))
    if ctx.json:
        ctx.emit_json(
            {
                "models": [m.name for m in models],
                "methods": methods,
                "images": rows,
                "raw": str(raw_path) if raw_path else None,
                "dataset": None,
                "errors": ctx.bad_inputs,
            }
        )
    else:
        for row in rows:
            times = ", ".join(f"{r['method']} {r['seconds'] * 1000:.0f} ms" for r in row["results"])
            print(f"{row['source']}: {times} -> {row['out']}")
        if raw_path:
            print(f"raw attributions -> {raw_path}")
    return ctx.exit_code()


def _run_dataset(ctx: Context, model: Model, method: str, options: dict[str, Any]) -> int:
    """A folder: stream through the resumable runner; shards of maps in the output folder."""
    import torch

    from convlens.attribution import METHODS, explain
    from convlens.data.folders import scan_labelled
    from convlens.data.runner import run_dataset

    args = ctx.args
    folder = Path(args.images[0])
    items = scan_labelled(folder, model.labels.resolve if model.labels else None)
    out = ctx.out_path(f"explain-{method}", folder=True)
    spec = METHODS[method]
    accepted = {k: v for k, v in options.items() if k in method_options(method, options)}
    loader = _Loader(model.preprocessing)

    def compute(pixels: torch.Tensor, batch_items: list[Any]) -> dict[str, torch.Tensor]:
        x = pixels.to(model.device, model.dtype)
        target = args.target
        if target is None and all(it.label is not None for it in batch_items):
            target = [it.label for it in batch_items]  # explain the true class of labelled folders
        result = explain(
            model,
            x,
            method,
            target,
            layer=args.layer if spec.uses_layer else None,
            reduce=args.reduce,
            seed=args.seed,
            **accepted,
        )
        outputs = {
            "map": result.map.float().cpu(),
            "target": torch.tensor(result.target_classes),
        }
        if args.raw:
            outputs["attribution"] = result.tensors["attribution"].float().cpu()
        return outputs

    config = {
        "model": model.name,
        "method": method,
        "target": args.target,
        "layer": args.layer,
        "reduce": args.reduce,
        "options": options,
        "raw": bool(args.raw),
    }
    with ctx.progress(f"{method} over {len(items)} images", len(items)) as update:
        report = run_dataset(
            items,
            compute,
            out,
            load=loader,
            batch_size=max(1, args.batch_size),
            config=config,
            progress=update,
        )
    for path, reason in report.failed:
        ctx.report_bad_input(BadInputError(f"{path}: {reason}"))
    summary = {
        "out": str(report.out_dir),
        "items": report.n_items,
        "done": report.n_done,
        "failed": len(report.failed),
        "shards": report.shards,
        "computed_shards": report.computed_shards,
    }
    if ctx.json:
        ctx.emit_json(
            {
                "models": [model.name],
                "methods": [method],
                "images": [],
                "raw": None,
                "dataset": summary,
                "errors": ctx.bad_inputs,
            }
        )
    else:
        print(json.dumps(summary))
    return ctx.exit_code()


class _Loader:
    """Picklable loader for DataLoader workers: image file -> pixel space at the model's size."""

    def __init__(self, preprocessing: Any) -> None:
        self.preprocessing = preprocessing

    def __call__(self, path: Path) -> Any:
        from convlens.data.images import load_image

        pixels, _ = self.preprocessing.to_pixels(load_image(path))
        return pixels
