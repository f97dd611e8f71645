"""Per-chunk k-medoids kernels: assignment, the cost of candidate medoid sets, refinement.

``medoid_assign``
    Nearest medoid and the dissimilarity to it, for prediction.
``medoid_cost_partial``
    The total deviation (sum of dissimilarities to the nearest medoid) of several
    candidate medoid sets at once: distances to the union of their medoids are computed
    once per tile of rows, then each set takes its minimum over its own columns.
``medoid_refine_partial``
    One refinement step's statistics: the loss and cluster of every row under the
    current medoids; for every cluster ``c`` and each of its candidate replacement
    medoids ``j``, ``sum_{o in c} d(o, cand_cj)`` (so the client can move each medoid to
    the candidate that serves its current members best); and the next candidates, the
    members nearest to their medoid and a random sample of members, per cluster.

Every result is a dict of small NumPy arrays whose fields combine by addition or by
keeping the top entries per cluster (:func:`per_cluster_top_combine`), so a tree
reduction gives the same result for any grouping of the chunks.
"""

from __future__ import annotations

import numpy as np

from .._xp import array_namespace, to_numpy
from .metrics import pairwise_distances

__all__ = [
    "medoid_assign",
    "medoid_cost_partial",
    "medoid_refine_partial",
    "per_cluster_top",
    "per_cluster_top_combine",
    "refine_rng",
]

# Distances of at most this many (row, medoid) pairs are held at once per chunk.
_TILE_ELEMENTS = 1 << 20


