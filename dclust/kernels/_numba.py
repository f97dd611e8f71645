"""Compiled inner loops of the NumPy fast path.

These loops do, per row, the work that NumPy would spread over several full sweeps of
temporaries: argmin over a distance tile, the exact distance to the chosen centre, the
float64 segment sums and the running top-R of the farthest rows. Each releases the GIL so
that the worker's threads run them side by side. The per-row fold of the sums and the
distance is written as explicit vector IR (:func:`_fold_row`), as the loop vectoriser's
form of it measured a third slower.
"""

from __future__ import annotations

import numba
import numpy as np

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._blas import call_gemm
from ._irassign import call_assign

# Reassociation lets LLVM vectorise the per-row reductions over features; the loops are
# still compiled once, so a given input always gives the same bits.
_FASTMATH = {"reassoc", "nsz", "contract"}

# The row kernel's vectors: 4 doubles (256 bits), measured faster than 8 on Zen4 at d=32
# and no slower at d=64-128, float32 and float64.
_LANES = 4
_DIST_FLAGS = ("reassoc", "nsz", "contract")
# The sums take contraction only: ``s + w*x`` stays one fused multiply-add, as the
# vectorised loop this kernel replaces made it, and nothing is reassociated.
_SUM_FLAGS = ("contract",)


def _flagged(value, flags):
    value.flags.extend(flags)
    return value


class _Row:
    """Row ``row`` of a 2-d array argument: its address, length and feature stride."""

    def __init__(self, context, builder, aty, aval, row):
        arr = context.make_array(aty)(context, builder, aval)
        stride, self.step = cgutils.unpack_tuple(builder, arr.strides)
        base = builder.bitcast(arr.data, ir.IntType(8).as_pointer())
        self.bytes = builder.gep(base, [builder.mul(row, stride)])
        self.ptr = builder.bitcast(self.bytes, arr.data.type)
        self.len = cgutils.unpack_tuple(builder, arr.shape)[1]

    def at(self, builder, f, vec_ty=None, contiguous=True):
        """Address of feature ``f`` (as a vector of ``vec_ty`` if given)."""
        if contiguous:
            p = builder.gep(self.ptr, [f])
        else:
            p = builder.bitcast(builder.gep(self.bytes, [builder.mul(f, self.step)]),
                                self.ptr.type)
        return p if vec_ty is None else builder.bitcast(p, vec_ty.as_pointer())


def _is_matrix(ty, dtypes):
    return isinstance(ty, types.Array) and ty.ndim == 2 and ty.dtype in dtypes


