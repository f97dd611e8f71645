"""k-means whose assignment step is entropic optimal transport, on the fit session.

Each outer iteration solves the transport problem between the rows and the clusters
(cluster masses ``b``) for the cost ``||x - c_j||^2 / scale`` with log-domain Sinkhorn,
then moves each centre to the plan-weighted mean of the rows, whose sums are folded
into the solve's last pass. The loop is flattened to one pass per session iteration
(a Sinkhorn step; the centre update happens on the pass that ends a solve), so a
checkpoint is saved after every pass. ``scale`` is twice the total variance of ``X``.

After the loop, :func:`finalize` optionally repairs the sizes (exact targets) and
computes the k-means inertia of the hard labels (one pass).
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np

from ..kernels.sinkhorn import SinkhornState, hard_inertia_partial
from ..reductions.engine import Aggregation
from ..reductions.monoids import sum_combine
from .kmeans import _tolerance, init_centers
from .session import Algorithm
from .sinkhorn import SinkhornSolver
from .size_repair import integer_targets, repair_sizes
from .transport_params import effective_reg_m

__all__ = ["BalancedLloyd", "inertia_aggregation"]


def _inertia_chunk(X, w, ctx, st, rows, labels):
    return hard_inertia_partial(X, st, w, rows=rows, labels=labels, row_offset=ctx.row_offset)


def inertia_aggregation(st, rows=None, labels=None):
    """One pass's k-means inertia under the hard labels of the prices ``st.g`` (with the
    overrides ``labels`` at the global ``rows``)."""
    return Aggregation("balanced-kmeans-inertia", _inertia_chunk,
                       partial(sum_combine, keys=("inertia", "weight"))).bind(st, rows, labels)


class BalancedLloyd(Algorithm):
    """Outer k-means iterations with a Sinkhorn assignment, one pass per step.

    Parameters
    ----------
    n_clusters : int
    b : ndarray (n_clusters,)
        Cluster masses (summing to one).
    init : str, ndarray or callable
    seed : int
    reg, marginal, reg_m, rho, rho_schedule, rho0 : transport parameters (see
        :class:`dclust.BalancedKMeans`).
    max_iter, tol : outer iterations and centre-shift tolerance.
    sinkhorn_max_iter, sinkhorn_tol, anneal, eps_decay : the inner solves.
    size_tolerance : float or None
        Repair the hard labels' sizes after the loop (see :class:`dclust.BalancedKMeans`).
    """

    name = "BalancedKMeans"

    def __init__(self, n_clusters, b, *, init, seed, reg, marginal, reg_m, rho, rho_schedule,
                 rho0, max_iter, tol, sinkhorn_max_iter, sinkhorn_tol, anneal, eps_decay,
                 size_tolerance=None):
        self.k = int(n_clusters)
        self.b = b
        self.init = init
        self.seed = int(seed)
        self.reg = float(reg)
        self.marginal = marginal
        self.reg_m = effective_reg_m(marginal, reg_m)
        self.rho, self.rho_schedule, self.rho0 = rho, rho_schedule, rho0
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.sinkhorn_max_iter, self.sinkhorn_tol = sinkhorn_max_iter, sinkhorn_tol
        self.anneal, self.eps_decay = bool(anneal), eps_decay
        self.size_tolerance = size_tolerance
        self.init_label = init if isinstance(init, str) else (
            "callable" if callable(init) else "array")

    def rho_at(self, it):
        """Transported mass of outer iteration ``it`` (``rho_schedule="linear"`` grows it)."""
        if self.marginal != "partial":
            return 1.0
        rho = float(self.rho)
        if self.rho_schedule == "linear" and self.max_iter > 1:
            r0 = min(float(self.rho0), rho)
            return r0 + (rho - r0) * min(1.0, it / max(1, self.max_iter - 1))
        return rho

    def _solver(self, state):
        it = state["it"]
        rho = self.rho_at(it)
        virtual = self.marginal == "partial" and rho < 1
        bfull = np.append(rho * self.b, 1.0 - rho) if virtual else self.b
        st = SinkhornState(kind="points", g=np.zeros(bfull.shape[0]), eps=self.reg,
                           centers=state["centers"], scale=state["scale"], virtual=virtual,
                           log_mass=-math.log(state["wsum"]))
        return SinkhornSolver(st, bfull, reg=self.reg, marginal=self.marginal, reg_m=self.reg_m,
                              anneal=self.anneal and it == 0, eps_decay=self.eps_decay,
                              max_iter=self.sinkhorn_max_iter, tol=self.sinkhorn_tol,
                              want_sums=True, name="balanced-kmeans-sinkhorn")

    def init_state(self, session):
        centers = init_centers(session, self.k, self.init, self.seed)
        stats = session.ensure_data_stats(name="balanced-kmeans-stats")
        var = np.asarray(stats["m2"]) / max(float(stats["count"]), 1.0)
        scale = 2.0 * float(var.sum())
        wsum = float(stats["weight_sum"]) if session.w is not None else float(session.n_samples)
        return {"centers": centers, "scale": scale if scale > 0 else 1.0, "wsum": wsum,
                "g": None, "it": 0, "sk": None, "n_sk": 0, "shift": math.inf,
                "converged": False, "done": False, "err": math.inf, "sk_converged": False,
                "log_col": np.zeros(0)}

    def _solve(self, state):
        """The Sinkhorn solver of ``state``'s outer iteration and its solve's state."""
        solver = self._solver(state)
        sk = state["sk"]
        if sk is None:
            g = state["g"]
            k1 = solver.b.shape[0]
            if g is not None and g.shape[0] != k1:
                g = np.append(g, 0.0) if solver.template.virtual else g[: self.k]
            sk = solver.start(g)
        return solver, sk

    def pass_aggregations(self, state):
        """The pass of the next iteration (a Sinkhorn iteration of the current solve)."""
        solver, sk = self._solve(state)
        return solver.aggregations(sk)

    def after_pass(self, state, res, tol_abs):
        """The state after that pass returned ``res``: the solve's column update and, once
        the solve is over, the centres' move. A function of its arguments alone, so that
        a chain runs it on a worker."""
        state = dict(state)
        solver, sk = self._solve(state)
        sk = solver.advance(sk, res)
        if not sk["done"]:
            state["sk"] = sk
            return state
        # The solve is over: move the centres to the plan-weighted means.
        centers = state["centers"]
        mass = np.exp(sk["log_col"][: self.k])
        new = centers.copy()
        ok = mass > 1e-300
        new[ok] = sk["sums"][ok] / mass[ok, None]
        shift = float(((new - centers) ** 2).sum())
        it = state["it"]
        schedule_done = self.rho_at(it) >= self.rho_at(self.max_iter - 1)
        converged = shift <= tol_abs and schedule_done
        state.update(centers=new, g=sk["g"], it=it + 1, sk=None, n_sk=state["n_sk"] + sk["n_passes"],
                     shift=shift, converged=converged, err=float(sk["err"]),
                     sk_converged=bool(sk["converged"]), log_col=sk["log_col"],
                     done=converged or it + 1 >= self.max_iter)
        return state

    def one_iteration(self, session, state):
        return self.iterations(session, state, 1)[0]

    def iterations(self, session, state, n):
        """Up to ``n`` Sinkhorn iterations (passes) in one round trip to the cluster, across
        the end of a solve and the centres' move when they come (Sinkhorn's passes are
        short: one row update each)."""
        return self.chain(session, state, n, name="balanced-kmeans-sinkhorn",
                          step_kw=lambda: {"tol_abs": _tolerance(session.data_stats, self.tol)})

    def converged(self, state):
        return bool(state["done"])

    def report(self, state):
        if state["sk"] is None:
            return "iter", state["it"], {"shift": state["shift"], "err": state["err"]}
        sk = state["sk"]
        return "sinkhorn", sk["n_passes"], {"err": sk["err"], "eps": sk["eps"]}

    def finalize(self, session, state):
        """Size repair (when asked), warnings and the inertia of the hard labels."""
        k, centers, scale = self.k, state["centers"], state["scale"]
        rho = self.rho_at(state["it"] - 1)
        virtual = self.marginal == "partial" and rho < 1
        prices = np.array(state["g"], dtype=np.float64)
        n_rounds = 0
        o_rows = o_labels = None
        size_tolerance = self.size_tolerance
        if size_tolerance is not None:
            n = session.n_samples
            T = integer_targets(n, self.b)
            caps = T if size_tolerance == 0 else np.maximum(
                T, np.floor(n * self.b * (1 + float(size_tolerance))).astype(np.int64))
            st = SinkhornState(kind="points", g=prices[:k], eps=1.0, centers=centers, scale=scale)
            prices, o_rows, o_labels, counts, n_rounds = repair_sizes(session, st, T, caps)
            if (counts > caps).any():
                from ..exceptions import ConvergenceWarning  # imports scikit-learn: not on workers

                warnings.warn(
                    f"The size repair stopped after {n_rounds} rounds with "
                    f"{int(np.maximum(counts - caps, 0).sum())} row(s) above their cluster's "
                    "target (ties between equally distant rows); the sizes are close but not "
                    "exact.",
                    ConvergenceWarning, stacklevel=4,
                )
        st = SinkhornState(kind="points", g=prices, eps=self.reg, centers=centers, scale=scale,
                           virtual=virtual)
        hard = session.run_pass({"i": inertia_aggregation(st, o_rows, o_labels)},
                                name="balanced-kmeans-inertia")["i"]
        log_col = state["log_col"]
        return {
            "centers": centers, "prices": prices, "scale": scale, "virtual": virtual,
            "inertia": float(hard["inertia"]), "mass": np.exp(log_col[:k]),
            "virtual_mass": float(np.exp(log_col[k])) if virtual else 0.0,
            "error": state["err"], "sk_converged": state["sk_converged"],
            "n_iter": state["it"], "n_sk": state["n_sk"], "n_rounds": int(n_rounds),
            "converged": bool(state["converged"]),
            "override_rows": np.zeros(0, np.int64) if o_rows is None else o_rows,
            "override_labels": np.zeros(0, np.int64) if o_labels is None else o_labels,
        }
