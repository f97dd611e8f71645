"""``dclust select-k``: fit k-means (or k-medoids, a mixture) for many k and choose one."""

from __future__ import annotations

import argparse
import json
import math
import time

from ._common import (
    CLIError,
    add_cluster_options,
    add_output_options,
    check_output,
    dask_client,
    fmt_shape,
    positive_rows,
    say,
    storage_option,
    storage_options,
)

__all__ = ["register", "run", "open_labels"]

_DESCRIPTION = """\
Fit a clustering for every number of clusters K in a range, print the criteria of each
(inertia, Calinski-Harabasz, Davies-Bouldin, the silhouette of a sample, BIC and AIC for
a mixture) and the K the chosen criterion picks. For k-means every K iterates in the
same passes over the data: a sweep costs about the reads of its slowest single fit.

With --known-classes (the class of each row, -1 where unknown) K is instead the number
whose clustering best matches the known classes (accuracy on the labelled rows, ties
broken by --criterion), the estimate of novel/generalized category discovery.

examples:
  dclust select-k blobs.zarr --k 2:32 --seed 0
  dclust select-k blobs.zarr --k 2:16:2 --criterion silhouette --model best.npz
  dclust select-k data.zarr --k 5:40 --known-classes y.zarr
  dclust select-k data.zarr --k 2:12 --estimator gmm --param covariance_type=diag
"""

_CRITERIA = ("auto", "elbow", "calinski_harabasz", "davies_bouldin", "silhouette", "bic", "aic")


def _ks(text):
    from ..exceptions import DclustValueError
    from ..model_selection import parse_ks

    try:
        return parse_ks(text)
    except DclustValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "select-k",
        help="fit many numbers of clusters and choose one (criteria table)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT",
                   help="path or fsspec URL of a 2-D Zarr array (n_samples, n_features)")
    g = p.add_argument_group("the sweep")
    g.add_argument("-k", "--k", dest="ks", required=True, type=_ks, metavar="KS",
                   help="numbers of clusters: START:STOP (both included), START:STOP:STEP or "
                        "a list 2,4,8")
    g.add_argument("--estimator", choices=("kmeans", "kmedoids", "gmm"), default="kmeans",
                   help="what to fit (default: kmeans)")
    g.add_argument("--criterion", choices=_CRITERIA, default="auto",
                   help="how K is chosen (default: auto, Calinski-Harabasz; BIC for gmm)")
    g.add_argument("--criteria", metavar="LIST",
                   help="criteria to compute, comma-separated (default: all the estimator has)")
    g.add_argument("--seed", type=int, metavar="S", dest="random_state",
                   help="random seed of every fit (default: drawn, and printed)")
    g.add_argument("--max-iter", type=int, metavar="N", help="maximum iterations per fit")
    g.add_argument("--n-init", type=int, metavar="N", help="runs per K; the best is kept")
    g.add_argument("--silhouette-sample-size", type=int, default=10_000, metavar="N",
                   help="rows the silhouette is computed on (default: 10000)")
    g.add_argument("--param", action="append", type=storage_option, default=[],
                   metavar="KEY=VALUE", help="another estimator parameter, repeatable "
                   "(init=k-means++, covariance_type=diag)")
    g.add_argument("--known-classes", metavar="Y.zarr",
                   help="a 1-D Zarr array of each row's class (-1 unknown): choose K by "
                        "accuracy on the labelled rows")
    out = p.add_argument_group("input and outputs")
    out.add_argument("--model", metavar="MODEL", help="save the chosen K's model (.npz)")
    out.add_argument("--labels", metavar="LABELS.zarr",
                     help="write the chosen K's label of every row (one more pass)")
    out.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    out.add_argument("--chunk-size", type=positive_rows, metavar="ROWS",
                     help="rows per task when reading INPUT")
    add_output_options(out)
    add_cluster_options(p)
    p.set_defaults(func=run)


def open_labels(path, storage_options=None):
    """A 1-D Zarr array of labels as a dask array (integers kept as they are)."""
    import dask.array as da
    import zarr

    from ..exceptions import StorageError
    from ..io.paths import make_store

    try:
        z = zarr.open_array(store=make_store(path, storage_options=storage_options), mode="r")
    except Exception as e:
        raise StorageError(f"Cannot open {str(path)!r} as a Zarr array of labels "
                           f"({type(e).__name__}: {e}).") from None
    if z.ndim != 1:
        raise CLIError(f"{str(path)!r} has shape {z.shape}; labels must be a 1-D Zarr array.")
    return da.from_zarr(z)


def _jsonable(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):
        return _jsonable(v.item())
    return v


def run(args) -> int:
    import dclust

    so = storage_options(args)
    for path, what in ((args.model, "model file"), (args.labels, "labels array"),
                       (args.json, "JSON file")):
        if path:
            check_output(path, overwrite=args.overwrite, storage_options=so, what=what)
    params = dict(args.param)
    for name in ("max_iter", "n_init"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    from ..model_selection import estimator_class

    if "progress" in estimator_class(args.estimator)._get_param_names():
        params.setdefault("progress", not args.quiet)
    if args.random_state is None:
        import numpy as np

        args.random_state = int(np.random.default_rng().integers(2**63 - 1))
    criteria = None if not args.criteria else [c.strip() for c in args.criteria.split(",")]
    X = dclust.open_array(args.input, storage_options=so, chunks=args.chunk_size or "auto")
    with dask_client(args):
        t0 = time.perf_counter()
        common = dict(criteria=criteria, random_state=args.random_state,
                      silhouette_sample_size=args.silhouette_sample_size, **params)
        if args.known_classes:
            y = open_labels(args.known_classes, so)
            tie = "calinski_harabasz" if args.criterion == "auto" else args.criterion
            res = dclust.estimate_n_clusters(X, y, args.ks, args.estimator, tie_break=tie,
                                             **common)
        else:
            res = dclust.select_k(X, args.ks, args.estimator, criterion=args.criterion, **common)
        seconds = time.perf_counter() - t0
        best = res.best_model
        if args.model:
            best.save(args.model, storage_options=so)
        if args.labels:
            labels = best.labels_ if hasattr(best, "labels_") else best.predict(X)
            dclust.write_labels(labels, args.labels, storage_options=so,
                                overwrite=args.overwrite)
    if args.json:
        import fsspec

        doc = {"best_k": res.best_k, "criterion": res.criterion, "seed": res.seed,
               "choices": res.choices, "n_passes": res.n_passes,
               "table": {c: [_jsonable(v) for v in col] for c, col in res.table.items()}}
        with fsspec.open(args.json, "w", **(so or {})) as f:
            json.dump(doc, f, indent=1)
    say(repr(res))
    say(f"best k={res.best_k} ({res.criterion}) on {fmt_shape(X.shape)} {X.dtype}, "
        f"{res.n_passes} passes, seed {res.seed}, {seconds:.2f} s")
    if args.model:
        say(f"model: {args.model}")
    if args.labels:
        say(f"labels: {args.labels}")
    return 0
