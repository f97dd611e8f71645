"""Scores of a clustering from the data alone: Calinski-Harabasz, Davies-Bouldin, inertia.

The first pass finds the labels (any integers) with each one's row count, weight, mean
and centred sum of squares, merged across chunks by Chan et al.'s update, so the
within-cluster dispersion is computed without the cancellation of ``sum x^2 - n mean^2``;
it also counts non-finite values. Calinski-Harabasz and inertia need only that pass;
Davies-Bouldin needs a second one, for the mean distance of each cluster's rows to its
centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np

from ..exceptions import DataError, DclustValueError
from ..kernels.cluster_metrics import (
    cluster_stats_combine,
    cluster_stats_partial,
    own_center_partial,
)
from ..kernels.lloyd import nearest_center
from ..kernels.metrics import pairwise_distances
from ..reductions.engine import Aggregation, run_pass
from ..reductions.monoids import sum_combine
from ._inputs import (
    Labels,
    align,
    as_data,
    as_labels,
    check_number_of_labels,
    check_same_length,
    raise_nonfinite,
)

__all__ = ["calinski_harabasz_score", "davies_bouldin_score", "inertia", "cluster_stats",
           "prepare", "pack_side", "unpack_side"]


def pack_side(labels, weights=None):
    """Labels (and weights) as one row-aligned int64 array for the pass engine's side slot.

    Weights travel bit for bit as int64 (a view, not a conversion), next to the labels.
    """
    if weights is None:
        return labels
    return da.stack([labels, weights.astype(np.float64).view(np.int64)], axis=1).rechunk({1: -1})


def unpack_side(side, weighted):
    if side is None:
        return None, None
    if not weighted:
        return side, None
    side = np.asarray(side)
    return side[:, 0], np.ascontiguousarray(side[:, 1]).view(np.float64)


def prepare(X, labels, *, name="labels"):
    """``X`` as a dask array and ``labels`` as a dask array with ``X``'s row chunks."""
    X = as_data(X)
    lab = as_labels(labels, name=name)
    check_same_length(X.shape[0], lab.n, "X", name)
    return X, align(lab, X.chunks[0]), lab


@dataclass(frozen=True)
class _StatsChunk:
    moments: bool
    weighted: bool

    def __call__(self, X, side, ctx):
        labels, w = unpack_side(side, self.weighted)
        return cluster_stats_partial(X, labels, w, moments=self.moments, row_offset=ctx.row_offset)


def cluster_stats(X, side, *, weighted=False, moments=True, split_every=None, name="metrics"):
    """One pass: the labels of ``side`` with their counts (and moments); checks ``X``.

    Returns the merged :func:`~dclust.kernels.cluster_metrics.cluster_stats_partial`
    table; raises :class:`DataError` if ``X`` holds NaN or infinite values.
    """
    agg = Aggregation(f"{name}-stats", _StatsChunk(moments, weighted), cluster_stats_combine)
    stats = run_pass(X, {"stats": agg}, sample_weight=side, split_every=split_every,
                     name=f"{name}-stats")["stats"]
    raise_nonfinite(stats, X)
    return stats


def calinski_harabasz_score(X, labels, *, split_every=None):
    """Calinski-Harabasz score (variance ratio criterion), in one pass.

    The ratio of the between-cluster dispersion to the within-cluster dispersion, each
    divided by its degrees of freedom; higher is better. Equal to
    ``sklearn.metrics.calinski_harabasz_score`` up to float rounding (computed in
    float64 whatever ``X``'s dtype).

    Parameters
    ----------
    X : array-like, dask array, Zarr array or path of shape (n_samples, n_features)
    labels : array-like, dask array, Zarr array or path of shape (n_samples,)
        Any integer labels (NumPy arrays may hold any values); need not be chunked
        like ``X``.
    split_every : int, optional
        Fan-in of the reduction tree.

    Returns
    -------
    score : float

    Raises
    ------
    DclustValueError
        Fewer than 2 labels or as many labels as rows, or labels and ``X`` of different
        lengths.
    DataError
        ``X`` holds NaN or infinite values.
    """
    X, side, _ = prepare(X, labels)
    stats = cluster_stats(X, side, split_every=split_every, name="metrics-ch")
    counts = stats["count"]
    n_samples, n_labels = int(counts.sum()), counts.shape[0]
    check_number_of_labels(n_labels, n_samples, "calinski_harabasz_score")
    mean = stats["weight"] @ stats["mean"] / stats["weight"].sum()
    diff = stats["mean"] - mean
    extra_disp = float(np.sum(counts * np.einsum("ij,ij->i", diff, diff)))
    intra_disp = float(np.sum(stats["m2"]))
    if intra_disp == 0.0:
        return 1.0
    return float(extra_disp * (n_samples - n_labels) / (intra_disp * (n_labels - 1.0)))