@intrinsic
def _fold_row(typingctx, X, i, C, c, sums, wi):
    """``sums[c] += wi * X[i]`` (``wi`` None: unit weight, a plain add) and return
    ``||X[i] - C[c]||^2``, in float64, in one pass over the features.

    Explicit vector IR because numba's loop vectoriser, given this loop, cannot tell
    that ``sums`` does not overlap ``X`` or ``C``: it emits a runtime overlap check,
    a dispatch on the trip count and four 8-lane accumulators to combine on every row.
    That form took 4.2-4.9 ms against 3.0-3.5 ms for this one (500k float32 rows,
    d=32, k=16, tiles of 4096, one Zen4 core; a hand-written AVX2 loop: 2.5 ms). Each
    sum element gets the same operation as before (``s + x``, or ``s + w*x`` with the
    same contraction into a fused multiply-add), so the sums keep their bits; the
    distance's terms are added in another order. Arrays not typed C-contiguous are
    checked at run time and, where a feature stride is not the item size, taken one
    feature at a time.
    """
    if not (_is_matrix(X, (types.float32, types.float64)) and _is_matrix(C, (types.float64,))
            and _is_matrix(sums, (types.float64,))):
        return None
    weighted = not isinstance(wi, types.NoneType)
    sig = types.float64(X, types.intp, C, types.intp, sums, types.float64 if weighted else wi)
    typed_contiguous = X.layout == C.layout == sums.layout == "C"

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        i32 = ir.IntType(32)
        i64 = context.get_value_type(types.intp)
        elt = context.get_value_type(X.dtype)
        widen = elt != f64
        V = ir.VectorType(f64, _LANES)
        VX = ir.VectorType(elt, _LANES)
        x_row = _Row(context, builder, X, args[0], args[1])
        c_row = _Row(context, builder, C, args[2], args[3])
        s_row = _Row(context, builder, sums, args[4], args[3])
        d = x_row.len
        w = args[5] if weighted else None
        if weighted:
            wv = builder.insert_element(ir.Constant(V, ir.Undefined), w, ir.Constant(i32, 0))
            wv = builder.shuffle_vector(wv, ir.Constant(V, ir.Undefined),
                                        ir.Constant(ir.VectorType(i32, _LANES), [0] * _LANES))
        acc = [cgutils.alloca_once(builder, V) for _ in range(2)]
        tail = cgutils.alloca_once(builder, f64)
        result = cgutils.alloca_once(builder, f64)
        builder.store(ir.Constant(V, [0.0] * _LANES), acc[0])
        builder.store(ir.Constant(V, [0.0] * _LANES), acc[1])
        builder.store(ir.Constant(f64, 0.0), tail)

        def step(f, acc_ptr, vec, contiguous=True):
            # Features f .. f + lanes - 1 (vec), or feature f alone.
            xq = x_row.at(builder, f, VX if vec else None, contiguous)
            cq = c_row.at(builder, f, V if vec else None, contiguous)
            sq = s_row.at(builder, f, V if vec else None, contiguous)
            x = builder.load(xq, align=4 if widen else 8)
            if widen:
                x = builder.fpext(x, V if vec else f64)
            e = _flagged(builder.fsub(x, builder.load(cq, align=8)), _DIST_FLAGS)
            e2 = _flagged(builder.fmul(e, e), _DIST_FLAGS)
            builder.store(_flagged(builder.fadd(builder.load(acc_ptr), e2), _DIST_FLAGS), acc_ptr)
            if weighted:
                x = _flagged(builder.fmul(wv if vec else w, x), _SUM_FLAGS)
            s = _flagged(builder.fadd(builder.load(sq, align=8), x), _SUM_FLAGS)
            builder.store(s, sq, align=8)

        def vector_path():
            # 2 * lanes features per step into two accumulators, then one more vector
            # if d % (2 * lanes) >= lanes, then the last d % lanes features one by one.
            shift = ir.Constant(i64, (2 * _LANES).bit_length() - 1)
            pairs = builder.lshr(d, shift)
            with cgutils.for_range(builder, pairs, intp=i64) as loop:
                f = builder.shl(loop.index, shift)
                step(f, acc[0], True)
                step(builder.add(f, ir.Constant(i64, _LANES)), acc[1], True)
            lanes = ir.Constant(i64, _LANES)
            has_one = builder.icmp_unsigned("!=", builder.and_(d, lanes), ir.Constant(i64, 0))
            with builder.if_then(has_one):
                step(builder.shl(pairs, shift), acc[0], True)
            first = builder.and_(d, ir.Constant(i64, -_LANES))
            with cgutils.for_range(builder, builder.sub(d, first), intp=i64) as loop:
                step(builder.add(first, loop.index), tail, False)
            a = _flagged(builder.fadd(builder.load(acc[0]), builder.load(acc[1])), _DIST_FLAGS)
            half = _LANES
            while half > 1:
                half //= 2
                upper = [half + j % half for j in range(_LANES)]
                hi = builder.shuffle_vector(a, a, ir.Constant(ir.VectorType(i32, _LANES), upper))
                a = _flagged(builder.fadd(a, hi), _DIST_FLAGS)
            dist = builder.extract_element(a, ir.Constant(i32, 0))
            builder.store(_flagged(builder.fadd(dist, builder.load(tail)), _DIST_FLAGS), result)

        def strided_path():
            with cgutils.for_range(builder, d, intp=i64) as loop:
                step(loop.index, tail, False, contiguous=False)
            builder.store(builder.load(tail), result)

        if typed_contiguous:
            vector_path()
        else:
            unit = ir.Constant(ir.IntType(1), 1)
            for row, size in ((x_row, 4 if widen else 8), (c_row, 8), (s_row, 8)):
                same = builder.icmp_signed("==", row.step, ir.Constant(i64, size))
                unit = builder.and_(unit, same)
            unit = builder.or_(unit, builder.icmp_signed("<", d, ir.Constant(i64, 2)))
            with builder.if_else(unit) as (then, otherwise):
                with then:
                    vector_path()
                with otherwise:
                    strided_path()
        return builder.load(result)

    return sig, codegen


