"""k-medoids as passes: in-memory FasterPAM, distributed FastCLARA and full-data refinement.

``method="fasterpam"`` builds the full ``n x n`` dissimilarity matrix on the client and
runs the reference FasterPAM of the ``kmedoids`` package on it; it refuses data whose
matrix does not fit the memory budget (:func:`memory_budget`).

``method="clara"`` (FastCLARA, Schubert & Rousseeuw 2021) never holds more than a sample:

1. One pass draws a pool of ``n_sampling_iter * n_sampling`` rows with their global row
   numbers (A-Res reservoirs seeded by ``(seed, chunk)``, so a recomputed chunk draws the
   same rows) and checks the data for NaN and inf on the way.
2. Each sample is solved with FasterPAM on the client: the first from a BUILD start, the
   next ones from the best medoids so far, which are added to the sample.
3. Each sample's medoids are scored on the full data in one pass (a tree reduction of the
   total deviation). Later samples are solved twice, from the carried medoids and from a
   fresh BUILD start, and both results are scored in the same pass (the kernel computes
   distances to the union of the sets once). Only full-data costs are compared; the best
   set is kept.
4. Refinement passes then move medoids using every row. A pass assigns every row to its
   nearest medoid and, for each cluster ``c`` and each of its candidate medoids ``x``,
   reduces ``S(c, x) = sum_{o in c} d(o, x)``. Each medoid moves to the candidate with
   the smallest ``S`` when that is smaller than its own sum. Since reassigning rows to the
   nearest new medoid cannot cost more, the loss never increases; the pass also returns the
   next candidates per cluster (the members nearest their medoid and a random sample of
   members, of which the most central are kept).
5. Moving medoids within their clusters cannot repair a structural error (two medoids in
   one blob, none in another). Passes whose candidates are fresh (the previous pass moved
   nothing, so this one may be the last) also sum FastPAM1's swap gains over all rows for
   ``n_swap`` global candidates (rows drawn with probability proportional to their
   distance to their medoid): replacing medoid ``i`` by candidate ``j`` changes the loss
   by exactly ``shared[j] + accum[i, j]``. When no medoid moves, the best improving swap
   is made. Refinement stops after a pass with fresh candidates in which neither a move
   nor a swap lowers the loss (that pass's loss is the final loss), or after
   ``max_iter`` passes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from .._format import fmt_bytes
from ..exceptions import DataError, DclustValueError
from ..kernels.datastats import count_nonfinite
from ..kernels.medoids import (
    medoid_cost_partial,
    medoid_refine_partial,
    per_cluster_top,
    per_cluster_top_combine,
)
from ..kernels.metrics import pairwise_distances
from ..reductions.engine import Aggregation
from ..reductions.monoids import sum_combine
from ..runtime.memory import memory_budget
from .datachecks import nonfinite_message
from .sampling import sample_rows
from .session import Algorithm

__all__ = [
    "KMedoidsResult",
    "memory_budget",
    "fasterpam_bytes",
    "check_fasterpam_fits",
    "fasterpam_fit",
    "clara_fit",
    "Clara",
    "default_n_sampling",
    "cost_aggregation",
    "refine_aggregation",
    "N_NEAR",
    "N_RANDOM",
    "N_SWAP",
]

# Candidates per cluster carried from one refinement pass to the next.
N_NEAR = 16
N_RANDOM = 16
# Swap candidates (rows drawn in proportion to their distance to their medoid) scored
# against every medoid in the passes that may be the last.
N_SWAP = 32
# Members sampled per cluster each pass, of which the N_RANDOM most central become candidates.
RANDOM_POOL = 4
# A medoid moves only when a candidate improves its cluster's sum by more than this
# fraction: smaller differences are rounding, and acting on them could cycle.
_REL_GAIN = 1e-9


@dataclass
class KMedoidsResult:
    medoid_rows: np.ndarray
    medoids: np.ndarray
    loss: float
    n_iter: int
    converged: bool
    n_passes: int
    clara_loss: float = math.nan
    losses: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def default_n_sampling(n_clusters):
    """FastCLARA's sample size, ``80 + 4 k``."""
    return 80 + 4 * int(n_clusters)


