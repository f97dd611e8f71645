"""Per-chunk Gaussian-mixture kernels: the E-step's sufficient statistics.

One EM iteration is one pass: each row-chunk computes its rows' log-responsibilities
under the current parameters and returns the sufficient statistics of the M-step,

* ``nk``: ``sum_i w_i r_ik`` (float64, shape ``(k,)``);
* ``sx``: ``sum_i w_i r_ik (x_i - c)``;
* ``sxx``: the second moments (see below);
* ``loglik``: ``sum_i w_i log p(x_i)`` and ``weight``: ``sum_i w_i``,

which the pass sums over chunks; the M-step then runs on the client in float64
(:mod:`dclust.algorithms.gmm`).

The moments are taken about a shift ``c`` known to every chunk, so that data far from
the origin does not cancel away the variances: for ``"tied"``, ``"diag"`` and
``"spherical"`` one vector (the mixture's mean), ``sxx`` being ``sum_i w_i (x_i - c)
(x_i - c)^T`` for ``"tied"``, ``sum_i w_i r_ik (x_i - c)^2`` per feature for
``"diag"`` and its sum over features for ``"spherical"``. For ``"full"`` each component
has its own shift, its current mean ``m_k``, and its moments are kept in the whitened
coordinates the E-step computes anyway, ``y = (x - m_k) P_k`` with ``P_k`` the Cholesky
factor of its precision: ``sx[k] = sum_i w_i r_ik y_i`` and ``sxx[k] = sum_i w_i r_ik
y_i y_i^T``. Per chunk that is one GEMM per component for the densities and one for
the moments, on the same whitened rows; the client maps them back with ``P_k^{-1}``.

Rows are processed in tiles (a few thousand rows, the whitened tiles of every
component in cache). Densities, the log-sum-exp and the moments' GEMMs run in the
chunk's precision; every tile's results are accumulated in float64, so float32 data
loses no more than one tile's rounding.

Partly labelled data: ``y`` holds a component per row, or -1. A labelled row's
responsibility is fixed to its component (one-hot) and its log-likelihood is that of
the row and its label, ``log w_y + log N(x | m_y, S_y)``; the others are free.

The kernels work on any array namespace (NumPy, CuPy, array-api-strict); randomness is
drawn on the host from generators seeded by ``(seed, chunk)``.
"""

from __future__ import annotations

import math

import numpy as np

from .._xp import array_namespace, to_numpy
from .lloyd import nearest_center
from .sampling import chunk_rng

