"""Per-chunk kernels of bisecting k-means: descending a tree of centres, and the statistics
of every 2-means split of one level in one sweep of a chunk.

A bisecting tree is small state: for every node its two children (``-1`` at a leaf) and
its centre. A row goes down the tree by choosing, at each internal node, the nearer of
its two children's centres. The choice is made with one dot product per level,

    go right  <=>  x . (c_right - c_left) > (||c_right||^2 - ||c_left||^2) / 2,

which is ``||x - c_right||^2 < ||x - c_left||^2`` rearranged (a tie goes left, as
``argmin`` picks the first centre). The fit, ``predict`` and the statistics all use this
one rule, so the labels of the training rows are the fit's last assignment.

No per-row state is kept between passes (the data may be larger than memory): every pass
recomputes each row's leaf from the tree so far, ``depth`` dot products per row.

The kernels run on NumPy arrays (rows of other namespaces are copied to the host first)
and accumulate in float64 whatever the data's dtype. They import no dask.
"""

from __future__ import annotations

import numpy as np

from .._xp import to_numpy
from .sampling import chunk_rng

__all__ = ["tree_directions", "descend", "descend_path", "node_stats_partial",
           "split_lloyd_partial", "far_combine", "leaf_sample_partial", "slot_top_combine"]

# Rows handled at once: the gathered centres of a tile are TILE x d float64.
TILE = 2048


def tree_directions(children, centers):
    """The split rule of every internal node: ``(direction, threshold)``.

    Parameters
    ----------
    children : int array of shape (n_nodes, 2)
        Left and right child of each node, ``-1`` for a leaf.
    centers : float array of shape (n_nodes, n_features)

    Returns
    -------
    direction : float64 array of shape (n_nodes, n_features)
        ``c_right - c_left`` (zero at leaves).
    threshold : float64 array of shape (n_nodes,)
        ``(||c_right||^2 - ||c_left||^2) / 2`` (zero at leaves).
    """
    children = np.asarray(children, dtype=np.int64).reshape(-1, 2)
    C = np.asarray(centers, dtype=np.float64)
    direction = np.zeros_like(C)
    threshold = np.zeros(C.shape[0])
    inner = np.flatnonzero(children[:, 0] >= 0)
    if inner.size:
        cl, cr = C[children[inner, 0]], C[children[inner, 1]]
        direction[inner] = cr - cl
        threshold[inner] = 0.5 * (np.einsum("ij,ij->i", cr, cr) - np.einsum("ij,ij->i", cl, cl))
    return direction, threshold


def _host64(X):
    return np.asarray(to_numpy(X), dtype=np.float64)


def _tiles(n):
    return ((s, min(s + TILE, n)) for s in range(0, n, TILE))


def descend_path(X, children, direction, threshold, max_depth=None):
    """Every node on each row's path from the root.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    children : int array of shape (n_nodes, 2)
    direction, threshold : arrays from :func:`tree_directions`
    max_depth : int, optional
        Stop at this depth (the root is at depth 0); default: go down to the leaves.

    Returns
    -------
    path : int64 array of shape (n_rows, depth + 1)
        ``path[i, j]`` is the node at depth ``j`` on row ``i``'s path, ``-1`` below the
        leaf it ends at.
    """
    X = np.asarray(to_numpy(X))
    children = np.asarray(children, dtype=np.int64).reshape(-1, 2)
    n = X.shape[0]
    cols = [np.zeros(n, dtype=np.int64)]
    node = cols[0].copy()
    depth = 0
    while max_depth is None or depth < max_depth:
        inner = np.flatnonzero((node >= 0) & (children[np.maximum(node, 0), 0] >= 0))
        if inner.size == 0:
            break
        nxt = np.full(n, -1, dtype=np.int64)
        for s, e in _tiles(inner.size):
            rows = inner[s:e]
            at = node[rows]
            proj = np.einsum("ij,ij->i", np.asarray(X[rows], dtype=np.float64), direction[at])
            nxt[rows] = children[at, (proj > threshold[at]).astype(np.int64)]
        node = nxt
        cols.append(node)
        depth += 1
    return np.stack(cols, axis=1)


def descend(X, children, direction, threshold, max_depth=None):
    """The node each row ends at (a leaf, or its ancestor at ``max_depth``)."""
    path = descend_path(X, children, direction, threshold, max_depth)
    depth = (path >= 0).sum(axis=1) - 1
    return path[np.arange(path.shape[0]), depth]


