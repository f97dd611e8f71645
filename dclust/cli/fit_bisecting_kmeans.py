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

The model file holds the whole tree. --export-tree also writes it as JSON (.json: every
node's parent, children, depth, size, weight, inertia, label and centre) or Newick (.nwk,
.newick); give it twice for both. From Python: dclust.load(MODEL).export_tree("tree.json").

examples:
  dclust fit bisecting-kmeans emb.zarr -k 64 --model bk.npz --labels labels.zarr --seed 0
  dclust fit bisecting-kmeans emb.zarr -k 64 --bisecting-strategy largest_cluster --model bk.npz
  dclust fit bisecting-kmeans emb.zarr -k 64 --model bk.npz --export-tree tree.json --export-tree tree.nwk
"""


def estimator():
    from ..estimators.bisecting_kmeans import BisectingKMeans

    return BisectingKMeans


def add_arguments(group) -> None:
    group.add_argument("--export-tree", action="append", default=[], metavar="TREE",
                       help="also write the tree to TREE as JSON (.json) or Newick (.nwk, "
                            ".newick), atomically; may be given more than once")


def outputs(args) -> list:
    from ..estimators._bisect_tree import tree_format
    from ..exceptions import DclustValueError
    from ._common import CLIError

    for path in args.export_tree:
        try:
            tree_format(path, None)
        except DclustValueError:
            # Before the fit: an hour of work should not end on a file name.
            raise CLIError(f"Cannot tell the tree format of --export-tree {path!r} from its "
                           "extension; name it .json, .nwk or .newick.") from None
    return [(path, "tree file") for path in args.export_tree]


def after_fit(est, args) -> list:
    from ._common import storage_options

    so = storage_options(args)
    for path in args.export_tree:
        est.export_tree(path, storage_options=so)
    return [f"tree: {path}" for path in args.export_tree]


def summary(est) -> list:
    return [f"inertia {est.inertia_:.6g}", f"{est.n_rounds_} rounds",
            f"depth {est.tree_.max_depth}", f"seed {est.random_state}"]
