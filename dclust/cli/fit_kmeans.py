"""``dclust fit kmeans``: distributed k-means (found by :mod:`dclust.cli.fit` by its name).

Its options are generated from :class:`dclust.KMeans`'s parameter declarations.
"""

from __future__ import annotations

NAME = "kmeans"
HELP = "k-means (Lloyd iterations, k-means|| initialisation)"
GROUP = "k-means"
DESCRIPTION = """\
Fit k-means to a Zarr array. Each Lloyd iteration is one pass over the data on the Dask
cluster; only the k x d centre sums come back to this machine. The data is kept in the
workers' memory when it fits (--cache auto) and streamed from storage otherwise.

With --checkpoint the state is saved after every iteration; if the fit is interrupted
(the machine goes away, the job is killed), the same command with --resume continues it
and ends with the same model as an uninterrupted fit.

examples:
  dclust fit kmeans blobs.zarr -k 16 --model km.npz --labels labels.zarr --seed 0
  dclust fit kmeans blobs.zarr -k 16 --model km.npz --checkpoint km.ckpt.npz --resume
"""


def estimator():
    from ..estimators.kmeans import KMeans

    return KMeans


def summary(est) -> list:
    return [f"inertia {est.inertia_:.6g}", f"seed {est.random_state}"]
