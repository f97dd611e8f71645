"""Product quantization (PQ) and optimized PQ (OPQ) as an algorithm of the fit session.

All ``M`` sub-quantizers are trained in the same passes: the Lloyd aggregation's chunk
function slices the chunk's columns and runs the compiled nearest-centre kernel on each
slice, so one read of the data per iteration serves every sub-space. Initialisation
seeds every sub-space from the same sample of rows (one pass).

OPQ (Ge et al., 2013, non-parametric) alternates two steps: with the rotation ``R``
fixed, Lloyd iterations of the sub-quantizers on ``X R``; with the codebooks fixed,
one pass reducing ``X^T Y`` (``Y`` the reconstructions of ``X R``) over the chunks, and
``R = U V^T`` from its SVD (orthogonal Procrustes). Both steps lower the same error.
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np

from ..exceptions import DclustValueError, EmptyClusterWarning
from ..kernels.pq import (
    opq_crosscov_partial,
    pq_error_partial,
    pq_lloyd_partial,
    subspace_slices,
)
from ..kernels.seeding import kmeans_parallel, kmeans_plusplus
from ..reductions.engine import Aggregation
from ..reductions.monoids import fields_combine, sum_combine
from .kmeans import INITS, N_FAR, _update_centers, default_init_size
from .sampling import sample_rows
from .session import Algorithm

__all__ = ["ProductQuantization", "pq_lloyd_aggregation", "pq_error_aggregation",
           "opq_crosscov_aggregation", "procrustes", "check_codebooks", "INITS"]

_LLOYD_SUMS = ("sums", "weights", "inertia")
_FAR_KEYS = ("far_dist", "far_row", "far_x", "far_label", "far_weight")


# ---- aggregations -------------------------------------------------------------------------
def _pq_lloyd_chunk(X, w, ctx, codebooks, rotation, n_far):
    return pq_lloyd_partial(X, codebooks, w, rotation=rotation, n_far=n_far,
                            row_offset=ctx.row_offset)


def _pq_lloyd_combine(parts, n_sub, n_far):
    top = (n_far, "far_dist", _FAR_KEYS, "far_row")
    return [fields_combine([p[m] for p in parts], sums=_LLOYD_SUMS, top=top)
            for m in range(n_sub)]


def pq_lloyd_aggregation(codebooks, rotation=None, n_far=N_FAR):
    """The Lloyd statistics of every sub-quantizer in one pass (a list of ``M`` dicts)."""
    M, K, _ = codebooks.shape
    n_far = int(min(n_far, K))
    return Aggregation("pq-lloyd", _pq_lloyd_chunk,
                       partial(_pq_lloyd_combine, n_sub=int(M), n_far=n_far)).bind(
        np.ascontiguousarray(codebooks, dtype=np.float64),
        None if rotation is None else np.ascontiguousarray(rotation, dtype=np.float64), n_far)


def _error_chunk(X, w, ctx, codebooks, rotation):
    return pq_error_partial(X, codebooks, w, rotation=rotation)


def pq_error_aggregation(codebooks, rotation=None):
    """``sse`` and ``weight`` of the reconstructions of every row (one pass)."""
    return Aggregation("pq-error", _error_chunk, partial(sum_combine, keys=("sse", "weight"))).bind(
        np.ascontiguousarray(codebooks, dtype=np.float64),
        None if rotation is None else np.ascontiguousarray(rotation, dtype=np.float64))


def _crosscov_chunk(X, w, ctx, codebooks, rotation):
    return opq_crosscov_partial(X, codebooks, rotation, w)


def opq_crosscov_aggregation(codebooks, rotation):
    """OPQ's ``X^T Y`` (d x d), with the error of the current codes (one pass)."""
    return Aggregation("opq-crosscov", _crosscov_chunk,
                       partial(sum_combine, keys=("cross", "sse", "weight"))).bind(
        np.ascontiguousarray(codebooks, dtype=np.float64),
        np.ascontiguousarray(rotation, dtype=np.float64))


