"""Per-chunk kernels of the clustering metrics (:mod:`dclust.metrics`).

Labels may be any integers (negative, non-contiguous): the kernels find the labels a chunk
holds with a sort and return tables keyed by label value, sorted, so that merging two
tables is a sorted union (a monoid whose identity is the empty table). Kernels that need
the global label set (after a first pass) take it as ``label_values`` and map labels to
its positions with a binary search.

Everything accumulates in float64, whatever the data's dtype. The kernels work on NumPy
chunks (a CuPy chunk is copied to the host first).
"""

from __future__ import annotations

import numpy as np

from .._xp import to_numpy
from .datastats import count_nonfinite
from .metrics import pairwise_distances

__all__ = [
    "pair_counts_partial",
    "pair_counts_combine",
    "cluster_stats_partial",
    "cluster_stats_combine",
    "own_center_partial",
    "simplified_silhouette_partial",
    "silhouette_tile_partial",
    "silhouette_rows",
    "moments_combine",
    "scalar_moments_combine",
    "silhouette_moments",
    "block_codes",
]

# Elements of a float64 temporary (rows x features or rows x centres) per tile: 8 MiB.
_TILE_ELEMENTS = 1 << 20
# Rows (and columns) of one distance tile in the silhouette kernel: 8 MiB of float64.
SILHOUETTE_TILE = 1024


def _as_int64(labels):
    return np.ascontiguousarray(to_numpy(labels), dtype=np.int64).reshape(-1)


