"""``dclust fit kmedoids``: k-medoids (found by :mod:`dclust.cli.fit` by its name).

Its options are generated from :class:`dclust.KMedoids`'s parameter declarations.
"""

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

GROUP = "k-medoids"


def estimator():
    from ..estimators.kmedoids import KMedoids

    return KMedoids


def summary(est) -> list:
    fields = [f"loss {est.inertia_:.6g}"]
    if hasattr(est, "clara_inertia_"):
        fields.append(f"CLARA alone {est.clara_inertia_:.6g}")
    fields.append(f"seed {est.random_state}")
    return fields
