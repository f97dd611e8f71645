"""``dclust.BalancedKMeans``: k-means whose assignment step is optimal transport."""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from sklearn.base import ClusterMixin, TransformerMixin

from ..algorithms.kmeans import check_data_stats, check_init_array, data_stats_aggregation, init_centers
from ..algorithms.sinkhorn import (
    _effective_reg_m,
    check_marginal,
    check_rho,
    check_sinkhorn_params,
    integer_targets,
    repair_sizes,
    solve_sinkhorn,
)
from .._xp import to_numpy
from ..exceptions import ConvergenceWarning, DclustValueError
from ..kernels.metrics import pairwise_distances
from ..kernels.sinkhorn import SinkhornState, hard_inertia_partial, sinkhorn_assign_block
from ..reductions.engine import Aggregation, run_pass
from ..reductions.monoids import sum_combine
from ..runtime.device import check_device, predict_device, to_device_block
from ..runtime.progress import Progress
from ..validation import as_dask_rows, check_n_clusters, check_param, check_random_state
from .base import DclustEstimator, prepare_fit_data, register
from .base import require_finite_block as _require_finite

__all__ = ["BalancedKMeans"]

_INITS = ("k-means||", "k-means++", "random")


def _labels_block(X, st, rows=None, labels=None, device="cpu", block_info=None):
    """Labels under the prices, with the repair's few per-row moves applied."""
    _require_finite(X, block_info)
    lab = to_numpy(sinkhorn_assign_block(to_device_block(X, device), st, None, what="labels"))
    if rows is not None and rows.size:
        start = block_info[0]["array-location"][0][0] if block_info else 0
        lo, hi = np.searchsorted(rows, [start, start + X.shape[0]])
        lab[rows[lo:hi] - start] = labels[lo:hi]
    return lab


def _soft_block(X, st, device="cpu", block_info=None):
    _require_finite(X, block_info)
    return to_numpy(sinkhorn_assign_block(to_device_block(X, device), st, None, what="soft"))


def _distances_block(X, centers, device="cpu", block_info=None):
    _require_finite(X, block_info)
    D = pairwise_distances(to_device_block(X, device), to_device_block(centers, device),
                           "euclidean")
    return to_numpy(D).astype(X.dtype, copy=False)


class _InertiaChunk:
    """Hard-label inertia of a chunk (see :func:`hard_inertia_partial`)."""

    def __call__(self, X, w, ctx, st, rows, labels):
        return hard_inertia_partial(X, st, w, rows=rows, labels=labels, row_offset=ctx.row_offset)


def _inertia_combine(parts):
    return sum_combine(parts, ("inertia", "weight"))


def inertia_aggregation(st, rows=None, labels=None):
    """One pass's k-means inertia under the hard labels of the prices ``st.g`` (with the
    overrides ``labels`` at the global ``rows``)."""
    return Aggregation("balanced-kmeans-inertia", _InertiaChunk(), _inertia_combine).bind(
        st, rows, labels)


