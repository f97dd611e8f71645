"""``dclust.BalancedKMeans``: k-means whose assignment step is optimal transport."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import ClusterMixin, TransformerMixin

from .._xp import to_numpy
from ..algorithms.balanced_kmeans import BalancedLloyd, inertia_aggregation
from ..algorithms.kmeans import INITS, check_init_array
from ..algorithms.transport_params import MARGINALS, check_marginal, check_rho, check_sinkhorn_params
from ..exceptions import ConvergenceWarning, DclustValueError
from ..kernels.metrics import pairwise_distances
from ..kernels.sinkhorn import SinkhornState, sinkhorn_assign_block
from ..params import Param, common, result_params
from .kmeans import check_init
from ..runtime.device import predict_device, to_device_block
from ..validation import check_n_clusters
from .base import DclustEstimator, map_rows, register
from .base import require_finite_block as _require_finite

__all__ = ["BalancedKMeans"]


def _labels_block(X, st, rows=None, labels=None, device="cpu", block_info=None):
    """Labels under the prices, with the repair's few per-row moves applied."""
    _require_finite(X, block_info)
    lab = to_numpy(sinkhorn_assign_block(to_device_block(X, device), st, None, what="labels"))
    if rows is not None and rows.size:
        start = block_info[0]["array-location"][0][0] if block_info else 0
        lo, hi = np.searchsorted(rows, [start, start + X.shape[0]])
        lab[rows[lo:hi] - start] = labels[lo:hi]
    return lab


def _soft_block(X, st, device="cpu", block_info=None):
    _require_finite(X, block_info)
    return to_numpy(sinkhorn_assign_block(to_device_block(X, device), st, None, what="soft"))


def _distances_block(X, centers, device="cpu", block_info=None):
    _require_finite(X, block_info)
    D = pairwise_distances(to_device_block(X, device), to_device_block(centers, device),
                           "euclidean")
    return to_numpy(D).astype(X.dtype, copy=False)