def procrustes(cross):
    """The orthogonal ``R`` maximising ``trace(R^T cross)``: ``U V^T`` of ``svd(cross)``."""
    U, _, Vt = np.linalg.svd(cross)
    return U @ Vt


# ---- initialisation -----------------------------------------------------------------------
def check_codebooks(init, n_subquantizers, n_clusters, dsub, what="init"):
    """An init array as float64 of shape (M, K, d / M), finite, or a clear error."""
    C = np.array(init, dtype=np.float64)
    want = (n_subquantizers, n_clusters, dsub)
    if C.shape != want:
        raise DclustValueError(
            f"{what} has shape {C.shape}; initial codebooks must have shape "
            f"(n_subquantizers, 2**n_bits, n_features / n_subquantizers) = {want}."
        )
    if not np.isfinite(C).all():
        raise DclustValueError(f"{what} contains NaN or infinite values; every initial centre "
                               "must be finite.")
    return C


def seed_codebooks(sample, n_samples, n_subquantizers, n_clusters, init, seed, *, dtype,
                   rotation=None):
    """Initial codebooks of every sub-space from the same sample rows.

    Sub-space ``m`` is seeded with its own generator ``default_rng([seed, 7, m])`` on
    the ``m``-th column slice of the (rotated) sample.
    """
    rows = np.asarray(sample["x"], dtype=dtype)
    if rotation is not None:
        rows = rows @ rotation.astype(dtype)
    if rows.shape[0] < n_clusters:
        raise DclustValueError(
            f"Only {rows.shape[0]} rows have a positive sample_weight, fewer than "
            f"2**n_bits={n_clusters} centres per sub-quantizer."
        )
    # A sample smaller than X is drawn in proportion to the weights (its rows count once
    # each); when it is all of X the weights apply here.
    w = np.asarray(sample["weight"]) if rows.shape[0] >= n_samples else np.ones(rows.shape[0])
    books = []
    for m, sl in enumerate(subspace_slices(rows.shape[1], n_subquantizers)):
        rng = np.random.default_rng([seed, 7, m])
        sub = np.ascontiguousarray(rows[:, sl])
        if init == "random":
            C = sub[rng.choice(sub.shape[0], n_clusters, replace=False)]
        elif init == "k-means++":
            C, _ = kmeans_plusplus(sub, n_clusters, w, rng)
        else:
            C, _ = kmeans_parallel(sub, n_clusters, w, rng)
        books.append(np.asarray(C, dtype=np.float64))
    return np.stack(books)


