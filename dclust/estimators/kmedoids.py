"""``dclust.KMedoids``: k-medoids (FasterPAM, distributed FastCLARA) with scikit-learn's API."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import ClusterMixin, TransformerMixin

from ..algorithms.kmeans import check_data_stats, data_stats_aggregation
from ..algorithms.kmedoids import (
    clara_fit,
    check_fasterpam_fits,
    cost_aggregation,
    default_n_sampling,
    fasterpam_fit,
)
from .._xp import to_numpy
from ..exceptions import ConvergenceWarning, DclustValueError
from ..kernels.medoids import medoid_assign
from ..kernels.metrics import METRICS, pairwise_distances
from ..reductions.engine import run_pass
from ..runtime.device import check_device, predict_device, to_device_block
from ..runtime.progress import Progress
from ..validation import as_dask_rows, check_n_clusters, check_param, check_random_state
from .base import require_finite_block as _require_finite
from .base import DclustEstimator, prepare_fit_data, register

__all__ = ["KMedoids"]

_METHODS = ("clara", "fasterpam")


def _labels_block(X, medoids, metric, device="cpu", block_info=None):
    _require_finite(X, block_info)
    labels, _ = medoid_assign(to_device_block(X, device), to_device_block(medoids, device), metric)
    return to_numpy(labels).astype(np.int32)


def _distances_block(X, medoids, metric, device="cpu", block_info=None):
    _require_finite(X, block_info)
    D = pairwise_distances(to_device_block(X, device), to_device_block(medoids, device), metric)
    return to_numpy(D).astype(X.dtype, copy=False)


def check_metric(metric):
    """``metric`` if dclust's kernels know it, else a clear error."""
    if not isinstance(metric, str) or metric not in METRICS:
        hint = " (scipy's 'cityblock')" if metric == "cityblock" else ""
        raise DclustValueError(
            f"Unknown metric {metric!r}{hint}; expected one of "
            f"{', '.join(repr(m) for m in METRICS)}."
            + (" Use metric='manhattan'." if metric == "cityblock" else "")
        )
    return metric


