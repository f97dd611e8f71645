"""Scores comparing a clustering with known classes, from the contingency table.

Each function runs :func:`~dclust.metrics._contingency.contingency_table` (one pass over
dask or Zarr labels, none for NumPy labels) and computes the score on the client. Where
scikit-learn computes from a contingency table (``mutual_info_score``,
``expected_mutual_information``) its own function is called; where it only accepts
label arrays (the pair confusion counts behind ``adjusted_rand_score``, the labelings'
entropies) its few lines are reproduced on the table's margins, operation for operation,
so the results agree to the last bits, special cases included.
"""

from __future__ import annotations

from math import log

import numpy as np

from ..exceptions import DclustValueError
from ._contingency import ContingencyTable, contingency_table

__all__ = [
    "adjusted_rand_score",
    "normalized_mutual_info_score",
    "adjusted_mutual_info_score",
    "homogeneity_completeness_v_measure",
    "accuracy",
]

_AVERAGE_METHODS = ("arithmetic", "max", "min", "geometric")


def _entropy(counts, n_samples):
    """Entropy of a labeling from its label counts (scikit-learn's ``_entropy``)."""
    if n_samples == 0:
        return 1.0
    pi = np.asarray(counts, dtype=np.float64)
    if pi.size == 1:
        return 0.0
    pi_sum = np.sum(pi)
    return float(-np.sum((pi / pi_sum) * (np.log(pi) - log(pi_sum))))


def _margins(table: ContingencyTable):
    n_c = np.bincount(table.row, weights=table.count, minlength=table.classes.shape[0])
    n_k = np.bincount(table.col, weights=table.count, minlength=table.clusters.shape[0])
    return n_c.astype(np.int64), n_k.astype(np.int64)


def _check_average_method(average_method):
    if average_method not in _AVERAGE_METHODS:
        listed = ", ".join(repr(m) for m in _AVERAGE_METHODS)
        raise DclustValueError(
            f"average_method={average_method!r} is not valid; expected one of {listed}."
        )


def _generalized_average(U, V, average_method):
    from sklearn.metrics.cluster._supervised import _generalized_average as ga

    return ga(U, V, average_method)


def _mutual_info(contingency):
    from sklearn.metrics.cluster import mutual_info_score

    return mutual_info_score(None, None, contingency=contingency)


def pair_confusion_from_table(table: ContingencyTable):
    """``sklearn.metrics.cluster.pair_confusion_matrix`` from a contingency table."""
    n_samples = np.int64(table.n_samples)
    contingency = table.sparse(np.int64)
    n_c = np.ravel(contingency.sum(axis=1))
    n_k = np.ravel(contingency.sum(axis=0))
    sum_squares = (contingency.data**2).sum()
    C = np.empty((2, 2), dtype=np.int64)
    C[1, 1] = sum_squares - n_samples
    C[0, 1] = contingency.dot(n_k).sum() - sum_squares
    C[1, 0] = contingency.transpose().dot(n_c).sum() - sum_squares
    C[0, 0] = n_samples**2 - C[0, 1] - C[1, 0] - sum_squares
    return C


def adjusted_rand_score(labels_true, labels_pred, *, split_every=None):
    """Rand index adjusted for chance, as ``sklearn.metrics.adjusted_rand_score``.

    One pass over dask or Zarr labels (none for NumPy arrays); equal to scikit-learn's
    result.

    Parameters
    ----------
    labels_true : array-like, dask array, Zarr array or path of shape (n_samples,)
        Ground-truth classes (any integers; NumPy arrays may hold any values).
    labels_pred : array-like, dask array, Zarr array or path of shape (n_samples,)
        Cluster labels.
    split_every : int, optional
        Fan-in of the reduction tree.

    Returns
    -------
    ari : float
        1.0 for identical partitions (up to renaming), about 0.0 for random ones, down
        to -0.5 for especially discordant ones.
    """
    table = contingency_table(labels_true, labels_pred, split_every=split_every)
    (tn, fp), (fn, tp) = pair_confusion_from_table(table)
    # Python integers, as scikit-learn does, so that the products cannot overflow.
    tn, fp, fn, tp = int(tn), int(fp), int(fn), int(tp)
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _single_partition(table):
    nc, nk = table.classes.shape[0], table.clusters.shape[0]
    return nc == nk == 1 or nc == nk == 0


def normalized_mutual_info_score(labels_true, labels_pred, *, average_method="arithmetic",
                                 split_every=None):
    """Normalized mutual information, as ``sklearn.metrics.normalized_mutual_info_score``.

    One pass over dask or Zarr labels (none for NumPy arrays).

    Parameters
    ----------
    labels_true, labels_pred : array-like, dask array, Zarr array or path of shape (n_samples,)
    average_method : {"arithmetic", "max", "min", "geometric"}, default="arithmetic"
        How the two entropies are averaged into the normaliser.
    split_every : int, optional

    Returns
    -------
    nmi : float
        Between 0.0 (independent labelings) and 1.0 (identical partitions).
    """
    _check_average_method(average_method)
    table = contingency_table(labels_true, labels_pred, split_every=split_every)
    if _single_partition(table):
        return 1.0
    mi = _mutual_info(table.sparse().astype(np.float64, copy=False))
    if mi == 0:
        return 0.0
    n_c, n_k = _margins(table)
    h_true, h_pred = _entropy(n_c, table.n_samples), _entropy(n_k, table.n_samples)
    return float(mi / _generalized_average(h_true, h_pred, average_method))