def _runs(*sorted_keys):
    """First index of each run of equal keys in lexicographically sorted key arrays."""
    n = sorted_keys[0].shape[0]
    new = np.zeros(n, dtype=bool)
    if n:
        new[0] = True
        for k in sorted_keys:
            new[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(new)


def _pair_table(t, p, c):
    if t.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return {"true": empty, "pred": empty.copy(), "count": empty.copy()}
    order = np.lexsort((p, t))
    t, p, c = t[order], p[order], c[order]
    starts = _runs(t, p)
    return {"true": t[starts], "pred": p[starts], "count": np.add.reduceat(c, starts)}


def pair_counts_partial(labels_true, labels_pred):
    """How many rows of a chunk carry each (true label, predicted label) pair.

    Parameters
    ----------
    labels_true, labels_pred : int arrays of shape (n_rows,)

    Returns
    -------
    table : dict
        ``true``, ``pred`` (int64, the distinct pairs sorted by ``true`` then ``pred``)
        and ``count`` (int64): the non-zero cells of the chunk's contingency table.
    """
    t = _as_int64(labels_true)
    p = _as_int64(labels_pred)
    return _pair_table(t, p, np.ones(t.shape[0], dtype=np.int64))


def pair_counts_combine(parts):
    """Merge pair tables: a sorted union of the pairs, their counts added."""
    return _pair_table(
        np.concatenate([q["true"] for q in parts]),
        np.concatenate([q["pred"] for q in parts]),
        np.concatenate([q["count"] for q in parts]),
    )


def cluster_stats_partial(X, labels, sample_weight=None, *, moments=True, row_offset=0):
    """Per-label counts, weights and (optionally) centred moments of one chunk.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    labels : int array of shape (n_rows,)
    sample_weight : array of shape (n_rows,), default=None
    moments : bool, default=True
        Also compute each label's weighted mean and the weighted sum of squared
        distances of its rows to that mean (``m2``, the centred form: no cancellation).
    row_offset : int, default=0
        Global row number of the chunk's first row.

    Returns
    -------
    stats : dict
        ``label`` (sorted distinct labels, int64), ``count`` (rows, int64), ``weight``
        (float64), and with ``moments`` ``mean`` (labels x features) and ``m2``;
        ``n_nonfinite`` and ``first_nonfinite`` (global row, -1 if none).
    """
    X = to_numpy(X)
    lab = _as_int64(labels)
    values, codes = np.unique(lab, return_inverse=True)
    k = values.shape[0]
    counts = np.bincount(codes, minlength=k).astype(np.int64)
    w = None if sample_weight is None else np.asarray(to_numpy(sample_weight), dtype=np.float64)
    weight = counts.astype(np.float64) if w is None else np.bincount(codes, weights=w, minlength=k)
    out = {"label": values, "count": counts, "weight": weight}
    n_bad, first = 0, -1
    if moments:
        d = X.shape[1]
        mean = np.zeros((k, d))
        m2 = np.zeros(k)
        order = np.argsort(codes, kind="stable")
        tile = max(1, _TILE_ELEMENTS // max(d, 1))
        # Sums first (tiles of rows sorted by label), then the centred squares: two sweeps
        # over a chunk already in memory, for a per-label m2 free of cancellation.
        for s in range(0, lab.shape[0], tile):
            rows = order[s : s + tile]
            Xt = X[rows].astype(np.float64)
            if w is not None:
                Xt *= w[rows, None]
            _segment_add(mean, Xt, codes[rows])
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(weight[:, None] > 0, mean / weight[:, None], 0.0)
        for s in range(0, lab.shape[0], tile):
            rows = order[s : s + tile]
            diff = X[rows].astype(np.float64) - mean[codes[rows]]
            sq = np.einsum("ij,ij->i", diff, diff)
            if w is not None:
                sq *= w[rows]
            m2 += np.bincount(codes[rows], weights=sq, minlength=k)
        out["mean"] = mean
        out["m2"] = m2
        if not (np.isfinite(m2).all() and np.isfinite(mean).all()):
            n_bad, first = count_nonfinite(X)
    else:
        n_bad, first = count_nonfinite(X)
    out["n_nonfinite"] = np.int64(n_bad)
    out["first_nonfinite"] = np.int64(first + row_offset if first >= 0 else -1)
    return out


def _segment_add(acc, rows, codes_sorted):
    """``acc[codes] += rows`` for rows sorted by code (one reduceat per run)."""
    if rows.shape[0] == 0:
        return
    starts = _runs(codes_sorted)
    acc[codes_sorted[starts]] += np.add.reduceat(rows, starts, axis=0)


def moments_combine(weights, means, m2s):
    """Merge per-part weighted means and centred sums of squares (Chan et al.).

    Each argument lists the parts' arrays for the same groups (rows); returns the merged
    ``weight``, ``mean`` and ``m2``. The merge goes through the parts' means, so it keeps
    the digits the naive ``sum x^2 - n mean^2`` form loses.
    """
    W = np.sum(weights, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.sum([w[:, None] * m for w, m in zip(weights, means)], axis=0)
        mean = np.where(W[:, None] > 0, mean / W[:, None], 0.0)
    m2 = np.zeros_like(W)
    for w, m, q in zip(weights, means, m2s):
        diff = m - mean
        m2 = m2 + q + w * np.einsum("ij,ij->i", diff, diff)
    return W, mean, m2


def cluster_stats_combine(parts):
    """Merge :func:`cluster_stats_partial` tables: union of labels, Chan-merged moments."""
    values = np.unique(np.concatenate([q["label"] for q in parts]))
    k = values.shape[0]
    out = {"label": values}
    pos = [np.searchsorted(values, q["label"]) for q in parts]
    count = np.zeros(k, dtype=np.int64)
    weight = np.zeros(k)
    for q, p in zip(parts, pos):
        count[p] += q["count"]
        weight[p] += q["weight"]
    out["count"] = count
    out["weight"] = weight
    if "mean" in parts[0]:
        d = parts[0]["mean"].shape[1]
        ws, ms, qs = [], [], []
        for q, p in zip(parts, pos):
            w = np.zeros(k)
            m = np.zeros((k, d))
            m2 = np.zeros(k)
            w[p], m[p], m2[p] = q["weight"], q["mean"], q["m2"]
            ws.append(w), ms.append(m), qs.append(m2)
        _, out["mean"], out["m2"] = moments_combine(ws, ms, qs)
    out["n_nonfinite"] = np.int64(sum(int(q["n_nonfinite"]) for q in parts))
    firsts = [int(q["first_nonfinite"]) for q in parts if int(q["first_nonfinite"]) >= 0]
    out["first_nonfinite"] = np.int64(min(firsts) if firsts else -1)
    return out


def _codes(labels, label_values):
    """Positions of ``labels`` in the sorted ``label_values``; -1 where absent."""
    lab = _as_int64(labels)
    values = np.asarray(label_values, dtype=np.int64)
    pos = np.searchsorted(values, lab)
    pos_c = np.minimum(pos, max(values.shape[0] - 1, 0))
    ok = (pos < values.shape[0]) & (values[pos_c] == lab) if values.shape[0] else np.zeros(
        lab.shape[0], dtype=bool)
    return np.where(ok, pos_c, -1).astype(np.intp), lab


def _bad_labels(codes, lab, row_offset):
    bad = np.flatnonzero(codes < 0)
    if bad.size == 0:
        return np.int64(0), np.int64(-1), np.int64(0)
    return np.int64(bad.size), np.int64(bad[0] + row_offset), np.int64(lab[bad[0]])


def own_center_partial(X, labels, label_values, centers, sample_weight=None, *, squared=False,
                       row_offset=0):
    """Per-label sums of (squared) euclidean distances of rows to their label's centre.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    labels : int array of shape (n_rows,)
    label_values : int array of shape (n_labels,)
        Sorted label values; row ``j`` of ``centers`` is the centre of ``label_values[j]``.
    centers : float64 array of shape (n_labels, n_features)
    sample_weight : array of shape (n_rows,), default=None
    squared : bool, default=False
    row_offset : int, default=0

    Returns
    -------
    stats : dict
        ``sums`` (float64, per label), and for labels not in ``label_values``:
        ``n_bad``, ``first_bad`` (global row, -1 if none) and ``bad_value``.
    """
    X = to_numpy(X)
    codes, lab = _codes(labels, label_values)
    C = np.asarray(centers, dtype=np.float64)
    k = C.shape[0]
    w = None if sample_weight is None else np.asarray(to_numpy(sample_weight), dtype=np.float64)
    sums = np.zeros(k)
    n_bad, first_bad, bad_value = _bad_labels(codes, lab, row_offset)
    tile = max(1, _TILE_ELEMENTS // max(X.shape[1], 1))
    for s in range(0, X.shape[0], tile):
        c = codes[s : s + tile]
        ok = c >= 0
        # The difference is formed exactly in float64 (no expanded form): inertia and the
        # Davies-Bouldin spreads are sums of small distances that cancellation would spoil.
        diff = X[s : s + tile][ok].astype(np.float64) - C[c[ok]]
        dist = np.einsum("ij,ij->i", diff, diff)
        if not squared:
            dist = np.sqrt(dist)
        if w is not None:
            dist *= w[s : s + tile][ok]
        sums += np.bincount(c[ok], weights=dist, minlength=k)
    return {"sums": sums, "n_bad": n_bad, "first_bad": first_bad, "bad_value": bad_value}


def simplified_silhouette_partial(X, labels, label_values, centers, *, metric="euclidean",
                                  row_offset=0):
    """Sum over a chunk's rows of the simplified silhouette ``(b - a) / max(a, b)``.

    ``a`` is a row's distance to its own centre, ``b`` its distance to the nearest other
    centre (a row at distance 0 from both counts 0). With ``labels=None`` a row's own
    centre is its nearest one.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    labels : int array of shape (n_rows,) or None
    label_values : int array of shape (n_centers,)
        Sorted label values; row ``j`` of ``centers`` is the centre of ``label_values[j]``.
    centers : float64 array of shape (n_centers, n_features), n_centers >= 2
    metric : {"euclidean", "sqeuclidean", "manhattan", "cosine"}, default="euclidean"
    row_offset : int, default=0

    Returns
    -------
    stats : dict
        ``count``, ``mean`` and ``m2`` of the rows' values (``m2`` centred),
        ``n_bad``, ``first_bad``, ``bad_value`` for labels not in ``label_values``, and
        ``n_nonfinite``, ``first_nonfinite`` (global row, -1 if none) for ``X``.
    """
    X = to_numpy(X)
    C = np.asarray(centers, dtype=np.float64)
    n, k = X.shape[0], C.shape[0]
    if labels is None:
        codes = None
        n_bad, first_bad, bad_value = np.int64(0), np.int64(-1), np.int64(0)
    else:
        codes, lab = _codes(labels, label_values)
        n_bad, first_bad, bad_value = _bad_labels(codes, lab, row_offset)
    tile = max(1, _TILE_ELEMENTS // max(k, X.shape[1], 1))
    s_all = []
    for s in range(0, n, tile):
        D = pairwise_distances(X[s : s + tile], C, metric)
        r = np.arange(D.shape[0])
        if codes is None:
            own = np.argmin(D, axis=1)
        else:
            own = codes[s : s + tile]
            keep = own >= 0
            D, r, own = D[keep], np.arange(int(keep.sum())), own[keep]
        a = D[r, own]
        D[r, own] = np.inf
        b = D.min(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            sil = np.nan_to_num((b - a) / np.maximum(a, b))
        s_all.append(sil)
    sil = np.concatenate(s_all) if s_all else np.zeros(0)
    n_nonfinite, first = count_nonfinite(X) if n else (0, -1)
    return {**_moments(sil), "n_bad": n_bad, "first_bad": first_bad, "bad_value": bad_value,
            "n_nonfinite": np.int64(n_nonfinite),
            "first_nonfinite": np.int64(first + row_offset if first >= 0 else -1)}


def _moments(v):
    m = v.shape[0]
    mean = float(v.mean()) if m else 0.0
    return {"count": np.int64(m), "mean": np.float64(mean),
            "m2": np.float64(np.sum((v - mean) ** 2)) if m else np.float64(0.0)}


def scalar_moments_combine(parts):
    """Merge ``count``/``mean``/``m2`` of scalar values (Chan et al.)."""
    counts = np.array([int(q["count"]) for q in parts], dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return {"count": np.int64(0), "mean": np.float64(0.0), "m2": np.float64(0.0)}
    means = np.array([float(q["mean"]) for q in parts])
    m2s = np.array([float(q["m2"]) for q in parts])
    mean = float(np.dot(counts, means) / n)
    m2 = float(np.sum(m2s) + np.dot(counts, (means - mean) ** 2))
    return {"count": np.int64(n), "mean": np.float64(mean), "m2": np.float64(m2)}


def _sorted_block(X, codes):
    order = np.argsort(codes, kind="stable")
    return order, np.ascontiguousarray(to_numpy(X)[order], dtype=np.float64), codes[order]


def silhouette_tile_partial(Xi, codes_i, Xj, codes_j, n_labels, *, same, metric="euclidean",
                            tile=SILHOUETTE_TILE):
    """Per-row sums of distances to each cluster, between two row blocks.

    The distance matrix of the two blocks is formed one ``tile`` x ``tile`` piece at a
    time and summed per cluster along both axes (the metric is symmetric, so one tile
    serves the rows of both blocks), so memory stays at one piece plus the sums.

    Parameters
    ----------
    Xi, Xj : arrays of shape (n_i, n_features), (n_j, n_features)
    codes_i, codes_j : int arrays of shape (n_i,), (n_j,)
        Cluster index (0 .. n_labels - 1) of each row.
    n_labels : int
    same : bool
        ``Xj`` is ``Xi`` (a diagonal tile): only the first result is computed.
    metric : {"euclidean", "sqeuclidean", "manhattan", "cosine"}, default="euclidean"
    tile : int, default=1024

    Returns
    -------
    sums_i : float64 array of shape (n_i, n_labels)
        ``sums_i[r, c]`` is the sum of distances from row ``r`` of ``Xi`` to the rows of
        ``Xj`` in cluster ``c``.
    sums_j : float64 array of shape (n_j, n_labels), or None when ``same``
        The same from the rows of ``Xj`` to those of ``Xi``.
    """
    ci = np.asarray(codes_i, dtype=np.intp)
    cj = np.asarray(codes_j, dtype=np.intp)
    # Rows sorted by cluster make each cluster a contiguous run of columns (and rows),
    # so a per-cluster sum is one reduceat over the tile, whatever the number of clusters.
    oi, Xi_s, ci_s = _sorted_block(Xi, ci)
    if same:
        oj, Xj_s, cj_s = oi, Xi_s, ci_s
    else:
        oj, Xj_s, cj_s = _sorted_block(Xj, cj)
    Si = np.zeros((Xi_s.shape[0], n_labels))
    Sj = None if same else np.zeros((Xj_s.shape[0], n_labels))
    for r0 in range(0, Xi_s.shape[0], tile):
        r1 = min(r0 + tile, Xi_s.shape[0])
        rstarts = _runs(ci_s[r0:r1])
        rlab = ci_s[r0:r1][rstarts]
        for c0 in range(0, Xj_s.shape[0], tile):
            c1 = min(c0 + tile, Xj_s.shape[0])
            D = pairwise_distances(Xi_s[r0:r1], Xj_s[c0:c1], metric)
            cstarts = _runs(cj_s[c0:c1])
            Si[r0:r1, cj_s[c0:c1][cstarts]] += np.add.reduceat(D, cstarts, axis=1)
            if Sj is not None:
                Sj[c0:c1, rlab] += np.add.reduceat(D, rstarts, axis=0).T
    out_i = np.empty_like(Si)
    out_i[oi] = Si
    if Sj is None:
        return out_i, None
    out_j = np.empty_like(Sj)
    out_j[oj] = Sj
    return out_i, out_j


def silhouette_rows(sums, codes, label_freqs):
    """Silhouette of each row from its per-cluster distance sums (scikit-learn's rules).

    ``a`` is the mean distance to the other rows of the row's cluster, ``b`` the
    smallest mean distance to the rows of another cluster, ``s = (b - a) / max(a, b)``,
    and ``s = 0`` for a row alone in its cluster (and where ``a = b = 0``).

    Parameters
    ----------
    sums : float64 array of shape (n_rows, n_labels)
    codes : int array of shape (n_rows,)
    label_freqs : int array of shape (n_labels,)
        Rows per cluster over the whole data.

    Returns
    -------
    s : float64 array of shape (n_rows,)
    """
    freqs = np.asarray(label_freqs)
    codes = np.asarray(codes, dtype=np.intp)
    r = np.arange(sums.shape[0])
    S = np.array(sums, dtype=np.float64)
    intra = S[r, codes]
    S[r, codes] = np.inf
    S /= freqs
    inter = S.min(axis=1)
    denom = (freqs - 1).take(codes, mode="clip")
    with np.errstate(divide="ignore", invalid="ignore"):
        intra = intra / denom
        s = (inter - intra) / np.maximum(intra, inter)
    return np.nan_to_num(s)


def silhouette_moments(sums, codes, label_freqs):
    """``count``, ``mean`` and centred ``m2`` of the silhouettes of a block's rows."""
    return _moments(silhouette_rows(sums, codes, label_freqs))


def block_codes(labels, label_values):
    """Cluster index of each label in the sorted ``label_values`` (all must be present)."""
    codes, _ = _codes(labels, label_values)
    return codes
