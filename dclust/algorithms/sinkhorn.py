"""Entropic optimal transport between rows and clusters, one pass per Sinkhorn iteration.

Problem. Rows ``i`` with mass ``a_i`` (``sum a = 1``), clusters ``j`` with mass ``b_j``
(``sum b = 1``), a cost ``C_ij`` and a regularisation ``eps > 0``:

.. math::
    \\min_{P \\ge 0} \\langle P, C\\rangle + \\varepsilon \\sum_{ij} P_{ij}(\\log P_{ij} - 1)
    \\quad \\text{s.t.}\\quad P 1 = a,\\; P^T 1 = b \\quad (\\text{balanced}),

whose solution is ``P_ij = exp((f_i + g_j - C_ij) / eps)`` for dual potentials ``f, g``.
Log-domain Sinkhorn alternates the exact row and column updates

.. math::
    f_i = \\varepsilon\\log a_i - \\varepsilon\\,\\mathrm{LSE}_j\\frac{g_j - C_{ij}}{\\varepsilon},
    \\qquad
    g_j = \\phi\\,\\Big(\\varepsilon\\log b_j - \\varepsilon\\,\\mathrm{LSE}_i\\frac{f_i - C_{ij}}{\\varepsilon}\\Big),

with ``phi = 1`` (balanced) or ``phi = reg_m / (reg_m + eps)`` when the column marginal
is only enforced through a penalty ``reg_m KL(P^T 1 | b)`` (``marginal="relaxed"``,
unbalanced transport). ``marginal="partial"`` transports only a mass ``rho`` to the
clusters: a zero-cost virtual cluster with mass ``1 - rho`` takes the rest (the columns
are ``[rho b, 1 - rho]``).

Distribution. The row potentials are never stored: each pass (one per iteration) sends
``g`` to every row-chunk, which computes its ``f_i`` and its share of the column
log-sum-exp as ``(max, sum-exp)`` pairs; the tree reduction merges them and the client
updates ``g``. The column sums of the plan come out of the same pass, hence the
marginal error used for stopping. Potentials are float64 throughout.

Potentials returned here are in the units of the costs as given, with the effective
regularisation ``reg_ = reg * scale`` (``scale`` the global cost scale, 1 without
normalisation): ``P_ij = exp((f_i + g_j - C_ij) / reg_)``. POT's ``ot.sinkhorn_log``
returns ``log u = f / reg_`` and ``log v = g / reg_``.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from dataclasses import dataclass, field, replace

import dask.array as da
import numpy as np

from ..exceptions import ConvergenceWarning, DataError, DclustValueError
from ..kernels.sinkhorn import (
    SinkhornState,
    column_log_sums,
    cost_stats_combine,
    cost_stats_partial,
    candidates_combine,
    candidates_partial,
    repair_combine,
    repair_partial,
    sinkhorn_assign_block,
    sinkhorn_combine,
    sinkhorn_partial,
)
from .._xp import to_numpy
from ..reductions.engine import Aggregation, row_offsets, run_pass
from ..runtime.device import check_device, resolve_device, to_device
from ..runtime.progress import Progress

__all__ = [
    "SinkhornResult",
    "sinkhorn_assign",
    "solve_sinkhorn",
    "check_marginal",
    "check_sinkhorn_params",
    "integer_targets",
    "repair_prices",
    "repair_sizes",
]

_MARGINALS = ("balanced", "relaxed", "partial")


# ---- validation ---------------------------------------------------------------------
def check_marginal(values, k, name="b", *, rtol=1e-6):
    """A marginal of ``k`` positive weights summing to one, or a clear error.

    ``"uniform"`` (or ``None``) means ``1/k`` each.
    """
    if values is None or (isinstance(values, str) and values == "uniform"):
        return np.full(k, 1.0 / k)
    if isinstance(values, str):
        raise DclustValueError(
            f"{name}={values!r} is not valid; expected 'uniform' or an array of {k} weights "
            "summing to 1."
        )
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != k:
        raise DclustValueError(
            f"{name} has shape {tuple(v.shape)}; expected ({k},), one weight per cluster."
        )
    if not np.isfinite(v).all():
        raise DclustValueError(f"{name} contains NaN or infinite values; weights must be finite.")
    if (v <= 0).any():
        j = int(np.flatnonzero(v <= 0)[0])
        raise DclustValueError(
            f"{name} has {int((v <= 0).sum())} weight(s) <= 0 (first: {name}[{j}]={float(v[j])!r}); "
            "every cluster needs a positive weight (drop the clusters that should stay empty)."
        )
    total = float(v.sum())
    if abs(total - 1.0) > rtol:
        raise DclustValueError(
            f"{name} sums to {total!r}, off by {total - 1.0:+.3g} from 1; marginals are "
            f"probabilities. Normalise it first: {name} / {name}.sum()."
        )
    return v / total


def check_sinkhorn_params(reg, marginal, reg_m, rho, max_iter, tol, eps_decay=0.5):
    if isinstance(reg, bool) or not isinstance(reg, numbers.Real) or not (reg > 0) or not math.isfinite(reg):
        raise DclustValueError(
            f"reg={reg!r} must be a positive finite number (the entropic regularisation); "
            "small values such as 1e-3 give sharper plans and are safe in the log domain."
        )
    if marginal not in _MARGINALS:
        raise DclustValueError(
            f"marginal={marginal!r} is not valid; expected one of 'balanced', 'relaxed' or 'partial'."
        )
    if marginal != "balanced" and reg_m is not None:
        if isinstance(reg_m, bool) or not isinstance(reg_m, numbers.Real) or not reg_m > 0:
            raise DclustValueError(
                f"reg_m={reg_m!r} must be a positive number (the strength of the KL penalty on "
                "the cluster sizes; math.inf enforces them exactly)."
            )
    if marginal == "partial":
        if rho is None:
            raise DclustValueError(
                "marginal='partial' needs rho, the fraction of the mass to transport, in (0, 1]."
            )
        check_rho(rho)
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise DclustValueError(f"max_iter={max_iter!r} must be a positive integer.")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or tol < 0:
        raise DclustValueError(f"tol={tol!r} must be a number >= 0.")
    if not (isinstance(eps_decay, numbers.Real) and 0 < eps_decay < 1):
        raise DclustValueError(f"eps_decay={eps_decay!r} must be in (0, 1).")


def check_rho(rho, name="rho"):
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not (0 < rho <= 1):
        raise DclustValueError(
            f"{name}={rho!r} must be in (0, 1]: the fraction of the mass sent to the clusters "
            "(1 - rho goes to the virtual cluster)."
        )
    return float(rho)


# ---- the iteration ------------------------------------------------------------------
class _SinkhornChunk:
    def __init__(self, st):
        self.st = st

    def __call__(self, X, w, ctx):
        return sinkhorn_partial(X, self.st, w)


def _aggregation(st, name="sinkhorn"):
    return Aggregation(name, _SinkhornChunk(st), sinkhorn_combine)


@dataclass
class SolveResult:
    g: np.ndarray
    eps: float
    n_iter: int
    n_passes: int
    converged: bool
    error: float
    log_col: np.ndarray
    sums: np.ndarray | None
    history: list = field(default_factory=list)


def solve_sinkhorn(X, w, state, b, *, reg, marginal="balanced", reg_m=None, anneal=True,
                   eps_start=1.0, eps_decay=0.5, max_iter=1000, tol=1e-6, g0=None,
                   want_sums=False, split_every=None, progress=None, name="sinkhorn"):
    """Run log-domain Sinkhorn iterations, one pass each, until the marginals hold.

    Parameters
    ----------
    X : dask.array.Array
        Row-chunked data or costs (see ``state.kind``).
    w : dask.array.Array or None
        Row weights chunked like ``X``; ``a_i = w_i * exp(state.log_mass)``.
    state : SinkhornState
        Template (``g``, ``eps`` and ``want_sums`` are set here).
    b : ndarray (k',)
        Column marginal, the virtual column last when ``state.virtual``.
    reg : float
        Target regularisation (in scaled cost units).
    marginal : {"balanced", "relaxed", "partial"}
    reg_m : float or None
        KL strength on the real columns (``"relaxed"``, or ``"partial"`` when given).
    anneal : bool
        Start at ``eps_start`` and multiply by ``eps_decay`` each iteration down to ``reg``,
        keeping the potentials (warm start).
    max_iter, tol : stopping rule. For exact column marginals the error is
        ``sum_j |S_j - b_j|`` (``S`` the column sums of the plan after the row update); with
        a KL penalty it is ``max_j |g_new_j - g_j| / eps``. Checked once ``eps == reg``.
    g0 : ndarray, optional
        Initial column potentials (default zeros).
    want_sums : bool
        Fold the plan-weighted row sums (a centre update) into the last pass.

    Returns
    -------
    SolveResult
    """
    k1 = b.shape[0]
    logb = np.log(b)
    g = np.zeros(k1) if g0 is None else np.array(g0, dtype=np.float64)
    kr = k1 - (1 if state.virtual else 0)
    phi = np.ones(k1)
    relaxed = marginal == "relaxed" or (marginal == "partial" and reg_m is not None)
    eps = max(reg, eps_start) if anneal else reg
    err = math.inf
    sums = None
    n_passes = 0
    converged = False
    history = []
    log_col = np.zeros(k1)
    for it in range(max_iter):
        at_target = eps <= reg
        last_chance = it == max_iter - 1
        sums_now = want_sums and at_target and (err <= 4 * tol or last_chance)
        if relaxed:
            phi[:kr] = reg_m / (reg_m + eps) if math.isfinite(reg_m) else 1.0
        st = replace(state, g=g, eps=eps, want_sums=sums_now)
        res = run_pass(X, {"sk": _aggregation(st)}, sample_weight=w, split_every=split_every,
                       name=name)["sk"]
        n_passes += 1
        log_col = column_log_sums(res)
        with np.errstate(invalid="ignore"):
            g_new = phi * (g + eps * (logb - log_col))
        if relaxed:
            err = float(np.max(np.abs(g_new - g)) / eps)
        else:
            err = float(np.abs(np.exp(log_col) - b).sum())
        if not np.isfinite(g_new).all():
            raise DataError(
                "Sinkhorn lost a column: its mass underflowed to zero (every row has zero "
                "weight or an infinite cost to it). Check the row weights and the costs."
            )
        history.append(err)
        if progress is not None:
            progress.update("sinkhorn", it + 1, err=err, eps=eps)
        g = g_new
        if sums_now:
            sums = res["sums"]
        if at_target and err <= tol:
            if want_sums and not sums_now:
                # One more iteration, with the centre sums folded in.
                st = replace(state, g=g, eps=eps, want_sums=True)
                res = run_pass(X, {"sk": _aggregation(st)}, sample_weight=w,
                               split_every=split_every, name=name)["sk"]
                n_passes += 1
                log_col = column_log_sums(res)
                g = phi * (g + eps * (logb - log_col))
                sums = res["sums"]
            converged = True
            break
        if anneal and eps > reg:
            eps = max(reg, eps * eps_decay)
    return SolveResult(g=g, eps=eps, n_iter=n_passes, n_passes=n_passes, converged=converged,
                       error=err, log_col=log_col, sums=sums, history=history)


# ---- exact sizes ----------------------------------------------------------------------
def integer_targets(n, b):
    """Integer sizes summing to ``n``, each within 1 of ``n b_j`` (largest remainders)."""
    raw = n * np.asarray(b, dtype=np.float64)
    T = np.floor(raw).astype(np.int64)
    short = int(n - T.sum())
    if short > 0:
        order = np.argsort(-(raw - T), kind="stable")
        T[order[:short]] += 1
    return T


class _RepairChunk:
    def __init__(self, st, m):
        self.st, self.m = st, m

    def __call__(self, X, w, ctx):
        return repair_partial(X, self.st, self.m)


def repair_prices(X, state, caps, *, max_rounds=50, split_every=None, name="sinkhorn-repair"):
    """Lower the prices of overfull clusters until no cluster exceeds its cap.

    A reverse auction on reduced statistics: each round is one pass returning, per
    cluster, its size under the prices ``h`` (hard labels ``argmax_j h_j - C_ij``) and the
    smallest margins of its rows (best minus second-best). An overfull cluster ``j`` with
    ``e`` rows too many lowers ``h_j`` to between its ``e``-th and ``(e+1)``-th smallest
    margins, which moves exactly its ``e`` cheapest rows to their second choice. Prices only
    fall, so rows only leave overfull clusters; the rounds stop when every size is at most
    its cap. With caps summing to ``n`` every size is then exactly its cap.

    Returns
    -------
    h : ndarray (k,)
        Prices (column potentials, scaled cost units).
    counts : ndarray (k,)
    n_rounds : int
    """
    h = np.array(state.g, dtype=np.float64)
    m = 64
    counts = None
    for r in range(max_rounds):
        st = replace(state, g=h, eps=1.0, virtual=False)
        agg = Aggregation(name, _RepairChunk(st, m), repair_combine)
        res = run_pass(X, {"r": agg}, split_every=split_every, name=name)["r"]
        counts = res["counts"]
        excess = counts - caps
        if (excess <= 0).all() or r == max_rounds - 1:
            return h, counts, r + 1  # the counts are those of the returned prices
        ms = res["margins"]
        for j in np.flatnonzero(excess > 0):
            e = int(excess[j])
            mj = ms[j]
            if e < m and np.isfinite(mj[e]):
                lo, hi = mj[e - 1], mj[e]
                delta = 0.5 * (lo + hi) if hi > lo else lo + max(abs(lo), 1.0) * 1e-12
            else:
                top = mj[min(e, m) - 1]
                delta = top + max(abs(top), 1.0) * 1e-9
            h[j] -= delta
        m = int(np.clip(int(excess.max()) + 1, 16, 4096))
    return h, counts, max_rounds  # pragma: no cover (max_rounds >= 1 returns in the loop)


# ---- sinkhorn_assign ------------------------------------------------------------------
@dataclass
class SinkhornResult:
    """The solution of :func:`sinkhorn_assign`.

    Attributes
    ----------
    potentials : ndarray (k,) float64
        Column potentials ``g`` in the units of the given costs (the virtual cluster's,
        when ``marginal="partial"``, is ``virtual_potential``).
    reg : float
        Effective regularisation in cost units (``reg * scale``).
    scale : float
        The global cost scale the costs were divided by (1 without normalisation).
    n_iter : int
    converged : bool
    marginal_error : float
    n_passes : int
        Passes over the costs (the statistics pass and one per iteration).
    column_mass : ndarray (k,)
        Column sums of the plan (cluster masses); the virtual cluster's is
        ``virtual_mass``.
    """

    potentials: np.ndarray
    reg: float
    scale: float
    n_iter: int
    converged: bool
    marginal_error: float
    n_passes: int
    column_mass: np.ndarray
    virtual_potential: float | None = None
    virtual_mass: float | None = None
    _costs: object = field(default=None, repr=False)
    _weights: object = field(default=None, repr=False)
    _state: SinkhornState | None = field(default=None, repr=False)

    def _map(self, what, dtype, cols):
        st, C, w = self._state, self._costs, self._weights
        chunks = (C.chunks[0],) if cols is None else (C.chunks[0], (cols,))
        meta = np.empty((0,) * len(chunks), dtype)
        drop = None if cols else 1
        if w is None or what in ("labels", "soft"):
            return C.map_blocks(_assign_map, st, what, chunks=chunks, drop_axis=drop,
                                dtype=dtype, meta=meta)
        return da.map_blocks(_assign_map_w, C, w[:, None], st, what, chunks=chunks,
                             drop_axis=drop, dtype=dtype, meta=meta)

    @property
    def labels(self):
        """Hard labels ``argmax_j P_ij`` (int32, lazy); ``-1`` for rows whose largest share
        goes to the virtual cluster (``marginal="partial"``)."""
        return self._map("labels", np.int32, None)

    @property
    def soft_assignments(self):
        """Row-normalised plan ``P_ij / a_i`` over the clusters (n x k float64, lazy)."""
        k = self.potentials.shape[0]
        return self._map("soft", np.float64, k)

    @property
    def plan(self):
        """The transport plan ``P_ij`` over the clusters (n x k float64, lazy)."""
        k = self.potentials.shape[0]
        return self._map("plan", np.float64, k)

    @property
    def row_potentials(self):
        """Row potentials ``f_i`` in cost units (float64, lazy)."""
        f = self._map("f", np.float64, None)
        return f * self.scale


def _assign_map(C, st, what):
    return to_numpy(sinkhorn_assign_block(C, st, None, what=what))


def _assign_map_w(C, w, st, what):
    return to_numpy(sinkhorn_assign_block(C, st, w[:, 0], what=what))


def _effective_reg_m(marginal, reg_m):
    """The KL strength the column update uses (``None``: exact column marginals)."""
    if marginal == "relaxed":
        return 1.0 if reg_m is None else float(reg_m)
    if marginal == "partial" and reg_m is not None:
        return float(reg_m)
    return None


class _CostStatsChunk:
    def __call__(self, X, w, ctx):
        return cost_stats_partial(X, w, row_offset=ctx.row_offset)


def _check_cost_stats(stats, C, what):
    offsets = row_offsets(C.chunks[0])
    if stats["n_nonfinite"]:
        row = int(stats["first_nonfinite"])
        chunk = int(np.searchsorted(offsets, row, side="right") - 1)
        raise DataError(
            f"The {what} contain {stats['n_nonfinite']:,} non-finite values, NaN or inf (first "
            f"in chunk {chunk}, row {row:,}). Sinkhorn needs a finite {what[:-1]} for every "
            "row and cluster; clean or clip them first."
        )
    if stats["n_bad_weight"]:
        raise DclustValueError(
            f"a has {stats['n_bad_weight']:,} negative or non-finite weights (first at row "
            f"{int(stats['first_bad_weight']):,}); row masses must be finite and >= 0."
        )


def _as_cost_array(costs, chunks):
    from ..io.zarr_io import from_zarr_array, open_array
    from ..validation import as_dask_rows

    if isinstance(costs, (str, os.PathLike)):
        return open_array(costs, chunks=chunks)
    if type(costs).__module__.startswith("zarr"):
        return from_zarr_array(costs, chunks=chunks)
    C = as_dask_rows(costs, name="costs")
    if isinstance(C, np.ndarray):
        rows = C.shape[0] if chunks in (None, "auto") else int(chunks)
        C = da.from_array(C, chunks=(max(1, rows), C.shape[1]))
    elif chunks not in (None, "auto"):
        C = C.rechunk({0: int(chunks)})
    return C


def sinkhorn_assign(costs_or_scores, *, a=None, b=None, reg=0.05, marginal="balanced",
                    reg_m=None, rho=None, kind="cost", normalize=True, anneal=True,
                    eps_start=1.0, eps_decay=0.5, max_iter=1000, tol=1e-6, chunks="auto",
                    split_every=None, progress=False, device="auto"):
    """Entropic optimal transport of rows to clusters for a user's cost or score matrix.

    Solves, in the log domain and one pass over the matrix per iteration,

    .. math::
        \\min_{P\\ge 0,\\,P1=a} \\langle P, C\\rangle + \\varepsilon\\sum_{ij} P_{ij}(\\log P_{ij}-1)
        + \\mathcal{D}(P^T 1, b)

    where ``D`` is the exact constraint ``P^T 1 = b`` (``marginal="balanced"``), the
    penalty ``reg_m KL(P^T 1 | b)`` (``"relaxed"``), or, for ``"partial"``, the exact
    constraint on ``[rho b, 1 - rho]`` with a zero-cost virtual cluster in last place.
    Nothing ``n x k`` is brought to the client: the result holds ``k`` potentials and
    builds lazy per-row outputs from them.

    Parameters
    ----------
    costs_or_scores : path or URL of a Zarr array, zarr array, dask array or ndarray (n, k)
        Costs ``C`` (``kind="cost"``), or scores such as network logits (``kind="score"``:
        ``C = -scores``).
    a : array (n,), optional
        Row masses summing to 1 (default uniform ``1/n``).
    b : "uniform" or array (k,), optional
        Cluster masses summing to 1 (default uniform).
    reg : float, default=0.05
        Entropic regularisation ``eps``, relative to the cost scale when ``normalize``.
    marginal : {"balanced", "relaxed", "partial"}, default="balanced"
    reg_m : float, optional
        KL strength on the cluster sizes for ``"relaxed"`` (default 1.0, in the same
        units as ``reg``); with ``"partial"`` it relaxes the real clusters when given
        (default: exact).
    rho : float in (0, 1]
        Transported mass for ``"partial"``.
    kind : {"cost", "score"}, default="cost"
    normalize : bool or float, default=True
        Divide the costs by a global scale, the root mean over rows of the variance of
        the row's costs, computed in the first pass (row shifts do not change the plan).
        ``False`` keeps the costs as given; a number is used as the scale.
    anneal : bool, default=True
        Start at ``eps = eps_start`` (scaled units) and decay by ``eps_decay`` each
        iteration to ``reg``, warm-starting the potentials.
    max_iter : int, default=1000
    tol : float, default=1e-6
        Stop when ``sum_j |S_j - b_j| <= tol`` (``S`` the column sums of the plan); with
        a KL penalty when the largest change of ``g / eps`` is below ``tol``.
    chunks : "auto" or int
        Rows per chunk when reading the matrix.
    split_every : int, optional
    progress : bool, default=False
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the passes run. ``"cuda"``: the chunks of the matrix move to the workers'
        GPUs (CuPy) once per pass, and only the ``k`` column log-sums come back; the
        potentials stay float64 on the client. ``"auto"``: the GPUs when every worker has
        one, else the CPUs. The lazy outputs are NumPy-backed either way.

    Returns
    -------
    SinkhornResult
        ``potentials`` (k), ``labels`` / ``soft_assignments`` / ``plan`` /
        ``row_potentials`` as lazy dask arrays (NumPy for NumPy input).

    Raises
    ------
    DclustValueError
        Bad parameters or marginals. DataError for NaN or infinite costs (with chunk and
        row).

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` runs out; the message gives the marginal error reached.

    Examples
    --------
    >>> import numpy as np, dclust
    >>> C = np.random.default_rng(0).random((1000, 4))
    >>> res = dclust.sinkhorn_assign(C, reg=0.01)                    # doctest: +SKIP
    >>> np.bincount(res.labels.compute(), minlength=4)                # doctest: +SKIP
    """
    check_sinkhorn_params(reg, marginal, reg_m, rho, max_iter, tol, eps_decay)
    if kind not in ("cost", "score"):
        raise DclustValueError(f"kind={kind!r} is not valid; expected 'cost' or 'score'.")
    check_device(device)
    C = _as_cost_array(costs_or_scores, chunks)
    C = to_device(C, resolve_device(device))
    n, k = C.shape
    bv = check_marginal(b, k, "b")
    w = None
    log_mass = -math.log(n)
    if a is not None:
        if isinstance(a, da.Array):
            if a.shape != (n,):
                raise DclustValueError(f"a has shape {a.shape}; expected ({n},), one mass per row.")
            w = a.astype(np.float64).rechunk((C.chunks[0],))
        else:
            av = np.asarray(a, dtype=np.float64)
            if av.shape != (n,):
                raise DclustValueError(
                    f"a has shape {tuple(av.shape)}; expected ({n},), one mass per row."
                )
            if not np.isfinite(av).all() or (av < 0).any():
                j = int(np.flatnonzero(~(np.isfinite(av) & (av >= 0)))[0])
                raise DclustValueError(
                    f"a has negative or non-finite masses (first: a[{j}]={float(av[j])!r}); row "
                    "masses must be finite and >= 0."
                )
            w = da.from_array(av, chunks=(C.chunks[0],))
        log_mass = 0.0
    sign = -1.0 if kind == "score" else 1.0
    stats = run_pass(C, {"s": Aggregation("sinkhorn-cost-stats", _CostStatsChunk(), cost_stats_combine)},
                     sample_weight=w, split_every=split_every, name="sinkhorn-cost-stats")["s"]
    _check_cost_stats(stats, C, "scores" if kind == "score" else "costs")
    if a is not None:
        total = stats["wsum"]
        if abs(total - 1.0) > 1e-6:
            raise DclustValueError(
                f"a sums to {total!r}, off by {total - 1.0:+.3g} from 1; row masses are "
                "probabilities. Normalise it first: a / a.sum()."
            )
    if normalize is True:
        scale = math.sqrt(stats["spread2"] / max(stats["rows"], 1))
        scale = scale if scale > 0 else 1.0
    elif normalize is False or normalize is None:
        scale = 1.0
    else:
        scale = float(normalize)
        if not (scale > 0 and math.isfinite(scale)):
            raise DclustValueError(f"normalize={normalize!r} must be True, False or a positive scale.")
    virtual = marginal == "partial" and rho < 1
    bfull = np.append(rho * bv, 1.0 - rho) if virtual else bv
    state = SinkhornState(kind="costs", g=np.zeros(bfull.shape[0]), eps=reg, scale=scale,
                          sign=sign, virtual=virtual, log_mass=log_mass)
    prog = Progress(f"sinkhorn(k={k})", enabled=bool(progress))
    sol = solve_sinkhorn(C, w, state, bfull, reg=reg, marginal=marginal,
                         reg_m=_effective_reg_m(marginal, reg_m),
                         anneal=anneal, eps_start=eps_start, eps_decay=eps_decay,
                         max_iter=max_iter, tol=tol, split_every=split_every, progress=prog)
    prog.close(f"sinkhorn(k={k}): {sol.n_iter} iterations, marginal error {sol.error:.3g}")
    if not sol.converged:
        warnings.warn(
            f"Sinkhorn stopped at max_iter={max_iter} with marginal error {sol.error:.3g} > "
            f"tol={tol}; raise max_iter, raise reg, or loosen tol.",
            ConvergenceWarning, stacklevel=2,
        )
    final = replace(state, g=sol.g, eps=reg)
    mass = np.exp(sol.log_col)
    return SinkhornResult(
        potentials=sol.g[:k] * scale,
        reg=reg * scale,
        scale=scale,
        n_iter=sol.n_iter,
        converged=sol.converged,
        marginal_error=sol.error,
        n_passes=sol.n_passes + 1,
        column_mass=mass[:k],
        virtual_potential=float(sol.g[k] * scale) if virtual else None,
        virtual_mass=float(mass[k]) if virtual else None,
        _costs=C,
        _weights=w,
        _state=final,
    )


class _CandidatesChunk:
    def __init__(self, st, under, want):
        self.st, self.under, self.want = st, under, want

    def __call__(self, X, w, ctx):
        return candidates_partial(X, self.st, self.under, self.want, row_offset=ctx.row_offset)


def repair_sizes(X, state, targets, caps=None, *, max_rounds=10, split_every=None,
                 name="sinkhorn-repair"):
    """Hard labels whose cluster sizes respect ``caps`` (exactly ``targets`` by default).

    Two stages, each a few passes returning only reduced statistics:

    1. :func:`repair_prices` (at most ``max_rounds`` passes): overfull clusters lower
       their prices, which moves their cheapest rows to their second choice and shrinks
       the excess without any per-row state.
    2. If some cluster is still above its cap, one pass collects, for each overfull
       cluster ``l`` with ``e_l`` rows too many, its ``2 e_l`` rows with the smallest
       regret of moving to an underfull cluster (with their regrets towards every
       underfull cluster), and the client moves exactly ``e_l`` of them, greedily by
       regret, into clusters that still lack rows. The moves are returned as a short
       list of ``(row, label)`` overrides.

    Returns
    -------
    h : ndarray (k,) prices
    override_rows, override_labels : int64 arrays (sorted by row)
    counts : ndarray (k,) final sizes
    n_passes : int
    """
    caps = targets if caps is None else caps
    h, counts, n_passes = repair_prices(X, state, caps, max_rounds=max_rounds,
                                        split_every=split_every, name=name)
    excess = counts - caps
    no = np.zeros(0, dtype=np.int64)
    if (excess <= 0).all():
        return h, no, no, counts, n_passes
    over = np.maximum(excess, 0)
    # Where the rows go: clusters below their target (below their cap when caps > targets).
    room = np.maximum(targets - counts, 0)
    if room.sum() < over.sum():
        room = np.maximum(caps - counts, 0)
    under = np.flatnonzero(room > 0)
    want = np.minimum(2 * over, np.maximum(counts, 0))
    st = replace(state, g=h, eps=1.0, virtual=False)
    agg = Aggregation(name, _CandidatesChunk(st, under, want), candidates_combine(want))
    cand = run_pass(X, {"c": agg}, split_every=split_every, name=name)["c"]
    n_passes += 1
    R = cand["regret"]
    order = np.argsort(R, axis=None, kind="stable")
    taken = np.zeros(R.shape[0], dtype=bool)
    need = over.copy()
    left = room.copy()
    rows, labels = [], []
    for flat in order:
        i, u = divmod(int(flat), R.shape[1])
        lab = int(cand["label"][i])
        tgt = int(under[u])
        if taken[i] or need[lab] <= 0 or left[tgt] <= 0:
            continue
        taken[i] = True
        need[lab] -= 1
        left[tgt] -= 1
        rows.append(int(cand["row"][i]))
        labels.append(tgt)
        counts[lab] -= 1
        counts[tgt] += 1
        if not need.any():
            break
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(rows)
    return h, rows[order], labels[order], counts, n_passes
