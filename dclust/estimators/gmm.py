"""``dclust.GaussianMixture``: scikit-learn's Gaussian mixture by distributed EM."""

from __future__ import annotations

import math
import numbers
import warnings

import dask.array as da
import numpy as np
from sklearn.base import DensityMixin

from .._xp import to_numpy
from ..algorithms.datachecks import DEFAULT_CHECKS
from ..algorithms.gmm import (
    EM,
    INIT_PARAMS,
    kernel_model,
    label_checks,
    n_parameters,
    precisions_from_cholesky,
    score_aggregation,
)
from ..exceptions import ConvergenceWarning, DclustValueError, NotFittedError
from ..kernels.gmm import COVARIANCE_TYPES, gmm_log_resp, gmm_weighted_log_prob
from ..params import Param, array_digest, common, result_params
from ..runtime.device import predict_device, to_device_block
from ..validation import as_dask_rows
from ..validation import check_known_classes
from .base import SEMI_SUPERVISED_DOC, DclustEstimator, known_classes_given, map_rows, register
from .base import require_finite_block as _require_finite

__all__ = ["GaussianMixture"]


# ---- per-block outputs (lazy for dask input) -----------------------------------------
def _log_resp_block(X, model, covariance_type, device):
    X = to_device_block(X, device)
    return gmm_log_resp(X, model, covariance_type)


def _labels_block(X, model, covariance_type, device="cpu", block_info=None):
    _require_finite(X, block_info)
    L = gmm_weighted_log_prob(to_device_block(X, device), model, covariance_type)
    return to_numpy(L).argmax(axis=1).astype(np.int64)


def _labels_known_block(X, y, model, covariance_type, device="cpu", block_info=None):
    labels = _labels_block(X, model, covariance_type, device, block_info)
    y = np.asarray(y).reshape(-1).astype(np.int64, copy=False)
    return np.where(y >= 0, y, labels)


def _proba_block(X, model, covariance_type, device="cpu", block_info=None):
    _require_finite(X, block_info)
    _, log_resp = _log_resp_block(X, model, covariance_type, device)
    return np.exp(to_numpy(log_resp)).astype(X.dtype, copy=False)


def _score_samples_block(X, model, covariance_type, device="cpu", block_info=None):
    _require_finite(X, block_info)
    norm, _ = _log_resp_block(X, model, covariance_type, device)
    return to_numpy(norm).astype(X.dtype, copy=False)


# ---- checks of the initial parameters ------------------------------------------------
def _array(value, name):
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DclustValueError(f"{name}={value!r} cannot be read as an array of numbers.") from None
    if not np.isfinite(a).all():
        raise DclustValueError(f"{name} contains NaN or infinite values; every entry must be "
                               "finite.")
    return a


def check_weights_init(weights, n_components):
    w = _array(weights, "weights_init")
    if w.shape != (n_components,):
        raise DclustValueError(f"weights_init has shape {w.shape}; it must have shape "
                               f"(n_components,) = ({n_components},).")
    if (w < 0).any() or (w > 1).any():
        raise DclustValueError(
            f"weights_init must be in [0, 1]; got values from {w.min():.5g} to {w.max():.5g}.")
    atol = 1e-6 if np.asarray(weights).dtype == np.float32 else 1e-8
    if abs(1.0 - w.sum()) > atol:
        raise DclustValueError(f"weights_init must sum to 1; it sums to {w.sum():.10g}. "
                               "Divide it by its sum.")
    return w


def check_means_init(means, n_components, n_features):
    m = _array(means, "means_init")
    if m.shape != (n_components, n_features):
        raise DclustValueError(f"means_init has shape {m.shape}; it must have shape "
                               f"(n_components, n_features) = ({n_components}, {n_features}).")
    return m


_PRECISION_SHAPES = {"full": "(n_components, n_features, n_features)",
                     "tied": "(n_features, n_features)", "diag": "(n_components, n_features)",
                     "spherical": "(n_components,)"}