def node_stats_partial(X, w, children, centers, direction, threshold):
    """Size, weight and inertia of every node of the tree over one chunk.

    A row counts in every node on its path; a node's inertia is the weighted sum of
    squared distances of its rows to its own centre.

    Returns
    -------
    stats : dict
        ``count``, ``weight``, ``inertia``: float64 arrays of shape (n_nodes,).
    """
    C = np.asarray(centers, dtype=np.float64)
    m = C.shape[0]
    out = {"count": np.zeros(m), "weight": np.zeros(m), "inertia": np.zeros(m)}
    if X.shape[0] == 0:
        return out
    path = descend_path(X, children, direction, threshold)
    w64 = None if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    for j in range(path.shape[1]):
        rows = np.flatnonzero(path[:, j] >= 0)
        nodes = path[rows, j]
        dist = np.empty(rows.size)
        for s, e in _tiles(rows.size):
            diff = _host64(X[rows[s:e]]) - C[nodes[s:e]]
            dist[s:e] = np.einsum("ij,ij->i", diff, diff)
        wr = np.ones(rows.size) if w64 is None else w64[rows]
        out["count"] += np.bincount(nodes, minlength=m)
        out["weight"] += np.bincount(nodes, weights=wr, minlength=m)
        out["inertia"] += np.bincount(nodes, weights=wr * dist, minlength=m)
    return out


def split_lloyd_partial(X, w, children, direction, threshold, leaf_slot, pair_centers, active,
                        row_offset=0):
    """One Lloyd iteration of every 2-means split of a level, over one chunk.

    Each row goes down the tree to its leaf; if that leaf is being split (``leaf_slot``
    gives its split's index), the row is assigned, for each run of that split, to the
    nearer of the run's two centres, and counted in that child's sums.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    w : array of shape (n_rows,) or None
    children, direction, threshold : the tree so far (:func:`tree_directions`)
    leaf_slot : int array of shape (n_nodes,)
        The split a leaf belongs to, ``-1`` for nodes not being split.
    pair_centers : float64 array of shape (n_splits, n_runs, 2, n_features)
        The two centres of every run of every split.
    active : bool array of shape (n_splits, n_runs)
        Runs still iterating; the others are skipped.
    row_offset : int
        Global index of the chunk's first row (the far rows' tie-break).

    Returns
    -------
    stats : dict
        Per run and child, shape (n_splits, n_runs, 2[, n_features]): ``sums``,
        ``weights``, ``counts``, ``inertia``; and the row farthest from its centre in
        each child (to relocate an empty sibling): ``far_dist`` (``-inf`` if none),
        ``far_row``, ``far_x``, ``far_weight``.
    """
    P = np.asarray(pair_centers, dtype=np.float64)
    S, R, _, d = P.shape
    active = np.asarray(active, dtype=bool).reshape(S, R)
    cells = S * R * 2
    sums = np.zeros((cells, d))
    weights, counts, inertia = np.zeros(cells), np.zeros(cells), np.zeros(cells)
    fars = [_far_of(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64),
                    np.zeros((0, d)), np.zeros(0), cells, d)]
    n = X.shape[0]
    if n and active.any():
        leaf = descend(X, children, direction, threshold)
        slot = np.asarray(leaf_slot, dtype=np.int64)[leaf]
        w64 = None if w is None else np.asarray(to_numpy(w), dtype=np.float64)
        # Run r's rule for every split: right iff x . (b - a) > (|b|^2 - |a|^2) / 2.
        pdir = P[:, :, 1] - P[:, :, 0]
        pthr = 0.5 * (np.einsum("srd,srd->sr", P[:, :, 1], P[:, :, 1])
                      - np.einsum("srd,srd->sr", P[:, :, 0], P[:, :, 0]))
        for r in range(R):
            rows = np.flatnonzero(slot >= 0)
            rows = rows[active[slot[rows], r]]
            for s, e in _tiles(rows.size):
                tr = rows[s:e]
                sl = slot[tr]
                xt = _host64(X[tr])
                side = (np.einsum("ij,ij->i", xt, pdir[sl, r]) > pthr[sl, r]).astype(np.int64)
                diff = xt - P[sl, r, side]
                dist = np.einsum("ij,ij->i", diff, diff)
                cell = (sl * R + r) * 2 + side
                wt = np.ones(tr.size) if w64 is None else w64[tr]
                np.add.at(sums, cell, xt * wt[:, None])
                weights += np.bincount(cell, weights=wt, minlength=cells)
                counts += np.bincount(cell, minlength=cells)
                inertia += np.bincount(cell, weights=wt * dist, minlength=cells)
                # The farthest row of each cell (ties: the lowest row), among rows that
                # weigh something: a weightless row cannot seed a cluster.
                ok = wt > 0
                fars.append(_far_of(cell[ok], dist[ok], tr[ok] + row_offset, xt[ok], wt[ok],
                                    cells, d))
    far = far_combine(fars)
    far_dist, far_row, far_x, far_w = (far["far_dist"], far["far_row"], far["far_x"],
                                       far["far_weight"])
    shape = (S, R, 2)
    return {"sums": sums.reshape(shape + (d,)), "weights": weights.reshape(shape),
            "counts": counts.reshape(shape), "inertia": inertia.reshape(shape),
            "far_dist": far_dist.reshape(shape), "far_row": far_row.reshape(shape),
            "far_x": far_x.reshape(shape + (d,)), "far_weight": far_w.reshape(shape)}