def fasterpam_bytes(n_samples):
    """Memory the in-memory FasterPAM needs: the float64 ``n x n`` matrix."""
    return 8 * int(n_samples) ** 2


def check_fasterpam_fits(n_samples, max_memory=None):
    """Raise when the ``n x n`` matrix would not fit the memory budget."""
    need = fasterpam_bytes(n_samples)
    budget = memory_budget(max_memory)
    if need > budget:
        why = ("max_memory" if max_memory is not None else "half the memory available on this "
               "machine")
        raise DclustValueError(
            f"method='fasterpam' needs the full {n_samples:,} x {n_samples:,} dissimilarity "
            f"matrix, {fmt_bytes(need)} as float64, more than the memory budget of "
            f"{fmt_bytes(budget)} ({why}). Use method='clara', which works on samples and "
            "passes over the data on the cluster, or raise max_memory if the memory is there."
        )
    return need


def _solve(D, k, init, max_iter, seed=None):
    """FasterPAM on the matrix ``D`` from ``init`` ("build", "random" or positions)."""
    import kmedoids

    if isinstance(init, str) and init == "build":
        # BUILD stops early when no further medoid lowers the loss (duplicate or constant
        # data); the missing medoids are filled with the first rows not chosen yet.
        init = np.asarray(kmedoids.pam_build(D, int(k)).medoids, dtype=np.int64)
        if init.shape[0] < k:
            rest = np.setdiff1d(np.arange(D.shape[0]), init)[: k - init.shape[0]]
            init = np.concatenate([init, rest])
    if isinstance(init, np.ndarray):
        res = kmedoids.fasterpam(D, init.astype(np.uintp), max_iter=max_iter, n_cpu=1)
    else:
        res = kmedoids.fasterpam(D, int(k), max_iter=max_iter, init=init,
                                 random_state=None if init == "build" else seed, n_cpu=1)
    return np.asarray(res.medoids, dtype=np.int64), float(res.loss), int(res.n_iter)


def fpam_seed(seed):
    """The 31-bit seed handed to ``kmedoids.fasterpam`` for a dclust seed."""
    return int(seed) % (2**31 - 1)


def fasterpam_fit(X, n_clusters, *, metric="euclidean", max_iter=100, seed=0, max_memory=None):
    """In-memory FasterPAM on the full dissimilarity matrix of a NumPy array.

    The start is ``kmedoids``' random initialisation with ``fpam_seed(seed)``, so the
    result equals ``kmedoids.fasterpam(D, k, init="random", random_state=fpam_seed(seed),
    n_cpu=1)`` on the same matrix.

    Returns
    -------
    KMedoidsResult
    """
    t0 = time.perf_counter()
    n = X.shape[0]
    check_fasterpam_fits(n, max_memory)
    n_bad, row = count_nonfinite(X)
    if n_bad:
        raise DataError(nonfinite_message(
            n_bad, f"row {row:,}", fix="Clean the data first, for example keep the rows where "
            "np.isfinite(X).all(axis=1)."))
    X64 = np.ascontiguousarray(X, dtype=np.float64)
    D = pairwise_distances(X64, X64, metric)
    t_matrix = time.perf_counter() - t0
    rows, loss, n_iter = _solve(D, n_clusters, "random", max_iter, fpam_seed(seed))
    del D
    return KMedoidsResult(
        medoid_rows=rows, medoids=X64[rows], loss=loss, n_iter=n_iter,
        converged=n_iter < max_iter, n_passes=0, losses=[loss],
        timings={"matrix": t_matrix, "total": time.perf_counter() - t0},
    )


# ---- aggregations --------------------------------------------------------------------------
def _cost_chunk(X, w, ctx, medoids, sets, metric):
    if w is not None:  # pragma: no cover - k-medoids passes carry no weights
        raise NotImplementedError("k-medoids does not take sample weights")
    return medoid_cost_partial(X, _like(X, medoids), sets, metric)


