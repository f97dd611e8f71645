"""Probe-limited nearest centre for two-level (coarse, fine) k-means.

The ``k`` fine centres are grouped by coarse cell: cell ``c`` owns the contiguous
centres ``fine[cells[c]:cells[c+1]]``. A row is compared with the coarse centres, then
only with the fine centres of its ``n_probe`` nearest coarse cells, so an assignment
costs ``kc + n_probe * k / kc`` distances instead of ``k`` (about ``k / n_probe``
fewer at ``kc = sqrt(k)``), and no tile is ever ``rows x k``: the coarse tile is
``rows x kc`` and each cell's search runs the register-blocked kernel of
:mod:`.lloyd` over that cell's rows and centres only.

Rows are grouped by probed cell within a chunk (one stable sort), each cell's rows are
searched against its centres, and a row keeps the smallest exact float64 distance over
its probes (ties: the lowest centre index, as ``numpy.argmin``). The statistics are then
folded by the same compiled loop as exact Lloyd's, so the result has the keys and
meaning of :func:`dclust.kernels.lloyd.lloyd_partial`.

Non-NumPy chunks (CuPy) are brought to the host: the per-cell loop is a CPU algorithm
(many small searches); a device version would batch the cells.
"""

from __future__ import annotations

import numba
import numpy as np

from .._xp import array_namespace, is_numpy_namespace, to_numpy
from . import _numba
from .lloyd import lloyd_stats, nearest_center

__all__ = ["coarse_probes", "probe_nearest", "probe_lloyd_partial"]

# Rows per tile of the coarse search: the rows x kc distance tile stays under this.
_COARSE_TILE_BYTES = 16 * 2**20


def _as_host_float(X):
    if not is_numpy_namespace(array_namespace(X)):
        X = to_numpy(X)
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    return np.ascontiguousarray(X)


@numba.njit(nogil=True, cache=True)
def _smallest(G, out):
    """Columns of the ``p = out.shape[1]`` smallest values of each row of ``G``.

    A sorted insertion into ``p`` slots: one comparison per value for almost every
    value once the slots are filled (argpartition costs several times more at p << kc).
    Ties keep the lower column.
    """
    t, kc = G.shape
    p = out.shape[1]
    val = np.empty(p, dtype=G.dtype)
    for i in range(t):
        m = 0
        for j in range(kc):
            g = G[i, j]
            if m < p:
                q = m
                m += 1
            elif g < val[p - 1]:
                q = p - 1
            else:
                continue
            while q > 0 and val[q - 1] > g:
                val[q] = val[q - 1]
                out[i, q] = out[i, q - 1]
                q -= 1
            val[q] = g
            out[i, q] = j


@numba.njit(nogil=True, cache=True)
def _rows_by_cell(probes, kc):
    """Rows grouped by probed cell (a counting sort; rows ascending within a cell):
    ``rows[bounds[c]:bounds[c + 1]]`` are the rows that probe cell ``c``."""
    n, p = probes.shape
    bounds = np.zeros(kc + 1, dtype=np.int64)
    for i in range(n):
        for j in range(p):
            bounds[probes[i, j] + 1] += 1
    for c in range(kc):
        bounds[c + 1] += bounds[c]
    fill = bounds[:-1].copy()
    rows = np.empty(n * p, dtype=np.int64)
    for i in range(n):
        for j in range(p):
            c = probes[i, j]
            rows[fill[c]] = i
            fill[c] += 1
    return rows, bounds


