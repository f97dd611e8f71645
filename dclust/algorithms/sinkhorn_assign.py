"""``sinkhorn_assign``: entropic optimal transport of rows to clusters for a cost or score
matrix the user already has (network logits, say), one pass per Sinkhorn iteration.

The costs' first pass (finiteness, row masses, the global cost scale) is the fit
session's data check; the solve is :class:`~dclust.algorithms.sinkhorn.SinkhornSolver`
stepped by the session, so it reports progress and checkpoints after every iteration.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field, replace
from functools import partial

import dask.array as da
import numpy as np

from .._xp import to_numpy
from ..exceptions import DataError, DclustValueError
from ..kernels.sinkhorn import SinkhornState, cost_stats_combine, cost_stats_partial, sinkhorn_assign_block
from ..reductions.engine import Aggregation, row_offsets
from ..runtime.device import check_device, resolve_device, to_device
from .datachecks import DataChecks
from .session import Algorithm, FitSession
from .sinkhorn import SinkhornSolver
from .transport_params import check_marginal, check_sinkhorn_params, effective_reg_m

__all__ = ["SinkhornResult", "sinkhorn_assign"]


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



def _check_cost_stats(stats, C, what, weighted=False):
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
    if weighted and abs(stats["wsum"] - 1.0) > 1e-6:
        total = stats["wsum"]
        raise DclustValueError(
            f"a sums to {total!r}, off by {total - 1.0:+.3g} from 1; row masses are "
            "probabilities. Normalise it first: a / a.sum()."
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


def _cost_stats_chunk(X, w, ctx):
    return cost_stats_partial(X, w, row_offset=ctx.row_offset)


def cost_stats_aggregation():
    """Finiteness, row masses and the spread of the costs, folded into the first pass."""
    return Aggregation("sinkhorn-cost-stats", _cost_stats_chunk, cost_stats_combine)


def _cost_fingerprint(stats):
    return {k: np.asarray(stats[k], dtype=np.float64) for k in ("rows", "spread2", "wsum")}


def cost_checks(what, weighted):
    """The first pass over a cost matrix: NaN/inf (naming chunk and row), row masses."""
    return DataChecks(cost_stats_aggregation, partial(_check_cost_stats, what=what,
                                                      weighted=weighted),
                      fingerprint=_cost_fingerprint, precision=None)


class _Assign(Algorithm):
    """The solve of :func:`sinkhorn_assign` as an algorithm of the fit session."""

    name = "sinkhorn_assign"

    def __init__(self, template, bfull, normalize, solver_params):
        self.template, self.bfull, self.normalize = template, bfull, normalize
        self.solver_params = solver_params

    def _solver(self, scale):
        return SinkhornSolver(replace(self.template, scale=scale), self.bfull, **self.solver_params)

    def init_state(self, session):
        stats = session.ensure_data_stats(name="sinkhorn-cost-stats")
        if self.normalize is True:
            scale = math.sqrt(stats["spread2"] / max(stats["rows"], 1))
            scale = scale if scale > 0 else 1.0
        elif self.normalize is False or self.normalize is None:
            scale = 1.0
        else:
            scale = float(self.normalize)
        return {"scale": scale, "sk": self._solver(scale).start()}

    def pass_aggregations(self, state):
        return self._solver(state["scale"]).aggregations(state["sk"])

    def after_pass(self, state, res):
        return {"scale": state["scale"],
                "sk": self._solver(state["scale"]).advance(state["sk"], res)}

    def one_iteration(self, session, state):
        return self.iterations(session, state, 1)[0]

    def iterations(self, session, state, n):
        """Up to ``n`` Sinkhorn passes in one round trip to the cluster (same bits)."""
        return self.chain(session, state, n, name=self._solver(state["scale"]).name)

    def converged(self, state):
        return bool(state["sk"]["done"])

    def report(self, state):
        sk = state["sk"]
        return "sinkhorn", sk["n_passes"], {"err": sk["err"], "eps": sk["eps"]}


def sinkhorn_assign(costs_or_scores, *, a=None, b=None, reg=0.05, marginal="balanced",
                    reg_m=None, rho=None, kind="cost", normalize=True, anneal=True,
                    eps_start=1.0, eps_decay=0.5, max_iter=1000, tol=1e-6, chunks="auto",
                    split_every=None, progress=False, device="auto", checkpoint=None,
                    resume=False, storage_options=None):
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
    checkpoint : str or os.PathLike, optional
        Save the potentials after every iteration (atomically) to this file.
    resume : bool, default=False
        Continue the interrupted solve saved at ``checkpoint``; the result is the same,
        bit for bit, as that of an uninterrupted one. A checkpoint of other costs or
        parameters is refused, naming what differs.
    storage_options : dict, optional
        fsspec options of a ``checkpoint`` URL.

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
    if not (normalize is True or normalize is False or normalize is None):
        scale = float(normalize)
        if not (scale > 0 and math.isfinite(scale)):
            raise DclustValueError(f"normalize={normalize!r} must be True, False or a positive scale.")
    C = _as_cost_array(costs_or_scores, chunks)
    C = to_device(C, resolve_device(device))
    n, k = C.shape
    bv = check_marginal(b, k, "b")
    w = None
    log_mass = -math.log(n)
    if a is not None:
        w = _check_row_masses(a, n, C.chunks[0])
        log_mass = 0.0
    what = "scores" if kind == "score" else "costs"
    session = FitSession(C, w, algorithm="sinkhorn_assign", label=f"sinkhorn(k={k})",
                         split_every=split_every, progress=progress, checkpoint=checkpoint,
                         resume=resume, storage_options=storage_options,
                         checks=cost_checks(what, a is not None), name="costs", place=False)
    virtual = marginal == "partial" and rho < 1
    bfull = np.append(rho * bv, 1.0 - rho) if virtual else bv
    state = SinkhornState(kind="costs", g=np.zeros(bfull.shape[0]), eps=reg, scale=1.0,
                          sign=-1.0 if kind == "score" else 1.0, virtual=virtual,
                          log_mass=log_mass)
    solver_params = dict(reg=reg, marginal=marginal, reg_m=effective_reg_m(marginal, reg_m),
                         anneal=anneal, eps_start=eps_start, eps_decay=eps_decay,
                         max_iter=max_iter, tol=tol)
    from ..params import array_digest

    session.open({"k": int(k), "b": array_digest(bv), "reg": reg, "marginal": marginal,
                  "reg_m": reg_m, "rho": rho, "kind": kind, "normalize": normalize,
                  "anneal": bool(anneal), "eps_start": eps_start, "eps_decay": eps_decay,
                  "max_iter": int(max_iter), "tol": tol, "split_every": split_every},
                 random_state=0)
    algo = _Assign(state, bfull, normalize, solver_params)
    out = session.run(lambda run: algo)
    scale = float(out["scale"])
    sol = algo._solver(scale).result(out["sk"])
    session.close(f"sinkhorn(k={k}): {sol.n_iter} iterations, marginal error {sol.error:.3g}")
    if not sol.converged:
        from ..exceptions import ConvergenceWarning  # imports scikit-learn: not on workers

        warnings.warn(
            f"Sinkhorn stopped at max_iter={max_iter} with marginal error {sol.error:.3g} > "
            f"tol={tol}; raise max_iter, raise reg, or loosen tol.",
            ConvergenceWarning, stacklevel=2,
        )
    final = replace(state, g=sol.g, eps=reg, scale=scale)
    mass = np.exp(sol.log_col)
    return SinkhornResult(
        potentials=sol.g[:k] * scale,
        reg=reg * scale,
        scale=scale,
        n_iter=sol.n_iter,
        converged=sol.converged,
        marginal_error=sol.error,
        n_passes=session.n_passes,
        column_mass=mass[:k],
        virtual_potential=float(sol.g[k] * scale) if virtual else None,
        virtual_mass=float(mass[k]) if virtual else None,
        _costs=C,
        _weights=w,
        _state=final,
    )


def _check_row_masses(a, n, row_chunks):
    """Row masses as a dask array chunked like the costs (NumPy masses checked here)."""
    if isinstance(a, da.Array):
        if a.shape != (n,):
            raise DclustValueError(f"a has shape {a.shape}; expected ({n},), one mass per row.")
        return a.astype(np.float64).rechunk((row_chunks,))
    av = np.asarray(a, dtype=np.float64)
    if av.shape != (n,):
        raise DclustValueError(f"a has shape {tuple(av.shape)}; expected ({n},), one mass per row.")
    if not np.isfinite(av).all() or (av < 0).any():
        j = int(np.flatnonzero(~(np.isfinite(av) & (av >= 0)))[0])
        raise DclustValueError(
            f"a has negative or non-finite masses (first: a[{j}]={float(av[j])!r}); row "
            "masses must be finite and >= 0."
        )
    return da.from_array(av, chunks=(row_chunks,))
