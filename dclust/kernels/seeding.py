"""Seeding k-means on an in-memory sample: greedy k-means++ and k-means||.

These run on the client over a sample drawn from the full data in one pass (see
``dclust.algorithms.kmeans``); they use the same nearest-centre kernel as the passes.
Nothing here reads the full data: every step works on rows already in the client's memory.

k-means|| (:func:`kmeans_parallel`) has two parts. The oversampling rounds pick about
``oversampling_factor * k`` candidates per round, each round costing one nearest-centre
sweep of the sample. The *reduce* step then solves a small weighted k-means problem on
the candidates. One greedy k-means++ run on them misses a well-separated cluster about as
often as scikit-learn's single k-means++ run on the data does (half the time on 40
blobs), and weighted Lloyd cannot repair a miss, so the reduce step here

1. runs greedy weighted k-means++ (local trials) and weighted Lloyd to convergence on the
   candidates several times, keeping the run of lowest weighted candidate inertia;
2. improves the kept run by swaps (move one centre to a candidate drawn in proportion to
   its cost, Lloyd again, keep it only if the inertia falls), which repairs the misses
   that restarts leave when many clusters are small (two small clusters sharing a
   centre while a large one has two);
3. polishes the result with Lloyd iterations on the sample rows themselves (the
   candidates only summarise them); each one spares Lloyd a pass over the full data.

The reduce spends a budget of multiply-adds (:func:`reduce_budget`): four Lloyd
iterations over the sample (under half of what the rounds cost), with a floor of about
a tenth of a second for small problems, where every phase runs to its end. At large
``k`` it thins to a single run, whose k-means++ keeps as many local trials as the
budget allows (they decide the quality there) and whose Lloyd gets at least the ten
iterations the plain reduce had. Each phase also stops early once it cannot improve.
"""

from __future__ import annotations

import contextlib
import math
import time

import numba
import numpy as np

from .lloyd import lloyd_partial, nearest_center


def _nearest_rows(X, C, pool=None):
    """:func:`nearest_center` of every row of ``X``, its blocks on ``pool`` (the compiled
    kernel releases the GIL). Each row's label and distance depend on that row alone, so
    the result has the same bits for any thread count."""
    if pool is None:
        return nearest_center(X, C)
    parts = _map_blocks(lambda a, b: nearest_center(X[a:b], C), X.shape[0], pool)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


# Rows per block of the seeding's threaded loops (the rounds' searches, the greedy
# k-means++ sweeps, Lloyd on the candidates): enough work per block that a thread pool's
# overhead does not show, small enough that the threads finish together. Sums over rows
# are taken per block and the blocks' added in block order, so every result is the same
# however many threads run the blocks.
_BLOCK_ROWS = 16_384


def _blocks(n):
    return list(range(0, n, _BLOCK_ROWS)) + [n]


@contextlib.contextmanager
def _thread_pool(n_threads, n):
    """A thread pool for loops over ``n`` rows, or None where one thread will do; one
    per seeding call, handed to the loops."""
    if n_threads <= 1 or n < 2 * _BLOCK_ROWS:
        yield None
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=int(n_threads)) as pool:
        yield pool


def _map_blocks(fn, n, pool):
    """``[fn(start, stop) for each block]`` in block order, on ``pool`` if given."""
    cuts = _blocks(n)
    pairs = list(zip(cuts[:-1], cuts[1:]))
    if pool is None:
        return [fn(a, b) for a, b in pairs]
    return list(pool.map(lambda ab: fn(*ab), pairs))

# Reassociation lets LLVM vectorise the sums over features (as in ``_numba``); a given
# input still gives the same bits every time.
_FASTMATH = {"reassoc", "nsz", "contract"}

__all__ = [
    "kmeans_plusplus",
    "kmeans_parallel",
    "reduce_budget",
    "reduce_candidates",
    "weighted_lloyd",
]