@dataclass(frozen=True)
class _OwnCenterChunk:
    squared: bool
    weighted: bool

    def __call__(self, X, side, ctx, label_values, centers):
        labels, w = unpack_side(side, self.weighted)
        return own_center_partial(X, labels, label_values, centers, w, squared=self.squared,
                                  row_offset=ctx.row_offset)


def _own_center_combine(parts):
    out = sum_combine(parts, ("sums", "n_bad"))
    bad = [p for p in parts if int(p["first_bad"]) >= 0]
    first = min(bad, key=lambda p: int(p["first_bad"])) if bad else parts[0]
    out["first_bad"], out["bad_value"] = first["first_bad"], first["bad_value"]
    return out


def own_center_sums(X, side, label_values, centers, *, squared, weighted=False, split_every=None,
                    name="metrics"):
    """One pass: per-label sums of (squared) distances of rows to their label's centre."""
    agg = Aggregation(f"{name}-own", _OwnCenterChunk(squared, weighted), _own_center_combine)
    agg = agg.bind(np.asarray(label_values, dtype=np.int64),
                   np.ascontiguousarray(centers, dtype=np.float64))
    return run_pass(X, {"own": agg}, sample_weight=side, split_every=split_every,
                    name=f"{name}-own")["own"]


def davies_bouldin_score(X, labels, *, split_every=None):
    """Davies-Bouldin score, in two passes.

    The mean, over clusters, of the largest ratio ``(s_i + s_j) / d(c_i, c_j)`` of the
    clusters' spreads (``s_i``: the mean euclidean distance of cluster ``i``'s rows to its
    centroid ``c_i``) to the distance between their centroids; lower is better, 0 is
    the minimum. The first pass finds the centroids, the second the spreads. Equal to
    ``sklearn.metrics.davies_bouldin_score`` up to float rounding; all distances here are
    formed from differences, where scikit-learn's ``||x||^2 + ||c||^2 - 2 x.c`` loses
    digits for data far from the origin (about 1e-8 relative at an offset of 1e4).

    Parameters
    ----------
    X : array-like, dask array, Zarr array or path of shape (n_samples, n_features)
    labels : array-like, dask array, Zarr array or path of shape (n_samples,)
    split_every : int, optional

    Returns
    -------
    score : float

    Raises
    ------
    DclustValueError
        Fewer than 2 labels or as many labels as rows.
    DataError
        ``X`` holds NaN or infinite values.
    """
    X, side, _ = prepare(X, labels)
    stats = cluster_stats(X, side, split_every=split_every, name="metrics-db")
    counts = stats["count"]
    check_number_of_labels(counts.shape[0], int(counts.sum()), "davies_bouldin_score")
    centroids = stats["mean"]
    own = own_center_sums(X, side, stats["label"], centroids, squared=False,
                          split_every=split_every, name="metrics-db")
    intra_dists = own["sums"] / counts
    # Exact distances (scikit-learn's expanded form loses digits for data far from the
    # origin, where centroids are close compared with their norms).
    centroid_distances = pairwise_distances(centroids, centroids, "euclidean")
    # scikit-learn's rules, in its order: 0 when every spread or every centroid
    # distance is (close to) zero; coincident centroids are infinitely far apart.
    if np.all(np.isclose(intra_dists, 0.0)) or np.all(np.isclose(centroid_distances, 0.0)):
        return 0.0
    centroid_distances[centroid_distances == 0] = np.inf
    combined_intra_dists = intra_dists[:, None] + intra_dists
    scores = np.max(combined_intra_dists / centroid_distances, axis=1)
    return float(np.mean(scores))


