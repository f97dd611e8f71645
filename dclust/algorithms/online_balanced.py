"""Balanced assignment of small batches with a queue of past batches (SwAV, BECLR).

Balanced transport on one small batch is noisy: 256 rows over 64 clusters leave four
rows a cluster. SwAV solves the Sinkhorn problem on the batch *plus* a queue of the
last ``m`` batches, so the column marginal is enforced over many more rows, and keeps
the codes of the batch rows. Here the plan's batch rows are then rounded to hard
labels under per-batch capacities (the largest-remainder targets of ``b_j * n``,
rows taken by decreasing plan weight), so that every batch, hence every window of
batches, has the cluster sizes asked for within one row.

Everything here is in memory on the client: a batch and its queue are small.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

__all__ = ["queue_sinkhorn", "capacity_round", "integer_targets", "SinkhornQueue"]


def _lse(A, axis):
    m = A.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(A - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def queue_sinkhorn(C, b, reg, *, max_iter=100, tol=1e-4, g0=None):
    """Log-domain balanced Sinkhorn on an in-memory cost matrix, uniform row masses.

    Parameters
    ----------
    C : ndarray of shape (n, k)
        Costs (already scaled).
    b : ndarray of shape (k,)
        Column masses summing to 1.
    reg : float
    max_iter : int, default=100
    tol : float, default=1e-4
        Stop when ``sum_j |S_j - b_j|`` is at most this.
    g0 : ndarray of shape (k,), optional
        Starting column potentials (the previous batch's: a warm start).

    Returns
    -------
    logP : ndarray of shape (n, k)
        Log of the plan.
    g : ndarray of shape (k,)
        Column potentials (``P_ij = exp((f_i + g_j - C_ij) / reg)``).
    err : float
    """
    n, k = C.shape
    log_a, log_b = -np.log(n), np.log(b)
    g = np.zeros(k) if g0 is None else np.asarray(g0, dtype=np.float64).copy()
    Cr = C / reg
    err = np.inf
    for _ in range(max_iter):
        # Row update, then the column sums of that plan give the marginal error.
        logP = g[None, :] / reg - Cr
        logP -= _lse(logP, 1)[:, None] - log_a
        log_col = _lse(logP, 0)
        err = float(np.abs(np.exp(log_col) - b).sum())
        if err <= tol:
            break
        g = g + reg * (log_b - log_col)
    return logP, g, err


def integer_targets(b, n):
    """Rows per cluster for ``n`` rows: ``n b_j`` rounded by largest remainders."""
    raw = np.asarray(b) * n
    T = np.floor(raw).astype(np.int64)
    short = int(n - T.sum())
    if short > 0:
        T[np.argsort(-(raw - T), kind="stable")[:short]] += 1
    return T


def capacity_round(logP, targets):
    """Hard labels with exactly ``targets[j]`` rows in cluster ``j``, rows going to the
    clusters where the plan puts most of their mass first (greedy)."""
    n, k = logP.shape
    order = np.argsort(-logP, axis=None, kind="stable")
    labels = np.full(n, -1, dtype=np.int64)
    room = np.asarray(targets, dtype=np.int64).copy()
    left = n
    for flat in order:
        i, j = divmod(int(flat), k)
        if labels[i] < 0 and room[j] > 0:
            labels[i] = j
            room[j] -= 1
            left -= 1
            if left == 0:
                break
    return labels


class SinkhornQueue:
    """Balanced labels for a stream of small batches of costs, using a queue.

    Parameters
    ----------
    n_clusters : int
    queue_size : int, default=8
        Past batches kept and transported along with each new batch.
    b : ndarray of shape (n_clusters,), optional
        Cluster masses (default uniform).
    reg : float, default=0.05
        Entropic regularisation relative to the costs' scale.
    max_iter, tol : Sinkhorn's limits.

    Examples
    --------
    >>> q = SinkhornQueue(4, queue_size=4)
    >>> labels = q.assign(np.random.default_rng(0).random((64, 4)))
    >>> np.bincount(labels, minlength=4).tolist()
    [16, 16, 16, 16]
    """

    def __init__(self, n_clusters, *, queue_size=8, b=None, reg=0.05, max_iter=100, tol=1e-4):
        self.n_clusters = int(n_clusters)
        self.queue_size = int(queue_size)
        self.b = np.full(self.n_clusters, 1.0 / self.n_clusters) if b is None else np.asarray(b)
        self.reg, self.max_iter, self.tol = float(reg), int(max_iter), float(tol)
        self.queue: list = []
        self.potentials_ = None
        self.marginal_error_ = None

    def assign(self, costs, *, kind="cost"):
        """Labels of a batch: Sinkhorn on the batch plus the queue, then rounding.

        Parameters
        ----------
        costs : ndarray of shape (batch, n_clusters)
            Costs, or scores with ``kind="score"`` (cost = -score).

        Returns
        -------
        labels : ndarray of shape (batch,)
        """
        C = np.asarray(costs, dtype=np.float64)
        if kind == "score":
            C = -C
        allC = np.concatenate(self.queue + [C], axis=0) if self.queue else C
        # Row shifts do not change the plan; the spread sets the scale of ``reg``.
        centred = allC - allC.mean(axis=1, keepdims=True)
        scale = float(np.sqrt((centred ** 2).mean())) or 1.0
        logP, g, err = queue_sinkhorn(allC / scale, self.b, self.reg, max_iter=self.max_iter,
                                      tol=self.tol)
        self.potentials_, self.marginal_error_ = g * scale, err
        labels = capacity_round(logP[-C.shape[0]:], integer_targets(self.b, C.shape[0]))
        self.queue = (self.queue + [C])[-self.queue_size:] if self.queue_size else []
        return labels


def _window_scale(rows):
    """Twice the total variance of the rows: the mean squared distance between two rows
    (the cost scale :class:`~dclust.BalancedKMeans` uses, so ``reg`` means the same)."""
    s = 2.0 * float(np.var(rows, axis=0, dtype=np.float64).sum())
    return s if s > 0 else 1.0


def partial_fit_balanced(est, X):
    """:meth:`dclust.BalancedKMeans.partial_fit` (see there)."""
    from ..algorithms.kmeans import check_init_array, seed_centers
    from ..algorithms.minibatch import as_batch, check_finite_rows
    from ..algorithms.transport_params import check_marginal
    from ..exceptions import DclustValueError
    from ..kernels.distances import euclidean_distances
    from ..validation import check_n_clusters, check_random_state

    first = not hasattr(est, "counts_")
    if first:
        est._check_params()
        if est.marginal != "balanced":
            raise DclustValueError(
                f"partial_fit supports marginal='balanced' only; got marginal={est.marginal!r}. "
                "Use fit for relaxed or partial transport.")
        est._remember_feature_names(X)
    Xb = as_batch(X)
    n, d = Xb.shape
    check_finite_rows(Xb, np.arange(n))
    if first:
        k = check_n_clusters(est.n_clusters, n)
        seed = check_random_state(est.random_state)
        if isinstance(est.init, str):
            init = "k-means++" if est.init == "k-means||" and n < 4 * k else est.init
            C = seed_centers({"x": np.ascontiguousarray(Xb, dtype=np.float64),
                              "weight": np.ones(n)}, n, n, k, init, seed, dtype=np.float64,
                             n_features=d)
        else:
            C = check_init_array(est.init, k, d)
        est._centers64 = np.asarray(C, dtype=np.float64)
        est.counts_ = np.zeros(k)
        est.queue_ = np.zeros((0, d))
        est.queue_rows_ = np.zeros(0, dtype=np.int64)
        est.seen_sum_ = np.zeros(d)
        est.seed_, est.n_steps_, est.n_rows_seen_, est.stream_position_ = int(seed), 0, 0, 0
        est.n_features_in_ = int(d)
    elif d != est.n_features_in_:
        raise DclustValueError(
            f"X has {d} features, but BalancedKMeans is expecting {est.n_features_in_} features "
            "as input (the number it was fitted on).")
    C = getattr(est, "_centers64", None)
    C = np.asarray(est.cluster_centers_ if C is None else C, dtype=np.float64).copy()
    k = C.shape[0]
    b = check_marginal(est.cluster_weights, k, "cluster_weights")
    X64 = Xb.astype(np.float64)
    window = np.concatenate([np.asarray(est.queue_, dtype=np.float64), X64], axis=0)
    scale = _window_scale(window)
    D = euclidean_distances(window, C) ** 2 / scale
    g0 = None if first else getattr(est, "cluster_potentials_", None)
    logP, g, err = queue_sinkhorn(D, b, est.reg, max_iter=est.sinkhorn_max_iter,
                                  tol=est.sinkhorn_tol, g0=g0)
    labels = capacity_round(logP[-n:], integer_targets(b, n))
    # Mini-batch k-means' update with the balanced labels.
    counts = np.asarray(est.counts_, dtype=np.float64).copy()
    bw = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, d))
    np.add.at(sums, labels, X64)
    hit = bw > 0
    new_counts = counts[hit] + bw[hit]
    C[hit] = (C[hit] * counts[hit, None] + sums[hit]) / new_counts[:, None]
    counts[hit] = new_counts
    # The queue keeps the last queue_size batches (rows, recosted under new centres).
    rows = np.append(np.asarray(est.queue_rows_, dtype=np.int64), n)
    keep = rows[-est.queue_size:] if est.queue_size else rows[:0]
    est.queue_ = window[window.shape[0] - int(keep.sum()):] if keep.size else np.zeros((0, d))
    est.queue_rows_ = keep
    est._centers64 = C
    est.cluster_centers_ = C.astype(Xb.dtype)
    est.counts_ = counts
    est.cluster_potentials_ = g
    est.virtual_potential_ = None
    est.scale_ = scale
    est.cluster_mass_ = np.exp(logsumexp(logP, axis=0))
    est.marginal_error_ = float(err)
    est.labels_ = labels.astype(np.int32)
    est.n_steps_ = int(est.n_steps_) + 1
    est.n_rows_seen_ = int(est.n_rows_seen_) + n
    est.seen_sum_ = np.asarray(est.seen_sum_, dtype=np.float64) + X64.sum(axis=0)
    return est