def coarse_probes(X, coarse, n_probe):
    """The ``n_probe`` nearest coarse centres of each row (unordered), shape (n, p).

    ``p = min(n_probe, kc)``; ranking uses ``||c||^2 - 2 x.c`` in the rows' precision,
    over tiles of at most :data:`_COARSE_TILE_BYTES`.
    """
    X = _as_host_float(X)
    C = np.asarray(coarse, dtype=np.float64)
    kc = C.shape[0]
    n = X.shape[0]
    p = int(min(max(int(n_probe), 1), kc))
    if p == kc:
        return np.tile(np.arange(kc, dtype=np.int64), (n, 1))
    if p == 1:
        return nearest_center(X, C)[0][:, None]
    Ct = np.ascontiguousarray((-2.0 * C).T.astype(X.dtype))
    cnorm = np.einsum("ij,ij->i", C, C).astype(X.dtype)
    out = np.empty((n, p), dtype=np.int64)
    tile = max(1, _COARSE_TILE_BYTES // (kc * X.itemsize))
    for s in range(0, n, tile):
        G = X[s : s + tile] @ Ct
        G += cnorm
        _smallest(G, out[s : s + tile])
    return out


def probe_nearest(X, coarse, fine, cells, n_probe):
    """Nearest fine centre among the probed cells, and its exact squared distance.

    Parameters
    ----------
    X : array of shape (n, d)
    coarse : array of shape (kc, d)
    fine : array of shape (k, d)
        Fine centres, grouped by cell.
    cells : int array of shape (kc + 1,)
        ``fine[cells[c]:cells[c + 1]]`` are cell ``c``'s centres.
    n_probe : int
        Coarse cells searched per row (``>= kc``: every cell, the exact nearest).

    Returns
    -------
    labels : int64 array of shape (n,)
    sqdist : float64 array of shape (n,)
    """
    X = _as_host_float(X)
    fine = np.ascontiguousarray(fine, dtype=np.float64)
    cells = np.asarray(cells, dtype=np.int64)
    n = X.shape[0]
    best = np.full(n, np.inf)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels, best
    if n_probe >= cells.shape[0] - 1:
        # Every cell probed: the exact search, without an n x kc probe table.
        return nearest_center(X, fine)
    probes = coarse_probes(X, coarse, n_probe)
    rows_sorted, bounds = _rows_by_cell(probes, cells.shape[0] - 1)
    for c in np.flatnonzero(np.diff(bounds)):
        lo, hi = int(cells[c]), int(cells[c + 1])
        if hi <= lo:
            continue
        rows = rows_sorted[bounds[c] : bounds[c + 1]]
        lab, dist = nearest_center(X[rows], fine[lo:hi])
        # Cells come in increasing order and so do their centres: a strict '<' keeps
        # the lowest index on ties.
        better = dist < best[rows]
        r = rows[better]
        best[r] = dist[better]
        labels[r] = lab[better] + lo
    missing = np.flatnonzero(labels < 0)
    if missing.size:
        # Rows whose probed cells hold no centre (cells of zero-weight rows only):
        # search every centre for them.
        lab, dist = nearest_center(X[missing], fine)
        labels[missing] = lab
        best[missing] = dist
    return labels, best


def probe_lloyd_partial(X, coarse, fine, cells, n_probe, sample_weight=None, *, n_far=0,
                        row_offset=0):
    """Lloyd statistics of one row-chunk with probe-limited assignment.

    Same parameters as :func:`probe_nearest`, plus those of
    :func:`dclust.kernels.lloyd.lloyd_partial`, whose keys the result has.
    """
    X = _as_host_float(X)
    fine = np.ascontiguousarray(fine, dtype=np.float64)
    n, d = X.shape
    k = fine.shape[0]
    labels, _ = probe_nearest(X, coarse, fine, cells, n_probe)
    sums = np.zeros((k, d))
    wsum = np.zeros(k)
    far_d = np.full(n_far, -np.inf)
    far_i = np.full(n_far, -1, dtype=np.int64)
    far_l = np.full(n_far, -1, dtype=np.int64)
    w64 = np.empty(0) if sample_weight is None else np.ascontiguousarray(
        to_numpy(sample_weight), dtype=np.float64)
    inertia = _numba.accumulate(X, labels, fine, w64, sums, wsum, np.empty(0), far_d, far_i,
                                far_l, 0) if n else 0.0
    return lloyd_stats(X, None if sample_weight is None else w64, sums, wsum, inertia, far_d,
                       far_i, far_l, row_offset)