@numba.njit(nogil=True, cache=True)
def _replace_far(dist, far_d, far_i, far_l, row, c, m):
    """Put a row in slot ``m`` of the kept far rows; returns the new smallest slot."""
    far_d[m] = dist
    far_i[m] = row
    far_l[m] = c
    for r in range(far_d.shape[0]):
        if far_d[r] < far_d[m]:
            m = r
    return m


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def accumulate(X, labels, C, w, sums, wsum, dist_out, far_d, far_i, far_l, row0):
    """Fold one tile of assigned rows into the Lloyd statistics.

    Parameters
    ----------
    X : (t, d) float32 or float64 array, the tile.
    labels : (t,) int array, the centre chosen for each row.
    C : (k, d) float64 array, the centres.
    w : (t,) float64 array of sample weights, or an empty array for unit weights.
    sums : (k, d) float64 array, ``sum w * x`` per cluster (updated).
    wsum : (k,) float64 array, ``sum w`` per cluster (updated).
    dist_out : (t,) float64 array receiving the exact squared distance of each row to
        its centre, or an empty array.
    far_d, far_i, far_l : (R,) arrays, the R largest distances seen so far, their row
        numbers within the chunk and their labels (updated; R may be 0). A row replaces
        the smallest kept one only if strictly farther, so ties keep the earliest row.
    row0 : int
        Row number of the tile's first row within the chunk.

    Returns
    -------
    inertia : float
        ``sum w * ||x - c||^2`` over the tile.

    Rows are folded in order, each by one pass over its features (:func:`_fold_row`):
    each cluster's sums get ``w * x`` added row after row in float64, the distance is
    summed over the features in float64 in an order of the kernel's choosing.
    """
    t = X.shape[0]
    keep_dist = dist_out.shape[0] > 0
    R = far_d.shape[0]
    total = 0.0
    # Smallest kept far distance and its slot; rescanned only after a replacement.
    m = 0
    for r in range(1, R):
        if far_d[r] < far_d[m]:
            m = r
    thr = far_d[m] if R > 0 else np.inf
    # Unsigned labels spare the negative-index wrap-around on every row; the unit- and
    # sample-weight loops are separate so that each folds its rows with plain adds or
    # fused multiply-adds without a branch.
    if w.shape[0] > 0:
        for i in range(t):
            c = np.uintp(labels[i])
            wi = w[i]
            dist = _fold_row(X, i, C, c, sums, wi)
            wsum[c] += wi
            total += wi * dist
            if keep_dist:
                dist_out[i] = dist
            # Strict '>' keeps the earliest row on ties, so the choice is deterministic.
            if dist > thr:
                m = _replace_far(dist, far_d, far_i, far_l, row0 + i, c, m)
                thr = far_d[m]
    else:
        for i in range(t):
            c = np.uintp(labels[i])
            dist = _fold_row(X, i, C, c, sums, None)
            wsum[c] += 1.0
            total += dist
            if keep_dist:
                dist_out[i] = dist
            if dist > thr:
                m = _replace_far(dist, far_d, far_i, far_l, row0 + i, c, m)
                thr = far_d[m]
    return total


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def exact_sqdist(X, labels, C, out):
    """``out[i] = ||X[i] - C[labels[i]]||^2`` in float64."""
    # Left to the loop vectoriser: with no store in the feature loop it needs no overlap
    # check, and it measured within a few percent of :func:`_fold_row`'s form here
    # (d=7-128, float32 and float64, Zen4).
    t, d = X.shape
    for i in range(t):
        c = labels[i]
        dist = 0.0
        for f in range(d):
            diff = np.float64(X[i, f]) - C[c, f]
            dist += diff * diff
        out[i] = dist


