"""``dclust.KMeans``: scikit-learn's estimator interface over distributed k-means."""

from __future__ import annotations

import numbers
import os
import warnings

import numpy as np
from sklearn.base import ClusterMixin, TransformerMixin

from ..algorithms.checkpoint import Checkpoint, array_digest, data_fingerprint
from ..algorithms.kmeans import (
    KMeansResult,
    check_data_stats,
    check_init_array,
    data_stats_aggregation,
    kmeans_fit,
    lloyd_aggregation,
    safe_magnitude,
)
from ..exceptions import ConvergenceWarning, DclustValueError
from ..kernels.distances import euclidean_distances
from ..kernels.lloyd import nearest_center
from ..reductions.engine import run_pass
from ..runtime.progress import Progress
from ..validation import (
    as_dask_rows,
    check_n_clusters,
    check_param,
    check_random_state,
    check_sample_weight,
)
from .._xp import to_numpy
from ..runtime.device import check_device, predict_device, to_device_block
from .base import require_finite_block as _require_finite
from .base import DclustEstimator, prepare_fit_data, register

__all__ = ["KMeans"]

_INITS = ("k-means||", "k-means++", "random")


def _precise(X, centers):
    """float32 ``X`` as float64 when its squares (or the centres') would overflow float32."""
    if X.dtype != np.float32 or X.shape[0] == 0:
        return X
    limit = safe_magnitude(np.float32, X.shape[1])
    big = max(abs(float(X.max())), abs(float(X.min())), float(np.abs(centers).max(initial=0.0)))
    return X.astype(np.float64) if big > limit else X


def _labels_block(X, centers, device="cpu", block_info=None):
    _require_finite(X, block_info)
    X = to_device_block(X, device)
    labels, _ = nearest_center(_precise(X, centers), centers)
    return to_numpy(labels).astype(np.int32)


def _distances_block(X, centers, block_info=None):
    _require_finite(X, block_info)
    return euclidean_distances(_precise(X, centers), centers).astype(X.dtype, copy=False)


def _stats_fingerprint(stats):
    """The data statistics a checkpoint keeps to recognise its data."""
    if stats is None:
        return None
    return {key: np.asarray(stats[key], dtype=np.float64)
            for key in ("count", "mean", "m2", "absmax", "weight_sum") if key in stats}


