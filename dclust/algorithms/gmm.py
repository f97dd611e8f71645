"""Gaussian mixtures by EM as an algorithm of the fit session: one pass per iteration.

Each EM iteration is one pass of :func:`dclust.kernels.gmm.gmm_estep_partial`: every
row-chunk computes its log-responsibilities under the current parameters and returns
the sufficient statistics of the M-step; the M-step (:func:`m_step`) then runs on the
client in float64. The loop is scikit-learn's ``GaussianMixture.fit``: the E-step
under the parameters ``theta_t`` gives the lower bound (the mean log-likelihood under
``theta_t``) and the statistics of ``theta_{t+1}``; the fit stops when the lower bound
changes by less than ``tol``, or after ``max_iter`` iterations.

Initialisations (``init_params``), and their passes:

* ``"k-means||"`` (default): k-means|| seeding on a uniform sample of rows (one pass,
  :func:`dclust.algorithms.kmeans.init_centers`), then one pass assigning every row to
  its nearest centre; the mixture starts from the weights, means and covariances of
  that assignment (scikit-learn's k-means initialisation, with the centres of k-means||
  in place of a k-means fit to convergence). Two passes.
* ``"kmeans"`` (scikit-learn's default): the same seeding, then Lloyd iterations on the
  full data until k-means converges (one pass each, checkpointed like EM iterations),
  the last one giving the mixture's start.
* ``"k-means++"``, ``"random_from_data"``: ``k`` rows chosen by greedy k-means++ on
  the sample, or at random (one pass); each component starts at its row with
  covariance ``reg_covar * I``, as scikit-learn does.
* ``"random"``: uniformly random responsibilities, seeded per chunk (one pass).

``weights_init``, ``means_init`` and ``precisions_init`` replace what the
initialisation gives; with all three no initialisation pass is made.

Partly labelled data (``y``: a component per row, -1 where unknown): labelled rows keep
their responsibility fixed to their component in every pass, initialisation included.
The centre-based initialisations start the components that have labelled rows at the
mean of those rows (found in the sample's pass) and seed the others among the
unlabelled sample rows: at random (``"random_from_data"``), by greedy k-means++
(``"k-means++"``), or (``"k-means||"``, ``"kmeans"``) by the best, in sum of squares,
of up to ten greedy k-means++ seedings each refined by Lloyd on the sample with the
labelled rows pinned. The mixture then starts from one pass assigning every row to its
nearest centre (labelled rows to their own), so that every component starts with a real
covariance. The lower bound is then that of
semi-supervised EM: the mean over rows of ``log p(x)`` for unlabelled rows and
``log p(x, y)`` for labelled ones.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from scipy.linalg import solve_triangular

from .._xp import to_numpy
from ..exceptions import DclustValueError
from ..kernels.gmm import (
    LOG_2PI,
    gmm_estep_partial,
    gmm_hard_partial,
    gmm_labelled_partial,
    gmm_random_partial,
    gmm_score_partial,
    gmm_stats_combine,
)
from ..kernels.datastats import data_stats_combine, data_stats_partial
from ..kernels.lloyd import nearest_center
from ..reductions.engine import Aggregation
from ..reductions.monoids import top_combine
from .datachecks import DataChecks, check_data_stats, stats_fingerprint, work_precision
from .kmeans import default_init_size, init_centers
from .sampling import sample_aggregation
from .session import Algorithm

__all__ = [
    "EM",
    "INIT_PARAMS",
    "kernel_model",
    "m_step",
    "compute_precision_cholesky",
    "precisions_cholesky_from_precisions",
    "precisions_from_cholesky",
    "n_parameters",
    "estep_aggregation",
    "score_aggregation",
    "label_checks",
]

INIT_PARAMS = ("k-means||", "kmeans", "k-means++", "random", "random_from_data")
# scikit-learn's k-means: at most this many Lloyd iterations, tolerance relative to the
# mean feature variance.
KMEANS_MAX_ITER = 300
KMEANS_TOL = 1e-4


# ---- parameters in the kernels' form -------------------------------------------------
def log_det_cholesky(prec_chol, covariance_type, n_features):
    """``log det P_k`` of the precisions' Cholesky factors (``-1/2 log det S_k``)."""
    if covariance_type == "full":
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)
    if covariance_type == "tied":
        return np.sum(np.log(np.diag(prec_chol)))
    if covariance_type == "diag":
        return np.sum(np.log(prec_chol), axis=1)
    return n_features * np.log(prec_chol)