def _tile(m):
    return int(max(256, _TILE_ELEMENTS // max(1, m)))


def _assign_xp(xp, X, M, metric):
    n = X.shape[0]
    tile = _tile(M.shape[0])
    labs, dists = [], []
    for s in range(0, n, tile):
        D = pairwise_distances(X[s : min(s + tile, n), ...], M, metric)
        lab = xp.argmin(D, axis=1)
        labs.append(to_numpy(lab).astype(np.int64))
        dists.append(to_numpy(xp.min(D, axis=1)))
    if not labs:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(labs), np.concatenate(dists)


def medoid_assign(X, medoids, metric="euclidean"):
    """Index of, and dissimilarity to, the nearest medoid of each row.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    medoids : array of shape (n_clusters, n_features), same namespace as ``X``
    metric : str

    Returns
    -------
    labels : int64 ndarray of shape (n_rows,)
        Ties go to the lowest medoid index.
    dist : float64 ndarray of shape (n_rows,)
    """
    xp = array_namespace(X, medoids)
    return _assign_xp(xp, X, medoids, metric)


def medoid_cost_partial(X, medoids, sets, metric="euclidean"):
    """Total deviation of each candidate medoid set over one chunk.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    medoids : array of shape (n_union, n_features)
        Every medoid of every set, once (sets that share medoids share their columns).
    sets : int ndarray of shape (n_sets, n_clusters)
        Rows of ``medoids`` that make up each set.
    metric : str

    Returns
    -------
    stats : dict
        ``cost`` float64 of shape (n_sets,): ``sum_rows min_{j in set} d(row, medoids[j])``.
    """
    xp = array_namespace(X, medoids)
    sets = np.asarray(sets, dtype=np.int64)
    n = X.shape[0]
    cost = np.zeros(sets.shape[0])
    tile = _tile(medoids.shape[0])
    for s in range(0, n, tile):
        D = to_numpy(pairwise_distances(X[s : min(s + tile, n), ...], medoids, metric))
        for i in range(sets.shape[0]):
            cost[i] += float(np.sum(np.min(D[:, sets[i]], axis=1)))
    return {"cost": cost}


def refine_rng(seed, iteration, block_id):
    """The generator of chunk ``block_id`` in refinement pass ``iteration``."""
    return np.random.default_rng([int(seed), 11, int(iteration), int(block_id)])


def per_cluster_top(labels, key, rows, x, n_clusters, size):
    """The ``size`` entries with the largest ``key`` in each cluster (ties: smallest row).

    Parameters
    ----------
    labels, key, rows : ndarrays of shape (n,)
    x : ndarray of shape (n, n_features)
    n_clusters, size : int

    Returns
    -------
    top : dict
        ``key`` (k, size) float64 (``-inf`` in empty slots), ``row`` (k, size) int64 (-1 in
        empty slots) and ``x`` (k, size, n_features) float64.
    """
    d = x.shape[1]
    out_key = np.full((n_clusters, size), -np.inf)
    out_row = np.full((n_clusters, size), -1, dtype=np.int64)
    out_x = np.zeros((n_clusters, size, d))
    if labels.shape[0] and size:
        order = np.lexsort((rows, -key, labels))
        lab = labels[order]
        start = np.searchsorted(lab, np.arange(n_clusters))
        rank = np.arange(lab.shape[0]) - start[lab]
        keep = rank < size
        sel = order[keep]
        lab, rank = lab[keep], rank[keep]
        out_key[lab, rank] = key[sel]
        out_row[lab, rank] = rows[sel]
        out_x[lab, rank] = x[sel]
    return {"key": out_key, "row": out_row, "x": out_x}


def per_cluster_top_combine(parts, size):
    """Merge :func:`per_cluster_top` results, keeping the ``size`` best per cluster.

    Associative and independent of the order of ``parts`` (ties broken by row number).
    """
    key = np.concatenate([p["key"] for p in parts], axis=1)
    row = np.concatenate([p["row"] for p in parts], axis=1)
    x = np.concatenate([p["x"] for p in parts], axis=1)
    order = np.lexsort((row, -key), axis=1)[:, :size]
    return {
        "key": np.take_along_axis(key, order, axis=1),
        "row": np.take_along_axis(row, order, axis=1),
        "x": np.take_along_axis(x, order[:, :, None], axis=1),
    }


def medoid_refine_partial(X, medoids, medoid_rows, candidates, candidate_ok, metric="euclidean", *,
                          n_near=16, n_random=16, seed=0, iteration=0, block_id=0, row_offset=0):
    """Statistics of one refinement pass over one chunk.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    medoids : array of shape (n_clusters, n_features)
        Current medoids, same namespace as ``X``.
    medoid_rows : int ndarray of shape (n_clusters,)
        Their global row numbers (never proposed as candidates).
    candidates : array of shape (n_clusters, n_candidates, n_features)
        Candidate replacement medoids of each cluster, same namespace as ``X``.
    candidate_ok : bool ndarray of shape (n_clusters, n_candidates)
        Which candidate slots hold a candidate.
    metric : str
    n_near, n_random : int
        Next candidates to return per cluster: the members nearest to their medoid and a
        uniform sample of members (keys drawn from ``refine_rng(seed, iteration, block_id)``).
    row_offset : int
        Global row number of the chunk's first row.

    Returns
    -------
    stats : dict
        ``loss`` (0-d), ``size`` (k,) members per cluster, ``own`` (k,) the sum of the
        members' dissimilarities to their medoid, ``cand_sum`` (k, n_candidates) the sum
        of the members' dissimilarities to each candidate (0 for empty slots), and the
        next candidates ``near`` and ``random`` (:func:`per_cluster_top` dicts).
    """
    xp = array_namespace(X, medoids)
    n, d = X.shape
    k = medoids.shape[0]
    ok = np.asarray(candidate_ok, dtype=bool)
    labels, dist = _assign_xp(xp, X, medoids, metric)
    size = np.bincount(labels, minlength=k).astype(np.int64)
    own = np.bincount(labels, weights=dist, minlength=k)
    cand_sum = np.zeros(ok.shape)
    if n:
        order = np.argsort(labels, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(size)])
        for c in np.flatnonzero((size > 0) & ok.any(axis=1)):
            members = order[bounds[c] : bounds[c + 1]]
            cols = np.flatnonzero(ok[c])
            Xc = xp.take(X, xp.asarray(members), axis=0)
            Cc = xp.take(candidates[c, ...], xp.asarray(cols), axis=0)
            tile = _tile(cols.shape[0])
            for s in range(0, members.shape[0], tile):
                D = pairwise_distances(Xc[s : min(s + tile, members.shape[0]), ...], Cc, metric)
                cand_sum[c, cols] += to_numpy(xp.sum(D, axis=0))
    rows = np.arange(n, dtype=np.int64) + int(row_offset)
    eligible = np.flatnonzero(~np.isin(rows, np.asarray(medoid_rows, dtype=np.int64)))
    lab_e, rows_e = labels[eligible], rows[eligible]
    near_sel = _preselect(lab_e, -dist[eligible], k, n_near)
    u = refine_rng(seed, iteration, block_id).random(n)[eligible]
    rand_sel = _preselect(lab_e, u, k, n_random)
    picked = np.union1d(near_sel, rand_sel)
    x_p = np.asarray(to_numpy(xp.take(X, xp.asarray(eligible[picked]), axis=0)), dtype=np.float64)
    x_p = x_p.reshape(picked.shape[0], d)
    pos = {"near": np.searchsorted(picked, near_sel), "random": np.searchsorted(picked, rand_sel)}
    keys = {"near": -dist[eligible], "random": u}
    out = {"loss": np.asarray(float(np.sum(dist))), "size": size, "own": own, "cand_sum": cand_sum}
    for name, sel, m in (("near", near_sel, n_near), ("random", rand_sel, n_random)):
        out[name] = per_cluster_top(lab_e[sel], keys[name][sel], rows_e[sel], x_p[pos[name]], k, m)
    return out


def _preselect(labels, key, k, size):
    """Positions of the ``size`` largest keys of each cluster (ties: first position)."""
    if not labels.shape[0] or not size:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(labels.shape[0]), -key, labels))
    lab = labels[order]
    start = np.searchsorted(lab, np.arange(k))
    rank = np.arange(lab.shape[0]) - start[lab]
    return np.sort(order[rank < size])
