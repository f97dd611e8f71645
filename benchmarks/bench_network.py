"""The price of the network path: seconds per Lloyd iteration on a real multi-process
cluster (a ``dask scheduler`` and three ``dask worker`` processes on 127.0.0.1, talking
TCP) against dclust's embedded local cluster, on the same data.

Run from the repository root::

    python benchmarks/bench_network.py            # 2,000,000 x 32 float32, k=64
    python benchmarks/bench_network.py --quick    # 200,000 x 16, k=16, about a minute

Both clusters read the same Zarr array (written once in this run) with the same row
chunks, persist it on their workers, and fit from the same init array with tol=0. The
figure is the *marginal* time of an iteration: a fit with ``1 + m`` iterations minus a
fit with 1, divided by ``m``, so data placement, start-up and the first-pass costs cancel
out. Each fit is repeated and the fastest kept. The centres of both clusters are checked
to be identical (same chunking, same combine tree). The ratio (process cluster / embedded)
is what a pass pays for the scheduler round trip, task messages over TCP, serialising the
per-chunk statistics and the combine tree crossing processes; on one machine loopback
TCP is the best case of a real network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def marginal_seconds(X, init, iters, repeats):
    """Fastest marginal seconds per Lloyd iteration over ``repeats`` pairs of fits."""
    import dclust

    def fit(m):
        t0 = time.perf_counter()
        km = dclust.KMeans(init.shape[0], init=init, tol=0.0, max_iter=m, cache="memory",
                           progress=False).fit(X)
        return time.perf_counter() - t0, km

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dclust.ConvergenceWarning)
        fit(1)  # warm: kernels compiled/loaded on every worker
        best = float("inf")
        km = None
        for _ in range(repeats):
            t1, _ = fit(1)
            tm, km = fit(1 + iters)
            assert km.n_iter_ == 1 + iters, km.n_iter_
            best = min(best, (tm - t1) / iters)
    return best, km


def layout(client):
    info = client.scheduler_info(n_workers=-1)["workers"].values()
    threads = sorted(w["nthreads"] for w in info)
    return f"{len(threads)} worker(s) x {threads[0]} thread(s)" if len(set(threads)) == 1 else \
        f"{len(threads)} workers, threads {threads}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small data, few iterations")
    p.add_argument("--n-samples", type=int)
    p.add_argument("--n-features", type=int)
    p.add_argument("-k", type=int)
    p.add_argument("--chunk-size", type=int, help="rows per chunk")
    p.add_argument("--iters", type=int, help="iterations timed per fit")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    n = args.n_samples or (200_000 if args.quick else 2_000_000)
    d = args.n_features or (16 if args.quick else 32)
    k = args.k or (16 if args.quick else 64)
    rows = args.chunk_size or (25_000 if args.quick else 125_000)
    iters = args.iters or (5 if args.quick else 20)
    repeats = 2 if args.quick and args.repeats == 3 else args.repeats

    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba-cache"))
    os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
    import dclust
    from dclust.testing.datasets import make_blobs
    from dclust.testing.processes import process_cluster

    tmp = tempfile.mkdtemp(prefix="dclust-bench-network-")
    path = os.path.join(tmp, "blobs.zarr")
    results = {}
    try:
        # 1. The embedded local cluster, as dclust starts it with no address.
        client = dclust.get_client(quiet=True)
        make_blobs(path, n, d, k, chunk_size=rows, seed=0)
        X = dclust.open_array(path, chunks=rows)
        init = np.asarray(X[:k].compute(), dtype=np.float64)
        Xp = client.persist(X)
        from distributed import wait

        wait(Xp)
        sec, km_local = marginal_seconds(Xp, init, iters, repeats)
        results["embedded LocalCluster"] = (sec, layout(client))
        del Xp
        dclust.shutdown()

        # 2. Three `dask worker` processes and a `dask scheduler` on loopback TCP.
        cores = os.cpu_count() or 1
        pc = process_cluster(3, nthreads=max(1, cores // 3), memory_limit="4GiB",
                             directory=os.path.join(tmp, "procs"))
        try:
            client = dclust.connect(pc.address, quiet=True)
            X = dclust.open_array(path, chunks=rows)
            Xp = client.persist(X)
            wait(Xp)
            sec, km_net = marginal_seconds(Xp, init, iters, repeats)
            results["3 dask worker processes (tcp://127.0.0.1)"] = (sec, layout(client))
            del Xp
            client.close()
        finally:
            pc.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    same = np.array_equal(km_local.cluster_centers_, km_net.cluster_centers_)
    chunks = -(-n // rows)
    print(f"bench_network: {n:,} x {d} float32, k={k}, {chunks} chunks of {rows:,} rows, "
          f"{iters} timed iterations per fit, best of {repeats}; {os.cpu_count()} CPU cores")
    base = results["embedded LocalCluster"][0]
    print(f"{'cluster':45s} {'layout':28s} {'s/iteration':>12s} {'ratio':>7s}")
    for name, (sec, lay) in results.items():
        print(f"{name:45s} {lay:28s} {sec:12.4f} {sec / base:7.2f}")
    print(f"network-path price: {results['3 dask worker processes (tcp://127.0.0.1)'][0] / base:.2f}x "
          f"the embedded cluster's time per Lloyd iteration; centres identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