def _mixture_mean(weights, means):
    total = float(np.sum(weights))
    return (weights @ means) / total if total > 0 else np.mean(means, axis=0)


def kernel_model(weights, means, prec_chol, covariance_type):
    """The parameters as the kernels use them (float64, on the host).

    ``const`` is ``log w_k + log det P_k - d/2 log 2 pi``; ``shift`` is what the
    moments are taken about (each component's mean for ``"full"``, the mixture's mean
    otherwise); the rest are the precision factors of the type, arranged so that the
    squared Mahalanobis distances of a tile are one or two GEMMs.
    """
    weights = np.asarray(weights, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    prec_chol = np.asarray(prec_chol, dtype=np.float64)
    k, d = means.shape
    with np.errstate(divide="ignore"):
        const = np.log(weights) + log_det_cholesky(prec_chol, covariance_type, d) \
            - 0.5 * d * LOG_2PI
    const = np.broadcast_to(const, (k,)).copy()
    if covariance_type == "full":
        return {"const": const, "shift": means.copy(), "P": prec_chol.copy()}
    c = _mixture_mean(weights, means)
    mc = means - c
    if covariance_type == "tied":
        M = mc @ prec_chol
        return {"const": const, "shift": c, "P": prec_chol.copy(),
                "B": np.ascontiguousarray(-2.0 * M.T), "Mn": np.sum(M * M, axis=1)}
    prec = prec_chol ** 2
    if covariance_type == "diag":
        return {"const": const, "shift": c, "A": np.ascontiguousarray(prec.T),
                "B": np.ascontiguousarray((-2.0 * mc * prec).T),
                "Mn": np.sum(mc * mc * prec, axis=1)}
    return {"const": const, "shift": c, "prec": prec.copy(),
            "B": np.ascontiguousarray((-2.0 * mc * prec[:, None]).T),
            "Mn": np.sum(mc * mc, axis=1) * prec}


def _as_used(a, dtype):
    """``a`` as the kernels saw it: rounded to the working ``dtype``, back in float64."""
    return None if a is None else np.asarray(a).astype(dtype).astype(np.float64)


# ---- the M-step --------------------------------------------------------------------
def m_step(stats, shift, covariance_type, reg_covar, eps, P=None):
    """Weights (unnormalised ``nk``), means and covariances from a pass's statistics.

    scikit-learn's ``_estimate_gaussian_parameters`` in float64, from moments taken
    about ``shift`` (and, for ``"full"``, whitened by ``P``): ``nk = sum r + 10 eps``,
    ``means = sum r x / nk``, covariances about the new means divided by ``nk`` (for
    ``"tied"``: by ``sum nk``) plus ``reg_covar`` on the diagonal. The formulas are
    scikit-learn's, rearranged so that only differences from the shift are formed.

    Parameters
    ----------
    stats : dict
        ``nk``, ``sx``, ``sxx`` of :mod:`dclust.kernels.gmm`.
    shift : ndarray
        ``(k, d)`` for ``"full"``, ``(d,)`` otherwise, as the kernels used it.
    covariance_type : str
    reg_covar : float
    eps : float
        Machine epsilon of the data's dtype (scikit-learn adds ``10 eps`` to ``nk``).
    P : ndarray of shape (k, d, d), optional
        The whitening of ``"full"`` moments (precision Cholesky factors).

    Returns
    -------
    nk : ndarray of shape (k,)
    means : ndarray of shape (k, d)
    covariances : ndarray, shape per ``covariance_type``
    """
    N = np.asarray(stats["nk"], dtype=np.float64)
    nk = N + 10.0 * eps
    sx = np.asarray(stats["sx"], dtype=np.float64)
    sxx = np.asarray(stats["sxx"], dtype=np.float64)
    k, d = sx.shape
    f = N / nk
    if covariance_type == "full":
        if P is not None:
            eye = np.eye(d)
            Pinv = np.stack([solve_triangular(P[j], eye, lower=False) for j in range(k)])
            # Whitened rows are y = (x - m) P: back with P^-1 (rows) and P^-T S P^-1.
            sx = np.einsum("kd,kde->ke", sx, Pinv)
            sxx = np.transpose(Pinv, (0, 2, 1)) @ sxx @ Pinv
        a = sx / nk[:, None]
        means = a + f[:, None] * shift
        delta = means - shift
        scatter = (sxx - sx[:, :, None] * delta[:, None, :] - delta[:, :, None] * sx[:, None, :]
                   + N[:, None, None] * delta[:, :, None] * delta[:, None, :])
        cov = scatter / nk[:, None, None]
        cov[:, np.arange(d), np.arange(d)] += reg_covar
        return nk, means, cov
    c = np.asarray(shift, dtype=np.float64)
    a = sx / nk[:, None]
    means = a + f[:, None] * c
    g = 1.0 - f
    if covariance_type == "diag":
        cov = sxx / nk[:, None] - a * a + 2.0 * c * a * g[:, None] + (c * c) * (f * g)[:, None]
        return nk, means, cov + reg_covar
    if covariance_type == "spherical":
        var = (sxx / nk - np.sum(a * a, axis=1) + 2.0 * g * (a @ c) + f * g * float(c @ c)) / d
        return nk, means, var + reg_covar
    # tied: (sum x x^T - sum_k nk mu_k mu_k^T) / sum nk, about c.
    gs = g[:, None] * sx
    scatter = (sxx - (sx / nk[:, None]).T @ sx + np.outer(gs.sum(0), c) + np.outer(c, gs.sum(0))
               + float(np.sum(N * g)) * np.outer(c, c))
    cov = scatter / np.sum(nk)
    cov[np.arange(d), np.arange(d)] += reg_covar
    return nk, means, cov


def _degenerate_error(components, covariance_type, reg_covar, float32, weights=None):
    shown = ", ".join(str(int(j)) for j in components[:5])
    shown += ", ..." if len(components) > 5 else ""
    which = ("the tied covariance" if covariance_type == "tied" else
             f"the covariance of component{'s' if len(components) > 1 else ''} {shown}")
    w = ""
    if weights is not None and covariance_type != "tied":
        w = f" (weight {float(weights[components[0]]):.3g})"
    msg = (f"Fitting the mixture failed: {which}{w} is not positive definite, an ill-defined "
           "empirical covariance (for instance a component collapsed onto a single point or "
           "with too few samples). Decrease n_components, increase "
           f"reg_covar (now {reg_covar!r}), or scale the input data.")
    if float32:
        msg += " Passing float64 data instead of float32 also improves the accuracy."
    return DclustValueError(msg)


def compute_precision_cholesky(covariances, covariance_type, *, reg_covar=0.0, float32=False,
                               weights=None):
    """Cholesky factors of the precisions (scikit-learn's ``_compute_precision_cholesky``).

    Raises
    ------
    DclustValueError
        Naming the components whose covariance is not positive definite.
    """
    cov = np.asarray(covariances, dtype=np.float64)
    if covariance_type in ("full", "tied"):
        mats = cov[None] if covariance_type == "tied" else cov
        d = mats.shape[-1]
        out = np.empty_like(mats)
        bad = []
        for j in range(mats.shape[0]):
            try:
                L = np.linalg.cholesky(mats[j])
            except np.linalg.LinAlgError:
                bad.append(j)
                continue
            out[j] = solve_triangular(L, np.eye(d), lower=True).T
        if bad:
            raise _degenerate_error(bad, covariance_type, reg_covar, float32, weights)
        return out[0] if covariance_type == "tied" else out
    bad = np.flatnonzero(~(cov > 0.0).reshape(cov.shape[0], -1).all(axis=1))
    if bad.size:
        raise _degenerate_error(list(bad), covariance_type, reg_covar, float32, weights)
    return 1.0 / np.sqrt(cov)


def precisions_cholesky_from_precisions(precisions, covariance_type):
    """The upper Cholesky factors ``U`` with ``precision = U U^T`` (scikit-learn's)."""
    prec = np.asarray(precisions, dtype=np.float64)
    if covariance_type == "full":
        return np.stack([np.linalg.cholesky(p[::-1, ::-1])[::-1, ::-1] for p in prec])
    if covariance_type == "tied":
        return np.linalg.cholesky(prec[::-1, ::-1])[::-1, ::-1]
    return np.sqrt(prec)


def precisions_from_cholesky(prec_chol, covariance_type):
    """``P P^T`` (full, tied) or ``P^2`` (diag, spherical)."""
    pc = np.asarray(prec_chol)
    if covariance_type == "full":
        return pc @ np.transpose(pc, (0, 2, 1))
    if covariance_type == "tied":
        return pc @ pc.T
    return pc ** 2


def _covariances_from_cholesky(prec_chol, covariance_type):
    """The covariances a precision factor stands for (``P^-T P^-1``)."""
    pc = np.asarray(prec_chol, dtype=np.float64)
    if covariance_type in ("diag", "spherical"):
        return 1.0 / pc ** 2
    mats = pc[None] if covariance_type == "tied" else pc
    eye = np.eye(mats.shape[-1])
    inv = np.stack([solve_triangular(p, eye, lower=False) for p in mats])
    cov = inv @ np.transpose(inv, (0, 2, 1))
    return cov[0] if covariance_type == "tied" else cov


def n_parameters(n_components, n_features, covariance_type):
    """Free parameters of the mixture (scikit-learn's ``_n_parameters``)."""
    k, d = n_components, n_features
    cov = {"full": k * d * (d + 1) / 2.0, "diag": k * d, "tied": d * (d + 1) / 2.0,
           "spherical": k}[covariance_type]
    return int(cov + d * k + k - 1)


# ---- aggregations --------------------------------------------------------------------
def _y(ctx):
    return ctx.aligned.get("y") if getattr(ctx, "aligned", None) else None


def _estep_chunk(X, w, ctx, model, covariance_type):
    return gmm_estep_partial(X, w, _y(ctx), model, covariance_type)


def _hard_chunk(X, w, ctx, model, covariance_type, centers):
    return gmm_hard_partial(X, w, _y(ctx), model, covariance_type, centers)


def _random_chunk(X, w, ctx, model, covariance_type, n_components, seed):
    return gmm_random_partial(X, w, _y(ctx), model, covariance_type, n_components, seed,
                              block_id=ctx.block_id)


def _labelled_chunk(X, w, ctx, n_components):
    return gmm_labelled_partial(X, w, _y(ctx), n_components)


def _score_chunk(X, w, ctx, model, covariance_type):
    return gmm_score_partial(X, w, model, covariance_type)


def estep_aggregation(model, covariance_type):
    """E-step statistics under ``model`` (:func:`kernel_model`)."""
    return Aggregation("gmm-estep", _estep_chunk, gmm_stats_combine).bind(model, covariance_type)


def hard_aggregation(centers, covariance_type, shift):
    """Statistics of the nearest-centre assignment (labelled rows pinned)."""
    model = {"shift": np.asarray(shift, dtype=np.float64)}
    return Aggregation("gmm-assign", _hard_chunk, gmm_stats_combine).bind(
        model, covariance_type, np.ascontiguousarray(centers, dtype=np.float64))


def random_aggregation(n_components, covariance_type, seed, shift):
    """Statistics of random responsibilities seeded per chunk (labelled rows pinned)."""
    model = {"shift": np.asarray(shift, dtype=np.float64)}
    return Aggregation("gmm-random", _random_chunk, gmm_stats_combine).bind(
        model, covariance_type, int(n_components), int(seed))


def labelled_aggregation(n_components):
    """Weight and sum of the labelled rows of each component."""
    return Aggregation("gmm-labelled", _labelled_chunk, gmm_stats_combine).bind(int(n_components))


def score_aggregation(model, covariance_type):
    """``sum w log p(x)`` and ``sum w`` of the data under ``model``."""
    return Aggregation("gmm-score", _score_chunk, gmm_stats_combine).bind(model, covariance_type)


_SAMPLE_KEYS = ("key", "row", "x", "weight", "y")


def _labelled_sample_chunk(X, w, ctx, inner):
    out = inner.chunk(X, w, ctx, *inner.args)
    y = _y(ctx)
    local = np.asarray(out["row"]) - ctx.row_offset
    out["y"] = (np.full(local.shape[0], -1, dtype=np.int64) if y is None
                else np.asarray(to_numpy(y)).astype(np.int64)[local])
    return out


def labelled_sample_aggregation(m, seed, n_total):
    """A weighted sample of ``m`` rows (as :func:`~.sampling.sample_rows`) with their labels."""
    inner = sample_aggregation(m, seed, n_total)
    return Aggregation("gmm-sample", partial(_labelled_sample_chunk, inner=inner),
                       partial(top_combine, size=int(m), by="key", keys=_SAMPLE_KEYS,
                               tiebreak="row"))


# ---- the first pass's checks of the labels --------------------------------------------
def _label_stats(y, n_components, row_offset):
    k = int(n_components)
    if y is None:
        return {}
    y = np.asarray(to_numpy(y)).astype(np.int64, copy=False)
    bad = (y < -1) | (y >= k)
    first = int(np.flatnonzero(bad)[0]) if bad.any() else -1
    ok = (y >= 0) & ~bad
    good = y[ok]
    rows = np.flatnonzero(ok).astype(np.float64) + row_offset
    return {"label_counts": np.bincount(good, minlength=k).astype(np.int64),
            # Which rows hold each label, in one number per component (for checkpoints).
            "label_rowsum": np.bincount(good, weights=rows, minlength=k),
            "n_bad_label": int(bad.sum()),
            "first_bad_label": -1 if first < 0 else row_offset + first,
            "bad_label_value": int(y[first]) if first >= 0 else 0}


def _checks_chunk(X, w, ctx, n_components):
    out = data_stats_partial(X, w, row_offset=ctx.row_offset)
    out.update(_label_stats(_y(ctx), n_components, ctx.row_offset))
    return out


_LABEL_KEYS = ("label_counts", "label_rowsum", "n_bad_label", "first_bad_label",
               "bad_label_value")


def _checks_combine(parts):
    out = data_stats_combine([{k: v for k, v in p.items() if k not in _LABEL_KEYS} for p in parts])
    labelled = [p for p in parts if "label_counts" in p]
    if labelled:
        out["label_counts"] = sum(p["label_counts"] for p in labelled)
        out["label_rowsum"] = sum(p["label_rowsum"] for p in labelled)
        out["n_bad_label"] = sum(p["n_bad_label"] for p in labelled)
        firsts = [(p["first_bad_label"], p["bad_label_value"]) for p in labelled
                  if p["first_bad_label"] >= 0]
        out["first_bad_label"], out["bad_label_value"] = min(firsts) if firsts else (-1, 0)
    return out


def _checks_check(stats, X, n_components):
    check_data_stats(stats, X)
    if stats.get("n_bad_label"):
        k = int(n_components)
        raise DclustValueError(
            f"y has {stats['n_bad_label']:,} values outside -1..{k - 1} (first at row "
            f"{stats['first_bad_label']:,}: {stats['bad_label_value']}); each row's y must be "
            f"its component, 0 to n_components - 1 = {k - 1}, or -1 where it is unknown. Fix "
            "those labels or raise n_components."
        )


def _checks_fingerprint(stats):
    out = stats_fingerprint(stats)
    for key in ("label_counts", "label_rowsum"):
        if key in stats:
            out[key] = np.asarray(stats[key], dtype=np.float64)
    return out


def label_checks(n_components):
    """The first pass's data checks plus those of the labels ``y``: values in range, and
    per component the count and the sum of the row numbers of its labelled rows, which a
    resumed fit compares (a checkpoint of other labels is refused as other data)."""
    return DataChecks(lambda: Aggregation("gmm-data-stats", _checks_chunk, _checks_combine).bind(
                          int(n_components)),
                      partial(_checks_check, n_components=n_components),
                      fingerprint=_checks_fingerprint, precision=work_precision)


# ---- initialisation helpers (on the client, on a sample) -------------------------------
def _sqdist(P, C):
    d = np.sum(P * P, axis=1)[:, None] - 2.0 * P @ C.T + np.sum(C * C, axis=1)[None, :]
    return np.maximum(d, 0.0)


def _extend_kpp(P, w, known, n_new, rng):
    """Greedy k-means++ (scikit-learn's trials) adding ``n_new`` centres to ``known``."""
    m = P.shape[0]
    trials = 2 + int(math.log(max(len(known) + n_new, 2)))
    centers = list(known)
    closest = np.min(_sqdist(P, np.asarray(known)), axis=1) if len(known) else np.full(m, np.inf)
    for _ in range(n_new):
        if not np.isfinite(closest).any():
            idx = rng.choice(m, p=w / w.sum())
            centers.append(P[idx])
            closest = _sqdist(P, P[idx][None])[:, 0]
            continue
        pot = w * closest
        total = pot.sum()
        if total <= 0:  # every row is on a centre already: any row will do
            cand = rng.choice(m, size=1)
        else:
            cand = rng.choice(m, size=trials, p=pot / total)
        dist = np.minimum(closest[None, :], _sqdist(P, P[cand]).T)
        best = int(np.argmin((dist * w[None, :]).sum(axis=1)))
        centers.append(P[cand[best]])
        closest = dist[best]
    return np.asarray(centers, dtype=np.float64)


def _seeded_lloyd(P, w, y, centers, max_iter=100, tol=1e-4):
    """Lloyd on the sample with labelled rows pinned to their component.

    Returns the centres and their weighted sum of squared distances (labelled rows
    counted to their own component).
    """
    k = centers.shape[0]
    var = np.average((P - np.average(P, axis=0, weights=w)) ** 2, axis=0, weights=w).mean()
    rows = np.arange(P.shape[0])
    for _ in range(max_iter):
        lab = np.where(y >= 0, y, np.asarray(to_numpy(nearest_center(P, centers)[0])))
        H = np.zeros((P.shape[0], k))
        H[rows, lab] = w
        nk = H.sum(axis=0)
        new = centers.copy()
        nz = nk > 0
        new[nz] = (H.T @ P)[nz] / nk[nz, None]
        shift = float(np.sum((new - centers) ** 2))
        centers = new
        if shift <= tol * var:
            break
    lab = np.where(y >= 0, y, np.asarray(to_numpy(nearest_center(P, centers)[0])))
    return centers, float(np.sum(w * np.sum((P - centers[lab]) ** 2, axis=1)))


def _seeding_trials(m, k, d, budget=2e10, lloyd_iters=20):
    """Seedings tried on the sample (each: k-means++ extension and Lloyd), within about
    ``budget`` flops: 10 for small problems, 1 for large ones."""
    return int(np.clip(budget // max(4.0 * m * k * d * lloyd_iters, 1.0), 1, 10))


def _onehot_stats(rows, covariance_type, k):
    """The statistics of one-hot responsibilities on ``rows`` (one row per component):
    scikit-learn's start for ``"k-means++"`` and ``"random_from_data"``."""
    d = rows.shape[1]
    stats = {"nk": np.ones(k), "sx": rows.copy()}
    if covariance_type == "full":
        stats["sxx"] = rows[:, :, None] * rows[:, None, :]
    elif covariance_type == "tied":
        stats["sxx"] = rows.T @ rows
    elif covariance_type == "diag":
        stats["sxx"] = rows ** 2
    else:
        stats["sxx"] = np.sum(rows ** 2, axis=1)
    shift = np.zeros((k, d)) if covariance_type == "full" else np.zeros(d)
    return stats, shift


# ---- the algorithm ---------------------------------------------------------------------
class EM(Algorithm):
    """One EM run: an initialisation, then EM iterations (one pass each).

    The state holds the parameters in float64 (``weights``, ``means``,
    ``covariances``, ``prec_chol``), ``n_iter``, the ``lower_bound`` of the last
    E-step and every iteration's (``lower_bounds``), ``converged``, and, while the
    ``"kmeans"`` initialisation runs, its centres (``phase`` ``"kmeans"``).

    Parameters
    ----------
    n_components : int
    covariance_type : {"full", "tied", "diag", "spherical"}
    tol, reg_covar : float
    max_iter : int
    init_params : str
    weights_init, means_init, precisions_init : ndarray or None
        Checked already.
    warm : dict or None
        The parameters of a previous fit (``warm_start``): no initialisation, and the
        lower bound to improve on.
    seed : int
    labelled : bool
        Whether the passes carry known components ``y``.
    aligned : dict
        What the passes read besides ``X`` (``{"y": ...}``, placed by the session).
    eps : float
        Machine epsilon of the data's dtype.
    init_size : int, optional
        Rows of the initialisation's sample.
    """

    name = "GaussianMixture"

    def __init__(self, n_components, covariance_type="full", *, tol=1e-3, reg_covar=1e-6,
                 max_iter=100, init_params="k-means||", weights_init=None, means_init=None,
                 precisions_init=None, warm=None, seed=0, labelled=False, aligned=None,
                 eps=np.finfo(np.float64).eps, init_size=None):
        self.k = int(n_components)
        self.covariance_type = covariance_type
        self.tol = float(tol)
        self.reg_covar = float(reg_covar)
        self.max_iter = int(max_iter)
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.warm = warm
        self.seed = int(seed)
        self.labelled = bool(labelled)
        self.aligned = aligned or None
        self.eps = float(eps)
        self.init_size = init_size
        self.init_label = "warm start" if warm is not None else init_params

    # ---- passes ----
    def _pass(self, session, aggs, name, **kw):
        return session.run_pass(aggs, name=name, aligned=self.aligned, **kw)

    def _m_step(self, session, stats, shift, P=None):
        work = session.work_dtype
        return m_step(stats, _as_used(shift, work), self.covariance_type, self.reg_covar,
                      self.eps, P=_as_used(P, work))

    def _prec_chol(self, session, covariances, weights=None):
        return compute_precision_cholesky(covariances, self.covariance_type,
                                          reg_covar=self.reg_covar,
                                          float32=session.dtype == np.float32, weights=weights)

    # ---- initialisation ----
    def _em_state(self, weights, means, covariances, prec_chol, lower_bound=-np.inf):
        return {"phase": "em", "weights": weights, "means": means, "covariances": covariances,
                "prec_chol": prec_chol, "n_iter": 0, "lower_bound": np.asarray(float(lower_bound)),
                "lower_bounds": np.zeros(0), "converged": False, "change": math.inf}

    def _start(self, session, stats, shift, P=None, total=None):
        """scikit-learn's ``_initialize``: parameters from statistics, then the given ones."""
        nk, means, cov = self._m_step(session, stats, shift, P)
        total = float(total if total is not None else stats["weight"])
        weights = nk / total
        if self.weights_init is not None:
            weights = np.asarray(self.weights_init, dtype=np.float64)
        if self.means_init is not None:
            means = np.asarray(self.means_init, dtype=np.float64)
        if self.precisions_init is not None:
            pc = precisions_cholesky_from_precisions(self.precisions_init, self.covariance_type)
            cov = _covariances_from_cholesky(pc, self.covariance_type)
        else:
            pc = self._prec_chol(session, cov, weights)
        return self._em_state(weights, means, cov, pc)

    def init_state(self, session):
        if self.warm is not None:
            w = self.warm
            return self._em_state(w["weights"], w["means"], w["covariances"], w["prec_chol"],
                                  w["lower_bound"])
        if (self.weights_init is not None and self.means_init is not None
                and self.precisions_init is not None):
            pc = precisions_cholesky_from_precisions(self.precisions_init, self.covariance_type)
            return self._em_state(np.asarray(self.weights_init, dtype=np.float64),
                                  np.asarray(self.means_init, dtype=np.float64),
                                  _covariances_from_cholesky(pc, self.covariance_type), pc)
        if self.init_params == "random":
            shift = np.zeros((self.k, session.n_features)) if self.covariance_type == "full" \
                else np.zeros(session.n_features)
            stats = self._pass(session, {"s": random_aggregation(
                self.k, self.covariance_type, self.seed, shift)}, "gmm-init-random")["s"]
            return self._start(session, stats, shift)
        if self.labelled:
            centers = self._labelled_centers(session)
        elif self.init_params in ("k-means++", "random_from_data"):
            kind = "k-means++" if self.init_params == "k-means++" else "random"
            rows = init_centers(session, self.k, kind, self.seed, init_size=self.init_size)
            stats, shift = _onehot_stats(rows, self.covariance_type, self.k)
            return self._start(session, stats, shift, total=self._total_weight(session))
        else:
            centers = init_centers(session, self.k, "k-means||", self.seed,
                                   init_size=self.init_size)
        if self.init_params == "kmeans":
            return {"phase": "kmeans", "centers": centers, "km_iter": 0, "km_shift": math.inf,
                    "n_iter": 0}
        stats, shift = self._assign(session, centers, "gmm-init-assign")
        return self._start(session, stats, shift)

    def _total_weight(self, session):
        stats = session.data_stats or {}
        return float(stats.get("weight_sum", session.n_samples))

    def _assign(self, session, centers, name):
        shift = centers if self.covariance_type == "full" else np.mean(centers, axis=0)
        stats = self._pass(session, {"s": hard_aggregation(centers, self.covariance_type, shift)},
                           name)["s"]
        return stats, shift

    def _labelled_centers(self, session):
        """Centres of a partly labelled fit: labelled means, then the free components."""
        n, d = session.n_samples, session.n_features
        m = int(min(n, max(self.init_size or default_init_size(n, self.k), self.k)))
        res = self._pass(session, {"sample": labelled_sample_aggregation(m, self.seed, n),
                                   "labelled": labelled_aggregation(self.k)},
                         "gmm-init-sample", precision_sensitive=False)
        sample, lab = res["sample"], res["labelled"]
        P = np.asarray(sample["x"], dtype=np.float64)
        y = np.asarray(sample["y"], dtype=np.int64)
        # A sample smaller than X is drawn in proportion to the weights (its rows count
        # once each); when it is all of X the weights apply here.
        w = np.asarray(sample["weight"], dtype=np.float64) if m >= n else np.ones(P.shape[0])
        known = np.asarray(lab["nk"]) > 0
        centers = np.zeros((self.k, d))
        centers[known] = np.asarray(lab["sx"])[known] / np.asarray(lab["nk"])[known, None]
        free = np.flatnonzero(~known)
        if free.size:
            pool = y < 0
            if pool.sum() < free.size:
                # (Nearly) every row labelled: the free components start on rows of the
                # labelled ones, find no rows of their own and stay empty, which the
                # M-step handles as scikit-learn does.
                pool = np.ones_like(pool)
            rng = np.random.default_rng([self.seed, 13])
            if self.init_params == "random_from_data":
                centers[free] = P[pool][:free.size]  # the sample is in random order already
                return centers
            if self.init_params == "k-means++":
                centers[free] = _extend_kpp(P[pool], w[pool], centers[known], free.size,
                                            rng)[known.sum():]
                return centers
        # k-means|| and kmeans: the best of a few seedings, each refined by Lloyd on the
        # sample with the labelled rows pinned (one greedy extension can put two centres
        # in one novel class and leave another to a known class's component).
        best = None
        for _ in range(_seeding_trials(P.shape[0], self.k, d) if free.size else 1):
            trial = centers.copy()
            if free.size:
                trial[free] = _extend_kpp(P[pool], w[pool], centers[known], free.size,
                                          rng)[known.sum():]
            trial, sse = _seeded_lloyd(P, w, y, trial)
            if best is None or sse < best[1]:
                best = (trial, sse)
        return best[0]

    # ---- iterations ----
    def one_iteration(self, session, state):
        if state["phase"] == "kmeans":
            return self._kmeans_iteration(session, state)
        model = kernel_model(state["weights"], state["means"], state["prec_chol"],
                             self.covariance_type)
        stats = self._pass(session, {"e": estep_aggregation(model, self.covariance_type)},
                           "gmm-em")["e"]
        P = model.get("P") if self.covariance_type == "full" else None
        nk, means, cov = self._m_step(session, stats, model["shift"], P)
        weights = nk / np.sum(nk)
        pc = self._prec_chol(session, cov, weights)
        lower_bound = float(stats["loglik"]) / float(stats["weight"])
        change = lower_bound - float(state["lower_bound"])
        out = self._em_state(weights, means, cov, pc, lower_bound)
        out.update(n_iter=state["n_iter"] + 1, change=change,
                   converged=bool(abs(change) < self.tol),
                   lower_bounds=np.append(state["lower_bounds"], lower_bound))
        return out

    def _kmeans_iteration(self, session, state):
        centers = state["centers"]
        stats, shift = self._assign(session, centers, "gmm-init-kmeans")
        N = np.asarray(stats["nk"])
        new = centers.copy()
        nz = N > 0
        if self.covariance_type == "full":
            new[nz] = shift[nz] + np.asarray(stats["sx"])[nz] / N[nz, None]
        else:
            new[nz] = shift + np.asarray(stats["sx"])[nz] / N[nz, None]
        moved = float(np.sum((new - centers) ** 2))
        var = session.data_stats["m2"] / max(session.data_stats["count"], 1)
        km_iter = state["km_iter"] + 1
        if moved > KMEANS_TOL * float(np.mean(var)) and km_iter < KMEANS_MAX_ITER:
            return {"phase": "kmeans", "centers": new, "km_iter": km_iter, "km_shift": moved,
                    "n_iter": 0}
        # k-means is done: this pass's assignment is the mixture's start.
        return self._start(session, stats, shift)

    def converged(self, state):
        if state["phase"] == "kmeans":
            return False
        return bool(state["converged"]) or state["n_iter"] >= self.max_iter

    def report(self, state):
        if state["phase"] == "kmeans":
            return "kmeans", state["km_iter"], {"shift": state["km_shift"]}
        return "iter", state["n_iter"], {"lower_bound": float(state["lower_bound"]),
                                         "change": float(state["change"])}

    def finalize(self, session, state):
        return {"weights": state["weights"], "means": state["means"],
                "covariances": state["covariances"], "prec_chol": state["prec_chol"],
                "n_iter": state["n_iter"], "converged": bool(state["converged"]),
                "lower_bound": float(state["lower_bound"]),
                "lower_bounds": state["lower_bounds"]}
