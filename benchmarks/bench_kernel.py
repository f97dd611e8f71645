"""One core, no Dask: dclust's Lloyd chunk kernel against scikit-learn's Lloyd iteration.

    python benchmarks/bench_kernel.py                 # d/k pairs of workloads a, b, c, big
    python benchmarks/bench_kernel.py --n 500000 --shapes 64x256

Both run with one BLAS/OpenMP thread on the same float32 blobs from the same centres;
scikit-learn's figure is the marginal time of an iteration (fit with 7 minus fit with 2
iterations, divided by 5), dclust's the best of 3 calls of ``lloyd_partial`` on the whole
array (the work of one pass over one chunk). This separates the kernel from what Dask
adds per pass (see bench_kmeans.py for whole iterations).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500_000)
    p.add_argument("--shapes", default="32x16,64x256,128x4096,32x64", help="comma-separated DxK")
    args = p.parse_args(argv)

    from sklearn.cluster import KMeans

    from dclust.kernels.lloyd import lloyd_partial
    from dclust.testing import make_blobs_array

    warnings.simplefilter("ignore")
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
