"""``dclust.BisectingKMeans``: scikit-learn's bisecting k-means over chunked data."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import ClusterMixin, TransformerMixin

from ..algorithms.bisecting import INITS, STRATEGIES, Bisecting
from ..algorithms.kmeans import lloyd_aggregation
from ..exceptions import ConvergenceWarning, DclustValueError
from ..kernels.bisect import descend, tree_directions
from ..kernels.distances import euclidean_distances
from ..params import Param, common, result_params
from ..validation import check_n_clusters
from ._bisect_tree import BisectingTree, check_level, tree_format, write_text_atomic
from .base import DclustEstimator, map_rows, register
from .base import require_finite_block as _require_finite
from .kmeans import check_algorithm

__all__ = ["BisectingKMeans", "BisectingTree"]

_TREE_ARRAYS = ("parent", "children", "depth", "centers", "size", "weight", "inertia")


def _check_init(init):
    if isinstance(init, str):
        if init not in INITS:
            raise DclustValueError(
                f"Unknown init {init!r}; expected one of 'random', 'k-means++', 'k-means||' or a "
                "callable returning 2 centres.")
    elif not callable(init):
        raise DclustValueError(
            f"init={init!r} is not valid; expected one of 'random', 'k-means++', 'k-means||' or "
            "a callable returning 2 centres (an array of centres cannot seed every bisection).")
    return init


def _labels_block(X, children, direction, threshold, depth, lookup, block_info=None):
    _require_finite(X, block_info)
    node = descend(X, children, direction, threshold, max_depth=depth)
    return lookup[node].astype(np.int32)


def _distances_block(X, centers, block_info=None):
    _require_finite(X, block_info)
    return euclidean_distances(X, centers).astype(X.dtype, copy=False)


@register
class BisectingKMeans(ClusterMixin, TransformerMixin, DclustEstimator):
    """Bisecting k-means over data larger than memory, every split of a round in the same passes.

    A divisive hierarchy: starting from all the data, leaves are split in two by a
    2-means until there are ``n_clusters`` of them. scikit-learn splits one leaf at a
    time, the one of biggest inertia (or most rows). dclust splits in **rounds**: the
    leaves of highest score that could be split next are split together, each Lloyd
    iteration of all their 2-means one pass over the data, and then scikit-learn's
    one-at-a-time choice is replayed on the results to accept the splits it would make
    (a split not accepted yet is kept for a later round). The tree grows as
    scikit-learn's would given the same 2-means results; a tree of ``2^L`` balanced
    clusters takes ``L`` rounds instead of ``2^L - 1`` splits. See
    :mod:`dclust.algorithms.bisecting`.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of leaves (clusters).
    init : {"random", "k-means++", "k-means||"} or callable, default="random"
        Seeding of each bisection, from a weighted sample of the leaf's rows drawn in one
        pass for all the splits of a round. ``"random"``: two rows of the leaf drawn
        with probability proportional to ``sample_weight``, without replacement (as
        scikit-learn). ``"k-means++"``: k-means++ for 2 centres on a sample of up to
        ``init_size`` rows of the leaf. ``"k-means||"``: k-means|| on that sample (for
        two centres little differs from k-means++). A callable is called as
        ``init(sample, 2, random_state)`` and must return 2 centres.
    n_init : int, default=1
        2-means runs per bisection, run side by side in the same passes; the one of
        lowest inertia is kept.
    random_state : int, numpy Generator, RandomState or None, default=None
        Seed. With the same seed and chunking the tree is bit-identical whatever the
        number of workers.
    max_iter : int, default=300
        Maximum Lloyd iterations of each bisection.
    verbose : int, default=0
        Print a line per pass.
    tol : float, default=1e-4
        A bisection has converged when the squared movement of its two centres is at most
        ``tol`` times the mean per-feature variance of the leaf's rows (the rule of
        :class:`~dclust.KMeans` on the leaf; scikit-learn's bisecting k-means compares
        the movement with ``tol`` unscaled).
    copy_x : bool, default=True
        Accepted for scikit-learn compatibility; no effect (``X`` is never modified).
    algorithm : {"lloyd", "auto"}, default="lloyd"
        ``"elkan"`` is refused with an explanation (it needs per-row bounds kept between
        passes).
    bisecting_strategy : {"biggest_inertia", "largest_cluster"}, default="biggest_inertia"
        The leaf split next: the one of biggest weighted inertia, or the one with most
        rows (rows counted unweighted, as scikit-learn does).
    cache : {"auto", "memory", "none"}, default="auto"
    init_size : int, optional
        Rows sampled from each leaf for ``"k-means++"`` / ``"k-means||"`` seeding (default
        up to 1024, fewer when a round splits many leaves of many features).
    split_every : int, optional
    progress : bool, default=True
    checkpoint : str or os.PathLike, optional
        Save the state (tree, pending splits, the running 2-means) after every pass.
    resume : bool, default=False
        Continue the fit saved at ``checkpoint``; the tree is the same, bit for bit.
    storage_options : dict, optional
    device : {"auto", "cpu", "cuda"}, default="auto"
        Accepted; the tree kernels run on the CPU (GPU chunks are copied to the host).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Centres of the leaves, in label order (depth-first, left child first).
    labels_ : dask.array.Array of shape (n_samples,), or ndarray for NumPy input
        Each row's leaf, found by going down the tree (one more pass when computed).
    inertia_ : float
        Weighted sum of squared distances of the rows to their leaf's centre.
    tree_ : BisectingTree
        The hierarchy: parent, children, depth, centre, size, weight and inertia of every
        node. Export it with :meth:`export_tree`.
    n_iter_ : int
        Lloyd passes over all rounds.
    n_rounds_ : int
        Rounds of splits (each a sampling pass and its Lloyd passes).
    converged_ : bool
        Whether every accepted bisection converged before ``max_iter``.
    n_passes_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)

    Notes
    -----
    Differences from :class:`sklearn.cluster.BisectingKMeans`: the scores of a fresh
    split's children (deciding what is split next) come from its last Lloyd pass, exact
    once the split has converged; ``tol`` is relative to the leaf's variance; seeding
    uses a sample of each leaf; random streams differ, so trees match scikit-learn's in
    shape and clusters, not in the exact random choices. ``score`` is, as scikit-learn's,
    the opposite inertia to the nearest leaf centre, while ``predict`` (and
    ``labels_``, ``inertia_``) go down the tree.

    See Also
    --------
    sklearn.cluster.BisectingKMeans : the in-memory estimator this one follows.
    dclust.KMeans

    Examples
    --------
    >>> import dclust
    >>> X = dclust.open_array("emb.zarr")                                  # doctest: +SKIP
    >>> bk = dclust.BisectingKMeans(16, random_state=0).fit(X)              # doctest: +SKIP
    >>> bk.predict(X, level=2)          # the 4 (or fewer) nodes at depth 2  # doctest: +SKIP
    >>> bk.export_tree("tree.json")                                        # doctest: +SKIP
    """

    _params = (
        Param("n_clusters", "number of clusters (leaves)", "int", low=1, short="-k",
              metavar="K", required=True),
        Param("init", "seeding of each bisection", "any", options=INITS),
        Param("n_init", "2-means runs per bisection; the lowest inertia wins", "int", low=1,
              metavar="N"),
        *common("random_state"),
        Param("max_iter", "maximum Lloyd iterations per bisection", "int", low=1, metavar="N"),
        Param("verbose", "print a line per pass", "int", low=0, result=False, flag=None),
        Param("tol", "a bisection stops when its centres move less than F times the leaf's "
              "mean feature variance", "float", low=0, metavar="F"),
        Param("copy_x", "no effect (X is never modified)", "bool", result=False, flag=None),
        Param("algorithm", "k-means algorithm ('lloyd'; 'elkan' is not available)", "any",
              result=False, flag=None),
        Param("bisecting_strategy", "which leaf is split next: biggest_inertia or "
              "largest_cluster", "choice", options=STRATEGIES),
        *common("cache"),
        Param("init_size", "rows sampled per leaf for k-means++ / k-means|| seeding", "int",
              low=2, none=True, metavar="N"),
        *common("split_every", "progress", "checkpoint", "resume", "storage_options", "device"),
    )
    _fitted_arrays = ("cluster_centers_",) + tuple(f"_tree_{a}" for a in _TREE_ARRAYS)
    _fitted_scalars = ("inertia_", "n_iter_", "n_rounds_", "converged_", "n_features_in_",
                       "n_passes_")

    def __init__(self, n_clusters=8, *, init="random", n_init=1, random_state=None,
                 max_iter=300, verbose=0, tol=1e-4, copy_x=True, algorithm="lloyd",
                 bisecting_strategy="biggest_inertia", cache="auto", init_size=None,
                 split_every=None, progress=True, checkpoint=None, resume=False,
                 storage_options=None, device="auto"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.random_state = random_state
        self.max_iter = max_iter
        self.verbose = verbose
        self.tol = tol
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.bisecting_strategy = bisecting_strategy
        self.cache = cache
        self.init_size = init_size
        self.split_every = split_every
        self.progress = progress
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.device = device

    def _check_params(self):
        _check_init(self.init)
        check_algorithm(self.algorithm)
        super()._check_params()

    def fit(self, X, y=None, sample_weight=None):
        """Build the bisecting tree.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like or dask array of shape (n_samples,), default=None

        Returns
        -------
        self : BisectingKMeans
        """
        self._check_params()
        session = self._session(X, sample_weight, verbose=self.verbose)
        n, d = session.n_samples, session.n_features
        k = check_n_clusters(self.n_clusters, n)
        session.set_label(f"BisectingKMeans(k={k})")
        session.open(result_params(self, n_clusters=k), self.random_state)
        seed = session.seed
        best = session.run(lambda run: Bisecting(
            k, init=self.init, n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
            strategy=self.bisecting_strategy, seed=seed, init_size=self.init_size))
        session.close(f"BisectingKMeans(k={k}): {best['n_leaves']} leaves in "
                      f"{best['n_rounds']} rounds, inertia {best['inertia']:.6g}")
        if best["n_nonempty"] < k:
            warnings.warn(
                f"Number of distinct clusters ({best['n_nonempty']}) found smaller than "
                f"n_clusters ({k}). Possibly due to duplicate points in X.",
                ConvergenceWarning, stacklevel=2)
        self._tree_parent = np.asarray(best["parent"], dtype=np.int64)
        self._tree_children = np.asarray(best["children"], dtype=np.int64)
        self._tree_depth = np.asarray(best["depth"], dtype=np.int64)
        self._tree_centers = np.asarray(best["centers"], dtype=np.float64)
        self._tree_size = np.asarray(best["count"]).astype(np.int64)
        self._tree_weight = np.asarray(best["weight"], dtype=np.float64)
        self._tree_inertia = np.asarray(best["inertia_nodes"], dtype=np.float64)
        self.cluster_centers_ = self._tree_centers[self.tree_.leaves].astype(session.dtype)
        self.inertia_ = float(best["inertia"])
        self.n_iter_ = int(best["n_iter"])
        self.n_rounds_ = int(best["n_rounds"])
        self.converged_ = bool(best["converged"])
        self.n_features_in_ = int(d)
        self.n_passes_ = int(session.n_passes)
        self.labels_ = self._predict_array(session.X_source, None)
        return self

    # ---- the tree -----------------------------------------------------------------
    @property
    def tree_(self):
        """The fitted hierarchy (:class:`BisectingTree`)."""
        if not hasattr(self, "_tree_children"):
            self._check_fitted()
            raise AttributeError("tree_")
        return BisectingTree(*(getattr(self, f"_tree_{a}") for a in _TREE_ARRAYS))

    def export_tree(self, path, format=None, *, storage_options=None):
        """Write the tree to ``path`` as JSON or Newick, atomically.

        Parameters
        ----------
        path : str or os.PathLike
            Local path or fsspec URL.
        format : {"json", "newick"}, optional
            Default from the extension (``.json``; ``.nwk``, ``.newick``).
            JSON lists every node: ``id``, ``parent``, ``children``, ``depth``, ``size``,
            ``weight``, ``inertia``, ``label`` (leaves) and ``center``. Newick names
            leaves ``c<label>`` and internal nodes ``n<id>``, with branch lengths the
            distances between a node's centre and its parent's.
        storage_options : dict, optional

        Returns
        -------
        path
        """
        self._check_fitted()
        fmt = tree_format(path, format)
        tree = self.tree_
        text = tree.to_json() if fmt == "json" else tree.to_newick()
        write_text_atomic(path, text, storage_options=storage_options)
        return path

    # ---- prediction --------------------------------------------------------------
    def _predict_array(self, X, level):
        tree = self.tree_
        cut = tree.cut(level)
        lookup = np.full(tree.n_nodes, -1, dtype=np.int64)
        lookup[cut] = np.arange(cut.size)
        direction, threshold = tree_directions(tree.children, tree.centers)
        return map_rows(X, _labels_block, tree.children, direction, threshold,
                        None if level is None else int(level), lookup)

    def predict(self, X, level=None):
        """The cluster of each sample, found by going down the tree.

        At each internal node a row goes to the nearer of the two children's centres,
        as scikit-learn predicts (not the nearest leaf centre overall).

        Parameters
        ----------
        X : array-like, dask or zarr array of shape (n_samples, n_features)
        level : int, optional
            ``None``: the leaf (the labels of ``labels_``). An integer: cut the tree at
            that depth (the root is depth 0) and return each row's node there, or its
            leaf where its path ends higher up, numbered ``0..m-1`` in depth-first order;
            ``tree_.cut(level)[label]`` is the node id.

        Returns
        -------
        labels : ndarray (NumPy input) or lazy dask array of shape (n_samples,)
        """
        level = check_level(level)
        return self._predict_array(self._check_X(X), level)

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X)`` then return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Euclidean distances to every leaf centre, shape (n_samples, n_clusters)."""
        X = self._check_X(X)
        C = np.asarray(self.cluster_centers_, dtype=np.float64)
        out = map_rows(X, _distances_block, C, n_out=C.shape[0], dtype=X.dtype)
        return out.astype(X.dtype, copy=False) if isinstance(out, np.ndarray) else out

    def fit_transform(self, X, y=None, sample_weight=None):
        """``fit(X)`` then return ``transform(X)``."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of ``X`` to the nearest leaf centre (one pass), as
        scikit-learn's ``BisectingKMeans.score``."""
        session = self._scoring_session(X, sample_weight)
        C = np.asarray(self.cluster_centers_, dtype=np.float64)
        res = session.run_pass({"lloyd": lloyd_aggregation(C, 0)}, name="bisect-score")
        return -float(res["lloyd"]["inertia"])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