def _far_of(cell, dist, row, x, w, cells, d):
    """The farthest row of each of ``cells`` cells (ties: the lowest row)."""
    out = {"far_dist": np.full(cells, -np.inf), "far_row": np.full(cells, -1, dtype=np.int64),
           "far_x": np.zeros((cells, d)), "far_weight": np.zeros(cells)}
    if cell.size:
        order = np.lexsort((row, -dist, cell))
        first = order[np.unique(cell[order], return_index=True)[1]]
        c = cell[first]
        out["far_dist"][c], out["far_row"][c] = dist[first], row[first]
        out["far_x"][c], out["far_weight"][c] = x[first], w[first]
    return out


def far_combine(parts):
    """Merge far rows (arrays of any common leading shape): per cell the largest
    distance, ties to the lowest row; associative and independent of the parts' order."""
    bd = np.array(parts[0]["far_dist"], dtype=np.float64, copy=True)
    br = np.array(parts[0]["far_row"], dtype=np.int64, copy=True)
    bx = np.array(parts[0]["far_x"], dtype=np.float64, copy=True)
    bw = np.array(parts[0]["far_weight"], dtype=np.float64, copy=True)
    for p in parts[1:]:
        dist, row = p["far_dist"], p["far_row"]
        better = (dist > bd) | ((dist == bd) & (row >= 0) & ((br < 0) | (row < br)))
        bd[better], br[better] = dist[better], row[better]
        bx[better], bw[better] = p["far_x"][better], p["far_weight"][better]
    return {"far_dist": bd, "far_row": br, "far_x": bx, "far_weight": bw}


def leaf_sample_partial(X, w, children, direction, threshold, leaf_slot, size, seed, *,
                        block_id, row_offset, stream=0):
    """Up to ``size`` rows of each leaf being split, a weighted sample without replacement.

    Rows get the keys of :func:`dclust.kernels.sampling.reservoir_partial` (``log(u)/w``,
    ``u`` from ``(seed, stream, block_id)``); each split keeps its ``size`` largest.

    Returns
    -------
    stats : dict
        ``slot``, ``key``, ``row`` (global), ``x`` (float64) and ``weight`` of the rows
        kept, sorted by slot, then decreasing key.
    """
    n = X.shape[0]
    rng = chunk_rng(seed, block_id, stream=stream)
    u = rng.random(n)
    logu = np.log(np.maximum(u, np.finfo(float).tiny))
    wt = np.ones(n) if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        key = np.where(wt > 0, logu / np.where(wt > 0, wt, 1.0), -np.inf)
    slot = np.full(n, -1, dtype=np.int64)
    if n:
        leaf = descend(X, children, direction, threshold)
        slot = np.asarray(leaf_slot, dtype=np.int64)[leaf]
    keep = np.flatnonzero((slot >= 0) & (wt > 0))
    part = {"slot": slot[keep], "key": key[keep], "row": keep.astype(np.int64) + row_offset,
            "weight": wt[keep]}
    sel = _slot_top(part, size)
    rows = part["row"][sel] - row_offset
    out = {k: v[sel] for k, v in part.items()}
    out["x"] = _host64(X[rows]) if rows.size else np.zeros((0, X.shape[1]))
    return out


def _slot_top(part, size):
    """Indices of the ``size`` largest keys of each slot, ordered by slot then key."""
    order = np.lexsort((part["row"], -part["key"], part["slot"]))
    s = part["slot"][order]
    if s.size == 0:
        return order
    start = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]
    rank = np.arange(s.size) - np.repeat(start, np.diff(np.r_[start, s.size]))
    return order[rank < size]


def slot_top_combine(parts, size):
    """Merge :func:`leaf_sample_partial` results: each slot's ``size`` largest keys."""
    cat = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in
           ("slot", "key", "row", "weight", "x")}
    sel = _slot_top(cat, size)
    return {k: v[sel] for k, v in cat.items()}
