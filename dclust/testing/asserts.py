"""Comparing clusterings whose cluster ids are arbitrary.

Two runs that find the same partition may number its clusters differently, so labels are
compared after the renaming of ids that makes them agree most: a maximum-weight matching
on the contingency table (the Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["assert_labels_equivalent", "best_permutation", "label_agreement"]

# Pairs of the renaming shown in a failure message; thousands of clusters would drown it.
_SHOWN = 20


def _as_labels(x, name):
    if hasattr(x, "compute") and not isinstance(x, np.ndarray):
        x = x.compute()  # labels are one integer per row: small next to the data
    x = np.asarray(x)
    if x.ndim != 1:
        raise AssertionError(f"{name} must be 1-D labels; got an array of shape {x.shape}.")
    return x


def _contingency(a, b):
    ids_a, inv_a = np.unique(a, return_inverse=True)
    ids_b, inv_b = np.unique(b, return_inverse=True)
    inv_a, inv_b = inv_a.ravel(), inv_b.ravel()
    table = np.zeros((ids_a.size, ids_b.size), dtype=np.int64)
    np.add.at(table, (inv_a, inv_b), 1)
    return ids_a, ids_b, table, inv_a, inv_b


def _match(a, b):
    from scipy.optimize import linear_sum_assignment

    ids_a, ids_b, table, inv_a, inv_b = _contingency(a, b)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return ids_a, ids_b, table, rows, cols, (inv_a, inv_b)


def _load_pair(a, b):
    a = _as_labels(a, "a")
    b = _as_labels(b, "b")
    if a.shape != b.shape:
        raise AssertionError(
            f"Label arrays differ in length: a has {a.shape[0]} labels, b has {b.shape[0]}."
        )
    return a, b


def best_permutation(a, b):
    """The renaming of ``a``'s cluster ids that agrees best with ``b``.

    Parameters
    ----------
    a, b : array-like or dask array of shape (n_samples,)
        Cluster labels (any hashable-and-sortable ids, such as integers).

    Returns
    -------
    mapping : dict
        ``{id in a: id in b}`` for the matched clusters. When ``a`` has more clusters
        than ``b`` the surplus ones are left out.

    Examples
    --------
    >>> best_permutation([0, 0, 1, 2], [5, 5, 3, 4])
    {0: 5, 1: 3, 2: 4}
    """
    a, b = _load_pair(a, b)
    ids_a, ids_b, _, rows, cols, _ = _match(a, b)
    return {ids_a[r].item(): ids_b[c].item() for r, c in zip(rows, cols)}


def label_agreement(a, b):
    """Fraction of rows whose labels agree under :func:`best_permutation` (1.0 = same partition)."""
    a, b = _load_pair(a, b)
    if a.size == 0:
        return 1.0
    _, _, table, rows, cols, _ = _match(a, b)
    return float(table[rows, cols].sum()) / a.size


def assert_labels_equivalent(a, b, *, min_agreement=1.0):
    """Assert that two labelings are the same partition up to a renaming of cluster ids.

    Parameters
    ----------
    a, b : array-like or dask array of shape (n_samples,)
        Cluster labels.
    min_agreement : float, default=1.0
        Fraction of rows that must agree after the best renaming; ``1.0`` demands the
        same partition, ``0.99`` tolerates 1% of rows in other clusters.

    Raises
    ------
    AssertionError
        The lengths differ, or fewer than ``min_agreement`` of the rows agree. The
        message gives the agreement, the renaming and the first disagreeing row.

    Examples
    --------
    >>> assert_labels_equivalent([0, 0, 1, 1], [1, 1, 0, 0])
    """
    if not 0.0 <= float(min_agreement) <= 1.0:
        raise ValueError(f"min_agreement={min_agreement!r} must be between 0 and 1.")
    a, b = _load_pair(a, b)
    n = a.size
    if n == 0:
        return
    ids_a, ids_b, table, rows, cols, (inv_a, inv_b) = _match(a, b)
    agree = int(table[rows, cols].sum())
    if agree >= min_agreement * n:
        return
    # Rows whose a-id has no partner (a has more clusters than b) disagree by definition.
    partner = np.full(ids_a.size, -1, dtype=np.int64)
    partner[rows] = cols
    bad = np.flatnonzero(partner[inv_a] != inv_b)
    pairs = [f"{ids_a[r].item()!r}->{ids_b[c].item()!r}" for r, c in zip(rows, cols)]
    shown = ", ".join(pairs[:_SHOWN]) + (f", ... ({len(pairs)} pairs)" if len(pairs) > _SHOWN else "")
    where = ""
    if bad.size:
        first = int(bad[0])
        where = f"; first at row {first}: a={a[first].item()!r}, b={b[first].item()!r}"
    raise AssertionError(
        f"Labels are not equivalent up to a renaming of cluster ids: {agree:,} of {n:,} rows "
        f"agree ({agree / n:.2%}), {min_agreement:.2%} required. a has {ids_a.size} clusters, "
        f"b has {ids_b.size}; best renaming a->b: {shown}; {n - agree:,} row(s) differ{where}."
    )