def cost_aggregation(medoid_sets, metric):
    """Total deviation of several medoid sets in one pass.

    Parameters
    ----------
    medoid_sets : list of ndarray of shape (n_clusters, n_features)
    metric : str

    Returns the aggregation; its result is ``{"cost": (n_sets,)}``.
    """
    union, sets = _union(medoid_sets)
    return Aggregation("kmedoids-cost", _cost_chunk, partial(sum_combine, keys=("cost",))).bind(
        union, sets, metric)


def _union(medoid_sets):
    """Distinct medoid rows over several sets, and each set as indices into them."""
    stacked = np.concatenate([np.asarray(m, dtype=np.float64) for m in medoid_sets])
    union, inverse = np.unique(stacked, axis=0, return_inverse=True)
    k = medoid_sets[0].shape[0]
    return np.ascontiguousarray(union), inverse.reshape(len(medoid_sets), k).astype(np.int64)


def _like(X, A):
    """``A`` (NumPy) in the array namespace of the chunk ``X`` (CuPy chunks get CuPy state)."""
    if type(X).__module__.startswith("cupy"):  # pragma: no cover - GPU only
        import cupy

        return cupy.asarray(A)
    return A


def _refine_chunk(X, w, ctx, medoids, medoid_rows, candidates, candidate_ok, swap_candidates,
                  metric, n_near, n_random, seed, iteration, n_swap):
    if w is not None:  # pragma: no cover
        raise NotImplementedError("k-medoids does not take sample weights")
    return medoid_refine_partial(
        X, _like(X, medoids), medoid_rows, _like(X, candidates), candidate_ok, metric,
        n_near=n_near, n_random=n_random, seed=seed, iteration=iteration,
        block_id=ctx.block_id, row_offset=ctx.row_offset,
        swap_candidates=None if swap_candidates is None else _like(X, swap_candidates),
        n_swap=n_swap,
    )


def _refine_combine(parts, n_near, n_random, n_swap):
    keys = ("loss", "size", "own", "cand_sum")
    if "swap_shared" in parts[0]:
        keys += ("swap_shared", "swap_accum")
    out = sum_combine(parts, keys)
    out["near"] = per_cluster_top_combine([p["near"] for p in parts], n_near)
    out["random"] = per_cluster_top_combine([p["random"] for p in parts], n_random)
    if n_swap:
        out["swap_next"] = per_cluster_top_combine([p["swap_next"] for p in parts], n_swap)
    return out


def refine_aggregation(medoids, medoid_rows, candidates, candidate_ok, metric, *, seed, iteration,
                       n_near=N_NEAR, n_random=N_RANDOM, swap_candidates=None, n_swap=0):
    """One refinement pass's statistics (see :func:`dclust.kernels.medoids.medoid_refine_partial`)."""
    if swap_candidates is not None:
        swap_candidates = np.ascontiguousarray(swap_candidates, dtype=np.float64)
    return Aggregation(
        "kmedoids-refine", _refine_chunk,
        partial(_refine_combine, n_near=n_near, n_random=n_random, n_swap=n_swap),
    ).bind(
        np.ascontiguousarray(medoids, dtype=np.float64), np.asarray(medoid_rows, dtype=np.int64),
        np.ascontiguousarray(candidates, dtype=np.float64), np.asarray(candidate_ok, dtype=bool),
        swap_candidates, metric, n_near, n_random, seed, iteration, n_swap,
    )


# ---- CLARA ---------------------------------------------------------------------------------
def _sample_positions(pool_size, n_sampling, n_samples_iter, rng):
    """Positions in the pool of each sample: disjoint slices when the pool allows."""
    if pool_size >= n_sampling * n_samples_iter:
        return [np.arange(i * n_sampling, (i + 1) * n_sampling) for i in range(n_samples_iter)]
    return [np.sort(rng.choice(pool_size, n_sampling, replace=False)) for _ in range(n_samples_iter)]


