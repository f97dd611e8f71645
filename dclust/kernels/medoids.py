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

CuPy chunks run the same code on the device: dissimilarities by
:func:`dclust.kernels.metrics.pairwise_distances_dense` (GEMM-based), argmin and
partition on the device, and the swap gains summed there with a scatter-add
(:func:`_swap_sums_dense`, tested with ``mod=numpy``); only per-row labels and distances
and the small statistics come to the host.

Every result is a dict of small NumPy arrays whose fields combine by addition or by
keeping the top entries per cluster (:func:`per_cluster_top_combine`), so a tree
reduction gives the same result for any grouping of the chunks.
"""

from __future__ import annotations

import numpy as np

from .._xp import array_namespace, is_numpy_namespace, numpy_like, to_numpy
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


def _assign_xp(xp, X, M, metric, second=False):
    """Nearest medoid and its distance (and, with ``second``, the second-nearest distance)."""
    n = X.shape[0]
    k = M.shape[0]
    tile = _tile(k)
    labs, dists, seconds = [], [], []
    for s in range(0, n, tile):
        D = pairwise_distances(X[s : min(s + tile, n), ...], M, metric)
        lab = xp.argmin(D, axis=1)
        labs.append(to_numpy(lab).astype(np.int64))
        dists.append(to_numpy(xp.min(D, axis=1)))
        if second:
            mod, _ = numpy_like(xp)
            if k < 2:
                seconds.append(np.full(dists[-1].shape[0], np.inf))
            elif mod is not None:  # NumPy or CuPy: partition where D lives
                seconds.append(to_numpy(mod.partition(D, 1, axis=1)[:, 1]))
            else:
                Dn = np.array(to_numpy(D), dtype=np.float64, copy=True)
                seconds.append(np.partition(Dn, 1, axis=1)[:, 1])
    if not labs:
        empty = (np.zeros(0, np.int64), np.zeros(0))
        return empty + (np.zeros(0),) if second else empty
    out = (np.concatenate(labs), np.concatenate(dists))
    return out + (np.concatenate(seconds),) if second else out


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
    cols = [xp.asarray(sets[i]) for i in range(sets.shape[0])]
    for s in range(0, n, tile):
        D = pairwise_distances(X[s : min(s + tile, n), ...], medoids, metric)
        for i, c in enumerate(cols):
            cost[i] += float(xp.sum(xp.min(xp.take(D, c, axis=1), axis=1)))
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
                          n_near=16, n_random=16, seed=0, iteration=0, block_id=0, row_offset=0,
                          swap_candidates=None, n_swap=0):
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
    swap_candidates : array of shape (n_swap_candidates, n_features), optional
        Rows to score as replacements of *any* medoid (FastPAM1 swap gains).
    n_swap : int, default=0
        Next swap candidates to return: a sample of rows drawn with probability
        proportional to their dissimilarity to their medoid (A-Res keys), so that
        under-served regions get candidates.

    Returns
    -------
    stats : dict
        ``loss`` (0-d), ``size`` (k,) members per cluster, ``own`` (k,) the sum of the
        members' dissimilarities to their medoid, ``cand_sum`` (k, n_candidates) the sum
        of the members' dissimilarities to each candidate (0 for empty slots), and the
        next candidates ``near`` and ``random`` (:func:`per_cluster_top` dicts). With
        swap candidates, ``swap_shared`` (c,) and ``swap_accum`` (k, c): the change of
        the loss when medoid ``i`` is replaced by candidate ``j`` is
        ``swap_shared[j] + swap_accum[i, j]`` (Schubert & Rousseeuw's FastPAM1 split into
        sums over rows: ``min(d_oj - dn_o, 0)`` for every row ``o``, plus, over the
        members of ``i``, what they lose beyond that when ``i`` goes). With ``n_swap``,
        ``swap_next`` (a :func:`per_cluster_top` dict of one group).
    """
    xp = array_namespace(X, medoids)
    n, d = X.shape
    k = medoids.shape[0]
    ok = np.asarray(candidate_ok, dtype=bool)
    with_swaps = swap_candidates is not None
    if with_swaps:
        labels, dist, dist2 = _assign_xp(xp, X, medoids, metric, second=True)
    else:
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
    if with_swaps:
        out["swap_shared"], out["swap_accum"] = _swap_sums(xp, X, labels, dist, dist2,
                                                           swap_candidates, k, metric)
    if n_swap:
        # A-Res with weight dn: log(u) / dn, largest keys win; rows at distance 0 never.
        u2 = refine_rng(seed, iteration, block_id + (1 << 40)).random(n)[eligible]
        dn = dist[eligible]
        with np.errstate(divide="ignore"):
            key = np.where(dn > 0, np.log(np.maximum(u2, np.finfo(float).tiny)) / dn, -np.inf)
        zeros = np.zeros(eligible.shape[0], np.int64)
        sel = _preselect(zeros, key, 1, n_swap)
        xs = np.asarray(to_numpy(xp.take(X, xp.asarray(eligible[sel]), axis=0)), dtype=np.float64)
        out["swap_next"] = per_cluster_top(zeros[sel], key[sel], rows_e[sel],
                                           xs.reshape(sel.shape[0], d), 1, n_swap)
    return out


