"""Seeding k-means on an in-memory sample: greedy k-means++ and k-means||.

These run on the client over a sample drawn from the full data in one pass (see
``dclust.algorithms.kmeans``); they use the same nearest-centre kernel as the passes.
"""

from __future__ import annotations

import math

import numpy as np

from .lloyd import lloyd_partial, nearest_center

__all__ = ["kmeans_plusplus", "kmeans_parallel", "weighted_lloyd"]

# Above this many multiply-adds the greedy trials are thinned: k-means++ on the
# k-means|| candidates must stay a small fraction of one Lloyd pass.
_KPP_FLOP_BUDGET = 2e10


def _sqdist_to(X, xnorm, c):
    d = xnorm - 2.0 * (X @ c) + float(c @ c)
    np.maximum(d, 0.0, out=d)
    return d


def kmeans_plusplus(X, n_clusters, sample_weight, rng, n_local_trials=None):
    """Greedy weighted k-means++ (Arthur & Vassilvitskii; scikit-learn's variant).

    Parameters
    ----------
    X : ndarray of shape (n, d), float64
    n_clusters : int
    sample_weight : ndarray of shape (n,)
    rng : numpy.random.Generator
    n_local_trials : int, optional
        Candidates tried per centre; default ``2 + log(k)``, thinned for large inputs.

    Returns
    -------
    centers : ndarray of shape (n_clusters, d)
    indices : ndarray of shape (n_clusters,), the rows of ``X`` chosen.
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    w = np.asarray(sample_weight, dtype=np.float64)
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
        budget = int(_KPP_FLOP_BUDGET // max(1, 2 * n * d * n_clusters))
        n_local_trials = max(1, min(n_local_trials, budget))
    xnorm = np.einsum("ij,ij->i", X, X)
    centers = np.empty((n_clusters, d))
    indices = np.empty(n_clusters, dtype=np.int64)
    first = rng.choice(n, p=w / w.sum())
    centers[0] = X[first]
    indices[0] = first
    closest = _sqdist_to(X, xnorm, X[first])
    pot = float(w @ closest)
    for c in range(1, n_clusters):
        if pot <= 0:
            # Fewer distinct points than clusters: repeat points rather than fail.
            idx = int(rng.integers(n))
            centers[c], indices[c] = X[idx], idx
            continue
        cum = np.cumsum(w * closest)
        cand = np.searchsorted(cum, rng.random(n_local_trials) * cum[-1])
        cand = np.minimum(cand, n - 1)
        dist = xnorm[None, :] - 2.0 * (X[cand] @ X.T) + xnorm[cand][:, None]
        np.maximum(dist, 0.0, out=dist)
        np.minimum(closest[None, :], dist, out=dist)
        pots = dist @ w
        best = int(np.argmin(pots))
        pot = float(pots[best])
        closest = dist[best]
        centers[c] = X[cand[best]]
        indices[c] = cand[best]
    return centers, indices


def weighted_lloyd(X, centers, sample_weight, max_iter=10, tol=1e-6):
    """A few Lloyd iterations on a small weighted point set (empty clusters stay put)."""
    C = np.array(centers, dtype=np.float64)
    for _ in range(max_iter):
        s = lloyd_partial(X, C, sample_weight)
        nonempty = s["weights"] > 0
        new = C.copy()
        new[nonempty] = s["sums"][nonempty] / s["weights"][nonempty, None]
        shift = float(((new - C) ** 2).sum())
        C = new
        if shift <= tol * float((C**2).sum() + 1e-300):
            break
    return C


def kmeans_parallel(X, n_clusters, sample_weight, rng, *, oversampling_factor=2.0, n_rounds=5):
    """k-means|| (Bahmani et al., 2012) on the rows of ``X``.

    Each round samples every row independently with probability
    ``min(1, l * w * D^2 / phi)`` where ``l = oversampling_factor * k``; the candidates
    are weighted by the weight of the rows nearest to them, reclustered with weighted
    k-means++ and polished with a few weighted Lloyd iterations.

    Returns
    -------
    centers : ndarray of shape (n_clusters, d)
    n_candidates : int
    """
    X = np.ascontiguousarray(X)
    n = X.shape[0]
    w = np.asarray(sample_weight, dtype=np.float64)
    ell = oversampling_factor * n_clusters
    first = int(rng.choice(n, p=w / w.sum()))
    cand = [np.array([first])]
    near, mind = nearest_center(X, X[[first]].astype(np.float64))
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
        lab, dist = nearest_center(X, X[chosen].astype(np.float64))
        better = dist < mind
        mind[better] = dist[better]
        near[better] = lab[better] + n_cand
        cand.append(chosen)
        n_cand += chosen.size
    idx = np.concatenate(cand)
    if n_cand < n_clusters:
        # Too few candidates (tiny or nearly constant data): seed on all rows instead.
        centers, _ = kmeans_plusplus(X, n_clusters, w, rng)
        return centers, n_cand
    cw = np.bincount(near, weights=w, minlength=n_cand)
    C = X[idx].astype(np.float64)
    keep = cw > 0
    if keep.sum() >= n_clusters:
        C, cw = C[keep], cw[keep]
    centers, _ = kmeans_plusplus(C, n_clusters, np.maximum(cw, 1e-12), rng)
    centers = weighted_lloyd(C, centers, cw)
    return centers, n_cand