def _candidates(groups, medoid_rows, k, size, d):
    """Candidate arrays (k, size, d), their rows and mask, from per-cluster groups.

    ``groups`` is a list of per-cluster-top dicts; rows already chosen for the cluster,
    empty slots and current medoids are skipped.
    """
    cand = np.zeros((k, size, d))
    rows = np.full((k, size), -1, dtype=np.int64)
    taken = set(int(r) for r in medoid_rows)
    for c in range(k):
        j = 0
        seen = set()
        for g in groups:
            for r, x in zip(g["row"][c], g["x"][c]):
                r = int(r)
                if j >= size:
                    break
                if r < 0 or r in taken or r in seen:
                    continue
                seen.add(r)
                cand[c, j] = x
                rows[c, j] = r
                j += 1
    return cand, rows, rows >= 0


def _pool_candidates(pool_x, pool_rows, medoids, medoid_rows, metric, seed, n_near, n_random):
    """First refinement candidates: the CLARA pool's rows, grouped by nearest medoid."""
    k, d = medoids.shape
    D = pairwise_distances(pool_x, medoids, metric)
    lab = np.argmin(D, axis=1)
    dist = D[np.arange(D.shape[0]), lab]
    u = np.random.default_rng([seed, 29]).random(lab.shape[0])
    keep = ~np.isin(pool_rows, medoid_rows)
    lab, rows, xs = lab[keep], pool_rows[keep], pool_x[keep]
    near = per_cluster_top(lab, -dist[keep], rows, xs, k, n_near)
    rnd = per_cluster_top(lab, u[keep], rows, xs, k, n_random)
    return _candidates([near, rnd], medoid_rows, k, n_near + n_random, d)


