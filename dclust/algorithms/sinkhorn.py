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
from dataclasses import dataclass, field, replace

import numpy as np

from ..exceptions import DataError
from ..kernels.sinkhorn import column_log_sums, sinkhorn_combine, sinkhorn_partial
from ..reductions.engine import Aggregation

__all__ = ["SinkhornSolver", "SolveResult", "solve_sinkhorn", "sinkhorn_aggregation"]


def _sinkhorn_chunk(X, w, ctx, st):
    return sinkhorn_partial(X, st, w)


def sinkhorn_aggregation(st, name="sinkhorn"):
    """One Sinkhorn iteration's column statistics under the state ``st`` (bound as per-pass
    state, so the engine sizes it like any other and inlines it only when small)."""
    return Aggregation(name, _sinkhorn_chunk, sinkhorn_combine).bind(st)


class SinkhornSolver:
    """Log-domain Sinkhorn as a resumable state machine: one pass per :meth:`step`.

    The state is a dict of JSON scalars and arrays (``g``, ``eps``, ``err``, ``it``,
    ``n_passes``, ``done``, ``converged``, ``finishing``, ``log_col``, ``sums``,
    ``history``), so a fit session can checkpoint it after every pass and resume it to
    the same result.

    Parameters
    ----------
    state : SinkhornState
        Template (``g``, ``eps`` and ``want_sums`` are set per pass).
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
    want_sums : bool
        Fold the plan-weighted row sums (a centre update) into the last pass.
    """

    def __init__(self, state, b, *, reg, marginal="balanced", reg_m=None, anneal=True,
                 eps_start=1.0, eps_decay=0.5, max_iter=1000, tol=1e-6, want_sums=False,
                 name="sinkhorn"):
        self.template = state
        self.b = np.asarray(b, dtype=np.float64)
        self.logb = np.log(self.b)
        self.reg = float(reg)
        self.reg_m = reg_m
        self.relaxed = marginal == "relaxed" or (marginal == "partial" and reg_m is not None)
        self.anneal = bool(anneal)
        self.eps_start = eps_start
        self.eps_decay = eps_decay
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.want_sums = bool(want_sums)
        self.name = name
        self.kr = self.b.shape[0] - (1 if state.virtual else 0)

    def start(self, g0=None) -> dict:
        """The state before the first pass (potentials ``g0``, default zeros)."""
        k1 = self.b.shape[0]
        g = np.zeros(k1) if g0 is None else np.array(g0, dtype=np.float64)
        eps = max(self.reg, self.eps_start) if self.anneal else self.reg
        return {"g": g, "eps": float(eps), "err": math.inf, "it": 0, "n_passes": 0,
                "done": False, "converged": False, "finishing": False,
                "log_col": np.zeros(k1), "sums": None, "history": []}

    def _phi(self, eps):
        phi = np.ones(self.b.shape[0])
        if self.relaxed:
            phi[: self.kr] = self.reg_m / (self.reg_m + eps) if math.isfinite(self.reg_m) else 1.0
        return phi

    def _sums_now(self, s: dict) -> bool:
        at_target = s["eps"] <= self.reg
        last_chance = s["it"] == self.max_iter - 1
        return self.want_sums and at_target and (s["err"] <= 4 * self.tol or last_chance)

    def aggregations(self, s: dict) -> dict:
        """The pass of the next :meth:`step` from state ``s``: ``{"sk": Aggregation}``."""
        want = True if s["finishing"] else self._sums_now(s)
        st = replace(self.template, g=s["g"], eps=s["eps"], want_sums=want)
        return {"sk": sinkhorn_aggregation(st)}

    def advance(self, s: dict, results: dict) -> dict:
        """The state after the pass of :meth:`aggregations` (``results``, keyed like it):
        the column update. A function of ``s`` and ``results`` alone, so a chain of passes
        can run it on a worker."""
        s = dict(s)
        g, eps = s["g"], s["eps"]
        res = results["sk"]
        log_col = column_log_sums(res)
        if s["finishing"]:
            # Converged: one more iteration at the same eps, with the centre sums folded in.
            s.update(g=self._phi(eps) * (g + eps * (self.logb - log_col)), log_col=log_col,
                     sums=res["sums"], n_passes=s["n_passes"] + 1, finishing=False,
                     converged=True, done=True)
            return s
        at_target = eps <= self.reg
        sums_now = self._sums_now(s)
        phi = self._phi(eps)
        with np.errstate(invalid="ignore"):
            g_new = phi * (g + eps * (self.logb - log_col))
        if self.relaxed:
            err = float(np.max(np.abs(g_new - g)) / eps)
        else:
            err = float(np.abs(np.exp(log_col) - self.b).sum())
        if not np.isfinite(g_new).all():
            raise DataError(
                "Sinkhorn lost a column: its mass underflowed to zero (every row has zero "
                "weight or an infinite cost to it). Check the row weights and the costs."
            )
        s.update(g=g_new, err=err, log_col=log_col, it=s["it"] + 1, n_passes=s["n_passes"] + 1,
                 history=list(s["history"]) + [err])
        if sums_now:
            s["sums"] = res["sums"]
        if at_target and err <= self.tol:
            if self.want_sums and not sums_now:
                s["finishing"] = True
            else:
                s.update(converged=True, done=True)
            return s
        if self.anneal and eps > self.reg:
            s["eps"] = float(max(self.reg, eps * self.eps_decay))
        if s["it"] >= self.max_iter:
            s["done"] = True
        return s

    def step(self, session, s: dict) -> dict:
        """One pass: a row update on the chunks, the column update here."""
        return self.advance(s, session.run_pass(self.aggregations(s), name=self.name))

    def result(self, s: dict) -> "SolveResult":
        return SolveResult(g=s["g"], eps=s["eps"], n_iter=s["n_passes"], n_passes=s["n_passes"],
                           converged=bool(s["converged"]), error=float(s["err"]),
                           log_col=s["log_col"], sums=s["sums"], history=list(s["history"]))


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


def solve_sinkhorn(X, w, state, b, *, split_every=None, progress=None, session=None, **params):
    """Run log-domain Sinkhorn iterations, one pass each, until the marginals hold.

    ``X`` (row-chunked data or costs, see ``state.kind``) and ``w`` (row weights chunked
    like ``X``) are read as given, through a fit session without data checks;
    ``params`` are :class:`SinkhornSolver`'s, plus ``g0`` (initial potentials).

    Returns
    -------
    SolveResult
    """
    from .session import FitSession

    g0 = params.pop("g0", None)
    solver = SinkhornSolver(state, b, **params)
    if session is None:
        session = FitSession(X, w, algorithm="sinkhorn", split_every=split_every, checks=None,
                             place=False, name="costs").open(random_state=0)
    s = solver.start(g0)
    while not s["done"]:
        s = solver.step(session, s)
        if progress is not None:
            progress.update("sinkhorn", s["n_passes"], err=s["err"], eps=s["eps"])
    return solver.result(s)
