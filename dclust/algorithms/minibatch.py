"""Mini-batch k-means (Sculley 2010, with scikit-learn's rules) as an algorithm of the
fit session.

One step draws a batch of rows, labels them with the compiled nearest-centre kernel
and moves every centre that received rows to the weighted mean of its past and new
rows, each centre at its own learning rate (``count_j`` is the weight the centre has
absorbed so far, optionally decayed)::

    c_j <- (c_j * count_j + sum_{x in batch, label j} w x) / (count_j + sum w)

Centres whose count falls below ``reassignment_ratio`` times the largest are moved
to random rows of the batch (scikit-learn's ``_mini_batch_step``). Fitting stops when
an exponentially weighted average of the batch inertia has not improved for
``max_no_improvement`` steps, when the centres move less than ``tol`` (scaled by the
data's variance), or after ``max_iter * n / batch_size`` steps.

Where the rows come from. Batch rows are global row numbers drawn uniformly from a
generator seeded by ``(seed, run, round)``, so the batches do not depend on the
chunking or on the number of workers, and NumPy and dask input give the same model. A
*round* is 1, 2, 4... steps, at most ``steps_per_round(batch_size)``: their rows (which do not depend on
the centres) are gathered in one small graph on the workers for a dask array, or
indexed in memory for a NumPy array; the steps then run on the client with the
compiled kernels. The session checkpoints after every round.
"""

from __future__ import annotations

import math

import numpy as np

from ..exceptions import DataError, DclustValueError
from ..kernels.lloyd import lloyd_partial
from .kmeans import check_init_array, seed_centers
from .session import Algorithm

__all__ = ["as_batch", "minibatch_step", "MiniBatchLloyd", "steps_per_round", "decay_factor",
           "gather_rows", "check_finite_rows"]

# Rows gathered per round: enough that a graph's overhead is spread over many steps,
# few enough (a few MB) to stay a small message.
_ROUND_ROWS = 1 << 16


def steps_per_round(batch_size: int) -> int:
    """Steps whose rows are gathered together (a function of ``batch_size`` only, so the
    draws, hence the model, do not depend on where the data lives)."""
    return max(1, _ROUND_ROWS // max(int(batch_size), 1))


def decay_factor(decay, decay_unit, n_rows):
    """The factor the centres' counts are multiplied by before a batch of ``n_rows``.

    ``decay`` is a half-life (Spark's ``StreamingKMeans.setHalfLife``) in batches or
    rows: after that many, old data weighs half as much. ``None`` forgets nothing.
    """
    if decay is None:
        return 1.0
    steps = 1.0 if decay_unit == "batches" else float(n_rows)
    return float(0.5 ** (steps / float(decay)))


def minibatch_step(Xb, wb, centers, counts, *, rng=None, reassign=False,
                   reassignment_ratio=0.01, discount=1.0):
    """One mini-batch update of ``centers`` and ``counts`` (in place).

    Parameters
    ----------
    Xb : ndarray of shape (batch, n_features)
    wb : ndarray of shape (batch,) or None
        Row weights (``None``: ones).
    centers : ndarray of shape (n_clusters, n_features), float64
    counts : ndarray of shape (n_clusters,), float64
        Weight absorbed by each centre so far.
    rng : numpy Generator, optional
        Draws the rows that replace low-count centres.
    reassign : bool, default=False
        Whether to look for low-count centres at this step.
    reassignment_ratio : float, default=0.01
    discount : float, default=1.0
        Factor applied to ``counts`` before the update (forgetting, see
        :func:`decay_factor`).

    Returns
    -------
    inertia : float
        Weighted sum of squared distances of the batch to the centres before the update.
    n_reassigned : int
    """
    stats = lloyd_partial(Xb, centers, wb)
    if discount != 1.0:
        counts *= discount
    bw = stats["weights"]
    hit = bw > 0
    new_counts = counts[hit] + bw[hit]
    centers[hit] = (centers[hit] * counts[hit, None] + stats["sums"][hit]) / new_counts[:, None]
    counts[hit] = new_counts
    n_moved = 0
    if reassign and reassignment_ratio > 0:
        low = counts < reassignment_ratio * counts.max()
        m = Xb.shape[0]
        # At most half the batch becomes new centres (scikit-learn's cap).
        if low.sum() > 0.5 * m:
            low[np.argsort(counts, kind="stable")[int(0.5 * m):]] = False
        n_moved = int(low.sum())
        if n_moved:
            rows = rng.choice(m, size=n_moved, replace=False)
            centers[low] = Xb[rows]
            # Not so small that they are moved again at once (scikit-learn's rule).
            counts[low] = np.min(counts[~low])
    return float(stats["inertia"]), n_moved


def as_batch(X):
    """A batch for ``partial_fit`` as a float NumPy array: NumPy as given, a dask array or
    a Zarr array (region) read to memory (a batch is one mini-batch step)."""
    from ..validation import as_dask_rows

    if type(X).__module__.startswith("zarr"):
        X = X[...]
    X = as_dask_rows(X)
    if not isinstance(X, np.ndarray):
        X = np.asarray(X.compute())
    return X


def check_finite_rows(Xb, rows, name="X"):
    """Refuse a batch with NaN or inf, naming the first bad row."""
    ok = np.isfinite(Xb).all(axis=1)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"{name} contains non-finite values, NaN or inf (first in row {int(rows[i]):,}). "
            "Clean the data before clustering it."
        )