def check_precisions_init(precisions, covariance_type, n_components, n_features):
    p = _array(precisions, "precisions_init")
    k, d = n_components, n_features
    shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]
    if p.shape != shape:
        raise DclustValueError(
            f"precisions_init has shape {p.shape}; with covariance_type={covariance_type!r} it "
            f"must have shape {_PRECISION_SHAPES[covariance_type]} = {shape}.")
    if covariance_type in ("diag", "spherical"):
        if (p <= 0).any():
            raise DclustValueError(f"precisions_init must be positive for covariance_type="
                                   f"{covariance_type!r}; its smallest value is {p.min():.5g}.")
        return p
    for j, mat in enumerate(p[None] if covariance_type == "tied" else p):
        where = "" if covariance_type == "tied" else f" of component {j}"
        if not (np.allclose(mat, mat.T) and (np.linalg.eigvalsh(mat) > 0).all()):
            raise DclustValueError(f"The precision matrix{where} in precisions_init is not "
                                   "symmetric positive definite; every precision must be.")
    return p


def check_y(y, n_samples):
    """Known components per row: a NumPy array (checked here) or a lazy dask array
    (checked in the first pass)."""
    return check_known_classes(y, n_samples, what="component", none_if_unlabelled=False)


def _check_y_values(y, n_components):
    bad = (y < -1) | (y >= n_components)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DclustValueError(
            f"y has {int(bad.sum()):,} values outside -1..{n_components - 1} (first at row "
            f"{first:,}: {int(y[first])}); each row's y must be its component, 0 to "
            f"n_components - 1 = {n_components - 1}, or -1 where it is unknown. Fix those "
            "labels or raise n_components.")


