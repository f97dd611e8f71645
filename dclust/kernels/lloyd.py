"""Per-chunk k-means kernels: nearest centre, and the fused Lloyd statistics.

``lloyd_partial`` reads each row of the chunk once and returns the sufficient statistics
of a Lloyd update: per-cluster weighted sums and weights (float64), the inertia, and the
``n_far`` rows farthest from their centre (candidates for relocating empty clusters).
Distances use the ``||c||^2 - 2 x.c`` form (``||x||^2`` does not change the argmin); the
chosen centre's distance is then recomputed exactly in float64, so the inertia does not
suffer the cancellation of the expanded form.

NumPy chunks take a compiled fast path, one numba call that releases the GIL: the
register-blocked nearest-centre kernel of :mod:`._irassign` (or, where it is off or
cannot be compiled, a BLAS GEMM into a preallocated centre-major tile and a vectorised
argmin), then the accumulation. CuPy chunks take the device path (one cuBLAS GEMM per
large tile, argmin on the device, scatter-add of the sums), written against the
NumPy-compatible API so that it is tested on NumPy where no GPU exists. Any other array
namespace (array-api-strict) takes the portable path. The tests hold all three equal.
"""

from __future__ import annotations

import numpy as np
from .._xp import array_namespace, is_numpy_namespace, numpy_like
from . import _numba, _irassign
from ._blas import DGEMM, SGEMM

__all__ = ["lloyd_partial", "lloyd_stats", "nearest_center", "tile_rows"]


_NO_F64 = np.empty(0, dtype=np.float64)
_NO_I64 = np.empty(0, dtype=np.int64)
_NO_SUMS = np.empty((0, 0), dtype=np.float64)


def _gemm(X):
    return SGEMM if X.dtype == np.float32 else DGEMM


# Distance-tile shape of the compiled path: TILE_ROWS rows by at most CENTRE_BLOCK
# centres (rows x centres x 4 bytes within a core's L2 cache), large enough for the GEMM
# to run near its peak.
TILE_ROWS = 256
CENTRE_BLOCK = 512


