"""BLAS GEMM callable from compiled (numba) code, without the GIL.

SciPy exports its BLAS through ``scipy.linalg.cython_blas``. The compiled kernels take
the address of ``sgemm``/``dgemm`` as an ordinary integer argument and call it through
:func:`call_gemm`, an intrinsic that casts it to a function pointer. Because the address
is an argument rather than a baked-in global, numba can cache the compiled kernels on
disk, and worker processes do not recompile them.
"""

from __future__ import annotations

import ctypes

from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from scipy.linalg import cython_blas

__all__ = ["SGEMM", "DGEMM", "call_gemm"]


def _pointer(name: str) -> int:
    capsule = cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return int(get_pointer(capsule, get_name(capsule)))


SGEMM = _pointer("sgemm")
DGEMM = _pointer("dgemm")


@intrinsic
def call_gemm(typingctx, fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Call the Fortran GEMM at address ``fn``; every other argument is an address."""
    sig = types.void(types.intp, *([types.uintp] * 13))

    def codegen(context, builder, signature, args):
        ptr = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [ptr] * 13)
        fptr = builder.inttoptr(args[0], fnty.as_pointer())
        builder.call(fptr, [builder.inttoptr(a_, ptr) for a_ in args[1:]])
        return context.get_dummy_value()

    return sig, codegen
