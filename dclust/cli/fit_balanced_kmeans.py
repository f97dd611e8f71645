"""``dclust fit balanced-kmeans``: k-means with cluster sizes set by optimal transport."""

from __future__ import annotations

from ._common import cluster_weights

NAME = "balanced-kmeans"
HELP = "k-means with cluster sizes set by optimal transport (distributed Sinkhorn)"
DESCRIPTION = """\
Fit k-means whose assignment step is entropic optimal transport: the clusters receive the
shares of the data given by --cluster-weights (equal by default). Each Sinkhorn iteration
is one pass over the data; only the k column potentials and the k x d centre sums come
back to this machine. --size-tolerance 0 makes the written labels hit the target sizes
exactly (within 1 of n * weight).

examples:
  dclust fit balanced-kmeans emb.zarr -k 256 --model bk.npz --labels labels.zarr --size-tolerance 0
  dclust fit balanced-kmeans emb.zarr -k 3 --cluster-weights 0.6,0.3,0.1 --model bk.npz
  dclust fit balanced-kmeans emb.zarr -k 50 --marginal partial --rho 0.8 --model bk.npz
"""

_INITS = ("k-means||", "k-means++", "random")


def add_arguments(parser) -> None:
    g = parser.add_argument_group("balanced k-means")
    g.add_argument("-k", "--n-clusters", dest="n_clusters", type=int, required=True, metavar="K",
                   help="number of clusters")
    g.add_argument("--cluster-weights", type=cluster_weights, default="uniform", metavar="W",
                   help="target share of each cluster: 'uniform' or K comma-separated weights "
                        "summing to 1 (default: uniform)")
    g.add_argument("--reg", type=float, default=0.05, metavar="EPS",
                   help="entropic regularisation relative to the cost scale (default: 0.05)")
    g.add_argument("--marginal", choices=("balanced", "relaxed", "partial"), default="balanced",
                   help="exact sizes, sizes pulled by a KL penalty (--reg-m), or partial "
                        "transport of mass --rho (default: balanced)")
    g.add_argument("--reg-m", type=float, default=None, metavar="F",
                   help="KL strength on the sizes for --marginal relaxed (default: 1.0)")
    g.add_argument("--rho", type=float, default=None, metavar="F",
                   help="transported mass in (0, 1] for --marginal partial")
    g.add_argument("--rho-schedule", choices=("linear",), default=None,
                   help="grow the transported mass from 0.1 to --rho over the iterations")
    g.add_argument("--size-tolerance", type=float, default=None, metavar="T",
                   help="repair the hard labels so no cluster exceeds (1 + T) times its target; "
                        "0 makes the sizes exact")
    g.add_argument("--init", choices=_INITS, default="k-means||",
                   help="initialisation of the centres (default: k-means||)")
    g.add_argument("--max-iter", type=int, default=100, metavar="N",
                   help="maximum centre updates (default: 100)")
    g.add_argument("--tol", type=float, default=1e-4, metavar="F",
                   help="stop when the centres move less than F times the mean feature variance")
    g.add_argument("--sinkhorn-max-iter", type=int, default=100, metavar="N",
                   help="maximum Sinkhorn iterations per centre update (default: 100)")
    g.add_argument("--sinkhorn-tol", type=float, default=1e-4, metavar="F",
                   help="marginal error at which Sinkhorn stops (default: 1e-4)")
    g.add_argument("--seed", type=int, default=None, metavar="S",
                   help="random seed (default: a fresh seed, kept in the model)")
    g.add_argument("--cache", choices=("auto", "memory", "none"), default="auto",
                   help="keep the data in the workers' memory during the fit (default: auto)")


def build(args):
    import numpy as np

    from ..estimators.balanced_kmeans import BalancedKMeans

    if args.seed is None:
        args.seed = int(np.random.default_rng().integers(2**31 - 1))
    weights = args.cluster_weights
    if not isinstance(weights, str):
        weights = np.asarray(weights, dtype=np.float64)
    return BalancedKMeans(
        n_clusters=args.n_clusters, cluster_weights=weights, reg=args.reg, marginal=args.marginal,
        reg_m=args.reg_m, rho=args.rho, rho_schedule=args.rho_schedule,
        size_tolerance=args.size_tolerance, init=args.init, max_iter=args.max_iter, tol=args.tol,
        sinkhorn_max_iter=args.sinkhorn_max_iter, sinkhorn_tol=args.sinkhorn_tol,
        random_state=args.seed, cache=args.cache, progress=not args.quiet,
    )


def summary(est) -> list:
    out = [f"{est.n_sinkhorn_iter_} Sinkhorn iterations", f"marginal error {est.marginal_error_:.3g}"]
    if est.n_repair_rounds_:
        out.append(f"{est.n_repair_rounds_} repair rounds")
    out.append(f"seed {est.random_state}")
    return out