class Clara(Algorithm):
    """FastCLARA, then refinement passes on the full data, as one two-phase algorithm.

    Phase ``"clara"``: one iteration per sample (FasterPAM on the client, one pass
    scoring its candidate medoid sets on the full data). Phase ``"refine"``: one pass
    per iteration (see the module's docstring). The state holds the sample pool, the
    best medoids so far and the refinement's candidates, so a checkpoint after any
    iteration resumes to the same medoids.

    Parameters
    ----------
    n_clusters : int
    metric : str
    n_sampling : int, optional
        Rows per sample, medoids carried in included; default ``80 + 4 k`` (at most n).
    n_sampling_iter : int, default=5
        Samples.
    max_iter : int, default=100
        FasterPAM iterations per sample, and refinement passes.
    refine : bool, default=True
        Run the refinement passes (``False``: CLARA alone).
    seed : int
    n_near, n_random, n_swap : int
        Candidates per cluster near the medoid and central in a random sample; global
        swap candidates (0: no swaps).
    """

    name = "KMedoids"
    init_label = "sample pool"

    def __init__(self, n_clusters, *, metric="euclidean", n_sampling=None, n_sampling_iter=5,
                 max_iter=100, refine=True, seed=0, n_near=N_NEAR, n_random=N_RANDOM,
                 n_swap=N_SWAP):
        self.k = int(n_clusters)
        self.metric = metric
        self.n_sampling = n_sampling
        self.n_sampling_iter = int(n_sampling_iter)
        self.max_iter = int(max_iter)
        self.refine = bool(refine)
        self.seed = int(seed)
        self.n_near, self.n_random, self.n_swap = int(n_near), int(n_random), int(n_swap)

    # ---- CLARA ---------------------------------------------------------------------
    def init_state(self, session):
        n, k = session.n_samples, self.k
        m = min(int(self.n_sampling) if self.n_sampling is not None else default_n_sampling(k), n)
        n_iter_s = 1 if m >= n else self.n_sampling_iter
        pool = sample_rows(session, min(n, m * n_iter_s), self.seed, name="kmedoids-sample")
        pool_rows = np.asarray(pool["row"], dtype=np.int64)
        rng = np.random.default_rng([self.seed, 19])
        positions = _sample_positions(pool_rows.shape[0], m, n_iter_s, rng)
        return {"phase": "clara", "sample": 0, "m": m,
                "pool_x": np.ascontiguousarray(pool["x"], dtype=np.float64),
                "pool_rows": pool_rows, "positions": np.stack(positions),
                "best_rows": None, "best_x": None, "best_cost": math.inf, "losses": [],
                "n_iter": 0, "converged": False}

    def _clara_step(self, session, s):
        k, metric, m = self.k, self.metric, s["m"]
        pos = s["positions"][s["sample"]]
        pool_rows, pool_x = s["pool_rows"], s["pool_x"]
        best_rows, best_x, best_cost = s["best_rows"], s["best_x"], s["best_cost"]
        if best_rows is None:
            rows, xs = pool_rows[pos], pool_x[pos]
            init = "build"
        else:
            fresh = pos[~np.isin(pool_rows[pos], best_rows)][: max(m - k, 0)]
            rows = np.concatenate([best_rows, pool_rows[fresh]])
            xs = np.concatenate([best_x, pool_x[fresh]])
            init = np.arange(k)
        D = pairwise_distances(xs, xs, metric)
        # From the carried medoids (FastCLARA) and, on later samples, also from a fresh
        # BUILD start, which escapes the carried local optimum at no extra pass: every
        # candidate set of a sample is scored in the same pass.
        starts = [init] if isinstance(init, str) else [init, "build"]
        cands, seen = [], {tuple(best_rows.tolist())} if best_rows is not None else set()
        for start in starts:
            med, _, _ = _solve(D, k, start, self.max_iter)
            order = np.argsort(rows[med], kind="stable")
            key = tuple(rows[med][order].tolist())
            if key not in seen:
                seen.add(key)
                cands.append((rows[med][order], xs[med][order]))
        if cands:
            costs = session.run_pass({"cost": cost_aggregation([c[1] for c in cands], metric)},
                                     name="kmedoids-clara")["cost"]["cost"]
            for (c_rows, c_x), cost in zip(cands, costs):
                if float(cost) < best_cost:
                    best_rows, best_x, best_cost = c_rows, c_x, float(cost)
        # else: the sample gave back the best medoids, whose full-data cost is known.
        s = dict(s, best_rows=best_rows, best_x=best_x, best_cost=best_cost,
                 sample=s["sample"] + 1)
        if s["sample"] < s["positions"].shape[0]:
            return s
        s["clara_loss"] = best_cost
        s["losses"] = [best_cost]
        if not self.refine:
            return dict(s, phase="done", converged=True)
        cand, cand_rows, ok = _pool_candidates(pool_x, pool_rows, best_x, best_rows, metric,
                                               self.seed, self.n_near, self.n_random)
        swap_x, swap_rows = _pool_swap_candidates(pool_x, pool_rows, best_x, best_rows, metric,
                                                  self.seed, self.n_swap)
        return {"phase": "refine", "clara_loss": best_cost, "losses": [best_cost],
                "medoids": best_x, "medoid_rows": best_rows, "cand": cand, "cand_rows": cand_rows,
                "ok": ok, "swap_x": swap_x, "swap_rows": swap_rows, "moved": False,
                "fresh": True, "n_swaps": 0, "n_iter": 0, "converged": False,
                "best_loss": best_cost, "best_x": best_x, "best_rows": best_rows,
                "sample": s["sample"], "m": m}

    # ---- refinement ------------------------------------------------------------------
    def _refine_step(self, session, s):
        k, metric, d = self.k, self.metric, session.n_features
        medoids, medoid_rows = s["medoids"], s["medoid_rows"]
        cand, cand_rows, ok = s["cand"], s["cand_rows"], s["ok"]
        swap_x, swap_rows = s["swap_x"], s["swap_rows"]
        it = s["n_iter"]
        # Swap gains are summed only in passes that may be the last (fresh candidates):
        # medoids that are still moving would make them stale anyway.
        use_swaps = s["fresh"] and swap_x.shape[0] > 0
        agg = refine_aggregation(medoids, medoid_rows, cand, ok, metric, seed=self.seed,
                                 iteration=it, n_near=self.n_near,
                                 n_random=RANDOM_POOL * self.n_random,
                                 swap_candidates=swap_x if use_swaps else None, n_swap=self.n_swap)
        res = session.run_pass({"refine": agg}, name="kmedoids-refine")["refine"]
        s = dict(s, n_iter=it + 1)
        pass_loss = float(res["loss"])
        s["losses"] = list(s["losses"]) + [pass_loss]
        if pass_loss < s["best_loss"]:
            s.update(best_loss=pass_loss, best_x=medoids, best_rows=medoid_rows)
        new_rows, new_x, n_moved = _move(medoids, medoid_rows, res, cand, cand_rows, ok)
        swapped = None
        if not n_moved and use_swaps:
            swapped = _best_swap(res, swap_rows, pass_loss)
            if swapped is not None:
                i, j = swapped
                new_rows[i], new_x[i] = swap_rows[j], swap_x[j]
                n_moved = 1
                s["n_swaps"] += 1
        s.update(moved=n_moved > 0, pass_loss=pass_loss, n_moved=n_moved)
        if not s["moved"] and s["fresh"]:
            return dict(s, converged=True, phase="done")
        # Candidates gathered around a medoid that has since moved are stale: a pass
        # that moves nothing ends the refinement only if every cluster's were fresh.
        s["fresh"] = not s["moved"]
        central = _most_central(res["random"], self.n_random, metric)
        cand, cand_rows, ok = _candidates([res["near"], central], new_rows, k,
                                          self.n_near + self.n_random, d)
        if swapped is not None:
            ok[swapped[0]] = False  # they surround the medoid that was swapped out
        if self.n_swap:
            swap_x, swap_rows = _swap_pool(res["swap_next"], new_rows)
        s.update(medoids=new_x, medoid_rows=new_rows, cand=cand, cand_rows=cand_rows, ok=ok,
                 swap_x=swap_x, swap_rows=swap_rows)
        if s["n_iter"] >= self.max_iter:
            s["phase"] = "done"
        return s

    def one_iteration(self, session, state):
        if state["phase"] == "clara":
            return self._clara_step(session, state)
        return self._refine_step(session, state)

    def converged(self, state):
        return state["phase"] == "done"

    def report(self, state):
        if state["phase"] == "clara" or "pass_loss" not in state:
            return "sample", state["sample"], {"loss": float(state.get("best_cost",
                                                                       state.get("clara_loss")))}
        return "refine", state["n_iter"], {"loss": state["pass_loss"], "moved": state["n_moved"],
                                           "swaps": state["n_swaps"]}

    def finalize(self, session, s):
        if "medoids" not in s:  # CLARA alone
            return {"medoid_rows": s["best_rows"], "medoids": s["best_x"], "loss": s["best_cost"],
                    "n_iter": 0, "converged": True, "clara_loss": s["clara_loss"],
                    "losses": s["losses"]}
        best_loss, best_x, best_rows = s["best_loss"], s["best_x"], s["best_rows"]
        losses = list(s["losses"])
        if s["moved"]:
            # max_iter reached right after a move: score the last medoids (one more pass).
            cost = float(session.run_pass({"cost": cost_aggregation([s["medoids"]], self.metric)},
                                          name="kmedoids-cost")["cost"]["cost"][0])
            losses.append(cost)
            if cost < best_loss:
                best_loss, best_x, best_rows = cost, s["medoids"], s["medoid_rows"]
        return {"medoid_rows": best_rows, "medoids": best_x, "loss": best_loss,
                "n_iter": s["n_iter"], "converged": bool(s["converged"]),
                "clara_loss": s["clara_loss"], "losses": losses}


