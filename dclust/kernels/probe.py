"""Probe-limited nearest centre for two-level (coarse, fine) k-means.

The ``k`` fine centres are grouped by coarse cell: cell ``c`` owns the contiguous
centres ``fine[cells[c]:cells[c+1]]``. A row is compared with the coarse centres, then
only with the fine centres of its ``n_probe`` nearest coarse cells, so an assignment
costs ``kc + n_probe * k / kc`` distances instead of ``k`` (about ``k / n_probe``
fewer at ``kc = sqrt(k)``), and no tile is ever ``rows x k``: the coarse tile is
``rows x kc`` and each cell's search runs the register-blocked kernel of
:mod:`._irassign` over that cell's rows and centres only.

Rows are grouped by probed cell within a chunk (a counting sort), and one compiled loop
gathers each cell's rows and searches them against its centres; a row keeps the
smallest kernel value ``||c||^2 - 2 x.c`` over its probes, in the rows' precision as
exact Lloyd's kernel does (ties: the lowest centre index, as ``numpy.argmin``), and its
exact float64 distance is computed once, for the chosen centre. The statistics are then
folded by the same compiled loop as exact Lloyd's, so the result has the keys and
meaning of :func:`dclust.kernels.lloyd.lloyd_partial`. Where the IR kernel is switched
off (``DCLUST_IR_ASSIGN=0``) each cell is searched by :func:`.lloyd.nearest_center`.

Non-NumPy chunks (CuPy) are brought to the host: the per-cell loop is a CPU algorithm
(many small searches); a device version would batch the cells.
"""

from __future__ import annotations

import numba
import numpy as np

from .._xp import array_namespace, is_numpy_namespace, to_numpy
from . import _irassign, _numba
from ._numba import ir_assign_rows
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


