"""``convlens neighbors IMAGE --index OUT/ [--k 8] [--metric l2|cosine] [--ann] [-o grid.png]``."""

from __future__ import annotations

import argparse
from typing import Annotated, Any, Literal

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import Files
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least


class Neighbor(TypedDict):
    rank: int
    index: Annotated[int, "row in the features folder"]
    path: str
    distance: float
    label: int
    prediction: Annotated[
        int,
        "the class the model predicted for that image (-1: not computed, features --no-predictions)",
    ]


class NeighborsOutput(TypedDict):
    model: str
    layer: str
    pooled: bool
    query: str
    metric: Literal["l2", "cosine"]
    ann: bool
    recall: Annotated[
        dict[str, Any] | None,
        "ANN recall@k against exact search, measured when the index was built",
    ]
    neighbors: list[Neighbor]
    files: Files
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(NeighborsOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "neighbors",
        parents=[common],
        help="the images nearest to IMAGE in feature space (a `convlens features` folder)",
        description="Embeds IMAGE with the model, layer and pooling recorded in the features folder, then finds its nearest codes: exact search by default, or an approximate faiss HNSW index (--ann, built once and saved in the features folder, its recall@k against exact search reported). Draws the query and its neighbours with distances.",
    )
    p.add_argument("image", metavar="IMAGE", help="image file or sample:NAME")
    p.add_argument(
        "--index", required=True, metavar="OUT", help="a folder written by `convlens features`"
    )
    p.add_argument("--k", type=int, default=8, help="neighbours (default 8)")
    p.add_argument("--metric", choices=["l2", "cosine"], default="l2", help="distance (default l2)")
    p.add_argument(
        "--ann",
        action="store_true",
        help="approximate search with a faiss HNSW index (pip install 'convlens[represent]')",
    )
    p.add_argument("-o", "--out", default=None, help="output picture (default neighbors.png)")
    p.set_defaults(func=run)


def features_model(ctx: Context, features: Any) -> Any:
    """The model that made ``features``, loaded by name (refused when it cannot match)."""
    from convlens.errors import BadInputError

    if ctx.args.model and ctx.args.model != features.model:
        raise BadInputError(
            f"--model {ctx.args.model}: the features in {ctx.args.index} were computed with {features.model}; drop --model or pass --model {features.model}"
        )
    from convlens.models.spec import load_recorded

    ctx.check_device()
    try:
        with ctx.progress(f"loading {features.model}"):
            model = load_recorded(features.model, features.provenance, device=ctx.device)
    except BadInputError as err:
        raise BadInputError(
            f"the features were computed with model {features.model!r}, which cannot be loaded here ({err})"
        ) from None
    stored = features.provenance.get("weights_sha256")
    if stored and model.weights_sha256 and stored != model.weights_sha256:
        raise BadInputError(
            f"{ctx.args.index}: computed with other weights of {features.model} (sha256 {stored[:12]}..., loaded {model.weights_sha256[:12]}...); recompute the features"
        )
    return model


def run(ctx: Context) -> int:
    from convlens.data.images import load_image
    from convlens.errors import BadInputError
    from convlens.render.figures import save_figure
    from convlens.render.neighbors import neighbors_figure
    from convlens.represent.features import load_features
    from convlens.represent.neighbors import query_codes, search

    args = ctx.args
    at_least(args.k, 1, "--k")
    out = ctx.out_path("neighbors.png", folder=False)
    features = load_features(args.index)
    if len(features) == 0:
        raise BadInputError(f"{args.index}: the features folder holds no codes")
    model = features_model(ctx, features)
    batch = model.prepare([args.image])  # a bad file fails here, one line
    query = query_codes(model, [args.image], features.layer, pooled=features.pooled)
    with ctx.progress("searching", 1) as update:
        found = search(
            features,
            query[0],
            args.k,
            metric=args.metric,
            ann=args.ann,
            index_dir=args.index if args.ann else None,
            query_name=args.image,
            progress=update,
        )
    images = []
    for path in found.paths:
        try:
            images.append(model.preprocessing.to_pixels(load_image(path))[0])
        except BadInputError as err:
            ctx.report_bad_input(BadInputError(f"{path}: {err}"))
            images.append(None)
    name = model.labels.name if model.labels else None
    save_figure(
        neighbors_figure(model.denormalize(batch.x)[0].cpu(), images, found, class_name=name), out
    )
    payload = {
        "model": model.name,
        "layer": features.layer,
        "pooled": features.pooled,
        **found.to_dict(),
        "files": {"figure": str(out)},
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        how = "ANN" if args.ann else "exact"
        recall = (
            f", recall@{found.recall['k']} {found.recall['recall']:.3f}" if found.recall else ""
        )
        print(
            f"{args.image}: {len(found.paths)} nearest at {features.layer} ({args.metric}, {how}{recall}) -> {out}"
        )
        for row in payload["neighbors"]:
            print(f"  {row['rank']:>3}  {row['distance']:.4g}  {row['path']}")
    return ctx.exit_code()