@register
class BalancedKMeans(ClusterMixin, TransformerMixin, DclustEstimator):
    """K-means with cluster sizes set by optimal transport (Sinkhorn), on a Dask cluster.

    Each outer iteration solves the entropic transport problem between the rows (mass
    ``w_i / sum w``) and the clusters (mass ``b_j``, the cluster weights) for the cost
    ``C_ij = ||x_i - c_j||^2 / scale``,

    .. math::
        P = \\arg\\min_{P 1 = a,\\; P^T 1 = b} \\langle P, C\\rangle + \\varepsilon H(P),

    with log-domain Sinkhorn (one pass over the data per iteration, potentials warm
    started across outer iterations), then moves each centre to the plan-weighted mean
    ``c_j = sum_i P_ij x_i / sum_i P_ij``, whose sums are folded into the last Sinkhorn
    pass. ``scale`` is twice the total variance of ``X`` (the mean squared distance
    between two rows), computed in the first pass, so ``reg`` is scale-free.

    Parameters
    ----------
    n_clusters : int, default=8
    cluster_weights : "uniform" or array of shape (n_clusters,), default="uniform"
        Target share of the mass of each cluster (positive, summing to 1).
    reg : float, default=0.05
        Entropic regularisation, relative to the cost scale.
    marginal : {"balanced", "relaxed", "partial"}, default="balanced"
        ``"balanced"``: sizes exactly ``b`` (in the transport plan). ``"relaxed"``: the
        sizes are pulled to ``b`` by a penalty ``reg_m KL(P^T 1 | b)`` (unbalanced OT:
        the column update is raised to the power ``reg_m / (reg_m + reg)``).
        ``"partial"``: only the mass ``rho`` is transported to the clusters; a zero-cost
        virtual cluster takes ``1 - rho`` (rows it wins get the label ``-1``).
    reg_m : float, optional
        KL strength for ``"relaxed"`` (default 1.0); relaxes the real clusters of
        ``"partial"`` when given.
    rho : float in (0, 1], optional
        Transported mass for ``"partial"``.
    rho_schedule : {None, "linear"}, default=None
        ``"linear"``: the transported mass grows linearly from ``rho0`` to ``rho`` over
        the outer iterations (progressive partial OT, as in P^2OT).
    rho0 : float, default=0.1
        First transported mass of the schedule.
    size_tolerance : float or None, default=None
        ``None``: hard labels are the plan's argmax. A number ``t >= 0``
        (``marginal="balanced"`` only): after the fit, a repair step lowers the prices
        of overfull clusters (a reverse auction, one pass per round) and then moves the
        few rows still in excess, cheapest first, into clusters that lack rows, until no
        cluster holds more than ``max(T_j, (1 + t) n b_j)`` rows, ``T_j`` the integer
        targets (largest remainders of ``n b_j``); with ``0`` every size is exactly
        ``T_j``, within 1 of ``n b_j``. The moves apply to ``labels_`` only;
        ``predict`` uses the repaired prices.
    init : {"k-means||", "k-means++", "random"}, callable or ndarray, default="k-means||"
        As :class:`dclust.KMeans` (a callable is called on the seeding sample).
    max_iter : int, default=100
        Outer (centre update) iterations.
    tol : float, default=1e-4
        Stop when the squared movement of the centres is below ``tol`` times the mean
        per-feature variance.
    sinkhorn_max_iter : int, default=100
        Sinkhorn iterations per outer iteration.
    sinkhorn_tol : float, default=1e-4
        Marginal error (``sum_j |S_j - b_j|``) at which Sinkhorn stops.
    anneal : bool, default=True
        Decay ``eps`` from 1 to ``reg`` (factor ``eps_decay``) in the first solve.
    eps_decay : float, default=0.5
    random_state, cache, split_every, progress : as :class:`dclust.KMeans`.
    checkpoint, resume, storage_options : as :class:`dclust.KMeans`: the state is saved
        after every Sinkhorn pass, and a resumed fit ends with the same result.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the passes run. ``"cuda"``: on the workers' GPUs through CuPy (chunks move
        to the GPU once per pass, or stay there when they fit; only the ``k x d`` sums
        and the column log-sums come back). ``"auto"``: the GPUs when every worker has
        one, else the CPUs. Potentials are float64 on the client in both cases.

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features)
    cluster_potentials_ : ndarray (n_clusters,)
        Column potentials (prices) in scaled cost units, after any repair; the hard
        label of ``x`` is ``argmax_j potential_j - ||x - c_j||^2 / scale_``.
    scale_ : float
    labels_ : dask.array.Array or ndarray (lazy)
    cluster_mass_ : ndarray (n_clusters,)
        Column sums of the last transport plan.
    virtual_mass_ : float
        Mass of the virtual cluster (``marginal="partial"``), else 0.
    marginal_error_ : float
    inertia_ : float
        k-means inertia of the training rows under ``labels_``: the (weighted) sum of
        squared Euclidean distances of each row to the centre of its hard label (rows of
        the virtual cluster excluded). One pass after the last centre update, since the
        labels depend on the final prices and centres.
    n_iter_, n_sinkhorn_iter_, n_repair_rounds_, n_passes_, converged_, n_features_in_

    Examples
    --------
    >>> import dclust
    >>> bk = dclust.BalancedKMeans(16, size_tolerance=0, random_state=0)  # doctest: +SKIP
    >>> bk.fit(X)                                                         # doctest: +SKIP
    """

    # The last four only after partial_fit (save keeps what the model has).
    _fitted_arrays = ("cluster_centers_", "cluster_potentials_", "cluster_mass_", "counts_",
                      "queue_", "queue_rows_", "seen_sum_")
    _fitted_scalars = ("inertia_", "scale_", "virtual_potential_", "virtual_mass_", "marginal_error_",
                       "n_iter_", "n_sinkhorn_iter_", "n_repair_rounds_", "n_passes_",
                       "converged_", "n_features_in_", "n_steps_", "n_rows_seen_",
                       "stream_position_", "seed_")
    _params = (
        Param("n_clusters", "number of clusters", "int", low=1, short="-k", metavar="K",
              required=True),
        Param("cluster_weights", "target share of each cluster: 'uniform' or comma-separated "
              "weights summing to 1", "any", array=True),
        Param("reg", "entropic regularisation, relative to the cost scale", "float", low=0,
              low_open=True, metavar="EPS"),
        Param("marginal", "how the sizes are enforced: balanced (exactly), relaxed (KL penalty "
              "reg_m) or partial (only rho of the mass)", "choice", options=MARGINALS),
        Param("reg_m", "KL strength on the sizes (relaxed; default 1.0)", "float", low=0,
              low_open=True, none=True, metavar="F"),
        Param("rho", "transported mass for marginal=partial, in (0, 1]", "float", low=0,
              low_open=True, high=1, none=True, metavar="F"),
        Param("rho_schedule", "'linear': grow the transported mass from rho0 to rho",
              "choice", options=("linear",), none=True),
        Param("rho0", "first transported mass of the schedule", "float", low=0, low_open=True,
              high=1, metavar="F"),
        Param("size_tolerance", "repair the hard labels so that no cluster exceeds (1 + T) "
              "times its target (0: exact sizes)", "float", low=0, none=True, metavar="T"),
        Param("init", "initialisation", "any", options=INITS),
        Param("max_iter", "outer (centre update) iterations", "int", low=1, metavar="N"),
        Param("tol", "stop when the centres move less than F times the mean feature variance",
              "float", low=0, metavar="F"),
        Param("sinkhorn_max_iter", "Sinkhorn iterations per outer iteration", "int", low=1,
              metavar="N"),
        Param("sinkhorn_tol", "marginal error at which Sinkhorn stops", "float", low=0,
              metavar="F"),
        Param("anneal", "decay eps from 1 to reg in the first solve", "bool"),
        Param("eps_decay", "annealing factor", "float", low=0, low_open=True, high=1,
              high_open=True, metavar="F"),
        *common("random_state", "cache", "split_every", "progress", "checkpoint", "resume",
                "storage_options", "device"),
        Param("queue_size", "partial_fit: past batches transported with each new batch",
              "int", low=0, result=False, flag=None),
    )

    def __init__(self, n_clusters=8, *, cluster_weights="uniform", reg=0.05, marginal="balanced",
                 reg_m=None, rho=None, rho_schedule=None, rho0=0.1, size_tolerance=None,
                 init="k-means||", max_iter=100, tol=1e-4, sinkhorn_max_iter=100,
                 sinkhorn_tol=1e-4, anneal=True, eps_decay=0.5, random_state=None,
                 cache="auto", split_every=None, progress=True, checkpoint=None, resume=False,
                 storage_options=None, device="auto", queue_size=8):
        self.n_clusters = n_clusters
        self.cluster_weights = cluster_weights
        self.reg = reg
        self.marginal = marginal
        self.reg_m = reg_m
        self.rho = rho
        self.rho_schedule = rho_schedule
        self.rho0 = rho0
        self.size_tolerance = size_tolerance
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.sinkhorn_max_iter = sinkhorn_max_iter
        self.sinkhorn_tol = sinkhorn_tol
        self.anneal = anneal
        self.eps_decay = eps_decay
        self.random_state = random_state
        self.cache = cache
        self.split_every = split_every
        self.progress = progress
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.device = device
        self.queue_size = queue_size

    def _check_params(self):
        super()._check_params()
        check_sinkhorn_params(self.reg, self.marginal, self.reg_m, self.rho,
                              self.sinkhorn_max_iter, self.sinkhorn_tol, self.eps_decay)
        check_init(self.init)
        if self.rho_schedule is not None:
            if self.marginal != "partial":
                raise DclustValueError(
                    f"rho_schedule={self.rho_schedule!r} needs marginal='partial'; got "
                    f"marginal={self.marginal!r}."
                )
            check_rho(self.rho0, "rho0")
        if self.size_tolerance is not None and self.marginal != "balanced":
            raise DclustValueError(
                f"size_tolerance={self.size_tolerance!r} makes the sizes exact, which only "
                f"marginal='balanced' asks for; got marginal={self.marginal!r}. Pass "
                "size_tolerance=None."
            )

    def fit(self, X, y=None, sample_weight=None):
        """Fit the centres and the transport prices.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like or dask array of shape (n_samples,), optional
            Row masses (normalised to sum to one).

        Returns
        -------
        self
        """
        self._check_params()
        session = self._session(X, sample_weight)
        n, d = session.n_samples, session.n_features
        k = check_n_clusters(self.n_clusters, n)
        b = check_marginal(self.cluster_weights, k, "cluster_weights")
        init = self.init
        if not isinstance(init, str) and not callable(init):
            init = check_init_array(init, k, d)
        session.set_label(f"BalancedKMeans(k={k})")
        session.open(result_params(self, n_clusters=k, init=init, cluster_weights=b),
                     self.random_state)
        algo = BalancedLloyd(
            k, b, init=init, seed=session.seed, reg=self.reg, marginal=self.marginal,
            reg_m=self.reg_m, rho=self.rho, rho_schedule=self.rho_schedule, rho0=self.rho0,
            max_iter=self.max_iter, tol=self.tol, sinkhorn_max_iter=self.sinkhorn_max_iter,
            sinkhorn_tol=self.sinkhorn_tol, anneal=self.anneal, eps_decay=self.eps_decay,
            size_tolerance=self.size_tolerance,
        )
        res = session.run(lambda run: algo)
        session.close(f"BalancedKMeans(k={k}): {res['n_iter']} iterations, marginal error "
                      f"{res['error']:.3g}, {'converged' if res['converged'] else 'not converged'}")
        if not res["sk_converged"]:
            warnings.warn(
                f"Sinkhorn stopped at sinkhorn_max_iter={self.sinkhorn_max_iter} with marginal "
                f"error {res['error']:.3g} > sinkhorn_tol={self.sinkhorn_tol}; raise "
                "sinkhorn_max_iter or reg.",
                ConvergenceWarning, stacklevel=2,
            )
        if not res["converged"]:
            warnings.warn(
                f"BalancedKMeans stopped at max_iter={self.max_iter} before the centres moved "
                f"less than tol={self.tol}; raise max_iter or tol.",
                ConvergenceWarning, stacklevel=2,
            )
        prices, virtual = np.asarray(res["prices"], dtype=np.float64), bool(res["virtual"])
        self.inertia_ = float(res["inertia"])
        self.cluster_centers_ = np.asarray(res["centers"]).astype(session.dtype)
        self._centers64 = np.asarray(res["centers"], dtype=np.float64)
        self.cluster_potentials_ = prices[:k].copy()
        self.virtual_potential_ = float(prices[k]) if virtual else None
        self.scale_ = float(res["scale"])
        self.cluster_mass_ = np.asarray(res["mass"])
        self.virtual_mass_ = float(res["virtual_mass"])
        self.marginal_error_ = float(res["error"])
        self.n_iter_ = int(res["n_iter"])
        self.n_sinkhorn_iter_ = int(res["n_sk"])
        self.n_repair_rounds_ = int(res["n_rounds"])
        self.n_passes_ = int(session.n_passes)
        self.converged_ = bool(res["converged"])
        self.n_features_in_ = int(d)
        rows, labels = res["override_rows"], res["override_labels"]
        self.labels_ = self._assign(session.X_source, "labels", rows if rows.size else None,
                                    labels if labels.size else None)
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the centres with one batch, its labels balanced over a queue of batches.

        The balanced Sinkhorn problem is solved on the batch plus the last
        ``queue_size`` batches (SwAV's queue), under the current centres; the batch's
        rows are then labelled under per-batch capacities (``cluster_weights`` times the
        batch's rows, within one row) and every centre moves to the running mean of the
        rows it received (mini-batch k-means' per-centre learning rate).
        :meth:`fit` is unchanged by this.

        Parameters
        ----------
        X : array-like, dask array or zarr array (a region) of shape (n_rows, n_features)
        y : Ignored
        sample_weight : Ignored
            Accepted for the scikit-learn signature; every row counts once.

        Returns
        -------
        self
        """
        from ..algorithms.online_balanced import partial_fit_balanced

        return partial_fit_balanced(self, X)

    # ---- prediction ------------------------------------------------------------------
    def _state(self):
        g = np.asarray(self.cluster_potentials_, dtype=np.float64)
        virtual = getattr(self, "virtual_potential_", None) is not None
        if virtual:
            g = np.append(g, self.virtual_potential_)
        C = getattr(self, "_centers64", None)
        if C is None:
            C = np.asarray(self.cluster_centers_, dtype=np.float64)
        return SinkhornState(kind="points", g=g, eps=float(self.reg), centers=C,
                             scale=float(self.scale_), virtual=virtual)

    def _assign(self, X, what, rows=None, labels=None):
        st = self._state()
        device = predict_device(getattr(self, "device", "auto"), X)
        if what == "labels":
            return map_rows(X, _labels_block, st, rows, labels, device)
        return map_rows(X, _soft_block, st, device, n_out=self.cluster_centers_.shape[0],
                        dtype=np.float64)

    def predict(self, X):
        """Cluster of each row under the fitted prices: ``argmax_j g_j - ||x - c_j||^2 / scale``.

        Rows whose best choice is the virtual cluster (``marginal="partial"``) get ``-1``.
        Lazy (dask) unless ``X`` is a NumPy array.
        """
        return self._assign(self._check_X(X), "labels")

    def predict_proba(self, X):
        """Soft assignments ``softmax_j((g_j - C_ij) / reg)`` over the clusters (n x k)."""
        return self._assign(self._check_X(X), "soft")

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X)`` then return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Euclidean distances to every centre, shape (n_samples, n_clusters).

        As :meth:`dclust.KMeans.transform`: an ndarray for NumPy input, else lazy.
        """
        X = self._check_X(X)
        C = self._state().centers
        device = predict_device(getattr(self, "device", "auto"), X)
        out = map_rows(X, _distances_block, C, device, n_out=C.shape[0], dtype=X.dtype)
        return out.astype(X.dtype, copy=False) if isinstance(out, np.ndarray) else out

    def fit_transform(self, X, y=None, sample_weight=None):
        """``fit(X)`` then return ``transform(X)``."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the k-means inertia of ``X`` under the fitted centres (one pass).

        Each row counts the squared Euclidean distance to the centre of its hard label
        (:meth:`predict`, the fitted prices; rows of the virtual cluster count for
        nothing), weighted by ``sample_weight``. Larger is better.
        """
        session = self._scoring_session(X, sample_weight)
        res = session.run_pass({"i": inertia_aggregation(self._state())},
                               name="balanced-kmeans-score")
        return -float(res["i"]["inertia"])
