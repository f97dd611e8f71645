"""Product / IVF quantization: dclust against FAISS on the same data, as ratios.

Prints, for n x d float32 data (correlated features, as embeddings have):

* PQ reconstruction MSE of ``dclust.ProductQuantizer`` over FAISS's
  ``ProductQuantizer`` trained in RAM with the same M and bits, FAISS default (at most
  256 rows per centre sampled) and FAISS on all rows; OPQ over plain PQ;
* training time per iteration: one dclust pass (all M sub-quantizers) over FAISS's
  time per k-means iteration on a RAM sample of the same size (its training time / 25);
* IVF-PQ recall@10 (``to_faiss()`` + ``add_to_faiss``) minus that of an
  ``IndexIVFPQ`` trained by FAISS itself, same n_lists, M, bits and nprobe;
* with ``--outofcore``: a PQ fit streamed from a Zarr array 4x the workers' memory
  (worker processes with a memory limit), which must complete.

Full run (the issue's sizes)::

    python benchmarks/bench_pq.py --n 1000000 --d 64 --m 16 --bits 8 --n-lists 1024 \\
        --outofcore --worker-memory 512MiB

Quick check: ``python benchmarks/bench_pq.py --quick``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402


def make_data(n, d, seed=0):
    """Gaussian clusters with correlated, unequally scaled features (embedding-like)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.geomspace(1.0, 0.05, d)[:, None]
    centres = rng.normal(scale=2.0, size=(256, d))
    X = np.empty((n, d), np.float32)
    step = 1 << 18
    for s in range(0, n, step):
        e = min(n, s + step)
        X[s:e] = (centres[rng.integers(0, 256, e - s)] + rng.normal(size=(e - s, d))) @ mix
    return X


def mse(X, rec):
    return float(((X.astype(np.float64) - rec) ** 2).sum(1).mean())


def faiss_pq(faiss, X, M, bits, all_rows):
    pq = faiss.ProductQuantizer(X.shape[1], M, bits)
    pq.verbose = False
    if all_rows:
        pq.cp.max_points_per_centroid = 1 << 30
    t = time.perf_counter()
    pq.train(X)
    seconds = time.perf_counter() - t
    return mse(X, pq.decode(pq.compute_codes(X))), seconds, pq.cp.niter


def recall_at_10(I, gt):
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, gt)]))