# Multiply-adds the greedy k-means++ of ``kmeans_plusplus`` may spend before its local
# trials are thinned (it runs on up to ``max(50000, 32 k)`` sample rows for
# init="k-means++").
_KPP_FLOP_BUDGET = 2e10

# The reduce step of k-means|| spends about max(_REDUCE_FLOOR, _REDUCE_SAMPLE_ITERS * m
# * k * d) multiply-adds on the m sample rows: four Lloyd iterations over the sample,
# under half of what the default five oversampling rounds cost (two each). The floor
# (about 0.1 s) lets small problems finish every phase: at k=40 the reduce takes
# milliseconds whatever the budget.
_REDUCE_FLOOR = 5e9
_REDUCE_SAMPLE_ITERS = 4.0
# Shares of the budget after which the restarts, then the swaps stop; the polish has
# the rest.
_RESTART_SHARE = 0.5
_SWAP_SHARE = 0.75
# Greedy k-means++ + Lloyd runs on the candidates, at most. Each run misses a
# well-separated cluster with some probability (about one half on 40 blobs, more with
# more clusters); ten independent runs leave the swaps little to repair.
_MAX_REDUCE_TRIALS = 10
# The swap search stops after this many attempts in a row that did not lower the inertia.
_MAX_SWAP_FAILURES = 10
# Lloyd on the candidates runs to convergence: centre shift at most _LLOYD_TOL times
# the total variance, or a fixed point; the cap only guards against slow tails.
_LLOYD_TOL = 1e-6
_LLOYD_MAX_ITER = 100
# The first run always gets this many Lloyd iterations (if it has not converged
# before), whatever the budget: the plain k-means|| reduce did ten.
_FIRST_RUN_MIN_ITER = 10
_POLISH_MAX_ITER = 10


def reduce_budget(n_rows, n_clusters, n_features):
    """Multiply-adds the reduce step of k-means|| may spend.

    Parameters
    ----------
    n_rows : int
        Rows k-means|| runs on (the sample).
    n_clusters : int
    n_features : int

    Returns
    -------
    budget : float
        ``max(5e9, 4 * n_rows * n_clusters * n_features)``: four Lloyd iterations over
        the rows, or a floor that lets small problems finish every phase. The first run
        of the reduce is not held to it (see :func:`reduce_candidates`).
    """
    return max(_REDUCE_FLOOR, _REDUCE_SAMPLE_ITERS * float(n_rows) * n_clusters * n_features)


# --------------------------------------------------------------------------------------
# Greedy k-means++
# --------------------------------------------------------------------------------------
#
# Each centre costs one sweep of the points: a compiled loop reads every point once and
# compares it with all the trial points while it is in cache (differences summed in the
# points' precision: float32 rows stay float32). Measured on one core for 41,000 x 128
# float32 points, a sweep takes 0.7 ms with one trial, 1.3 ms with three and 4.6 ms with
# ten, where the nearest-centre kernel does 3.3e10 multiply-adds a second: a step costs
# about n * d * (3 t + 2) of that kernel's multiply-adds, the cost model below, so that
# budgets weigh k-means++ and Lloyd alike. Local trials decide much of the quality at
# large k (k=4096 on 4096 blobs: after Lloyd on the candidates, the sample's inertia
# was 1.53 times that of ten trials with one trial per centre, 1.11 times with three),
# so the reduce thins them only as far as its budget requires.

_KPP_STEP_BASE = 2.0
_KPP_STEP_PER_TRIAL = 3.0