# The argmin below also assumes no NaN (the first pass of every fit rejects them).
_FASTMATH_ARGMIN = {"reassoc", "nsz", "contract", "nnan", "ninf"}


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH_ARGMIN, boundscheck=False)
def argmin_cols(GT, cnorm, t, best, lab, j_first, fresh):
    """Fold a block of centres into the running argmin of ``t`` rows.

    ``GT[j, i]`` is ``-2 x_i . c_(j_first + j)`` and ``cnorm`` the ``||c||^2`` of the same
    block; ``best``/``lab`` hold each row's smallest ``GT + cnorm`` so far and its
    centre (started afresh when ``fresh``). The tile is centre-major, so the inner loop
    runs along rows with a branch-free compare-and-select that LLVM vectorises across
    8 rows; four centres are folded per sweep to cut the loads and stores of the
    running minimum. Measured here at 0.1-0.3 ns an element, against 1.0-1.5 ns for a
    per-row scalar scan and for NumPy's ``argmin(axis=1)``. Centres are scanned in
    increasing order with a strict ``<``, so the first minimum wins, as in
    ``numpy.argmin``.
    """
    kb = GT.shape[0]
    j = 0
    if fresh:
        c0 = cnorm[0]
        r0 = GT[0]
        j0 = np.int32(j_first)
        for i in range(t):
            best[i] = r0[i] + c0
            lab[i] = j0
        j = 1
    while j + 4 <= kb:
        c0 = cnorm[j]
        c1 = cnorm[j + 1]
        c2 = cnorm[j + 2]
        c3 = cnorm[j + 3]
        j0 = np.int32(j_first + j)
        j1 = np.int32(j_first + j + 1)
        j2 = np.int32(j_first + j + 2)
        j3 = np.int32(j_first + j + 3)
        r0 = GT[j]
        r1 = GT[j + 1]
        r2 = GT[j + 2]
        r3 = GT[j + 3]
        for i in range(t):
            b = best[i]
            ii = lab[i]
            v = r0[i] + c0
            if v < b:
                b = v
                ii = j0
            v = r1[i] + c1
            if v < b:
                b = v
                ii = j1
            v = r2[i] + c2
            if v < b:
                b = v
                ii = j2
            v = r3[i] + c3
            if v < b:
                b = v
                ii = j3
            best[i] = b
            lab[i] = ii
        j += 4
    while j < kb:
        c0 = cnorm[j]
        j0 = np.int32(j_first + j)
        r0 = GT[j]
        for i in range(t):
            b = best[i]
            ii = lab[i]
            v = r0[i] + c0
            if v < b:
                b = v
                ii = j0
            best[i] = b
            lab[i] = ii
        j += 1


@numba.njit(nogil=True, cache=True)
def gemm_into(gemm, Xt, CT, G):
    """``G[:t] = Xt @ CT`` through BLAS (column-major view: G^T = CT^T Xt^T).

    ``gemm`` is the address of ``sgemm`` for float32 or ``dgemm`` for float64 (see
    :mod:`dclust.kernels._blas`); every operand is C-contiguous.
    """
    t, d = Xt.shape
    k = CT.shape[1]
    ints = np.empty(3, dtype=np.int32)
    ints[0] = k
    ints[1] = t
    ints[2] = d
    ch = np.empty(1, dtype=np.uint8)
    ch[0] = 78  # 'N'
    alpha_beta = np.empty(2, dtype=Xt.dtype)
    alpha_beta[0] = 1.0
    alpha_beta[1] = 0.0
    call_gemm(gemm, ch.ctypes.data, ch.ctypes.data, ints[0:].ctypes.data, ints[1:].ctypes.data,
              ints[2:].ctypes.data, alpha_beta[0:].ctypes.data, CT.ctypes.data, ints[0:].ctypes.data,
              Xt.ctypes.data, ints[2:].ctypes.data, alpha_beta[1:].ctypes.data, G.ctypes.data,
              ints[0:].ctypes.data)


