"""``dclust.MiniBatchKMeans``: scikit-learn's mini-batch k-means over chunked data and
streams."""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..algorithms.kmeans import INITS, check_init_array, seed_centers
from ..algorithms.minibatch import (MiniBatchLloyd, as_batch, check_decay, check_finite_rows,
                                    decay_factor, gather_rows, minibatch_step)
from ..exceptions import DclustValueError
from ..kernels.lloyd import nearest_center
from ..params import Param, common, result_params
from ..validation import check_n_clusters, check_random_state, check_sample_weight
from .base import register
from .kmeans import KMeans, check_init

__all__ = ["MiniBatchKMeans"]


def _n_init(n_init, init):
    """scikit-learn's MiniBatchKMeans rule: ``"auto"`` is 1 for k-means++ (and k-means||)
    and an array, 3 for ``"random"`` and a callable."""
    explicit = not isinstance(init, str) and not callable(init)
    if n_init == "auto":
        return 1 if explicit or init in ("k-means++", "k-means||") else 3
    if explicit and n_init != 1:
        warnings.warn(
            "Explicit initial center position passed: performing only one init in "
            f"MiniBatchKMeans instead of n_init={n_init}.", RuntimeWarning, stacklevel=3)
        return 1
    return int(n_init)


def _init_size(init_size, batch_size, n_clusters, n_samples):
    """scikit-learn's default: ``3 * batch_size`` rows, at least ``3 * n_clusters``."""
    m = init_size
    if m is None:
        m = 3 * batch_size
        if m < n_clusters:
            m = 3 * n_clusters
    elif m < n_clusters:
        warnings.warn(
            f"init_size={m} should be larger than n_clusters={n_clusters}. Setting it to "
            "min(3*n_clusters, n_samples)", RuntimeWarning, stacklevel=3)
        m = 3 * n_clusters
    return int(min(m, n_samples))


