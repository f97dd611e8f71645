"""What the first pass of every fit checks and learns about the data.

The checks cost no read of their own: the fit session folds :func:`data_stats_aggregation`
into whichever pass comes first (a sample for the initialisation, the first iteration),
then raises on NaN or inf (with chunk and row), bad sample weights, or magnitudes whose
squares overflow. The per-feature moments set scale-free tolerances, and the largest
magnitude says whether float32 data can be clustered in float32 (:func:`work_precision`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..exceptions import DataError, DclustValueError
from ..kernels.datastats import data_stats_combine, data_stats_partial
from ..reductions.engine import Aggregation, row_offsets

__all__ = [
    "DataChecks",
    "DEFAULT_CHECKS",
    "data_stats_aggregation",
    "check_data_stats",
    "nonfinite_message",
    "safe_magnitude",
    "work_precision",
    "stats_fingerprint",
]


def _data_chunk(X, w, ctx):
    return data_stats_partial(X, w, row_offset=ctx.row_offset)


def data_stats_aggregation():
    """Finiteness, weights, per-feature moments and the largest magnitude of the data."""
    return Aggregation("data-stats", _data_chunk, data_stats_combine)


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


def nonfinite_message(n_bad, where, what="X", fix=None):
    """The one message for NaN or inf found in the data (``where``: "chunk 3, row 1,024")."""
    fix = fix or ("Clean the data first, for example keep the rows where "
                  "da.isfinite(X).all(axis=1).")
    return f"{what} contains {n_bad:,} non-finite values, NaN or inf (first in {where}). {fix}"


def check_data_stats(stats, X):
    """Raise on non-finite values, bad weights or overflowing magnitudes found by a pass."""
    offsets = row_offsets(X.chunks[0])
    if stats["n_nonfinite"]:
        row = int(stats["first_nonfinite"])
        chunk = int(np.searchsorted(offsets, row, side="right") - 1)
        raise DataError(nonfinite_message(stats["n_nonfinite"], f"chunk {chunk}, row {row:,}"))
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


def stats_fingerprint(stats, keys=("count", "mean", "m2", "absmax", "weight_sum")):
    """The data statistics a checkpoint keeps to recognise its data."""
    return {key: np.asarray(stats[key], dtype=np.float64) for key in keys if key in stats}


@dataclass(frozen=True)
class DataChecks:
    """What a fit's first pass computes about its data, and what it does with it.

    Attributes
    ----------
    aggregation : callable
        ``aggregation() -> Aggregation`` folded into the first pass.
    check : callable
        ``check(stats, X)`` raises on data the algorithm cannot use.
    fingerprint : callable
        ``fingerprint(stats) -> dict of arrays`` a checkpoint compares on resume.
    precision : callable or None
        ``precision(stats, X) -> dtype`` the passes must compute in (None: ``X``'s).
    """

    aggregation: Callable
    check: Callable
    fingerprint: Callable = stats_fingerprint
    precision: Callable | None = work_precision


DEFAULT_CHECKS = DataChecks(data_stats_aggregation, check_data_stats)
