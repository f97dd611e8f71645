"""Per-chunk data checks and moments, folded into the first pass of every fit.

They cost one extra sweep of a chunk that is already in memory, never an extra read of
the dataset: dclust finds NaN or inf values and computes the per-feature variance (for
scale-free tolerances) in the same pass that starts the algorithm.
"""

from __future__ import annotations

import numpy as np

from .._xp import array_namespace, is_numpy_namespace, to_numpy
from . import _numba

__all__ = ["data_stats_partial", "data_stats_combine", "count_nonfinite"]

_TILE = 65536


def data_stats_partial(X, sample_weight=None, *, row_offset=0):
    """Finiteness and per-feature moments of one chunk.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    sample_weight : array of shape (n_rows,), default=None
    row_offset : int, default=0
        Global row number of the chunk's first row.

    Returns
    -------
    stats : dict
        ``count``, ``mean`` and ``m2`` (float64 per feature, Chan's parallel form),
        ``n_nonfinite`` and ``first_nonfinite`` (global row, -1 if none), and for the
        weights ``n_bad_weight`` and ``first_bad_weight`` (negative or non-finite) and
        ``weight_sum`` (the number of rows without weights), and ``absmax``, the
        largest finite magnitude (whether distances can be formed in ``X``'s precision).
    """
    xp = array_namespace(X)
    n, d = X.shape
    count, mean, m2 = 0, np.zeros(d), np.zeros(d)
    n_bad, first_bad = 0, -1
    absmax = 0.0
    fast = is_numpy_namespace(xp) and X.dtype in (np.float32, np.float64) and n > 0
    tile = max(64, 2**16 // max(d, 1)) if fast else _TILE
    if fast:
        X = np.asarray(X)
        tsum, tm2 = np.empty(d), np.empty(d)
    for s in range(0, n, tile):
        e = min(s + tile, n)
        t = e - s
        if fast:
            # Two vectorised sweeps over a cache-resident tile; a tile holding NaN or inf
            # (its sums are not finite) is redone by the exact path below.
            amax = _numba.tile_moments(X, s, e, tsum, tm2)
            if np.isfinite(tsum).all():
                absmax = max(absmax, amax)
                count, mean, m2 = _chan(count, mean, m2, t, tsum / t, tm2.copy())
                continue
        Xt = xp.astype(X[s:e, :], xp.float64)
        finite = xp.isfinite(Xt)
        ok_rows = to_numpy(xp.all(finite, axis=1))
        if not ok_rows.all():
            bad = np.flatnonzero(~ok_rows)
            n_bad += int(np.sum(~to_numpy(finite)))
            if first_bad < 0:
                first_bad = row_offset + s + int(bad[0])
            Xt = xp.where(finite, Xt, xp.zeros_like(Xt))
        absmax = max(absmax, float(xp.max(xp.abs(Xt))))
        tmean = to_numpy(xp.mean(Xt, axis=0))
        diff = Xt - xp.asarray(tmean, dtype=xp.float64)[None, :]
        tm2 = to_numpy(xp.sum(diff * diff, axis=0))
        count, mean, m2 = _chan(count, mean, m2, t, tmean, tm2)
    n_bad_w, first_bad_w = 0, -1
    weight_sum = float(n)
    if sample_weight is not None:
        w = np.asarray(to_numpy(sample_weight), dtype=np.float64)
        bad_w = ~(np.isfinite(w) & (w >= 0))
        if bad_w.any():
            n_bad_w = int(bad_w.sum())
            first_bad_w = row_offset + int(np.flatnonzero(bad_w)[0])
        weight_sum = float(w[~bad_w].sum())
    return {
        "count": count,
        "mean": mean,
        "m2": m2,
        "n_nonfinite": n_bad,
        "first_nonfinite": first_bad,
        "n_bad_weight": n_bad_w,
        "first_bad_weight": first_bad_w,
        "weight_sum": weight_sum,
        "absmax": absmax,
    }


def _chan(na, ma, m2a, nb, mb, m2b):
    n = na + nb
    if n == 0:
        return 0, ma, m2a
    delta = mb - ma
    mean = ma + delta * (nb / n)
    m2 = m2a + m2b + delta * delta * (na * nb / n)
    return n, mean, m2


def _first(a, b):
    if a < 0:
        return b
    if b < 0:
        return a
    return min(a, b)


def data_stats_combine(parts):
    """Associative merge of :func:`data_stats_partial` results."""
    out = dict(parts[0])
    for p in parts[1:]:
        out["count"], out["mean"], out["m2"] = _chan(
            out["count"], out["mean"], out["m2"], p["count"], p["mean"], p["m2"]
        )
        out["n_nonfinite"] += p["n_nonfinite"]
        out["first_nonfinite"] = _first(out["first_nonfinite"], p["first_nonfinite"])
        out["n_bad_weight"] += p["n_bad_weight"]
        out["weight_sum"] += p["weight_sum"]
        out["first_bad_weight"] = _first(out["first_bad_weight"], p["first_bad_weight"])
        out["absmax"] = max(out["absmax"], p["absmax"])
    return out


def count_nonfinite(X):
    """Number of NaN or infinite values in ``X`` and the first row holding one (-1 if none)."""
    xp = array_namespace(X)
    finite = xp.isfinite(X)
    if bool(xp.all(finite)):
        return 0, -1
    ok_rows = to_numpy(xp.all(finite, axis=1))
    return int(np.sum(~to_numpy(finite))), int(np.flatnonzero(~ok_rows)[0])