@numba.njit(nogil=True, cache=True)
def gemm_t_into(gemm, Xt, Cm, GT):
    """``GT[:, :t] = Cm @ Xt.T`` through BLAS: the distance tile, centre-major.

    In BLAS's column-major terms ``GT`` (``k x tile``, C-order) is a ``tile x k`` matrix
    with leading dimension ``tile``, equal to ``Xt @ Cm.T``: GEMM('T', 'N') on the
    row-major buffers of ``Xt`` (``t x d``) and ``Cm`` (``k x d``). ``gemm`` is the
    address of ``sgemm`` or ``dgemm`` (see :mod:`dclust.kernels._blas`).
    """
    t, d = Xt.shape
    k = Cm.shape[0]
    ints = np.empty(4, dtype=np.int32)
    ints[0] = t
    ints[1] = k
    ints[2] = d
    ints[3] = GT.shape[1]
    ch = np.empty(2, dtype=np.uint8)
    ch[0] = 84  # 'T'
    ch[1] = 78  # 'N'
    alpha_beta = np.empty(2, dtype=Xt.dtype)
    alpha_beta[0] = 1.0
    alpha_beta[1] = 0.0
    call_gemm(gemm, ch[0:].ctypes.data, ch[1:].ctypes.data, ints[0:].ctypes.data,
              ints[1:].ctypes.data, ints[2:].ctypes.data, alpha_beta[0:].ctypes.data,
              Xt.ctypes.data, ints[2:].ctypes.data, Cm.ctypes.data, ints[2:].ctypes.data,
              alpha_beta[1:].ctypes.data, GT.ctypes.data, ints[3:].ctypes.data)


