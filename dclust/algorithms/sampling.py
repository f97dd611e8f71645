"""Drawing rows of the full data in one pass: weighted samples without replacement."""

from __future__ import annotations

from functools import partial

from ..kernels.sampling import reservoir_partial
from ..reductions.engine import Aggregation
from ..reductions.monoids import top_combine

__all__ = ["sample_aggregation", "sample_rows"]

_KEYS = ("key", "row", "x", "weight")


def _sample_chunk(X, w, ctx, m, seed, n_total):
    # The global top m holds about m * n_chunk / n rows of a chunk: a few times that
    # (capped at m) keeps the sample exact while the data moved stays proportional to m.
    cap = min(m, int(2 * m * ctx.n_rows / max(n_total, 1)) + 64 + m // 64)
    return reservoir_partial(X, w, m, seed, block_id=ctx.block_id, row_offset=ctx.row_offset,
                             cap=cap)


def sample_aggregation(m, seed, n_total):
    """A weighted sample of ``m`` rows without replacement (A-Res, seeded per chunk)."""
    return Aggregation("sample-rows", partial(_sample_chunk, m=int(m), seed=int(seed),
                                              n_total=int(n_total)),
                       partial(top_combine, size=int(m), by="key", keys=_KEYS, tiebreak="row"))


def sample_rows(session, m, seed, *, name="sample"):
    """One pass of ``session`` drawing ``m`` rows (weighted, without replacement).

    Returns
    -------
    sample : dict with ``x`` (rows), ``row`` (global indices) and ``weight``.
    """
    res = session.run_pass({"sample": sample_aggregation(m, seed, session.n_samples)},
                           name=name, precision_sensitive=False)
    return res["sample"]
