"""Mini-batch k-means: dclust vs scikit-learn's MiniBatchKMeans vs full dclust KMeans.

One run, same data (n x d float32 blobs, k clusters, shuffled), same batch size:

* dclust.MiniBatchKMeans on the NumPy array (the loop runs in this process);
* sklearn.cluster.MiniBatchKMeans on the same array;
* dclust.MiniBatchKMeans on a dask array of the same data (batches gathered from the
  workers' chunks);
* full dclust.KMeans (the inertia reference).

Every model's inertia is measured over all rows afterwards (not part of the timings).
Prints time ratios, inertia ratios to full KMeans and the fraction of rows each
mini-batch fit read. "Done when": inertia within 2% of KMeans, at most 20% of the rows
read, faster than scikit-learn's.

    python benchmarks/bench_minibatch.py            # n=4M d=32 k=64, batch 4096
    python benchmarks/bench_minibatch.py --quick    # a small size, to check it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402


def _inertia(X, C):
    from dclust.kernels.lloyd import nearest_center

    total = 0.0
    for s in range(0, X.shape[0], 1 << 18):
        _, d = nearest_center(X[s:s + (1 << 18)], np.asarray(C, dtype=np.float64))
        total += float(d.sum())
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4_000_000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="n=200k d=16 k=16")
    ap.add_argument("--no-dask", action="store_true", help="skip the dask-array fit")
    ap.add_argument("--tol", type=float, default=1e-4, help="tol of the '(tol)' rows")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.d, args.k = 200_000, 16, 16

    import dask.array as da
    from sklearn.cluster import MiniBatchKMeans as SKMiniBatchKMeans

    import dclust

    print(machine.describe())
    client = dclust.get_client()
    rng = np.random.default_rng(args.seed)
    centers = rng.normal(scale=4.0, size=(args.k, args.d))
    X = (centers[rng.integers(0, args.k, args.n)]
         + rng.normal(size=(args.n, args.d))).astype(np.float32)
    print(f"data: n={args.n:,} d={args.d} k={args.k} float32, batch_size={args.batch_size}")

    kw = dict(batch_size=args.batch_size, random_state=args.seed, compute_labels=False)
    # Warm the compiled kernels outside the timings.
    dclust.MiniBatchKMeans(args.k, **{**kw, "max_iter": 1}).fit(X[: 20 * args.k])

    rows = []

    def timed(name, fit, read=None):
        t = time.perf_counter()
        model = fit()
        sec = time.perf_counter() - t
        inertia = _inertia(X, model.cluster_centers_)
        frac = None if read is None else read(model) / args.n
        rows.append((name, sec, inertia, frac))
        print(f"  {name:<34} {sec:8.2f} s  inertia {inertia:.6g}"
              + ("" if frac is None else f"  rows read {100 * frac:.1f}%"), flush=True)
        return model

    timed("dclust.MiniBatchKMeans (numpy)",
          lambda: dclust.MiniBatchKMeans(args.k, **kw).fit(X), lambda m: m.n_rows_read_)
    # scikit-learn's tol=0.0 default leaves only the no-improvement rule, which batch noise
    # keeps alive long after a good start; tol stops once the centres settle.
    timed("dclust.MiniBatchKMeans (numpy, tol)",
          lambda: dclust.MiniBatchKMeans(args.k, tol=args.tol, **kw).fit(X),
          lambda m: m.n_rows_read_)
    timed("sklearn MiniBatchKMeans",
          lambda: SKMiniBatchKMeans(args.k, **kw).fit(X),
          lambda m: m.n_steps_ * args.batch_size + 3 * args.batch_size)
    timed("sklearn MiniBatchKMeans (tol)",
          lambda: SKMiniBatchKMeans(args.k, tol=args.tol, **kw).fit(X),
          lambda m: m.n_steps_ * args.batch_size + 3 * args.batch_size)
    if not args.no_dask:
        Xd = client.persist(da.from_array(X, chunks=(max(1, args.n // 16), args.d)))
        timed("dclust.MiniBatchKMeans (dask, tol)",
              lambda: dclust.MiniBatchKMeans(args.k, tol=args.tol, **kw).fit(Xd),
              lambda m: m.n_rows_read_)
    timed("dclust.KMeans (full, reference)",
          lambda: dclust.KMeans(args.k, random_state=args.seed, progress=False).fit(X))

    ref = rows[-1][2]
    sk = rows[2][1]
    print("\nratios (inertia / full KMeans, time / sklearn MiniBatchKMeans):")
    for name, sec, inertia, frac in rows:
        line = f"  {name:<34} inertia x{inertia / ref:.4f}  time x{sec / sk:.3f}"
        if frac is not None:
            line += f"  read {100 * frac:.1f}% of rows"
        print(line)
    for ours in rows[:2]:
        ok = (ours[2] <= 1.02 * ref, ours[3] <= 0.20, ours[1] < sk)
        print(f"done-when ({ours[0]}): inertia within 2%: {ok[0]}, <=20% rows read: {ok[1]}, "
              f"faster than sklearn: {ok[2]}")


if __name__ == "__main__":
    main()
