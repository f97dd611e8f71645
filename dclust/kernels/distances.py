"""Pairwise distances between a chunk's rows and a small set of centres."""

from __future__ import annotations

from .._xp import array_namespace

__all__ = ["sq_euclidean_distances", "euclidean_distances"]


def sq_euclidean_distances(X, C):
    """Squared euclidean distances (float64), shape (n_rows, n_centres), clipped at 0."""
    xp = array_namespace(X, C)
    X64 = xp.astype(X, xp.float64)
    C64 = xp.astype(xp.asarray(C), xp.float64)
    xn = xp.sum(X64 * X64, axis=1)[:, None]
    cn = xp.sum(C64 * C64, axis=1)[None, :]
    d = xn + cn - 2 * (X64 @ xp.matrix_transpose(C64))
    return xp.clip(d, 0, None)


def euclidean_distances(X, C):
    """Euclidean distances (float64), shape (n_rows, n_centres)."""
    xp = array_namespace(X, C)
    return xp.sqrt(sq_euclidean_distances(X, C))
