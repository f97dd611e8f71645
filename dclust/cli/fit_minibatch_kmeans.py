"""``dclust fit minibatch-kmeans``: mini-batch k-means (found by :mod:`dclust.cli.fit`).

Its options are generated from :class:`dclust.MiniBatchKMeans`'s parameter declarations.
"""

from __future__ import annotations

NAME = "minibatch-kmeans"
HELP = "mini-batch k-means (scikit-learn's rule; reads a fraction of the data)"
GROUP = "mini-batch k-means"
DESCRIPTION = """\
Fit mini-batch k-means to a Zarr array. Batches of rows are drawn at random from the
chunks on the Dask workers (only their rows come back) and the centres are updated on
this machine with per-centre learning rates; the fit stops when a smoothed batch
inertia stops improving, usually after reading a small fraction of the rows.

examples:
  dclust fit minibatch-kmeans blobs.zarr -k 64 --batch-size 4096 --model mbk.npz --seed 0
  dclust fit minibatch-kmeans blobs.zarr -k 64 --no-compute-labels --model mbk.npz
"""


def estimator():
    from ..estimators.minibatch_kmeans import MiniBatchKMeans

    return MiniBatchKMeans


def summary(est) -> list:
    return [f"inertia {est.inertia_:.6g}", f"{est.n_steps_} steps",
            f"{est.n_rows_read_:,} rows read", f"seed {est.random_state}"]
