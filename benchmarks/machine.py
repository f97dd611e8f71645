"""This machine's limits for the work, measured in the same run as the benchmarks.

The limit of a Lloyd iteration is ``max(2 n k d / sgemm_peak, n d itemsize / read_bw)``:
the GEMM it cannot avoid, or reading the data once, whichever is slower.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def sgemm_peak(threads=None, size=3072, repeats=3):
    """Best FLOP/s of a square float32 GEMM using ``threads`` BLAS threads."""
    from threadpoolctl import threadpool_limits

    threads = threads or os.cpu_count()
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = np.random.default_rng(1).random((size, size), dtype=np.float32)
    out = np.empty((size, size), np.float32)
    best = np.inf
    with threadpool_limits(threads, user_api="blas"):
        np.matmul(a, b, out=out)
        for _ in range(repeats):
            t = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def read_bandwidth(threads=None, nbytes=1 << 30, repeats=3):
    """Best bytes/s of summing a large float32 array, split over ``threads`` threads."""
    threads = threads or os.cpu_count()
    x = np.ones(nbytes // 4, dtype=np.float32)
    parts = np.array_split(x, threads)
    best = np.inf
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.sum, parts))
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t)
    return x.nbytes / best


def limit_seconds(n, d, k, itemsize, peak, bw):
    return max(2.0 * n * k * d / peak, n * d * itemsize / bw)


# /proc/cpuinfo flag -> short name, in the order they are listed. AVX-512 subsets are
# listed after "AVX-512 " joined by "/".
_AVX512 = [("avx512f", "F"), ("avx512bw", "BW"), ("avx512dq", "DQ"), ("avx512vl", "VL"),
           ("avx512ifma", "IFMA"), ("avx512vbmi", "VBMI"), ("avx512_vnni", "VNNI"),
           ("avx512_bf16", "BF16"), ("avx512_fp16", "FP16")]
_OTHER = [("amx_tile", "AMX"), ("avx2", "AVX2"), ("fma", "FMA"), ("avx", "AVX"),
          ("sse4_2", "SSE4.2")]
# Shown only where nothing wider is: AVX2 implies AVX and SSE4.2.
_IMPLIED = {"AVX": "AVX2", "SSE4.2": "AVX"}


def vector_extensions(flags) -> str:
    """A short name for the SIMD extensions in ``flags`` (``/proc/cpuinfo`` flags).

    Examples
    --------
    >>> vector_extensions({"avx512f", "avx512bw", "avx512vl", "avx2", "fma", "avx", "sse4_2"})
    'AVX-512 F/BW/VL, AVX2, FMA'
    >>> vector_extensions({"avx", "sse4_2"})
    'AVX'
    >>> vector_extensions({"asimd", "sve"})
    'NEON/ASIMD, SVE'
    """
    flags = set(flags)
    parts = []
    sub = [name for flag, name in _AVX512 if flag in flags]
    if "F" in sub:
        parts.append("AVX-512 " + "/".join(sub))
    shown = set()
    for flag, name in _OTHER:
        if flag in flags and _IMPLIED.get(name) not in shown:
            parts.append(name)
        if flag in flags:
            shown.add(name)
    if "asimd" in flags:  # ARM
        parts.append("NEON/ASIMD")
    if "sve2" in flags or "sve" in flags:
        parts.append("SVE2" if "sve2" in flags else "SVE")
    return ", ".join(parts) or "no SIMD extensions listed"


def _cpuinfo():
    """(model name, set of flags) from /proc/cpuinfo; (None, None) where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None, None
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if model is None and key in ("model name", "Model", "cpu model"):
            model = value.strip()
        elif flags is None and key in ("flags", "Features"):
            flags = set(value.split())
    return model, flags


def _llvm_cpu():
    """LLVM's name for this CPU (what the IR kernel is compiled for), or None."""
    try:
        import llvmlite.binding as llvm

        return llvm.get_host_cpu_name()
    except Exception:
        return None


def _llvm_vector_extensions():
    """The extensions from LLVM's view of the host (where /proc/cpuinfo is missing)."""
    try:
        import llvmlite.binding as llvm

        feats = llvm.get_host_cpu_features()
    except Exception:
        return None
    flags = {name.replace("-", "_") for name, on in feats.items() if on}
    flags |= {"avx512_vnni"} if "avx512vnni" in flags else set()
    flags |= {"avx512_bf16"} if "avx512bf16" in flags else set()
    flags |= {"sse4_2"} if "sse4.2" in feats and feats["sse4.2"] else set()
    flags |= {"asimd"} if "neon" in flags else set()
    return vector_extensions(flags)


_BLAS_NAMES = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}


def _blas_core():
    """NumPy's BLAS and the kernel type it picked (OpenBLAS's core type), or None."""
    try:
        from threadpoolctl import threadpool_info

        for lib in threadpool_info():
            if lib.get("user_api") == "blas":
                name = _BLAS_NAMES.get(lib.get("internal_api"), lib.get("internal_api"))
                arch = lib.get("architecture")
                return f"{name} {arch}" if arch else name
    except Exception:
        return None
    return None


def describe():
    """This machine in a few words, for the header of a benchmark's table.

    Returns
    -------
    dict
        ``cores``; ``cpu`` (model name); ``vector`` (SIMD extensions, e.g.
        ``"AVX-512 F/BW/DQ/VL/IFMA/VBMI, AVX2, FMA"``); ``llvm_cpu`` (LLVM's name for
        the CPU, what the IR kernel is compiled for); ``blas`` (NumPy's BLAS and its
        core type, e.g. ``"OpenBLAS SkylakeX"``); and ``label``, all of it in one line.
        Fields that cannot be found here (no /proc/cpuinfo, no llvmlite) are None.
    """
    import platform

    model, flags = _cpuinfo()
    cpu = model or platform.processor() or platform.machine()
    vector = vector_extensions(flags) if flags is not None else _llvm_vector_extensions()
    llvm_cpu = _llvm_cpu()
    blas = _blas_core()
    extra = "; ".join(x for x in (vector, llvm_cpu and f"LLVM {llvm_cpu}", blas) if x)
    label = f"{cpu} ({extra})" if extra else cpu
    return {"cores": os.cpu_count(), "cpu": cpu, "vector": vector, "llvm_cpu": llvm_cpu,
            "blas": blas, "label": label}
