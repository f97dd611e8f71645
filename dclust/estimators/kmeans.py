"""``dclust.KMeans``: scikit-learn's estimator interface over distributed k-means."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import ClusterMixin, TransformerMixin

from ..algorithms.kmeans import check_init_array, kmeans_fit, lloyd_aggregation
from ..exceptions import ConvergenceWarning, DataError, DclustValueError
from ..kernels.datastats import count_nonfinite
from ..kernels.distances import euclidean_distances
from ..kernels.lloyd import nearest_center
from ..reductions.engine import run_pass
from ..runtime.progress import Progress
from ..validation import as_dask_rows, check_n_clusters, check_param, check_random_state
from .base import DclustEstimator, prepare_fit_data, register

__all__ = ["KMeans"]

_INITS = ("k-means||", "k-means++", "random")


def _require_finite(X, block_info=None):
    """Refuse NaN or inf rows: a label or distance computed from them would be noise."""
    n_bad, row = count_nonfinite(X)
    if n_bad:
        where = f"row {row:,}"
        if block_info and None not in block_info:
            loc = block_info[0]
            where = f"chunk {loc['chunk-location'][0]}, row {loc['array-location'][0][0] + row:,}"
        raise DataError(
            f"X contains {n_bad:,} non-finite values, NaN or inf (first in {where}). "
            "Clean the data before predicting."
        )


def _labels_block(X, centers, block_info=None):
    _require_finite(X, block_info)
    labels, _ = nearest_center(X, centers)
    return labels.astype(np.int32)


def _distances_block(X, centers, block_info=None):
    _require_finite(X, block_info)
    return euclidean_distances(X, centers)


@register
class KMeans(ClusterMixin, TransformerMixin, DclustEstimator):
    """K-means clustering of data larger than memory, on a Dask cluster.

    Each iteration is one pass over the data: every row-chunk computes its nearest
    centres by GEMM and the per-cluster sums in one fused kernel, and a tree reduction
    brings the ``k x d`` sums back to the client.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means||", "k-means++", "random"} or ndarray of shape (n_clusters, n_features), default="k-means||"
        ``"k-means||"``: Bahmani et al.'s scalable k-means++ (about ``2k`` candidates a
        round, 5 rounds, candidates weighted by the points they attract, reclustered with
        weighted k-means++), run on a uniform sample of ``init_size`` rows drawn in one
        pass. ``"k-means++"``: greedy k-means++ on that sample. ``"random"``: ``k`` rows
        drawn at random (weighted by ``sample_weight``). An array is used as given.
    n_init : int, default=1
        Runs with different seeds; the one with the lowest inertia is kept.
    max_iter : int, default=300
        Maximum Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence when the squared movement of the centres is at most ``tol`` times
        the mean per-feature variance of ``X`` (scikit-learn's rule).
    random_state : int, numpy Generator or None, default=None
        Seed. With the same seed and chunking the result is bit-identical whatever the
        number of workers.
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

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : dask.array.Array of shape (n_samples,), or ndarray for NumPy input
        Lazily computed: writing or computing it is one more pass.
    inertia_ : float
        Sum of weighted squared distances of samples to their closest centre.
    n_iter_ : int
    converged_ : bool
    n_features_in_ : int
    n_passes_ : int
        Passes over the data the fit made (init, iterations and the final inertia).

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

    _fitted_arrays = ("cluster_centers_",)
    _fitted_scalars = ("inertia_", "n_iter_", "converged_", "n_features_in_", "n_passes_")

    def __init__(self, n_clusters=8, *, init="k-means||", n_init=1, max_iter=300, tol=1e-4,
                 random_state=None, cache="auto", init_size=None, oversampling_factor=2.0,
                 init_max_iter=5, split_every=None, progress=True):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.cache = cache
        self.init_size = init_size
        self.oversampling_factor = oversampling_factor
        self.init_max_iter = init_max_iter
        self.split_every = split_every
        self.progress = progress

    def _validate_params(self):
        if isinstance(self.init, str):
            if self.init not in _INITS:
                raise DclustValueError(
                    f"Unknown init {self.init!r}; expected one of 'k-means||', 'k-means++', "
                    "'random' or an array of shape (n_clusters, n_features)."
                )
        elif not hasattr(self.init, "shape") and not isinstance(self.init, (list, tuple)):
            raise DclustValueError(
                f"init={self.init!r} is not valid; expected one of 'k-means||', 'k-means++', "
                "'random' or an array of shape (n_clusters, n_features)."
            )
        check_param("n_init", self.n_init, kind=numbers.Integral, low=1)
        check_param("max_iter", self.max_iter, kind=numbers.Integral, low=1)
        check_param("tol", self.tol, kind=numbers.Real, low=0)
        check_param("cache", self.cache, options=("auto", "memory", "none"))
        check_param("oversampling_factor", self.oversampling_factor, kind=numbers.Real, low=0,
                    low_inclusive=False)
        check_param("init_max_iter", self.init_max_iter, kind=numbers.Integral, low=0)
        if self.init_size is not None:
            check_param("init_size", self.init_size, kind=numbers.Integral, low=1)
        if self.split_every is not None:
            check_param("split_every", self.split_every, kind=numbers.Integral, low=2)

    def fit(self, X, y=None, sample_weight=None):
        """Compute k-means clustering.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like or dask array of shape (n_samples,), default=None

        Returns
        -------
        self : KMeans
        """
        self._validate_params()
        X_arr = as_dask_rows(X)
        n, d = X_arr.shape
        k = check_n_clusters(self.n_clusters, n)
        init = self.init
        if not isinstance(init, str):
            init = check_init_array(init, k, d)  # before any data is placed on the cluster
        X_work, w_work, X_source = prepare_fit_data(X_arr, sample_weight, self.cache)
        seed = check_random_state(self.random_state)
        n_init = 1 if not isinstance(init, str) else self.n_init
        progress = Progress(f"KMeans(k={k})", enabled=bool(self.progress))
        best = None
        data_stats = None
        passes = 0
        for run in range(n_init):
            res = kmeans_fit(
                X_work, w_work, k, init=init, max_iter=self.max_iter, tol=self.tol,
                seed=seed + run, init_size=self.init_size,
                oversampling_factor=self.oversampling_factor, n_init_rounds=self.init_max_iter,
                split_every=self.split_every, progress=progress, data_stats=data_stats,
            )
            data_stats = res.data_stats
            passes += res.n_passes
            if best is None or res.inertia < best.inertia:
                best = res
        progress.close(
            f"KMeans(k={k}): {best.n_iter} iterations, inertia {best.inertia:.6g}, "
            f"{'converged' if best.converged else 'not converged'}"
        )
        if not best.converged:
            warnings.warn(
                f"KMeans stopped at max_iter={self.max_iter} before the centres moved less than "
                f"tol={self.tol}; raise max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        if best.n_nonempty < k:
            warnings.warn(
                f"Number of distinct clusters ({best.n_nonempty}) found smaller than "
                f"n_clusters ({k}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        dtype = X_arr.dtype
        self.cluster_centers_ = best.centers.astype(dtype)
        self.inertia_ = float(best.inertia)
        self.n_iter_ = int(best.n_iter)
        self.converged_ = bool(best.converged)
        self.n_features_in_ = int(d)
        self.n_passes_ = int(passes)
        self._init_inertia = best.init_inertia
        self.labels_ = self._predict_array(X_source)
        return self

    # ---- prediction --------------------------------------------------------------
    def _centers64(self):
        return np.asarray(self.cluster_centers_, dtype=np.float64)

    def _check_X(self, X):
        self._check_fitted()
        X = as_dask_rows(X)
        if X.shape[1] != self.cluster_centers_.shape[1]:
            raise DclustValueError(
                f"X has {X.shape[1]} features, but KMeans is expecting "
                f"{self.cluster_centers_.shape[1]} features as input (the number it was fitted on)."
            )
        return X

    def _predict_array(self, X):
        C = self._centers64()
        if isinstance(X, np.ndarray):
            return _labels_block(X, C)
        return X.map_blocks(_labels_block, C, drop_axis=1, dtype=np.int32,
                            meta=np.empty((0,), np.int32))

    def predict(self, X):
        """Index of the nearest centre for each sample.

        Returns an ndarray for NumPy input and a lazy dask array otherwise.
        """
        return self._predict_array(self._check_X(X))

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X)`` then return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Euclidean distances to every centre, shape (n_samples, n_clusters)."""
        X = self._check_X(X)
        C = self._centers64()
        if isinstance(X, np.ndarray):
            return _distances_block(X, C).astype(X.dtype)
        k = C.shape[0]
        return X.map_blocks(_distances_block, C, chunks=(X.chunks[0], (k,)), dtype=X.dtype)

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of ``X`` under the fitted centres (one pass)."""
        X, w, _ = prepare_fit_data(self._check_X(X), sample_weight, "none")
        C = self._centers64()
        res = run_pass(X, {"lloyd": lloyd_aggregation(C, 0)}, sample_weight=w,
                       split_every=self.split_every, name="kmeans-score")
        return -float(res["lloyd"]["inertia"])
