"""Nearest centre for small k: a register-blocked micro-kernel written in LLVM IR.

With a few dozen centres, a BLAS GEMM of a tile of rows by the centres runs far below
the machine's peak (at k=16, d=32 OpenBLAS reaches about a quarter of it): its inner
dimension is short, and it packs and writes a tile that the argmin then reads back.
This kernel keeps ``R`` rows by all (padded) centres of distance accumulators in SIMD
registers across the features, folds each row's minimum out of those registers, and
writes only the label. NumPy and numba cannot express that register blocking (numba's
loop vectoriser works on innermost loops only), so the loop is generated as LLVM IR,
compiled by llvmlite for this CPU (the same compiler numba uses), and called from the
numba kernels through its address, like BLAS (see :mod:`dclust.kernels._blas`).

The vector width in the IR is fixed (8 float32 or 4 float64 lanes); LLVM splits or
widens it for CPUs with other SIMD widths, so the kernel is correct everywhere and fast
where AVX2 or wider exists.

Accumulation order is fixed (``||c||^2`` then features in order, by fused multiply-add),
so a given input always gives the same labels; ties go to the lowest centre index, as
with ``numpy.argmin``.
"""

from __future__ import annotations

import threading

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["call_assign", "kernel_address", "max_centres", "padded_centres",
           "try_kernel_address"]

_LANES = {np.dtype(np.float32): 8, np.dtype(np.float64): 4}
_ELT = {np.dtype(np.float32): ("float", "f32"), np.dtype(np.float64): ("double", "f64")}
# Up to this many vectors of centres per row block (16 registers on x86-64 AVX2).
_MAX_VECTORS = 4
# Rows per block for each number of centre vectors: about 8 accumulators in registers,
# leaving room for the centre vectors and the broadcast feature values.
_ROWS = {1: 8, 2: 4, 3: 3, 4: 2}


def max_centres(dtype) -> int:
    """Largest k this kernel takes for ``dtype`` (float32 or float64)."""
    return _MAX_VECTORS * _LANES[np.dtype(dtype)]