def tile_rows(n_clusters: int) -> int:
    """Rows per tile of the compiled path."""
    return int(min(4096, max(TILE_ROWS, (TILE_ROWS * CENTRE_BLOCK) // max(n_clusters, 1))))


def _tile_buffer(k, tile, dtype):
    return np.empty((min(k, CENTRE_BLOCK), tile), dtype=dtype)


def _prepare_numpy(X, centers):
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    X = np.ascontiguousarray(X)
    # Cache-line aligned, as the sums below: the fold loads a centre's and a sum's row
    # as whole vectors (_irassign.ALIGN; ~7 % of a pass at d=32, k=16).
    C64 = _irassign.aligned_empty(np.shape(centers), np.float64)
    C64[...] = centers
    # -2 C in X's dtype: scaling by a power of two is exact.
    Cm = np.ascontiguousarray((-2.0 * C64).astype(X.dtype))
    cnorm = np.einsum("ij,ij->i", C64, C64).astype(X.dtype)
    return X, C64, Cm, cnorm


def _assign_args(X, Cm, cnorm, tile):
    """The distance-tile buffer and the IR kernel's arguments for ``lloyd_chunk``.

    The register-blocked kernel of :mod:`._irassign` labels the rows (no tile buffer);
    where it is switched off or cannot be compiled its address is 0 and the GEMM path
    runs.
    """
    k, d = Cm.shape
    addr = _irassign.try_kernel_address(X.dtype, k, d)
    if addr is None:
        none = (0, 1, 0, np.empty((0, 0, 1), X.dtype), np.empty(0, X.dtype), 0, 1)
        return (_tile_buffer(k, tile, X.dtype),) + none
    block, rows, single, per_block, group = addr
    CT, cn = _irassign.centre_layout(Cm, cnorm, per_block)
    return np.empty((0, tile), X.dtype), block, rows, single, CT, cn, CT.shape[0], group


def _lloyd_numpy(X, centers, w, n_far, row_offset):
    X, C64, Cm, cnorm = _prepare_numpy(X, centers)
    n, d = X.shape
    k = C64.shape[0]
    tile = tile_rows(k)
    sums = _irassign.aligned_empty((k, d), np.float64)
    sums[...] = 0
    wsum = np.zeros(k)
    far_d = np.full(n_far, -np.inf)
    far_i = np.full(n_far, -1, dtype=np.int64)
    far_l = np.full(n_far, -1, dtype=np.int64)
    w64 = _NO_F64 if w is None else np.ascontiguousarray(w, dtype=np.float64)
    GT, *ir_args = _assign_args(X, Cm, cnorm, tile)
    inertia = _numba.lloyd_chunk(_gemm(X), X, Cm, cnorm, C64, w64, tile, GT, _NO_I64, sums,
                                 wsum, _NO_F64, far_d, far_i, far_l, True, *ir_args)
    return lloyd_stats(X, None if w is None else w64, sums, wsum, inertia, far_d, far_i, far_l,
                       row_offset)


def lloyd_stats(X, w64, sums, wsum, inertia, far_d, far_i, far_l, row_offset):
    """The statistics dict of :func:`lloyd_partial` from the compiled loops' outputs: the
    kept far rows (``far_i >= 0``) ordered by distance descending, then row."""
    keep = far_i >= 0
    order = np.lexsort((far_i[keep], -far_d[keep]))
    far_i = far_i[keep][order]
    return {
        "sums": sums,
        "weights": wsum,
        "inertia": np.asarray(inertia),
        "far_dist": far_d[keep][order],
        "far_row": far_i + row_offset,
        "far_x": np.ascontiguousarray(X[far_i], dtype=np.float64),
        "far_label": far_l[keep][order],
        "far_weight": np.ones(far_i.shape[0]) if w64 is None else w64[far_i],
    }


def _nearest_numpy(X, centers):
    X, C64, Cm, cnorm = _prepare_numpy(X, centers)
    n = X.shape[0]
    k = C64.shape[0]
    tile = tile_rows(k)
    GT, *ir_args = _assign_args(X, Cm, cnorm, tile)
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n)
    _numba.lloyd_chunk(_gemm(X), X, Cm, cnorm, C64, _NO_F64, tile, GT, labels, _NO_SUMS, _NO_F64,
                       dist, _NO_F64, _NO_I64, _NO_I64, False, *ir_args)
    return labels, dist


# The device path works on large tiles: a GPU needs big GEMMs to reach its peak, and the
# distance tile (rows x k) is bounded by this many bytes instead of by a CPU cache.
DEVICE_TILE_BYTES = 256 * 2**20


def device_tile_rows(n_clusters: int, n_features: int) -> int:
    """Rows per tile of the device path: the distance tile and a float64 copy of the rows
    stay under :data:`DEVICE_TILE_BYTES`."""
    per_row = 4 * max(n_clusters, 1) + 8 * max(n_features, 1)
    return int(max(1024, DEVICE_TILE_BYTES // per_row))


def _dense_assign(mod, Xt, C, CT, cnorm):
    G = Xt @ CT
    G += cnorm
    lab = G.argmin(axis=1)
    diff = Xt.astype(mod.float64) - C[lab]
    return lab, (diff * diff).sum(axis=1)


def _dense_prepare(mod, X, centers):
    if X.dtype not in (mod.float32, mod.float64):
        X = X.astype(mod.float64)
    C = mod.asarray(centers, dtype=mod.float64)
    CT = mod.ascontiguousarray((-2.0 * C).T.astype(X.dtype))
    cnorm = (C * C).sum(axis=1).astype(X.dtype)
    return X, C, CT, cnorm


def _lloyd_dense(mod, scatter_add, X, centers, w, n_far, row_offset, tile=None):
    """Lloyd statistics with whole-array operations of a NumPy-like module (CuPy's fast path)."""
    X, C, CT, cnorm = _dense_prepare(mod, X, centers)
    n, d = X.shape
    k = C.shape[0]
    tile = tile or device_tile_rows(k, d)
    sums = mod.zeros((k, d), dtype=mod.float64)
    labels = mod.empty(n, dtype=mod.int64)
    dist = mod.empty(n, dtype=mod.float64)
    w64 = None if w is None else mod.asarray(w, dtype=mod.float64)
    for s in range(0, n, tile):
        e = min(s + tile, n)
        Xt = X[s:e]
        lab, dt = _dense_assign(mod, Xt, C, CT, cnorm)
        labels[s:e] = lab
        dist[s:e] = dt
        Xw = Xt.astype(mod.float64)
        if w64 is not None:
            Xw *= w64[s:e, None]
        scatter_add(sums, lab, Xw)
    wsum = mod.bincount(labels, weights=w64, minlength=k).astype(mod.float64) if n else \
        mod.zeros(k, dtype=mod.float64)
    inertia = (dist.sum() if w64 is None else (dist * w64).sum()) if n else mod.zeros(())
    out = {"sums": sums, "weights": wsum, "inertia": inertia}
    out.update(_far_rows(mod, X, dist, labels, w64, n_far, row_offset))
    return out


def _far_rows(mod, X, dist, labels, w64, n_far, row_offset):
    """The ``n_far`` rows farthest from their centre, ordered as the compiled path orders
    them (distance descending, then row)."""
    n, d = X.shape
    m = min(n_far, n)
    if m == 0:
        return {"far_dist": np.zeros(0), "far_row": np.zeros(0, dtype=np.int64),
                "far_x": np.zeros((0, d)), "far_label": np.zeros(0, dtype=np.int64),
                "far_weight": np.zeros(0)}
    cand = mod.argpartition(-dist, m - 1)[:m] if m < n else mod.arange(n)
    # Ties at the cut are broken by row number, as the compiled path does: take every
    # row as far as the m-th candidate, then order on the host (m rows, cheap).
    cut = dist[cand].min()
    cand = mod.nonzero(dist >= cut)[0]
    cd = _host(dist[cand])
    ci = _host(cand)
    order = np.lexsort((ci, -cd))[:m]
    rows = ci[order]
    rows_dev = mod.asarray(rows)
    return {
        "far_dist": cd[order],
        "far_row": rows.astype(np.int64) + row_offset,
        "far_x": _host(X[rows_dev].astype(mod.float64)),
        "far_label": _host(labels[rows_dev]).astype(np.int64),
        "far_weight": np.ones(m) if w64 is None else _host(w64[rows_dev]),
    }


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _nearest_dense(mod, X, centers, tile=None):
    X, C, CT, cnorm = _dense_prepare(mod, X, centers)
    n, d = X.shape
    tile = tile or device_tile_rows(C.shape[0], d)
    labels = mod.empty(n, dtype=mod.int64)
    dist = mod.empty(n, dtype=mod.float64)
    for s in range(0, n, tile):
        e = min(s + tile, n)
        labels[s:e], dist[s:e] = _dense_assign(mod, X[s:e], C, CT, cnorm)
    return labels, dist


def _portable_assign(xp, Xt, C, cnorm):
    """Labels and exact float64 squared distances for one tile, in any namespace."""
    Cx = xp.astype(C, Xt.dtype)
    G = xp.astype(cnorm, Xt.dtype)[None, :] - 2 * (Xt @ xp.matrix_transpose(Cx))
    labels = xp.argmin(G, axis=1)
    diff = xp.astype(Xt, xp.float64) - xp.take(C, labels, axis=0)
    return labels, xp.sum(diff * diff, axis=1)


def _as_float(xp, X):
    if X.dtype in (xp.float32, xp.float64):
        return X
    return xp.astype(X, xp.float64)


def _lloyd_portable(xp, X, centers, w, n_far, row_offset):
    X = _as_float(xp, X)
    n, d = X.shape
    C = xp.asarray(centers, dtype=xp.float64)
    k = C.shape[0]
    cnorm = xp.sum(C * C, axis=1)
    tile = tile_rows(k)
    ks = xp.arange(k)
    sums = xp.zeros((k, d), dtype=xp.float64)
    wsum = xp.zeros((k,), dtype=xp.float64)
    inertia = xp.asarray(0.0, dtype=xp.float64)
    dists, labs = [], []
    for s in range(0, n, tile):
        e = min(s + tile, n)
        Xt = X[s:e, :]
        labels, dist = _portable_assign(xp, Xt, C, cnorm)
        onehot = xp.astype(labels[:, None] == ks[None, :], xp.float64)
        wt = xp.ones_like(dist) if w is None else xp.astype(w[s:e], xp.float64)
        sums = sums + xp.matrix_transpose(onehot) @ (wt[:, None] * xp.astype(Xt, xp.float64))
        wsum = wsum + xp.sum(onehot * wt[:, None], axis=0)
        inertia = inertia + xp.sum(wt * dist)
        dists.append(dist)
        labs.append(labels)
    if n and n_far:
        dist = xp.concat(dists)
        order = xp.argsort(-dist, stable=True)[: min(n_far, n)]
        far_d = xp.take(dist, order)
        far_x = xp.astype(xp.take(X, order, axis=0), xp.float64)
        far_label = xp.astype(xp.take(xp.concat(labs), order), xp.int64)
        far_w = xp.ones_like(far_d) if w is None else xp.astype(xp.take(w, order), xp.float64)
        far_row = xp.astype(order, xp.int64) + row_offset
    else:
        far_d = xp.zeros((0,), dtype=xp.float64)
        far_x = xp.zeros((0, d), dtype=xp.float64)
        far_label = xp.zeros((0,), dtype=xp.int64)
        far_w = xp.zeros((0,), dtype=xp.float64)
        far_row = xp.zeros((0,), dtype=xp.int64)
    return {
        "sums": sums,
        "weights": wsum,
        "inertia": inertia,
        "far_dist": far_d,
        "far_row": far_row,
        "far_x": far_x,
        "far_label": far_label,
        "far_weight": far_w,
    }


def lloyd_partial(X, centers, sample_weight=None, *, n_far=0, row_offset=0):
    """Sufficient statistics of one Lloyd iteration over one row-chunk.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        The chunk, whole rows. Any float or integer dtype; float32 stays float32 in the
        GEMM and is accumulated in float64.
    centers : array of shape (n_clusters, n_features)
        Current centres (float64).
    sample_weight : array of shape (n_rows,), default=None
        Non-negative weights; ``None`` means one for every row.
    n_far : int, default=0
        How many of the rows farthest from their centre to return.
    row_offset : int, default=0
        Global row number of the chunk's first row, added to ``far_row``.

    Returns
    -------
    stats : dict of arrays
        ``sums`` (k, d) and ``weights`` (k,) per cluster, ``inertia`` (0-d), and the far
        rows: ``far_dist``, ``far_row`` (global), ``far_x``, ``far_label``, ``far_weight``.
    """
    xp = array_namespace(X)
    if is_numpy_namespace(xp):
        return _lloyd_numpy(np.asarray(X), np.asarray(centers), sample_weight, n_far, row_offset)
    mod, scatter_add = numpy_like(xp)
    if mod is not None:
        return _lloyd_dense(mod, scatter_add, X, centers, sample_weight, n_far, row_offset)
    return _lloyd_portable(xp, X, centers, sample_weight, n_far, row_offset)


def nearest_center(X, centers):
    """Index of, and exact squared distance to, the nearest centre of each row.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    centers : array of shape (n_clusters, n_features)

    Returns
    -------
    labels : int array of shape (n_rows,)
    sqdist : float64 array of shape (n_rows,)
    """
    xp = array_namespace(X)
    if is_numpy_namespace(xp):
        return _nearest_numpy(np.asarray(X), np.asarray(centers))
    mod, _ = numpy_like(xp)
    if mod is not None:
        return _nearest_dense(mod, X, centers)
    X = _as_float(xp, X)
    C = xp.asarray(centers, dtype=xp.float64)
    cnorm = xp.sum(C * C, axis=1)
    tile = tile_rows(C.shape[0])
    labs, dists = [], []
    n = X.shape[0]
    for s in range(0, n, tile):
        lab, dist = _portable_assign(xp, X[s : min(s + tile, n), :], C, cnorm)
        labs.append(lab)
        dists.append(dist)
    if not labs:
        return xp.zeros((0,), dtype=xp.int64), xp.zeros((0,), dtype=xp.float64)
    return xp.concat(labs), xp.concat(dists)