def _take(block, local):
    return np.asarray(block)[local]


def _stack(xs, ws):
    x = np.concatenate(xs, axis=0)
    return x, (np.concatenate(ws) if ws else None)


def gather_rows(X, w, idx):
    """Rows ``idx`` of ``X`` (and of ``w``) as NumPy arrays.

    NumPy input is indexed in place. A dask array is read with one small graph: a task
    per touched chunk sending just the requested rows, and one that stacks them.
    """
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(X, np.ndarray):
        return X[idx], (None if w is None else np.asarray(w)[idx])
    from dask.highlevelgraph import HighLevelGraph

    from ..reductions.engine import row_offsets
    from ..runtime.compute import compute_graph

    uniq, inverse = np.unique(idx, return_inverse=True)
    offsets = np.asarray(row_offsets(X.chunks[0]), dtype=np.int64)
    which = np.searchsorted(offsets, uniq, side="right") - 1
    name = "minibatch-gather-" + _token(X, w, uniq)
    layer, xs, wsk = {}, [], []
    for c in np.unique(which):
        local = uniq[which == c] - offsets[c]
        layer[(name, "x", int(c))] = (_take, (X.name, int(c), 0), local)
        xs.append((name, "x", int(c)))
        if w is not None:
            layer[(name, "w", int(c))] = (_take, (w.name, int(c)), local)
            wsk.append((name, "w", int(c)))
    layer[(name, "out")] = (_stack, xs, wsk)
    deps = [X] if w is None else [X, w]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    x, ws = compute_graph(graph, (name, "out"))
    return x[inverse], (None if ws is None else ws[inverse])


def _token(*parts):
    from dask.base import tokenize

    return tokenize(*[p.name if hasattr(p, "name") else p for p in parts])


