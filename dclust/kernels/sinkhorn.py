"""Per-chunk kernels of log-domain Sinkhorn over row-chunks.

Notation. ``n`` rows with weights ``a_i`` (summing to one over all chunks), ``k'`` columns
with marginals ``b_j``, a cost ``C_ij`` and the entropic regularisation ``eps``. The
transport plan of potentials ``(f, g)`` is

.. math::
    P_{ij} = \\exp\\big((f_i + g_j - C_{ij}) / \\varepsilon\\big).

Only the ``k'`` column potentials ``g`` are kept between passes. A chunk recomputes its
row potentials from them (the exact row update of Sinkhorn),

.. math::
    f_i = \\varepsilon \\log a_i - \\varepsilon\\,\\mathrm{LSE}_j\\big((g_j - C_{ij})/\\varepsilon\\big),

so that ``P_ij = a_i softmax_j((g_j - C_ij)/eps)``, and emits the logarithm of its part
of the column sums ``S_j = sum_i P_ij`` as a ``(max, sum-exp)`` pair: the log-sum-exp
over its rows of ``log P_ij - g_j/eps``. The pairs of all chunks are merged by
:func:`logsumexp_combine`; the driver then has ``log S_j`` (the column marginal of the
plan after the row update, hence the marginal error) and updates ``g`` on the client.

Costs come from two sources:

``"points"``
    squared Euclidean distances between the rows of ``X`` and ``k`` centres, divided by
    ``scale``: ``C_ij = (||x_i||^2 - 2 x_i.c_j + ||c_j||^2) / scale``. The row term
    ``||x_i||^2`` cancels in the plan, so only ``||c_j||^2 - 2 x_i.c_j`` is formed, by one
    GEMM per tile (float32 data stays float32 in the GEMM and the ``exp``).
``"costs"``
    the block of a user's ``n x k`` cost matrix (or of scores, ``sign=-1``).

With ``virtual=True`` a last column of cost zero is added (partial transport: it takes
the mass that is not transported).

Numerics: every exponent is at most zero after subtracting the row maximum, so nothing
overflows; the column sums are accumulated in float64 from the row-softmax values. A
column whose sum over the chunk is so small that underflowed terms could matter (tiny
``eps`` early in the iterations) is recomputed exactly in float64 in the log domain. So
no ``eps`` is too small.

Threads: the kernels that run tile GEMMs are decorated with
:func:`dclust.kernels._hooks.blas_scope`, under which the runtime limits BLAS to one
thread (:mod:`dclust.runtime.threads`): the GEMMs are small and Dask already runs one
task per core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .._xp import array_namespace, is_numpy_namespace, numpy_like, to_numpy
from ._hooks import blas_scope

__all__ = [
    "SinkhornState",
    "sinkhorn_partial",
    "logsumexp_combine",
    "sinkhorn_combine",
    "sinkhorn_assign_block",
    "cost_stats_partial",
    "cost_stats_combine",
    "column_log_sums",
    "repair_partial",
    "repair_combine",
    "candidates_partial",
    "candidates_combine",
    "hard_inertia_partial",
]

# Below these fractions of the chunk's row mass, a column sum accumulated from
# (possibly underflowed) exponentials is recomputed exactly in the log domain.
# float32 exp flushes below e^-87 (lost mass <= e^-87 * mass: relative 1.6e-13 at 1e-25);
# float64 below e^-708.
_SAFE = {np.dtype(np.float32): 1e-25, np.dtype(np.float64): 1e-280}


@dataclass(frozen=True)
class SinkhornState:
    """What a pass needs to know (small: ``O(k d)``).

    Attributes
    ----------
    kind : {"points", "costs"}
    g : ndarray (k',) float64
        Column potentials, in cost units (the virtual column last when ``virtual``).
    eps : float
        Regularisation of this pass, in the units of the (scaled) cost.
    centers : ndarray (k, d) float64 or None
        For ``kind="points"``.
    scale : float
        Costs are divided by it.
    sign : float
        +1 for costs, -1 for scores (cost = -score).
    virtual : bool
        Append a zero-cost column.
    log_mass : float
        ``log a_i = log w_i + log_mass`` (``log_mass = -log n`` without weights).
    want_sums : bool
        Also return plan-weighted sums of the rows (``k x d``), for a centre update.
    """

    kind: str
    g: np.ndarray
    eps: float
    centers: np.ndarray | None = None
    scale: float = 1.0
    sign: float = 1.0
    virtual: bool = False
    log_mass: float = 0.0
    want_sums: bool = False


# float32 exp by Cody-Waite range reduction and a degree-7 polynomial (Cephes expf):
# plain arithmetic that LLVM vectorises, unlike a call to libm's expf (numba has no
# vector math library here). Relative error <= 3e-7; arguments below -87 are clamped,
# so underflowed terms come out as ~1.6e-38 instead of 0 (covered by the _SAFE check).
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)


@numba.njit(nogil=True, cache=True, fastmath=True)
def _softmax_rows_f32(Z, bits, m_out, rs_out):
    """In place ``Z[i] = exp(Z[i] - max Z[i])``; ``m_out`` the row maxima, ``rs_out`` the
    row sums of the exponentials (float64)."""
    t, k = Z.shape
    for i in range(t):
        row = Z[i]
        mi = row[0]
        for j in range(1, k):
            mi = max(mi, row[j])
        nb = bits[i]
        for j in range(k):
            x = max(row[j] - mi, np.float32(-87.0))
            fx = np.floor(x * _LOG2E + np.float32(0.5))
            r = x - fx * _LN2_HI - fx * _LN2_LO
            p = np.float32(1.9875691500e-4)
            p = p * r + np.float32(1.3981999507e-3)
            p = p * r + np.float32(8.3334519073e-3)
            p = p * r + np.float32(4.1665795894e-2)
            p = p * r + np.float32(1.6666665459e-1)
            p = p * r + np.float32(5.0000001201e-1)
            row[j] = p * r * r + r + np.float32(1.0)
            nb[j] = (np.int32(fx) + np.int32(127)) << np.int32(23)
        scale = nb.view(np.float32)
        s = 0.0
        for j in range(k):
            v = row[j] * scale[j]
            row[j] = v
            s += v
        m_out[i] = mi
        rs_out[i] = s


def _tile_rows(k):
    return int(min(4096, max(128, 2**18 // max(k, 1))))


def _work_dtype(X):
    return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)


class _Z:
    """Builds ``Z = (g - C) / eps`` for tiles of one chunk (buffers reused across tiles)."""

    def __init__(self, X, st: SinkhornState, dtype):
        self.st = st
        self.dtype = dtype
        self.X = X
        k1 = st.g.shape[0]
        self.k1 = k1
        inv = 1.0 / st.eps
        if st.kind == "points":
            C = st.centers
            k, d = C.shape
            CTa = np.zeros((d + 1, k1))
            CTa[:d, :k] = (2.0 / (st.scale * st.eps)) * C.T
            cn = np.einsum("ij,ij->i", C, C) / st.scale
            CTa[d, :k] = (st.g[:k] - cn) * inv
            if st.virtual:
                CTa[d, k] = st.g[k] * inv
            self.CTa64 = CTa
            self.CTa = CTa.astype(dtype)
            self.d = d
        else:
            self.gz = st.g * inv
            self.cz = st.sign * inv / st.scale

    def tile(self, s, e, out=None, cols=None, dtype=None):
        """``Z`` of rows ``s:e`` (all columns, or the columns ``cols`` in float64)."""
        st = self.st
        dtype = dtype or self.dtype
        Xt = self.X[s:e]
        k = st.g.shape[0] - (1 if st.virtual else 0)
        if st.kind == "points":
            t = e - s
            Xa = np.empty((t, self.d + 1), dtype=dtype)
            Xa[:, : self.d] = Xt
            Xa[:, self.d] = 1.0
            CTa = self.CTa if (cols is None and dtype == self.dtype) else self.CTa64.astype(dtype)
            if cols is not None:
                CTa = CTa[:, cols]
            Z = np.matmul(Xa, CTa, out=out[:t] if out is not None else None)
            vcols = [k] if cols is None else list(np.flatnonzero(np.asarray(cols) == k))
            if st.virtual and vcols:
                xn = np.einsum("ij,ij->i", Xt, Xt, dtype=np.float64) / (st.scale * st.eps)
                Z[:, vcols[0]] += xn.astype(dtype)
            return Z
        C = Xt if cols is None else Xt[:, [c for c in cols if c < k]]
        gz = self.gz if cols is None else self.gz[cols]
        t = e - s
        Z = out[:t] if out is not None else np.empty((t, len(gz)), dtype=dtype)
        if cols is None:
            np.multiply(C, -self.cz, out=Z[:, :k], dtype=dtype, casting="unsafe")
            if st.virtual:
                Z[:, k] = 0.0
        else:
            real = [j for j, c in enumerate(cols) if c < k]
            Z[:, real] = -self.cz * C.astype(dtype)
            for j, c in enumerate(cols):
                if c >= k:
                    Z[:, j] = 0.0
        Z += gz.astype(dtype)
        return Z


class _Zd:
    """``Z = (g - C) / eps`` for tiles of one chunk, with whole-array operations of a
    NumPy-like module ``mod`` (the CuPy path; tested with ``mod=numpy``).

    Same values as :class:`_Z` (one GEMM on ``[X, 1]`` for points); no reused buffers.
    """

    def __init__(self, mod, X, st: SinkhornState, dtype):
        self.mod, self.st, self.X = mod, st, X
        self.dtype = np.dtype(dtype)
        k1 = st.g.shape[0]
        inv = 1.0 / st.eps
        if st.kind == "points":
            C = np.asarray(st.centers, dtype=np.float64)
            k, d = C.shape
            CTa = np.zeros((d + 1, k1))
            CTa[:d, :k] = (2.0 / (st.scale * st.eps)) * C.T
            cn = np.einsum("ij,ij->i", C, C) / st.scale
            CTa[d, :k] = (st.g[:k] - cn) * inv
            if st.virtual:
                CTa[d, k] = st.g[k] * inv
            self.CTa = {np.dtype(np.float64): mod.asarray(CTa)}
            self.d = d
        else:
            self.gz = mod.asarray(np.asarray(st.g, dtype=np.float64) * inv)
            self.cz = st.sign * inv / st.scale

    def tile(self, s, e, dtype=None):
        mod, st = self.mod, self.st
        dtype = np.dtype(dtype or self.dtype)
        Xt = self.X[s:e]
        t = e - s
        k = st.g.shape[0] - (1 if st.virtual else 0)
        if st.kind == "points":
            if dtype not in self.CTa:
                self.CTa[dtype] = self.CTa[np.dtype(np.float64)].astype(dtype)
            Xa = mod.empty((t, self.d + 1), dtype=dtype)
            Xa[:, : self.d] = Xt
            Xa[:, self.d] = 1.0
            Z = Xa @ self.CTa[dtype]
            if st.virtual:
                X64 = Xt.astype(mod.float64)
                xn = (X64 * X64).sum(axis=1) / (st.scale * st.eps)
                Z[:, k] += xn.astype(dtype)
            return Z
        Z = mod.empty((t, st.g.shape[0]), dtype=dtype)
        Z[:, :k] = (-self.cz) * Xt.astype(dtype)
        if st.virtual:
            Z[:, k] = 0.0
        Z += self.gz.astype(dtype)
        return Z


def _backend(X):
    """``(mod, X, dense)``: the NumPy-like module of the chunk, the chunk as a float array
    of it, and whether the whole-array (CuPy) path runs. NumPy and CuPy chunks only."""
    xp = array_namespace(X)
    if is_numpy_namespace(xp):
        mod, dense = np, False
        X = np.asarray(X)
    else:
        mod, _ = numpy_like(xp)
        dense = True
        if mod is None:
            raise TypeError(
                f"The Sinkhorn kernels run on NumPy or CuPy chunks; got a {type(X).__name__} "
                f"({getattr(xp, '__name__', xp)}). Convert the data with numpy.asarray."
            )
    if X.dtype not in (mod.float32, mod.float64):
        X = X.astype(mod.float64)
    return mod, X, dense


def _zb(mod, X, st, dtype, dense):
    return _Zd(mod, X, st, dtype) if dense else _Z(X, st, dtype)


def _log_a(w, n, log_mass, mod=np):
    if w is None:
        return mod.full(n, log_mass, dtype=mod.float64)
    with np.errstate(divide="ignore"):
        return mod.log(mod.asarray(w, dtype=mod.float64)) + log_mass


def _nonfinite(X, row_offset, mod=np):
    ok = mod.isfinite(X)
    if bool(ok.all()):
        return 0, -1
    bad_rows = to_numpy(~ok.all(axis=1))
    return int((~ok).sum()), int(row_offset + np.flatnonzero(bad_rows)[0])


@blas_scope
def sinkhorn_partial(X, st: SinkhornState, w=None):
    """One chunk's share of a Sinkhorn iteration.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features) or (n_rows, k)
        The rows of the data (``kind="points"``) or of the cost matrix (``"costs"``).
    st : SinkhornState
    w : ndarray of shape (n_rows,), optional
        Row weights (``a_i = w_i * exp(log_mass)``).

    Returns
    -------
    stats : dict
        ``colmax``, ``colsum`` (k',): the column log-sum-exp of ``log P_ij`` over the chunk as ``(max, sum of exp(. - max))``; ``mass`` (row mass of the chunk);
        ``sums`` (k, d) plan-weighted row sums when ``want_sums``.
    """
    mod, X, dense = _backend(X)
    if dense:
        return _sinkhorn_dense(mod, X, st, w)
    n = X.shape[0]
    k1 = st.g.shape[0]
    out = {"colmax": np.full(k1, -np.inf), "colsum": np.zeros(k1), "mass": np.zeros(())}
    if st.want_sums:
        out["sums"] = np.zeros((k1 - (1 if st.virtual else 0), X.shape[1]))
    if n == 0:
        return out
    dtype = _work_dtype(X)
    log_a = _log_a(w, n, st.log_mass)
    zb = _Z(X, st, dtype)
    tile = _tile_rows(k1)
    buf = np.empty((min(tile, n), k1), dtype=dtype)
    ones = np.ones(k1, dtype=dtype)
    fast = dtype == np.float32
    if fast:
        bits = np.empty(buf.shape, dtype=np.int32)
        m_buf = np.empty(buf.shape[0])
        rs_buf = np.empty(buf.shape[0])
    lse = np.empty(n)
    colsum = np.zeros(k1)
    kr = k1 - (1 if st.virtual else 0)
    for s in range(0, n, tile):
        e = min(n, s + tile)
        Z = zb.tile(s, e, out=buf)
        if fast:
            t = e - s
            _softmax_rows_f32(Z, bits[:t], m_buf[:t], rs_buf[:t])
            m, rs = m_buf[:t], rs_buf[:t]
        else:
            m = Z.max(axis=1)
            Z -= m[:, None]
            np.exp(Z, out=Z)
            # Row sums by GEMV (BLAS, much faster than a NumPy reduction along rows).
            rs = Z @ ones
        lrs = np.log(rs)
        lse[s:e] = m + lrs
        c = np.exp(log_a[s:e] - lrs)  # a_i / row sum: P_ij = c_i * Z_ij
        colsum += c.astype(dtype) @ Z
        if st.want_sums:
            cx = (c[:, None] * X[s:e]).astype(dtype)
            out["sums"] += Z[:, :kr].T @ cx
    with np.errstate(divide="ignore"):
        mass = float(np.exp(log_a).sum())
    out["mass"] = np.asarray(mass)
    bad = np.flatnonzero(~(colsum >= _SAFE[dtype] * mass))
    with np.errstate(divide="ignore"):
        out["colmax"] = np.log(colsum)
    out["colsum"] = np.ones(k1)
    if bad.size and mass > 0:
        # Exact log-domain column sums for the columns whose terms may have underflowed.
        M = np.full(bad.size, -np.inf)
        S = np.zeros(bad.size)
        for s in range(0, n, tile):
            e = min(n, s + tile)
            T = zb.tile(s, e, cols=bad, dtype=np.float64)
            T += (log_a[s:e] - lse[s:e])[:, None]
            mt = T.max(axis=0)
            Mn = np.maximum(M, mt)
            fin = np.isfinite(Mn)
            with np.errstate(invalid="ignore"):
                S = np.where(fin, S * np.exp(M - np.where(fin, Mn, 0.0)), 0.0)
                S += np.where(fin, np.exp(T - np.where(fin, Mn, 0.0)[None, :]).sum(axis=0), 0.0)
            M = Mn
        out["colmax"][bad] = M
        out["colsum"][bad] = S
    out["colsum"][~np.isfinite(out["colmax"])] = 0.0
    return out


def _sinkhorn_dense(mod, X, st: SinkhornState, w=None):
    """:func:`sinkhorn_partial` with whole-array operations of ``mod`` (CuPy's path).

    Same statistics as the compiled path (tested with ``mod=numpy``): float32 data stays
    float32 in the GEMM and the ``exp``, column sums accumulate in float64, and columns
    whose sum may have lost underflowed terms are recomputed in the log domain.
    """
    n, d = X.shape
    k1 = st.g.shape[0]
    kr = k1 - (1 if st.virtual else 0)
    out = {"colmax": np.full(k1, -np.inf), "colsum": np.zeros(k1), "mass": np.zeros(())}
    if st.want_sums:
        out["sums"] = np.zeros((kr, d))
    if n == 0:
        return out
    dtype = _work_dtype(X)
    log_a = _log_a(w, n, st.log_mass, mod)
    zb = _Zd(mod, X, st, dtype)
    tile = _tile_rows(k1)
    lse = mod.empty(n, dtype=mod.float64)
    colsum = mod.zeros(k1, dtype=mod.float64)
    sums = mod.zeros((kr, d), dtype=mod.float64) if st.want_sums else None
    for s in range(0, n, tile):
        e = min(n, s + tile)
        Z = zb.tile(s, e)
        m = Z.max(axis=1)
        Z = mod.exp(Z - m[:, None])
        rs = Z.sum(axis=1, dtype=mod.float64)
        lrs = mod.log(rs)
        lse[s:e] = m + lrs
        c = mod.exp(log_a[s:e] - lrs)
        colsum += c.astype(dtype) @ Z
        if st.want_sums:
            cx = (c[:, None] * X[s:e]).astype(dtype)
            sums += Z[:, :kr].T @ cx
    with np.errstate(divide="ignore"):
        mass = float(mod.exp(log_a).sum())
    out["mass"] = np.asarray(mass)
    if st.want_sums:
        out["sums"] = to_numpy(sums)
    colsum = to_numpy(colsum)
    bad = np.flatnonzero(~(colsum >= _SAFE[dtype] * mass))
    with np.errstate(divide="ignore"):
        out["colmax"] = np.log(colsum)
    out["colsum"] = np.ones(k1)
    if bad.size and mass > 0:
        badd = mod.asarray(bad)
        M = mod.full(bad.size, -mod.inf)
        S = mod.zeros(bad.size)
        for s in range(0, n, tile):
            e = min(n, s + tile)
            T = zb.tile(s, e, dtype=np.float64)[:, badd]
            T += (log_a[s:e] - lse[s:e])[:, None]
            Mn = mod.maximum(M, T.max(axis=0))
            fin = mod.isfinite(Mn)
            Mz = mod.where(fin, Mn, 0.0)
            with np.errstate(invalid="ignore"):
                S = mod.where(fin, S * mod.exp(M - Mz), 0.0)
                S += mod.where(fin, mod.exp(T - Mz[None, :]).sum(axis=0), 0.0)
            M = Mn
        out["colmax"][bad] = to_numpy(M)
        out["colsum"][bad] = to_numpy(S)
    out["colsum"][~np.isfinite(out["colmax"])] = 0.0
    return out


def logsumexp_combine(maxes, sums):
    """Merge ``(max, sum-exp)`` pairs: returns the pair of the union (identity ``(-inf, 0)``)."""
    M = np.max(np.stack(maxes), axis=0)
    fin = np.isfinite(M)
    Mz = np.where(fin, M, 0.0)
    S = np.zeros_like(Mz)
    for m, s in zip(maxes, sums):
        with np.errstate(invalid="ignore", over="ignore"):
            S += np.where(np.isfinite(m), s * np.exp(np.where(np.isfinite(m), m, 0.0) - Mz), 0.0)
    return M, S


def sinkhorn_combine(parts):
    """Combine the stats of :func:`sinkhorn_partial` (associative)."""
    out = {}
    out["colmax"], out["colsum"] = logsumexp_combine([p["colmax"] for p in parts],
                                                     [p["colsum"] for p in parts])
    out["mass"] = sum(p["mass"] for p in parts[1:]) + parts[0]["mass"]
    if "sums" in parts[0]:
        acc = parts[0]["sums"].copy()
        for p in parts[1:]:
            acc += p["sums"]
        out["sums"] = acc
    return out


def column_log_sums(stats):
    """``log S_j``: the log column marginals of the plan, from combined stats."""
    with np.errstate(divide="ignore"):
        return stats["colmax"] + np.log(stats["colsum"])


# ---- outputs once the potentials are known ------------------------------------------
@blas_scope
def sinkhorn_assign_block(X, st: SinkhornState, w=None, *, what="labels"):
    """Per-row outputs of the final plan for one chunk.

    ``what``: ``"labels"`` (argmax over the columns; ``-1`` when the virtual column wins),
    ``"soft"`` (row-normalised plan over the real columns, float64; with a virtual column
    the rows sum to less than one), ``"plan"`` (``P_ij``), or ``"f"`` (row potentials,
    without the ``||x_i||^2`` term for ``kind="points"``).
    """
    mod, X, dense = _backend(X)
    return _assign_block(mod, X, st, w, what, dense)


def _assign_block(mod, X, st, w, what, dense):
    n = X.shape[0]
    k1 = st.g.shape[0]
    kr = k1 - (1 if st.virtual else 0)
    zb = _zb(mod, X, st, np.dtype(np.float64), dense)
    if what == "labels":
        lab = mod.empty(n, dtype=mod.int32)
    elif what == "f":
        res = mod.empty(n, dtype=mod.float64)
    else:
        res = mod.empty((n, kr), dtype=mod.float64)
    log_a = _log_a(w, n, st.log_mass, mod) if what in ("plan", "f") else None
    tile = _tile_rows(k1)
    for s in range(0, n, tile):
        e = min(n, s + tile)
        Z = zb.tile(s, e)
        if what == "labels":
            L = Z.argmax(axis=1)
            if st.virtual:
                L = mod.where(L == kr, -1, L)
            lab[s:e] = L
            continue
        m = Z.max(axis=1)
        Z -= m[:, None]
        mod.exp(Z, out=Z)
        rs = Z.sum(axis=1)
        if what == "f":
            res[s:e] = st.eps * (log_a[s:e] - m - mod.log(rs))
            continue
        Z /= rs[:, None]
        if what == "plan":
            Z *= mod.exp(log_a[s:e])[:, None]
        res[s:e] = Z[:, :kr]
    return lab if what == "labels" else res


def hard_inertia_partial(X, st: SinkhornState, w=None, *, rows=None, labels=None, row_offset=0):
    """k-means inertia of one chunk under its hard labels: ``sum_i w_i ||x_i - c_{l_i}||^2``.

    Labels are those of :func:`sinkhorn_assign_block` (``argmax_j g_j - C_ij``, ``kind``
    ``"points"``), with the overrides ``labels`` at the global ``rows`` (sorted) applied;
    rows labelled ``-1`` (the virtual cluster) count for nothing. Distances are exact in
    float64.

    Returns
    -------
    stats : dict
        ``inertia`` (0-d float64) and ``weight`` (0-d, the weight of the labelled rows).
    """
    mod, X, dense = _backend(X)
    return _hard_inertia(mod, X, st, w, rows, labels, row_offset, dense)


def _hard_inertia(mod, X, st, w, rows, labels, row_offset, dense):
    n = X.shape[0]
    if n == 0:
        return {"inertia": np.zeros(()), "weight": np.zeros(())}
    lab = _assign_block(mod, X, st, None, "labels", dense).astype(mod.int64)
    if rows is not None and rows.size:
        lo, hi = np.searchsorted(rows, [row_offset, row_offset + n])
        if hi > lo:
            lab[mod.asarray(rows[lo:hi] - row_offset)] = mod.asarray(labels[lo:hi])
    C = mod.asarray(np.asarray(st.centers, dtype=np.float64))
    wt = None if w is None else mod.asarray(w, dtype=mod.float64)
    inertia = 0.0
    weight = 0.0
    tile = _tile_rows(C.shape[0])
    for s in range(0, n, tile):
        e = min(n, s + tile)
        L = lab[s:e]
        ok = L >= 0
        diff = X[s:e].astype(mod.float64) - C[mod.where(ok, L, 0)]
        d2 = mod.where(ok, (diff * diff).sum(axis=1), 0.0)
        wo = ok.astype(mod.float64) if wt is None else mod.where(ok, wt[s:e], 0.0)
        inertia += float((d2 if wt is None else d2 * wt[s:e]).sum())
        weight += float(wo.sum())
    return {"inertia": np.asarray(inertia), "weight": np.asarray(weight)}


# ---- the cost statistics pass (finiteness, scale) -----------------------------------
def cost_stats_partial(X, w=None, *, row_offset=0):
    """Finiteness, weight checks and the spread of a chunk of a cost matrix.

    ``spread2`` is the sum over rows of the variance of the row's costs (row-wise
    shifts do not change the plan, so this is the spread that matters); ``wsum`` the
    sum of weights, ``n_bad_weight``/``first_bad_weight`` the negative or non-finite
    weights.
    """
    mod, X, _ = _backend(X)
    X = X.astype(mod.float64, copy=False)
    nb, first = _nonfinite(X, row_offset, mod)
    out = {"n_nonfinite": nb, "first_nonfinite": first, "spread2": 0.0, "rows": X.shape[0],
           "wsum": 0.0, "n_bad_weight": 0, "first_bad_weight": -1}
    if X.shape[0] and not nb:
        out["spread2"] = float(X.var(axis=1).sum())
    if w is not None:
        w = np.asarray(to_numpy(w), dtype=np.float64)
        bad = ~(np.isfinite(w) & (w >= 0))
        out["n_bad_weight"] = int(bad.sum())
        if bad.any():
            out["first_bad_weight"] = int(row_offset + np.flatnonzero(bad)[0])
        out["wsum"] = float(w[~bad].sum())
    else:
        out["wsum"] = float(X.shape[0])
    return out


def _first(vals):
    vals = [v for v in vals if v >= 0]
    return min(vals) if vals else -1


def cost_stats_combine(parts):
    return {
        "n_nonfinite": sum(p["n_nonfinite"] for p in parts),
        "first_nonfinite": _first([p["first_nonfinite"] for p in parts]),
        "spread2": sum(p["spread2"] for p in parts),
        "rows": sum(p["rows"] for p in parts),
        "wsum": sum(p["wsum"] for p in parts),
        "n_bad_weight": sum(p["n_bad_weight"] for p in parts),
        "first_bad_weight": _first([p["first_bad_weight"] for p in parts]),
    }


# ---- size repair (hard labels with exact cluster sizes) ------------------------------
@blas_scope
def repair_partial(X, st: SinkhornState, n_margins):
    """Hard labels under prices ``st.g`` and, per cluster, its smallest margins.

    A row's label is ``argmax_j (g_j - C_ij)`` and its margin how much larger that is
    than its second best. Lowering ``g_j`` by more than the ``e``-th smallest margin of
    cluster ``j`` moves exactly those ``e`` rows out of ``j`` (to their second choice).

    Returns
    -------
    counts : (k,) int64
    margins : (k, n_margins) float64, ascending, padded with +inf.
    """
    mod, X, dense = _backend(X)
    return _repair(mod, X, st, n_margins, dense)


def _repair(mod, X, st, n_margins, dense):
    k = st.g.shape[0]
    n = X.shape[0]
    counts = np.zeros(k, dtype=np.int64)
    margins = np.full((k, n_margins), np.inf)
    if n == 0:
        return {"counts": counts, "margins": margins}
    zb = _zb(mod, X, st, np.dtype(np.float64), dense)
    tile = _tile_rows(k)
    labs, mars = [], []
    for s in range(0, n, tile):
        e = min(n, s + tile)
        Z = zb.tile(s, e)
        if k == 1:
            labs.append(np.zeros(e - s, dtype=np.int64))
            mars.append(np.full(e - s, np.inf))
            continue
        top2 = mod.partition(Z, k - 2, axis=1)[:, k - 2:]
        labs.append(to_numpy(Z.argmax(axis=1)).astype(np.int64))
        mars.append(to_numpy((top2[:, 1] - top2[:, 0]) * st.eps))
    lab = np.concatenate(labs)
    mar = np.concatenate(mars)
    counts = np.bincount(lab, minlength=k).astype(np.int64)
    order = np.lexsort((mar, lab))
    lab_s, mar_s = lab[order], mar[order]
    starts = np.searchsorted(lab_s, np.arange(k))
    for j in np.flatnonzero(counts):
        m = min(n_margins, counts[j])
        margins[j, :m] = mar_s[starts[j]: starts[j] + m]
    return {"counts": counts, "margins": margins}


def repair_combine(parts):
    counts = parts[0]["counts"].copy()
    for p in parts[1:]:
        counts += p["counts"]
    m = parts[0]["margins"].shape[1]
    margins = np.sort(np.concatenate([p["margins"] for p in parts], axis=1), axis=1)[:, :m]
    return {"counts": counts, "margins": margins}


@blas_scope
def candidates_partial(X, st: SinkhornState, under, want, *, row_offset=0):
    """Rows of overfull clusters that are cheapest to move into underfull ones.

    Labels are ``argmax_j (g_j - C_ij)`` under the prices ``st.g``. For a row of a
    cluster ``l`` with ``want[l] > 0`` (rows to give away), the regret of moving it to an
    underfull cluster ``u`` is ``(g_l - C_il) - (g_u - C_iu) >= 0``; per such cluster the
    ``want[l]`` rows of smallest best regret are kept, with their regrets towards every
    cluster in ``under``.

    Returns
    -------
    dict with ``row`` (global), ``label``, ``best`` (smallest regret) and ``regret``
    (n_candidates, len(under)).
    """
    mod, X, dense = _backend(X)
    return _candidates(mod, X, st, under, want, row_offset, dense)


def _candidates(mod, X, st, under, want, row_offset, dense):
    under = np.asarray(under, dtype=np.int64)
    want = np.asarray(want)
    n = X.shape[0]
    rows, labs, bests, regs = [], [], [], []
    if n:
        zb = _zb(mod, X, st, np.dtype(np.float64), dense)
        tile = _tile_rows(st.g.shape[0])
        under_d = mod.asarray(under)
        for s in range(0, n, tile):
            e = min(n, s + tile)
            Z = zb.tile(s, e)
            lab = to_numpy(Z.argmax(axis=1)).astype(np.int64)
            sel = np.flatnonzero(want[lab] > 0)
            if sel.size == 0:
                continue
            Zs = Z[mod.asarray(sel)]
            best = Zs[mod.arange(sel.size), mod.asarray(lab[sel])]
            R = to_numpy((best[:, None] - Zs[:, under_d]) * st.eps)
            rows.append(sel + s + row_offset)
            labs.append(lab[sel])
            bests.append(R.min(axis=1))
            regs.append(R)
    if not rows:
        return {"row": np.zeros(0, np.int64), "label": np.zeros(0, np.int64),
                "best": np.zeros(0), "regret": np.zeros((0, under.size))}
    return _keep_cheapest({"row": np.concatenate(rows), "label": np.concatenate(labs),
                           "best": np.concatenate(bests), "regret": np.concatenate(regs)}, want)


def _keep_cheapest(c, want):
    order = np.lexsort((c["row"], c["best"], c["label"]))
    lab = c["label"][order]
    starts = np.searchsorted(lab, lab, side="left")
    rank = np.arange(lab.size) - starts
    keep = order[rank < want[lab]]
    keep = keep[np.lexsort((c["row"][keep],))]
    return {k: v[keep] for k, v in c.items()}


class candidates_combine:
    """Combine :func:`candidates_partial` stats, keeping ``want[l]`` rows per cluster."""

    def __init__(self, want):
        self.want = want

    def __call__(self, parts):
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return _keep_cheapest(cat, self.want)
