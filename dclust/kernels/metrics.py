"""Dissimilarities between a chunk's rows and a small set of points, for any supported metric.

Every metric returns float64 values equal to :func:`scipy.spatial.distance.cdist` (up to
rounding in the last bits):

``"euclidean"`` / ``"sqeuclidean"``
    By GEMM on data centred on the mean of ``Y`` (``||x||^2 + ||y||^2 - 2 x.y``), which
    is where the work is. The expanded form loses digits when two points are close
    compared with their norms; every such pair (``d^2 < 1e-4 (||x||^2 + ||y||^2)``,
    identical points included) is recomputed exactly, so a point's distance to itself is
    exactly 0 and no value carries more than a ~1e-11 relative error.
``"manhattan"``
    A compiled loop (no GEMM form exists).
``"cosine"``
    ``1 - x.y / (||x|| ||y||)`` by GEMM on normalised rows, clipped to ``[0, 2]``. cdist
    gives NaN for an all-zero row; here a zero row is at distance 0 from another zero row
    and 1 from anything else (scikit-learn's convention), so no NaN ever reaches a
    reduction.

NumPy inputs take the fast path (BLAS and numba, releasing the GIL). CuPy inputs take the
device path (:func:`pairwise_distances_dense`: the same GEMM and exact recomputation of
close pairs, with whole-array operations, tested with ``mod=numpy``). Any other array
namespace (array-api-strict) takes a portable path. The tests hold all three equal.
"""

from __future__ import annotations

import numba
import numpy as np

from .._xp import array_namespace, is_numpy_namespace, numpy_like

__all__ = ["METRICS", "pairwise_distances", "pairwise_distances_dense",
           "pairwise_distances_portable"]

METRICS = ("euclidean", "sqeuclidean", "manhattan", "cosine")

# Pairs with d^2 below this fraction of ||x||^2 + ||y||^2 are recomputed exactly.
_EXACT_BELOW = 1e-4
# Elements of the (rows x m x d) broadcast of the portable path, per tile.
_PORTABLE_ELEMENTS = 1 << 21


@numba.njit(nogil=True, cache=True)
def _finish_euclidean(X, Y, xn, yn, G, squared):
    """``G = -2 X Y^T`` becomes the distances, in place, one row at a time.

    Adds the norms, recomputes exactly the pairs the expanded form cannot resolve, clips
    at zero and (unless ``squared``) takes the square root. The first and last loops over
    a row have no branches, so they vectorise; the exact loop runs only for rows that
    have a close pair.
    """
    n, d = X.shape
    m = Y.shape[0]
    for i in range(n):
        row = G[i]
        xi = xn[i]
        close = 0
        for j in range(m):
            v = row[j] + xi + yn[j]
            close += v < _EXACT_BELOW * (xi + yn[j])
            row[j] = v
        if close:
            for j in range(m):
                if row[j] < _EXACT_BELOW * (xi + yn[j]):
                    s = 0.0
                    for f in range(d):
                        t = X[i, f] - Y[j, f]
                        s += t * t
                    row[j] = s
        if squared:
            for j in range(m):
                row[j] = max(row[j], 0.0)
        else:
            for j in range(m):
                row[j] = np.sqrt(max(row[j], 0.0))


@numba.njit(nogil=True, cache=True)
def _manhattan(X, Y, out):
    n, d = X.shape
    m = Y.shape[0]
    for i in range(n):
        for j in range(m):
            s = 0.0
            for f in range(d):
                s += abs(X[i, f] - Y[j, f])
            out[i, j] = s


def _euclidean_numpy(X, Y, squared):
    shift = Y.mean(axis=0) if Y.shape[0] else np.zeros(X.shape[1])
    Xc = X - shift
    Yc = Y - shift
    xn = np.einsum("ij,ij->i", Xc, Xc)
    yn = np.einsum("ij,ij->i", Yc, Yc)
    G = Xc @ (-2.0 * Yc).T  # scaling by -2 is exact
    _finish_euclidean(Xc, Yc, xn, yn, G, squared)
    return G


def _unit_rows(xp, A):
    """Rows scaled to unit norm, and a mask of the all-zero rows (left at zero)."""
    norms = xp.sqrt(xp.sum(A * A, axis=1))
    zero = norms == 0
    safe = xp.where(zero, xp.ones_like(norms), norms)
    return A / safe[:, None], zero


def _cosine(xp, X, Y):
    Xu, xz = _unit_rows(xp, X)
    Yu, yz = _unit_rows(xp, Y)
    D = 1.0 - Xu @ xp.matrix_transpose(Yu)
    D = xp.clip(D, 0.0, 2.0)
    if bool(xp.any(xz)) or bool(xp.any(yz)):
        either = xz[:, None] | yz[None, :]
        both = xz[:, None] & yz[None, :]
        D = xp.where(either, xp.ones_like(D), D)
        D = xp.where(both, xp.zeros_like(D), D)
    return D