def _swap_sums(xp, X, labels, dn, ds, cand, k, metric):
    """FastPAM1's swap gains of every (medoid, candidate) pair, as sums over this chunk's rows."""
    if not is_numpy_namespace(xp):
        mod, scatter_add = numpy_like(xp)
        if mod is not None:
            return _swap_sums_dense(mod, scatter_add, X, labels, dn, ds, cand, k, metric)
    n = X.shape[0]
    c = cand.shape[0]
    shared = np.zeros(c)
    accum = np.zeros((k, c))
    if not n or not c:
        return shared, accum
    tile = _tile(c)
    for s in range(0, n, tile):
        e = min(s + tile, n)
        Dc = np.asarray(to_numpy(pairwise_distances(X[s:e, ...], cand, metric)), dtype=np.float64)
        dno = dn[s:e, None]
        dso = ds[s:e, None]
        shared += np.minimum(Dc - dno, 0.0).sum(axis=0)
        # Members of medoid i when i is removed: to the candidate if nearer than their
        # second medoid, else to the second; minus what the shared term already counted.
        h = np.where(Dc < dno, 0.0, np.minimum(Dc, dso) - dno)
        lab = labels[s:e]
        order = np.argsort(lab, kind="stable")
        ls = lab[order]
        starts = np.flatnonzero(np.r_[True, ls[1:] != ls[:-1]])
        accum[ls[starts]] += np.add.reduceat(h[order], starts, axis=0)
    return shared, accum


def _swap_sums_dense(mod, scatter_add, X, labels, dn, ds, cand, k, metric):
    """:func:`_swap_sums` with whole-array operations of ``mod`` (CuPy's path): the
    ``(rows x candidates)`` terms stay where ``X`` lives and are scatter-added per medoid;
    only the ``k x c`` sums come back."""
    n = X.shape[0]
    c = cand.shape[0]
    if not n or not c:
        return np.zeros(c), np.zeros((k, c))
    shared = mod.zeros(c, dtype=mod.float64)
    accum = mod.zeros((k, c), dtype=mod.float64)
    lab_d = mod.asarray(labels)
    dn_d = mod.asarray(dn, dtype=mod.float64)
    ds_d = mod.asarray(ds, dtype=mod.float64)
    tile = _tile(c)
    for s in range(0, n, tile):
        e = min(s + tile, n)
        Dc = pairwise_distances(X[s:e, ...], cand, metric)
        dno = dn_d[s:e, None]
        shared += mod.minimum(Dc - dno, 0.0).sum(axis=0)
        h = mod.where(Dc < dno, 0.0, mod.minimum(Dc, ds_d[s:e, None]) - dno)
        scatter_add(accum, lab_d[s:e], h)
    return to_numpy(shared), to_numpy(accum)


def _preselect(labels, key, k, size):
    """Positions of the ``size`` largest keys of each cluster (ties: first position)."""
    if not labels.shape[0] or not size:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(labels.shape[0]), -key, labels))
    lab = labels[order]
    start = np.searchsorted(lab, np.arange(k))
    rank = np.arange(lab.shape[0]) - start[lab]
    return np.sort(order[rank < size])
