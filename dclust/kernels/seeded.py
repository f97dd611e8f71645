"""Seeded ("constrained") k-means kernels: some rows' clusters are fixed by known classes.

A row of known class ``c`` (``y >= 0``) always counts for cluster ``j`` where
``classes[j] == c``; the other rows (``y == -1``) go to their nearest centre, as in
Lloyd's algorithm (Basu, Banerjee and Mooney, 2002, "Constrained-KMeans").

:func:`seeded_lloyd_partial` keeps the compiled Lloyd kernel for the unlabelled rows,
which are nearly all of them: it runs :func:`~dclust.kernels.lloyd.lloyd_partial` with the
labelled rows' weights set to zero (they then add exactly nothing anywhere), and adds
the labelled rows to their classes' clusters in a small NumPy step. Zeroing, rather than
subtracting their contribution from their nearest cluster afterwards, leaves no rounding
residue: a cluster reached only by labelled rows of other classes stays exactly empty.

:func:`seeded_kmeans_parallel` seeds the clusters of the unknown classes on unlabelled
sample rows: k-means|| (Bahmani et al., 2012) whose potentials start from the known
classes' centres, so new centres go where the known classes leave rows unexplained, or
plain k-means|| with the known centres put back, whichever explains the sample better.
"""

from __future__ import annotations

import math

import numpy as np

from .._xp import array_namespace, is_numpy_namespace, to_numpy
from .lloyd import lloyd_partial, nearest_center
from .metrics import pairwise_distances
from .seeding import kmeans_parallel

__all__ = ["class_codes", "seeded_lloyd_partial", "seeded_kmeans_parallel",
           "seeded_kmeans_plusplus", "conditioned_kmeans_parallel", "anchored_kmeans_parallel",
           "lloyd_fixed"]


def class_codes(y, classes):
    """Cluster index of each labelled value of ``y`` in the sorted ``classes``.

    Returns
    -------
    codes : int64 array of shape (n,)
        ``-1`` where ``y`` is ``-1`` (unknown), else the index of ``y`` in ``classes``.

    Raises
    ------
    ValueError
        A value of ``y`` is neither ``-1`` nor in ``classes``.
    """
    y = np.asarray(to_numpy(y), dtype=np.int64).reshape(-1)
    classes = np.asarray(classes, dtype=np.int64)
    codes = np.full(y.shape[0], -1, dtype=np.int64)
    lab = y >= 0
    if lab.any():
        pos = np.searchsorted(classes, y[lab])
        ok = pos < classes.shape[0]
        ok[ok] = classes[pos[ok]] == y[lab][ok]
        if not ok.all():
            bad = y[lab][~ok][0]
            raise ValueError(f"class {int(bad)} is not one of the known classes {classes.tolist()}")
        codes[lab] = pos
    if (y < -1).any():
        raise ValueError(f"class {int(y[y < -1][0])} is not valid; unknown rows are -1")
    return codes