def clara_fit(X, n_clusters, *, split_every=None, progress=None, **params):
    """FastCLARA and refinement over a row-chunked dask array, read as given.

    ``params`` are :class:`Clara`'s. Returns a :class:`KMedoidsResult`.
    """
    from .session import FitSession

    session = FitSession(X, None, algorithm="KMedoids", split_every=split_every,
                         progress=progress or False, place=False).open(random_state=0)
    res = session.run(lambda run: Clara(n_clusters, **params))
    return _result(res, session.n_passes)


def _result(res, n_passes):
    return KMedoidsResult(
        medoid_rows=np.asarray(res["medoid_rows"], dtype=np.int64), medoids=res["medoids"],
        loss=float(res["loss"]), n_iter=int(res["n_iter"]), converged=bool(res["converged"]),
        n_passes=int(n_passes), clara_loss=float(res.get("clara_loss", math.nan)),
        losses=list(res.get("losses", [])),
    )


def _swap_pool(group, medoid_rows):
    """Swap candidates (coordinates, rows) from a one-group top dict, without medoids."""
    rows = group["row"][0]
    keep = (rows >= 0) & ~np.isin(rows, medoid_rows)
    return np.ascontiguousarray(group["x"][0][keep]), rows[keep]


def _pool_swap_candidates(pool_x, pool_rows, medoids, medoid_rows, metric, seed, n_swap):
    """First swap candidates: pool rows drawn with probability proportional to their
    dissimilarity to the nearest medoid (A-Res keys)."""
    if not n_swap:
        return np.zeros((0, medoids.shape[1])), np.zeros(0, np.int64)
    dn = pairwise_distances(pool_x, medoids, metric).min(axis=1)
    u = np.random.default_rng([seed, 31]).random(dn.shape[0])
    with np.errstate(divide="ignore"):
        key = np.where(dn > 0, np.log(np.maximum(u, np.finfo(float).tiny)) / dn, -np.inf)
    key[np.isin(pool_rows, medoid_rows)] = -np.inf
    top = per_cluster_top(np.zeros(dn.shape[0], np.int64), key, pool_rows, pool_x, 1, n_swap)
    top["row"][0][~np.isfinite(top["key"][0])] = -1
    return _swap_pool(top, medoid_rows)


