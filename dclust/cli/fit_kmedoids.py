"""``dclust fit kmedoids``: k-medoids (found by :mod:`dclust.cli.fit` by its name)."""

from __future__ import annotations

NAME = "kmedoids"
HELP = "k-medoids (FastCLARA on the cluster with full-data refinement, or in-memory FasterPAM)"
DESCRIPTION = """\
Fit k-medoids to a Zarr array: the k rows that minimise the sum of dissimilarities of every
row to its nearest one. With --method clara (the default) samples of 80 + 4k rows are solved
with FasterPAM on this machine, every sample's medoids are scored on the full data in one
pass on the Dask cluster, and refinement passes then move the medoids using every row. With
--method fasterpam the whole n x n dissimilarity matrix is built on this machine (it must fit
in memory).

example:
  dclust fit kmedoids blobs.zarr -k 16 --metric manhattan --model kmed.npz --labels labels.zarr
"""

_METRICS = ("euclidean", "sqeuclidean", "manhattan", "cosine")


def add_arguments(parser) -> None:
    g = parser.add_argument_group("k-medoids")
    g.add_argument("-k", "--n-clusters", dest="n_clusters", type=int, required=True, metavar="K",
                   help="number of medoids")
    g.add_argument("--metric", choices=_METRICS, default="euclidean",
                   help="dissimilarity (default: euclidean)")
    g.add_argument("--method", choices=("clara", "fasterpam"), default="clara",
                   help="clara: samples and passes on the cluster; fasterpam: the full matrix in "
                        "memory (default: clara)")
    g.add_argument("--n-sampling", type=int, default=None, metavar="M",
                   help="rows per CLARA sample (default: 80 + 4 K)")
    g.add_argument("--n-sampling-iter", type=int, default=5, metavar="N",
                   help="CLARA samples (default: 5)")
    g.add_argument("--max-iter", type=int, default=100, metavar="N",
                   help="maximum FasterPAM iterations and refinement passes (default: 100)")
    g.add_argument("--no-refine", dest="refine", action="store_false",
                   help="stop after CLARA (no refinement passes on the full data)")
    g.add_argument("--seed", type=int, default=None, metavar="S",
                   help="random seed; the same seed and chunking give the same model "
                        "(default: a fresh seed, printed in the summary and kept in the model)")
    g.add_argument("--cache", choices=("auto", "memory", "none"), default="auto",
                   help="keep the data in the workers' memory during the fit: auto (when it "
                        "takes at most half of it), memory, or none (stream it every pass); "
                        "default: auto")


def build(args):
    import numpy as np

    from ..estimators.kmedoids import KMedoids

    if args.seed is None:
        # Drawn here so that the model file records it and the run can be repeated.
        args.seed = int(np.random.default_rng().integers(2**31 - 1))
    return KMedoids(
        n_clusters=args.n_clusters, metric=args.metric, method=args.method,
        n_sampling=args.n_sampling, n_sampling_iter=args.n_sampling_iter, max_iter=args.max_iter,
        refine=args.refine, random_state=args.seed, cache=args.cache, progress=not args.quiet,
    )


def summary(est) -> list:
    fields = [f"loss {est.inertia_:.6g}"]
    if hasattr(est, "clara_inertia_"):
        fields.append(f"CLARA alone {est.clara_inertia_:.6g}")
    fields.append(f"seed {est.random_state}")
    return fields