# ---- the algorithm ------------------------------------------------------------------------
class ProductQuantization(Algorithm):
    """PQ training: a seeding pass, then Lloyd passes for all sub-quantizers at once.

    With ``opq=True`` the loop starts with ``n_opq_iter`` rounds of one rotation pass
    followed by ``opq_pq_iter`` Lloyd passes, and ends with up to ``max_iter`` Lloyd
    passes on the final rotation (FAISS's ``OPQMatrix`` then ``IndexPQ`` training, in
    passes). Without it, up to ``max_iter`` Lloyd passes.

    The state holds the codebooks (float64, shape (M, K, d / M)), the rotation (or
    ``None``), ``step`` (passes made in the loop), ``n_iter`` (Lloyd passes of the final
    stage), the last error and shift, and ``converged``.
    """

    name = "ProductQuantizer"

    def __init__(self, n_subquantizers, n_clusters, *, init="k-means++", max_iter=25, tol=1e-4,
                 seed=0, init_size=None, opq=False, n_opq_iter=10, opq_pq_iter=4):
        self.M = int(n_subquantizers)
        self.K = int(n_clusters)
        self.init = init
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.seed = int(seed)
        self.init_size = init_size
        self.opq = bool(opq)
        self.n_opq_iter = int(n_opq_iter) if opq else 0
        self.opq_pq_iter = int(opq_pq_iter)
        self.init_label = init if isinstance(init, str) else "array"

    @property
    def n_opq_steps(self):
        """Passes of the OPQ stage (rotation passes and their Lloyd passes)."""
        return self.n_opq_iter * (1 + self.opq_pq_iter)

    def init_state(self, session):
        n, d = session.n_samples, session.n_features
        rotation = np.eye(d) if self.opq else None
        if isinstance(self.init, np.ndarray):
            books = check_codebooks(self.init, self.M, self.K, d // self.M)
        else:
            m = self.K if self.init == "random" else \
                max(min(int(self.init_size or default_init_size(n, self.K)), n), self.K)
            sample = sample_rows(session, m, self.seed, name="pq-sample")
            books = seed_codebooks(sample, n, self.M, self.K, self.init, self.seed,
                                   dtype=session.work_dtype, rotation=rotation)
        return {"codebooks": books, "rotation": rotation, "step": 0, "n_iter": 0,
                "n_rotations": 0, "converged": False, "shift": math.inf, "mse": math.nan,
                "n_empty_total": 0}

    def _phase(self, state):
        step = state["step"]
        if step < self.n_opq_steps and step % (1 + self.opq_pq_iter) == 0:
            return "rotate"
        return "lloyd"

    def one_iteration(self, session, state):
        books, R = state["codebooks"], state["rotation"]
        if self._phase(state) == "rotate":
            res = session.run_pass({"cross": opq_crosscov_aggregation(books, R)},
                                   name="opq-rotation")["cross"]
            return {**state, "rotation": procrustes(res["cross"]), "step": state["step"] + 1,
                    "n_rotations": state["n_rotations"] + 1,
                    "mse": float(res["sse"]) / max(float(res["weight"]), 1e-300)}
        stats = session.run_pass({"pq": pq_lloyd_aggregation(books, R)}, name="pq-lloyd")["pq"]
        new = np.empty_like(books)
        n_empty = 0
        for m in range(self.M):
            new[m], e, _ = _update_centers(stats[m], books[m])
            n_empty += e
        shift = float(((new - books) ** 2).sum())
        weight = float(stats[0]["weights"].sum())
        mse = sum(float(s["inertia"]) for s in stats) / max(weight, 1e-300)
        final = state["step"] >= self.n_opq_steps
        n_iter = state["n_iter"] + int(final)
        # The tolerance of KMeans (mean feature variance times tol) for each sub-space.
        var = session.data_stats["m2"] / max(session.data_stats["count"], 1)
        tol_abs = float(np.mean(var)) * self.tol * self.M if self.tol > 0 else 0.0
        return {**state, "codebooks": new, "step": state["step"] + 1, "n_iter": n_iter,
                "converged": bool(final and shift <= tol_abs), "shift": shift, "mse": mse,
                "n_empty_total": state["n_empty_total"] + n_empty}

    def converged(self, state):
        if state["step"] < self.n_opq_steps:
            return False
        return bool(state["converged"]) or state["n_iter"] >= self.max_iter

    def report(self, state):
        phase = "opq" if state["step"] <= self.n_opq_steps and self.opq else "iter"
        it = state["step"] if phase == "opq" else state["n_iter"]
        return phase, it, {"mse": state["mse"], "shift": state["shift"]}

    def finalize(self, session, state):
        if state["n_empty_total"]:
            warnings.warn(
                f"{state['n_empty_total']} empty cluster(s) of the sub-quantizers over the fit "
                "were moved to the sub-vectors farthest from their centres.",
                EmptyClusterWarning, stacklevel=5)
        mse = state["mse"]
        if state["step"] == 0 or self._last_changed(state):
            res = session.run_pass({"err": pq_error_aggregation(state["codebooks"],
                                                                state["rotation"])},
                                   name="pq-error")["err"]
            mse = float(res["sse"]) / max(float(res["weight"]), 1e-300)
        return {"codebooks": state["codebooks"], "rotation": state["rotation"], "mse": mse,
                "n_iter": state["n_iter"], "n_rotations": state["n_rotations"],
                "converged": bool(state["converged"])}

    @staticmethod
    def _last_changed(state):
        # The last Lloyd pass measured the error of the codebooks before its update.
        return not (state["converged"] and state["shift"] == 0.0)