@numba.njit(nogil=True, cache=True)
def _sqdist_to_row(P, q, out):
    """Exact squared distances (float64) from every row of ``P`` to row ``q``."""
    for x in range(P.shape[0]):
        s = 0.0
        for f in range(P.shape[1]):
            diff = float(P[x, f]) - float(P[q, f])
            s += diff * diff
        out[x] = s


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _kpp_gains(P, Q, w, closest, dist, x0, x1, zero, gains):
    """Gains of the trial rows ``Q`` over rows ``x0:x1`` of ``P``, into ``gains``.

    Each row is read once and compared with every trial while in cache. The squared
    distances are differences summed in ``P``'s precision (``zero`` is a zero of that
    type), stored in float64 in ``dist`` (n x >= len(Q)) for :func:`_kpp_commit`.
    """
    t, d = Q.shape
    for j in range(t):
        gains[j] = 0.0
    for x in range(x0, x1):
        cx = closest[x]
        for j in range(t):
            acc = zero
            for f in range(d):
                diff = P[x, f] - Q[j, f]
                acc += diff * diff
            dj = float(acc)
            dist[x, j] = dj
            if dj < cx:
                gains[j] += w[x] * (cx - dj)


@numba.njit(nogil=True, cache=True)
def _kpp_commit(dist, best, w, closest, wd):
    for x in range(closest.shape[0]):
        dj = dist[x, best]
        if dj < closest[x]:
            closest[x] = dj
            wd[x] = w[x] * dj


def _kpp_step(P, cand, w, closest, wd, dist, zero, pool=None):
    """Gains of the trial rows ``P[cand]``; commit the best one. Returns its position.

    ``closest`` and ``wd = w * closest`` are updated in place; ``pool`` (a thread pool,
    or None) runs the blocks of rows (:data:`_BLOCK_ROWS`) in parallel.
    """
    Q = np.ascontiguousarray(P[cand])

    def block(a, b):
        g = np.empty(Q.shape[0])
        _kpp_gains(P, Q, w, closest, dist, a, b, zero, g)
        return g

    parts = _map_blocks(block, P.shape[0], pool)
    gains = parts[0]
    for g in parts[1:]:
        gains = gains + g
    best = int(np.argmax(gains))  # the first of equal gains, as a strict '>' scan
    _kpp_commit(dist, best, w, closest, wd)
    return best


def _kpp_cost(n, d, k, trials):
    """Cost of greedy k-means++ on ``n`` points, in nearest-centre-kernel multiply-adds."""
    return float(n) * d * k * (_KPP_STEP_BASE + _KPP_STEP_PER_TRIAL * trials)