@register
class MiniBatchKMeans(KMeans):
    """Mini-batch k-means on chunked data larger than memory, and on streams.

    scikit-learn's :class:`~sklearn.cluster.MiniBatchKMeans` (same parameters, update
    rule, low-count reassignment and early stopping) where the batches are drawn from
    the chunks of a dask or Zarr array on the workers: each round of steps gathers only
    its rows (a few MB) in one small graph, and the updates run on the client with
    dclust's compiled kernels. NumPy input runs entirely in this process. A fit reads a
    fraction of the data (``n_rows_read_``), not full passes.

    Each step labels a batch and moves every centre ``j`` that received rows to
    ``(c_j count_j + sum w x) / (count_j + sum w)``, ``count_j`` the weight it absorbed
    so far (a per-centre learning rate of ``1 / count_j``). With ``decay`` the counts
    are multiplied by ``0.5 ** (1 / decay)`` before every batch (or ``0.5 ** (rows /
    decay)`` with ``decay_unit="rows"``), Spark's forgetful streaming k-means: old data
    fades with that half-life, and the centres follow a drifting distribution.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means||", "k-means++", "random"}, callable or array of shape (n_clusters, n_features), default="k-means||"
        Seeding on ``init_size`` random rows. dclust's k-means|| (as for
        :class:`KMeans`; scikit-learn's default is k-means++): its start is good enough
        that, with ``tol=1e-4``, a few percent of the rows reach the inertia of a full
        k-means (``benchmarks/bench_minibatch.py``).
    max_iter : int, default=100
        Passes' worth of rows at most: the fit stops after ``max_iter * n_samples /
        batch_size`` steps.
    batch_size : int, default=1024
    verbose : int, default=0
    compute_labels : bool, default=True
        After ``fit``, compute ``labels_`` (lazily for dask input) and ``inertia_`` over
        the whole data (one pass). With ``False``, ``inertia_`` is scikit-learn's
        estimate from the smoothed batch inertia and the fit reads only its batches.
    random_state : int, Generator, RandomState or None, default=None
        The batches drawn depend on the seed and on ``batch_size`` only: the same seed
        gives the same model whatever the chunking and the number of workers, and for
        NumPy and dask input alike.
    tol : float, default=0.0
        Stop when the squared movement of the centres in one step is at most ``tol``
        times the mean per-feature variance (exact for NumPy input, estimated on a
        sample of rows for chunked input). scikit-learn's default, 0, leaves only
        ``max_no_improvement``, which the noise of the batch inertia keeps from firing
        long after a good start: ``tol=1e-4`` stops once the centres settle.
    max_no_improvement : int or None, default=10
        Stop after that many steps without improvement of the exponentially weighted
        average of the batch inertia (``None``: never).
    init_size : int, optional
        Rows the seeding runs on; default ``3 * batch_size`` (at least ``3 *
        n_clusters``).
    n_init : "auto" or int, default="auto"
        Seedings tried, each on its own sample; the one with the lowest inertia on a
        validation sample of ``init_size`` rows is kept. ``"auto"``: 1 for k-means++ and
        k-means||, 3 for random and a callable.
    reassignment_ratio : float, default=0.01
        Centres whose count falls below this fraction of the largest are moved to random
        rows of the batch.
    decay : float, optional
        Half-life of old data, in ``decay_unit``; ``None`` forgets nothing.
    decay_unit : {"batches", "rows"}, default="batches"
    oversampling_factor, init_max_iter : k-means|| parameters (see :class:`KMeans`).
    progress, checkpoint, resume, storage_options : as :class:`KMeans`; the state is
        saved after every round of steps (:func:`~dclust.algorithms.minibatch.steps_per_round`).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    counts_ : ndarray of shape (n_clusters,)
        Weight absorbed by each centre (decayed with ``decay``).
    labels_ : ndarray or dask array of shape (n_samples,)
        With ``compute_labels``; for ``partial_fit``, the labels of its batch.
    inertia_ : float
    n_iter_ : int
        Passes' worth of rows used (``ceil(n_steps_ * batch_size / n_samples)``).
    n_steps_ : int
    n_rows_read_ : int
        Rows the fit read for its seeding and batches.
    n_rows_seen_ : int
        Rows given to ``partial_fit`` so far.
    seen_sum_ : ndarray of shape (n_features,)
        Sum of the rows given to ``partial_fit`` (their mean is ``seen_sum_ /
        n_rows_seen_``; a stream uses it to check that each row was used once).
    stream_position_ : int
        Rows of the followed array consumed by :func:`dclust.stream_fit`.

    See Also
    --------
    sklearn.cluster.MiniBatchKMeans : the in-memory estimator this one follows.
    dclust.stream_fit : follow a growing Zarr array.

    Examples
    --------
    >>> import numpy as np, dclust
    >>> X = np.random.default_rng(0).normal(size=(10000, 4))
    >>> mbk = dclust.MiniBatchKMeans(4, random_state=0).fit(X)
    >>> mbk.cluster_centers_.shape
    (4, 4)
    """

    # Euclidean only (scikit-learn's MiniBatchKMeans has no metric); KMeans' predict,
    # transform and score, inherited, read it.
    metric = "euclidean"

    _params = (
        Param("n_clusters", "number of clusters", "int", low=1, short="-k", metavar="K",
              required=True),
        Param("init", "initialisation", "any", options=INITS),
        Param("max_iter", "passes' worth of rows at most", "int", low=1, metavar="N"),
        Param("batch_size", "rows per mini-batch", "int", low=1, metavar="B"),
        Param("verbose", "print a line per step", "int", low=0, result=False, flag=None),
        Param("compute_labels", "compute labels and inertia over all rows after the fit",
              "bool", result=False),
        *common("random_state"),
        Param("tol", "stop when a step moves the centres less than F times the mean feature "
              "variance", "float", low=0, metavar="F"),
        Param("max_no_improvement", "stop after N steps without improvement of the smoothed "
              "batch inertia", "int", low=0, none=True, metavar="N"),
        Param("init_size", "rows the seeding runs on (default 3 * batch_size)", "int", low=1,
              none=True, metavar="N"),
        Param("n_init", "seedings tried ('auto': 1 for k-means++, 3 for random)", "int", low=1,
              options=("auto",), metavar="N"),
        Param("reassignment_ratio", "move centres whose count is below F times the largest",
              "float", low=0, metavar="F"),
        Param("decay", "half-life of old data (in decay-unit); none: no forgetting", "float",
              low=0, low_open=True, none=True, metavar="H"),
        Param("decay_unit", "unit of the half-life", "choice", options=("batches", "rows")),
        Param("oversampling_factor", "k-means|| candidates per round, times n_clusters",
              "float", low=0, low_open=True, metavar="F"),
        Param("init_max_iter", "k-means|| rounds", "int", low=0, metavar="N"),
        *common("progress", "checkpoint", "resume", "storage_options"),
    )
    _fitted_arrays = ("cluster_centers_", "counts_", "seen_sum_")
    _fitted_scalars = ("inertia_", "n_iter_", "n_steps_", "n_features_in_", "n_rows_read_",
                       "n_rows_seen_", "stream_position_", "seed_", "since_reassign_")

    def __init__(self, n_clusters=8, *, init="k-means||", max_iter=100, batch_size=1024,
                 verbose=0, compute_labels=True, random_state=None, tol=0.0,
                 max_no_improvement=10, init_size=None, n_init="auto", reassignment_ratio=0.01,
                 decay=None, decay_unit="batches", oversampling_factor=2.0, init_max_iter=5,
                 progress=False, checkpoint=None, resume=False, storage_options=None):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.verbose = verbose
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.decay = decay
        self.decay_unit = decay_unit
        self.oversampling_factor = oversampling_factor
        self.init_max_iter = init_max_iter
        self.progress = progress
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options

    def _check_params(self):
        check_init(self.init)
        check_decay(self.decay, self.decay_unit)
        from ..params import check_params

        check_params(self)

    # ---- fit -----------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None):
        """Compute the centres from mini-batches drawn from ``X``.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            Weights of the rows in the updates (batches are drawn uniformly).

        Returns
        -------
        self : MiniBatchKMeans
        """
        self._check_params()
        session = self._session(X, None, place=False, checks=None, verbose=self.verbose)
        n, d = session.n_samples, session.n_features
        k = check_n_clusters(self.n_clusters, n)
        session._weights = _weights(sample_weight, n, session.X_input)
        init = self.init
        if not isinstance(init, str) and not callable(init):
            init = check_init_array(init, k, d)
        n_init = _n_init(self.n_init, init)
        B = int(min(self.batch_size, n))
        m = _init_size(self.init_size, B, k, n)
        session.set_label(f"MiniBatchKMeans(k={k})")
        session.open(result_params(self, n_clusters=k, init=init, n_init=n_init,
                                   batch_size=B, init_size=m), self.random_state)
        seed = session.seed
        X_ = session.X
        tol_abs = self.tol * _mean_variance(X_, seed) if self.tol > 0 else 0.0
        dtype = np.float32 if X_.dtype == np.float32 else np.float64
        max_steps = max(1, (self.max_iter * n) // B)
        algo = MiniBatchLloyd(
            k, batch_size=B, init=init, n_init=n_init, init_size=m, max_steps=max_steps,
            max_no_improvement=self.max_no_improvement, tol_abs=tol_abs,
            reassignment_ratio=self.reassignment_ratio, seed=seed, decay=self.decay,
            decay_unit=self.decay_unit, dtype=dtype,
            oversampling_factor=self.oversampling_factor, n_init_rounds=self.init_max_iter)
        res = session.run(lambda run: algo)
        session.close(f"MiniBatchKMeans(k={k}): {res['step']} steps, ewa inertia "
                      f"{res['ewa']:.6g}, stopped by {res['stop'] or 'max_iter'}")
        self.cluster_centers_ = np.asarray(res["centers"]).astype(session.dtype)
        self._centers_f64 = np.asarray(res["centers"], dtype=np.float64)
        self.counts_ = np.asarray(res["counts"], dtype=np.float64)
        self.n_steps_ = int(res["step"])
        self.n_iter_ = int(math.ceil(self.n_steps_ * B / n))
        self.n_features_in_ = int(d)
        self.n_rows_read_ = int(res["rows_read"])
        self.n_passes_ = 0
        self.converged_ = bool(res["converged"])
        self.seed_ = int(seed)
        self.since_reassign_ = int(res["since_reassign"])
        self._batch_size = B
        if self.compute_labels:
            self._labels_inertia(session.X_source, session.w)
        else:
            total = float(n if session.w is None else np.asarray(session.w.sum()))
            self.inertia_ = float(res["ewa"]) * total
        return self

    def _labels_inertia(self, X, w):
        """``labels_`` and ``inertia_`` over all of ``X`` (one pass for chunked input)."""
        C = self._centers64()
        if isinstance(X, np.ndarray):
            self.labels_, dist = nearest_center(X, C)
            self.labels_ = self.labels_.astype(np.int32)
            self.inertia_ = float(dist.sum() if w is None else (dist * w).sum())
            return
        from ..algorithms.kmeans import lloyd_aggregation
        from ..reductions.engine import run_pass

        self.labels_ = self._predict_array(X)
        res = run_pass(X, {"l": lloyd_aggregation(C, 0)}, sample_weight=w,
                       name="minibatch-inertia")["l"]
        self.inertia_ = float(res["inertia"])
        self.n_passes_ = 1

    def _centers64(self):
        C = getattr(self, "_centers_f64", None)
        if C is None or C.shape != np.shape(self.cluster_centers_):
            C = np.asarray(self.cluster_centers_, dtype=np.float64)
        return C

    # ---- partial_fit ---------------------------------------------------------------
    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the centres with one mini-batch ``X``.

        Parameters
        ----------
        X : array-like, dask array or zarr array (a region) of shape (n_rows, n_features)
            One batch; a dask or Zarr array is read to memory.
        y : Ignored
        sample_weight : array-like of shape (n_rows,), default=None

        Returns
        -------
        self : MiniBatchKMeans
        """
        first = not hasattr(self, "cluster_centers_")
        if first:
            self._check_params()
            self._remember_feature_names(X)
        else:
            self._check_feature_names(X)
        Xb = as_batch(X)
        n, d = Xb.shape
        w = check_sample_weight(sample_weight, n)
        w = None if w is None else np.asarray(w, dtype=np.float64)
        check_finite_rows(Xb, np.arange(n))
        if first:
            self._first_batch(Xb, w)
        elif d != self.n_features_in_:
            raise DclustValueError(
                f"X has {d} features, but MiniBatchKMeans is expecting {self.n_features_in_} "
                "features as input (the number it was fitted on).")
        C = self._centers64().copy()
        counts = np.asarray(self.counts_, dtype=np.float64).copy()
        self.since_reassign_ = int(self.since_reassign_) + n
        reassign = bool((counts == 0).any()) or self.since_reassign_ >= 10 * C.shape[0]
        if reassign:
            self.since_reassign_ = 0
        rng = np.random.default_rng([int(self.seed_), 23, int(self.n_steps_)])
        dtype = np.float32 if Xb.dtype == np.float32 else np.float64
        minibatch_step(np.ascontiguousarray(Xb, dtype=dtype), w, C, counts, rng=rng,
                       reassign=reassign, reassignment_ratio=self.reassignment_ratio,
                       discount=decay_factor(self.decay, self.decay_unit, n))
        self._centers_f64 = C
        self.cluster_centers_ = C.astype(Xb.dtype)
        self.counts_ = counts
        self.n_steps_ = int(self.n_steps_) + 1
        self.n_rows_seen_ = int(self.n_rows_seen_) + n
        self.seen_sum_ = np.asarray(self.seen_sum_, dtype=np.float64) + \
            Xb.sum(axis=0, dtype=np.float64)
        if self.compute_labels:
            labels, dist = nearest_center(Xb, C)
            self.labels_ = labels.astype(np.int32)
            self.inertia_ = float(dist.sum() if w is None else (dist * w).sum())
        return self

    def _first_batch(self, Xb, w):
        n, d = Xb.shape
        k = check_n_clusters(self.n_clusters, n)
        seed = check_random_state(self.random_state)
        init = self.init
        if not isinstance(init, str) and not callable(init):
            C = check_init_array(init, k, d)
        else:
            m = _init_size(self.init_size, min(self.batch_size, n), k, n)
            rows = np.random.default_rng([seed, 11]).integers(0, n, size=m) if m < n \
                else np.arange(n)
            ws = np.ones(rows.size) if w is None else w[rows]
            dtype = np.float32 if Xb.dtype == np.float32 else np.float64
            C = seed_centers({"x": np.ascontiguousarray(Xb[rows], dtype=dtype), "weight": ws},
                             rows.size, rows.size, k, init, seed, dtype=dtype, n_features=d,
                             oversampling_factor=self.oversampling_factor,
                             n_rounds=self.init_max_iter)
        self._centers_f64 = np.asarray(C, dtype=np.float64)
        self.cluster_centers_ = self._centers_f64.astype(Xb.dtype)
        self.counts_ = np.zeros(k)
        self.seed_ = int(seed)
        self.n_steps_ = 0
        self.n_rows_seen_ = 0
        self.n_rows_read_ = 0
        self.seen_sum_ = np.zeros(d)
        self.since_reassign_ = 0
        self.stream_position_ = 0
        self.n_iter_ = 0
        self.inertia_ = math.nan
        self.n_features_in_ = int(d)


def _weights(sample_weight, n, X):
    """Checked weights laid out like ``X``'s rows (NumPy for NumPy ``X``)."""
    w = check_sample_weight(sample_weight, n)
    if w is None:
        return None
    if isinstance(X, np.ndarray):
        return np.asarray(w.compute() if hasattr(w, "compute") else w, dtype=np.float64)
    import dask.array as da

    if isinstance(w, np.ndarray):
        return da.from_array(w, chunks=(X.chunks[0],))
    return w.rechunk((X.chunks[0],))


def _mean_variance(X, seed, sample=100_000):
    """Mean per-feature variance: exact in memory, on a sample of rows for chunked data."""
    if isinstance(X, np.ndarray):
        return float(np.var(X, axis=0, dtype=np.float64).mean())
    n = X.shape[0]
    idx = np.random.default_rng([seed, 19]).integers(0, n, size=min(n, sample))
    rows, _ = gather_rows(X, None, idx)
    return float(np.var(rows, axis=0, dtype=np.float64).mean())
