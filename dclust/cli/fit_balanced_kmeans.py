"""``dclust fit balanced-kmeans``: k-means with cluster sizes set by optimal transport.

Its options are generated from :class:`dclust.BalancedKMeans`'s parameter declarations.
"""

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

GROUP = "balanced k-means"
TYPES = {"cluster_weights": cluster_weights}


def estimator():
    from ..estimators.balanced_kmeans import BalancedKMeans

    return BalancedKMeans


def convert(kw):
    import numpy as np

    if not isinstance(kw["cluster_weights"], str):
        kw["cluster_weights"] = np.asarray(kw["cluster_weights"], dtype=np.float64)
    return kw


def summary(est) -> list:
    out = [f"{est.n_sinkhorn_iter_} Sinkhorn iterations", f"marginal error {est.marginal_error_:.3g}"]
    if est.n_repair_rounds_:
        out.append(f"{est.n_repair_rounds_} repair rounds")
    out.append(f"seed {est.random_state}")
    return out
