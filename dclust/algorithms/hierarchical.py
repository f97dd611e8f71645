"""Two-level k-means for large ``k`` (``KMeans(algorithm="hierarchical")``).

Exact Lloyd compares every row with every centre: ``2 n k d`` flops a pass, 1.3e13 at
``k=100,000`` on 2M x 32. This driver does what FAISS's two-level training and IVF
indexes do, on the fit session:

1. **Coarse**: ``kc ~ sqrt(k)`` centres by k-means on a uniform sample (one pass draws
   it; the iterations run in memory on the client).
2. **Cell sizes**: one pass counts the rows (and sums the weights) of each coarse cell;
   cell ``c`` gets ``k_c`` fine centres in proportion to its weight (largest remainders,
   at most its number of rows, at least one when it holds weight), ``sum k_c = k``.
3. **Fine, per cell, in parallel**: one pass sends every row to its cell (a shuffle of at
   most ``max_points_per_centroid * k_c`` rows per cell, a deterministic subsample of
   larger cells, as FAISS caps its training set); each task of cells fits their ``k_c``
   centres by k-means++ and in-memory Lloyd. Rows of a cell are concatenated in chunk
   order, and each cell is seeded by ``(seed, cell)``, so the result does not depend on
   the number of workers or on how cells are grouped into tasks.
4. **Final Lloyd passes over all k**, each row searching only the fine centres of its
   ``n_probe`` nearest coarse cells (:mod:`dclust.kernels.probe`): a pass costs
   ``kc + n_probe * k / kc`` distances a row instead of ``k``, and no task builds a
   ``rows x k`` tile. The update, empty-cluster relocation, tolerance and checkpoints
   are exact Lloyd's (:class:`~dclust.algorithms.kmeans.Lloyd`); after each update the
   cells are regrouped around the moved centres (:func:`regroup`).

The centres come grouped by coarse cell (``coarse_cells_``); prediction searches the
same probes, so ``labels_``, ``predict`` and ``inertia_`` agree.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from .._xp import to_numpy
from ..exceptions import DclustValueError
from ..kernels.lloyd import lloyd_partial, nearest_center
from ..kernels.probe import probe_lloyd_partial, probe_nearest
from ..kernels.seeding import kmeans_plusplus
from ..reductions.engine import Aggregation
from ..reductions.monoids import sum_combine
from ..reductions.shuffle import run_groupby
from .kmeans import (N_FAR, Lloyd, _lloyd_combine, _tolerance, _update_centers, seed_centers)
from .sampling import sample_rows

__all__ = ["HierarchicalLloyd", "HIERARCHICAL_MIN_K", "allocate_centres", "coarse_clusters",
           "choose_n_probe", "lloyd_in_memory", "probe_aggregation", "probe_recall",
           "resolve_algorithm", "DEFAULT_N_PROBE", "PROBE_EXCESS_WARN"]

# algorithm="auto" switches to the two-level fit from this many clusters: below it an
# exact pass costs little more than the coarse search plus the probes.
HIERARCHICAL_MIN_K = 4096
DEFAULT_N_PROBE = 4
# n_probe="auto": the probe counts tried on a sample at the fine stage's centres, the
# smallest whose loss (probe_recall's excess) is at most AUTO_EXCESS being taken.
AUTO_PROBES = (4, 8, 16, 32)
AUTO_EXCESS = 0.001
# Training rows kept per fine centre (FAISS's max_points_per_centroid).
MAX_POINTS_PER_CENTROID = 256
# In-memory Lloyd iterations of the coarse and of each cell's fine k-means.
COARSE_ITER = 20
FINE_ITER = 10
# Sample rows on which the final centres' probe-limited assignment is compared with the
# exact one (probe_recall): ~0.1 s at k=16,384, d=64.
RECALL_ROWS = 2048
# probe_recall's excess above which a fit warns (ProbeRecallWarning).
PROBE_EXCESS_WARN = 0.005


def resolve_algorithm(algorithm, n_clusters):
    """``"lloyd"`` or ``"hierarchical"`` for the ``algorithm`` parameter."""
    if algorithm == "auto":
        return "hierarchical" if n_clusters >= HIERARCHICAL_MIN_K else "lloyd"
    return algorithm


def coarse_clusters(n_clusters):
    """Coarse cells for ``n_clusters`` fine centres: about ``sqrt(k)``."""
    return int(max(1, min(n_clusters, round(math.sqrt(n_clusters)))))


def allocate_centres(k, weight, count):
    """Fine centres per cell: ``k`` in proportion to ``weight``, at most ``count`` each.

    Cells with weight get at least one centre; the rounding goes to the largest
    remainders (ties: the lower cell).

    Parameters
    ----------
    k : int
    weight : array of shape (kc,)
        Weight (sum of sample weights) of each cell.
    count : int array of shape (kc,)
        Rows of positive weight in each cell; ``sum(count) >= k``.

    Returns
    -------
    alloc : int64 array of shape (kc,), summing to ``k``.
    """
    weight = np.asarray(weight, dtype=np.float64)
    count = np.asarray(count, dtype=np.int64)
    live = (weight > 0) & (count > 0)
    cap = np.where(live, count, 0)
    if cap.sum() < k:
        raise DclustValueError(
            f"Only {int(cap.sum())} rows have a positive sample_weight, fewer than "
            f"n_clusters={k}.")
    target = np.zeros_like(weight)
    target[live] = k * weight[live] / weight[live].sum()
    alloc = np.minimum(cap, np.maximum(np.floor(target), live).astype(np.int64))
    while alloc.sum() != k:
        diff = k - int(alloc.sum())
        if diff > 0:
            room = np.flatnonzero(alloc < cap)
            key = (target - alloc)[room]
            pick = room[np.lexsort((room, -key))][:diff]
            alloc[pick] += 1
        else:
            room = np.flatnonzero(alloc > 1)
            key = (alloc - target)[room]
            pick = room[np.lexsort((room, -key))][:-diff]
            alloc[pick] -= 1
    return alloc


def lloyd_in_memory(X, w, C, max_iter, tol_abs=0.0):
    """Lloyd iterations on rows held in memory (the coarse sample, one cell's rows)."""
    C = np.asarray(C, dtype=np.float64)
    n_far = min(N_FAR, C.shape[0])
    for _ in range(int(max_iter)):
        stats = lloyd_partial(X, C, w, n_far=n_far)
        new, _, _ = _update_centers(stats, C)
        shift = float(((new - C) ** 2).sum())
        C = new
        if shift <= tol_abs:
            break
    return C


# ---- the per-cell fine fits (one graph) ---------------------------------------------

def _mix(z):
    """splitmix64 of a uint64 array: a uniform hash of (row, seed) for subsampling."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _split_chunk(block, w_block, row_offset, coarse, group_of, keep, n_groups, seed):
    """Rows of one chunk by coarse cell, cut into the cell groups' pieces."""
    X = np.asarray(to_numpy(block))
    n = X.shape[0]
    w = None if w_block is None else np.asarray(to_numpy(w_block), dtype=np.float64)
    cell = nearest_center(X, coarse)[0] if n else np.zeros(0, dtype=np.int64)
    rows = np.arange(n, dtype=np.uint64) + np.uint64(row_offset)
    u = (_mix(rows ^ np.uint64(seed)) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    ok = u < keep[cell]
    if w is not None:
        ok &= w > 0
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(cell[idx], kind="stable")]
    g = group_of[cell[idx]]
    out = []
    for j in range(n_groups):
        sel = idx[g == j]
        out.append((cell[sel], X[sel], None if w is None else w[sel]))
    return tuple(out)


def _fit_group(cells, alloc, init, seed, max_iter, tol_abs, *pieces):
    """Fine centres of the cells of one group, from their rows in every chunk."""
    cell = np.concatenate([p[0] for p in pieces])
    X = np.concatenate([p[1] for p in pieces])
    weighted = pieces[0][2] is not None
    w = np.concatenate([p[2] for p in pieces]) if weighted else None
    order = np.argsort(cell, kind="stable")  # chunk order within a cell
    cell, X = cell[order], X[order]
    w = None if w is None else w[order]
    bounds = np.searchsorted(cell, cells), np.searchsorted(cell, cells, side="right")
    out = {}
    for c, kc_, lo, hi in zip(cells, alloc, *bounds):
        out[int(c)] = _fit_cell(X[lo:hi], None if w is None else w[lo:hi], int(kc_), init,
                                np.random.default_rng([seed, 11, int(c)]), max_iter, tol_abs)
    return out


def _fit_cell(X, w, k, init, rng, max_iter, tol_abs):
    n = X.shape[0]
    if n <= k:
        # As many centres as rows (or more: a deterministic subsample fell short; the
        # spare copies are empty clusters that the final passes relocate).
        C = X[np.arange(k) % max(n, 1)] if n else np.zeros((k, X.shape[1]))
        return np.asarray(C, dtype=np.float64)
    ww = np.ones(n) if w is None else w
    if init == "random":
        p = ww / ww.sum()
        C = X[rng.choice(n, size=k, replace=False, p=p if w is not None else None)]
    else:
        # One candidate a centre (plain k-means++): the greedy variant's 2 + log k
        # trials cost several times the cell's Lloyd iterations, and the final passes
        # refine every centre anyway.
        C, _ = kmeans_plusplus(X, k, ww, rng, n_local_trials=1)
    return lloyd_in_memory(X, w, C, max_iter, tol_abs)


def _collect(*groups):
    out = {}
    for g in groups:
        out.update(g)
    return out


def _group_cells(work, n_groups):
    """Cells into ``n_groups`` groups of about equal work (largest first)."""
    load = np.zeros(n_groups)
    group_of = np.zeros(work.shape[0], dtype=np.int64)
    for c in np.argsort(-work, kind="stable"):
        j = int(np.argmin(load))
        group_of[c] = j
        load[j] += work[c]
    return group_of


def fit_cells(session, coarse, alloc, count, init, seed, *, max_iter=FINE_ITER, tol_abs=0.0,
              max_points_per_centroid=MAX_POINTS_PER_CENTROID):
    """One pass: every cell's fine centres, fitted in parallel on the workers.

    Returns
    -------
    fine : float64 array of shape (k, d), grouped by cell.
    cells : int64 array of shape (kc + 1,), the cells' offsets in ``fine``.
    """
    from ..runtime.client import get_client

    kc = coarse.shape[0]
    live = np.flatnonzero(alloc > 0)
    keep = np.ones(kc)
    cap = max_points_per_centroid * alloc
    big = count > cap
    keep[big] = cap[big] / count[big]
    try:
        threads = sum(get_client().nthreads().values())
    except Exception:  # pragma: no cover
        threads = 1
    n_groups = int(max(1, min(live.size, 4 * threads)))
    group_of = np.zeros(kc, dtype=np.int64)
    group_of[live] = _group_cells((np.minimum(count, cap) * alloc)[live].astype(float), n_groups)
    cells_of = [live[group_of[live] == j] for j in range(n_groups)]

    def apply(j, *pieces):
        return _fit_group(cells_of[j], alloc[cells_of[j]], init, int(seed), int(max_iter),
                          float(tol_abs), *pieces)

    split = partial(_split_chunk, coarse=np.ascontiguousarray(coarse, dtype=np.float64),
                    group_of=group_of, keep=keep, n_groups=n_groups, seed=int(seed) % 2**63)
    by_cell = _collect(*run_groupby(session.X, split, apply, n_groups,
                                    sample_weight=session.w, name="kmeans-cells"))
    session.n_passes += 1
    cells = np.concatenate([[0], np.cumsum(alloc)]).astype(np.int64)
    fine = np.zeros((int(cells[-1]), session.n_features))
    for c in live:
        fine[cells[c] : cells[c + 1]] = by_cell[int(c)]
    return fine, cells


# ---- aggregations ---------------------------------------------------------------------

def _count_chunk(X, w, ctx, coarse):
    lab = nearest_center(X, coarse)[0]
    lab = np.asarray(to_numpy(lab))
    kc = coarse.shape[0]
    if w is None:
        return {"count": np.bincount(lab, minlength=kc).astype(np.int64),
                "weight": np.bincount(lab, minlength=kc).astype(np.float64)}
    w = np.asarray(to_numpy(w), dtype=np.float64)
    return {"count": np.bincount(lab[w > 0], minlength=kc).astype(np.int64),
            "weight": np.bincount(lab, weights=w, minlength=kc)}


def cell_count_aggregation(coarse):
    """Rows of positive weight and total weight of each coarse cell."""
    return Aggregation("kmeans-cells", _count_chunk,
                       partial(sum_combine, keys=("count", "weight"))).bind(
        np.ascontiguousarray(coarse, dtype=np.float64))


def _probe_chunk(X, w, ctx, coarse, fine, cells, n_probe, n_far):
    return probe_lloyd_partial(X, coarse, fine, cells, n_probe, w, n_far=n_far,
                               row_offset=ctx.row_offset)


def probe_aggregation(coarse, fine, cells, n_probe, n_far=N_FAR):
    """Lloyd statistics of one pass with probe-limited assignment."""
    n_far = int(min(n_far, fine.shape[0]))
    return Aggregation("kmeans-probe", _probe_chunk, partial(_lloyd_combine, n_far=n_far)).bind(
        np.ascontiguousarray(coarse, dtype=np.float64),
        np.ascontiguousarray(fine, dtype=np.float64),
        np.asarray(cells, dtype=np.int64), int(n_probe), n_far)


# ---- the algorithm --------------------------------------------------------------------

def regroup(coarse, fine, cells):
    """Cells again after an update: each coarse centre moves to the mean of its fine
    centres, and each fine centre goes to the cell of its nearest coarse centre.

    Centres move between passes (and empty clusters are relocated to far rows anywhere);
    the probes find a centre only through its cell, so it must stay in the cell its
    rows are near. Costs ``k x kc`` distances on the client.
    """
    kc = coarse.shape[0]
    cell_of = np.repeat(np.arange(kc), np.diff(cells))
    count = np.bincount(cell_of, minlength=kc)
    sums = np.zeros_like(coarse)
    np.add.at(sums, cell_of, fine)
    coarse = coarse.copy()
    live = count > 0
    coarse[live] = sums[live] / count[live, None]
    lab = nearest_center(fine, coarse)[0]
    order = np.argsort(lab, kind="stable")
    cells = np.searchsorted(lab[order], np.arange(kc + 1)).astype(np.int64)
    return coarse, np.ascontiguousarray(fine[order]), cells


def _probe_aggs(state, n_far):
    return {"lloyd": probe_aggregation(state["coarse"], state["centers"], state["cells"],
                                       state["n_probe"], n_far)}


def _regrouped(step, state, res):
    state = step(state, res)
    coarse, fine, cells = regroup(state["coarse"], state["centers"], state["cells"])
    return {**state, "centers": fine, "coarse": coarse, "cells": cells}


def probe_recall(rows, coarse, fine, cells, n_probe, exact=None):
    """How much the probes lose on ``rows``: the share of rows whose probed cells miss
    their exact nearest centre, and their summed squared distance over the exact one's,
    minus one. ``exact``: the rows' exact nearest squared distances, if known.

    Lloyd iterations compound the loss: on a nearly uniform cloud (n=1M, 64 features,
    k=16,384) an excess of 0.7% (4 probes) and 0.4% (16) at the final centres went with
    inertia 5.8% and 3.4% above exact Lloyd's; on clustered data none, and inertia at
    exact Lloyd's.
    """
    if rows is None or rows.shape[0] == 0:
        return None, None
    _, d_probe = probe_nearest(rows, coarse, fine, cells, n_probe)
    d_exact = nearest_center(rows, fine)[1] if exact is None else exact
    miss = float(np.mean(d_probe > d_exact))
    total = float(d_exact.sum())
    return miss, (float(d_probe.sum()) / total - 1.0) if total > 0 else 0.0


def choose_n_probe(rows, coarse, fine, cells, probes=AUTO_PROBES, target=AUTO_EXCESS):
    """``n_probe="auto"``: the smallest of ``probes`` whose :func:`probe_recall` excess on
    ``rows`` is at most ``target`` (the largest tried if none is); the number of cells
    when it reaches them (the exact search). :data:`DEFAULT_N_PROBE` without rows."""
    kc = coarse.shape[0]
    if rows is None or rows.shape[0] == 0:
        return int(min(DEFAULT_N_PROBE, kc))
    exact = nearest_center(rows, fine)[1]
    for p in probes:
        if p >= kc:
            return int(kc)
        if probe_recall(rows, coarse, fine, cells, p, exact)[1] <= target:
            return int(p)
    return int(probes[-1])


def group_by_cell(centers, kc, seed):
    """Coarse centres for given fine centres (an init array), and the fine centres
    reordered by cell: in-memory k-means of the centres themselves."""
    C = np.asarray(centers, dtype=np.float64)
    rng = np.random.default_rng([seed, 13])
    coarse, _ = kmeans_plusplus(C, kc, np.ones(C.shape[0]), rng)
    coarse = lloyd_in_memory(C, None, coarse, COARSE_ITER)
    lab = nearest_center(C, coarse)[0]
    order = np.argsort(lab, kind="stable")
    cells = np.searchsorted(lab[order], np.arange(kc + 1)).astype(np.int64)
    return coarse, C[order], cells


class HierarchicalLloyd(Lloyd):
    """One two-level k-means run (see the module docstring).

    The state is :class:`Lloyd`'s plus ``coarse`` (kc x d) and ``cells`` (kc + 1
    offsets of each cell's centres); the result adds both.
    """

    def __init__(self, n_clusters, *, n_probe=DEFAULT_N_PROBE, n_coarse=None,
                 max_points_per_centroid=MAX_POINTS_PER_CENTROID, **lloyd_opts):
        super().__init__(n_clusters, **lloyd_opts)
        if callable(self.init) and not isinstance(self.init, np.ndarray):
            raise DclustValueError(
                "algorithm='hierarchical' takes init='k-means||', 'k-means++', 'random' or an "
                "array of shape (n_clusters, n_features), not a callable; pass "
                "algorithm='lloyd' to use a callable init.")
        self.n_probe = n_probe if n_probe == "auto" else int(n_probe)
        self.n_coarse = int(n_coarse or coarse_clusters(self.n_clusters))
        self.max_points_per_centroid = int(max_points_per_centroid)
        self._recall_rows = None

    def init_state(self, session):
        k, kc, seed = self.n_clusters, self.n_coarse, self.seed
        if isinstance(self.init, np.ndarray):
            coarse, fine, cells = group_by_cell(self.init, kc, seed)
        else:
            n, d = session.n_samples, session.n_features
            m = int(min(n, max(50_000, 64 * kc)))
            sample = sample_rows(session, m, seed, name="kmeans-coarse-sample")
            coarse = seed_centers(sample, m, n, kc, self.init, seed, dtype=session.work_dtype,
                                  n_features=d, oversampling_factor=self.oversampling_factor,
                                  n_rounds=self.n_init_rounds)
            rows = np.ascontiguousarray(sample["x"][:m], dtype=session.work_dtype)
            # Its first rows are a uniform sample too (probe_recall at the end).
            self._recall_rows = rows[:RECALL_ROWS]
            w = np.asarray(sample["weight"][:m], dtype=np.float64) if m >= n else None
            tol_abs = _tolerance(session.ensure_data_stats(), self.tol)
            coarse = lloyd_in_memory(rows, w, coarse, COARSE_ITER, tol_abs)
            counts = session.run_pass({"cells": cell_count_aggregation(coarse)},
                                      name="kmeans-cells")["cells"]
            alloc = allocate_centres(k, counts["weight"], counts["count"])
            fine, cells = fit_cells(session, coarse, alloc, counts["count"],
                                    "random" if self.init == "random" else "k-means++", seed,
                                    tol_abs=tol_abs,
                                    max_points_per_centroid=self.max_points_per_centroid)
        if self.n_probe == "auto":
            n_probe = choose_n_probe(self._recall_rows, coarse, fine, cells)
        else:
            n_probe = self.n_probe
        return {**self.initial_state(fine), "coarse": coarse, "cells": cells,
                "n_probe": int(n_probe)}

    def _with_probe(self, state):
        # A checkpoint written before the state held n_probe: the given
        # count, or the default for "auto".
        if "n_probe" in state:
            return state
        fixed = DEFAULT_N_PROBE if self.n_probe == "auto" else self.n_probe
        return {**state, "n_probe": int(fixed)}

    def iterations(self, session, state, n):
        return super().iterations(session, self._with_probe(state), n)

    def iteration_functions(self, session):
        make_aggs, step = super().iteration_functions(session)
        return (partial(_probe_aggs, n_far=N_FAR),
                partial(_regrouped, step))

    def aggregation(self, state, n_far=N_FAR):
        return _probe_aggs(state, n_far)["lloyd"]

    def finalize(self, session, state):
        state = self._with_probe(state)
        out = super().finalize(session, state)
        miss, excess = probe_recall(self._recall_rows, state["coarse"], state["centers"],
                                    state["cells"], state["n_probe"])
        return {**out, "coarse": state["coarse"], "cells": state["cells"],
                "n_probe": state["n_probe"], "probe_miss": miss, "probe_excess": excess}

