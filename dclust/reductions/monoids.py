"""Reusable combiners for per-chunk statistics (the ``combine`` half of a monoid)."""

from __future__ import annotations

import numpy as np

from .._xp import to_numpy

__all__ = ["sum_combine", "top_combine", "fields_combine"]


def sum_combine(parts, keys):
    """Element-wise sum of the arrays under ``keys`` (identity: zeros)."""
    out = {}
    for key in keys:
        acc = parts[0][key]
        for p in parts[1:]:
            acc = acc + p[key]
        out[key] = acc
    return out


def top_combine(parts, size, by, keys, tiebreak):
    """Keep the ``size`` entries with the largest ``by`` (ties: smallest ``tiebreak``).

    The entries of one part are rows of the arrays under ``keys`` (which include ``by``
    and ``tiebreak``); the result is sorted, so the merge is associative and its output
    does not depend on the order of ``parts``.
    """
    cat = {k: np.concatenate([to_numpy(p[k]) for p in parts]) for k in keys}
    order = np.lexsort((cat[tiebreak], -cat[by]))[:size]
    return {k: v[order] for k, v in cat.items()}


def fields_combine(parts, *, sums=(), top=None):
    """Combine dicts whose fields are sums and one top-``size`` group.

    Parameters
    ----------
    parts : list of dict
    sums : sequence of str
        Keys combined by addition.
    top : tuple (size, by, keys, tiebreak), optional
        A group of keys combined by :func:`top_combine`.
    """
    out = sum_combine(parts, sums)
    if top is not None:
        size, by, keys, tiebreak = top
        out.update(top_combine(parts, size, by, keys, tiebreak))
    return out
