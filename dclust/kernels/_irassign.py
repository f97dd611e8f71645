"""Nearest centre by a register-blocked micro-kernel written in LLVM IR.

A BLAS GEMM of a tile of rows by the centres followed by an argmin runs well below the
machine's peak at the shapes k-means meets (at k=16, d=32 OpenBLAS reaches about a
quarter of it, at k=256, d=64 about two thirds): the inner dimension is short, and the
GEMM packs and writes a tile that the argmin then reads back. This kernel keeps ``R``
rows by a block of 8-64 centres of distance accumulators in SIMD registers across the
features, folds them into a running per-lane minimum and index, and writes only the
label. Centres are taken in groups of at most :data:`GROUP_BYTES` over each tile of
rows, so they are read from a core's cache whatever k is. NumPy and numba cannot
express that register blocking (numba's loop vectoriser works on innermost loops
only), so the loop is generated as LLVM IR, compiled by llvmlite for this CPU (the same
compiler numba uses), and called from the numba kernels through its address, like BLAS
(see :mod:`dclust.kernels._blas`). The BLAS path stays as the fallback.

The vector width follows the CPU (:func:`vector_bits`): 16 float32 or 8 float64 lanes
(zmm registers) where it has AVX-512F, except at small k (:func:`_bits_for`), and 8 or 4
(ymm) elsewhere; LLVM splits the 256-bit form for CPUs with narrower SIMD, so the kernel
is correct everywhere and fast where AVX2 or wider exists. The register blocking follows
the register count (16 under AVX2, 32 under AVX-512). The 512-bit form carries the
function attributes ``"min-legal-vector-width"="512"`` and ``"prefer-vector-width"="512"``,
so that a CPU model for which LLVM prefers 256-bit vectors (skylake-avx512) still keeps
the explicit 512-bit operations whole. Both widths give the same labels and best
values: each lane is one centre, and the per-(row, centre) order of operations does not
depend on the width.

Accumulation order is fixed (``||c||^2`` then features in order, by multiply-add, fused
where the CPU has FMA: ``llvm.fmuladd``, so a CPU without it is not sent to a slow
software FMA), so a given input on a given machine always gives the same labels; ties
go to the lowest centre index, as with ``numpy.argmin``.
"""

from __future__ import annotations

import threading

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._hooks import ir_assign_enabled