@register
class KMeans(ClusterMixin, TransformerMixin, DclustEstimator):
    """K-means clustering of data larger than memory, on a Dask cluster.

    Each iteration is one pass over the data: every row-chunk computes its nearest
    centres by GEMM and the per-cluster sums in one fused kernel, and a tree reduction
    brings the ``k x d`` sums back to the client.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means||", "k-means++", "random"} or ndarray of shape (n_clusters, n_features), default="k-means||"
        ``"k-means||"``: Bahmani et al.'s scalable k-means++ (about ``2k`` candidates a
        round, 5 rounds, candidates weighted by the points they attract, reclustered with
        weighted k-means++), run on a uniform sample of ``init_size`` rows drawn in one
        pass. ``"k-means++"``: greedy k-means++ on that sample. ``"random"``: ``k`` rows
        drawn at random (weighted by ``sample_weight``). An array is used as given.
    n_init : int, default=1
        Runs with different seeds; the one with the lowest inertia is kept.
    max_iter : int, default=300
        Maximum Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence when the squared movement of the centres is at most ``tol`` times
        the mean per-feature variance of ``X`` (scikit-learn's rule).
    random_state : int, numpy Generator or None, default=None
        Seed. With the same seed and chunking the result is bit-identical whatever the
        number of workers.
    cache : {"auto", "memory", "none"}, default="auto"
        ``"memory"`` persists ``X`` on the workers for the fit; ``"none"`` streams it from
        its source (Zarr) on every pass; ``"auto"`` persists when it takes at most half
        the workers' memory.
    init_size : int, optional
        Rows the seeding runs on; default ``min(n, max(50000, 32 * n_clusters))``.
    oversampling_factor : float, default=2.0
        k-means|| candidates per round, as a multiple of ``n_clusters``.
    init_max_iter : int, default=5
        k-means|| rounds.
    split_every : int, optional
        Fan-in of the reduction tree (default 8).
    progress : bool, default=True
        Show a progress line for fits that run longer than a few seconds.
    checkpoint : str or os.PathLike, optional
        Save the state of the fit to this file (local path or fsspec URL, an NPZ archive
        without pickle) after the initialisation and after every iteration, atomically:
        the new state is written under a temporary name and renamed over the old one.
        Without ``resume`` an existing checkpoint there is replaced.
    resume : bool, default=False
        Continue from the state saved at ``checkpoint`` by an interrupted fit (a missing
        file starts a new fit). The result is the same, bit for bit, as that of a fit
        that was never interrupted. A checkpoint written for other data (shape, dtype,
        chunking, weights, statistics) or other parameters is refused, naming what
        differs; with ``random_state=None`` the checkpoint's seed is used.
    storage_options : dict, optional
        fsspec options for a ``checkpoint`` URL.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the kernels run. ``"cuda"``: on the workers' GPUs through CuPy (chunks move
        to the GPU once per pass, or stay there when they fit; only the ``k x d`` sums
        come back). ``"auto"``: the GPUs when every worker has one, else the CPUs.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : dask.array.Array of shape (n_samples,), or ndarray for NumPy input
        Lazily computed: writing or computing it is one more pass.
    inertia_ : float
        Sum of weighted squared distances of samples to their closest centre.
    n_iter_ : int
    converged_ : bool
    n_features_in_ : int
    n_passes_ : int
        Passes over the data the fit made (init, iterations and the final inertia).

    See Also
    --------
    sklearn.cluster.KMeans : the in-memory estimator this one follows.

    Examples
    --------
    >>> import dclust
    >>> X = dclust.open_array("blobs.zarr")                     # doctest: +SKIP
    >>> km = dclust.KMeans(n_clusters=16, random_state=0).fit(X) # doctest: +SKIP
    >>> km.cluster_centers_.shape                                # doctest: +SKIP
    (16, 32)
    """

    _fitted_arrays = ("cluster_centers_",)
    _fitted_scalars = ("inertia_", "n_iter_", "converged_", "n_features_in_", "n_passes_")

    def __init__(self, n_clusters=8, *, init="k-means||", n_init=1, max_iter=300, tol=1e-4,
                 random_state=None, cache="auto", init_size=None, oversampling_factor=2.0,
                 init_max_iter=5, split_every=None, progress=True, checkpoint=None,
                 resume=False, storage_options=None, device="auto"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.cache = cache
        self.init_size = init_size
        self.oversampling_factor = oversampling_factor
        self.init_max_iter = init_max_iter
        self.split_every = split_every
        self.progress = progress
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.device = device

    def _validate_params(self):
        if isinstance(self.init, str):
            if self.init not in _INITS:
                raise DclustValueError(
                    f"Unknown init {self.init!r}; expected one of 'k-means||', 'k-means++', "
                    "'random' or an array of shape (n_clusters, n_features)."
                )
        elif not hasattr(self.init, "shape") and not isinstance(self.init, (list, tuple)):
            raise DclustValueError(
                f"init={self.init!r} is not valid; expected one of 'k-means||', 'k-means++', "
                "'random' or an array of shape (n_clusters, n_features)."
            )
        check_param("n_init", self.n_init, kind=numbers.Integral, low=1)
        check_device(self.device)
        check_param("max_iter", self.max_iter, kind=numbers.Integral, low=1)
        check_param("tol", self.tol, kind=numbers.Real, low=0)
        check_param("cache", self.cache, options=("auto", "memory", "none"))
        check_param("oversampling_factor", self.oversampling_factor, kind=numbers.Real, low=0,
                    low_inclusive=False)
        check_param("init_max_iter", self.init_max_iter, kind=numbers.Integral, low=0)
        if self.init_size is not None:
            check_param("init_size", self.init_size, kind=numbers.Integral, low=1)
        if self.split_every is not None:
            check_param("split_every", self.split_every, kind=numbers.Integral, low=2)
        if not isinstance(self.resume, (bool, np.bool_)):
            raise DclustValueError(f"resume={self.resume!r} must be True or False.")
        if self.checkpoint is not None and not isinstance(self.checkpoint, (str, os.PathLike)):
            raise DclustValueError(
                f"checkpoint={self.checkpoint!r} must be a path or URL of a checkpoint file "
                "(for example 'fit.ckpt.npz'), or None."
            )
        if self.resume and self.checkpoint is None:
            raise DclustValueError(
                "resume=True needs checkpoint=PATH, the checkpoint file of the fit to continue."
            )

    def fit(self, X, y=None, sample_weight=None):
        """Compute k-means clustering.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like or dask array of shape (n_samples,), default=None

        Returns
        -------
        self : KMeans
        """
        self._validate_params()
        X_arr = as_dask_rows(X)
        n, d = X_arr.shape
        k = check_n_clusters(self.n_clusters, n)
        init = self.init
        if not isinstance(init, str):
            init = check_init_array(init, k, d)  # before any data is placed on the cluster
        seed = None if self.random_state is None and self.resume else check_random_state(self.random_state)
        n_init = 1 if not isinstance(init, str) else self.n_init
        progress = Progress(f"KMeans(k={k})", enabled=bool(self.progress))
        if isinstance(X_arr, np.ndarray):  # its chunking is chosen when it is placed
            X_work, w_work, X_source = prepare_fit_data(X_arr, sample_weight, self.cache, self.device)
            ck, saved, seed = self._open_checkpoint(X_work, w_work, k, init, n_init, seed)
        else:  # refuse a checkpoint before persisting anything
            weighted = check_sample_weight(sample_weight, n)
            ck, saved, seed = self._open_checkpoint(X_arr, weighted, k, init, n_init, seed)
            X_work, w_work, X_source = prepare_fit_data(X_arr, sample_weight, self.cache, self.device)
        best = None
        data_stats = None
        passes = 0
        first_run = 0
        resume_state = None
        if saved is not None:
            st = saved.state
            first_run, passes = int(st["run"]), int(st["passes"])
            if st.get("best") is not None:
                best = KMeansResult(centers=saved.arrays["best_centers"], data_stats=None, **st["best"])
            if st.get("work") is not None:
                resume_state = dict(st["work"], centers=saved.arrays["centers"])

        def state(run, work=None, centers=None, stats=None, passes_done=0):
            scalars = {"run": run, "passes": passes_done, "seed": seed, "work": work, "best": None}
            arrays = {}
            if best is not None:
                scalars["best"] = {f: getattr(best, f) for f in
                                   ("inertia", "n_iter", "converged", "n_passes", "init_inertia",
                                    "n_nonempty")}
                arrays["best_centers"] = best.centers
            if centers is not None:
                arrays["centers"] = centers
            return scalars, arrays, stats

        def saver(run):
            def on_iteration(loop):
                work = {f: loop[f] for f in ("n_iter", "n_passes", "init_inertia", "n_empty_total",
                                             "converged", "shift")}
                scalars, arrays, _ = state(run, work, loop["centers"], passes_done=passes)
                ck.save(scalars, arrays, stats=_stats_fingerprint(loop["data_stats"]))
            return on_iteration

        def checker(stats):
            ck.check_stats(saved.stats, _stats_fingerprint(stats))

        if saved is not None and first_run >= n_init:
            # The checkpoint holds a finished fit: one pass checks that it is this data's.
            stats = run_pass(X_work, {"data": data_stats_aggregation()}, sample_weight=w_work,
                             split_every=self.split_every, name="kmeans-check")["data"]
            passes += 1
            check_data_stats(stats, X_arr)
            checker(stats)
        for run in range(first_run, n_init):
            resuming = resume_state is not None and run == first_run
            res = kmeans_fit(
                X_work, w_work, k, init=init, max_iter=self.max_iter, tol=self.tol,
                seed=seed + run, init_size=self.init_size,
                oversampling_factor=self.oversampling_factor, n_init_rounds=self.init_max_iter,
                split_every=self.split_every, progress=progress,
                data_stats=None if resuming else data_stats,
                resume=resume_state if resuming else None,
                on_iteration=saver(run) if ck is not None else None,
                on_data_stats=checker if (saved is not None and data_stats is None) else None,
            )
            data_stats = res.data_stats
            passes += res.n_passes
            if best is None or res.inertia < best.inertia:
                best = res
            if ck is not None:
                scalars, arrays, _ = state(run + 1, passes_done=passes)
                ck.save(scalars, arrays, stats=_stats_fingerprint(data_stats))
        progress.close(
            f"KMeans(k={k}): {best.n_iter} iterations, inertia {best.inertia:.6g}, "
            f"{'converged' if best.converged else 'not converged'}"
        )
        if not best.converged:
            warnings.warn(
                f"KMeans stopped at max_iter={self.max_iter} before the centres moved less than "
                f"tol={self.tol}; raise max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        if best.n_nonempty < k:
            warnings.warn(
                f"Number of distinct clusters ({best.n_nonempty}) found smaller than "
                f"n_clusters ({k}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        dtype = X_arr.dtype
        self.cluster_centers_ = best.centers.astype(dtype)
        self.inertia_ = float(best.inertia)
        self.n_iter_ = int(best.n_iter)
        self.converged_ = bool(best.converged)
        self.n_features_in_ = int(d)
        self.n_passes_ = int(passes)
        self._init_inertia = best.init_inertia
        self.labels_ = self._predict_array(X_source)
        return self

    def _checkpoint_params(self, k, init, n_init, seed):
        """The parameters a checkpoint must agree on (those that change the result)."""
        return {
            "n_clusters": int(k),
            "init": init if isinstance(init, str) else array_digest(init),
            "n_init": int(n_init),
            "max_iter": int(self.max_iter),
            "tol": float(self.tol),
            "random_state": seed,
            "init_size": self.init_size,
            "oversampling_factor": float(self.oversampling_factor),
            "init_max_iter": int(self.init_max_iter),
            "split_every": self.split_every,
        }

    def _open_checkpoint(self, X, w, k, init, n_init, seed):
        """``(checkpoint, saved state or None, seed)`` for this fit."""
        if self.checkpoint is None:
            return None, None, seed
        ck = Checkpoint(self.checkpoint, "KMeans", self._checkpoint_params(k, init, n_init, seed),
                        data_fingerprint(X, w), storage_options=self.storage_options)
        if not self.resume:
            return ck, None, seed
        if seed is None:  # random_state=None: continue with the interrupted fit's seed
            seed = ck.saved_seed()
            if seed is None:
                seed = check_random_state(None)
            ck.params["random_state"] = seed
        return ck, ck.load(), seed

    # ---- prediction --------------------------------------------------------------
    def _centers64(self):
        return np.asarray(self.cluster_centers_, dtype=np.float64)

    def _predict_array(self, X):
        C = self._centers64()
        device = predict_device(getattr(self, "device", "auto"), X)
        if isinstance(X, np.ndarray):
            return _labels_block(X, C, device)
        return X.map_blocks(_labels_block, C, device, drop_axis=1, dtype=np.int32,
                            meta=np.empty((0,), np.int32))

    def predict(self, X):
        """Index of the nearest centre for each sample.

        Returns an ndarray for NumPy input and a lazy dask array otherwise.
        """
        return self._predict_array(self._check_X(X))

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X)`` then return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Euclidean distances to every centre, shape (n_samples, n_clusters)."""
        X = self._check_X(X)
        C = self._centers64()
        if isinstance(X, np.ndarray):
            return _distances_block(X, C).astype(X.dtype)
        k = C.shape[0]
        return X.map_blocks(_distances_block, C, chunks=(X.chunks[0], (k,)), dtype=X.dtype)

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of ``X`` under the fitted centres (one pass)."""
        X, w, _ = prepare_fit_data(self._check_X(X), sample_weight, "none", self.device)
        C = self._centers64()
        res = run_pass(X, {"lloyd": lloyd_aggregation(C, 0)}, sample_weight=w,
                       split_every=self.split_every, name="kmeans-score")
        return -float(res["lloyd"]["inertia"])