def adjusted_mutual_info_score(labels_true, labels_pred, *, average_method="arithmetic",
                               split_every=None):
    """Mutual information adjusted for chance, as ``sklearn.metrics.adjusted_mutual_info_score``.

    One pass over dask or Zarr labels (none for NumPy arrays). The expected mutual
    information is scikit-learn's, computed from the table; its cost grows with the
    number of classes times clusters times the cluster sizes, as in scikit-learn.

    Parameters
    ----------
    labels_true, labels_pred : array-like, dask array, Zarr array or path of shape (n_samples,)
    average_method : {"arithmetic", "max", "min", "geometric"}, default="arithmetic"
    split_every : int, optional

    Returns
    -------
    ami : float
        1.0 for identical partitions, about 0.0 for random ones (can be negative).
    """
    from sklearn.metrics.cluster import expected_mutual_information

    _check_average_method(average_method)
    table = contingency_table(labels_true, labels_pred, split_every=split_every)
    nc, nk = table.classes.shape[0], table.clusters.shape[0]
    if _single_partition(table):
        return 1.0
    if nc == 1 or nk == 1:
        return 0.0
    contingency = table.sparse()
    mi = _mutual_info(contingency)
    emi = expected_mutual_information(contingency, table.n_samples)
    n_c, n_k = _margins(table)
    h_true, h_pred = _entropy(n_c, table.n_samples), _entropy(n_k, table.n_samples)
    normalizer = _generalized_average(h_true, h_pred, average_method)
    # scikit-learn's guards against 0/0 when the expectation equals the maximum.
    eps = np.finfo("float64").eps
    denominator = normalizer - emi
    denominator = min(denominator, -eps) if denominator < 0 else max(denominator, eps)
    numerator = mi - emi
    numerator = min(numerator, -eps) if numerator < 0 else max(numerator, eps)
    return float(numerator / denominator)


def homogeneity_completeness_v_measure(labels_true, labels_pred, *, beta=1.0, split_every=None):
    """Homogeneity, completeness and V-measure, as scikit-learn's function of that name.

    One pass over dask or Zarr labels (none for NumPy arrays).

    Parameters
    ----------
    labels_true, labels_pred : array-like, dask array, Zarr array or path of shape (n_samples,)
    beta : float, default=1.0
        Weight of homogeneity in the V-measure: above 1 favours completeness, below 1
        homogeneity.
    split_every : int, optional

    Returns
    -------
    homogeneity : float
        1.0 when every cluster holds members of one class only.
    completeness : float
        1.0 when all members of each class share a cluster.
    v_measure : float
        Their weighted harmonic mean.
    """
    if not (isinstance(beta, (int, float, np.number)) and not isinstance(beta, bool)
            and beta >= 0):
        raise DclustValueError(f"beta={beta!r} must be a number >= 0.")
    table = contingency_table(labels_true, labels_pred, split_every=split_every)
    if table.n_samples == 0:
        return 1.0, 1.0, 1.0
    n_c, n_k = _margins(table)
    entropy_C = _entropy(n_c, table.n_samples)
    entropy_K = _entropy(n_k, table.n_samples)
    MI = _mutual_info(table.sparse())
    homogeneity = MI / entropy_C if entropy_C else 1.0
    completeness = MI / entropy_K if entropy_K else 1.0
    if homogeneity + completeness == 0.0:
        v_measure = 0.0
    else:
        v_measure = (1 + beta) * homogeneity * completeness / (beta * homogeneity + completeness)
    return float(homogeneity), float(completeness), float(v_measure)


def accuracy(labels_true, labels_pred, *, return_mapping=False, split_every=None):
    """Clustering accuracy: the fraction of rows right under the best one-to-one matching.

    Clusters are matched to classes one-to-one so that the matched pairs hold as many
    rows as possible (the Hungarian method, ``scipy.optimize.linear_sum_assignment``, on
    the contingency table), as in the novel- and generalized-category-discovery
    literature (NCD, GCD). With more clusters than classes the surplus clusters match
    nothing and all their rows count as wrong (and likewise surplus classes).
    ``-1`` and every other value is an ordinary label: to leave out rows of unknown class,
    drop them from both labelings first.

    One pass over dask or Zarr labels (none for NumPy arrays); the matching runs on the
    client on the dense ``n_classes x n_clusters`` table, so it suits up to a few
    thousand classes and clusters.

    Parameters
    ----------
    labels_true, labels_pred : array-like, dask array, Zarr array or path of shape (n_samples,)
    return_mapping : bool, default=False
        Also return the matching, as a dict from cluster label to class label (for
        per-class accuracies, such as GCD's "old" and "new" classes).
    split_every : int, optional

    Returns
    -------
    accuracy : float
        In [0, 1]; 1.0 for identical partitions (and for no rows).
    mapping : dict
        Only with ``return_mapping=True``.
    """
    from scipy.optimize import linear_sum_assignment

    table = contingency_table(labels_true, labels_pred, split_every=split_every)
    if table.n_samples == 0:
        return (1.0, {}) if return_mapping else 1.0
    C = table.dense(np.int64)
    rows, cols = linear_sum_assignment(C, maximize=True)
    score = float(C[rows, cols].sum() / table.n_samples)
    if return_mapping:
        mapping = {_py(table.clusters[c]): _py(table.classes[r]) for r, c in zip(rows, cols)}
        return score, mapping
    return score


def _py(v):
    return v.item() if isinstance(v, np.generic) else v