def padded_centres(k: int, dtype) -> int:
    """k rounded up to a whole number of SIMD vectors."""
    L = _LANES[np.dtype(dtype)]
    return -(-k // L) * L


def _opaque_pointers() -> bool:
    import llvmlite.binding as llvm

    return llvm.llvm_version_info[0] >= 17


def _generate(elt: str, sfx: str, L: int, KV: int, R: int, name: str, decls: bool = True) -> str:
    """IR of ``void name(X*, i64 n, i64 d, CT*, cn*, i32* lab)``.

    ``X`` is ``n x d`` row-major; ``CT`` is ``d x (KV*L)`` row-major (``-2 C`` transposed
    and zero-padded); ``cn`` holds ``KV*L`` values of ``||c||^2`` (``+inf`` for padding).
    Rows ``0 .. R*floor(n/R)-1`` are labelled; the caller runs the rest with ``R=1``.
    """
    opaque = _opaque_pointers()
    V = f"<{L} x {elt}>"
    P = "ptr" if opaque else f"{elt}*"
    VP = "ptr" if opaque else f"{V}*"
    IP = "ptr" if opaque else "i32*"
    Kp = KV * L
    out = []
    emit = out.append

    def vec_ptr(dst, src):
        # A vector view of a scalar pointer (a no-op with opaque pointers).
        if opaque:
            emit(f"  {dst} = getelementptr {elt}, ptr {src}, i64 0")
        else:
            emit(f"  {dst} = bitcast {P} {src} to {VP}")

    if decls:
        emit(f"declare {V} @llvm.fma.v{L}{sfx}({V}, {V}, {V})")
        emit("declare i64 @llvm.cttz.i64(i64, i1)")
        emit(f"declare void @llvm.prefetch{'.p0' if opaque else '.p0i8'}({'ptr' if opaque else 'i8*'}, i32, i32, i32)")
    emit(f"define void @{name}({P} noalias nocapture readonly %X, i64 %n, i64 %d, "
         f"{P} noalias nocapture readonly %CT, {P} noalias nocapture readonly %cn, "
         f"{IP} noalias nocapture %lab) {{")
    emit("entry:")
    for v in range(KV):
        emit(f"  %cnp{v} = getelementptr {elt}, {P} %cn, i64 {v * L}")
        vec_ptr(f"%cnvp{v}", f"%cnp{v}")
        emit(f"  %cnv{v} = load {V}, {VP} %cnvp{v}, align 4")
    emit(f"  %nb = udiv i64 %n, {R}")
    emit("  %has = icmp ugt i64 %nb, 0")
    emit("  %hasd = icmp ugt i64 %d, 0")
    emit("  %go = and i1 %has, %hasd")
    emit("  br i1 %go, label %outer, label %exit")
    emit("outer:")
    emit("  %b = phi i64 [0, %entry], [%bnext, %reduce]")
    emit(f"  %i = mul i64 %b, {R}")
    for q in range(R):
        emit(f"  %row{q} = add i64 %i, {q}")
        emit(f"  %off{q} = mul i64 %row{q}, %d")
        emit(f"  %xp{q} = getelementptr {elt}, {P} %X, i64 %off{q}")

    # The rows of a block are read a few bytes per step in R places at once, which the
    # hardware prefetchers follow poorly: ask for the block after next, line by line.
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
    emit("  br i1 %pmore, label %pf, label %inner0")
    emit("inner0:")
    emit("  br label %inner")
    emit("inner:")
    emit("  %f = phi i64 [0, %inner0], [%fnext, %inner]")
    for q in range(R):
        for v in range(KV):
            emit(f"  %a{q}_{v} = phi {V} [%cnv{v}, %inner0], [%an{q}_{v}, %inner]")
    emit(f"  %ctoff = mul i64 %f, {Kp}")
    for v in range(KV):
        emit(f"  %ctoff{v} = add i64 %ctoff, {v * L}")
        emit(f"  %ctp{v} = getelementptr {elt}, {P} %CT, i64 %ctoff{v}")
        vec_ptr(f"%ctvp{v}", f"%ctp{v}")
        emit(f"  %ct{v} = load {V}, {VP} %ctvp{v}, align 4")
    for q in range(R):
        emit(f"  %xsp{q} = getelementptr {elt}, {P} %xp{q}, i64 %f")
        emit(f"  %xs{q} = load {elt}, {P} %xsp{q}, align 4")
        emit(f"  %xi{q} = insertelement {V} undef, {elt} %xs{q}, i32 0")
        emit(f"  %xb{q} = shufflevector {V} %xi{q}, {V} undef, <{L} x i32> zeroinitializer")
        for v in range(KV):
            emit(f"  %an{q}_{v} = call {V} @llvm.fma.v{L}{sfx}({V} %xb{q}, {V} %ct{v}, {V} %a{q}_{v})")
    emit("  %fnext = add i64 %f, 1")
    emit("  %more = icmp ult i64 %fnext, %d")
    emit("  br i1 %more, label %inner, label %reduce")
    emit("reduce:")
    for q in range(R):
        # The row's minimum over every lane of every vector, then the first lane that
        # holds it (lowest centre index).
        # min(a, b) as a compare and select (one vminps; the input is finite, so
        # minnum's NaN handling is not needed), then a shuffle tree across lanes.
        prev = f"%an{q}_0"
        for v in range(1, KV):
            emit(f"  %lt{q}_{v} = fcmp olt {V} {prev}, %an{q}_{v}")
            emit(f"  %m{q}_{v} = select <{L} x i1> %lt{q}_{v}, {V} {prev}, {V} %an{q}_{v}")
            prev = f"%m{q}_{v}"
        width = L
        step = 0
        while width > 1:
            width //= 2
            idx = ", ".join(f"i32 {(j % width) + width}" for j in range(L))
            emit(f"  %h{q}_{step} = shufflevector {V} {prev}, {V} undef, <{L} x i32> <{idx}>")
            emit(f"  %hl{q}_{step} = fcmp olt {V} {prev}, %h{q}_{step}")
            emit(f"  %hm{q}_{step} = select <{L} x i1> %hl{q}_{step}, {V} {prev}, {V} %h{q}_{step}")
            prev = f"%hm{q}_{step}"
            step += 1
        emit(f"  %mb{q} = shufflevector {V} {prev}, {V} undef, <{L} x i32> zeroinitializer")
        mask = None
        for v in range(KV):
            emit(f"  %eq{q}_{v} = fcmp oeq {V} %an{q}_{v}, %mb{q}")
            emit(f"  %eb{q}_{v} = bitcast <{L} x i1> %eq{q}_{v} to i{L}")
            emit(f"  %ez{q}_{v} = zext i{L} %eb{q}_{v} to i64")
            if v:
                emit(f"  %es{q}_{v} = shl i64 %ez{q}_{v}, {v * L}")
                emit(f"  %mk{q}_{v} = or i64 {mask}, %es{q}_{v}")
                mask = f"%mk{q}_{v}"
            else:
                mask = f"%ez{q}_0"
        emit(f"  %tz{q} = call i64 @llvm.cttz.i64(i64 {mask}, i1 false)")
        # No lane equal to the minimum only happens for NaN distances (non-finite
        # input, rejected before any pass); label 0 keeps the index in range.
        emit(f"  %none{q} = icmp eq i64 {mask}, 0")
        emit(f"  %ix{q} = select i1 %none{q}, i64 0, i64 %tz{q}")
        emit(f"  %l{q} = trunc i64 %ix{q} to i32")
        emit(f"  %lp{q} = getelementptr i32, {IP} %lab, i64 %row{q}")
        emit(f"  store i32 %l{q}, {IP} %lp{q}, align 4")
    emit("  %bnext = add i64 %b, 1")
    emit("  %bmore = icmp ult i64 %bnext, %nb")
    emit("  br i1 %bmore, label %outer, label %exit")
    emit("exit:")
    emit("  ret void")
    emit("}")
    return "\n".join(out) + "\n"


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


def kernel_address(dtype, k: int) -> tuple[int, int, int]:
    """``(address of the R-row kernel, R, address of the 1-row kernel)`` for ``k`` centres.

    Compiled once per process and (dtype, number of centre vectors).
    """
    dt = np.dtype(dtype)
    L = _LANES[dt]
    KV = -(-k // L)
    if not 1 <= KV <= _MAX_VECTORS:
        raise ValueError(f"small-k kernel takes 1..{_MAX_VECTORS * L} centres, got {k}")
    key = (dt.str, KV)
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            elt, sfx = _ELT[dt]
            R = _ROWS[KV]
            ir_text = (_generate(elt, sfx, L, KV, R, "block")
                       + _generate(elt, sfx, L, KV, 1, "single", decls=False))
            a_block, a_single = _compile(ir_text, ("block", "single"))
            hit = _cache[key] = (a_block, R, a_single)
    return hit


def try_kernel_address(dtype, k: int):
    """:func:`kernel_address`, or ``None`` where this kernel does not apply (too many
    centres, another dtype) or cannot be compiled here; the caller then uses BLAS."""
    dt = np.dtype(dtype)
    if dt not in _LANES or not 1 <= k <= max_centres(dt) or not _enabled():
        return None
    try:
        return kernel_address(dt, k)
    except Exception as e:  # pragma: no cover - an LLVM without this target or feature
        import warnings

        warnings.warn(f"dclust: small-k kernel unavailable ({type(e).__name__}: {e}); using BLAS",
                      RuntimeWarning, stacklevel=2)
        global _disabled
        _disabled = True
        return None


_disabled = False


def _enabled() -> bool:
    import os

    return not _disabled and os.environ.get("DCLUST_SMALLK", "1") != "0"


@intrinsic
def call_assign(typingctx, fn, X, n, d, CT, cn, lab):
    """Call the kernel at address ``fn``: pointers as integers, ``n`` and ``d`` as int64."""
    sig = types.void(types.intp, types.uintp, types.int64, types.int64, types.uintp, types.uintp,
                     types.uintp)

    def codegen(context, builder, signature, args):
        ptr = ir.IntType(8).as_pointer()
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [ptr, i64, i64, ptr, ptr, ptr])
        fptr = builder.inttoptr(args[0], fnty.as_pointer())
        builder.call(fptr, [builder.inttoptr(args[1], ptr), args[2], args[3],
                            builder.inttoptr(args[4], ptr), builder.inttoptr(args[5], ptr),
                            builder.inttoptr(args[6], ptr)])
        return context.get_dummy_value()

    return sig, codegen

