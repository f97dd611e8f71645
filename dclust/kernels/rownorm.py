"""Rows scaled to unit euclidean norm, for cosine (spherical) k-means.

Cosine k-means runs the euclidean Lloyd kernel on unit rows: for unit vectors
``||x - c||^2 = 2 (1 - cos(x, c))``, so the nearest centre is the most similar one and
half the squared distance is the cosine distance. The rows are normalised inside each
chunk task (a temporary the size of the chunk), never as a normalised copy of the data.

The norm is accumulated in float64 whatever the dtype, and the scaled rows are rounded
once to the chunk's dtype (float32 stays float32 for the GEMM that follows).
Rows whose squares overflow or underflow float64 are rescaled by their largest value
first, so only a row that is exactly zero (or holds NaN or inf) is refused.
"""

from __future__ import annotations

import numpy as np

from .._xp import array_namespace, is_numpy_namespace
from ..exceptions import DataError

__all__ = ["row_norms", "row_normalize", "cosine_distances"]

# Squares below this lose precision (subnormal) or vanish: such rows are rescaled.
_TINY = float(np.finfo(np.float64).tiny)


def row_norms(X):
    """Euclidean norm of each row, float64, safe from overflow and underflow.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)

    Returns
    -------
    norms : float64 array of shape (n_rows,)
        0 for a zero row; NaN or inf for a row holding NaN or inf.
    """
    xp = array_namespace(X)
    if is_numpy_namespace(xp):
        # One read of the chunk, no float64 copy of it (the common case).
        X = np.asarray(X)
        sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    else:
        X64 = xp.astype(X, xp.float64)
        sq = xp.sum(X64 * X64, axis=1)
    norms = xp.sqrt(sq)
    odd = (sq < _TINY) | ~xp.isfinite(sq)
    if X.shape[0] and bool(xp.any(odd)):
        # A few rows at most in real data: rescale the whole chunk rather than gather.
        X64 = xp.astype(X, xp.float64)
        big = xp.max(xp.abs(X64), axis=1) if X64.shape[1] else xp.zeros_like(sq)
        ok = (big > 0) & xp.isfinite(big)
        scale = xp.where(ok, big, xp.ones_like(big))
        Y = X64 / scale[:, None]
        scaled = scale * xp.sqrt(xp.sum(Y * Y, axis=1))
        # A row whose largest value is 0 or not finite keeps that value as its norm.
        norms = xp.where(odd, xp.where(ok, scaled, big), norms)
    return norms


def row_normalize(X, *, row_offset=0, block_id=None, rows=None, what="X"):
    """``X`` with every row scaled to unit norm, in ``X``'s float dtype.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
        Any float or integer dtype (integers give float64).
    row_offset : int, default=0
        Global row number of the first row, for messages.
    block_id : int, optional
        The chunk's index, for messages.
    rows : array of shape (n_rows,), optional
        Global row numbers of the rows (a sample), for messages; overrides
        ``row_offset``.
    what : str, default="X"
        What the rows are, for messages (``"the init array"``).

    Returns
    -------
    X_unit : array of shape (n_rows, n_features)

    Raises
    ------
    DataError
        A row of norm 0 (cosine similarity is undefined for it) or holding NaN or inf,
        naming the first such row.
    """
    xp = array_namespace(X)
    dtype = X.dtype if X.dtype in (xp.float32, xp.float64) else xp.float64
    norms = row_norms(X)
    bad = ~((norms > 0) & xp.isfinite(norms))
    if X.shape[0] and bool(xp.any(bad)):
        i = int(xp.nonzero(bad)[0][0])
        n_bad = int(xp.sum(xp.astype(bad, xp.int64)))
        row = int(np.asarray(rows)[i]) if rows is not None else row_offset + i
        where = f"Row {row:,} of {what}" + ("" if block_id is None else f" (chunk {block_id})")
        many = "" if n_bad == 1 else f" (and {n_bad - 1:,} more in this chunk)"
        if float(norms[i]) == 0:
            raise DataError(
                f"{where} is all zeros{many}; metric='cosine' needs rows of non-zero norm "
                "(the angle to a zero vector is undefined). Drop or fix such rows, or use "
                "metric='euclidean'."
            )
        raise DataError(
            f"{where} holds NaN or infinite values{many}; metric='cosine' needs finite rows "
            "of non-zero norm. Clean the data or drop such rows."
        )
    if is_numpy_namespace(xp):
        return np.divide(X, norms[:, None], dtype=np.float64).astype(dtype, copy=False)
    return xp.astype(xp.astype(X, xp.float64) / norms[:, None], dtype)


def cosine_distances(X, C):
    """Cosine distances ``1 - cos`` (float64) between unit rows and unit centres,
    shape (n_rows, n_centres), clipped to [0, 2]."""
    xp = array_namespace(X, C)
    X64 = xp.astype(X, xp.float64)
    C64 = xp.astype(xp.asarray(C), xp.float64)
    return xp.clip(1.0 - X64 @ xp.matrix_transpose(C64), 0.0, 2.0)
