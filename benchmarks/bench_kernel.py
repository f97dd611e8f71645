"""One core, no Dask: dclust's Lloyd chunk kernel against scikit-learn's Lloyd iteration.

    python benchmarks/bench_kernel.py                 # d/k pairs of workloads a, b, c, big
    python benchmarks/bench_kernel.py --n 500000 --shapes 64x256
    python benchmarks/bench_kernel.py --widths        # IR kernel: AVX2 form vs this CPU's

Both run with one BLAS/OpenMP thread on the same float32 blobs from the same centres;
scikit-learn's figure is the marginal time of an iteration (fit with 7 minus fit with 2
iterations, divided by 5), dclust's the best of 3 calls of ``lloyd_partial`` on the whole
array (the work of one pass over one chunk). This separates the kernel from what Dask
adds per pass (see bench_kmeans.py for whole iterations).

``--widths`` times the nearest-centre assignment alone (no sums) of the IR kernel
(:mod:`dclust.kernels._irassign`) in its AVX2 form (256-bit vectors, blocking for 16
registers) and in the form chosen for this CPU (512-bit vectors and blocking for 32
registers where it has AVX-512), alternately in the same run, ``--repeats`` times each;
it prints medians, GFLOP/s (``2 n k d`` per assignment) and their ratio to this machine's
one-thread sgemm peak, and checks that both forms give the same labels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402


def _assign_seconds(X, C):
    """Seconds of one nearest-centre assignment of every row of ``X`` (no sums, no
    distances), and its labels."""
    from dclust.kernels import _numba
    from dclust.kernels import lloyd as L

    X, C64, Cm, cnorm = L._prepare_numpy(X, C)
    tile = L.tile_rows(C64.shape[0])
    GT, *ir = L._assign_args(X, Cm, cnorm, tile)
    labels = np.empty(X.shape[0], dtype=np.int64)
    t = time.perf_counter()
    _numba.lloyd_chunk(L._gemm(X), X, Cm, cnorm, C64, L._NO_F64, tile, GT, labels, L._NO_SUMS,
                       L._NO_F64, L._NO_F64, L._NO_F64, L._NO_I64, L._NO_I64, False, *ir)
    return time.perf_counter() - t, labels


def widths(args):
    from dclust.kernels import _irassign

    peak = machine.sgemm_peak(1)
    forms = {"AVX2 form": (256, 16), "this CPU's": None}
    print(f"IR kernel, 1 thread, float32; {machine.describe()['label']}; host vector width "
          f"{_irassign.vector_bits()} bits; sgemm peak (1 thread) {peak / 1e9:.0f} GFLOP/s; "
          f"medians of {args.repeats}")
    print("| d | k | n | chosen (bits, regs) | AVX2 form ms | this CPU's ms | speed-up "
          "| GFLOP/s (AVX2 / this) | of sgemm peak |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for shape in args.shapes.split(","):
        d, k = (int(v) for v in shape.split("x"))
        n = args.n if k < 1024 else args.n // 10
        X = rng.normal(size=(n, d)).astype(np.float32)
        C = rng.normal(size=(k, d))
        times = {f: [] for f in forms}
        labels = {}
        with threadpool_limits(1):
            for rep in range(args.repeats + 1):
                for f, forced in forms.items():
                    _irassign._forced = forced
                    try:
                        s, labels[f] = _assign_seconds(X, C)
                    finally:
                        _irassign._forced = None
                    if rep:  # the first round compiles
                        times[f].append(s)
        same = np.array_equal(*labels.values())
        old, new = (np.median(v) for v in times.values())
        flops = 2.0 * n * k * d
        chosen = _irassign._bits_for(np.dtype(np.float32), k)
        print(f"| {d} | {k} | {n:,} | {chosen} | {old * 1e3:.1f} | {new * 1e3:.1f} | "
              f"{old / new:.2f}x | {flops / old / 1e9:.0f} / {flops / new / 1e9:.0f} | "
              f"{flops / old / peak:.2f} / {flops / new / peak:.2f} |"
              + ("" if same else " LABELS DIFFER"), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500_000)
    p.add_argument("--shapes", default="32x16,64x256,128x4096,32x64", help="comma-separated DxK")
    p.add_argument("--widths", action="store_true",
                   help="time the IR kernel's AVX2 form against the one chosen for this CPU")
    p.add_argument("--repeats", type=int, default=7, help="--widths: timed calls per form")
    args = p.parse_args(argv)

    if args.widths:
        return widths(args)

    from sklearn.cluster import KMeans

    from dclust.kernels.lloyd import lloyd_partial
    from dclust.testing import make_blobs_array

    warnings.simplefilter("ignore")
    print(f"machine: {machine.describe()['label']}")
    print("| d | k | n | sklearn ms/iter | dclust kernel ms | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        d, k = (int(v) for v in shape.split("x"))
        n = args.n if k < 1024 else args.n // 10
        X = np.ascontiguousarray(
            make_blobs_array(n, d, k, cluster_std=4.0, center_box=(-5, 5), seed=0)[0].compute(scheduler="sync")
        )
        C = X[np.sort(np.random.default_rng(0).choice(n, k, replace=False))].astype(np.float64)
        with threadpool_limits(1):
            ts = []
            for it in (2, 7):
                t = time.perf_counter()
                KMeans(k, init=C, n_init=1, max_iter=it, tol=0).fit(X)
                ts.append(time.perf_counter() - t)
            sk = (ts[1] - ts[0]) / 5
            lloyd_partial(X[:100], C, None, n_far=32)
            best = np.inf
            for _ in range(3):
                t = time.perf_counter()
                lloyd_partial(X, C, None, n_far=32)
                best = min(best, time.perf_counter() - t)
        print(f"| {d} | {k} | {n:,} | {sk * 1e3:.1f} | {best * 1e3:.1f} | {best / sk:.2f} |", flush=True)


if __name__ == "__main__":
    main()