def outofcore(args, say):
    import zarr
    from dask.utils import parse_bytes

    import dclust
    from dclust.testing.processes import process_cluster

    limit = parse_bytes(args.worker_memory)
    workers = 2
    n = int(4 * workers * limit // (4 * args.d)) + 1
    chunk = max(1, (16 << 20) // (4 * args.d))
    directory = tempfile.mkdtemp(prefix="dclust-pq-")
    path = os.path.join(directory, "x.zarr")
    z = zarr.create_array(store=path, shape=(n, args.d), chunks=(chunk, args.d), dtype="float32")
    for s in range(0, n, chunk * 16):
        e = min(n, s + chunk * 16)
        z[s:e] = make_data(e - s, args.d, seed=s)
    say(f"out-of-core: {n:,} x {args.d} float32 = {n * args.d * 4 / 2**20:,.0f} MiB, "
        f"{workers} workers x {limit / 2**20:.0f} MiB (data / memory = "
        f"{n * args.d * 4 / (workers * limit):.1f})")
    cluster = process_cluster(workers, nthreads=1, memory_limit=args.worker_memory,
                              directory=os.path.join(directory, "procs"))
    try:
        dclust.connect(cluster.address, quiet=True)
        t = time.perf_counter()
        est = dclust.ProductQuantizer(args.m, args.bits, max_iter=args.ooc_iter, tol=0.0,
                                      random_state=0, progress=False, cache="auto")
        est.fit(dclust.open_array(path, chunks=chunk))
        seconds = time.perf_counter() - t
        say(f"  completed: {est.n_iter_} iterations, {est.n_passes_} passes, mse {est.mse_:.5g}, "
            f"{seconds:.1f} s ({seconds / est.n_passes_:.2f} s per pass)")
    finally:
        dclust.shutdown()
        cluster.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--n-lists", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--outofcore", action="store_true")
    ap.add_argument("--worker-memory", default="512MiB")
    ap.add_argument("--ooc-iter", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="n=60k d=32 M=8 n_lists=64, out-of-core with 24 MiB workers")
    args = ap.parse_args()
    if args.quick:
        args.n, args.d, args.m, args.n_lists, args.n_queries = 60_000, 32, 8, 64, 200
        args.worker_memory, args.ooc_iter = "24MiB", 2
    say = lambda *a: print(*a, flush=True)  # noqa: E731

    import dask.array as da
    import faiss

    import dclust
    from dclust import IVFQuantizer, ProductQuantizer, add_to_faiss

    warnings.simplefilter("ignore")
    say(f"machine: {machine.describe()}, faiss {faiss.__version__}, "
        f"faiss threads {faiss.omp_get_max_threads()}")
    X = make_data(args.n, args.d)
    Q = make_data(args.n_queries, args.d, seed=99)
    Xd = da.from_array(X, chunks=(max(1, (32 << 20) // (4 * args.d)), args.d))
    M, bits = args.m, args.bits
    say(f"data: {args.n:,} x {args.d} float32; M={M}, bits={bits}")

    # ---- PQ ---------------------------------------------------------------------------
    dclust.get_client()
    t = time.perf_counter()
    pq = ProductQuantizer(M, bits, tol=0.0, max_iter=25, random_state=0, progress=False).fit(Xd)
    t_pq = time.perf_counter() - t
    f_mse, f_sec, f_iter = faiss_pq(faiss, X, M, bits, all_rows=False)
    fa_mse, fa_sec, _ = faiss_pq(faiss, X, M, bits, all_rows=True)
    say(f"PQ mse: dclust {pq.mse_:.5g} | FAISS default {f_mse:.5g} (ratio {pq.mse_ / f_mse:.4f}) "
        f"| FAISS all rows {fa_mse:.5g} (ratio {pq.mse_ / fa_mse:.4f})")
    per_pass = t_pq / pq.n_passes_
    say(f"PQ time per iteration: dclust {per_pass:.3f} s (one pass, {pq.n_passes_} passes, "
        f"{t_pq:.1f} s) | FAISS all rows in RAM {fa_sec / f_iter:.3f} s (ratio "
        f"{per_pass / (fa_sec / f_iter):.2f}) | FAISS default sample {f_sec / f_iter:.3f} s")
    t = time.perf_counter()
    opq = ProductQuantizer(M, bits, opq=True, tol=0.0, random_state=0, progress=False).fit(Xd)
    t_opq = time.perf_counter() - t
    say(f"OPQ mse: {opq.mse_:.5g}, OPQ / PQ = {opq.mse_ / pq.mse_:.4f} ({t_opq:.1f} s, "
        f"{opq.n_passes_} passes)")

    # ---- IVF-PQ ------------------------------------------------------------------------
    flat = faiss.IndexFlatL2(args.d)
    flat.add(X)
    gt = flat.search(Q, 10)[1]
    t = time.perf_counter()
    ivf = IVFQuantizer(args.n_lists, pq=ProductQuantizer(M, bits), random_state=0,
                       progress=False).fit(Xd)
    t_ivf = time.perf_counter() - t
    index = add_to_faiss(ivf.to_faiss(), Xd, ivf)
    index.nprobe = args.nprobe
    r_d = recall_at_10(index.search(Q, 10)[1], gt)
    t = time.perf_counter()
    ref = faiss.IndexIVFPQ(faiss.IndexFlatL2(args.d), args.d, args.n_lists, M, bits)
    ref.train(X)
    t_ref = time.perf_counter() - t
    ref.add(X)
    ref.nprobe = args.nprobe
    r_f = recall_at_10(ref.search(Q, 10)[1], gt)
    say(f"IVF-PQ recall@10 (n_lists={args.n_lists}, nprobe={args.nprobe}): dclust {r_d:.4f} | "
        f"FAISS {r_f:.4f} | difference {r_d - r_f:+.4f} (training {t_ivf:.1f} s vs {t_ref:.1f} s)")
    dclust.shutdown()
    if args.outofcore:
        outofcore(args, say)


if __name__ == "__main__":
    main()
