"""k-means as an algorithm of the fit session: seeding (k-means||, k-means++, random,
an array) and Lloyd iterations, one fused pass each.

Every pass goes through :class:`dclust.algorithms.session.FitSession`, which folds the
data checks into the first one, saves checkpoints and reports progress.
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np

from ..exceptions import DclustValueError, EmptyClusterWarning
from ..kernels.lloyd import lloyd_partial
from ..kernels.rownorm import row_normalize
from ..kernels.seeding import kmeans_parallel, kmeans_plusplus
from ..reductions.engine import Aggregation
from ..reductions.monoids import fields_combine
from ..runtime.threads import usable_cores
from .datachecks import safe_magnitude
from .sampling import sample_rows
from .session import Algorithm

__all__ = [
    "Lloyd",
    "INITS",
    "lloyd_aggregation",
    "init_centers",
    "init_sample_size",
    "seed_centers",
    "lloyd_update",
    "check_init_array",
    "default_init_size",
    "N_FAR",
    "METRICS",
    "normalize_centers",
]

INITS = ("k-means||", "k-means++", "random")
# "cosine" is spherical k-means: euclidean Lloyd on unit rows with unit centres.
METRICS = ("euclidean", "cosine")
# Far rows kept per pass for relocating empty clusters.
N_FAR = 32

_LLOYD_SUMS = ("sums", "weights", "inertia")
_FAR_KEYS = ("far_dist", "far_row", "far_x", "far_label", "far_weight")


def _lloyd_chunk(X, w, ctx, centers, n_far, metric="euclidean"):
    if metric == "cosine":
        # Unit rows as a per-chunk temporary; for unit vectors ||x - c||^2 = 2 (1 - cos),
        # so the euclidean kernel assigns by cosine and half its inertia is sum w (1 - cos).
        X = row_normalize(X, row_offset=ctx.row_offset, block_id=ctx.block_id)
        out = lloyd_partial(X, centers, w, n_far=n_far, row_offset=ctx.row_offset)
        out["inertia"] = out["inertia"] * 0.5
        return out
    return lloyd_partial(X, centers, w, n_far=n_far, row_offset=ctx.row_offset)


def _lloyd_combine(parts, n_far):
    return fields_combine(parts, sums=_LLOYD_SUMS, top=(n_far, "far_dist", _FAR_KEYS, "far_row"))


def lloyd_aggregation(centers, n_far=N_FAR, metric="euclidean"):
    """The fused Lloyd statistics of one pass, for the given centres.

    With ``metric="cosine"`` each chunk's rows are scaled to unit norm first (the centres
    must be unit already), and the inertia is ``sum w (1 - cos)``.
    """
    n_far = int(min(n_far, centers.shape[0]))
    chunk = _lloyd_chunk if metric == "euclidean" else partial(_lloyd_chunk, metric=metric)
    return Aggregation("kmeans-lloyd", chunk, partial(_lloyd_combine, n_far=n_far)).bind(
        np.ascontiguousarray(centers, dtype=np.float64), n_far
    )


def normalize_centers(C, what="init"):
    """Centres (float64) scaled to unit norm for cosine k-means; a zero centre is refused."""
    return row_normalize(np.asarray(C, dtype=np.float64), what=what)


def default_init_size(n_samples, n_clusters):
    """Rows the seeding runs on: all of them for small data, else a uniform sample.

    k-means|| costs about ``2 * n_rounds`` Lloyd iterations over the rows it runs on;
    on a sample of ``max(50000, 32 k)`` rows (at least 32 per cluster, the size FAISS
    and cuML also find enough for seeding) it stays below a few full-data iterations.
    """
    return int(min(n_samples, max(50_000, 32 * n_clusters)))


def _tolerance(data_stats, tol, metric="euclidean"):
    if tol == 0:
        return 0.0
    if metric == "cosine":
        # The mean per-feature second moment of unit rows is exactly 1/d (an upper bound
        # of their variance); X's own moments do not describe the unit rows.
        return float(tol / max(len(data_stats["m2"]), 1))
    var = data_stats["m2"] / max(data_stats["count"], 1)
    return float(np.mean(var) * tol)


def check_init_array(init, n_clusters, n_features, what="init"):
    """An init array as float64 of shape (n_clusters, n_features), finite, or a clear error."""
    C = np.array(init, dtype=np.float64)
    if C.shape != (n_clusters, n_features):
        shape = "an init array" if what == "init" else what
        raise DclustValueError(
            f"{what} has shape {C.shape}; {shape} must have shape (n_clusters, n_features) "
            f"= ({n_clusters}, {n_features})."
        )
    if not np.isfinite(C).all():
        raise DclustValueError(f"{what} contains NaN or infinite values; every initial centre "
                               "must be finite.")
    return C


def init_sample_size(n_samples, n_clusters, init, init_size=None):
    """Rows of the sample a string or callable ``init`` is drawn from.

    ``k`` rows for ``"random"``; else ``init_size`` (default :func:`default_init_size`),
    at most ``n_samples`` and at least ``n_clusters``.
    """
    if isinstance(init, str) and init == "random":
        return int(n_clusters)
    m = int(init_size) if init_size is not None else default_init_size(n_samples, n_clusters)
    return max(min(m, n_samples), n_clusters)


def init_centers(session, n_clusters, init, seed, *, init_size=None, oversampling_factor=2.0,
                 n_rounds=5, metric="euclidean"):
    """Initial centres (float64); a string ``init`` draws its sample in one pass.

    Parameters
    ----------
    session : FitSession
    n_clusters : int
    init : {"k-means||", "k-means++", "random"}, ndarray or callable
        A callable is called as ``init(sample, n_clusters, random_state)`` on the
        sample of ``init_size`` rows (scikit-learn calls it on ``X``).
    seed : int
    metric : {"euclidean", "cosine"}, default="euclidean"
        ``"cosine"``: the seeding runs on the sample's rows scaled to unit norm, and the
        centres (an init array too) are scaled to unit norm.
    """
    n, d = session.n_samples, session.n_features
    if isinstance(init, np.ndarray):
        C = check_init_array(init, n_clusters, d)
        return normalize_centers(C, "the init array") if metric == "cosine" else C
    m = init_sample_size(n, n_clusters, init, init_size)
    sample = sample_rows(session, m, seed, name="kmeans-sample")
    if metric == "cosine":
        # The sample is small and on the client: normalised here, as each pass's chunks are.
        sample = {**sample, "x": row_normalize(np.asarray(sample["x"]), rows=sample["row"])}
    C = seed_centers(sample, m, n, n_clusters, init, seed, dtype=session.work_dtype,
                     n_features=d, oversampling_factor=oversampling_factor,
                     n_rounds=n_rounds)
    if metric == "cosine":
        C = normalize_centers(C, "the init callable's result" if callable(init)
                              else "the seeded centres")
    return C


def seed_centers(sample, m, n_samples, n_clusters, init, seed, *, dtype, n_features,
                 oversampling_factor=2.0, n_rounds=5):
    """Initial centres from the first ``m`` rows of a sample drawn by :func:`sample_rows`.

    The sample's rows come by decreasing sampling key, and the keys a seed gives the
    rows do not depend on the sample's size, so the first ``m`` rows of a larger sample
    drawn with the same seed are the sample of ``m`` rows that seed draws (exactly,
    unless one chunk holds more of them than it sends, which the per-chunk cap of
    :func:`~dclust.algorithms.sampling.sample_aggregation` makes vanishingly rare). One
    sample can therefore seed several ``n_clusters`` exactly as separate fits with that
    seed would (:mod:`dclust.algorithms.select_k`).

    Parameters
    ----------
    sample : dict
        ``x`` and ``weight`` of the rows drawn, by decreasing key.
    m : int
        Rows of it to use (:func:`init_sample_size`).
    n_samples, n_clusters : int
    init : {"k-means||", "k-means++", "random"} or callable
    seed : int
        The seed the sample was drawn with; the seeding's generator is
        ``numpy.random.default_rng([seed, 7])``.
    dtype : dtype
        The passes' working dtype.
    n_features : int
    oversampling_factor : float, default=2.0
    n_rounds : int, default=5
    """
    n, d = n_samples, n_features
    rng = np.random.default_rng([seed, 7])
    rows = np.ascontiguousarray(sample["x"][:m], dtype=dtype)
    if rows.shape[0] < n_clusters:
        raise DclustValueError(
            f"Only {rows.shape[0]} rows have a positive sample_weight, fewer than "
            f"n_clusters={n_clusters}."
        )
    # A sample smaller than X is drawn in proportion to the weights, so its rows count
    # once each; when it is all of X the weights must be applied here instead.
    ones = np.asarray(sample["weight"][:m]) if m >= n else np.ones(rows.shape[0])
    if callable(init):
        C = check_init_array(init(rows, n_clusters, np.random.RandomState(seed % 2**32)),
                             n_clusters, d, what="the init callable's result")
    elif init == "random":
        C = rows[:n_clusters].astype(np.float64)
    elif init == "k-means++":
        # Seeding runs here, on the client, while the workers wait: it may use every core
        # (the same centres for any count).
        C, _ = kmeans_plusplus(rows, n_clusters, ones, rng, n_threads=usable_cores())
    else:
        C, _ = kmeans_parallel(
            rows, n_clusters, ones, rng, oversampling_factor=oversampling_factor, n_rounds=n_rounds,
            n_threads=usable_cores()
        )
    return np.ascontiguousarray(C, dtype=np.float64)


def _update_centers(stats, centers):
    """New centres from Lloyd statistics, moving empty clusters to far rows (as scikit-learn)."""
    sums = stats["sums"].copy()
    wsum = stats["weights"].copy()
    empty = np.flatnonzero(wsum <= 0)
    moved = 0
    if empty.size:
        far_x, far_w, far_lab = stats["far_x"], stats["far_weight"], stats["far_label"]
        far_d = stats["far_dist"]
        for j, new_id in enumerate(empty[: far_x.shape[0]]):
            x, wf, old = far_x[j], far_w[j], int(far_lab[j])
            # A row at distance 0 from its centre (duplicate points) would only make a
            # second copy of that centre: the cluster stays empty, as scikit-learn's does.
            if wf <= 0 or not far_d[j] > 0:
                continue
            sums[old] -= x * wf
            wsum[old] -= wf
            sums[new_id] = x * wf
            wsum[new_id] = wf
            moved += 1
    new = centers.copy()
    nz = wsum > 0
    new[nz] = sums[nz] / wsum[nz, None]
    return new, int(empty.size), moved


def _unit_rows(new, old):
    """``new`` centres scaled to unit norm (spherical k-means' update); a cluster whose
    unit rows sum to zero keeps its ``old`` centre."""
    norms = np.sqrt(np.einsum("ij,ij->i", new, new))
    ok = norms > 0
    out = old.copy()
    out[ok] = new[ok] / norms[ok, None]
    return out


def _lloyd_aggs(state, n_far, metric):
    return {"lloyd": lloyd_aggregation(state["centers"], n_far, metric)}


def _lloyd_step(state, res, tol_abs, metric):
    return {**state, **lloyd_update(state, res["lloyd"], tol_abs, metric)}


def lloyd_update(state, res, tol_abs, metric="euclidean"):
    """The Lloyd state after a pass whose statistics ``res`` are for ``state["centers"]``.

    Shared by :class:`Lloyd` and the multi-k sweep (:mod:`dclust.algorithms.select_k`),
    so that every k of a sweep moves exactly as a separate fit does. With
    ``metric="cosine"`` the new centres are the normalised means of their unit rows.
    """
    centers = state["centers"]
    inertia = float(res["inertia"])
    new, n_empty, _ = _update_centers(res, centers)
    if metric == "cosine":
        new = _unit_rows(new, centers)
    shift = float(((new - centers) ** 2).sum())
    return {
        "centers": new,
        "n_iter": state["n_iter"] + 1,
        "init_inertia": inertia if state["n_iter"] == 0 else state["init_inertia"],
        "n_empty_total": state["n_empty_total"] + n_empty,
        "converged": shift <= tol_abs,
        "shift": shift,
        "tol_abs": tol_abs,
        "inertia": inertia,
        "n_nonempty": int((res["weights"] > 0).sum()),
    }


class Lloyd(Algorithm):
    """One k-means run: an initialisation, then Lloyd iterations (one fused pass each).

    The state holds the centres (float64), the iteration count, the last pass's inertia
    and non-empty clusters, the squared shift of the centres and ``converged``. The
    result adds the inertia of the final centres (one more pass unless the last
    iteration left the centres where they were). With ``metric="cosine"`` it is spherical
    k-means: every pass scales its chunks' rows to unit norm, the centres are kept at unit
    norm, and the inertia is ``sum w (1 - cos)``.
    """

    name = "KMeans"
    # Row-aligned arrays the passes read besides X (FitSession.run_pass's ``aligned``).
    aligned = None

    def __init__(self, n_clusters, *, init="k-means||", max_iter=300, tol=1e-4, seed=0,
                 init_size=None, oversampling_factor=2.0, n_init_rounds=5, metric="euclidean"):
        self.n_clusters = int(n_clusters)
        self.metric = metric
        self.init = init
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.seed = int(seed)
        self.init_size = init_size
        self.oversampling_factor = oversampling_factor
        self.n_init_rounds = n_init_rounds
        self.init_label = init if isinstance(init, str) else (
            "array" if isinstance(init, np.ndarray) else "callable")

    def start(self, session):
        if (isinstance(self.init, np.ndarray) and session.dtype == np.float32
                and self.metric == "euclidean"  # cosine centres are unit vectors
                and float(np.abs(self.init).max(initial=0.0))
                > safe_magnitude(np.float32, session.n_features)):
            session.use_float64()  # centres this large: the first pass in float64 already

    def init_state(self, session):
        centers = init_centers(session, self.n_clusters, self.init, self.seed,
                               init_size=self.init_size,
                               oversampling_factor=self.oversampling_factor,
                               n_rounds=self.n_init_rounds, metric=self.metric)
        return self.initial_state(centers)

    @staticmethod
    def initial_state(centers):
        """The state of a run that starts from ``centers``."""
        return {"centers": np.ascontiguousarray(centers, dtype=np.float64), "n_iter": 0,
                "init_inertia": math.nan, "n_empty_total": 0, "converged": False,
                "shift": math.inf, "inertia": math.nan, "n_nonempty": 0}

    def aggregation(self, state, n_far=N_FAR):
        """The Lloyd statistics of one pass, for ``state``'s centres (a variant, seeded
        k-means, changes them here)."""
        return lloyd_aggregation(state["centers"], n_far, self.metric)

    # Whether iterations may be chained on the cluster (iterations()): the aggregation
    # and the update are module functions of the state alone (a variant that overrides
    # aggregation() or reads aligned arrays turns this off).
    chainable = True

    def iteration_functions(self, session):
        """``(make_aggs, step)``: the pass of an iteration as a function of the state,
        and the update from its results; picklable, run on a worker by a chain."""
        tol_abs = _tolerance(session.data_stats, self.tol, self.metric)
        return (partial(_lloyd_aggs, n_far=N_FAR, metric=self.metric),
                partial(_lloyd_step, tol_abs=tol_abs, metric=self.metric))

    def one_iteration(self, session, state):
        res = session.run_pass({"lloyd": self.aggregation(state)}, name="kmeans-lloyd",
                               aligned=self.aligned)
        return self.iteration_functions(session)[1](state, res)

    def iterations(self, session, state, n):
        """Up to ``n`` iterations in one round trip (never past ``max_iter``)."""
        n = min(int(n), self.max_iter - int(state["n_iter"]))
        if n <= 1 or not self.chainable or self.aligned is not None \
                or session.data_stats is None:
            return [self.one_iteration(session, state)]
        make_aggs, step = self.iteration_functions(session)
        return session.run_chain(make_aggs, step, state, n, name="kmeans-lloyd")

    def converged(self, state):
        return bool(state["converged"]) or state["n_iter"] >= self.max_iter

    def report(self, state):
        return "iter", state["n_iter"], {"inertia": state["inertia"], "shift": state["shift"]}

    def describe(self, state):
        # scikit-learn's verbose lines (its iterations count from 0).
        i = state["n_iter"] - 1
        line = f"Iteration {i}, inertia {state['inertia']}."
        if state["converged"]:
            if state["shift"] == 0:
                line += f"\nConverged at iteration {i}: strict convergence."
            else:
                line += (f"\nConverged at iteration {i}: center shift {state['shift']} within "
                         f"tolerance {state['tol_abs']}.")
        return line

    def finalize(self, session, state):
        if state["n_empty_total"]:
            warnings.warn(
                f"{state['n_empty_total']} empty cluster(s) over the fit were moved to the points "
                "farthest from their centres.",
                EmptyClusterWarning,
                stacklevel=5,
            )
        centers, inertia, n_nonempty = state["centers"], state["inertia"], state["n_nonempty"]
        if state["n_iter"] == 0 or not (state["converged"] and state["shift"] == 0.0):
            # Inertia and cluster sizes of the final centres (scikit-learn's last E-step).
            last = session.run_pass({"lloyd": self.aggregation(state, 0)},
                                    name="kmeans-inertia", aligned=self.aligned)["lloyd"]
            inertia, n_nonempty = float(last["inertia"]), int((last["weights"] > 0).sum())
        return {"centers": centers, "inertia": inertia, "n_iter": state["n_iter"],
                "converged": bool(state["converged"]), "init_inertia": state["init_inertia"],
                "n_nonempty": n_nonempty}
