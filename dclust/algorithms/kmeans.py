"""k-means as passes: sampling init (k-means||, k-means++, random) and Lloyd iterations.

Every function here drives passes of :mod:`dclust.reductions.engine`; one pass is one
computation on the cluster, and only the small merged statistics reach the client.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..exceptions import DataError, DclustValueError, EmptyClusterWarning
from ..kernels.datastats import data_stats_combine, data_stats_partial
from ..kernels.lloyd import lloyd_partial
from ..kernels.sampling import reservoir_partial
from ..kernels.seeding import kmeans_parallel, kmeans_plusplus
from ..reductions.engine import Aggregation, row_offsets, run_pass
from ..reductions.monoids import fields_combine, top_combine
from ..runtime.progress import Progress

__all__ = [
    "KMeansResult",
    "kmeans_fit",
    "lloyd_aggregation",
    "data_stats_aggregation",
    "sample_rows",
    "check_data_stats",
    "check_init_array",
    "default_init_size",
    "safe_magnitude",
    "work_precision",
    "N_FAR",
]

# Far rows kept per pass for relocating empty clusters.
N_FAR = 32

_LLOYD_SUMS = ("sums", "weights", "inertia")
_FAR_KEYS = ("far_dist", "far_row", "far_x", "far_label", "far_weight")


def _lloyd_chunk(X, w, ctx, centers, n_far):
    return lloyd_partial(X, centers, w, n_far=n_far, row_offset=ctx.row_offset)


def _lloyd_combine(parts, n_far):
    return fields_combine(parts, sums=_LLOYD_SUMS, top=(n_far, "far_dist", _FAR_KEYS, "far_row"))


class _LloydCombine:
    """Picklable ``combine`` bound to a number of far rows."""

    def __init__(self, n_far):
        self.n_far = n_far

    def __call__(self, parts):
        return _lloyd_combine(parts, self.n_far)


def lloyd_aggregation(centers, n_far=N_FAR):
    """The fused Lloyd statistics of one pass, for the given centres."""
    n_far = int(min(n_far, centers.shape[0]))
    return Aggregation("kmeans-lloyd", _lloyd_chunk, _LloydCombine(n_far)).bind(
        np.ascontiguousarray(centers, dtype=np.float64), n_far
    )


def _data_chunk(X, w, ctx):
    return data_stats_partial(X, w, row_offset=ctx.row_offset)


def _data_combine(parts):
    return data_stats_combine(parts)


def data_stats_aggregation():
    """Finiteness, weights, per-feature moments and the largest magnitude, folded into a first pass."""
    return Aggregation("data-stats", _data_chunk, _data_combine)


def safe_magnitude(dtype, n_features) -> float:
    """Largest ``|x|`` for which the kernels' ``||c||^2 - 2 x.c`` cannot overflow ``dtype``.

    With every value and centre coordinate at most ``M`` in magnitude, each term is at
    most ``2 d M^2``; a margin of 4 covers their sum and the row norms of ``transform``.
    """
    return math.sqrt(float(np.finfo(dtype).max) / (8.0 * max(int(n_features), 1)))


def work_precision(data_stats, X):
    """The dtype the passes compute in: ``X``'s, or float64 when float32 squares would overflow.

    float32 data with values beyond :func:`safe_magnitude` (about 1e18) would give
    infinite distances and wrong labels in float32 arithmetic; they are clustered in
    float64 instead (each chunk is converted on the fly, the data is read once).
    """
    dtype = np.dtype(X.dtype)
    if dtype == np.float32 and data_stats.get("absmax", 0.0) > safe_magnitude(dtype, X.shape[1]):
        return np.dtype(np.float64)
    return dtype


class _SampleChunk:
    def __init__(self, m, seed, n_total):
        self.m, self.seed, self.n_total = m, seed, n_total

    def __call__(self, X, w, ctx):
        cap = min(self.m, int(2 * self.m * ctx.n_rows / max(self.n_total, 1)) + 64 + self.m // 64)
        return reservoir_partial(
            X, w, self.m, self.seed, block_id=ctx.block_id, row_offset=ctx.row_offset, cap=cap
        )


class _SampleCombine:
    def __init__(self, m):
        self.m = m

    def __call__(self, parts):
        return top_combine(parts, self.m, "key", ("key", "row", "x", "weight"), "row")


def sample_aggregation(m, seed, n_total):
    """A weighted sample of ``m`` rows without replacement (A-Res, seeded per chunk)."""
    return Aggregation("sample-rows", _SampleChunk(m, seed, n_total), _SampleCombine(m))


def check_data_stats(stats, X):
    """Raise on non-finite values or bad weights found by the first pass."""
    offsets = row_offsets(X.chunks[0])
    if stats["n_nonfinite"]:
        row = int(stats["first_nonfinite"])
        chunk = int(np.searchsorted(offsets, row, side="right") - 1)
        raise DataError(
            f"X contains {stats['n_nonfinite']:,} non-finite values, NaN or inf (first in chunk {chunk}, "
            f"row {row:,}). Clean the data first, for example keep the rows where "
            "da.isfinite(X).all(axis=1)."
        )
    if stats["n_bad_weight"]:
        row = int(stats["first_bad_weight"])
        raise DclustValueError(
            f"sample_weight has {stats['n_bad_weight']:,} negative or non-finite values "
            f"(first at row {row:,}); weights must be finite and >= 0."
        )
    absmax = float(stats.get("absmax", 0.0))
    limit = safe_magnitude(np.float64, X.shape[1])
    if absmax > limit:
        raise DataError(
            f"X holds values as large as {absmax:.3g} in magnitude; with {X.shape[1]} feature(s) "
            f"squared distances overflow float64 beyond about {limit:.3g}, so every distance would "
            f"be infinite. Rescale the data first, for example X / {10.0 ** math.floor(math.log10(absmax)):.0e}."
        )
    if stats["weight_sum"] <= 0:
        raise DclustValueError(
            "sample_weight is zero everywhere; at least one row needs a positive weight. "
            "Pass sample_weight=None to weigh every row equally."
        )


def default_init_size(n_samples, n_clusters):
    """Rows the seeding runs on: all of them for small data, else a uniform sample.

    k-means|| costs about ``2 * n_rounds`` Lloyd iterations over the rows it runs on;
    on a sample of ``max(50000, 32 k)`` rows (at least 32 per cluster, the size FAISS
    and cuML also find enough for seeding) it stays below a few full-data iterations.
    """
    return int(min(n_samples, max(50_000, 32 * n_clusters)))


def sample_rows(X, w, m, seed, *, split_every=None, with_data_stats=True):
    """One pass drawing ``m`` rows (weighted, without replacement); also checks the data.

    Returns
    -------
    sample : dict with ``x`` (rows), ``row`` (global indices), ``weight``.
    data_stats : dict or None
    """
    aggs = {"sample": sample_aggregation(m, seed, X.shape[0])}
    if with_data_stats:
        aggs["data"] = data_stats_aggregation()
    res = run_pass(X, aggs, sample_weight=w, split_every=split_every, name="kmeans-sample")
    if with_data_stats:
        check_data_stats(res["data"], X)
    return res["sample"], res.get("data")


@dataclass
class KMeansResult:
    centers: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    n_passes: int
    init_inertia: float
    n_nonempty: int
    data_stats: dict = field(repr=False, default=None)
    timings: dict = field(default_factory=dict)


def _tolerance(data_stats, tol):
    if tol == 0:
        return 0.0
    var = data_stats["m2"] / max(data_stats["count"], 1)
    return float(np.mean(var) * tol)


def check_init_array(init, n_clusters, n_features):
    """An init array as float64 of shape (n_clusters, n_features), finite, or a clear error."""
    C = np.array(init, dtype=np.float64)
    if C.shape != (n_clusters, n_features):
        raise DclustValueError(
            f"init has shape {C.shape}; an init array must have shape (n_clusters, n_features) "
            f"= ({n_clusters}, {n_features})."
        )
    if not np.isfinite(C).all():
        raise DclustValueError("init contains NaN or infinite values; every initial centre must be finite.")
    return C


def init_centers(X, w, n_clusters, init, seed, *, init_size=None, oversampling_factor=2.0,
                 n_rounds=5, split_every=None):
    """Initial centres, plus the data statistics when the init made the first pass.

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features), float64
    data_stats : dict or None
    n_passes : int
    """
    n, d = X.shape
    if not isinstance(init, str):
        return check_init_array(init, n_clusters, d), None, 0
    rng = np.random.default_rng([seed, 7])
    if init == "random":
        m = n_clusters
    else:
        m = int(init_size) if init_size is not None else default_init_size(n, n_clusters)
        m = max(min(m, n), n_clusters)
    sample, data_stats = sample_rows(X, w, m, seed, split_every=split_every)
    rows = np.ascontiguousarray(sample["x"], dtype=work_precision(data_stats, X))
    if rows.shape[0] < n_clusters:
        raise DclustValueError(
            f"Only {rows.shape[0]} rows have a positive sample_weight, fewer than "
            f"n_clusters={n_clusters}."
        )
    # A sample smaller than X is drawn in proportion to the weights, so its rows count
    # once each; when it is all of X the weights must be applied here instead.
    ones = np.asarray(sample["weight"]) if m >= n else np.ones(rows.shape[0])
    if init == "random":
        C = rows[:n_clusters].astype(np.float64)
    elif init == "k-means++":
        C, _ = kmeans_plusplus(rows, n_clusters, ones, rng)
    else:
        C, _ = kmeans_parallel(
            rows, n_clusters, ones, rng, oversampling_factor=oversampling_factor, n_rounds=n_rounds
        )
    return np.ascontiguousarray(C, dtype=np.float64), data_stats, 1


def _update_centers(stats, centers):
    """New centres from Lloyd statistics, moving empty clusters to far rows (as scikit-learn)."""
    sums = stats["sums"].copy()
    wsum = stats["weights"].copy()
    empty = np.flatnonzero(wsum <= 0)
    moved = 0
    if empty.size:
        far_x, far_w, far_lab = stats["far_x"], stats["far_weight"], stats["far_label"]
        for j, new_id in enumerate(empty[: far_x.shape[0]]):
            x, wf, old = far_x[j], far_w[j], int(far_lab[j])
            if wf <= 0:
                continue
            sums[old] -= x * wf
            wsum[old] -= wf
            sums[new_id] = x * wf
            wsum[new_id] = wf
            moved += 1
    new = centers.copy()
    nz = wsum > 0
    new[nz] = sums[nz] / wsum[nz, None]
    return new, int(empty.size), moved


def kmeans_fit(X, w, n_clusters, *, init="k-means||", max_iter=300, tol=1e-4, seed=0,
               init_size=None, oversampling_factor=2.0, n_init_rounds=5, split_every=None,
               progress=None, data_stats=None, resume=None, on_iteration=None, on_data_stats=None):
    """One k-means run (init + Lloyd) over a row-chunked dask array.

    Parameters
    ----------
    X : dask.array.Array, row-chunked, float.
    w : dask.array.Array or None, chunked like X's rows.
    n_clusters : int
    init : {"k-means||", "k-means++", "random"} or ndarray
    max_iter : int
    tol : float
        Relative to the mean per-feature variance, as in scikit-learn.
    seed : int
    data_stats : dict, optional
        Statistics from an earlier pass (skips folding them into this run's first pass).
    resume : dict, optional
        A loop state handed to ``on_iteration`` by an interrupted run of the same data
        and parameters (``centers``, ``n_iter``, ``n_passes``, ``init_inertia``,
        ``n_empty_total``, ``converged``, ``shift``): the run continues from there, skips
        the initialisation, and ends with the same centres, bit for bit, as a run that
        was never interrupted.
    on_iteration : callable, optional
        ``on_iteration(state)`` with the loop state (a dict as ``resume`` takes, plus
        ``data_stats``) after the initialisation and after every iteration, once the data
        statistics are known. A checkpoint saves it.
    on_data_stats : callable, optional
        ``on_data_stats(stats)`` when this run's first pass has computed the data
        statistics (a resumed run checks them against the checkpoint's).

    Returns
    -------
    KMeansResult
    """
    progress = progress or Progress("KMeans", enabled=False)
    t0 = time.perf_counter()
    X_in = X

    def learn(stats):
        nonlocal data_stats, X
        check_data_stats(stats, X_in)
        data_stats = stats
        if on_data_stats is not None:
            on_data_stats(stats)
        if X.dtype != np.float64 and work_precision(stats, X_in) != X_in.dtype:
            X = X_in.astype(np.float64)

    if data_stats is not None:
        X = X_in.astype(np.float64) if work_precision(data_stats, X_in) != X_in.dtype else X_in
    elif X_in.dtype == np.float32 and not isinstance(init, str) and np.size(init) and (
            float(np.abs(np.asarray(init)).max()) > safe_magnitude(np.float32, X_in.shape[1])):
        X = X_in.astype(np.float64)  # centres this large: the first pass in float64 already
    if resume is None:
        centers, stats0, n_passes = init_centers(
            X, w, n_clusters, init, seed, init_size=init_size,
            oversampling_factor=oversampling_factor, n_rounds=n_init_rounds,
            split_every=split_every,
        )
        if data_stats is None and stats0 is not None:
            learn(stats0)
        if n_passes:
            progress.update("init", init if isinstance(init, str) else "array")
        n_iter, converged, shift = 0, False, math.inf
        init_inertia = math.nan
        n_empty_total = 0
    else:
        centers = np.array(resume["centers"], dtype=np.float64)
        n_passes = int(resume["n_passes"])
        n_iter = int(resume["n_iter"])
        converged = bool(resume["converged"])
        shift = float(resume["shift"])
        init_inertia = float(resume["init_inertia"])
        n_empty_total = int(resume["n_empty_total"])
    t_init = time.perf_counter() - t0
    tol_abs = None if data_stats is None else _tolerance(data_stats, tol)

    def report():
        if on_iteration is not None and data_stats is not None:
            on_iteration({
                "centers": centers, "n_iter": n_iter, "n_passes": n_passes,
                "init_inertia": init_inertia, "n_empty_total": n_empty_total,
                "converged": converged, "shift": shift, "data_stats": data_stats,
            })

    if resume is None:
        report()
    inertia = math.nan
    last = None
    while not converged and n_iter < max_iter:
        aggs = {"lloyd": lloyd_aggregation(centers)}
        fold = data_stats is None
        if fold:
            aggs["data"] = data_stats_aggregation()
        res = run_pass(X, aggs, sample_weight=w, split_every=split_every, name="kmeans-lloyd")
        n_passes += 1
        if fold:
            before = X
            learn(res["data"])
            tol_abs = _tolerance(data_stats, tol)
            if X is not before:
                # float32 squares would overflow: this pass's sums are not to be trusted.
                res = run_pass(X, {"lloyd": lloyd_aggregation(centers)}, sample_weight=w,
                               split_every=split_every, name="kmeans-lloyd")
                n_passes += 1
        last = res["lloyd"]
        inertia = float(last["inertia"])
        if n_iter == 0:
            init_inertia = inertia
        new, n_empty, _ = _update_centers(last, centers)
        n_empty_total += n_empty
        shift = float(((new - centers) ** 2).sum())
        centers = new
        n_iter += 1
        converged = shift <= tol_abs
        progress.update("iter", n_iter, inertia=inertia, shift=shift)
        report()
    if n_empty_total:
        warnings.warn(
            f"{n_empty_total} empty cluster(s) over the fit were moved to the points farthest "
            "from their centres.",
            EmptyClusterWarning,
            stacklevel=3,
        )
    if last is None or not (converged and shift == 0.0):
        # Inertia and cluster sizes of the final centres (scikit-learn's last E-step); also
        # when a resumed run had nothing left to iterate.
        aggs = {"lloyd": lloyd_aggregation(centers, 0)}
        fold = data_stats is None
        if fold:
            aggs["data"] = data_stats_aggregation()
        res = run_pass(X, aggs, sample_weight=w, split_every=split_every, name="kmeans-inertia")
        n_passes += 1
        if fold:
            before = X
            learn(res["data"])
            if X is not before:
                res = run_pass(X, {"lloyd": lloyd_aggregation(centers, 0)}, sample_weight=w,
                               split_every=split_every, name="kmeans-inertia")
                n_passes += 1
        last = res["lloyd"]
        inertia = float(last["inertia"])
    n_nonempty = int((last["weights"] > 0).sum())
    return KMeansResult(
        centers=centers,
        inertia=inertia,
        n_iter=n_iter,
        converged=converged,
        n_passes=n_passes,
        init_inertia=init_inertia,
        n_nonempty=n_nonempty,
        data_stats=data_stats,
        timings={"init": t_init, "total": time.perf_counter() - t0},
    )
