"""The contingency table of two labelings, in one pass, and ``contingency_matrix``.

Every chunk counts its distinct (true label, predicted label) pairs; the sorted pair
tables merge by a sorted union (an associative merge whose identity is the empty
table), so one pass finds the labels, whatever integers they are, and their joint
counts. The table has one entry per non-zero cell: at most ``n_classes * n_clusters``
entries, and never more than the number of rows. Labels given as NumPy arrays are
counted on the client, without a pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels.cluster_metrics import pair_counts_combine, pair_counts_partial
from ..reductions.engine import Aggregation, run_pass
from ._inputs import align, as_labels, check_same_length

__all__ = ["ContingencyTable", "contingency_table", "contingency_matrix"]


@dataclass(frozen=True)
class ContingencyTable:
    """The non-zero cells of the contingency table of two labelings.

    Attributes
    ----------
    classes : ndarray of shape (n_classes,)
        Sorted distinct values of ``labels_true`` (rows of the table).
    clusters : ndarray of shape (n_clusters,)
        Sorted distinct values of ``labels_pred`` (columns).
    row, col : int64 ndarrays of shape (n_cells,)
        Position of each non-zero cell.
    count : int64 ndarray of shape (n_cells,)
    n_samples : int
    """

    classes: np.ndarray
    clusters: np.ndarray
    row: np.ndarray
    col: np.ndarray
    count: np.ndarray
    n_samples: int

    def sparse(self, dtype=np.int64):
        """The table as a SciPy CSR matrix, as ``sklearn.metrics.cluster.contingency_matrix``
        returns it with ``sparse=True``."""
        import scipy.sparse as sp

        C = sp.csr_matrix(
            (self.count.astype(dtype), (self.row, self.col)),
            shape=(self.classes.shape[0], self.clusters.shape[0]),
        )
        C.sum_duplicates()
        return C

    def dense(self, dtype=np.int64):
        C = np.zeros((self.classes.shape[0], self.clusters.shape[0]), dtype=dtype)
        C[self.row, self.col] = self.count
        return C


def _chunk(t_block, p_block, ctx):
    return pair_counts_partial(t_block[:, 0], p_block)


def _finalize_table(table, lt, lp, n):
    classes_c, row = np.unique(table["true"], return_inverse=True)
    clusters_c, col = np.unique(table["pred"], return_inverse=True)
    return ContingencyTable(lt.values(classes_c), lp.values(clusters_c), row.astype(np.int64),
                            col.astype(np.int64), table["count"].astype(np.int64), int(n))


def contingency_table(labels_true, labels_pred, *, split_every=None) -> ContingencyTable:
    """Count the rows of each (true label, predicted label) pair.

    One pass over the labels when either is a dask or Zarr array (the other is
    rechunked to match); none when both are NumPy arrays.

    Parameters
    ----------
    labels_true, labels_pred : array-like, dask array, Zarr array or path of shape (n_samples,)
    split_every : int, optional
        Fan-in of the reduction tree.

    Returns
    -------
    table : ContingencyTable
    """
    lt = as_labels(labels_true, name="labels_true")
    lp = as_labels(labels_pred, name="labels_pred")
    check_same_length(lt.n, lp.n, "labels_true", "labels_pred", what="entries")
    n = lt.n
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _finalize_table({"true": empty, "pred": empty, "count": empty}, lt, lp, 0)
    if isinstance(lt.data, np.ndarray) and isinstance(lp.data, np.ndarray):
        table = pair_counts_partial(lt.data, lp.data)
    else:
        # The dask one (or labels_true) sets the chunks; the other follows it.
        ref = lt.data if not isinstance(lt.data, np.ndarray) else lp.data
        t = align(lt, ref.chunks[0])
        p = align(lp, ref.chunks[0])
        agg = Aggregation("metrics-contingency", _chunk, pair_counts_combine)
        table = run_pass(t[:, None], {"pairs": agg}, sample_weight=p, split_every=split_every,
                         name="metrics-contingency")["pairs"]
    return _finalize_table(table, lt, lp, n)


def contingency_matrix(labels_true, labels_pred, *, eps=None, sparse=False, dtype=np.int64,
                       return_labels=False, split_every=None):
    """Contingency matrix of two labelings, as ``sklearn.metrics.cluster.contingency_matrix``.

    One pass over the labels when either is a dask or Zarr array; none for NumPy arrays.

    Parameters
    ----------
    labels_true : array-like, dask array, Zarr array or path of shape (n_samples,)
        Ground-truth classes. Any integers (``-1`` is a label like any other); NumPy
        arrays may hold any values.
    labels_pred : array-like, dask array, Zarr array or path of shape (n_samples,)
        Cluster labels.
    eps : float, default=None
        Added to every cell of the dense matrix (not allowed with ``sparse=True``).
    sparse : bool, default=False
        Return a SciPy CSR matrix.
    dtype : numeric type, default=np.int64
        Output dtype (ignored when ``eps`` is given).
    return_labels : bool, default=False
        Also return the label values of the rows and columns.
    split_every : int, optional
        Fan-in of the reduction tree.

    Returns
    -------
    C : ndarray or scipy.sparse.csr_matrix of shape (n_classes, n_clusters)
        ``C[i, j]`` is the number of rows in class ``classes[i]`` and cluster
        ``clusters[j]``; both sorted ascending.
    classes, clusters : ndarrays
        Only with ``return_labels=True``.
    """
    if eps is not None and sparse:
        from ..exceptions import DclustValueError

        raise DclustValueError(
            f"eps={eps!r} cannot be used with sparse=True (it would fill every cell); pass "
            "sparse=False or eps=None."
        )
    table = contingency_table(labels_true, labels_pred, split_every=split_every)
    if sparse:
        C = table.sparse(dtype)
    else:
        C = table.dense(dtype)
        if eps is not None:
            C = C + eps
    if return_labels:
        return C, table.classes, table.clusters
    return C
