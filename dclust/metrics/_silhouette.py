"""Silhouette scores: exact (all pairs, tiled across the workers), sampled, and simplified.

The exact silhouette needs, for every row, the mean distance to the rows of each
cluster: ``O(n^2)`` distances, which no machine should hold at once. A first pass finds
the labels and the cluster sizes (and checks the data); then one pairwise pass
(:mod:`dclust.reductions.pairwise`) visits each pair of row blocks once, summing the
distances of a tile per cluster along both axes, so that each task holds two row blocks,
one distance tile and the per-row, per-cluster sums of its blocks: ``O(n k)`` memory over
the whole cluster, never ``O(n^2)``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..exceptions import DclustValueError
from ..kernels.cluster_metrics import (
    block_codes,
    scalar_moments_combine,
    silhouette_moments,
    silhouette_tile_partial,
    simplified_silhouette_partial,
)
from ..kernels.datastats import count_nonfinite
from ..kernels.metrics import METRICS
from ..kernels.sampling import reservoir_partial
from ..reductions.engine import Aggregation, run_pass
from ..reductions.monoids import top_combine
from ..reductions.pairwise import PairwiseAggregation, run_pairwise_pass
from ..validation import check_random_state
from ._inputs import (
    _from_numpy,
    check_number_of_labels,
    raise_nonfinite,
)
from ._internal import check_centers, cluster_stats, prepare, raise_bad_labels

__all__ = ["silhouette_score", "simplified_silhouette_score"]

# Rows per block of the tiling: at least this many (tiles of fewer rows cost more in
# scheduling than in distances), at most enough for about 8 blocks (36 tile tasks) ...
MIN_BLOCK_ROWS = 1024
TARGET_BLOCKS = 8
# ... and never so many that a block's per-cluster sums or its rows pass this size.
MAX_BLOCK_BYTES = 32 * 2**20


def _block_rows(n, n_labels, n_features):
    by_sums = MAX_BLOCK_BYTES // (8 * max(n_labels, 1))
    by_rows = MAX_BLOCK_BYTES // (8 * max(n_features, 1))
    by_blocks = max(MIN_BLOCK_ROWS, -(-n // TARGET_BLOCKS))
    return int(max(1, min(by_sums, by_rows, by_blocks, n)))


def _check_metric(metric):
    if metric not in METRICS:
        listed = ", ".join(repr(m) for m in METRICS)
        hint = ""
        if metric == "precomputed":
            hint = " A precomputed distance matrix is O(n^2); pass the data itself."
        raise DclustValueError(f"metric={metric!r} is not supported; expected one of {listed}.{hint}")
    return metric


# -- the pairwise pass ------------------------------------------------------------------


def _tile(xi, li, xj, lj, same, label_values, freqs, metric):
    ci = block_codes(li, label_values)
    cj = ci if same else block_codes(lj, label_values)
    return silhouette_tile_partial(xi, ci, xj, cj, label_values.shape[0], same=same, metric=metric)


def _sum_parts(parts):
    acc = parts[0].copy()
    for p in parts[1:]:
        acc += p
    return acc


def _rows(sums, xi, li, label_values, freqs, metric):
    return silhouette_moments(sums, block_codes(li, label_values), freqs)


_SILHOUETTE = PairwiseAggregation("metrics-silhouette", _tile, _sum_parts, _rows,
                                  scalar_moments_combine)


def _exact(X, side, label_values, freqs, metric, split_every):
    """The mean silhouette (and the std of the rows' values) over all rows of ``X``."""
    b = _block_rows(X.shape[0], label_values.shape[0], X.shape[1])
    Xb = X.rechunk({0: b})
    sb = side.rechunk({0: Xb.chunks[0]})
    agg = _SILHOUETTE.bind(np.asarray(label_values, dtype=np.int64), np.asarray(freqs), metric)
    stats = run_pairwise_pass(Xb, sb, agg, split_every=split_every, name="metrics-silhouette")
    n = int(stats["count"])
    std = float(np.sqrt(float(stats["m2"]) / (n - 1))) if n > 1 else 0.0
    return float(stats["mean"]), std, n


# -- the sample pass --------------------------------------------------------------------


# Dataclasses: the pass engine sees their fields as (small) state and inlines them.
@dataclass(frozen=True)
class _SampleChunk:
    m: int
    seed: int
    n_total: int

    def __call__(self, X, labels, ctx):
        # Each chunk sends a few times its expected share of the sample, not m rows.
        cap = min(self.m, int(2 * self.m * ctx.n_rows / max(self.n_total, 1)) + 64 + self.m // 64)
        out = reservoir_partial(X, None, self.m, self.seed, block_id=ctx.block_id,
                                row_offset=ctx.row_offset, cap=cap)
        out["label"] = np.asarray(labels, dtype=np.int64)[out["row"] - ctx.row_offset]
        n_bad, first = count_nonfinite(X)
        out["n_nonfinite"] = np.int64(n_bad)
        out["first_nonfinite"] = np.int64(first + ctx.row_offset if first >= 0 else -1)
        return out


@dataclass(frozen=True)
class _SampleCombine:
    m: int

    def __call__(self, parts):
        out = top_combine(parts, self.m, "key", ("key", "row", "x", "weight", "label"), "row")
        out["n_nonfinite"] = np.int64(sum(int(p["n_nonfinite"]) for p in parts))
        firsts = [int(p["first_nonfinite"]) for p in parts if int(p["first_nonfinite"]) >= 0]
        out["first_nonfinite"] = np.int64(min(firsts) if firsts else -1)
        return out


def _sample(X, side, m, seed, split_every):
    agg = Aggregation("metrics-sample", _SampleChunk(m, seed, X.shape[0]), _SampleCombine(m))
    s = run_pass(X, {"s": agg}, sample_weight=side, split_every=split_every,
                 name="metrics-silhouette-sample")["s"]
    raise_nonfinite(s, X)
    order = np.argsort(s["row"])  # the sample in row order: a tiling independent of keys
    return s["x"][order], s["label"][order]


def _check_sample_size(sample_size):
    if (isinstance(sample_size, bool) or not isinstance(sample_size, numbers.Integral)
            or sample_size < 2):
        raise DclustValueError(
            f"sample_size={sample_size!r} must be None (every row) or an integer >= 2, the "
            "number of rows to draw."
        )
    return int(sample_size)


def silhouette_score(X, labels, *, metric="euclidean", sample_size=None, random_state=None,
                     return_std_error=False, split_every=None):
    """Mean silhouette coefficient of all rows, exact or on a uniform sample.

    A row's silhouette is ``(b - a) / max(a, b)``, with ``a`` its mean distance to the
    other rows of its cluster and ``b`` its smallest mean distance to the rows of another
    cluster; 0 for a row alone in its cluster. Between -1 and 1, higher is better.

    With ``sample_size=None`` the score is exact (``O(n^2)`` distances) and equal to
    ``sklearn.metrics.silhouette_score`` up to float rounding: one pass finds the labels
    and cluster sizes, then one pairwise pass sums the distances of every pair of row
    blocks per cluster, tiled across the workers (each pair of blocks once; ``O(n k)``
    memory in all, ``n_labels`` being ``k``). With an integer ``sample_size`` the score is
    the exact silhouette of ``sample_size`` rows drawn uniformly without replacement (one
    pass draws them, seeded by ``random_state``, then the pairwise pass runs on the
    sample), as scikit-learn's ``sample_size`` does (with a different random draw).

    Parameters
    ----------
    X : array-like, dask array, Zarr array or path of shape (n_samples, n_features)
    labels : array-like, dask array, Zarr array or path of shape (n_samples,)
        Any integer labels (NumPy arrays may hold any values).
    metric : {"euclidean", "sqeuclidean", "manhattan", "cosine"}, default="euclidean"
    sample_size : int, default=None
        Rows to draw; ``None`` uses every row.
    random_state : int, Generator, RandomState or None, default=None
        Seed of the sample (unused without ``sample_size``).
    return_std_error : bool, default=False
        Also return the standard error of the score: ``std(s_i) / sqrt(m)`` over the
        ``m`` sampled rows' silhouettes ``s_i`` (sample standard deviation, ``ddof=1``).
        It treats the rows' silhouettes as independent draws, which they nearly are when
        ``m`` is much smaller than ``n_samples`` (each ``s_i`` also depends on the rest of
        the sample, through ``a`` and ``b``); use it to choose ``sample_size`` or to tell
        two scores apart. 0.0 for the exact score.
    split_every : int, optional
        Fan-in of the reduction trees.

    Returns
    -------
    score : float
    std_error : float
        Only with ``return_std_error=True``.

    Raises
    ------
    DclustValueError
        Fewer than 2 labels, or as many labels as rows (in the sample, if sampling).
    DataError
        ``X`` holds NaN or infinite values.
    """
    _check_metric(metric)
    X, side, _ = prepare(X, labels)
    if sample_size is None:
        stats = cluster_stats(X, side, moments=False, split_every=split_every,
                              name="metrics-silhouette")
        counts = stats["count"]
        check_number_of_labels(counts.shape[0], int(counts.sum()), "silhouette_score")
        score, _, _ = _exact(X, side, stats["label"], counts, metric, split_every)
        return (score, 0.0) if return_std_error else score
    m = _check_sample_size(sample_size)
    seed = check_random_state(random_state)
    xs, ls = _sample(X, side, min(m, X.shape[0]), seed, split_every)
    values, codes = np.unique(ls, return_inverse=True)
    freqs = np.bincount(codes, minlength=values.shape[0])
    check_number_of_labels(values.shape[0], xs.shape[0], "silhouette_score")
    b = _block_rows(xs.shape[0], values.shape[0], xs.shape[1])
    Xs = _from_numpy(np.ascontiguousarray(xs), (b, xs.shape[1]))
    Ls = _from_numpy(np.ascontiguousarray(ls), (Xs.chunks[0],))
    score, std, n = _exact(Xs, Ls, values, freqs, metric, split_every)
    if return_std_error:
        return score, float(std / np.sqrt(n))
    return score


# -- simplified silhouette --------------------------------------------------------------


@dataclass(frozen=True)
class _SimplifiedChunk:
    has_labels: bool
    metric: str

    def __call__(self, X, labels, ctx, label_values, centers):
        return simplified_silhouette_partial(
            X, labels if self.has_labels else None, label_values, centers, metric=self.metric,
            row_offset=ctx.row_offset)


def _simplified_combine(parts):
    out = scalar_moments_combine(parts)
    out["n_bad"] = np.int64(sum(int(p["n_bad"]) for p in parts))
    bad = [p for p in parts if int(p["first_bad"]) >= 0]
    first = min(bad, key=lambda p: int(p["first_bad"])) if bad else parts[0]
    out["first_bad"], out["bad_value"] = first["first_bad"], first["bad_value"]
    out["n_nonfinite"] = np.int64(sum(int(p["n_nonfinite"]) for p in parts))
    firsts = [int(p["first_nonfinite"]) for p in parts if int(p["first_nonfinite"]) >= 0]
    out["first_nonfinite"] = np.int64(min(firsts) if firsts else -1)
    return out


def simplified_silhouette_score(X, labels=None, *, centers=None, metric="euclidean",
                                split_every=None):
    """Mean simplified silhouette: each row against centres instead of all other rows.

    A row's simplified silhouette is ``(b - a) / max(a, b)`` with ``a`` its distance to
    its own cluster's centre and ``b`` its distance to the nearest other centre (0 where
    both are 0); the score is the mean over rows, between -1 and 1, higher is better
    (Hruschka et al., 2004; Vendramin et al., 2010). It costs ``O(n k)`` distances
    instead of the silhouette's ``O(n^2)``, and agrees with it closely for compact,
    round clusters.

    - ``centers`` given: one pass. ``labels[i]`` is the row of ``centers`` of row ``i``
      (``0 .. n_centers - 1``); without labels, each row's own centre is its nearest.
    - ``labels`` only: two passes, the first for the clusters' means (the centres).

    Parameters
    ----------
    X : array-like, dask array, Zarr array or path of shape (n_samples, n_features)
    labels : array-like, dask array, Zarr array or path of shape (n_samples,), default=None
    centers : array-like of shape (n_centers, n_features), default=None
        At least 2 centres.
    metric : {"euclidean", "sqeuclidean", "manhattan", "cosine"}, default="euclidean"
    split_every : int, optional

    Returns
    -------
    score : float

    Raises
    ------
    DclustValueError
        Neither ``labels`` nor ``centers``, fewer than 2 centres or labels, or labels
        outside ``0 .. n_centers - 1`` with ``centers``.
    DataError
        ``X`` holds NaN or infinite values.
    """
    _check_metric(metric)
    if labels is None and centers is None:
        raise DclustValueError(
            "simplified_silhouette_score needs labels, centers or both; got neither. Pass the "
            "cluster labels of X (the centres are then the clusters' means) or the centres."
        )
    if labels is None:
        from ._inputs import as_data

        X = as_data(X)
        side = None
    else:
        X, side, lab = prepare(X, labels)
    if centers is not None:
        C = check_centers(centers, X.shape[1], min_centers=2)
        if labels is not None and lab.classes is not None:
            raise DclustValueError(
                "labels must be integers 0 .. n_centers - 1 when centers are given (the row "
                f"of each sample's centre); got labels of dtype {lab.classes.dtype.str!r}."
            )
        label_values = np.arange(C.shape[0], dtype=np.int64)
    else:
        stats = cluster_stats(X, side, split_every=split_every, name="metrics-simplified")
        if stats["label"].shape[0] < 2:
            raise DclustValueError(
                f"Number of labels is {stats['label'].shape[0]}; the simplified silhouette "
                "compares each row's own cluster with the nearest other one, so the labels "
                "must split the rows into at least two groups."
            )
        C, label_values = stats["mean"], stats["label"]
    agg = Aggregation("metrics-simplified", _SimplifiedChunk(side is not None, metric),
                      _simplified_combine).bind(label_values, np.ascontiguousarray(C))
    stats = run_pass(X, {"s": agg}, sample_weight=side, split_every=split_every,
                     name="metrics-simplified")["s"]
    raise_nonfinite(stats, X)
    raise_bad_labels(stats, C.shape[0])
    return float(stats["mean"])