def _as64(xp, A):
    return A if A.dtype == xp.float64 else xp.astype(A, xp.float64)


def pairwise_distances(X, Y, metric="euclidean"):
    """Dissimilarities between the rows of ``X`` and those of ``Y`` under ``metric``.

    Parameters
    ----------
    X : array of shape (n, n_features)
        Any real dtype; computed in float64.
    Y : array of shape (m, n_features)
        Same array namespace as ``X``.
    metric : {"euclidean", "sqeuclidean", "manhattan", "cosine"}, default="euclidean"

    Returns
    -------
    D : float64 array of shape (n, m)
        ``D[i, j]`` equals ``scipy.spatial.distance.cdist(X, Y, metric)[i, j]`` to about
        1e-11 relative (see the module notes for cosine's all-zero rows).
    """
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; expected one of {', '.join(map(repr, METRICS))}.")
    xp = array_namespace(X, Y)
    if not is_numpy_namespace(xp):
        mod, _ = numpy_like(xp)
        if mod is not None:
            return pairwise_distances_dense(mod, X, Y, metric)
        return pairwise_distances_portable(X, Y, metric)
    X = np.ascontiguousarray(X, dtype=np.float64)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    if metric in ("euclidean", "sqeuclidean"):
        return _euclidean_numpy(X, Y, metric == "sqeuclidean")
    if metric == "manhattan":
        out = np.empty((X.shape[0], Y.shape[0]))
        _manhattan(X, Y, out)
        return out
    return _cosine(np, X, Y)


def pairwise_distances_dense(mod, X, Y, metric="euclidean"):
    """:func:`pairwise_distances` with whole-array operations of the NumPy-like module
    ``mod`` (CuPy's path; no numba).

    Euclidean distances by one GEMM on data centred on the mean of ``Y``, the close pairs
    recomputed exactly (gathered, in batches), as the compiled path does; cosine by GEMM
    on unit rows; manhattan from the differences, in tiles of rows.
    """
    X = X.astype(mod.float64, copy=False)
    Y = Y.astype(mod.float64, copy=False)
    n, d = X.shape
    m = Y.shape[0]
    if metric == "cosine":
        return _cosine(array_namespace(X, Y), X, Y)
    if metric == "manhattan":
        tile = max(1, _PORTABLE_ELEMENTS // max(1, m * d))
        D = mod.empty((n, m), dtype=mod.float64)
        for s in range(0, n, tile):
            e = min(s + tile, n)
            D[s:e] = mod.abs(X[s:e, None, :] - Y[None, :, :]).sum(axis=2)
        return D
    shift = Y.mean(axis=0) if m else mod.zeros(d)
    Xc = X - shift
    Yc = Y - shift
    xn = (Xc * Xc).sum(axis=1)
    yn = (Yc * Yc).sum(axis=1)
    G = Xc @ (-2.0 * Yc).T
    G += xn[:, None]
    G += yn[None, :]
    ii, jj = mod.nonzero(G < _EXACT_BELOW * (xn[:, None] + yn[None, :]))
    batch = max(1, _PORTABLE_ELEMENTS // max(1, d))
    for s in range(0, int(ii.shape[0]), batch):
        i, j = ii[s : s + batch], jj[s : s + batch]
        diff = Xc[i] - Yc[j]
        G[i, j] = (diff * diff).sum(axis=1)
    G = mod.maximum(G, 0.0)
    return G if metric == "sqeuclidean" else mod.sqrt(G)


def pairwise_distances_portable(X, Y, metric="euclidean"):
    """:func:`pairwise_distances` written against the array API only (CuPy, array-api-strict).

    Euclidean and manhattan distances are computed directly from the differences, in
    tiles of rows, so they are exact without the GEMM correction of the NumPy path.
    """
    xp = array_namespace(X, Y)
    X = _as64(xp, X)
    Y = _as64(xp, Y)
    if metric == "cosine":
        return _cosine(xp, X, Y)
    n, d = X.shape
    m = Y.shape[0]
    tile = max(1, _PORTABLE_ELEMENTS // max(1, m * d))
    parts = []
    for s in range(0, n, tile):
        diff = X[s : min(s + tile, n), None, :] - Y[None, :, :]
        if metric == "manhattan":
            parts.append(xp.sum(xp.abs(diff), axis=2))
        else:
            parts.append(xp.sum(diff * diff, axis=2))
    D = xp.concat(parts, axis=0) if parts else xp.zeros((0, m), dtype=xp.float64)
    if metric == "euclidean":
        D = xp.sqrt(D)
    return D
