"""``dclust fit bisecting-kmeans``: a bisecting k-means hierarchy (found by
:mod:`dclust.cli.fit` by its name).

Its options are generated from :class:`dclust.BisectingKMeans`'s parameter declarations.
"""

from __future__ import annotations

NAME = "bisecting-kmeans"
HELP = "bisecting k-means (a divisive hierarchy; every split of a round in the same passes)"
GROUP = "bisecting k-means"
DESCRIPTION = """\
Fit a bisecting k-means tree to a Zarr array: leaves are split in two by 2-means until
there are k of them, the leaf of biggest inertia (or most rows) first, as scikit-learn's
BisectingKMeans. All the splits of a round run in the same passes: one pass seeds them,
one pass per Lloyd iteration moves them all.

The model file holds the whole tree; export it as JSON or Newick from Python with
dclust.load(MODEL).export_tree("tree.json").

examples:
  dclust fit bisecting-kmeans emb.zarr -k 64 --model bk.npz --labels labels.zarr --seed 0
  dclust fit bisecting-kmeans emb.zarr -k 64 --bisecting-strategy largest_cluster --model bk.npz
"""


def estimator():
    from ..estimators.bisecting_kmeans import BisectingKMeans

    return BisectingKMeans


def summary(est) -> list:
    return [f"inertia {est.inertia_:.6g}", f"{est.n_rounds_} rounds",
            f"depth {est.tree_.max_depth}", f"seed {est.random_state}"]