class MiniBatchLloyd(Algorithm):
    """One mini-batch k-means run: an initialisation on a sample, then rounds of steps.

    Parameters
    ----------
    n_clusters : int
    batch_size : int
    init : {"k-means++", "k-means||", "random"}, ndarray or callable
    n_init : int
        Seedings tried (each on its own sample); the one with the lowest inertia on a
        validation sample is kept (scikit-learn's rule).
    init_size : int
    max_steps : int
    max_no_improvement : int or None
    tol_abs : float
        Squared centre movement at which to stop (already scaled by the variance).
    reassignment_ratio : float
    seed : int
    decay, decay_unit : half-life and its unit (see :func:`decay_factor`)
    dtype : dtype
        The dtype the kernels compute in.
    oversampling_factor, n_init_rounds : k-means|| parameters.
    """

    name = "MiniBatchKMeans"

    def __init__(self, n_clusters, *, batch_size, init, n_init, init_size, max_steps,
                 max_no_improvement, tol_abs, reassignment_ratio, seed, decay=None,
                 decay_unit="batches", dtype=np.float64, oversampling_factor=2.0,
                 n_init_rounds=5):
        self.n_clusters = int(n_clusters)
        self.batch_size = int(batch_size)
        self.init = init
        self.n_init = int(n_init)
        self.init_size = int(init_size)
        self.max_steps = int(max_steps)
        self.max_no_improvement = max_no_improvement
        self.tol_abs = float(tol_abs)
        self.reassignment_ratio = float(reassignment_ratio)
        self.seed = int(seed)
        self.decay, self.decay_unit = decay, decay_unit
        self.dtype = np.dtype(dtype)
        self.oversampling_factor = oversampling_factor
        self.n_init_rounds = n_init_rounds
        self.init_label = init if isinstance(init, str) else (
            "array" if isinstance(init, np.ndarray) else "callable")

    # ---- initialisation ------------------------------------------------------------
    def init_state(self, session):
        X, w, n, d = session.X, session.w, session.n_samples, session.n_features
        k = self.n_clusters
        if isinstance(self.init, np.ndarray):
            centers = check_init_array(self.init, k, d)
            n_read = 0
        else:
            m = self.init_size
            rng = np.random.default_rng([self.seed, 11])
            # One gather for every seeding sample and the validation sample.
            idx = rng.integers(0, n, size=(self.n_init + 1) * m)
            rows, ws = gather_rows(X, w, idx)
            check_finite_rows(rows, idx, session.name)
            rows = np.ascontiguousarray(rows, dtype=self.dtype)
            ws = np.ones(rows.shape[0]) if ws is None else ws.astype(np.float64)
            valid, wvalid = rows[-m:], ws[-m:]
            best, centers = math.inf, None
            for r in range(self.n_init):
                sl = slice(r * m, (r + 1) * m)
                C = seed_centers({"x": rows[sl], "weight": ws[sl]}, m, m, k, self.init,
                                 self.seed + r, dtype=self.dtype, n_features=d,
                                 oversampling_factor=self.oversampling_factor,
                                 n_rounds=self.n_init_rounds)
                inertia = float(lloyd_partial(valid, C, wvalid)["inertia"])
                if inertia < best:
                    best, centers = inertia, C
            n_read = int(idx.size)
        return {"centers": np.ascontiguousarray(centers, dtype=np.float64),
                "counts": np.zeros(k), "step": 0, "round": 0, "ewa": math.nan,
                "ewa_min": math.nan, "no_improvement": 0, "since_reassign": 0,
                "n_reassigned": 0, "converged": False, "stop": "", "batch_inertia": math.nan,
                "rows_read": n_read, "shift": math.inf}

    # ---- one round of steps --------------------------------------------------------
    def one_iteration(self, session, state):
        n = session.n_samples
        B = self.batch_size
        # Rounds grow 1, 2, 4... steps up to steps_per_round(B): a fit that stops early
        # has gathered at most about twice the rows it used.
        R = min(steps_per_round(B), 2 ** min(state["round"], 30))
        steps = min(R, self.max_steps - state["step"])
        rng = np.random.default_rng([self.seed, 13, state["round"]])
        idx = rng.integers(0, n, size=R * B)[: steps * B]
        rows, ws = gather_rows(session.X, session.w, idx)
        check_finite_rows(rows, idx, session.name)
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        st = {**state, "centers": state["centers"].copy(), "counts": state["counts"].copy()}
        reassign_rng = np.random.default_rng([self.seed, 17, state["round"]])
        for s in range(steps):
            Xb = rows[s * B:(s + 1) * B]
            wb = None if ws is None else ws[s * B:(s + 1) * B]
            if self._step(st, Xb, wb, n, reassign_rng):
                break
        st["round"] = state["round"] + 1
        st["rows_read"] = state["rows_read"] + int(idx.size)
        if st["step"] >= self.max_steps and not st["converged"]:
            st["stop"] = "max_iter"
        return st

    def _step(self, st, Xb, wb, n, rng):
        """One step on ``st`` (in place); returns whether the run is over."""
        B = self.batch_size
        # scikit-learn looks for low-count centres every 10 k rows, or when one is empty.
        st["since_reassign"] += B
        reassign = bool((st["counts"] == 0).any()) or st["since_reassign"] >= 10 * self.n_clusters
        if reassign:
            st["since_reassign"] = 0
        old = st["centers"].copy() if self.tol_abs > 0 else None
        inertia, moved = minibatch_step(
            Xb, wb, st["centers"], st["counts"], rng=rng, reassign=reassign,
            reassignment_ratio=self.reassignment_ratio,
            discount=decay_factor(self.decay, self.decay_unit, Xb.shape[0]))
        st["n_reassigned"] += moved
        st["step"] += 1
        st["batch_inertia"] = inertia / B
        shift = float(((st["centers"] - old) ** 2).sum()) if old is not None else 0.0
        st["shift"] = shift
        return self._converged_after(st, st["batch_inertia"], shift, n)

    def _converged_after(self, st, batch_inertia, shift, n):
        # scikit-learn's _mini_batch_convergence: the first step's inertia is that of
        # the initialisation and is not smoothed in.
        if st["step"] == 1:
            return False
        if math.isnan(st["ewa"]):
            st["ewa"] = batch_inertia
        else:
            alpha = min(self.batch_size * 2.0 / (n + 1), 1.0)
            st["ewa"] = st["ewa"] * (1 - alpha) + batch_inertia * alpha
        if self.tol_abs > 0.0 and shift <= self.tol_abs:
            st["converged"], st["stop"] = True, "tol"
            return True
        if math.isnan(st["ewa_min"]) or st["ewa"] < st["ewa_min"]:
            st["no_improvement"] = 0
            st["ewa_min"] = st["ewa"]
        else:
            st["no_improvement"] += 1
        if self.max_no_improvement is not None and st["no_improvement"] >= self.max_no_improvement:
            st["converged"], st["stop"] = True, "no_improvement"
            return True
        return False

    def converged(self, state):
        return bool(state["converged"]) or state["step"] >= self.max_steps

    def report(self, state):
        return "step", state["step"], {"ewa_inertia": state["ewa"]}

    def describe(self, state):
        return (f"Minibatch step {state['step']}/{self.max_steps}: mean batch inertia: "
                f"{state['batch_inertia']}, ewa inertia: {state['ewa']}")

    def finalize(self, session, state):
        return dict(state)


def check_decay(decay, decay_unit):
    """``decay`` (a half-life) and its unit, or a clear error."""
    if decay_unit not in ("batches", "rows"):
        raise DclustValueError(
            f"decay_unit={decay_unit!r} is not valid; expected 'batches' or 'rows' (the unit "
            "of the half-life decay)."
        )
    if decay is not None and not (isinstance(decay, (int, float)) and decay > 0
                                  and math.isfinite(decay)):
        raise DclustValueError(
            f"decay={decay!r} is not valid; expected None or a positive half-life (in "
            f"{decay_unit}) after which old data weighs half as much."
        )
