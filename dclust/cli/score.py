"""``dclust score``: clustering scores of labels for a Zarr array (and against true classes)."""

from __future__ import annotations

import argparse
import json
import time

from ._common import CLIError, add_cluster_options, dask_client, fmt_shape, positive_rows, say, \
    storage_options

__all__ = ["register", "run", "INTERNAL", "EXTERNAL"]

_DESCRIPTION = """\
Score the clustering LABELS (a 1-D Zarr array, one label per row of INPUT) from the data
alone: Calinski-Harabasz (one pass), Davies-Bouldin (two), the silhouette of a uniform
sample of rows (two; --silhouette-sample-size 0 for the exact O(n^2) one) and the
inertia around the clusters' means (one). With --true (the true class of each row) it
adds the scores against the classes: clustering accuracy (best one-to-one matching),
adjusted Rand index, normalized and adjusted mutual information, homogeneity,
completeness and V-measure (each a pass over the two label arrays, not over INPUT).

examples:
  dclust score blobs.zarr labels.zarr
  dclust score blobs.zarr labels.zarr --true classes.zarr --metrics accuracy,ari
"""

INTERNAL = ("calinski_harabasz", "davies_bouldin", "silhouette", "inertia")
EXTERNAL = ("accuracy", "ari", "nmi", "ami", "homogeneity", "completeness", "v_measure")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="clustering scores of a Zarr array of labels",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="path or fsspec URL of a 2-D Zarr array")
    p.add_argument("labels", metavar="LABELS", help="a 1-D Zarr array: the label of each row")
    p.add_argument("--true", metavar="CLASSES.zarr",
                   help="a 1-D Zarr array of each row's true class: also score against it")
    p.add_argument("--metrics", metavar="LIST",
                   help="comma-separated scores to compute (default: all that apply): "
                        + ", ".join(INTERNAL + EXTERNAL))
    p.add_argument("--silhouette-sample-size", type=int, default=10_000, metavar="N",
                   help="rows the silhouette is computed on; 0 for every row (default: 10000)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the silhouette's sample (default: 0)")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    p.add_argument("--chunk-size", type=positive_rows, metavar="ROWS",
                   help="rows per task when reading INPUT")
    add_cluster_options(p)
    p.set_defaults(func=run)


def _wanted(args):
    known = INTERNAL + EXTERNAL
    if not args.metrics:
        return list(INTERNAL) + (list(EXTERNAL) if args.true else [])
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for m in names:
        if m not in known:
            raise CLIError(f"Unknown score {m!r}; expected some of {', '.join(known)}.")
        if m in EXTERNAL and not args.true:
            raise CLIError(f"The score {m!r} compares LABELS with the true classes; pass "
                           "--true CLASSES.zarr.")
    return names


def run(args) -> int:
    import dclust
    from dclust import metrics

    from .select_k import open_labels

    so = storage_options(args)
    names = _wanted(args)
    if args.silhouette_sample_size < 0 or args.silhouette_sample_size == 1:
        raise CLIError(f"--silhouette-sample-size {args.silhouette_sample_size} must be 0 (every "
                       "row) or at least 2.")
    X = dclust.open_array(args.input, storage_options=so, chunks=args.chunk_size or "auto")
    labels = open_labels(args.labels, so)
    true = open_labels(args.true, so) if args.true else None
    scores = {}
    with dask_client(args):
        t0 = time.perf_counter()
        if "calinski_harabasz" in names:
            scores["calinski_harabasz"] = metrics.calinski_harabasz_score(X, labels)
        if "davies_bouldin" in names:
            scores["davies_bouldin"] = metrics.davies_bouldin_score(X, labels)
        if "silhouette" in names:
            size = args.silhouette_sample_size or None
            scores["silhouette"] = metrics.silhouette_score(X, labels, sample_size=size,
                                                            random_state=args.seed)
        if "inertia" in names:
            scores["inertia"] = metrics.inertia(X, labels)
        if true is not None:
            _external(metrics, true, labels, names, scores)
        seconds = time.perf_counter() - t0
    scores = {k: float(v) for k, v in scores.items()}
    if args.json:
        say(json.dumps(scores))
    else:
        width = max(len(k) for k in scores)
        for k, v in scores.items():
            say(f"{k.ljust(width)}  {v:.6g}")
        say(f"scored {fmt_shape(X.shape)} {X.dtype} in {seconds:.2f} s")
    return 0


def _external(metrics, true, labels, names, scores):
    """The scores against the true classes (each reads the two label arrays, not X)."""
    if "accuracy" in names:
        scores["accuracy"] = metrics.accuracy(true, labels)
    if "ari" in names:
        scores["ari"] = metrics.adjusted_rand_score(true, labels)
    if "nmi" in names:
        scores["nmi"] = metrics.normalized_mutual_info_score(true, labels)
    if "ami" in names:
        scores["ami"] = metrics.adjusted_mutual_info_score(true, labels)
    if {"homogeneity", "completeness", "v_measure"} & set(names):
        h, c, v = metrics.homogeneity_completeness_v_measure(true, labels)
        for name, value in (("homogeneity", h), ("completeness", c), ("v_measure", v)):
            if name in names:
                scores[name] = value
