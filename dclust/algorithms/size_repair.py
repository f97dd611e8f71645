"""Exact cluster sizes from Sinkhorn prices: a reverse auction, then a few row moves.

Both stages run passes of the fit session that return only reduced statistics (sizes,
the smallest margins per cluster, the cheapest rows to move); no per-row state is kept.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..kernels.sinkhorn import candidates_combine, candidates_partial, repair_combine, repair_partial
from ..reductions.engine import Aggregation

__all__ = ["integer_targets", "repair_prices", "repair_sizes"]


def integer_targets(n, b):
    """Integer sizes summing to ``n``, each within 1 of ``n b_j`` (largest remainders)."""
    raw = n * np.asarray(b, dtype=np.float64)
    T = np.floor(raw).astype(np.int64)
    short = int(n - T.sum())
    if short > 0:
        order = np.argsort(-(raw - T), kind="stable")
        T[order[:short]] += 1
    return T


def _repair_chunk(X, w, ctx, st, m):
    return repair_partial(X, st, m)


def _candidates_chunk(X, w, ctx, st, under, want):
    return candidates_partial(X, st, under, want, row_offset=ctx.row_offset)


def repair_prices(session, state, caps, *, max_rounds=50, name="sinkhorn-repair"):
    """Lower the prices of overfull clusters until no cluster exceeds its cap.

    A reverse auction on reduced statistics: each round is one pass returning, per
    cluster, its size under the prices ``h`` (hard labels ``argmax_j h_j - C_ij``) and the
    smallest margins of its rows (best minus second-best). An overfull cluster ``j`` with
    ``e`` rows too many lowers ``h_j`` to between its ``e``-th and ``(e+1)``-th smallest
    margins, which moves exactly its ``e`` cheapest rows to their second choice. Prices only
    fall, so rows only leave overfull clusters; the rounds stop when every size is at most
    its cap. With caps summing to ``n`` every size is then exactly its cap.

    Returns
    -------
    h : ndarray (k,)
        Prices (column potentials, scaled cost units).
    counts : ndarray (k,)
    n_rounds : int
    """
    h = np.array(state.g, dtype=np.float64)
    m = 64
    counts = None
    for r in range(max_rounds):
        st = replace(state, g=h, eps=1.0, virtual=False)
        agg = Aggregation(name, _repair_chunk, repair_combine).bind(st, m)
        res = session.run_pass({"r": agg}, name=name)["r"]
        counts = res["counts"]
        excess = counts - caps
        if (excess <= 0).all() or r == max_rounds - 1:
            return h, counts, r + 1  # the counts are those of the returned prices
        ms = res["margins"]
        for j in np.flatnonzero(excess > 0):
            e = int(excess[j])
            mj = ms[j]
            if e < m and np.isfinite(mj[e]):
                lo, hi = mj[e - 1], mj[e]
                delta = 0.5 * (lo + hi) if hi > lo else lo + max(abs(lo), 1.0) * 1e-12
            else:
                top = mj[min(e, m) - 1]
                delta = top + max(abs(top), 1.0) * 1e-9
            h[j] -= delta
        m = int(np.clip(int(excess.max()) + 1, 16, 4096))
    return h, counts, max_rounds  # pragma: no cover (max_rounds >= 1 returns in the loop)


def repair_sizes(session, state, targets, caps=None, *, max_rounds=10, name="sinkhorn-repair"):
    """Hard labels whose cluster sizes respect ``caps`` (exactly ``targets`` by default).

    Two stages, each a few passes returning only reduced statistics:

    1. :func:`repair_prices` (at most ``max_rounds`` passes): overfull clusters lower
       their prices, which moves their cheapest rows to their second choice and shrinks
       the excess without any per-row state.
    2. If some cluster is still above its cap, one pass collects, for each overfull
       cluster ``l`` with ``e_l`` rows too many, its ``2 e_l`` rows with the smallest
       regret of moving to an underfull cluster (with their regrets towards every
       underfull cluster), and the client moves exactly ``e_l`` of them, greedily by
       regret, into clusters that still lack rows. The moves are returned as a short
       list of ``(row, label)`` overrides.

    Returns
    -------
    h : ndarray (k,) prices
    override_rows, override_labels : int64 arrays (sorted by row)
    counts : ndarray (k,) final sizes
    n_passes : int
    """
    caps = targets if caps is None else caps
    h, counts, n_passes = repair_prices(session, state, caps, max_rounds=max_rounds, name=name)
    excess = counts - caps
    no = np.zeros(0, dtype=np.int64)
    if (excess <= 0).all():
        return h, no, no, counts, n_passes
    over = np.maximum(excess, 0)
    # Where the rows go: clusters below their target (below their cap when caps > targets).
    room = np.maximum(targets - counts, 0)
    if room.sum() < over.sum():
        room = np.maximum(caps - counts, 0)
    under = np.flatnonzero(room > 0)
    want = np.minimum(2 * over, np.maximum(counts, 0))
    st = replace(state, g=h, eps=1.0, virtual=False)
    agg = Aggregation(name, _candidates_chunk, candidates_combine(want)).bind(st, under, want)
    cand = session.run_pass({"c": agg}, name=name)["c"]
    n_passes += 1
    R = cand["regret"]
    order = np.argsort(R, axis=None, kind="stable")
    taken = np.zeros(R.shape[0], dtype=bool)
    need = over.copy()
    left = room.copy()
    rows, labels = [], []
    for flat in order:
        i, u = divmod(int(flat), R.shape[1])
        lab = int(cand["label"][i])
        tgt = int(under[u])
        if taken[i] or need[lab] <= 0 or left[tgt] <= 0:
            continue
        taken[i] = True
        need[lab] -= 1
        left[tgt] -= 1
        rows.append(int(cand["row"][i]))
        labels.append(tgt)
        counts[lab] -= 1
        counts[tgt] += 1
        if not need.any():
            break
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(rows)
    return h, rows[order], labels[order], counts, n_passes