__all__ = ["ALIGN", "GROUP_BYTES", "aligned_empty", "call_assign", "centre_layout", "kernel_address",
           "try_kernel_address", "vector_bits"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_ELT = {np.dtype(np.float32): ("float", "f32"), np.dtype(np.float64): ("double", "f64")}
# Centres are run over a tile of rows in groups of at most this many bytes (about a
# core's L2 cache), so that they are read from cache, not memory, by every row block.
GROUP_BYTES = 256 * 2**10


def _shape(k: int, L: int, bits: int = 256, regs: int = 16) -> tuple[int, int]:
    """(vectors per centre block, rows per row block) for ``k`` centres of ``L`` lanes.

    ``R x KV`` accumulators and the ``KV`` centre vectors of a feature stay in the
    ``regs`` vector registers of ``bits`` bits: with 16 (AVX2), 12-16 accumulators
    (measured best at k=8..512); with 32 (AVX-512, whose 32 registers also serve 256-bit
    vectors), up to 24 (:data:`_SHAPES_512`, :data:`_SHAPES_256_32`).
    """
    kv = -(-k // L)
    if regs >= 32:
        table = _SHAPES_512 if bits == 512 else _SHAPES_256_32
        return table.get(kv, table[0])
    return {1: (1, 8), 2: (2, 4), 3: (3, 4)}.get(kv, (2, 6))


# (KV, R) by vectors per centre (key 0: every larger count) on a CPU with 32 vector
# registers. Measured on Zen4 (one core, float32, assignment alone, medians): at k=256,
# d=64 (4, 4) took 62 ms against 64-73 ms for (2, 6), (2, 12), (3, 8), (4, 6); at
# k=4096, d=128 (4, 4) and (3, 8) 195 ms against 211 ms for (2, 6). With 256-bit vectors
# at k <= 32 (where :func:`_bits_for` picks them): (2, 8) at k=16 and (4, 6) at k=32 beat
# the 16-register shapes by 10-20%.
_SHAPES_512 = {1: (1, 8), 2: (2, 6), 3: (3, 6), 0: (4, 4)}
_SHAPES_256_32 = {1: (1, 8), 2: (2, 8), 3: (3, 6), 4: (4, 6), 0: (4, 6)}


def vector_bits() -> int:
    """The widest vector unit this CPU has for the kernel: 512 with AVX-512F, else 256.

    Read from LLVM's view of the host (``llvmlite.binding.get_host_cpu_features``), the
    same view the kernel is compiled for; 256 where that view is unavailable.
    """
    global _host_bits
    if _host_bits is None:
        try:
            import llvmlite.binding as llvm

            feats = llvm.get_host_cpu_features()
            _host_bits = 512 if feats.get("avx512f", False) else 256
        except Exception:  # pragma: no cover - an llvmlite without the host query
            _host_bits = 256
    return _host_bits


_host_bits: int | None = None
# ``(bits, regs)`` to use instead of the host's choice (tests and benchmarks compare
# widths; ``(256, 16)`` is the AVX2 kernel); None lets :func:`_bits_for` choose.
_forced: tuple[int, int] | None = None


def _bits_for(dt: np.dtype, k: int) -> tuple[int, int]:
    """``(vector bits, vector registers)`` for ``k`` centres of dtype ``dt``.

    With AVX-512: 512-bit vectors, except where the centres fill less than one of them
    (k < 16 float32, k < 8 float64): there a 512-bit row block is mostly padding lanes
    and 256-bit vectors in the same 32 registers are faster (Xeon, d=8, k=4: 0.88
    against 1.13 ms a 200,000 rows). On a CPU that runs 512-bit operations as two
    256-bit halves (Zen 4, :func:`_halved_512`) the bound is two vectors (k <= 32
    float32): measured there k=32, d=32: 8.6 (256) against 9.5 ms (512); k=16, d=32:
    even. On a Xeon with two 512-bit FMA units, k=16, d=32: 2.42 (512) against 2.74 ms;
    k=32, d=64: 6.56 against 8.74 ms. The labels are the same either way.
    """
    if _forced is not None:
        return _forced
    if vector_bits() < 512:
        return 256, 16
    lanes = 512 // (8 * dt.itemsize)
    return (256, 32) if k < lanes or (_halved_512() and k <= 2 * lanes) else (512, 32)


def _halved_512() -> bool:
    """Whether this CPU executes 512-bit vector operations as two 256-bit halves (AMD
    Zen 4, LLVM's ``znver4``), so that wide vectors pay off later than where the units
    are 512 bits wide (Intel's AVX-512 cores, Zen 5)."""
    global _host_halved
    if _host_halved is None:
        try:
            import llvmlite.binding as llvm

            _host_halved = llvm.get_host_cpu_name() == "znver4"
        except Exception:  # pragma: no cover - an llvmlite without the host query
            _host_halved = False
    return _host_halved


_host_halved: bool | None = None


def _opaque_pointers() -> bool:
    import llvmlite.binding as llvm

    return llvm.llvm_version_info[0] >= 17


def _generate(elt: str, sfx: str, L: int, KV: int, R: int, name: str, decls: bool = True) -> str:
    """IR of ``void name(X*, i64 n, i64 d, CT*, cn*, i32* lab, i64 nblk, best*)``.

    ``X`` is ``n x d`` row-major. The centres come in ``nblk`` blocks of ``KB = KV*L``:
    ``CT`` is ``nblk x d x KB`` (``-2 C`` transposed per block, zero-padded) and ``cn``
    holds ``nblk*KB`` values of ``||c||^2`` (``+inf`` for padding). Rows
    ``0 .. R*floor(n/R)-1`` are labelled (``lab``, and ``best`` the row's smallest
    ``||c||^2 - 2 x.c``); the caller runs the rest with ``R=1``.

    Per block of R rows: for each centre block, ``R x KV`` vector accumulators run over
    the features in registers; each lane then keeps its running minimum and the index
    that reached it (strict ``<``, so the lowest index on ties); at the end the row's
    minimum over lanes, and the lowest index among the lanes that hold it.
    """
    opaque = _opaque_pointers()
    V = f"<{L} x {elt}>"
    IV = f"<{L} x i32>"
    P = "ptr" if opaque else f"{elt}*"
    VP = "ptr" if opaque else f"{V}*"
    IP = "ptr" if opaque else "i32*"
    KB = KV * L
    out = []
    emit = out.append
    def vec_ptr(dst, src):
        if opaque:
            emit(f"  {dst} = getelementptr {elt}, ptr {src}, i64 0")
        else:
            emit(f"  {dst} = bitcast {P} {src} to {VP}")
    inf = "0x7FF0000000000000"  # +inf, the running minimum before any centre
    lanes = ", ".join(f"i32 {j}" for j in range(L))
    if decls:
        emit(f"declare {V} @llvm.fmuladd.v{L}{sfx}({V}, {V}, {V})")
        emit(f"declare void @llvm.prefetch{'.p0' if opaque else '.p0i8'}({'ptr' if opaque else 'i8*'}, i32, i32, i32)")
    bits = L * (32 if elt == "float" else 64)
    # Without these, LLVM may split 512-bit operations into two 256-bit halves on CPU
    # models for which it prefers 256-bit vectors.
    attrs = (f' "min-legal-vector-width"="{bits}" "prefer-vector-width"="{bits}"'
             if bits > 256 else "")
    emit(f"define void @{name}({P} noalias nocapture readonly %X, i64 %n, i64 %d, "
         f"{P} noalias nocapture readonly %CT, {P} noalias nocapture readonly %cn, "
         f"{IP} noalias nocapture %lab, i64 %nblk, {P} noalias nocapture %best){attrs} {{")
    emit("entry:")
    emit(f"  %nb = udiv i64 %n, {R}")
    emit("  %has = icmp ugt i64 %nb, 0")
    emit("  %hasd = icmp ugt i64 %d, 0")
    emit("  %go = and i1 %has, %hasd")
    emit(f"  %blkstride = mul i64 %d, {KB}")
    emit("  br i1 %go, label %outer, label %exit")
    emit("outer:")
    emit("  %b = phi i64 [0, %entry], [%bnext, %reduce]")
    emit(f"  %i = mul i64 %b, {R}")
    for q in range(R):
        emit(f"  %row{q} = add i64 %i, {q}")
        emit(f"  %off{q} = mul i64 %row{q}, %d")
        emit(f"  %xp{q} = getelementptr {elt}, {P} %X, i64 %off{q}")
    emit(f"  %pfs = add i64 %i, {2 * R}")
    emit("  %pfo = mul i64 %pfs, %d")
    emit(f"  %pfp = getelementptr {elt}, {P} %X, i64 %pfo")
    if not opaque:
        emit(f"  %pfp8 = bitcast {P} %pfp to i8*")
    emit(f"  %pfn = mul i64 %d, {R * (4 if elt == 'float' else 8)}")
    emit("  br label %pf")
    emit("pf:")
    emit("  %pb = phi i64 [0, %outer], [%pbn, %pf]")
    emit(f"  %pfa = getelementptr i8, {'ptr' if opaque else 'i8*'} {'%pfp' if opaque else '%pfp8'}, i64 %pb")
    emit(f"  call void @llvm.prefetch{'.p0' if opaque else '.p0i8'}({'ptr' if opaque else 'i8*'} %pfa, i32 0, i32 3, i32 1)")
    emit("  %pbn = add i64 %pb, 64")
    emit("  %pmore = icmp ult i64 %pbn, %pfn")
    emit("  br i1 %pmore, label %pf, label %blkhead")
    emit("blkhead:")
    emit("  %blk = phi i64 [0, %pf], [%blknext, %blkend]")
    for q in range(R):
        emit(f"  %bv{q} = phi {V} [<{', '.join([elt + ' ' + inf] * L)}>, %pf], [%bvn{q}_{KV - 1}, %blkend]")
        emit(f"  %bi{q} = phi {IV} [zeroinitializer, %pf], [%bin{q}_{KV - 1}, %blkend]")
    emit("  %ctb = mul i64 %blk, %blkstride")
    emit(f"  %ctblk = getelementptr {elt}, {P} %CT, i64 %ctb")
    emit(f"  %cnb = mul i64 %blk, {KB}")
    for v in range(KV):
        emit(f"  %cno{v} = add i64 %cnb, {v * L}")
        emit(f"  %cnp{v} = getelementptr {elt}, {P} %cn, i64 %cno{v}")
        vec_ptr(f"%cnvp{v}", f"%cnp{v}")
        emit(f"  %cnv{v} = load {V}, {VP} %cnvp{v}, align 4")
    emit("  br label %inner")
    emit("inner:")
    emit("  %f = phi i64 [0, %blkhead], [%fnext, %inner]")
    for q in range(R):
        for v in range(KV):
            emit(f"  %a{q}_{v} = phi {V} [%cnv{v}, %blkhead], [%an{q}_{v}, %inner]")
    emit(f"  %ctoff = mul i64 %f, {KB}")
    for v in range(KV):
        emit(f"  %ctoff{v} = add i64 %ctoff, {v * L}")
        emit(f"  %ctp{v} = getelementptr {elt}, {P} %ctblk, i64 %ctoff{v}")
        vec_ptr(f"%ctvp{v}", f"%ctp{v}")
        emit(f"  %ct{v} = load {V}, {VP} %ctvp{v}, align 4")
    for q in range(R):
        emit(f"  %xsp{q} = getelementptr {elt}, {P} %xp{q}, i64 %f")
        emit(f"  %xs{q} = load {elt}, {P} %xsp{q}, align 4")
        emit(f"  %xi{q} = insertelement {V} undef, {elt} %xs{q}, i32 0")
        emit(f"  %xb{q} = shufflevector {V} %xi{q}, {V} undef, <{L} x i32> zeroinitializer")
        for v in range(KV):
            emit(f"  %an{q}_{v} = call {V} @llvm.fmuladd.v{L}{sfx}({V} %xb{q}, {V} %ct{v}, {V} %a{q}_{v})")
    emit("  %fnext = add i64 %f, 1")
    emit("  %more = icmp ult i64 %fnext, %d")
    emit("  br i1 %more, label %inner, label %blkend")
    emit("blkend:")
    emit("  %cnb32 = trunc i64 %cnb to i32")
    for v in range(KV):
        emit(f"  %ib{v}s = add i32 %cnb32, {v * L}")
        emit(f"  %ib{v}i = insertelement {IV} undef, i32 %ib{v}s, i32 0")
        emit(f"  %ib{v}b = shufflevector {IV} %ib{v}i, {IV} undef, <{L} x i32> zeroinitializer")
        emit(f"  %ib{v} = add {IV} %ib{v}b, <{lanes}>")
    for q in range(R):
        pv, pi = f"%bv{q}", f"%bi{q}"
        for v in range(KV):
            emit(f"  %lt{q}_{v} = fcmp olt {V} %an{q}_{v}, {pv}")
            emit(f"  %bvn{q}_{v} = select <{L} x i1> %lt{q}_{v}, {V} %an{q}_{v}, {V} {pv}")
            emit(f"  %bin{q}_{v} = select <{L} x i1> %lt{q}_{v}, {IV} %ib{v}, {IV} {pi}")
            pv, pi = f"%bvn{q}_{v}", f"%bin{q}_{v}"
    emit("  %blknext = add i64 %blk, 1")
    emit("  %bmore2 = icmp ult i64 %blknext, %nblk")
    emit("  br i1 %bmore2, label %blkhead, label %reduce")
    emit("reduce:")
    if L >= BUTTERFLY_LANES:
        rows = [(f"%bvn{q}_{KV - 1}", f"%bin{q}_{KV - 1}", [q]) for q in range(R)]
        for q, (val, idx) in enumerate(_emit_butterfly(emit, V, IV, L, rows)):
            emit(f"  %l{q} = extractelement {IV} {idx[0]}, i32 {idx[1]}")
            emit(f"  %lp{q} = getelementptr i32, {IP} %lab, i64 %row{q}")
            emit(f"  store i32 %l{q}, {IP} %lp{q}, align 4")
            emit(f"  %bs{q} = extractelement {V} {val[0]}, i32 {val[1]}")
            emit(f"  %bp{q} = getelementptr {elt}, {P} %best, i64 %row{q}")
            emit(f"  store {elt} %bs{q}, {P} %bp{q}, align 4")
    else:
        for q in range(R):
            prev = _emit_halving_min(emit, V, "fcmp olt", L, f"%bvn{q}_{KV - 1}", f"h{q}_")
            emit(f"  %mb{q} = shufflevector {V} {prev}, {V} undef, <{L} x i32> zeroinitializer")
            emit(f"  %eq{q} = fcmp oeq {V} %bvn{q}_{KV - 1}, %mb{q}")
            emit(f"  %cand{q} = select <{L} x i1> %eq{q}, {IV} %bin{q}_{KV - 1}, {IV} <{', '.join(['i32 2147483647'] * L)}>")
            prev = _emit_halving_min(emit, IV, "icmp slt", L, f"%cand{q}", f"g{q}_")
            emit(f"  %l{q}r = extractelement {IV} {prev}, i32 0")
            # NaN distances only (non-finite input, rejected before any pass): label 0.
            emit(f"  %bad{q} = icmp eq i32 %l{q}r, 2147483647")
            emit(f"  %l{q} = select i1 %bad{q}, i32 0, i32 %l{q}r")
            emit(f"  %lp{q} = getelementptr i32, {IP} %lab, i64 %row{q}")
            emit(f"  store i32 %l{q}, {IP} %lp{q}, align 4")
            emit(f"  %bs{q} = extractelement {V} %mb{q}, i32 0")
            emit(f"  %bp{q} = getelementptr {elt}, {P} %best, i64 %row{q}")
            emit(f"  store {elt} %bs{q}, {P} %bp{q}, align 4")
    emit("  %bnext = add i64 %b, 1")
    emit("  %bmore = icmp ult i64 %bnext, %nb")
    emit("  br i1 %bmore, label %outer, label %exit")
    emit("exit:")
    emit("  ret void")
    emit("}")
    return "\n".join(out) + "\n"


def _emit_halving_min(emit, vt, less, L, prev, tag):
    """Fold the ``L`` lanes of ``prev`` (type ``vt``) in halves, keeping the smaller by
    ``less`` (``"fcmp olt"``, ``"icmp slt"``); returns the vector whose lane 0 holds the
    minimum. One row at a time: the row-by-row form of the reduction."""
    width, step = L, 0
    while width > 1:
        width //= 2
        idx = ", ".join(f"i32 {(j % width) + width}" for j in range(L))
        emit(f"  %{tag}s{step} = shufflevector {vt} {prev}, {vt} undef, <{L} x i32> <{idx}>")
        emit(f"  %{tag}l{step} = {less} {vt} {prev}, %{tag}s{step}")
        emit(f"  %{tag}m{step} = select <{L} x i1> %{tag}l{step}, {vt} {prev}, {vt} %{tag}s{step}")
        prev = f"%{tag}m{step}"
        step += 1
    return prev


# Lanes from which a row block's argmins are reduced together (:func:`_emit_butterfly`)
# rather than row by row. Measured on an AVX-512 Xeon, assignment alone, one thread,
# 200,000 rows, ms, row-by-row / butterfly: 16 lanes (512-bit float32) d=32, k=16 3.0 /
# 2.8; d=64, k=16 5.2-5.5 / 4.7-4.8; d=8, k=8 1.6 / 1.4; with 8 lanes the butterfly
# lost (256-bit, d=32, k=8: 2.4 / 3.0), so narrower vectors keep the row-by-row form.
BUTTERFLY_LANES = 16


def _emit_butterfly(emit, V, IV, L, items):
    """Reduce each row's ``L`` lanes of (value, centre index) to the lexicographic minimum
    (smallest value, then smallest index), several rows at a time.

    ``items`` holds ``(values, indices, [row])`` per row. Each stage halves the lanes a
    row holds and packs two vectors' rows into one (a butterfly), so ``R`` rows cost
    about ``R`` vector steps in all instead of ``R log2(L)``; a lexicographic minimum
    does not depend on the order it is taken in, so the labels and values are those of
    a row-by-row reduction. Returns, row by row, ``((vector, lane), (vector, lane))``
    where the row's value and label end up.
    """
    w, stage = L, 0
    while w > 1:
        h = w // 2
        out = []
        for m in range(0, len(items), 2):
            pair = items[m : m + 2]
            pm, qm, rows = [], [], []
            for base, (_, _, rs) in zip((0, L), pair):
                for i in range(len(rs)):
                    pm += [base + i * w + j for j in range(h)]
                    qm += [base + i * w + h + j for j in range(h)]
                rows += rs
            pm += [pm[0]] * (L - len(pm))
            qm += [qm[0]] * (L - len(qm))
            a, b = pair[0], pair[-1]
            t = f"{stage}_{m}"
            for kind, vt, src in (("v", V, 0), ("i", IV, 1)):
                for nm, mask in (("p", pm), ("q", qm)):
                    idx = ", ".join(f"i32 {j}" for j in mask)
                    emit(f"  %y{kind}{nm}{t} = shufflevector {vt} {a[src]}, {vt} {b[src]}, "
                         f"<{L} x i32> <{idx}>")
            emit(f"  %ylt{t} = fcmp olt {V} %yvq{t}, %yvp{t}")
            emit(f"  %yeq{t} = fcmp oeq {V} %yvq{t}, %yvp{t}")
            emit(f"  %yil{t} = icmp slt {IV} %yiq{t}, %yip{t}")
            emit(f"  %yte{t} = and <{L} x i1> %yeq{t}, %yil{t}")
            emit(f"  %ytk{t} = or <{L} x i1> %ylt{t}, %yte{t}")
            emit(f"  %yv{t} = select <{L} x i1> %ytk{t}, {V} %yvq{t}, {V} %yvp{t}")
            emit(f"  %yi{t} = select <{L} x i1> %ytk{t}, {IV} %yiq{t}, {IV} %yip{t}")
            out.append((f"%yv{t}", f"%yi{t}", rows))
        items, w, stage = out, h, stage + 1
    return [((val, lane), (idx, lane)) for val, idx, rs in items for lane in range(len(rs))]


_lock = threading.Lock()
_cache: dict = {}
_engines: list = []  # compiled code lives as long as its engine


def _compile(ir_text: str, names):
    import llvmlite.binding as llvm

    try:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
    except Exception:  # newer llvmlite initialises on import  # pragma: no cover
        pass
    mod = llvm.parse_assembly(ir_text)
    mod.verify()
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                      features=llvm.get_host_cpu_features().flatten(), opt=3)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    _engines.append(engine)
    return [engine.get_function_address(nm) for nm in names]


def kernel_address(dtype, k: int, d: int, bits: int | None = None, regs: int | None = None
                   ) -> tuple[int, int, int, int, int]:
    """``(R-row kernel, R, 1-row kernel, centres per block, blocks per group)`` for ``k``
    centres of ``d`` features: addresses of compiled code (once per process and shape
    class) and how to cut the centres (:func:`centre_layout`, :data:`GROUP_BYTES`).

    ``bits`` (256 or 512) and ``regs`` (16 or 32) choose the vector width and the
    register blocking; by default what suits this CPU and ``k`` (:func:`_bits_for`).
    Every choice gives the same labels and best values.

    Raises
    ------
    ValueError
        The dtype is not float32/float64, ``k`` or ``d`` is below 1, or ``bits`` is
        neither 256 nor 512.
    """
    dt = np.dtype(dtype)
    if dt not in _DTYPES:
        raise ValueError(f"the IR nearest-centre kernel takes float32 or float64, not {dt}")
    if k < 1 or d < 1:
        raise ValueError(f"the IR nearest-centre kernel needs k >= 1 and d >= 1, got k={k}, d={d}")
    auto_bits, auto_regs = _bits_for(dt, k)
    bits = auto_bits if bits is None else bits
    regs = (32 if bits == 512 else auto_regs) if regs is None else regs
    if bits not in (256, 512):
        raise ValueError(f"the IR nearest-centre kernel has 256- or 512-bit vectors, not {bits}")
    L = bits // (8 * dt.itemsize)
    KV, R = _shape(k, L, bits, regs)
    key = (dt.str, L, KV, R)
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            elt, sfx = _ELT[dt]
            ir_text = (_generate(elt, sfx, L, KV, R, "block")
                       + _generate(elt, sfx, L, KV, 1, "single", decls=False))
            hit = _cache[key] = tuple(_compile(ir_text, ("block", "single")))
    a_block, a_single = hit
    per_block = KV * L
    group = max(1, GROUP_BYTES // (per_block * d * dt.itemsize))
    return a_block, R, a_single, per_block, group


def try_kernel_address(dtype, k: int, d: int):
    """:func:`kernel_address`, or ``None`` where this kernel does not apply (another
    dtype), is switched off (by the runtime's policy, :func:`._hooks.ir_assign_enabled`:
    ``DCLUST_IR_ASSIGN=0``) or cannot be compiled here; the caller then uses BLAS."""
    dt = np.dtype(dtype)
    if dt not in _DTYPES or k < 1 or d < 1 or not _enabled():
        return None
    try:
        return kernel_address(dt, k, d)
    except Exception as e:  # pragma: no cover - an LLVM without this target or feature
        import warnings

        warnings.warn(f"dclust: IR nearest-centre kernel unavailable ({type(e).__name__}: {e}); "
                      "using BLAS", RuntimeWarning, stacklevel=2)
        global _unavailable
        _unavailable = True
        return None


# Byte alignment of the centre layout. The kernel loads whole vectors of centres; a
# vector that straddles two cache lines is two loads, and mmap-backed buffers (what a
# Dask worker gets for every large array: the nanny sets MALLOC_TRIM_THRESHOLD_, which
# switches off glibc's adaptive mmap threshold) start 16 bytes into a page. Measured
# on an AVX-512 Xeon, k=4096, d=128, one thread: 140 ms aligned, 175-183 ms at offset 16.
ALIGN = 64


def aligned_empty(shape, dtype, align: int = ALIGN):
    """An uninitialised C-contiguous array whose data starts on an ``align``-byte
    boundary."""
    dt = np.dtype(dtype)
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    buf = np.empty(nbytes + align, dtype=np.uint8)
    off = (-buf.ctypes.data) % align
    return buf[off : off + nbytes].view(dt).reshape(shape)


def centre_layout(Cm, cnorm, per_block: int):
    """``-2 C`` (``Cm``, k x d) and ``||c||^2`` in the kernel's block layout: ``CT`` of
    shape (blocks, d, per_block), zero-padded, and ``cn`` padded with ``+inf`` (padding
    centres are never chosen). Both start on an :data:`ALIGN`-byte boundary, so every
    block's vectors do."""
    k, d = Cm.shape
    nblk = -(-k // per_block)
    full = nblk * per_block
    padded = np.zeros((full, d), dtype=Cm.dtype)
    padded[:k] = Cm
    CT = aligned_empty((nblk, d, per_block), Cm.dtype)
    CT[...] = padded.reshape(nblk, per_block, d).transpose(0, 2, 1)
    cn = aligned_empty(full, Cm.dtype)
    cn[:k] = cnorm
    cn[k:] = np.inf
    return CT, cn


# Set once compiling failed in this process: a fact about this machine's LLVM, so the
# kernel stops trying (and warning) instead of failing again on every chunk.
_unavailable = False


def _enabled() -> bool:
    return not _unavailable and ir_assign_enabled()


@intrinsic
def call_assign(typingctx, fn, X, n, d, CT, cn, lab, nblk, best):
    """Call the kernel at address ``fn``: pointers as integers, counts as int64."""
    sig = types.void(types.intp, types.uintp, types.int64, types.int64, types.uintp, types.uintp,
                     types.uintp, types.int64, types.uintp)

    def codegen(context, builder, signature, args):
        ptr = ir.IntType(8).as_pointer()
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [ptr, i64, i64, ptr, ptr, ptr, i64, ptr])
        fptr = builder.inttoptr(args[0], fnty.as_pointer())
        builder.call(fptr, [builder.inttoptr(args[1], ptr), args[2], args[3],
                            builder.inttoptr(args[4], ptr), builder.inttoptr(args[5], ptr),
                            builder.inttoptr(args[6], ptr), args[7],
                            builder.inttoptr(args[8], ptr)])
        return context.get_dummy_value()

    return sig, codegen