@register
class KMedoids(ClusterMixin, TransformerMixin, DclustEstimator):
    """k-medoids clustering: FasterPAM in memory, FastCLARA and refinement on a Dask cluster.

    The medoids are rows of ``X``: the ``k`` rows that minimise the total deviation
    ``sum_i min_j d(x_i, m_j)`` under the chosen dissimilarity.

    ``method="clara"`` (the default) follows FastCLARA (Schubert & Rousseeuw, 2021):
    ``n_sampling_iter`` samples of ``n_sampling`` rows (drawn in one pass with their row
    numbers), each solved by FasterPAM on this machine with the best medoids so far added
    to it and used as its start; each sample's medoids are scored on the full data in one
    pass and the best kept. Refinement passes then move every medoid to the candidate
    that minimises the sum of dissimilarities from its cluster's members, summed over all
    rows; candidates are the members nearest the medoid and the most central of a random
    sample of members. When no medoid moves, FastPAM1 swap gains summed over all rows
    replace a medoid by a row elsewhere (repairing two medoids in one cluster and none in
    another). The loss never increases; refinement stops after a pass in which neither a
    move nor a swap lowers it.

    ``method="fasterpam"`` runs FasterPAM (the ``kmedoids`` package) on the full
    ``n x n`` dissimilarity matrix on this machine, when that matrix fits the memory
    budget (``max_memory``).

    Parameters
    ----------
    n_clusters : int, default=8
        Number of medoids.
    metric : {"euclidean", "sqeuclidean", "manhattan", "cosine"}, default="euclidean"
        Dissimilarity, with the values of ``scipy.spatial.distance.cdist`` (``"manhattan"``
        is scipy's ``"cityblock"``). For ``"cosine"`` an all-zero row is at distance 0
        from another zero row and 1 from any other row.
    method : {"clara", "fasterpam"}, default="clara"
    n_sampling : int, optional
        Rows per CLARA sample, the carried medoids included; default ``80 + 4 * n_clusters``
        (at most ``n_samples``). Must be at least ``n_clusters``.
    n_sampling_iter : int, default=5
        CLARA samples.
    max_iter : int, default=100
        Maximum FasterPAM iterations (in memory and on each CLARA sample), and maximum
        refinement passes.
    refine : bool, default=True
        Run the refinement passes after CLARA (``False``: CLARA alone).
    max_memory : int, optional
        Bytes ``method="fasterpam"`` may use for its ``n x n`` float64 matrix; default half
        of the memory available when ``fit`` starts.
    random_state : int, numpy Generator or None, default=None
        Seed of the samples (CLARA) or of FasterPAM's random start. With the same seed and
        chunking the result is the same whatever the number of workers.
    cache : {"auto", "memory", "none"}, default="auto"
        Whether ``X`` is persisted on the workers during the fit (see ``KMeans``).
    split_every : int, optional
        Fan-in of the reduction tree (default 8).
    progress : bool, default=True
        Show a progress line for fits that run longer than a few seconds.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the passes over the data run. ``"cuda"``: on the workers' GPUs through CuPy
        (chunks move to the GPU once per pass, or stay there when they fit; only the
        per-cluster statistics come back). ``"auto"``: the GPUs when every worker has one,
        else the CPUs. FasterPAM on the CLARA samples, and ``method="fasterpam"`` on the
        full matrix, run on this machine's CPU whatever the device.

    Attributes
    ----------
    medoid_indices_ : ndarray of shape (n_clusters,), int64
        Row numbers of the medoids in ``X``.
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        The medoids, ``X[medoid_indices_]``.
    labels_ : dask.array.Array of shape (n_samples,), or ndarray for NumPy input
        Index of each row's nearest medoid; lazy for dask input.
    inertia_ : float
        Sum of the dissimilarities of the rows to their nearest medoid.
    clara_inertia_ : float
        (``method="clara"``) the loss of the best CLARA sample's medoids, before refinement.
    n_iter_ : int
        FasterPAM iterations (``"fasterpam"``) or refinement passes (``"clara"``).
    converged_ : bool
    n_passes_ : int
        Passes over the data (0 for ``"fasterpam"``).
    n_features_in_ : int

    See Also
    --------
    kmedoids.KMedoids : the in-memory reference implementation.
    KMeans : centres that are means rather than rows.

    Examples
    --------
    >>> import dclust
    >>> X = dclust.open_array("blobs.zarr")                                  # doctest: +SKIP
    >>> km = dclust.KMedoids(16, metric="manhattan", random_state=0).fit(X)  # doctest: +SKIP
    >>> km.medoid_indices_[:3]                                               # doctest: +SKIP
    array([  1042, 883121, 50021])
    """

    _fitted_arrays = ("cluster_centers_", "medoid_indices_")
    _fitted_scalars = ("inertia_", "clara_inertia_", "n_iter_", "converged_", "n_passes_",
                       "n_features_in_")

    def __init__(self, n_clusters=8, *, metric="euclidean", method="clara", n_sampling=None,
                 n_sampling_iter=5, max_iter=100, refine=True, max_memory=None, random_state=None,
                 cache="auto", split_every=None, progress=True, device="auto"):
        self.n_clusters = n_clusters
        self.metric = metric
        self.method = method
        self.n_sampling = n_sampling
        self.n_sampling_iter = n_sampling_iter
        self.max_iter = max_iter
        self.refine = refine
        self.max_memory = max_memory
        self.random_state = random_state
        self.cache = cache
        self.split_every = split_every
        self.progress = progress
        self.device = device

    def _validate_params(self):
        check_device(self.device)
        check_metric(self.metric)
        check_param("method", self.method, options=_METHODS)
        check_param("n_sampling_iter", self.n_sampling_iter, kind=numbers.Integral, low=1)
        check_param("max_iter", self.max_iter, kind=numbers.Integral, low=1)
        check_param("refine", self.refine, options=(True, False))
        check_param("cache", self.cache, options=("auto", "memory", "none"))
        if self.n_sampling is not None:
            check_param("n_sampling", self.n_sampling, kind=numbers.Integral, low=1)
        if self.max_memory is not None:
            check_param("max_memory", self.max_memory, kind=numbers.Integral, low=0)
        if self.split_every is not None:
            check_param("split_every", self.split_every, kind=numbers.Integral, low=2)

    def fit(self, X, y=None):
        """Compute k-medoids clustering.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        self : KMedoids
        """
        self._validate_params()
        X_arr = as_dask_rows(X)
        n, d = X_arr.shape
        k = check_n_clusters(self.n_clusters, n)
        if self.n_sampling is not None and self.n_sampling < k:
            raise DclustValueError(
                f"n_sampling={self.n_sampling!r} must be >= n_clusters={k}: each CLARA sample must "
                f"hold at least one row per medoid. Leave n_sampling=None for FastCLARA's "
                f"80 + 4 k = {default_n_sampling(k)} rows, or lower n_clusters."
            )
        seed = check_random_state(self.random_state)
        label = f"KMedoids(k={k}, {self.method})"
        progress = Progress(label, enabled=bool(self.progress))
        for attr in ("clara_inertia_",):
            self.__dict__.pop(attr, None)
        if self.method == "fasterpam":
            check_fasterpam_fits(n, self.max_memory)  # before reading the data
            predict_device(self.device, X_arr)  # the labels run there: refuse a bad device now
            X_np = X_arr if isinstance(X_arr, np.ndarray) else X_arr.compute()
            X_source = X_arr
            res = fasterpam_fit(np.asarray(X_np), k, metric=self.metric, max_iter=self.max_iter,
                                seed=seed, max_memory=self.max_memory)
        else:
            X_work, _, X_source = prepare_fit_data(X_arr, None, self.cache, self.device)
            res = clara_fit(X_work, k, metric=self.metric, n_sampling=self.n_sampling,
                            n_sampling_iter=self.n_sampling_iter, max_iter=self.max_iter,
                            refine=bool(self.refine), seed=seed, split_every=self.split_every,
                            progress=progress)
            self.clara_inertia_ = float(res.clara_loss)
        progress.close(f"{label}: loss {res.loss:.6g}, {res.n_iter} iterations, "
                       f"{res.n_passes} passes")
        if not res.converged:
            warnings.warn(
                f"KMedoids stopped at max_iter={self.max_iter} while medoids were still moving; "
                "raise max_iter.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.medoid_indices_ = np.asarray(res.medoid_rows, dtype=np.int64)
        self.cluster_centers_ = np.asarray(res.medoids).astype(X_arr.dtype)
        self.inertia_ = float(res.loss)
        self.n_iter_ = int(res.n_iter)
        self.converged_ = bool(res.converged)
        self.n_passes_ = int(res.n_passes)
        self.n_features_in_ = int(d)
        self.labels_ = self._predict_array(X_source)
        return self

    # ---- prediction --------------------------------------------------------------
    def _medoids64(self):
        return np.asarray(self.cluster_centers_, dtype=np.float64)

    def _predict_array(self, X):
        M = self._medoids64()
        device = predict_device(getattr(self, "device", "auto"), X)
        if isinstance(X, np.ndarray):
            return _labels_block(X, M, self.metric, device)
        return X.map_blocks(_labels_block, M, self.metric, device, drop_axis=1, dtype=np.int32,
                            meta=np.empty((0,), np.int32))

    def predict(self, X):
        """Index of the nearest medoid of each sample.

        Returns an ndarray for NumPy input and a lazy dask array otherwise.
        """
        return self._predict_array(self._check_X(X))

    def fit_predict(self, X, y=None):
        """``fit(X)`` then return ``labels_``."""
        return self.fit(X).labels_

    def transform(self, X):
        """Dissimilarities to every medoid, shape (n_samples, n_clusters)."""
        X = self._check_X(X)
        M = self._medoids64()
        device = predict_device(getattr(self, "device", "auto"), X)
        if isinstance(X, np.ndarray):
            return _distances_block(X, M, self.metric, device).astype(X.dtype)
        k = M.shape[0]
        return X.map_blocks(_distances_block, M, self.metric, device, chunks=(X.chunks[0], (k,)),
                            dtype=X.dtype)

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def score(self, X, y=None):
        """Opposite of the total deviation of ``X`` from the fitted medoids (one pass)."""
        X, _, _ = prepare_fit_data(self._check_X(X), None, "none", getattr(self, "device", "auto"))
        res = run_pass(X, {"cost": cost_aggregation([self._medoids64()], self.metric),
                           "data": data_stats_aggregation()},
                       split_every=self.split_every, name="kmedoids-score")
        check_data_stats(res["data"], X)  # NaN and inf, found in the same pass
        return -float(res["cost"]["cost"][0])