@register
class GaussianMixture(DensityMixin, DclustEstimator):
    """Gaussian mixture fitted by EM on data larger than memory, on a Dask cluster.

    scikit-learn's :class:`~sklearn.mixture.GaussianMixture` (same parameters,
    attributes and methods, the same EM): given the same initial parameters it reaches
    the same lower bound, means and covariances in the same number of iterations. Each
    EM iteration is one pass over the data: every row-chunk computes its
    log-responsibilities under the current parameters and returns the M-step's
    sufficient statistics; the M-step runs on the client in float64.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        ``"full"``: a covariance matrix per component; ``"tied"``: one shared by all;
        ``"diag"``: a diagonal per component; ``"spherical"``: a variance per component.
    tol : float, default=1e-3
        EM stops when the lower bound (the mean log-likelihood) changes by less.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance, so that they stay positive definite.
    max_iter : int, default=100
        EM iterations per run (0: only the initialisation).
    n_init : int, default=1
        Runs with different seeds; the one with the highest lower bound is kept.
    init_params : {"k-means||", "kmeans", "k-means++", "random", "random_from_data"}, \
            default="k-means||"
        How the parameters start (see :mod:`dclust.algorithms.gmm` for the passes):

        - ``"k-means||"``: k-means|| centres seeded on a sample of ``init_size`` rows
          (one pass); every row assigned to its nearest centre gives the weights,
          means and covariances (one more pass).
        - ``"kmeans"`` (scikit-learn's default): the same seeding, then Lloyd
          iterations on the full data until k-means converges (one pass each).
        - ``"k-means++"``: greedy k-means++ rows of the sample; each component starts
          there with covariance ``reg_covar * I`` (one pass).
        - ``"random"``: uniformly random responsibilities (one pass).
        - ``"random_from_data"``: ``n_components`` rows drawn at random, started as
          for ``"k-means++"`` (one pass).
    weights_init : array-like of shape (n_components,), default=None
        Initial weights (replacing the initialisation's).
    means_init : array-like of shape (n_components, n_features), default=None
        Initial means.
    precisions_init : array-like, default=None
        Initial precisions (inverse covariances), shaped per ``covariance_type``:
        ``(n_components,)`` spherical, ``(n_features, n_features)`` tied,
        ``(n_components, n_features)`` diag, ``(n_components, n_features, n_features)``
        full. With all three initial arrays no initialisation pass is made.
    random_state : int, numpy Generator, RandomState or None, default=None
        Seed of the initialisation and of :meth:`sample`. With the same seed and
        chunking the fit is bit-identical whatever the number of workers.
    warm_start : bool, default=False
        A second ``fit`` starts from the parameters of the first (one run; ``n_init``
        is ignored), and its lower bound to improve on.
    verbose : int, default=0
        Print a line after the initialisation and after every iteration.
    verbose_interval : int, default=10
        Accepted for scikit-learn compatibility; dclust prints every iteration.
    cache : {"auto", "memory", "none"}, default="auto"
        Keep ``X`` in the workers' memory (``"memory"``), stream it from its source on
        every pass (``"none"``), or keep it when it takes at most half the memory.
    init_size : int, optional
        Rows of the initialisation's sample; default ``min(n, max(50000, 32 k))``.
    split_every : int, optional
        Fan-in of the reduction tree (default 8).
    progress : bool, default=True
        Show a progress line for fits that run longer than a few seconds.
    checkpoint : str or os.PathLike, optional
        Save the state of the fit here after the initialisation and after every
        iteration, atomically; see :class:`dclust.KMeans`.
    resume : bool, default=False
        Continue an interrupted fit from ``checkpoint``; the result is bit-identical to
        that of an uninterrupted fit.
    storage_options : dict, optional
        fsspec options of a ``checkpoint`` URL.
    semi_supervised : {"auto", True, False}, default="auto"
        Whether ``fit``'s ``y`` holds known components (see ``fit``).
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the kernels run (CuPy on the workers' GPUs for ``"cuda"``).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray, shaped as ``precisions_init``
    precisions_ : ndarray, shaped as ``precisions_init``
    precisions_cholesky_ : ndarray, shaped as ``precisions_init``
        Upper Cholesky factors ``U`` of the precisions (``precision = U U^T``).
    converged_ : bool
    n_iter_ : int
        EM iterations of the best run.
    lower_bound_ : float
        Lower bound of the best run: the weighted mean log-likelihood of the training
        data (of each row and its label, for labelled rows) under the parameters before
        the last M-step, as scikit-learn reports it.
    lower_bounds_ : ndarray of shape (n_iter_,)
        The lower bound after every iteration of the best run.
    labels_ : dask.array.Array of shape (n_samples,), or ndarray for NumPy input
        The most probable component of every training row (a labelled row's is its
        label). Lazily computed: writing or computing it is one more pass.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    n_passes_ : int
        Passes over the data the fit made.

    Notes
    -----
    ``sample_weight`` (which scikit-learn's estimator does not take) makes the EM
    weighted: a row of weight 2 counts as two copies of it in every statistic and in
    the lower bound, which is the weighted mean of the rows' log-likelihoods.

    Partly labelled data: ``fit(X, y)`` with ``y`` the component of each row (0 to
    ``n_components - 1``) or -1 where it is unknown. Labelled rows keep their
    responsibility fixed to their component; components without labelled rows are
    free (novel classes). ``y`` may be a NumPy, dask or Zarr array; a lazy ``y`` is
    checked in the fit's first pass.

    See Also
    --------
    sklearn.mixture.GaussianMixture : the in-memory estimator this one follows.

    Examples
    --------
    >>> import dclust
    >>> X = dclust.open_array("blobs.zarr")                         # doctest: +SKIP
    >>> gm = dclust.GaussianMixture(8, covariance_type="diag").fit(X)  # doctest: +SKIP
    >>> gm.bic(X)                                                   # doctest: +SKIP
    """

    _params = (
        Param("n_components", "number of mixture components", "int", low=1, short="-k",
              metavar="K", required=True),
        Param("covariance_type", "covariance of each component: full, tied (one for all), "
              "diag or spherical", "choice", options=COVARIANCE_TYPES),
        Param("tol", "stop when the lower bound changes by less than F", "float", low=0,
              metavar="F"),
        Param("reg_covar", "added to the diagonal of every covariance", "float", low=0,
              metavar="F"),
        Param("max_iter", "maximum EM iterations per run", "int", low=0, metavar="N"),
        Param("n_init", "runs with different seeds; the highest lower bound wins", "int", low=1,
              metavar="N"),
        Param("init_params", "initialisation", "choice", options=INIT_PARAMS),
        Param("weights_init", "initial weights", "any", none=True, array=True, flag=None),
        Param("means_init", "initial means", "any", none=True, array=True, flag=None),
        Param("precisions_init", "initial precisions", "any", none=True, array=True, flag=None),
        *common("random_state"),
        Param("warm_start", "start from the previous fit's parameters", "bool", flag=None),
        Param("verbose", "print a line per iteration", "int", low=0, result=False, flag=None),
        Param("verbose_interval", "iterations between verbose lines (dclust prints every one)",
              "int", low=1, result=False, flag=None),
        *common("cache"),
        Param("init_size", "rows the initialisation's sample holds", "int", low=1, none=True,
              metavar="N"),
        *common("split_every", "progress", "checkpoint", "resume", "storage_options", "device"),
        Param("semi_supervised", SEMI_SUPERVISED_DOC, "choice", options=("auto", True, False),
              result=False, flag=None),
    )
    _fitted_arrays = ("weights_", "means_", "covariances_", "precisions_",
                      "precisions_cholesky_", "lower_bounds_")
    _fitted_scalars = ("converged_", "n_iter_", "lower_bound_", "n_features_in_", "n_passes_")

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="k-means||", weights_init=None,
                 means_init=None, precisions_init=None, random_state=None, warm_start=False,
                 verbose=0, verbose_interval=10, cache="auto", init_size=None, split_every=None,
                 progress=True, checkpoint=None, resume=False, storage_options=None,
                 device="auto", semi_supervised="auto"):
        self.semi_supervised = semi_supervised
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.cache = cache
        self.init_size = init_size
        self.split_every = split_every
        self.progress = progress
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.device = device

    # ---- fitting ----------------------------------------------------------------------
    def _warm_params(self):
        """The previous fit's parameters (``warm_start``), or None."""
        if not (self.warm_start and hasattr(self, "converged_") and hasattr(self, "means_")):
            return None
        return {"weights": np.asarray(self.weights_, dtype=np.float64),
                "means": np.asarray(self.means_, dtype=np.float64),
                "covariances": np.asarray(self.covariances_, dtype=np.float64),
                "prec_chol": np.asarray(self.precisions_cholesky_, dtype=np.float64),
                "lower_bound": float(self.lower_bound_)}

    def fit(self, X, y=None, sample_weight=None):
        """Estimate the mixture's parameters with EM.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        y : array-like, dask or zarr array of shape (n_samples,), default=None
            Known component of each row, -1 where unknown (partly labelled data); None:
            every row is free. Used as ``semi_supervised`` says: by default when it is a
            lazy array or has -1 entries (a fully labelled NumPy ``y`` is a pipeline's
            target and is ignored, as scikit-learn's mixtures ignore it; pass
            ``semi_supervised=True`` to fit it fully supervised).
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            Weighted EM: a row counts ``sample_weight`` times.

        Returns
        -------
        self : GaussianMixture
        """
        self._check_params()
        if not known_classes_given(self.semi_supervised, y):
            y = None  # a supervised target handed to every step of a pipeline
        k = int(self.n_components)
        ct = self.covariance_type
        warm = self._warm_params()
        n_init = 1 if warm is not None else int(self.n_init)
        session = self._session(X, sample_weight, verbose=self.verbose,
                                checks=DEFAULT_CHECKS if y is None else label_checks(k))
        n, d = session.n_samples, session.n_features
        if n < 2:
            raise DclustValueError(f"n_samples={n} is too few: a mixture needs at least 2 rows.")
        if n < k:
            raise DclustValueError(f"n_samples={n} must be >= n_components={k}. Lower "
                                   "n_components or pass more rows.")
        inits = {
            "weights_init": None if self.weights_init is None else
            check_weights_init(self.weights_init, k),
            "means_init": None if self.means_init is None else
            check_means_init(self.means_init, k, d),
            "precisions_init": None if self.precisions_init is None else
            check_precisions_init(self.precisions_init, ct, k, d),
        }
        if y is not None:
            y = check_y(y, n)
            if isinstance(y, np.ndarray):
                _check_y_values(y, k)
        session.set_label(f"GaussianMixture(k={k}, {ct})")
        effective = dict(n_components=k, n_init=n_init, labelled=y is not None, **inits)
        if warm is not None:
            effective["warm"] = array_digest(np.concatenate(
                [np.ravel(warm[key]) for key in ("weights", "means", "prec_chol")]))
        session.open(result_params(self, **effective), self.random_state)
        aligned = None if y is None else {"y": session.place_rows(y)}
        seed = session.seed
        eps = float(np.finfo(session.dtype).eps)
        best = session.run(
            lambda run: EM(k, ct, tol=self.tol, reg_covar=self.reg_covar, max_iter=self.max_iter,
                           init_params=self.init_params, warm=warm, seed=seed + run,
                           labelled=y is not None, aligned=aligned, eps=eps,
                           init_size=self.init_size, **inits),
            n_runs=n_init, key=lambda r: -r["lower_bound"],
        )
        session.close(
            f"GaussianMixture(k={k}, {ct}): {best['n_iter']} iterations, lower bound "
            f"{best['lower_bound']:.6g}, {'converged' if best['converged'] else 'not converged'}")
        if not best["converged"] and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge: the lower bound still changed "
                f"by more than tol={self.tol} after max_iter={self.max_iter} iterations. Try "
                "different init parameters, increase max_iter or tol, or check for degenerate "
                "data.", ConvergenceWarning, stacklevel=2)
        dtype = session.dtype
        self.weights_ = np.asarray(best["weights"]).astype(dtype)
        self.means_ = np.asarray(best["means"]).astype(dtype)
        self.covariances_ = np.asarray(best["covariances"]).astype(dtype)
        self.precisions_cholesky_ = np.asarray(best["prec_chol"]).astype(dtype)
        self.precisions_ = precisions_from_cholesky(best["prec_chol"], ct).astype(dtype)
        self.converged_ = bool(best["converged"])
        self.n_iter_ = int(best["n_iter"])
        self.lower_bound_ = float(best["lower_bound"])
        self.lower_bounds_ = np.asarray(best["lower_bounds"], dtype=np.float64)
        self.n_features_in_ = int(d)
        self.n_passes_ = int(session.n_passes)
        self._fit_seed = seed
        self.labels_ = self._labels(session.X_source, None if y is None else aligned["y"])
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X, y)`` then return ``labels_`` (lazy for dask input)."""
        return self.fit(X, y, sample_weight=sample_weight).labels_

    # ---- what the fitted model computes --------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "means_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X) first.")

    def _check_X(self, X):
        self._check_fitted()
        self._check_feature_names(X)
        X = as_dask_rows(X)
        if X.shape[1] != self.means_.shape[1]:
            raise DclustValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.means_.shape[1]} features as input (the number it was fitted on).")
        return X

    @property
    def _n_features_out(self):
        return self.means_.shape[0]

    def _model(self):
        return kernel_model(np.asarray(self.weights_, dtype=np.float64),
                            np.asarray(self.means_, dtype=np.float64),
                            np.asarray(self.precisions_cholesky_, dtype=np.float64),
                            self.covariance_type)

    def _device(self, X):
        return predict_device(getattr(self, "device", "auto"), X)

    def _labels(self, X, y=None):
        model, ct = self._model(), self.covariance_type
        device = self._device(X)
        if y is None:
            return map_rows(X, _labels_block, model, ct, device, dtype=np.int64)
        if isinstance(X, np.ndarray):
            return _labels_known_block(X, np.asarray(y), model, ct, device)
        # As a column, so that its blocks pair with X's row blocks.
        y = y.reshape(-1, 1).rechunk((X.chunks[0], (1,)))
        return da.map_blocks(_labels_known_block, X, y, model, ct, device, drop_axis=1,
                             dtype=np.int64, meta=np.empty((0,), np.int64))

    def predict(self, X):
        """The most probable component of each row (lazy for dask input)."""
        return self._labels(self._check_X(X))

    def predict_proba(self, X):
        """Posterior probability of each component for each row, shape (n_samples, n_components)."""
        X = self._check_X(X)
        return map_rows(X, _proba_block, self._model(), self.covariance_type, self._device(X),
                        n_out=self.means_.shape[0], dtype=X.dtype)

    def score_samples(self, X):
        """Log-likelihood ``log p(x)`` of each row (lazy for dask input)."""
        X = self._check_X(X)
        return map_rows(X, _score_samples_block, self._model(), self.covariance_type,
                        self._device(X), dtype=X.dtype)

    def score(self, X, y=None, sample_weight=None):
        """Mean log-likelihood of ``X`` (weighted by ``sample_weight``); one pass for dask input."""
        Xc = self._check_X(X)
        if isinstance(Xc, np.ndarray):
            ll = np.asarray(self.score_samples(Xc), dtype=np.float64)
            if sample_weight is None:
                return float(np.mean(ll))
            return float(np.average(ll, weights=np.asarray(sample_weight, dtype=np.float64)))
        session = self._scoring_session(Xc, sample_weight)
        res = session.run_pass({"score": score_aggregation(self._model(), self.covariance_type)},
                               name="gmm-score")["score"]
        return float(res["loglik"]) / float(res["weight"])

    def _n_parameters(self):
        return n_parameters(self.means_.shape[0], self.means_.shape[1], self.covariance_type)

    def bic(self, X):
        """Bayesian information criterion of the model on ``X`` (lower is better)."""
        n = as_dask_rows(X).shape[0]
        return -2.0 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X):
        """Akaike information criterion of the model on ``X`` (lower is better)."""
        n = as_dask_rows(X).shape[0]
        return -2.0 * self.score(X) * n + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture (scikit-learn's draws, for its seed).

        Parameters
        ----------
        n_samples : int, default=1

        Returns
        -------
        X : ndarray of shape (n_samples, n_features), float64
        y : ndarray of shape (n_samples,)
            The component each sample was drawn from.
        """
        from sklearn.utils import check_random_state

        self._check_fitted()
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise DclustValueError(f"n_samples={n_samples!r} must be an integer >= 1: the "
                                   "number of samples to draw.")
        rs = self.random_state
        rng = check_random_state(rs if not isinstance(rs, np.random.Generator)
                                 else int(rs.integers(2**31 - 1)))
        means = np.asarray(self.means_)
        covs = np.asarray(self.covariances_)
        counts = rng.multinomial(n_samples, np.asarray(self.weights_))
        d = means.shape[1]
        if self.covariance_type == "full":
            parts = [rng.multivariate_normal(m, c, int(s)) for m, c, s in zip(means, covs, counts)]
        elif self.covariance_type == "tied":
            parts = [rng.multivariate_normal(m, covs, int(s)) for m, s in zip(means, counts)]
        else:
            parts = [m + rng.standard_normal(size=(s, d)) * np.sqrt(c)
                     for m, c, s in zip(means, covs, counts)]
        X = np.vstack(parts).astype(np.float64)
        y = np.concatenate([np.full(int(s), j, dtype=np.int64) for j, s in enumerate(counts)])
        return X, y