def seeded_lloyd_partial(X, y, centers, classes, sample_weight=None, *, n_far=0, row_offset=0):
    """Lloyd statistics of one chunk where the labelled rows stay in their class's cluster.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    y : int array of shape (n_rows,)
        Known class of each row, ``-1`` for unknown.
    centers : array of shape (n_clusters, n_features)
        Current centres (float64); centre ``j < len(classes)`` is class ``classes[j]``'s.
    classes : int array of shape (n_known,)
        The known classes, sorted.
    sample_weight : array of shape (n_rows,), default=None
    n_far : int, default=0
        Far rows to return (candidates for empty clusters); labelled rows are never
        among them, since moving one would take it out of its class.
    row_offset : int, default=0

    Returns
    -------
    stats : dict
        As :func:`~dclust.kernels.lloyd.lloyd_partial`: ``sums``, ``weights``,
        ``inertia`` (distances of labelled rows to their class's centre) and the far
        rows.
    """
    codes = class_codes(y, classes)
    lab = np.flatnonzero(codes >= 0)
    if lab.size == 0:
        return lloyd_partial(X, centers, sample_weight, n_far=n_far, row_offset=row_offset)
    w = None if sample_weight is None else np.asarray(to_numpy(sample_weight), dtype=np.float64)
    free = np.ones(codes.shape[0]) if w is None else w.copy()
    free[lab] = 0.0
    xp = array_namespace(X)
    w_dev = free if is_numpy_namespace(xp) else xp.asarray(free)
    out = lloyd_partial(X, centers, w_dev, n_far=n_far, row_offset=row_offset)
    # Labelled rows had weight 0 there: none of them may be offered as a far row.
    keep = np.flatnonzero(~np.isin(np.asarray(to_numpy(out["far_row"])) - row_offset, lab))
    for key in ("far_dist", "far_row", "far_x", "far_label", "far_weight"):
        out[key] = np.asarray(to_numpy(out[key]))[keep]
    Xl = np.asarray(to_numpy(xp.take(X, xp.asarray(lab), axis=0)), dtype=np.float64)
    wl = np.ones(lab.size) if w is None else w[lab]
    cl = codes[lab]
    C = np.asarray(centers, dtype=np.float64)
    diff = Xl - C[cl]
    k = C.shape[0]
    sums = np.array(to_numpy(out["sums"]), dtype=np.float64)
    np.add.at(sums, cl, Xl * wl[:, None])
    out["sums"] = sums
    out["weights"] = np.asarray(to_numpy(out["weights"]), dtype=np.float64) + \
        np.bincount(cl, weights=wl, minlength=k)
    out["inertia"] = np.asarray(float(to_numpy(out["inertia"]))
                                + float(wl @ np.einsum("ij,ij->i", diff, diff)))
    return out


# ---- seeding the unknown classes' clusters -------------------------------------------
def seeded_kmeans_plusplus(P, pw, fixed, n_new, rng, n_local_trials=None):
    """Greedy weighted k-means++ for ``n_new`` centres among the rows of ``P``, the
    potentials starting from the ``fixed`` centres (scikit-learn's local trials:
    ``2 + log(n_new)`` draws per centre, the one lowering the potential most kept).

    Returns
    -------
    centers : ndarray of shape (n_new, n_features), float64
    """
    P = np.ascontiguousarray(P)
    pw = np.asarray(pw, dtype=np.float64)
    fixed = np.asarray(fixed, dtype=np.float64).reshape(-1, P.shape[1])
    m = P.shape[0]
    trials = int(n_local_trials or 2 + int(math.log(max(n_new, 1))))
    if fixed.shape[0]:
        _, d2 = nearest_center(P, fixed)
        d2 = np.asarray(d2, dtype=np.float64).copy()
    else:
        d2 = np.full(m, np.inf)
    chosen = []
    for _ in range(n_new):
        pot = pw * d2 if np.isfinite(d2).all() else pw.copy()
        total = float(pot.sum())
        if not total > 0:
            # Every row sits on a centre already (duplicates): any row will do.
            pick = int(rng.integers(m))
            chosen.append(pick)
            d2 = np.minimum(d2, pairwise_distances(P, P[[pick]], "sqeuclidean")[:, 0])
            continue
        cand = np.searchsorted(np.cumsum(pot), rng.random(trials) * total)
        cand = np.minimum(cand, m - 1)
        D = pairwise_distances(P, P[cand], "sqeuclidean")
        new_d2 = np.minimum(d2[:, None], D)
        best = int(np.argmin(pw @ new_d2))
        chosen.append(int(cand[best]))
        d2 = new_d2[:, best]
    return np.ascontiguousarray(P[chosen], dtype=np.float64)