def _kpp_trials(n, d, k, n_local_trials, budget):
    """Trials per centre so that ``k`` steps cost at most ``budget``, within [1, n_local_trials]."""
    if not np.isfinite(budget):
        return int(max(1, n_local_trials))
    per_unit = float(n) * d * k
    fit = int((budget / max(per_unit, 1.0) - _KPP_STEP_BASE) // _KPP_STEP_PER_TRIAL)
    return int(max(1, min(n_local_trials, fit)))


def _greedy_kpp(P, w, n_clusters, rng, n_local_trials, pool=None):
    """Greedy weighted k-means++ on rows ``P`` (float32 or float64, C-contiguous).

    ``n_local_trials`` candidates are drawn per centre (D^2 sampling) and the one that
    lowers the potential most is kept (scikit-learn's greedy variant).

    Returns
    -------
    indices : ndarray of shape (n_clusters,)
    """
    n = P.shape[0]
    k = n_clusters
    t = max(1, int(n_local_trials))
    indices = np.empty(k, dtype=np.int64)
    first = int(rng.choice(n, p=w / w.sum()))
    indices[0] = first
    closest = np.empty(n)
    _sqdist_to_row(P, first, closest)
    wd = w * closest
    dist = np.empty((n, t))
    zero = P.dtype.type(0)
    for c in range(1, k):
        _greedy_kpp_pick(P, w, rng, t, closest, wd, dist, zero, pool, indices, c)
    return indices


def _greedy_kpp_pick(P, w, rng, t, closest, wd, dist, zero, pool, indices, c):
    """Centre ``c`` of :func:`_greedy_kpp`: the best of ``t`` rows drawn by ``w * D^2``."""
    n = P.shape[0]
    cum = np.cumsum(wd)
    if not cum[-1] > 0:
        # Fewer distinct points than clusters: repeat points rather than fail.
        indices[c] = int(rng.integers(n))
        return
    cand = np.searchsorted(cum, rng.random(t) * cum[-1], side="right")
    cand = np.minimum(cand, n - 1)
    best = _kpp_step(P, cand, w, closest, wd, dist, zero, pool)
    q = int(cand[best])
    closest[q] = 0.0
    wd[q] = 0.0
    indices[c] = q


def kmeans_plusplus(X, n_clusters, sample_weight, rng, n_local_trials=None, n_threads=1):
    """Greedy weighted k-means++ (Arthur & Vassilvitskii; scikit-learn's variant).

    Each centre after the first is the best of ``n_local_trials`` rows drawn with
    probability proportional to ``w * D^2`` (the one that lowers the potential most).
    Every centre costs one compiled sweep of the rows, comparing each with all the
    trial rows (squared differences summed in the rows' precision).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    n_clusters : int
    sample_weight : ndarray of shape (n,)
    rng : numpy.random.Generator
    n_local_trials : int, optional
        Candidates tried per centre; default ``2 + log(k)``, fewer (down to one) where
        the ``k`` sweeps would cost more than ``_KPP_FLOP_BUDGET`` multiply-adds.
    n_threads : int, default=1
        Threads each sweep's blocks of rows run on (the same centres for any count).

    Returns
    -------
    centers : ndarray of shape (n_clusters, d), float64
    indices : ndarray of shape (n_clusters,)
        The rows of ``X`` chosen.
    """
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n, d = X.shape
    w = np.asarray(sample_weight, dtype=np.float64)
    if n_local_trials is None:
        n_local_trials = _kpp_trials(n, d, n_clusters, 2 + int(math.log(n_clusters)),
                                     _KPP_FLOP_BUDGET)
    with _thread_pool(n_threads, n) as pool:
        idx = _greedy_kpp(np.ascontiguousarray(X), w, n_clusters, rng, n_local_trials, pool)
    return np.asarray(X[idx], dtype=np.float64), idx


# --------------------------------------------------------------------------------------
# Weighted Lloyd
# --------------------------------------------------------------------------------------


def _lloyd_stats(X, C, w, pool):
    """:func:`lloyd_partial`'s sums, weights and inertia, per block of rows and added in
    block order (the same bits on any number of threads)."""
    parts = _map_blocks(lambda a, b: lloyd_partial(X[a:b], C, None if w is None else w[a:b]),
                        X.shape[0], pool)
    out = {"sums": parts[0]["sums"], "weights": parts[0]["weights"],
           "inertia": float(parts[0]["inertia"])}
    for p in parts[1:]:
        out["sums"] = out["sums"] + p["sums"]
        out["weights"] = out["weights"] + p["weights"]
        out["inertia"] += float(p["inertia"])
    return out


def _lloyd(X, centers, w, max_iter, tol, pool=None):
    """Weighted Lloyd from ``centers``: centres, inertia and iterations run.

    The inertia returned is that of the last assignment with its clusters at their means
    (that iteration's inertia less ``sum_j W_j |shift_j|^2``, no extra sweep): exact at a
    fixed point, and an upper bound on the inertia of the returned centres otherwise.
    Empty clusters stay put.
    """
    C = np.array(centers, dtype=np.float64)
    sse = np.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        s = _lloyd_stats(X, C, w, pool)
        wsum = s["weights"]
        nonempty = wsum > 0
        new = C.copy()
        new[nonempty] = s["sums"][nonempty] / wsum[nonempty, None]
        delta = new - C
        shift = np.einsum("ij,ij->i", delta, delta)
        sse = max(0.0, float(s["inertia"]) - float(wsum @ shift))
        C = new
        if float(shift.sum()) <= tol:
            break
    return C, sse, n_iter


def _total_variance(X, w):
    wt = float(w.sum())
    if not wt > 0:
        return 0.0
    X = np.asarray(X, dtype=np.float64)
    diff = X - (w @ X) / wt
    return float(w @ np.einsum("ij,ij->i", diff, diff)) / wt


def weighted_lloyd(X, centers, sample_weight, max_iter=10, tol=1e-6):
    """Weighted Lloyd iterations on a small in-memory point set (empty clusters stay put).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    centers : ndarray of shape (k, d)
    sample_weight : ndarray of shape (n,)
    max_iter : int, default=10
    tol : float, default=1e-6
        Stop when the squared centre shift ``sum_j |c_j - c_j'|^2`` is at most ``tol``
        times the weighted total variance of ``X``.

    Returns
    -------
    centers : ndarray of shape (k, d), float64
    """
    w = np.asarray(sample_weight, dtype=np.float64)
    return _lloyd(X, centers, w, max_iter, tol * _total_variance(X, w))[0]


# --------------------------------------------------------------------------------------
# The reduce step
# --------------------------------------------------------------------------------------


def _top2(P, pn, C):
    """Nearest centre of each point, and squared distances to the nearest and the second."""
    n = P.shape[0]
    k = C.shape[0]
    Cp = np.ascontiguousarray(C, dtype=P.dtype)
    cn = np.einsum("ij,ij->i", C, C)
    l1 = np.empty(n, dtype=np.int64)
    d1 = np.empty(n)
    d2 = np.full(n, np.inf)
    # Row blocks keep the distance tile near 32 MB whatever k is.
    step = max(1, (1 << 22) // max(k, 1))
    for s in range(0, n, step):
        D = pn[s:s + step, None] + cn[None, :] - 2.0 * (P[s:s + step] @ Cp.T)
        np.maximum(D, 0.0, out=D)
        r = np.arange(D.shape[0])
        lab = np.argmin(D, axis=1)
        l1[s:s + step] = lab
        d1[s:s + step] = D[r, lab]
        if k > 1:
            D[r, lab] = np.inf
            d2[s:s + step] = D.min(axis=1)
    return l1, d1, d2


def _swap_search(P, w, C, sse, rng, n_local_trials, budget, tol, pool=None):
    """Swap-based local search on weighted points (LocalSearch++ with the best removal).

    Each attempt draws ``n_local_trials`` points in proportion to ``w * D^2`` and, for
    each, the cost of moving every centre to it at once (the removed centre's points fall
    back to their second-nearest centre); the best such swap, if it lowers the cost, is
    followed by Lloyd and kept only when the inertia falls. The search stops after
    ``_MAX_SWAP_FAILURES`` attempts in a row that did not, or before an attempt would
    take the work past ``budget`` multiply-adds.

    Returns
    -------
    centers : ndarray of shape (k, d)
    sse : float
        Weighted inertia of ``centers`` (at their last assignment).
    n_accepted : int
        Swaps kept.
    work : float
        Multiply-adds spent, by this module's cost model.
    """
    n, d = P.shape
    k = C.shape[0]
    pn = np.einsum("ij,ij->i", P, P, dtype=np.float64)
    lloyd_cost = float(n) * k * d
    attempt = lloyd_cost + float(n) * d * (_KPP_STEP_BASE
                                           + _KPP_STEP_PER_TRIAL * n_local_trials)
    work = 0.0
    fails = accepted = 0
    while fails < _MAX_SWAP_FAILURES and work + attempt <= budget and sse > 0:
        work += attempt
        l1, d1, d2 = _top2(P, pn, C)
        cum = np.cumsum(w * d1)
        if not cum[-1] > 0:
            break
        cand = np.searchsorted(cum, rng.random(n_local_trials) * cum[-1], side="right")
        cand = np.minimum(cand, n - 1)
        dp = pn[cand][:, None] + pn[None, :] - 2.0 * (P[cand] @ P.T)
        np.maximum(dp, 0.0, out=dp)
        best_delta, best_j, best_p = 0.0, -1, -1
        for t in range(cand.shape[0]):
            gain = float(w @ np.maximum(d1 - dp[t], 0.0))
            # Cost change of moving centre j to the point, for every j at once: all
            # points gain what the point offers, and centre j's points lose its service.
            lost = w * (np.minimum(d2, dp[t]) - np.minimum(d1, dp[t]))
            delta = np.bincount(l1, weights=lost, minlength=k) - gain
            j = int(np.argmin(delta))
            if delta[j] < best_delta:
                best_delta, best_j, best_p = float(delta[j]), j, int(cand[t])
        # Below this the "gain" is rounding in the GEMM form.
        if best_j < 0 or best_delta >= -1e-9 * sse:
            fails += 1
            continue
        trial = C.copy()
        trial[best_j] = P[best_p]
        iters = int(min(_LLOYD_MAX_ITER, max(1, (budget - work) // lloyd_cost)))
        trial, trial_sse, used = _lloyd(P, trial, w, iters, tol, pool)
        work += used * lloyd_cost
        if trial_sse < sse * (1.0 - 1e-12):
            C, sse = trial, trial_sse
            accepted += 1
            fails = 0
        else:
            fails += 1
    return C, sse, accepted, work


def reduce_candidates(P, weights, n_clusters, rng, *, n_trials=None, budget=None,
                      local_search=True, n_threads=1):
    """Weighted k-means on the k-means|| candidates: best of several runs, then swaps.

    Parameters
    ----------
    P : ndarray of shape (n_candidates, d), float32 or float64
    weights : ndarray of shape (n_candidates,)
        Weight of the rows nearest to each candidate.
    n_clusters : int
    rng : numpy.random.Generator
        The runs draw from it one after the other, so the first run is the single run
        the same generator state gives.
    n_trials : int, optional
        Greedy k-means++ + weighted Lloyd runs; default 10. Runs stop early when the
        next one would take the work past half the budget, or when one reaches zero
        inertia. At least one always runs.
    budget : float, optional
        Multiply-adds for the runs and the swaps (see :func:`reduce_budget`); default
        no limit. The first run always runs: greedy k-means++ with ``2 + log(k)``
        local trials, fewer (down to one) where they would cost more than the budget,
        then weighted Lloyd for at least 10 iterations (or to convergence). Further
        runs follow while the work stays within half the budget.
    local_search : bool, default=True
        Improve the best run by swaps, within three quarters of the budget.
    n_threads : int, default=1
        Threads the greedy k-means++ sweeps and the Lloyd iterations run on (the same
        centres for any count).

    Returns
    -------
    centers : ndarray of shape (n_clusters, d), float64
    info : dict
        ``trial_sse`` (weighted candidate inertia of each run), ``best_trial``, ``sse``
        (of the result, after swaps), ``n_swaps`` (swaps kept), ``n_local_trials``,
        ``work`` (multiply-adds spent, by the cost model of this module).
    """
    with _thread_pool(n_threads, P.shape[0]) as pool:
        return _reduce_candidates(P, weights, n_clusters, rng, n_trials, budget, local_search,
                                  pool)


def _reduce_candidates(P, weights, n_clusters, rng, n_trials, budget, local_search, pool):
    P = np.asarray(P)
    if P.dtype not in (np.float32, np.float64):
        P = P.astype(np.float64)
    n, d = P.shape
    k = int(n_clusters)
    w = np.asarray(weights, dtype=np.float64)
    budget = np.inf if budget is None else float(budget)
    max_trials = _MAX_REDUCE_TRIALS if n_trials is None else max(1, int(n_trials))
    # Centred points: translation changes nothing but the cancellation in GEMM forms.
    mean = (w @ P.astype(np.float64)) / w.sum()
    P = np.ascontiguousarray((P - mean).astype(P.dtype))
    tol = _LLOYD_TOL * _total_variance(P, w)
    # Zero-weight candidates (kept only when too few have weight) may still be drawn.
    kpp_w = np.maximum(w, 1e-12)
    restart_budget = _RESTART_SHARE * budget
    # The first run's k-means++ may use the whole budget: its trials are worth more
    # than further runs at the sizes where the budget binds.
    n_local = _kpp_trials(n, d, k, 2 + int(math.log(k)), budget)
    kpp_cost = _kpp_cost(n, d, k, n_local)
    lloyd_cost = float(n) * k * d
    work = 0.0
    per_run = 0.0
    trial_sse = []
    best = None
    while len(trial_sse) < max_trials:
        first = not trial_sse
        if not first and work + per_run > restart_budget:
            break
        start = work
        idx = _greedy_kpp(P, kpp_w, k, rng, n_local, pool)
        work += kpp_cost
        iters = _LLOYD_MAX_ITER
        if np.isfinite(budget):
            room = int(max(0.0, restart_budget - work) // lloyd_cost)
            iters = min(_LLOYD_MAX_ITER, max(room, _FIRST_RUN_MIN_ITER if first else 1))
        C, sse, used = _lloyd(P, P[idx], w, iters, tol, pool)
        work += used * lloyd_cost
        per_run = max(per_run, work - start)
        trial_sse.append(sse)
        if best is None or sse < best[1]:
            best = (C, sse, len(trial_sse) - 1)
        if not sse > 0:
            break
    C, sse, best_trial = best
    n_swaps = 0
    if local_search and k < n and sse > 0:
        swap_budget = _SWAP_SHARE * budget - work
        C, sse, n_swaps, swap_work = _swap_search(P, w, C, sse, rng, n_local, swap_budget, tol,
                                                  pool)
        work += swap_work
    info = {"trial_sse": trial_sse, "best_trial": best_trial, "sse": sse, "n_swaps": n_swaps,
            "n_local_trials": n_local, "work": work}
    return C + mean, info


def kmeans_parallel(X, n_clusters, sample_weight, rng, *, oversampling_factor=2.0, n_rounds=5,
                    n_reduce_trials=None, local_search=True, polish_max_iter=None,
                    return_info=False, n_threads=1):
    """k-means|| (Bahmani et al., 2012) on the rows of ``X``, with a best-of-runs reduce.

    Each round samples every row independently with probability
    ``min(1, l * w * D^2 / phi)`` where ``l = oversampling_factor * k``; the candidates
    are weighted by the weight of the rows nearest to them. The reduce step
    (:func:`reduce_candidates`) runs greedy weighted k-means++ and weighted Lloyd on the
    candidates several times, keeps the run of lowest weighted inertia and improves it by
    swaps; Lloyd iterations on the rows of ``X`` then polish it. All of it works on
    ``X`` in memory, within :func:`reduce_budget`.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The rows (a sample of the data), float32 or float64.
    n_clusters : int
    sample_weight : ndarray of shape (n,)
    rng : numpy.random.Generator
        The only source of randomness: the same generator state gives the same centres.
    oversampling_factor : float, default=2.0
    n_rounds : int, default=5
    n_reduce_trials : int, optional
        Greedy k-means++ + Lloyd runs on the candidates; default 10, fewer where the
        budget does not allow them (large ``k``).
    local_search : bool, default=True
        Improve the best run by swaps on the candidates.
    polish_max_iter : int, optional
        Lloyd iterations on the rows of ``X`` after the reduce; default up to 10, as the
        budget allows. Each costs one Lloyd iteration over ``X`` and spares the fit up to
        one pass over the full data. ``n_reduce_trials=1, local_search=False,
        polish_max_iter=0`` gives the plain k-means|| reduce (with Lloyd to convergence).
    return_info : bool, default=False
        Also return a dict describing the reduce: that of :func:`reduce_candidates`,
        plus ``polish_iter``, with ``work`` including the polish, and ``seconds`` (the
        client time of the rounds, the reduce and the polish).
    n_threads : int, default=1
        Threads the oversampling rounds' nearest-candidate searches, the reduce's greedy
        k-means++ sweeps and every Lloyd iteration run on (the same centres for any
        count).

    Returns
    -------
    centers : ndarray of shape (n_clusters, d), float64
    n_candidates : int
    info : dict
        Only when ``return_info`` is true.
    """
    with _thread_pool(n_threads, np.shape(X)[0]) as pool:
        return _kmeans_parallel(X, n_clusters, sample_weight, rng, oversampling_factor, n_rounds,
                                n_reduce_trials, local_search, polish_max_iter, return_info,
                                pool)


def _kmeans_parallel(X, n_clusters, sample_weight, rng, oversampling_factor, n_rounds,
                     n_reduce_trials, local_search, polish_max_iter, return_info, pool):
    t_start = time.perf_counter()
    X = np.ascontiguousarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n, d = X.shape
    w = np.asarray(sample_weight, dtype=np.float64)
    ell = oversampling_factor * n_clusters
    first = int(rng.choice(n, p=w / w.sum()))
    cand = [np.array([first])]
    near, mind = _nearest_rows(X, X[[first]].astype(np.float64), pool)
    near = near.astype(np.int64)
    n_cand = 1
    for _ in range(n_rounds):
        phi = float(w @ mind)
        if phi <= 0:
            break
        p = np.minimum(1.0, ell * w * mind / phi)
        chosen = np.flatnonzero(rng.random(n) < p)
        if chosen.size == 0:
            continue
        lab, dist = _nearest_rows(X, X[chosen].astype(np.float64), pool)
        better = dist < mind
        mind[better] = dist[better]
        near[better] = lab[better] + n_cand
        cand.append(chosen)
        n_cand += chosen.size
    idx = np.concatenate(cand)
    if n_cand < n_clusters:
        # Too few candidates (tiny or nearly constant data): seed on all rows instead.
        centers, _ = kmeans_plusplus(X, n_clusters, w, rng)
        info = {"trial_sse": [], "best_trial": -1, "sse": np.nan, "n_swaps": 0,
                "n_local_trials": 0, "work": 0.0, "polish_iter": 0,
                "seconds": {"rounds": time.perf_counter() - t_start, "reduce": 0.0,
                            "polish": 0.0}}
        return (centers, n_cand, info) if return_info else (centers, n_cand)
    cw = np.bincount(near, weights=w, minlength=n_cand)
    C = X[idx]
    keep = cw > 0
    if keep.sum() >= n_clusters:
        C, cw = C[keep], cw[keep]
    budget = reduce_budget(n, n_clusters, d)
    t_reduce = time.perf_counter()
    centers, info = _reduce_candidates(C, cw, n_clusters, rng, n_reduce_trials, budget,
                                       local_search, pool)
    t_polish = time.perf_counter()
    sample_iter = float(n) * n_clusters * d
    if polish_max_iter is None:
        room = int(max(0.0, budget - info["work"]) // sample_iter)
        iters = min(_POLISH_MAX_ITER, room)
    else:
        iters = int(polish_max_iter)
    info["polish_iter"] = 0
    if iters > 0:
        tol = _LLOYD_TOL * _total_variance(X, w)
        centers, _, info["polish_iter"] = _lloyd(X, centers, w, iters, tol, pool)
        info["work"] += info["polish_iter"] * sample_iter
    info["seconds"] = {"rounds": t_reduce - t_start, "reduce": t_polish - t_reduce,
                       "polish": time.perf_counter() - t_polish}
    centers = np.ascontiguousarray(centers, dtype=np.float64)
    return (centers, n_cand, info) if return_info else (centers, n_cand)
