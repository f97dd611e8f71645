"""The fit session: what every iterative algorithm shares.

An algorithm is a loop of passes over the data. Everything around that loop is the
same for k-means, k-medoids, Sinkhorn or a mixture, and lives here once:

* **the data**, opened once: shape and dtype checks, sample weights, the row chunking
  (NumPy input is placed on the workers), persisting on the workers (``cache``), the
  device the kernels run on;
* **the first pass's checks**, folded into whatever pass comes first (NaN and inf with
  chunk and row, bad weights, magnitudes that overflow, per-feature moments); float32
  data too large for float32 arithmetic switches the passes to float64;
* **the loop's bookkeeping**: progress lines, a checkpoint saved atomically after the
  initialisation and after every iteration, resume from it (refused, naming what
  differs, when it belongs to other data or parameters), the number of passes, and
  the best of several runs.

An algorithm hands the session a small object (:class:`Algorithm`)::

    state = algo.init_state(session)            # may run passes
    while not algo.converged(state):
        state = algo.one_iteration(session, state)   # usually one pass
    result = algo.finalize(session, state)      # may run passes; not checkpointed

``state`` and ``result`` are dicts of JSON scalars, nested dicts and NumPy arrays, so a
checkpoint can hold them without pickle. Every pass is a deterministic function of the
state and the data (fixed reduction order, randomness seeded by ``(seed, chunk)``), so
a fit resumed from its last checkpoint ends, bit for bit, where an uninterrupted one
does. ``finalize`` must be deterministic too: a fit killed during it is resumed from the
last iteration's state and finalized again.
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Callable

import numpy as np

from ..exceptions import DclustValueError
from ..io.checkpoint import Checkpoint, data_fingerprint
from ..reductions.engine import run_chain as _engine_run_chain
from ..reductions.engine import run_pass as _engine_run_pass
from ..runtime.placement import prepare_fit_data
from ..runtime.progress import Progress
from ..validation import as_dask_rows, check_random_state, check_sample_weight
from .datachecks import DEFAULT_CHECKS, DataChecks

__all__ = ["Algorithm", "FitSession"]


# Chained passes (FitSession.round_size): up to this many iterations per round trip
# when the last pass took less than ROUND_PASS_SECONDS, and twice as many below a fifth
# of it (a round trip costs 20-30 ms here; passes past convergence are bounded to
# about ROUND_PASS_SECONDS of work either way).
ROUND_ITERATIONS = 4
ROUND_PASS_SECONDS = 0.5


class Algorithm:
    """The interface an iterative algorithm gives the :class:`FitSession`.

    Subclasses set ``name`` and implement the four steps; ``report`` and ``start``
    have defaults.

    Attributes
    ----------
    name : str
        What the progress lines call it.
    init_label : str
        Shown on the progress line after an initialisation that made passes.
    """

    name = "algorithm"
    init_label = "init"

    def start(self, session) -> None:
        """Called before ``init_state`` and before resuming a saved state."""

    def init_state(self, session) -> dict:
        """The state before the first iteration (may run passes)."""
        raise NotImplementedError

    def one_iteration(self, session, state: dict) -> dict:
        """The state after one more iteration (usually one pass)."""
        raise NotImplementedError

    def iterations(self, session, state: dict, n: int) -> list:
        """The states after each of up to ``n`` more iterations, in one round trip to the
        cluster where the algorithm can (:meth:`FitSession.run_chain`); the session keeps
        them up to the first that :meth:`converged` and drops the rest. By default one
        iteration."""
        return [self.one_iteration(session, state)]

    def chain(self, session, state: dict, n: int, *, name: str, step_kw=None) -> list:
        """Up to ``n`` iterations of one pass each in one round trip, for an algorithm
        whose iteration is ``after_pass(state, run_pass(pass_aggregations(state)),
        **step_kw())`` with both methods functions of their arguments alone: the chain
        runs them on the cluster (:meth:`FitSession.run_chain`), so the states have the
        same bits. With ``n <= 1``, or before the data checks' pass (a resumed fit's
        first), one iteration by :meth:`FitSession.run_pass`. ``step_kw`` (``None``: no
        keywords) is called once the data checks' statistics are known."""
        if int(n) <= 1 or session.data_stats is None:
            res = session.run_pass(self.pass_aggregations(state), name=name)
            return [self.after_pass(state, res, **(step_kw() if step_kw else {}))]
        return session.run_chain(partial(_pass_of, self),
                                 partial(_after_pass_of, self, **(step_kw() if step_kw else {})),
                                 state, int(n), name=name)

    def converged(self, state: dict) -> bool:
        """Whether the loop is over (converged, or out of iterations)."""
        raise NotImplementedError

    def finalize(self, session, state: dict) -> dict:
        """The run's result from its last state (may run passes)."""
        return state

    def report(self, state: dict) -> tuple:
        """``(phase, iteration, figures)`` for the progress line after an iteration."""
        return "iter", state.get("n_iter", 0), {}

    def describe(self, state: dict) -> str:
        """The ``verbose`` line printed after an iteration."""
        phase, iteration, figures = self.report(state)
        shown = ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in figures.items())
        return f"{phase.capitalize()} {iteration}" + (f", {shown}" if shown else "") + "."