@numba.njit(nogil=True, cache=True)
def ir_assign_rows(X, t, CTb, cnb, ir_block, ir_rows, ir_single, group, lab, best, glab,
                   gbest):
    """Label the first ``t`` rows of ``X`` by the IR kernel (:mod:`._irassign`) over the
    ``CTb.shape[0]`` centre blocks of ``CTb``/``cnb``, ``group`` blocks at a time (as
    many as a core's cache holds): ``lab``/``best`` get each row's nearest centre and
    kernel value, the running minimum kept across groups with a strict ``<`` (lowest
    index on ties); ``glab``/``gbest`` are scratch of ``t`` rows when there are more
    blocks than one group."""
    d = X.shape[1]
    nblk, _, per_block = CTb.shape
    tb = (t // ir_rows) * ir_rows
    for g0 in range(0, nblk, group):
        ng = min(group, nblk - g0)
        first = g0 * per_block
        to_lab = lab if g0 == 0 else glab
        to_best = best if g0 == 0 else gbest
        ct = CTb[g0:].ctypes.data
        cn = cnb[first:].ctypes.data
        if tb > 0:
            call_assign(ir_block, X.ctypes.data, tb, d, ct, cn, to_lab.ctypes.data, ng,
                        to_best.ctypes.data)
        if tb < t:
            call_assign(ir_single, X[tb:].ctypes.data, t - tb, d, ct, cn,
                        to_lab[tb:].ctypes.data, ng, to_best[tb:].ctypes.data)
        if g0 > 0:
            for i in range(t):
                if gbest[i] < best[i]:
                    best[i] = gbest[i]
                    lab[i] = glab[i] + first


@numba.njit(nogil=True, cache=True)
def lloyd_chunk(gemm, X, Cm, cnorm, C, w, tile, GT, labels, sums, wsum, dist_out, far_d, far_i,
                far_l, do_sums, ir_block, ir_rows, ir_single, CTb, cnb, nblk, group):
    """Assign every row of a chunk and fold it into the Lloyd statistics, in one call.

    Per tile of rows and block of ``GT.shape[0]`` centres: ``GT = (-2 C_block) @
    X_tile^T`` by BLAS into a cache-sized centre-major buffer, folded into the running
    argmin of ``GT + ||c||^2`` (:func:`argmin_cols`); then (if ``do_sums``)
    the float64 segment sums, exact distances and far rows via :func:`accumulate`.
    ``labels`` and ``dist_out`` may be empty (not wanted). ``Cm`` is ``-2 C`` in ``X``'s
    dtype and ``gemm`` the address of the matching GEMM. Returns the inertia.

    With ``ir_block`` non-zero, the register-blocked kernel of
    :mod:`dclust.kernels._irassign` at that address (``ir_rows`` rows at a time,
    ``ir_single`` its one-row form) replaces the GEMM and the argmin; ``CTb``/``cnb``
    are ``-2 C`` and ``||c||^2`` in its layout of ``nblk`` centre blocks, run ``group``
    blocks at a time (as many as a core's cache holds) over each tile, the running
    minimum kept across groups with a strict ``<`` (lowest index on ties).
    """
    n, d = X.shape
    k = Cm.shape[0]
    kb = GT.shape[0]
    lab = np.empty(tile, dtype=np.int32)
    best = np.empty(tile, dtype=GT.dtype)
    glab = np.empty(tile if nblk > group else 0, dtype=np.int32)
    gbest = np.empty(tile if nblk > group else 0, dtype=GT.dtype)
    keep_labels = labels.shape[0] > 0
    keep_dist = dist_out.shape[0] > 0
    use_w = w.shape[0] > 0
    no_w = np.empty(0, dtype=np.float64)
    no_dist = np.empty(0, dtype=np.float64)
    total = 0.0
    for s in range(0, n, tile):
        t = min(tile, n - s)
        Xt = X[s : s + t]
        if ir_block != 0:
            ir_assign_rows(Xt, t, CTb, cnb, ir_block, ir_rows, ir_single, group, lab, best,
                           glab, gbest)
        else:
            for jb in range(0, k, kb):
                je = min(jb + kb, k)
                G = GT[: je - jb]
                gemm_t_into(gemm, Xt, Cm[jb:je], G)
                argmin_cols(G, cnorm[jb:je], t, best, lab, jb, jb == 0)
        if keep_labels:
            labels[s : s + t] = lab[:t]
        if do_sums:
            total += accumulate(Xt, lab[:t], C, w[s : s + t] if use_w else no_w, sums, wsum,
                                dist_out[s : s + t] if keep_dist else no_dist, far_d, far_i, far_l,
                                s)
        elif keep_dist:
            exact_sqdist(Xt, lab[:t], C, dist_out[s : s + t])
    return total


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def tile_moments(X, s, e, tsum, tm2):
    """Per-feature sum and centred sum of squares of rows ``s:e`` of ``X``, in float64.

    Returns the largest absolute value seen. Non-finite values are not screened here:
    they make ``tsum`` non-finite, which the caller checks (and then takes the exact
    path), so the two sweeps stay branch-free and vectorise.
    """
    d = X.shape[1]
    absmax = 0.0
    for f in range(d):
        tsum[f] = 0.0
        tm2[f] = 0.0
    for i in range(s, e):
        row = X[i]
        for f in range(d):
            v = np.float64(row[f])
            tsum[f] += v
            a = abs(v)
            absmax = a if a > absmax else absmax
    inv = 1.0 / (e - s)
    for i in range(s, e):
        row = X[i]
        for f in range(d):
            dv = np.float64(row[f]) - tsum[f] * inv
            tm2[f] += dv * dv
    return absmax
