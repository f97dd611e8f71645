"""Compiled inner loops of the NumPy fast path.

These loops do, per row, the work that NumPy would spread over several full sweeps of
temporaries: argmin over a distance tile, the exact distance to the chosen centre, the
float64 segment sums and the running top-R of the farthest rows. Each releases the GIL so
that the worker's threads run them side by side.
"""

from __future__ import annotations

import numba
import numpy as np

# Reassociation lets LLVM vectorise the per-row reductions over features; the loops are
# still compiled once, so a given input always gives the same bits.
_FASTMATH = {"reassoc", "nsz", "contract"}


@numba.njit(nogil=True, cache=True)
def argmin_rows(G, labels):
    """``labels[i] = argmin_j G[i, j]`` (first index on ties), for small ``k``."""
    t, k = G.shape
    for i in range(t):
        best = 0
        bestv = G[i, 0]
        for j in range(1, k):
            v = G[i, j]
            if v < bestv:
                bestv = v
                best = j
        labels[i] = best


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def accumulate(X, labels, C, w, sums, wsum, dist_out, far_d, far_i, row0):
    """Fold one tile of assigned rows into the Lloyd statistics.

    Parameters
    ----------
    X : (t, d) float32 or float64 array, the tile.
    labels : (t,) int array, the centre chosen for each row.
    C : (k, d) float64 array, the centres.
    w : (t,) float64 array of sample weights, or an empty array for unit weights.
    sums : (k, d) float64 array, ``sum w * x`` per cluster (updated).
    wsum : (k,) float64 array, ``sum w`` per cluster (updated).
    dist_out : (t,) float64 array receiving the exact squared distance of each row to
        its centre, or an empty array.
    far_d, far_i : (R,) arrays, the R largest distances seen so far and their row
        numbers within the chunk (updated; R may be 0).
    row0 : int
        Row number of the tile's first row within the chunk.

    Returns
    -------
    inertia : float
        ``sum w * ||x - c||^2`` over the tile.
    """
    t, d = X.shape
    use_w = w.shape[0] > 0
    keep_dist = dist_out.shape[0] > 0
    R = far_d.shape[0]
    total = 0.0
    for i in range(t):
        c = labels[i]
        wi = w[i] if use_w else 1.0
        srow = sums[c]
        crow = C[c]
        xrow = X[i]
        dist = 0.0
        if use_w:
            for f in range(d):
                x = np.float64(xrow[f])
                diff = x - crow[f]
                dist += diff * diff
                srow[f] += wi * x
        else:
            for f in range(d):
                x = np.float64(xrow[f])
                diff = x - crow[f]
                dist += diff * diff
                srow[f] += x
        wsum[c] += wi
        total += wi * dist
        if keep_dist:
            dist_out[i] = dist
        if R > 0:
            # Replace the smallest of the kept R when this row is farther; strict '>'
            # keeps the earliest row on ties so the choice is deterministic.
            m = 0
            for r in range(1, R):
                if far_d[r] < far_d[m]:
                    m = r
            if dist > far_d[m]:
                far_d[m] = dist
                far_i[m] = row0 + i
    return total


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def exact_sqdist(X, labels, C, out):
    """``out[i] = ||X[i] - C[labels[i]]||^2`` in float64."""
    t, d = X.shape
    for i in range(t):
        crow = C[labels[i]]
        xrow = X[i]
        dist = 0.0
        for f in range(d):
            diff = np.float64(xrow[f]) - crow[f]
            dist += diff * diff
        out[i] = dist