def _pass_of(algo, state):
    return algo.pass_aggregations(state)


def _after_pass_of(algo, state, res, **kw):
    return algo.after_pass(state, res, **kw)


# ---- state <-> checkpoint ------------------------------------------------------------
def _split(state: dict, prefix: str):
    """JSON scalars and arrays of a (nested) state dict; arrays named ``prefix.path``."""
    scalars, arrays = {}, {}
    for key, value in state.items():
        name = f"{prefix}.{key}"
        if isinstance(value, np.ndarray):
            arrays[name] = value
            scalars[key] = {"__array__": True}
        elif isinstance(value, dict):
            scalars[key], sub = _split(value, name)
            arrays.update(sub)
        elif isinstance(value, np.generic):
            scalars[key] = value.item()
        else:
            scalars[key] = value
    return scalars, arrays


def _join(scalars: dict, arrays: dict, prefix: str) -> dict:
    out = {}
    for key, value in scalars.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict) and value.get("__array__") is True:
            out[key] = np.asarray(arrays[name])
        elif isinstance(value, dict):
            out[key] = _join(value, arrays, name)
        else:
            out[key] = value
    return out


class FitSession:
    """One fit's data, first-pass checks, loop bookkeeping and checkpoints.

    Construction reads only metadata: it checks ``X``'s shape and dtype and the weights'
    shape. :meth:`open` then places the data and opens the checkpoint; :meth:`run` runs
    an algorithm through its loop.

    Parameters
    ----------
    X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
    sample_weight : array-like, dask array or None
    algorithm : str
        The estimator's name; a checkpoint of another algorithm is refused.
    label : str, optional
        What the progress line says (default ``algorithm``).
    cache : {"auto", "memory", "none"}, default="auto"
    device : {"auto", "cpu", "cuda"}, default="cpu"
    split_every : int, optional
    progress : bool or Progress, default=False
    checkpoint : str or os.PathLike, optional
        Where to save the state after every iteration.
    resume : bool, default=False
        Continue from the state saved at ``checkpoint``.
    storage_options : dict, optional
        fsspec options of a ``checkpoint`` URL.
    checks : DataChecks or None, default=DEFAULT_CHECKS
        What the first pass computes and checks (``None``: nothing).
    name : str, default="X"
        What messages call the data.
    verbose : int, default=0
        Print a line after the initialisation and after every iteration (to standard
        output, as scikit-learn's ``verbose``).
    place : bool, default=True
        Persist the data on the workers (per ``cache``) and move it to the device; with
        ``False`` the passes read the array as given (``X`` must then be a dask array).
    """

    def __init__(self, X, sample_weight=None, *, algorithm, label=None, cache="auto",
                 device="cpu", split_every=None, progress=False, checkpoint=None, resume=False,
                 storage_options=None, checks: DataChecks | None = DEFAULT_CHECKS, name="X",
                 place=True, verbose=0):
        self.X_input = as_dask_rows(X, name=name)
        self.n_samples, self.n_features = (int(s) for s in self.X_input.shape)
        self._weights = sample_weight if not place else \
            check_sample_weight(sample_weight, self.n_samples)
        self.algorithm = algorithm
        self.label = label or algorithm
        self.cache = cache
        self.device = device
        self.split_every = split_every
        self.progress = progress if isinstance(progress, Progress) else \
            Progress(self.label, enabled=bool(progress))
        self.checkpoint_path = checkpoint
        self.resume = bool(resume)
        self.storage_options = storage_options
        self.checks = checks
        self.name = name
        self._place = place
        self.verbose = int(verbose)
        self.X = self.w = None
        self.X_source = None
        self.data_stats = None
        self.n_passes = 0
        self.last_pass_seconds = None
        self.seed = None
        self._ck = None
        self._saved = None
        _check_checkpoint_params(checkpoint, resume)

    def set_label(self, label):
        """What the progress line calls the fit (once its parameters are checked)."""
        self.label = self.progress.label = label

    @property
    def dtype(self):
        """The input's dtype (fitted attributes are returned in it)."""
        return np.dtype(self.X_input.dtype)

    @property
    def work_dtype(self):
        """The dtype the passes compute in (float64 for float32 data too large for it)."""
        return np.dtype(self.X.dtype)

    # ---- opening -------------------------------------------------------------------
    def open(self, params: dict | None = None, random_state=None) -> "FitSession":
        """Place the data and open the checkpoint; sets :attr:`seed`.

        Parameters
        ----------
        params : dict, optional
            The parameters that determine the result (a checkpoint written with other
            values is refused). The seed is added as ``random_state``.
        random_state : int, Generator, RandomState or None
            ``None`` draws a seed, or, when resuming, takes the checkpoint's.
        """
        seed = None if random_state is None and self.resume else check_random_state(random_state)
        params = dict(params or {})
        if isinstance(self.X_input, np.ndarray):
            # Its chunking (which fixes the reduction order) is chosen when it is placed.
            self._place_data()
            self.seed = self._open_checkpoint(params, seed, self.X, self.w)
        else:
            # Refuse a checkpoint before persisting anything.
            w = self._weights
            self.seed = self._open_checkpoint(params, seed, self.X_input, w)
            self._place_data()
        return self

    def _place_data(self):
        if not self._place:
            self.X, self.w, self.X_source = self.X_input, self._weights, self.X_input
        else:
            self.X, self.w, self.X_source = prepare_fit_data(self.X_input, self._weights,
                                                             self.cache, self.device)
        self._X_placed = self.X  # as placed, before any switch to float64

    def _open_checkpoint(self, params, seed, X, w):
        if self.checkpoint_path is None:
            return check_random_state(None) if seed is None else seed
        ck = Checkpoint(self.checkpoint_path, self.algorithm, {**params, "random_state": seed},
                        data_fingerprint(X, w), storage_options=self.storage_options)
        if self.resume and seed is None:  # random_state=None: the interrupted fit's seed
            seed = ck.saved_seed()
            if seed is None:
                seed = check_random_state(None)
            ck.params["random_state"] = seed
        self._ck = ck
        self._saved = ck.load() if self.resume else None
        return seed

    # ---- passes --------------------------------------------------------------------
    def run_pass(self, aggregations: dict, *, name: str, precision_sensitive=True,
                 aligned=None) -> dict:
        """One pass over the data; the first one also computes the data checks.

        Parameters
        ----------
        aggregations : dict of str to Aggregation
        name : str
            Graph-layer prefix.
        precision_sensitive : bool, default=True
            Whether the results depend on the arithmetic's precision. When the first
            pass finds float32 data too large for float32, such a pass is run again in
            float64 (a sample of rows is not).
        aligned : dict of str to array, optional
            Row-aligned arrays the chunk functions read from ``ctx.aligned`` (known
            classes, say); place them once with :meth:`place_rows`.

        Returns
        -------
        dict keyed like ``aggregations``.
        """
        aggs = dict(aggregations)
        fold = self.data_stats is None and self.checks is not None
        if fold:
            aggs["__data__"] = self.checks.aggregation()
        t0 = time.perf_counter()
        res = _engine_run_pass(self.X, aggs, sample_weight=self.w, aligned=aligned,
                               split_every=self.split_every, name=name)
        self.n_passes += 1
        self.last_pass_seconds = time.perf_counter() - t0
        if fold:
            switched = self.learn(res.pop("__data__"))
            if switched and precision_sensitive and aggregations:
                res = _engine_run_pass(self.X, aggregations, sample_weight=self.w,
                                       aligned=aligned, split_every=self.split_every, name=name)
                self.n_passes += 1
        return res

    def run_chain(self, make_aggs, step, state, n_passes, *, name, aligned=None) -> list:
        """``n_passes`` passes in one computation, each pass's state made on a worker by
        ``step`` from the previous pass's results (:func:`dclust.reductions.engine.run_chain`).

        Only after the data checks have run (the first pass is never chained). Returns
        the states after each pass.
        """
        if self.data_stats is None and self.checks is not None:
            raise RuntimeError("run_chain before the first pass: run the first pass alone")
        t0 = time.perf_counter()
        states = _engine_run_chain(self.X, make_aggs, step, state, n_passes,
                                   sample_weight=self.w, aligned=aligned,
                                   split_every=self.split_every, name=name)
        self.n_passes += int(n_passes)
        self.last_pass_seconds = (time.perf_counter() - t0) / max(int(n_passes), 1)
        return states

    def round_size(self) -> int:
        """Iterations an algorithm may chain in its next round trip.

        A pass has a fixed cost (graph submission, scheduling, the round trip of the
        results) of some tens of milliseconds; when the last pass took less than
        :data:`ROUND_PASS_SECONDS` that cost is a large share of it, and up to
        :data:`ROUND_ITERATIONS` iterations run per round trip, twice as many when it
        took less than a fifth of that (``DCLUST_ROUND`` overrides: ``1`` never
        chains). The results, ``n_passes`` included, do not depend on it; only the
        work done does: a chain may run up to ``2 * ROUND_ITERATIONS - 1`` passes past
        convergence, which are dropped and not counted.
        """
        from ..runtime.switches import round_limit

        forced = round_limit()
        if forced is not None:
            return forced
        last = self.last_pass_seconds
        if last is None or last >= ROUND_PASS_SECONDS:
            return 1
        return 2 * ROUND_ITERATIONS if last < ROUND_PASS_SECONDS / 5 else ROUND_ITERATIONS

    def place_rows(self, a):
        """A row-aligned array (one row per row of ``X``) chunked like the passes' ``X``.

        NumPy input is placed on the workers once (as ``X`` is), so the passes do not
        carry it in every graph; a dask array is rechunked to ``X``'s rows and read
        lazily by each pass. Call it after :meth:`open`.
        """
        from ..reductions.engine import align_rows

        if isinstance(a, np.ndarray):
            from ..runtime.compute import persist_like

            # On the workers that hold X's rows: a pass reads both without moving either.
            return persist_like(align_rows(a, self.X.chunks[0]), self.X)
        return align_rows(a, self.X.chunks[0])

    def ensure_data_stats(self, name="data-stats") -> dict:
        """The data statistics, computed by a pass of their own if none has run yet."""
        if self.data_stats is None and self.checks is not None:
            self.run_pass({}, name=name)
        return self.data_stats

    def learn(self, stats) -> bool:
        """Check and keep the data statistics; returns whether the precision changed."""
        self.checks.check(stats, self._X_placed)
        self.data_stats = stats
        if self._saved is not None:
            self._ck.check_stats(self._saved.stats, self.checks.fingerprint(stats))
        if self.checks.precision is not None:
            dtype = self.checks.precision(stats, self._X_placed)
            if dtype != self.X.dtype:
                self.X = self.X.astype(dtype)
                return True
        return False

    def use_float64(self):
        """Compute every following pass in float64 (an algorithm's state needs it)."""
        if self.X.dtype != np.float64:
            self.X = self.X.astype(np.float64)

    # ---- the loop ------------------------------------------------------------------
    def run(self, make_algorithm: Callable[[int], Algorithm], *, n_runs: int = 1,
            key: Callable[[dict], float] | None = None) -> dict:
        """Run ``n_runs`` runs of an algorithm to their end; return the best result.

        Parameters
        ----------
        make_algorithm : callable
            ``make_algorithm(run) -> Algorithm`` (a different seed per run, say).
        n_runs : int, default=1
        key : callable, optional
            ``key(result)``: lower is better (needed when ``n_runs > 1``).

        Returns
        -------
        dict
            The best run's result.
        """
        first_run, best, work = 0, None, None
        if self._saved is not None:
            st, arrays = self._saved.state, self._saved.arrays
            first_run, self.n_passes = int(st["run"]), int(st["passes"])
            best = None if st.get("best") is None else _join(st["best"], arrays, "best")
            work = None if st.get("work") is None else _join(st["work"], arrays, "work")
        if first_run >= n_runs:
            # The checkpoint holds a finished fit: one pass checks that it is this data's.
            self.ensure_data_stats(name=f"{self.algorithm.lower()}-check")
            return best
        for run in range(first_run, n_runs):
            algo = make_algorithm(run)
            algo.start(self)
            if work is not None:
                state, work = work, None
            else:
                before = self.n_passes
                state = algo.init_state(self)
                if self.n_passes > before:
                    self.progress.update("init", algo.init_label)
                if self.verbose:
                    print("Initialization complete", flush=True)
                self._save(run, state, best)
            while not algo.converged(state):
                before = self.n_passes
                states = algo.iterations(self, state, self.round_size())
                for i, state in enumerate(states):
                    if len(states) > 1:
                        # A chain: one pass per state, so a checkpoint of state i says
                        # what an unchained fit would have made by then.
                        self.n_passes = before + i + 1
                    phase, iteration, figures = algo.report(state)
                    self.progress.update(phase, iteration, **figures)
                    if self.verbose:
                        print(algo.describe(state), flush=True)
                    self._save(run, state, best)
                    if algo.converged(state):
                        # A chain's passes past convergence are dropped and not counted,
                        # so n_passes_ does not depend on how passes were chained.
                        break
            result = algo.finalize(self, state)
            if best is None or (key is not None and key(result) < key(best)):
                best = result
            self._save(run + 1, None, best)
        return best

    def _save(self, run, state, best):
        # A checkpoint recognises its data by the first pass's statistics: until they
        # are known there is nothing a resumed fit could check, so nothing is saved.
        if self._ck is None or (self.data_stats is None and self.checks is not None):
            return
        scalars = {"run": run, "passes": self.n_passes, "seed": self.seed,
                   "work": None, "best": None}
        arrays = {}
        if state is not None:
            scalars["work"], a = _split(state, "work")
            arrays.update(a)
        if best is not None:
            scalars["best"], a = _split(best, "best")
            arrays.update(a)
        stats = None if self.checks is None else self.checks.fingerprint(self.data_stats)
        self._ck.save(scalars, arrays, stats=stats)

    def close(self, summary=None):
        """End the progress line with ``summary``."""
        self.progress.close(summary)


def _check_checkpoint_params(checkpoint, resume):
    if not isinstance(resume, (bool, np.bool_)):
        raise DclustValueError(f"resume={resume!r} must be True or False.")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise DclustValueError(
            f"checkpoint={checkpoint!r} must be a path or URL of a checkpoint file "
            "(for example 'fit.ckpt.npz'), or None."
        )
    if resume and checkpoint is None:
        raise DclustValueError(
            "resume=True needs checkpoint=PATH, the checkpoint file of the fit to continue."
        )