def lloyd_fixed(P, pw, fixed, centers, max_iter=10):
    """Weighted Lloyd iterations on the rows of ``P`` that move ``centers`` only; the
    ``fixed`` centres keep the rows nearest to them but do not move."""
    nf = fixed.shape[0]
    new = np.array(centers, dtype=np.float64)
    if new.shape[0] == 0:
        return new
    for _ in range(int(max_iter)):
        lab, _ = nearest_center(P, np.vstack([fixed, new]))
        lab = np.asarray(lab)
        sel = lab >= nf
        code = lab[sel] - nf
        ws = np.bincount(code, weights=pw[sel], minlength=new.shape[0])
        sums = np.zeros_like(new)
        np.add.at(sums, code, np.asarray(P[sel], dtype=np.float64) * pw[sel, None])
        upd = new.copy()
        nz = ws > 0
        upd[nz] = sums[nz] / ws[nz, None]
        if np.array_equal(upd, new):
            break
        new = upd
    return new


def conditioned_kmeans_parallel(X, sample_weight, fixed, n_new, rng, *,
                                oversampling_factor=2.0, n_rounds=5, max_iter=10, n_trials=10):
    """k-means|| for ``n_new`` centres in addition to ``fixed`` ones.

    The oversampling rounds are Bahmani et al.'s, except that every row's potential
    starts as its squared distance to the nearest fixed centre (rather than to one
    random row): rows the known classes already explain are rarely drawn. Each candidate
    is weighted by the rows nearer to it than to any fixed centre or other candidate.
    The reduce runs ``n_trials`` times greedy weighted k-means++ for ``n_new`` of them
    (potentials again counted from the fixed centres) and weighted Lloyd on the
    candidates that moves only the new centres, and keeps the run of lowest weighted
    inertia; Lloyd iterations on the rows of ``X`` (again moving the new centres only)
    polish it.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Sample rows (none of a known class).
    sample_weight : ndarray of shape (n,)
    fixed : ndarray of shape (n_fixed, d)
        The known classes' centres.
    n_new : int
    rng : numpy.random.Generator
    oversampling_factor : float, default=2.0
        Candidates per round, times ``n_new``.
    n_rounds : int, default=5
    max_iter : int, default=10
        Lloyd iterations of each reduce run and of the polish.
    n_trials : int, default=10
        Reduce runs.

    Returns
    -------
    centers : ndarray of shape (n_new, d), float64
    """
    X = np.ascontiguousarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n, d = X.shape
    F = np.ascontiguousarray(fixed, dtype=np.float64).reshape(-1, d)
    if n_new <= 0:
        return np.zeros((0, d))
    w = np.asarray(sample_weight, dtype=np.float64)
    if F.shape[0]:
        _, mind = nearest_center(X, F)
        mind = np.asarray(mind, dtype=np.float64).copy()
        picked = []
    else:  # nothing fixed: Bahmani et al.'s first centre, a row drawn by weight
        first = int(rng.choice(n, p=w / w.sum()))
        _, mind = nearest_center(X, X[[first]].astype(np.float64))
        mind = np.asarray(mind, dtype=np.float64).copy()
        picked = [np.array([first])]
    ell = oversampling_factor * n_new
    for _ in range(int(n_rounds)):
        phi = float(w @ mind)
        if not phi > 0:
            break
        p = np.minimum(1.0, ell * w * mind / phi)
        chosen = np.flatnonzero(rng.random(n) < p)
        if chosen.size == 0:
            continue
        _, dist = nearest_center(X, X[chosen].astype(np.float64))
        mind = np.minimum(mind, np.asarray(dist, dtype=np.float64))
        picked.append(chosen)
    idx = np.unique(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
    P, pw = X, w
    if idx.size >= n_new:
        C = X[idx].astype(np.float64)
        lab, _ = nearest_center(X, np.vstack([F, C]))
        cw = np.bincount(np.asarray(lab), weights=w, minlength=F.shape[0] + C.shape[0])
        cw = cw[F.shape[0]:]
        if (cw > 0).sum() >= n_new:
            P, pw = C[cw > 0], cw[cw > 0]
    # The reduce: several greedy k-means++ + Lloyd runs on the candidates, the one of
    # lowest weighted inertia kept (one run misses a cluster about half the time).
    best, best_sse = None, np.inf
    for _ in range(max(1, int(n_trials))):
        new = lloyd_fixed(P, pw, F, seeded_kmeans_plusplus(P, pw, F, n_new, rng), max_iter)
        _, d2 = nearest_center(P, np.vstack([F, new]))
        sse = float(pw @ np.asarray(d2))
        if sse < best_sse:
            best, best_sse = new, sse
    return lloyd_fixed(X, w, F, best, max_iter)


def anchored_kmeans_parallel(X, sample_weight, fixed, n_new, rng, *, oversampling_factor=2.0,
                             n_rounds=5, max_iter=10):
    """k-means|| for all ``n_fixed + n_new`` centres, the fixed ones then put back.

    Runs :func:`~dclust.kernels.seeding.kmeans_parallel` (with its best-of-runs reduce)
    on the rows of ``X`` for every cluster, matches the ``fixed`` centres one-to-one to
    the nearest of its centres (the Hungarian method on squared distances), keeps the
    ``n_new`` unmatched ones and polishes them with Lloyd iterations that move only them.

    Returns
    -------
    centers : ndarray of shape (n_new, d), float64
    """
    from scipy.optimize import linear_sum_assignment

    F = np.ascontiguousarray(fixed, dtype=np.float64).reshape(-1, X.shape[1])
    w = np.asarray(sample_weight, dtype=np.float64)
    C, _ = kmeans_parallel(X, F.shape[0] + n_new, w, rng,
                           oversampling_factor=oversampling_factor, n_rounds=n_rounds)
    _, matched = linear_sum_assignment(pairwise_distances(F, C, "sqeuclidean"))
    rest = np.setdiff1d(np.arange(C.shape[0]), matched)
    return lloyd_fixed(X, w, F, C[rest], max_iter)


def seeded_kmeans_parallel(X, sample_weight, fixed, n_new, rng, *, oversampling_factor=2.0,
                           n_rounds=5):
    """Centres for the ``n_new`` unknown classes, given the known classes' ``fixed`` ones.

    Two seedings are made and the one of lower weighted inertia on the rows of ``X``
    (with the fixed centres) is kept: :func:`conditioned_kmeans_parallel`, k-means||
    whose potentials start from the fixed centres, and :func:`anchored_kmeans_parallel`,
    plain k-means|| for every cluster with the fixed centres put back. Neither wins
    everywhere: on heavily overlapping classes the first can settle two new centres in
    one class, which the second's restarts and swaps avoid; on classes k-means alone
    would cut wrongly (elongated or of very unequal sizes) the first follows the known
    classes better.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Sample rows, none of them labelled.
    sample_weight : ndarray of shape (n,)
    fixed : ndarray of shape (n_fixed, d)
    n_new : int
    rng : numpy.random.Generator
    oversampling_factor : float, default=2.0
    n_rounds : int, default=5

    Returns
    -------
    centers : ndarray of shape (n_new, d), float64
    """
    X = np.ascontiguousarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    F = np.ascontiguousarray(fixed, dtype=np.float64).reshape(-1, X.shape[1])
    if n_new <= 0:
        return np.zeros((0, X.shape[1]))
    w = np.asarray(sample_weight, dtype=np.float64)
    kw = dict(oversampling_factor=oversampling_factor, n_rounds=n_rounds)
    runs = [conditioned_kmeans_parallel(X, w, F, n_new, rng, **kw)]
    if F.shape[0]:
        runs.append(anchored_kmeans_parallel(X, w, F, n_new, rng, **kw))
    sse = [float(w @ np.asarray(nearest_center(X, np.vstack([F, c]))[1])) for c in runs]
    return np.ascontiguousarray(runs[int(np.argmin(sse))], dtype=np.float64)
