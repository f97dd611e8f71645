"""``dclust.KMedoids``: k-medoids (FasterPAM, distributed FastCLARA) with scikit-learn's API."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import ClusterMixin, TransformerMixin

from .._xp import to_numpy
from ..algorithms.kmedoids import (
    Clara,
    check_fasterpam_fits,
    cost_aggregation,
    default_n_sampling,
    fasterpam_fit,
)
from ..exceptions import ConvergenceWarning, DclustValueError
from ..kernels.medoids import medoid_assign
from ..kernels.metrics import METRICS, pairwise_distances
from ..params import Param, common, result_params
from ..runtime.device import predict_device, to_device_block
from ..validation import check_n_clusters
from .base import DclustEstimator, map_rows, register
from .base import require_finite_block as _require_finite

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
    checkpoint, resume, storage_options : as :class:`dclust.KMeans`. With
        ``method="clara"`` the state is saved after every CLARA sample and every
        refinement pass; ``method="fasterpam"`` runs in memory in one step, and its
        checkpoint holds the finished result.

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

    _params = (
        Param("n_clusters", "number of medoids", "int", low=1, short="-k", metavar="K",
              required=True),
        Param("metric", "dissimilarity", "any", options=METRICS),
        Param("method", "clara (samples and passes on the cluster) or fasterpam (the full "
              "n x n matrix in this machine's memory)", "choice", options=_METHODS),
        Param("n_sampling", "rows per CLARA sample (default 80 + 4k)", "int", low=1, none=True,
              metavar="N"),
        Param("n_sampling_iter", "CLARA samples", "int", low=1, metavar="N"),
        Param("max_iter", "maximum FasterPAM iterations per sample and refinement passes",
              "int", low=1, metavar="N"),
        Param("refine", "refinement passes on the full data after CLARA", "bool"),
        Param("max_memory", "bytes method=fasterpam may use for its matrix (default: half the "
              "available memory)", "int", low=0, none=True, result=False, metavar="BYTES"),
        *common("random_state", "cache", "split_every", "progress", "checkpoint", "resume",
                "storage_options", "device"),
    )

    def __init__(self, n_clusters=8, *, metric="euclidean", method="clara", n_sampling=None,
                 n_sampling_iter=5, max_iter=100, refine=True, max_memory=None, random_state=None,
                 cache="auto", split_every=None, progress=True, checkpoint=None, resume=False,
                 storage_options=None, device="auto"):
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
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.device = device

    def _check_params(self):
        check_metric(self.metric)
        super()._check_params()

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
        self._check_params()
        fasterpam = self.method == "fasterpam"
        session = self._session(X, None, place=not fasterpam,
                                **({"checks": None} if fasterpam else {}))
        n, d = session.n_samples, session.n_features
        k = check_n_clusters(self.n_clusters, n)
        if self.n_sampling is not None and self.n_sampling < k:
            raise DclustValueError(
                f"n_sampling={self.n_sampling!r} must be >= n_clusters={k}: each CLARA sample must "
                f"hold at least one row per medoid. Leave n_sampling=None for FastCLARA's "
                f"80 + 4 k = {default_n_sampling(k)} rows, or lower n_clusters."
            )
        label = f"KMedoids(k={k}, {self.method})"
        session.set_label(label)
        self.__dict__.pop("clara_inertia_", None)
        if fasterpam:
            check_fasterpam_fits(n, self.max_memory)  # before reading the data
            predict_device(self.device, session.X_input)  # the labels run there: refuse now
        session.open(result_params(self, n_clusters=k), self.random_state)
        if fasterpam:
            algo = _InMemory(k, self.metric, self.max_iter, session.seed, self.max_memory)
        else:
            algo = Clara(k, metric=self.metric, n_sampling=self.n_sampling,
                         n_sampling_iter=self.n_sampling_iter, max_iter=self.max_iter,
                         refine=bool(self.refine), seed=session.seed)
        res = session.run(lambda run: algo)
        if not fasterpam:
            self.clara_inertia_ = float(res["clara_loss"])
        session.close(f"{label}: loss {res['loss']:.6g}, {res['n_iter']} iterations, "
                      f"{session.n_passes} passes")
        if not res["converged"]:
            warnings.warn(
                f"KMedoids stopped at max_iter={self.max_iter} while medoids were still moving; "
                "raise max_iter.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.medoid_indices_ = np.asarray(res["medoid_rows"], dtype=np.int64)
        self.cluster_centers_ = np.asarray(res["medoids"]).astype(session.dtype)
        self.inertia_ = float(res["loss"])
        self.n_iter_ = int(res["n_iter"])
        self.converged_ = bool(res["converged"])
        self.n_passes_ = int(session.n_passes)
        self.n_features_in_ = int(d)
        self.labels_ = self._predict_array(session.X_source)
        return self

    # ---- prediction --------------------------------------------------------------
    def _medoids64(self):
        return np.asarray(self.cluster_centers_, dtype=np.float64)

    def _predict_array(self, X):
        device = predict_device(getattr(self, "device", "auto"), X)
        return map_rows(X, _labels_block, self._medoids64(), self.metric, device)

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
        out = map_rows(X, _distances_block, M, self.metric, device, n_out=M.shape[0],
                       dtype=X.dtype)
        return out.astype(X.dtype, copy=False) if isinstance(out, np.ndarray) else out

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def score(self, X, y=None):
        """Opposite of the total deviation of ``X`` from the fitted medoids (one pass)."""
        session = self._scoring_session(X)
        res = session.run_pass({"cost": cost_aggregation([self._medoids64()], self.metric)},
                               name="kmedoids-score")
        return -float(res["cost"]["cost"][0])


class _InMemory:
    """``method="fasterpam"``: the whole fit in one step on this machine (no passes)."""

    name = "KMedoids"
    init_label = "fasterpam"

    def __init__(self, k, metric, max_iter, seed, max_memory):
        self.k, self.metric, self.max_iter = k, metric, max_iter
        self.seed, self.max_memory = seed, max_memory

    def start(self, session):
        pass

    def init_state(self, session):
        X = session.X_input
        X_np = np.asarray(X if isinstance(X, np.ndarray) else X.compute())
        res = fasterpam_fit(X_np, self.k, metric=self.metric, max_iter=self.max_iter,
                            seed=self.seed, max_memory=self.max_memory)
        return {"medoid_rows": res.medoid_rows, "medoids": res.medoids, "loss": res.loss,
                "n_iter": res.n_iter, "converged": res.converged}

    def converged(self, state):
        return True

    def finalize(self, session, state):
        return state
