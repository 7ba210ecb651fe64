"""``convlens embed OUT/ --method tsne|pca|umap [--dims 2|3] [--color label|prediction] [-o map.html]``."""

from __future__ import annotations

import argparse
from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least, greater_than


class Files(TypedDict):
    html: str
    png: str


class EmbedOutput(TypedDict):
    method: Literal["tsne", "pca", "umap"]
    points: int
    dims: NotRequired[Literal[2, 3]]
    layer: str
    model: str
    params: NotRequired[dict[str, Any]]
    files: Files
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(EmbedOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "embed",
        parents=[common],
        help="a 2-D or 3-D map (t-SNE, PCA, UMAP) of a `convlens features` folder",
        description="Maps the codes of a features folder to the plane and writes a self-contained interactive HTML map (points coloured by label or prediction with a toggle, thumbnails on hover, zoom and pan; no external files) and a PNG scatter beside it. --dims 3 makes a 3-D map, rotated by dragging in the same page, and a 3-D PNG scatter.",
    )
    p.add_argument("index", metavar="OUT", help="a folder written by `convlens features`")
    p.add_argument(
        "--method",
        choices=["tsne", "pca", "umap"],
        default="tsne",
        help="tsne (default), pca, or umap (pip install 'convlens[represent]')",
    )
    p.add_argument(
        "--dims",
        type=int,
        choices=[2, 3],
        default=2,
        help="map dimensions: 2 (default) or 3 (a rotatable 3-D map)",
    )
    p.add_argument(
        "--color",
        choices=["label", "prediction"],
        default="label",
        help="initial colouring (default label)",
    )
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    p.add_argument(
        "--thumbnails",
        type=int,
        default=2000,
        help="points with a hover thumbnail, the first N (default 2000; 0: none)",
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output HTML file (default map.html); the PNG is written beside it (map.png)",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.errors import BadInputError, ConvlensError
    from convlens.render.embedding import (
        embedding_figure,
        embedding_html,
        thumbnail_uri,
        write_html,
    )
    from convlens.render.figures import save_figure
    from convlens.represent.embed import embed
    from convlens.represent.features import load_features

    args = ctx.args
    at_least(args.thumbnails, 0, "--thumbnails")
    greater_than(args.perplexity, 0, "--perplexity")
    out = ctx.out_path("map.html", folder=False)
    if out.suffix.lower() not in (".html", ".htm"):
        raise BadInputError(f"--out {out}: give an .html file name")
    png = out.with_suffix(".png")
    features = load_features(args.index)
    if args.color == "prediction" and not features.has_predictions:
        raise BadInputError(
            f"--color prediction: {args.index} was made with `convlens features --no-predictions`; colour by label, or run features again without it"
        )
    if args.method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise BadInputError(
                "--method umap needs umap-learn; pip install 'convlens[represent]'"
            ) from None
    with ctx.progress(f"{args.method} of {len(features)} codes") as update:
        result = embed(
            features, args.method, seed=args.seed, perplexity=args.perplexity, dims=args.dims
        )
        update(1, 1)
    class_name = None
    try:  # class names from the model's labels when it loads here; indices otherwise
        from convlens.models.spec import load_recorded

        labels = load_recorded(features.model, features.provenance).labels
        class_name = labels.name if labels else None
    except (ConvlensError, ImportError, KeyError):
        pass
    n_thumbs = min(args.thumbnails, len(features))
    thumbs: list[str | None] = []
    with ctx.progress("thumbnails", n_thumbs) as update:
        for i, path in enumerate(features.paths):
            thumbs.append(thumbnail_uri(path) if i < n_thumbs else None)
            if i < n_thumbs:
                update(i + 1, n_thumbs)
    page = embedding_html(
        result,
        color=args.color,
        class_name=class_name,
        thumbnails=thumbs,
        title=f"{args.method.upper()}{' 3-D' if args.dims == 3 else ''} of {features.model} {features.layer}",
    )
    save_figure(embedding_figure(result, color=args.color, class_name=class_name), png)
    write_html(page, out)
    payload: EmbedOutput = {
        "method": args.method,
        "points": len(features),
        "dims": args.dims,
        "layer": features.layer,
        "model": features.model,
        "params": result.provenance["params"],
        "files": {"html": str(out), "png": str(png)},
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        print(
            f"{args.method}{' 3-D' if args.dims == 3 else ''} map of {len(features)} codes ({features.model} {features.layer}) -> {out}, {png}"
        )
    return ctx.exit_code()