@register
class BalancedKMeans(ClusterMixin, TransformerMixin, DclustEstimator):
    """K-means with cluster sizes set by optimal transport (Sinkhorn), on a Dask cluster.

    Each outer iteration solves the entropic transport problem between the rows (mass
    ``w_i / sum w``) and the clusters (mass ``b_j``, the cluster weights) for the cost
    ``C_ij = ||x_i - c_j||^2 / scale``,

    .. math::
        P = \\arg\\min_{P 1 = a,\\; P^T 1 = b} \\langle P, C\\rangle + \\varepsilon H(P),

    with log-domain Sinkhorn (one pass over the data per iteration, potentials warm
    started across outer iterations), then moves each centre to the plan-weighted mean
    ``c_j = sum_i P_ij x_i / sum_i P_ij``, whose sums are folded into the last Sinkhorn
    pass. ``scale`` is twice the total variance of ``X`` (the mean squared distance
    between two rows), computed in the first pass, so ``reg`` is scale-free.

    Parameters
    ----------
    n_clusters : int, default=8
    cluster_weights : "uniform" or array of shape (n_clusters,), default="uniform"
        Target share of the mass of each cluster (positive, summing to 1).
    reg : float, default=0.05
        Entropic regularisation, relative to the cost scale.
    marginal : {"balanced", "relaxed", "partial"}, default="balanced"
        ``"balanced"``: sizes exactly ``b`` (in the transport plan). ``"relaxed"``: the
        sizes are pulled to ``b`` by a penalty ``reg_m KL(P^T 1 | b)`` (unbalanced OT:
        the column update is raised to the power ``reg_m / (reg_m + reg)``).
        ``"partial"``: only the mass ``rho`` is transported to the clusters; a zero-cost
        virtual cluster takes ``1 - rho`` (rows it wins get the label ``-1``).
    reg_m : float, optional
        KL strength for ``"relaxed"`` (default 1.0); relaxes the real clusters of
        ``"partial"`` when given.
    rho : float in (0, 1], optional
        Transported mass for ``"partial"``.
    rho_schedule : {None, "linear"}, default=None
        ``"linear"``: the transported mass grows linearly from ``rho0`` to ``rho`` over
        the outer iterations (progressive partial OT, as in P^2OT).
    rho0 : float, default=0.1
        First transported mass of the schedule.
    size_tolerance : float or None, default=None
        ``None``: hard labels are the plan's argmax. A number ``t >= 0``
        (``marginal="balanced"`` only): after the fit, a repair step lowers the prices
        of overfull clusters (a reverse auction, one pass per round) and then moves the
        few rows still in excess, cheapest first, into clusters that lack rows, until no
        cluster holds more than ``max(T_j, (1 + t) n b_j)`` rows, ``T_j`` the integer
        targets (largest remainders of ``n b_j``); with ``0`` every size is exactly
        ``T_j``, within 1 of ``n b_j``. The moves apply to ``labels_`` only;
        ``predict`` uses the repaired prices.
    init : {"k-means||", "k-means++", "random"} or ndarray, default="k-means||"
    max_iter : int, default=100
        Outer (centre update) iterations.
    tol : float, default=1e-4
        Stop when the squared movement of the centres is below ``tol`` times the mean
        per-feature variance.
    sinkhorn_max_iter : int, default=100
        Sinkhorn iterations per outer iteration.
    sinkhorn_tol : float, default=1e-4
        Marginal error (``sum_j |S_j - b_j|``) at which Sinkhorn stops.
    anneal : bool, default=True
        Decay ``eps`` from 1 to ``reg`` (factor ``eps_decay``) in the first solve.
    eps_decay : float, default=0.5
    random_state, cache, split_every, progress : as :class:`dclust.KMeans`.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the passes run. ``"cuda"``: on the workers' GPUs through CuPy (chunks move
        to the GPU once per pass, or stay there when they fit; only the ``k x d`` sums
        and the column log-sums come back). ``"auto"``: the GPUs when every worker has
        one, else the CPUs. Potentials are float64 on the client in both cases.

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features)
    cluster_potentials_ : ndarray (n_clusters,)
        Column potentials (prices) in scaled cost units, after any repair; the hard
        label of ``x`` is ``argmax_j potential_j - ||x - c_j||^2 / scale_``.
    scale_ : float
    labels_ : dask.array.Array or ndarray (lazy)
    cluster_mass_ : ndarray (n_clusters,)
        Column sums of the last transport plan.
    virtual_mass_ : float
        Mass of the virtual cluster (``marginal="partial"``), else 0.
    marginal_error_ : float
    inertia_ : float
        k-means inertia of the training rows under ``labels_``: the (weighted) sum of
        squared Euclidean distances of each row to the centre of its hard label (rows of
        the virtual cluster excluded). One pass after the last centre update, since the
        labels depend on the final prices and centres.
    n_iter_, n_sinkhorn_iter_, n_repair_rounds_, n_passes_, converged_, n_features_in_

    Examples
    --------
    >>> import dclust
    >>> bk = dclust.BalancedKMeans(16, size_tolerance=0, random_state=0)  # doctest: +SKIP
    >>> bk.fit(X)                                                         # doctest: +SKIP
    """

    _fitted_arrays = ("cluster_centers_", "cluster_potentials_", "cluster_mass_")
    _fitted_scalars = ("inertia_", "scale_", "virtual_potential_", "virtual_mass_", "marginal_error_",
                       "n_iter_", "n_sinkhorn_iter_", "n_repair_rounds_", "n_passes_",
                       "converged_", "n_features_in_")

    def __init__(self, n_clusters=8, *, cluster_weights="uniform", reg=0.05, marginal="balanced",
                 reg_m=None, rho=None, rho_schedule=None, rho0=0.1, size_tolerance=None,
                 init="k-means||", max_iter=100, tol=1e-4, sinkhorn_max_iter=100,
                 sinkhorn_tol=1e-4, anneal=True, eps_decay=0.5, random_state=None,
                 cache="auto", split_every=None, progress=True, device="auto"):
        self.n_clusters = n_clusters
        self.cluster_weights = cluster_weights
        self.reg = reg
        self.marginal = marginal
        self.reg_m = reg_m
        self.rho = rho
        self.rho_schedule = rho_schedule
        self.rho0 = rho0
        self.size_tolerance = size_tolerance
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.sinkhorn_max_iter = sinkhorn_max_iter
        self.sinkhorn_tol = sinkhorn_tol
        self.anneal = anneal
        self.eps_decay = eps_decay
        self.random_state = random_state
        self.cache = cache
        self.split_every = split_every
        self.progress = progress
        self.device = device

    def _validate_params(self):
        check_device(self.device)
        check_sinkhorn_params(self.reg, self.marginal, self.reg_m, self.rho,
                              self.sinkhorn_max_iter, self.sinkhorn_tol, self.eps_decay)
        if isinstance(self.init, str):
            if self.init not in _INITS:
                raise DclustValueError(
                    f"Unknown init {self.init!r}; expected one of 'k-means||', 'k-means++', "
                    "'random' or an array of shape (n_clusters, n_features)."
                )
        check_param("max_iter", self.max_iter, kind=numbers.Integral, low=1)
        check_param("tol", self.tol, kind=numbers.Real, low=0)
        check_param("cache", self.cache, options=("auto", "memory", "none"))
        check_param("rho_schedule", self.rho_schedule, options=(None, "linear"))
        if self.rho_schedule is not None:
            if self.marginal != "partial":
                raise DclustValueError(
                    f"rho_schedule={self.rho_schedule!r} needs marginal='partial'; got "
                    f"marginal={self.marginal!r}."
                )
            check_rho(self.rho0, "rho0")
        if self.size_tolerance is not None:
            check_param("size_tolerance", self.size_tolerance, kind=numbers.Real, low=0)
            if self.marginal != "balanced":
                raise DclustValueError(
                    f"size_tolerance={self.size_tolerance!r} makes the sizes exact, which only "
                    f"marginal='balanced' asks for; got marginal={self.marginal!r}. Pass "
                    "size_tolerance=None."
                )
        if self.split_every is not None:
            check_param("split_every", self.split_every, kind=numbers.Integral, low=2)

    def _rho_at(self, it):
        if self.marginal != "partial":
            return 1.0
        rho = float(self.rho)
        if self.rho_schedule == "linear" and self.max_iter > 1:
            r0 = min(float(self.rho0), rho)
            return r0 + (rho - r0) * min(1.0, it / max(1, self.max_iter - 1))
        return rho

    def fit(self, X, y=None, sample_weight=None):
        """Fit the centres and the transport prices.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like or dask array of shape (n_samples,), optional
            Row masses (normalised to sum to one).

        Returns
        -------
        self
        """
        self._validate_params()
        X_arr = as_dask_rows(X)
        n, d = X_arr.shape
        k = check_n_clusters(self.n_clusters, n)
        b = check_marginal(self.cluster_weights, k, "cluster_weights")
        init = self.init
        if not isinstance(init, str):
            init = check_init_array(init, k, d)
        X_work, w_work, X_source = prepare_fit_data(X_arr, sample_weight, self.cache,
                                                        self.device)
        seed = check_random_state(self.random_state)
        progress = Progress(f"BalancedKMeans(k={k})", enabled=bool(self.progress))
        centers, data_stats, n_passes = init_centers(X_work, w_work, k, init, seed,
                                                     split_every=self.split_every)
        if data_stats is None:
            data_stats = run_pass(X_work, {"data": data_stats_aggregation()}, sample_weight=w_work,
                                  split_every=self.split_every, name="balanced-kmeans-stats")["data"]
            n_passes += 1
        check_data_stats(data_stats, X_work)
        var = np.asarray(data_stats["m2"]) / max(float(data_stats["count"]), 1.0)
        scale = 2.0 * float(var.sum())
        scale = scale if scale > 0 else 1.0
        tol_abs = float(np.mean(var) * self.tol)
        wsum = float(data_stats["weight_sum"]) if w_work is not None else float(n)
        reg_m = _effective_reg_m(self.marginal, self.reg_m)
        g = None
        converged = False
        n_sk = 0
        sol = None
        rho = 1.0
        for it in range(self.max_iter):
            rho = self._rho_at(it)
            virtual = self.marginal == "partial" and rho < 1
            bfull = np.append(rho * b, 1.0 - rho) if virtual else b
            if g is not None and g.shape[0] != bfull.shape[0]:
                g = np.append(g, 0.0) if virtual else g[:k]
            st = SinkhornState(kind="points", g=np.zeros(bfull.shape[0]), eps=self.reg,
                               centers=centers, scale=scale, virtual=virtual,
                               log_mass=-math.log(wsum))
            sol = solve_sinkhorn(
                X_work, w_work, st, bfull, reg=self.reg, marginal=self.marginal, reg_m=reg_m,
                anneal=bool(self.anneal) and it == 0, eps_decay=self.eps_decay,
                max_iter=self.sinkhorn_max_iter, tol=self.sinkhorn_tol, g0=g, want_sums=True,
                split_every=self.split_every, name="balanced-kmeans-sinkhorn",
            )
            n_passes += sol.n_passes
            n_sk += sol.n_iter
            g = sol.g
            mass = np.exp(sol.log_col[:k])
            new = centers.copy()
            ok = mass > 1e-300
            new[ok] = sol.sums[ok] / mass[ok, None]
            shift = float(((new - centers) ** 2).sum())
            centers = new
            progress.update("iter", it + 1, shift=shift, err=sol.error)
            schedule_done = self._rho_at(it) >= self._rho_at(self.max_iter - 1)
            if shift <= tol_abs and schedule_done:
                converged = True
                break
        n_iter = it + 1
        virtual = self.marginal == "partial" and rho < 1
        prices = g.copy()
        n_rounds = 0
        o_rows = o_labels = None
        if self.size_tolerance is not None:
            T = integer_targets(n, b)
            caps = T if self.size_tolerance == 0 else np.maximum(
                T, np.floor(n * b * (1 + float(self.size_tolerance))).astype(np.int64))
            st = SinkhornState(kind="points", g=prices[:k], eps=1.0, centers=centers, scale=scale)
            prices, o_rows, o_labels, counts, n_rounds = repair_sizes(
                X_work, st, T, caps, split_every=self.split_every)
            n_passes += n_rounds
            if (counts > caps).any():
                warnings.warn(
                    f"The size repair stopped after {n_rounds} rounds with "
                    f"{int(np.maximum(counts - caps, 0).sum())} row(s) above their cluster's "
                    "target (ties between equally distant rows); the sizes are close but not "
                    "exact.",
                    ConvergenceWarning, stacklevel=2,
                )
        progress.close(f"BalancedKMeans(k={k}): {n_iter} iterations, marginal error "
                       f"{sol.error:.3g}, {'converged' if converged else 'not converged'}")
        if not sol.converged:
            warnings.warn(
                f"Sinkhorn stopped at sinkhorn_max_iter={self.sinkhorn_max_iter} with marginal "
                f"error {sol.error:.3g} > sinkhorn_tol={self.sinkhorn_tol}; raise "
                "sinkhorn_max_iter or reg.",
                ConvergenceWarning, stacklevel=2,
            )
        if not converged:
            warnings.warn(
                f"BalancedKMeans stopped at max_iter={self.max_iter} before the centres moved "
                f"less than tol={self.tol}; raise max_iter or tol.",
                ConvergenceWarning, stacklevel=2,
            )
        # The hard labels depend on the final prices and centres: one pass for their inertia.
        st = SinkhornState(kind="points", g=prices, eps=float(self.reg), centers=centers,
                           scale=scale, virtual=virtual)
        hard = run_pass(X_work, {"i": inertia_aggregation(st, o_rows, o_labels)},
                        sample_weight=w_work, split_every=self.split_every,
                        name="balanced-kmeans-inertia")["i"]
        n_passes += 1
        self.inertia_ = float(hard["inertia"])
        self.cluster_centers_ = centers.astype(X_arr.dtype)
        self._centers64 = centers
        self.cluster_potentials_ = np.asarray(prices[:k], dtype=np.float64)
        self.virtual_potential_ = float(prices[k]) if virtual else None
        self.scale_ = scale
        self.cluster_mass_ = np.exp(sol.log_col[:k])
        self.virtual_mass_ = float(np.exp(sol.log_col[k])) if virtual else 0.0
        self.marginal_error_ = float(sol.error)
        self.n_iter_ = int(n_iter)
        self.n_sinkhorn_iter_ = int(n_sk)
        self.n_repair_rounds_ = int(n_rounds)
        self.n_passes_ = int(n_passes)
        self.converged_ = bool(converged)
        self.n_features_in_ = int(d)
        self.labels_ = self._assign(X_source, "labels", o_rows, o_labels)
        return self

    # ---- prediction ------------------------------------------------------------------
    def _state(self):
        g = np.asarray(self.cluster_potentials_, dtype=np.float64)
        virtual = getattr(self, "virtual_potential_", None) is not None
        if virtual:
            g = np.append(g, self.virtual_potential_)
        C = getattr(self, "_centers64", None)
        if C is None:
            C = np.asarray(self.cluster_centers_, dtype=np.float64)
        return SinkhornState(kind="points", g=g, eps=float(self.reg), centers=C,
                             scale=float(self.scale_), virtual=virtual)

    def _assign(self, X, what, rows=None, labels=None):
        st = self._state()
        k = self.cluster_centers_.shape[0]
        device = predict_device(getattr(self, "device", "auto"), X)
        if isinstance(X, np.ndarray):
            if what == "labels":
                return _labels_block(X, st, rows, labels, device)
            return _soft_block(X, st, device)
        if what == "labels":
            return X.map_blocks(_labels_block, st, rows, labels, device, drop_axis=1,
                                dtype=np.int32, meta=np.empty((0,), np.int32))
        return X.map_blocks(_soft_block, st, device, chunks=(X.chunks[0], (k,)),
                            dtype=np.float64, meta=np.empty((0, 0), np.float64))

    def predict(self, X):
        """Cluster of each row under the fitted prices: ``argmax_j g_j - ||x - c_j||^2 / scale``.

        Rows whose best choice is the virtual cluster (``marginal="partial"``) get ``-1``.
        Lazy (dask) unless ``X`` is a NumPy array.
        """
        return self._assign(self._check_X(X), "labels")

    def predict_proba(self, X):
        """Soft assignments ``softmax_j((g_j - C_ij) / reg)`` over the clusters (n x k)."""
        return self._assign(self._check_X(X), "soft")

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X)`` then return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Euclidean distances to every centre, shape (n_samples, n_clusters).

        As :meth:`dclust.KMeans.transform`: an ndarray for NumPy input, else lazy.
        """
        X = self._check_X(X)
        C = self._state().centers
        device = predict_device(getattr(self, "device", "auto"), X)
        if isinstance(X, np.ndarray):
            return _distances_block(X, C, device).astype(X.dtype)
        k = C.shape[0]
        return X.map_blocks(_distances_block, C, device, chunks=(X.chunks[0], (k,)),
                            dtype=X.dtype)

    def fit_transform(self, X, y=None, sample_weight=None):
        """``fit(X)`` then return ``transform(X)``."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the k-means inertia of ``X`` under the fitted centres (one pass).

        Each row counts the squared Euclidean distance to the centre of its hard label
        (:meth:`predict`, the fitted prices; rows of the virtual cluster count for
        nothing), weighted by ``sample_weight``. Larger is better.
        """
        X = self._check_X(X)
        X, w, _ = prepare_fit_data(X, sample_weight, "none", getattr(self, "device", "auto"))
        res = run_pass(X, {"i": inertia_aggregation(self._state()),
                           "data": data_stats_aggregation()},
                       sample_weight=w, split_every=self.split_every, name="balanced-kmeans-score")
        check_data_stats(res["data"], X)  # NaN and inf, found in the same pass
        return -float(res["i"]["inertia"])