def _best_swap(res, swap_rows, loss):
    """``(medoid, candidate)`` of the swap that lowers the loss most, or None."""
    if "swap_shared" not in res or not swap_rows.shape[0]:
        return None
    delta = res["swap_shared"][None, :] + res["swap_accum"]  # (k, c)
    i, j = np.unravel_index(int(np.argmin(delta)), delta.shape)
    if delta[i, j] < -_REL_GAIN * max(loss, np.finfo(float).tiny):
        return int(i), int(j)
    return None


def _most_central(group, size, metric):
    """The ``size`` members of each cluster's random sample with the smallest sum of
    dissimilarities to the rest of the sample: estimates of the cluster's medoid."""
    key = np.full((group["row"].shape[0], size), -np.inf)
    row = np.full_like(key, -1, dtype=np.int64)
    x = np.zeros((key.shape[0], size, group["x"].shape[2]))
    for c in range(key.shape[0]):
        valid = np.flatnonzero(group["row"][c] >= 0)
        if not valid.size:
            continue
        xs = group["x"][c][valid]
        sums = pairwise_distances(xs, xs, metric).sum(axis=1)
        order = np.lexsort((group["row"][c][valid], sums))[:size]
        t = order.shape[0]
        key[c, :t] = -sums[order]
        row[c, :t] = group["row"][c][valid][order]
        x[c, :t] = xs[order]
    return {"key": key, "row": row, "x": x}


def _move(medoids, medoid_rows, res, cand, cand_rows, ok):
    """Move each medoid to its best candidate when that lowers its cluster's sum."""
    own, cand_sum = res["own"], res["cand_sum"]
    new_x, new_rows = medoids.copy(), medoid_rows.copy()
    score = np.where(ok, cand_sum, np.inf)
    gains = []
    for c in range(medoids.shape[0]):
        if res["size"][c] == 0 or not ok[c].any():
            continue
        j = int(np.argmin(score[c]))
        gain = own[c] - score[c, j]
        if gain > _REL_GAIN * max(own[c], np.finfo(float).tiny):
            gains.append((gain, c, j))
    used = set(int(r) for r in medoid_rows)
    n_moved = 0
    for gain, c, j in sorted(gains, key=lambda g: -g[0]):
        r = int(cand_rows[c, j])
        if r in used:  # never two medoids on one row (guard; candidates are disjoint)
            continue
        used.discard(int(new_rows[c]))
        used.add(r)
        new_rows[c] = r
        new_x[c] = cand[c, j]
        n_moved += 1
    return new_rows, new_x, n_moved