def check_centers(centers, n_features, *, min_centers=1):
    """``centers`` as a finite float64 array of shape (n_centers, n_features)."""
    try:
        C = np.asarray(centers, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DclustValueError(f"centers cannot be read as an array of numbers: {e}") from None
    if C.ndim != 2 or C.shape[1] != n_features:
        raise DclustValueError(
            f"centers must be of shape (n_centers, n_features={n_features}); got an array of "
            f"shape {C.shape}. Pass one centre per row, with as many features as X."
        )
    if C.shape[0] < min_centers:
        raise DclustValueError(
            f"centers has {C.shape[0]} row(s); at least {min_centers} centres are needed."
        )
    if not np.isfinite(C).all():
        raise DataError("centers contains NaN or infinite values; every centre must be finite.")
    return C


def _nearest_chunk(X, w, ctx, centers):
    _, d = nearest_center(X, centers)
    d = np.asarray(d, dtype=np.float64)
    if w is not None:
        d = d * np.asarray(w, dtype=np.float64)
    return {"inertia": np.float64(np.sum(d))}


def _inertia_combine(parts):
    return sum_combine(parts, ("inertia",))


def _check_weights(sample_weight, X):
    if sample_weight is None:
        return None
    from ..validation import check_sample_weight

    w = check_sample_weight(sample_weight, X.shape[0])
    if w is None:  # a positive constant
        return da.full(X.shape[0], float(sample_weight), chunks=(X.chunks[0],))
    if isinstance(w, np.ndarray):
        return align(Labels(w), X.chunks[0])
    return w.rechunk({0: X.chunks[0]})


def raise_bad_labels(stats, n_centers, name="labels"):
    if int(stats["n_bad"]):
        raise DclustValueError(
            f"{name} has {int(stats['n_bad']):,} value(s) that are not row numbers of centers "
            f"(first at row {int(stats['first_bad']):,}: {int(stats['bad_value'])!r}); with "
            f"centers given, labels must be in 0 .. {n_centers - 1}, the index of each row's "
            "centre. Pass labels=None to use each row's nearest centre."
        )


def inertia(X, labels=None, *, centers=None, sample_weight=None, split_every=None):
    """Sum of (weighted) squared euclidean distances of rows to their cluster's centre.

    One pass, in float64 whatever ``X``'s dtype:

    - ``labels`` only: the centres are the clusters' (weighted) means; the dispersion
      of each cluster is merged across chunks around its mean (no cancellation);
    - ``labels`` and ``centers``: ``labels[i]`` is the row of ``centers`` of row ``i``
      (``0 .. n_centers - 1``, as ``KMeans.labels_`` and ``cluster_centers_``);
    - ``centers`` only: each row's nearest centre (``-KMeans.score(X)`` for a fitted
      ``KMeans``).

    Parameters
    ----------
    X : array-like, dask array, Zarr array or path of shape (n_samples, n_features)
    labels : array-like, dask array, Zarr array or path of shape (n_samples,), default=None
    centers : array-like of shape (n_centers, n_features), default=None
    sample_weight : array-like or dask array of shape (n_samples,), default=None
    split_every : int, optional

    Returns
    -------
    inertia : float

    Raises
    ------
    DclustValueError
        Neither ``labels`` nor ``centers`` given, labels outside ``0 .. n_centers - 1``
        with ``centers``, or shapes that do not match ``X``.
    DataError
        ``X`` holds NaN or infinite values.
    """
    if labels is None and centers is None:
        raise DclustValueError(
            "inertia needs labels, centers or both; got neither. Pass the cluster labels of X "
            "(the centres are then the clusters' means) or the centres."
        )
    X = as_data(X)
    w = _check_weights(sample_weight, X)
    weighted = w is not None
    if centers is not None:
        C = check_centers(centers, X.shape[1])
    if labels is None:
        agg = Aggregation("metrics-inertia", _nearest_chunk, _inertia_combine).bind(C)
        stats = run_pass(X, {"i": agg}, sample_weight=w, split_every=split_every,
                         name="metrics-inertia")["i"]
        value = float(stats["inertia"])
        if not np.isfinite(value):
            raise DataError(
                "X contains NaN or infinite values (the inertia is not finite); clustering "
                "metrics need finite data. Clean the data first, for example keep the rows "
                "where da.isfinite(X).all(axis=1)."
            )
        return value
    lab = as_labels(labels, name="labels")
    check_same_length(X.shape[0], lab.n, "X", "labels")
    side = pack_side(align(lab, X.chunks[0]), w)
    if centers is None:
        stats = cluster_stats(X, side, weighted=weighted, split_every=split_every,
                              name="metrics-inertia")
        return float(np.sum(stats["m2"]))
    if lab.classes is not None:
        raise DclustValueError(
            "labels must be integers 0 .. n_centers - 1 when centers are given (the row of "
            f"each sample's centre); got labels of dtype {lab.classes.dtype.str!r}."
        )
    own = own_center_sums(X, side, np.arange(C.shape[0]), C, squared=True, weighted=weighted,
                          split_every=split_every, name="metrics-inertia")
    raise_bad_labels(own, C.shape[0])
    value = float(np.sum(own["sums"]))
    if not np.isfinite(value):
        raise DataError(
            "X contains NaN or infinite values (the inertia is not finite); clustering metrics "
            "need finite data. Clean the data first, for example keep the rows where "
            "da.isfinite(X).all(axis=1)."
        )
    return value