__all__ = [
    "COVARIANCE_TYPES",
    "LOG_2PI",
    "gmm_estep_partial",
    "gmm_hard_partial",
    "gmm_random_partial",
    "gmm_labelled_partial",
    "gmm_score_partial",
    "gmm_weighted_log_prob",
    "gmm_log_resp",
    "gmm_stats_combine",
    "tile_rows",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
LOG_2PI = math.log(2.0 * math.pi)
# Rows per tile: the whitened tiles of every component (full) or the (rows x k) blocks
# of densities and responsibilities stay within a few MiB.
_TILE_BYTES = 4 * 2**20
# Random responsibilities are drawn from this stream of the chunk's generator.
_RANDOM_STREAM = 11


def tile_rows(n_components, n_features, covariance_type, itemsize=8):
    """Rows per tile, from 64 to 4096."""
    per_row = n_components * (n_features if covariance_type == "full" else 4) + 2 * n_features
    return int(min(4096, max(64, _TILE_BYTES // (max(per_row, 1) * itemsize))))


# ---- helpers -----------------------------------------------------------------------
def _col(xp, v):
    return xp.reshape(v, (-1, 1))


def _to(xp, a, dtype, like):
    """A host array (state) on ``like``'s device, in ``dtype``."""
    if a is None:
        return None
    return xp.asarray(np.asarray(a), dtype=dtype, device=_device(like))


def _device(a):
    return getattr(a, "device", None)


def _as_float(xp, X):
    if X.dtype not in (xp.float32, xp.float64):
        return xp.astype(X, xp.float64)
    return X


def _itemsize(xp, dtype):
    return 4 if dtype == xp.float32 else 8


def _aligned(xp, a, dtype, like):
    """A row-aligned block (weights, labels) in ``like``'s namespace and ``dtype``."""
    if a is None:
        return None
    if array_namespace(a) is not xp:  # a host block beside a device chunk
        a = xp.asarray(to_numpy(a), device=_device(like))
    return a if a.dtype == dtype else xp.astype(a, dtype)


def _onehot(xp, y, k, dtype):
    """One-hot rows of the labels ``y`` (zero rows for -1 and out-of-range values)."""
    ks = xp.reshape(xp.arange(k, dtype=xp.int64, device=_device(y)), (1, -1))
    return xp.astype(_col(xp, y) == ks, dtype)


def _empty_stats(xp, k, d, covariance_type, like):
    z = lambda *s: xp.zeros(s, dtype=xp.float64, device=_device(like))  # noqa: E731
    sxx = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]
    return {"nk": z(k), "sx": z(k, d), "sxx": z(*sxx), "loglik": z(), "weight": z()}


# ---- the model on the device ------------------------------------------------------
def _device_model(xp, model, dtype, like):
    """The bound model's arrays on ``like``'s device in the working ``dtype``."""
    return {key: (_to(xp, v, dtype, like) if isinstance(v, np.ndarray) else v)
            for key, v in model.items()}


def _whiten(xp, Xt, m):
    """Per-component tiles of ``"full"``: ``(x - m_k) P_k`` (``x - m_k`` without ``P``).

    One small GEMM per component keeps each whitened tile in cache for the moments'
    GEMM (one GEMM of all components side by side was slower: the moments then stream
    a tile ``k`` times larger once per component).
    """
    shift, P = m["shift"], m.get("P")
    out = []
    for j in range(shift.shape[0]):
        diff = Xt - shift[j:j + 1, :]
        out.append(diff if P is None else diff @ P[j, :, :])
    return out


def _sqnorm_rows(xp, Y):
    if xp is np or getattr(xp, "__name__", "").endswith("numpy"):
        return np.einsum("ij,ij->i", Y, Y)  # no (rows x d) temporary
    return xp.sum(Y * Y, axis=1)


def _mahalanobis(xp, Xt, m, covariance_type):
    """Squared Mahalanobis distances (rows x components) and what the moments reuse."""
    if covariance_type == "full":
        Y = _whiten(xp, Xt, m)
        return xp.stack([_sqnorm_rows(xp, y) for y in Y], axis=1), Y
    Xc = Xt - m["shift"]
    if covariance_type == "tied":
        Z = Xc @ m["P"]
        maha = _col(xp, xp.sum(Z * Z, axis=1)) + Z @ m["B"] + m["Mn"]
        return maha, Xc
    if covariance_type == "diag":
        return (Xc * Xc) @ m["A"] + Xc @ m["B"] + m["Mn"], Xc
    rn = xp.sum(Xc * Xc, axis=1)
    return _col(xp, rn) * m["prec"] + Xc @ m["B"] + m["Mn"], Xc


def _log_prob(xp, Xt, m, covariance_type):
    """Weighted log-densities ``log w_k + log N(x | m_k, S_k)`` of a tile."""
    maha, reuse = _mahalanobis(xp, Xt, m, covariance_type)
    return -0.5 * maha + m["const"], reuse


def _exp(xp, D):
    """``exp(D)`` for ``D <= 0``, with results below the normal range set to 0.

    Subnormal results (``exp(-100)`` in float32) change no sum they enter, but every
    operation on them costs a microcode assist of ~100 cycles on x86: with
    well-separated components most responsibilities are that small.
    """
    cut = math.log(float(np.finfo(np.float32 if D.dtype == xp.float32 else np.float64).tiny))
    return xp.where(D > cut, xp.exp(D), xp.zeros_like(D))


def _logsumexp_rows(xp, L):
    top = xp.max(L, axis=1, keepdims=True)
    # A row whose densities all underflow to -inf keeps -inf (and no NaN from inf - inf).
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    return xp.reshape(top, (-1,)) + xp.log(xp.sum(_exp(xp, L - top), axis=1))


def _responsibilities(xp, L, yt):
    """Responsibilities and per-row log-likelihoods; labelled rows are pinned."""
    norm = _logsumexp_rows(xp, L)
    R = _exp(xp, L - _col(xp, norm))
    if yt is None:
        return R, norm
    hot = _onehot(xp, yt, L.shape[1], L.dtype)
    known = _col(xp, yt >= 0)
    R = xp.where(known, hot, R)
    own = xp.sum(xp.where(hot > 0, L, xp.zeros_like(L)), axis=1)
    return R, xp.where(yt >= 0, own, norm)


def _accumulate(xp, acc, R, wt, reuse, covariance_type):
    """Add a tile's moments (``R`` already weighted) to the float64 accumulators."""
    f64 = xp.float64
    acc["nk"] += xp.sum(xp.astype(R, f64), axis=0)
    if covariance_type == "full":
        for j, Y in enumerate(reuse):
            r = R[:, j]
            acc["sx"][j, :] += xp.astype(r @ Y, f64)
            acc["sxx"][j, :, :] += xp.astype((Y * _col(xp, r)).T @ Y, f64)
        return
    Xc = reuse
    acc["sx"] += xp.astype(R.T @ Xc, f64)
    if covariance_type == "tied":
        Xw = Xc if wt is None else Xc * _col(xp, wt)
        acc["sxx"] += xp.astype(Xw.T @ Xc, f64)
    elif covariance_type == "diag":
        acc["sxx"] += xp.astype(R.T @ (Xc * Xc), f64)
    else:
        acc["sxx"] += xp.astype(R.T @ xp.sum(Xc * Xc, axis=1), f64)


def _centred(xp, Xt, m, covariance_type):
    """What the moments are taken of, without densities (initialisation passes)."""
    if covariance_type == "full":
        return _whiten(xp, Xt, m)
    return Xt - m["shift"]


def _stats_pass(X, w, y, model, covariance_type, n_components, resp, *, tile=None):
    """Shared loop: tiles, responsibilities from ``resp(xp, Xt, yt, s, e)``, moments."""
    xp = array_namespace(X)
    X = _as_float(xp, X)
    n, d = X.shape
    k = int(n_components)
    dtype = X.dtype
    m = _device_model(xp, model, dtype, X)
    # Weights in float64 for the sums of log-likelihoods and weights, in the working
    # precision for the responsibilities that enter the GEMMs.
    w64_all = _aligned(xp, w, xp.float64, X)
    y_all = _aligned(xp, y, xp.int64, X)
    acc = _empty_stats(xp, k, d, covariance_type, X)
    tile = tile or tile_rows(k, d, covariance_type, _itemsize(xp, dtype))
    for s in range(0, n, tile):
        e = min(s + tile, n)
        Xt = X[s:e, :]
        yt = None if y_all is None else y_all[s:e]
        w64 = None if w64_all is None else w64_all[s:e]
        wt = None if w64 is None else xp.astype(w64, dtype)
        R, ll, reuse = resp(xp, Xt, yt, m, s, e)
        if wt is not None:
            R = R * _col(xp, wt)
        if ll is not None:
            ll64 = xp.astype(ll, xp.float64)
            acc["loglik"] += xp.sum(ll64 if w64 is None else ll64 * w64)
        acc["weight"] += float(e - s) if w64 is None else xp.sum(w64)
        if reuse is None:
            reuse = _centred(xp, Xt, m, covariance_type)
        _accumulate(xp, acc, R, wt, reuse, covariance_type)
    return acc


# ---- the passes' kernels -----------------------------------------------------------
def gmm_estep_partial(X, w, y, model, covariance_type, *, tile=None):
    """E-step statistics of one chunk under the current parameters.

    Parameters
    ----------
    X : array of shape (n_rows, n_features)
    w : array of shape (n_rows,) or None
        Sample weights.
    y : int array of shape (n_rows,) or None
        Known component per row, -1 where unknown.
    model : dict of ndarray
        The parameters in the form the kernels use, made on the client by
        :func:`dclust.algorithms.gmm.kernel_model`: ``const`` (``log w_k + log det
        P_k - d/2 log 2 pi``), ``shift`` and the precision factors of the type.
    covariance_type : {"full", "tied", "diag", "spherical"}
    tile : int, optional
        Rows per tile (default :func:`tile_rows`).

    Returns
    -------
    stats : dict of float64 arrays
        ``nk``, ``sx``, ``sxx``, ``loglik``, ``weight`` (see the module's docstring).
    """
    def resp(xp, Xt, yt, m, s, e):
        L, reuse = _log_prob(xp, Xt, m, covariance_type)
        R, ll = _responsibilities(xp, L, yt)
        return R, ll, reuse

    k = model["const"].shape[0]
    return _stats_pass(X, w, y, model, covariance_type, k, resp, tile=tile)


def gmm_hard_partial(X, w, y, model, covariance_type, centers, *, tile=None):
    """Statistics of the assignment of each row to its nearest centre.

    ``centers`` (float64, on the host) are the centres; labelled rows go to their
    component. The moments are about ``model["shift"]`` (for ``"full"``: the centres,
    and no ``P``). With the centres of k-means this is scikit-learn's k-means
    initialisation of a mixture; the means it gives are one Lloyd update of the centres.
    """
    k = centers.shape[0]

    def resp(xp, Xt, yt, m, s, e):
        lab, _ = nearest_center(Xt, centers)
        lab = _aligned(xp, lab, xp.int64, Xt)
        if yt is not None:
            lab = xp.where(yt >= 0, yt, lab)
        return _onehot(xp, lab, k, Xt.dtype), None, None

    return _stats_pass(X, w, y, model, covariance_type, k, resp, tile=tile)


def gmm_random_partial(X, w, y, model, covariance_type, n_components, seed, *, block_id,
                       tile=None):
    """Statistics of uniformly random responsibilities (scikit-learn's ``"random"``).

    Each row draws ``n_components`` uniform numbers, normalised to sum to one, from the
    chunk's generator seeded by ``(seed, block_id)``; labelled rows are pinned.
    """
    n = X.shape[0]
    k = int(n_components)
    draws = chunk_rng(seed, block_id, _RANDOM_STREAM).random((n, k))
    draws /= draws.sum(axis=1, keepdims=True)

    def resp(xp, Xt, yt, m, s, e):
        R = xp.asarray(draws[s:e], dtype=Xt.dtype, device=_device(Xt))
        if yt is not None:
            R = xp.where(_col(xp, yt >= 0), _onehot(xp, yt, k, Xt.dtype), R)
        return R, None, None

    return _stats_pass(X, w, y, model, covariance_type, k, resp, tile=tile)


def gmm_labelled_partial(X, w, y, n_components):
    """Weight and sum of the labelled rows of each component: ``nk`` and ``sx`` (float64).

    The known classes' means (``sx / nk``) start the centres of a partly labelled fit.
    """
    xp = array_namespace(X)
    X = _as_float(xp, X)
    n, d = X.shape
    k = int(n_components)
    out = {"nk": xp.zeros((k,), dtype=xp.float64, device=_device(X)),
           "sx": xp.zeros((k, d), dtype=xp.float64, device=_device(X))}
    yt = _aligned(xp, y, xp.int64, X)
    if yt is None or n == 0:
        return out
    H = _onehot(xp, yt, k, xp.float64)
    if w is not None:
        H = H * _col(xp, _aligned(xp, w, xp.float64, X))
    out["nk"] = xp.sum(H, axis=0)
    out["sx"] = H.T @ xp.astype(X, xp.float64)
    return out


def gmm_score_partial(X, w, model, covariance_type, *, tile=None):
    """``loglik`` (``sum_i w_i log p(x_i)``, float64) and ``weight`` of one chunk."""
    xp = array_namespace(X)
    X = _as_float(xp, X)
    n, d = X.shape
    m = _device_model(xp, model, X.dtype, X)
    k = model["const"].shape[0]
    wt_all = _aligned(xp, w, xp.float64, X)
    loglik = xp.zeros((), dtype=xp.float64, device=_device(X))
    weight = xp.zeros((), dtype=xp.float64, device=_device(X))
    tile = tile or tile_rows(k, d, covariance_type, _itemsize(xp, X.dtype))
    for s in range(0, n, tile):
        e = min(s + tile, n)
        L, _ = _log_prob(xp, X[s:e, :], m, covariance_type)
        ll = xp.astype(_logsumexp_rows(xp, L), xp.float64)
        if wt_all is None:
            loglik += xp.sum(ll)
            weight += float(e - s)
        else:
            wt = wt_all[s:e]
            loglik += xp.sum(ll * wt)
            weight += xp.sum(wt)
    return {"loglik": loglik, "weight": weight}


def gmm_weighted_log_prob(X, model, covariance_type, *, tile=None):
    """``log w_k + log N(x_i | m_k, S_k)`` of every row and component, in ``X``'s precision.

    What ``predict``, ``predict_proba`` and ``score_samples`` are made of.
    """
    xp = array_namespace(X)
    X = _as_float(xp, X)
    n, d = X.shape
    m = _device_model(xp, model, X.dtype, X)
    k = model["const"].shape[0]
    tile = tile or tile_rows(k, d, covariance_type, _itemsize(xp, X.dtype))
    parts = [_log_prob(xp, X[s:min(s + tile, n), :], m, covariance_type)[0]
             for s in range(0, n, tile)]
    if not parts:
        return xp.zeros((0, k), dtype=X.dtype, device=_device(X))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def gmm_log_resp(X, model, covariance_type, *, tile=None):
    """``(log p(x_i), log r_ik)`` of every row, in ``X``'s precision."""
    xp = array_namespace(X)
    L = gmm_weighted_log_prob(X, model, covariance_type, tile=tile)
    norm = _logsumexp_rows(xp, L)
    return norm, L - _col(xp, norm)


def gmm_stats_combine(parts):
    """Element-wise sum of E-step statistics (the keys the parts hold)."""
    out = {}
    for key in parts[0]:
        acc = parts[0][key]
        for p in parts[1:]:
            acc = acc + p[key]
        out[key] = acc
    return out
