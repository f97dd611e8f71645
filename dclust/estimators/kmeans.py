"""``dclust.KMeans``: scikit-learn's estimator interface over distributed k-means."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import ClusterMixin, TransformerMixin

from .._xp import to_numpy
from ..algorithms.kmeans import INITS, METRICS, Lloyd, check_init_array, lloyd_aggregation
from ..algorithms.datachecks import safe_magnitude
from ..algorithms.hierarchical import (DEFAULT_N_PROBE, HIERARCHICAL_MIN_K, PROBE_EXCESS_WARN,
                                       HierarchicalLloyd, probe_aggregation, resolve_algorithm)
from ..algorithms.seeded_kmeans import SeededLloyd, seeded_labels_like
from ..exceptions import ConvergenceWarning, DclustValueError, ProbeRecallWarning
from ..kernels.distances import euclidean_distances
from ..kernels.lloyd import nearest_center
from ..kernels.probe import probe_nearest
from ..kernels.rownorm import cosine_distances, row_normalize
from ..params import Param, array_digest, common, result_params
from ..runtime.device import predict_device, to_device_block
from ..validation import check_known_classes, check_n_clusters
from .base import SEMI_SUPERVISED_DOC, DclustEstimator, known_classes_given, map_rows, register
from .base import require_finite_block as _require_finite

__all__ = ["KMeans"]

ALGORITHMS = ("lloyd", "auto", "hierarchical")


def _precise(X, centers):
    """float32 ``X`` as float64 when its squares (or the centres') would overflow float32."""
    if X.dtype != np.float32 or X.shape[0] == 0:
        return X
    limit = safe_magnitude(np.float32, X.shape[1])
    big = max(abs(float(X.max())), abs(float(X.min())), float(np.abs(centers).max(initial=0.0)))
    return X.astype(np.float64) if big > limit else X


def _unit_block(X, block_info):
    """The block's rows at unit norm (cosine), a zero row named by its global number."""
    offset, chunk = 0, None
    if block_info and 0 in block_info:  # map_blocks' info of X (key None is the output)
        offset = block_info[0]["array-location"][0][0]
        chunk = block_info[0]["chunk-location"][0]
    return row_normalize(X, row_offset=offset, block_id=chunk)


def _labels_block(X, centers, device="cpu", metric="euclidean", block_info=None):
    _require_finite(X, block_info)
    X = to_device_block(X, device)
    # Unit rows and unit centres: the nearest in euclidean distance is the most similar.
    X = _unit_block(X, block_info) if metric == "cosine" else _precise(X, centers)
    labels, _ = nearest_center(X, centers)
    return to_numpy(labels).astype(np.int32)


def _distances_block(X, centers, metric="euclidean", block_info=None):
    _require_finite(X, block_info)
    if metric == "cosine":
        return cosine_distances(_unit_block(X, block_info), centers).astype(X.dtype, copy=False)
    return euclidean_distances(_precise(X, centers), centers).astype(X.dtype, copy=False)


def _probe_labels_block(X, centers, coarse, cells, n_probe, block_info=None):
    _require_finite(X, block_info)
    X = to_numpy(X)
    labels, _ = probe_nearest(_precise(X, centers), coarse, centers, cells, n_probe)
    return labels.astype(np.int32)


def check_init(init):
    """A string init must be one dclust knows; arrays and callables are checked at ``fit``."""
    if isinstance(init, str):
        if init not in INITS:
            raise DclustValueError(
                f"Unknown init {init!r}; expected one of 'k-means||', 'k-means++', 'random', a "
                "callable or an array of shape (n_clusters, n_features)."
            )
    elif not (callable(init) or hasattr(init, "shape") or isinstance(init, (list, tuple))):
        raise DclustValueError(
            f"init={init!r} is not valid; expected one of 'k-means||', 'k-means++', 'random', a "
            "callable or an array of shape (n_clusters, n_features)."
        )
    return init


def check_algorithm(algorithm):
    """scikit-learn's ``algorithm`` ("lloyd", "auto"), plus dclust's "hierarchical"."""
    if algorithm == "elkan":
        raise DclustValueError(
            "algorithm='elkan' is not available: Elkan's bounds are per-row state that would "
            "have to be kept between passes over data larger than memory. dclust runs Lloyd "
            "iterations (one pass each); pass algorithm='lloyd' (or 'auto')."
        )
    if algorithm not in ALGORITHMS:
        raise DclustValueError(f"algorithm={algorithm!r} is not valid; expected 'lloyd', "
                               "'hierarchical' or 'auto'.")
    return algorithm


def _check_hierarchical(metric, y, init):
    if metric != "euclidean":
        raise DclustValueError(
            f"algorithm='hierarchical' runs with metric='euclidean' only (got metric={metric!r}); "
            "pass algorithm='lloyd' for cosine k-means.")
    if y is not None:
        raise DclustValueError(
            "algorithm='hierarchical' cannot be combined with known classes y (seeded "
            "k-means); pass algorithm='lloyd', or fit without y (semi_supervised=False).")
    if callable(init) and not hasattr(init, "shape"):
        raise DclustValueError(
            "algorithm='hierarchical' takes init='k-means||', 'k-means++', 'random' or an "
            "array of shape (n_clusters, n_features), not a callable; pass algorithm='lloyd' "
            "to use a callable init.")


def effective_n_init(n_init, init):
    """scikit-learn's rule for ``n_init="auto"``: 10 runs for a random or callable init,
    one otherwise; an explicit init array always runs once (with a warning when more
    were asked for)."""
    explicit = not isinstance(init, str) and not callable(init)
    if n_init == "auto":
        return 1 if explicit or init in ("k-means||", "k-means++") else 10
    if explicit and n_init != 1:
        warnings.warn(
            "Explicit initial center position passed: performing only one init in KMeans "
            f"instead of n_init={n_init}.",
            RuntimeWarning, stacklevel=3,
        )
        return 1
    return int(n_init)


@register
class KMeans(ClusterMixin, TransformerMixin, DclustEstimator):
    """K-means clustering of data larger than memory, on a Dask cluster.

    Each iteration is one pass over the data: every row-chunk computes its nearest
    centres and the per-cluster sums in one fused kernel, and a tree reduction brings
    the ``k x d`` sums back to the client.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means||", "k-means++", "random"}, callable or array of shape (n_clusters, n_features), default="k-means||"
        ``"k-means||"``: Bahmani et al.'s scalable k-means++ (about ``2k`` candidates a
        round, 5 rounds, candidates weighted by the points they attract, reclustered with
        weighted k-means++ several times and the best kept), run on a uniform sample of
        ``init_size`` rows drawn in one pass. ``"k-means++"``: greedy k-means++ on that
        sample. ``"random"``: ``k`` rows drawn at random (weighted by ``sample_weight``).
        A callable is called as ``init(sample, n_clusters, random_state)`` on that sample
        (scikit-learn calls it on ``X``) and must return the centres. An array is used as
        given.
    n_init : "auto" or int, default="auto"
        Runs with different seeds; the one with the lowest inertia is kept. ``"auto"``
        (scikit-learn's rule): 10 for ``init="random"`` or a callable, 1 otherwise.
    max_iter : int, default=300
        Maximum Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence when the squared movement of the centres is at most ``tol`` times
        the mean per-feature variance of ``X`` (scikit-learn's rule). With
        ``metric="cosine"``: at most ``tol / n_features``, ``1 / n_features`` being the
        mean per-feature second moment of unit rows (an upper bound of their variance,
        known without a pass).
    verbose : int, default=0
        Print a line after the initialisation and after every iteration, as
        scikit-learn does.
    random_state : int, numpy Generator, RandomState or None, default=None
        Seed. With the same seed and chunking the result is bit-identical whatever the
        number of workers.
    copy_x : bool, default=True
        Accepted for scikit-learn compatibility; has no effect: dclust never modifies
        ``X`` (chunks are read, centred copies are never made in place).
    algorithm : {"lloyd", "hierarchical", "auto"}, default="lloyd"
        ``"lloyd"``: exact Lloyd iterations, every row against every centre (the centres
        are taken in cache-sized groups, so no ``rows x k`` matrix is ever built).
        ``"hierarchical"``: two-level k-means for large ``k`` (as FAISS trains IVF
        indexes): about ``sqrt(k)`` coarse centres on a sample, fine centres fitted per
        coarse cell in parallel in proportion to the cell's weight, then Lloyd passes in
        which each row searches only the fine centres of its ``n_probe`` nearest coarse
        cells (:mod:`dclust.algorithms.hierarchical`). ``labels_``, ``predict``,
        ``score`` and ``inertia_`` use the same probes. Euclidean only, without known
        classes. ``"auto"``: ``"hierarchical"`` from ``n_clusters=4096``, else
        ``"lloyd"``. ``"elkan"`` is refused with an explanation.
    n_probe : int or "auto", default="auto"
        With ``algorithm="hierarchical"``: coarse cells whose fine centres each row
        searches (more is closer to exact Lloyd and slower; at least the number of
        coarse cells is exact). ``"auto"`` measures, on a sample at the fine stage's
        centres, what 4, 8, 16 and 32 probes lose against the exact nearest centre and
        takes the smallest that loses at most 0.1% (``n_probe_``): 4 on clustered data
        (embeddings, blobs), more where the data is nearly uniform at the scale of the
        coarse cells (many features, no structure), where too few probes end several %
        above exact Lloyd's inertia. Can be changed after the fit to trade the speed of
        ``predict`` against its exactness. ``probe_excess_`` measures the loss at the
        final centres, and a ``ProbeRecallWarning`` says when it is above 0.5%.
    cache : {"auto", "memory", "none"}, default="auto"
        ``"memory"`` persists ``X`` on the workers for the fit; ``"none"`` streams it from
        its source (Zarr) on every pass; ``"auto"`` persists when it takes at most half
        the workers' memory.
    init_size : int, optional
        Rows the seeding runs on; default ``min(n, max(50000, 32 * n_clusters))``.
    oversampling_factor : float, default=2.0
        k-means|| candidates per round, as a multiple of ``n_clusters``.
    init_max_iter : int, default=5
        k-means|| rounds.
    split_every : int, optional
        Fan-in of the reduction tree (default 8).
    progress : bool, default=True
        Show a progress line for fits that run longer than a few seconds.
    checkpoint : str or os.PathLike, optional
        Save the state of the fit to this file (local path or fsspec URL, an NPZ archive
        without pickle) after the initialisation and after every iteration, atomically:
        the new state is written under a temporary name and renamed over the old one.
        Without ``resume`` an existing checkpoint there is replaced.
    resume : bool, default=False
        Continue from the state saved at ``checkpoint`` by an interrupted fit (a missing
        file starts a new fit). The result is the same, bit for bit, as that of a fit
        that was never interrupted. A checkpoint written for other data (shape, dtype,
        chunking, weights, statistics) or other parameters is refused, naming what
        differs; with ``random_state=None`` the checkpoint's seed is used.
    storage_options : dict, optional
        fsspec options for a ``checkpoint`` URL.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the kernels run. ``"cuda"``: on the workers' GPUs through CuPy (chunks move
        to the GPU once per pass, or stay there when they fit; only the ``k x d`` sums
        come back). ``"auto"``: the GPUs when every worker has one, else the CPUs.
    semi_supervised : {"auto", True, False}, default="auto"
        Whether the ``y`` given to ``fit`` holds known classes (seeded k-means; see
        ``fit``). ``"auto"``: when ``y`` is a lazy (dask or Zarr) array or marks unknown
        rows with -1; a fully labelled NumPy ``y`` is then ignored, as scikit-learn's
        clusterers ignore it (pipelines and model selection pass a supervised target to
        every step's ``fit``, which must not silently constrain the clustering).
    metric : {"euclidean", "cosine"}, default="euclidean"
        ``"cosine"``: spherical k-means (Dhillon and Modha, 2001). Every pass scales
        each chunk's rows to unit norm as it reads them (a temporary of the chunk; no
        normalised copy of the data is made), rows go to the centre of highest cosine
        similarity, and each centre is the mean of its unit rows scaled back to unit
        norm (after the initialisation too, which runs on the unit rows of the sample;
        an ``init`` array is scaled to unit norm). ``inertia_`` is then
        ``sum w (1 - cos)``, half the squared distances between unit rows and centres.
        A row of norm 0 has no direction and is refused. Not available with known
        classes ``y``.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : dask.array.Array of shape (n_samples,), or ndarray for NumPy input
        Lazily computed: writing or computing it is one more pass.
    inertia_ : float
        Sum of weighted squared distances of samples to their closest centre; with
        ``metric="cosine"``, sum of weighted cosine distances ``1 - cos``.
    n_iter_ : int
    converged_ : bool
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when ``X`` was a DataFrame with string column names.
    n_passes_ : int
        Passes over the data the fit made (init, iterations and the final inertia). The
        same however the passes were chained: passes a chained round ran past
        convergence are not counted.
    coarse_centers_ : ndarray of shape (n_coarse, n_features)
        Only with ``algorithm="hierarchical"``: the coarse centres.
    coarse_cells_ : ndarray of shape (n_coarse + 1,)
        Only with ``algorithm="hierarchical"``: ``cluster_centers_[coarse_cells_[c]:
        coarse_cells_[c + 1]]`` are coarse cell ``c``'s fine centres.
    n_probe_ : int
        Only with ``algorithm="hierarchical"``: the probes the fit searched (``n_probe``,
        or what ``"auto"`` chose); ``predict`` and ``score`` use them while ``n_probe``
        is ``"auto"``.
    probe_miss_rate_ : float
        Only with ``algorithm="hierarchical"`` and an ``init`` that draws a sample (not
        an array): on a uniform sample of up to 2,048 rows, the share whose ``n_probe``
        probed cells miss their exact nearest centre, at the final centres.
    probe_excess_ : float
        Set with ``probe_miss_rate_``: on the same sample, the probed
        assignment's sum of squared distances over the exact one's, minus one. Above
        0.5% a :class:`~dclust.ProbeRecallWarning` is raised: Lloyd iterations compound
        that loss (see ``n_probe``).
    known_classes_ : ndarray of shape (n_known,)
        Only after a fit with known classes ``y``: the classes, sorted; cluster ``j``
        is class ``known_classes_[j]``'s.

    See Also
    --------
    sklearn.cluster.KMeans : the in-memory estimator this one follows.

    Examples
    --------
    >>> import dclust
    >>> X = dclust.open_array("blobs.zarr")                     # doctest: +SKIP
    >>> km = dclust.KMeans(n_clusters=16, random_state=0).fit(X) # doctest: +SKIP
    >>> km.cluster_centers_.shape                                # doctest: +SKIP
    (16, 32)
    """

    _params = (
        Param("n_clusters", "number of clusters", "int", low=1, short="-k", metavar="K",
              required=True),
        Param("init", "initialisation", "any", options=INITS),
        Param("n_init", "runs with different seeds; the lowest inertia wins ('auto': 10 for "
              "random init, else 1)", "int", low=1, options=("auto",), metavar="N"),
        Param("max_iter", "maximum Lloyd iterations per run", "int", low=1, metavar="N"),
        Param("tol", "stop when the centres move less than F times the mean feature variance",
              "float", low=0, metavar="F"),
        Param("metric", "euclidean, or cosine (spherical k-means: rows and centres at unit "
              "norm, nearest by cosine similarity)", "choice", options=METRICS),
        Param("verbose", "print a line per iteration", "int", low=0, result=False, flag=None),
        *common("random_state"),
        Param("copy_x", "no effect (X is never modified)", "bool", result=False, flag=None),
        Param("algorithm", "'lloyd' (exact), 'hierarchical' (two-level, for large k) or 'auto' "
              f"(hierarchical from k={HIERARCHICAL_MIN_K})", "choice", options=ALGORITHMS),
        Param("n_probe", "coarse cells each row searches (algorithm='hierarchical'; 'auto': "
              "the fewest of 4, 8, 16, 32 that lose at most 0.1 percent on a sample)",
              "int", low=1, options=("auto",), metavar="N"),
        *common("cache"),
        Param("init_size", "rows the seeding runs on", "int", low=1, none=True, metavar="N"),
        Param("oversampling_factor", "k-means|| candidates per round, times n_clusters",
              "float", low=0, low_open=True, metavar="F"),
        Param("init_max_iter", "k-means|| rounds", "int", low=0, metavar="N"),
        *common("split_every", "progress", "checkpoint", "resume", "storage_options", "device"),
        # result=False: with a y it changes the fit, and the y itself is fingerprinted.
        Param("semi_supervised", SEMI_SUPERVISED_DOC, "choice", options=("auto", True, False),
              result=False, flag=None),
    )
    _fitted_arrays = ("cluster_centers_", "known_classes_", "coarse_centers_", "coarse_cells_")
    _fitted_scalars = ("inertia_", "n_iter_", "converged_", "n_features_in_", "n_passes_",
                       "n_probe_", "probe_miss_rate_", "probe_excess_")

    def __init__(self, n_clusters=8, *, init="k-means||", n_init="auto", max_iter=300, tol=1e-4,
                 verbose=0, random_state=None, copy_x=True, algorithm="lloyd", cache="auto",
                 init_size=None, oversampling_factor=2.0, init_max_iter=5, split_every=None,
                 progress=True, checkpoint=None, resume=False, storage_options=None,
                 device="auto", semi_supervised="auto", metric="euclidean",
                 n_probe="auto"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.cache = cache
        self.init_size = init_size
        self.oversampling_factor = oversampling_factor
        self.init_max_iter = init_max_iter
        self.split_every = split_every
        self.progress = progress
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.device = device
        self.semi_supervised = semi_supervised
        self.metric = metric
        self.n_probe = n_probe

    def _check_params(self):
        check_init(self.init)
        check_algorithm(self.algorithm)
        super()._check_params()

    def fit(self, X, y=None, sample_weight=None):
        """Compute k-means clustering, optionally seeded by known classes.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        y : array-like, dask or zarr array of shape (n_samples,), default=None
            Ignored unless ``semi_supervised`` says to use it (see there); then the known classes ("seeded"
            or "constrained" k-means, Basu et al., 2002): the class of each row, an
            integer >= 0, or -1 where it is unknown. Each known class gets a cluster of
            its own, the first ``n_known`` clusters in sorted class order
            (``known_classes_``); it starts at the mean of the class's labelled rows,
            and those rows stay in it throughout the fit and in ``labels_``. The other
            ``n_clusters - n_known`` centres are seeded by ``init`` on a sample of the
            unlabelled rows, around the known classes' centres
            (:func:`dclust.kernels.seeded.seeded_kmeans_parallel` for k-means||), and
            unlabelled rows go to their nearest centre as usual. ``None``, or a ``y``
            that labels no row, is plain k-means, bit for bit. ``predict`` and
            ``transform`` ignore the classes (nearest centre).
        sample_weight : array-like or dask array of shape (n_samples,), default=None

        Returns
        -------
        self : KMeans
        """
        self._check_params()
        session = self._session(X, sample_weight, verbose=self.verbose)
        n, d = session.n_samples, session.n_features
        k = check_n_clusters(self.n_clusters, n)
        init = self.init
        if not isinstance(init, str) and not callable(init):
            init = check_init_array(init, k, d)  # before any data is placed on the cluster
        y = check_known_classes(y, n) if known_classes_given(self.semi_supervised, y) else None
        if y is not None and self.metric == "cosine":
            raise DclustValueError(
                "metric='cosine' cannot be combined with known classes y (seeded k-means): "
                "the seeded passes are euclidean. Fit without y (or semi_supervised=False), "
                "or scale the rows to unit norm yourself and use metric='euclidean'."
            )
        algorithm = resolve_algorithm(self.algorithm, k)
        if algorithm == "hierarchical":
            _check_hierarchical(self.metric, y, init)
        n_init = effective_n_init(self.n_init, init)
        session.set_label(f"KMeans(k={k})")
        params = result_params(self, n_clusters=k, init=init, n_init=n_init, algorithm=algorithm)
        if y is not None:
            params["y"] = array_digest(y) if isinstance(y, np.ndarray) else y.name
        session.open(params, self.random_state)
        seed = session.seed
        opts = dict(init=init, max_iter=self.max_iter, tol=self.tol, init_size=self.init_size,
                    oversampling_factor=self.oversampling_factor,
                    n_init_rounds=self.init_max_iter, metric=self.metric)
        if algorithm == "hierarchical":
            def make(run):
                return HierarchicalLloyd(k, n_probe=self.n_probe, seed=seed + run, **opts)
        elif y is None:
            def make(run):
                return Lloyd(k, seed=seed + run, **opts)
        else:
            y_rows = session.place_rows(y)

            def make(run):
                return SeededLloyd(k, y_rows, seed=seed + run, **opts)
        best = session.run(make, n_runs=n_init, key=lambda r: r["inertia"])
        session.close(
            f"KMeans(k={k}): {best['n_iter']} iterations, inertia {best['inertia']:.6g}, "
            f"{'converged' if best['converged'] else 'not converged'}"
        )
        if not best["converged"]:
            warnings.warn(
                f"KMeans stopped at max_iter={self.max_iter} before the centres moved less than "
                f"tol={self.tol}; raise max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        if best["n_nonempty"] < k:
            warnings.warn(
                f"Number of distinct clusters ({best['n_nonempty']}) found smaller than "
                f"n_clusters ({k}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.cluster_centers_ = np.asarray(best["centers"]).astype(session.dtype)
        self.inertia_ = float(best["inertia"])
        self.n_iter_ = int(best["n_iter"])
        self.converged_ = bool(best["converged"])
        self.n_features_in_ = int(d)
        self.n_passes_ = int(session.n_passes)
        if algorithm == "hierarchical":
            self.coarse_centers_ = np.asarray(best["coarse"]).astype(session.dtype)
            self.coarse_cells_ = np.asarray(best["cells"], dtype=np.int64)
            self.n_probe_ = int(best["n_probe"])
            for name in ("probe_miss_rate_", "probe_excess_"):
                self.__dict__.pop(name, None)
            if best["probe_miss"] is not None:
                self.probe_miss_rate_ = float(best["probe_miss"])
                self.probe_excess_ = float(best["probe_excess"])
            if getattr(self, "probe_excess_", 0.0) > PROBE_EXCESS_WARN:
                warnings.warn(
                    f"algorithm='hierarchical' with n_probe={self.n_probe_}: on a sample, the "
                    f"probed cells miss the nearest centre of {self.probe_miss_rate_:.0%} of "
                    f"the rows, whose squared distances sum {self.probe_excess_:.1%} above "
                    "the exact nearest's. The data looks nearly uniform at this scale, "
                    "where a probe-limited fit ends several % above exact Lloyd's inertia; "
                    "raise n_probe (each pass costs about n_probe / n_coarse of an exact "
                    "one) or use algorithm='lloyd'.",
                    ProbeRecallWarning,
                    stacklevel=2,
                )
        else:
            for name in ("coarse_centers_", "coarse_cells_", "n_probe_", "probe_miss_rate_",
                         "probe_excess_"):
                self.__dict__.pop(name, None)
        self._init_inertia = best["init_inertia"]
        self._fit_seed = seed
        self.labels_ = self._predict_array(session.X_source)
        if y is None:
            self.__dict__.pop("known_classes_", None)
        else:
            self.known_classes_ = np.asarray(best["classes"], dtype=np.int64)
            self.labels_ = seeded_labels_like(self.labels_, y, self.known_classes_)
        return self

    # ---- prediction --------------------------------------------------------------
    def _centers64(self):
        return np.asarray(self.cluster_centers_, dtype=np.float64)

    def _probes(self):
        """Probes of predict and score: ``n_probe``, or the fit's choice for "auto"."""
        if self.n_probe == "auto":
            return int(getattr(self, "n_probe_", DEFAULT_N_PROBE))
        return int(self.n_probe)

    def _predict_array(self, X):
        if hasattr(self, "coarse_centers_"):
            return map_rows(X, _probe_labels_block, self._centers64(),
                            np.asarray(self.coarse_centers_, dtype=np.float64),
                            self.coarse_cells_, self._probes())
        device = predict_device(getattr(self, "device", "auto"), X)
        return map_rows(X, _labels_block, self._centers64(), device, self.metric)

    def predict(self, X):
        """Index of the nearest centre for each sample.

        Returns an ndarray for NumPy input and a lazy dask array otherwise.
        """
        return self._predict_array(self._check_X(X))

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X, y)`` then return ``labels_``."""
        return self.fit(X, y, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Distances to every centre, shape (n_samples, n_clusters).

        Euclidean distances, or with ``metric="cosine"`` cosine distances ``1 - cos``.
        """
        X = self._check_X(X)
        C = self._centers64()
        out = map_rows(X, _distances_block, C, self.metric, n_out=C.shape[0], dtype=X.dtype)
        return out.astype(X.dtype, copy=False) if isinstance(out, np.ndarray) else out

    def fit_transform(self, X, y=None, sample_weight=None):
        """``fit(X, y)`` then return ``transform(X)``."""
        return self.fit(X, y, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of ``X`` under the fitted centres (one pass); with
        ``metric="cosine"``, of ``sum w (1 - cos)``."""
        session = self._scoring_session(X, sample_weight)
        if hasattr(self, "coarse_centers_"):
            agg = probe_aggregation(self.coarse_centers_, self._centers64(), self.coarse_cells_,
                                    self._probes(), 0)
        else:
            agg = lloyd_aggregation(self._centers64(), 0, self.metric)
        res = session.run_pass({"lloyd": agg}, name="kmeans-score")
        return -float(res["lloyd"]["inertia"])