@numba.njit(nogil=True, cache=True, fastmath={"nnan", "ninf"})
def _smallest(G, cnorm, out):
    """Columns of the ``p = out.shape[1]`` smallest values of each row of ``G + cnorm``
    (finite), ordered by value; ties keep the lower column.

    A sorted insertion over all ``kc`` values mispredicts a branch at each of its
    ``~p ln(kc / p)`` insertions. Instead: the largest of the minima of ``p`` column
    groups bounds the ``p``-th smallest value from above, so the values at or below it
    (``>= p`` of them, about ``2p`` in practice) hold the answer; they are collected
    without a branch and only they are insertion-sorted.
    """
    t, kc = G.shape
    p = out.shape[1]
    width = -(-kc // p)
    # Fewer than p non-empty groups (kc < p * width - width): no bound, take every value.
    bounded = -(-kc // width) >= p
    val = np.empty(p, dtype=G.dtype)
    cand = np.empty(kc, dtype=np.int64)
    row = np.empty(kc, dtype=G.dtype)
    for i in range(t):
        for j in range(kc):
            row[j] = G[i, j] + cnorm[j]
        bound = -np.inf
        for q in range(p):
            lo = q * width
            hi = min(kc, lo + width)
            m = np.inf
            for j in range(lo, hi):
                m = min(m, row[j])
            if hi > lo:
                bound = max(bound, m)
        if not bounded:
            bound = np.inf
        n_cand = 0
        for j in range(kc):
            cand[n_cand] = j
            n_cand += row[j] <= bound
        m = 0
        for c in range(n_cand):
            j = cand[c]
            g = row[j]
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


def _cell_layout(fine, cells, dtype):
    """Every cell's centres in the IR kernel's block layout (:mod:`._irassign`), one
    kernel for all cells: ``(kernel, CT, cn, block offsets of the cells)``, or ``None``
    where the kernel does not apply (the caller then searches cell by cell).

    The kernel's block holds about the mean cell's centres; a larger cell takes several
    blocks, and each cell's last block is padded with ``+inf`` norms (never chosen).
    """
    sizes = np.diff(cells)
    d = fine.shape[1]
    live = sizes[sizes > 0]
    if live.size == 0:
        return None
    kern = _irassign.try_kernel_address(dtype, int(round(live.mean())), d)
    if kern is None:
        return None
    per_block = kern[3]
    nblk = -(-sizes // per_block)
    offs = np.concatenate([[0], np.cumsum(nblk)]).astype(np.int64)
    CT = _irassign.aligned_empty((int(offs[-1]), d, per_block), dtype)
    CT[...] = 0
    cn = _irassign.aligned_empty(int(offs[-1]) * per_block, dtype)
    cn[...] = np.inf
    F = np.ascontiguousarray(fine, dtype=np.float64)
    Cm = (-2.0 * F).astype(dtype)
    norms = np.einsum("ij,ij->i", F, F).astype(dtype)
    for c in np.flatnonzero(sizes):
        lo, hi = int(cells[c]), int(cells[c + 1])
        ct, cnc = _irassign.centre_layout(Cm[lo:hi], norms[lo:hi], per_block)
        CT[offs[c] : offs[c + 1]] = ct
        cn[offs[c] * per_block : offs[c + 1] * per_block] = cnc
    return kern, CT, cn, offs


@numba.njit(nogil=True, cache=True)
def _search_cells(X, rows_sorted, bounds, cells, offs, CT, cn, ir_block, ir_rows, ir_single,
                  per_block, group, labels, best):
    """Each cell's probing rows (gathered into one buffer) against its centres by the IR
    kernel; every row keeps its smallest kernel value over its cells (cells in
    increasing order and a strict '<': the lowest centre index on ties)."""
    n, d = X.shape
    kc = bounds.shape[0] - 1
    most = 0
    for c in range(kc):
        most = max(most, bounds[c + 1] - bounds[c])
    buf = np.empty((max(most, 1), d), dtype=X.dtype)
    lab = np.empty(max(most, 1), dtype=np.int32)
    val = np.empty(max(most, 1), dtype=X.dtype)
    glab = np.empty(max(most, 1), dtype=np.int32)
    gval = np.empty(max(most, 1), dtype=X.dtype)
    for c in range(kc):
        lo = bounds[c]
        m = bounds[c + 1] - lo
        nb = offs[c + 1] - offs[c]
        if m == 0 or nb == 0:
            continue
        for i in range(m):
            r = rows_sorted[lo + i]
            for f in range(d):
                buf[i, f] = X[r, f]
        b0, b1 = offs[c], offs[c + 1]
        ir_assign_rows(buf, m, CT[b0:b1], cn[b0 * per_block : b1 * per_block], ir_block,
                       ir_rows, ir_single, group, lab, val, glab, gval)
        first = cells[c]
        for i in range(m):
            r = rows_sorted[lo + i]
            if val[i] < best[r]:
                best[r] = val[i]
                labels[r] = first + lab[i]


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
    G = np.empty((min(tile, n), kc), dtype=X.dtype)
    for s in range(0, n, tile):
        e = min(s + tile, n)
        np.matmul(X[s:e], Ct, out=G[: e - s])
        _smallest(G[: e - s], cnorm, out[s:e])
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
    layout = _cell_layout(fine, cells, X.dtype)
    if layout is not None:
        (ir_block, ir_rows, ir_single, per_block, group), CT, cn, offs = layout
        value = np.full(n, np.inf, dtype=X.dtype)
        _search_cells(X, rows_sorted, bounds, cells, offs, CT, cn, ir_block, ir_rows,
                      ir_single, per_block, group, labels, value)
        found = labels >= 0
        if found.any():
            _numba.exact_sqdist(X, np.where(found, labels, 0), fine, best)
            best[~found] = np.inf
    else:
        for c in np.flatnonzero(np.diff(bounds)):
            lo, hi = int(cells[c]), int(cells[c + 1])
            if hi <= lo:
                continue
            rows = rows_sorted[bounds[c] : bounds[c + 1]]
            lab, dist = nearest_center(X[rows], fine[lo:hi])
            # Cells come in increasing order and so do their centres: a strict '<'
            # keeps the lowest index on ties.
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
