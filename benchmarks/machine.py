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


def describe():
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu}
