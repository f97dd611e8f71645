"""Weighted reservoir sampling of rows, seeded per chunk.

Each row gets the key ``log(u) / w`` (Efraimidis & Spirakis' A-Res, in log form so tiny
weights do not underflow), with ``u`` drawn from a generator seeded by ``(seed,
block_id)``; the ``m`` largest keys over the whole array are a weighted sample without
replacement. Keeping the top ``m`` is associative, so the sample does not depend on how
the chunks are combined, and a recomputed chunk draws the same keys.
"""

from __future__ import annotations

import numpy as np

from .._xp import array_namespace, to_numpy

__all__ = ["reservoir_partial", "chunk_rng"]


def chunk_rng(seed: int, block_id: int, stream: int = 0) -> np.random.Generator:
    """The generator of chunk ``block_id`` for purpose ``stream`` of a seeded pass."""
    return np.random.default_rng([int(seed), int(stream), int(block_id)])


def reservoir_partial(X, sample_weight, m, seed, *, block_id, row_offset, cap=None):
    """The chunk's ``m`` rows with the largest sampling keys.

    ``cap`` bounds how many rows one chunk sends (default ``m``): the global top ``m``
    holds about ``m * n_chunk / n`` rows of a chunk, so a cap a few times that keeps
    the sample exact in practice while the data moved stays proportional to ``m``.

    Returns
    -------
    stats : dict
        ``key`` (float64), ``row`` (global int64 index), ``x`` (rows in X's dtype, as
        NumPy) and ``weight`` (float64), sorted by decreasing key.
    """
    xp = array_namespace(X)
    n = X.shape[0]
    rng = chunk_rng(seed, block_id, stream=1)
    u = rng.random(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        logu = np.log(np.maximum(u, np.finfo(float).tiny))
        if sample_weight is None:
            w = np.ones(n)
            key = logu
        else:
            w = np.asarray(to_numpy(sample_weight), dtype=np.float64)
            key = np.where(w > 0, logu / w, -np.inf)
    rows = np.arange(n, dtype=np.int64)
    take = min(m, n, cap if cap is not None else m)
    if take < n:
        part = np.argpartition(-key, take - 1)[:take]
    else:
        part = rows
    order = part[np.lexsort((part, -key[part]))]
    x = to_numpy(xp.take(X, xp.asarray(order), axis=0)) if n else to_numpy(X)
    return {
        "key": key[order],
        "row": rows[order] + row_offset,
        "x": np.asarray(x),
        "weight": w[order],
    }
