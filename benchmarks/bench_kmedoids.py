"""k-medoids at scale: dclust's FastCLARA + refinement against FasterPAM on a subsample.

Run from the repository root::

    python benchmarks/bench_kmedoids.py             # n = 1,000,000, d = 32, k = 100
    python benchmarks/bench_kmedoids.py --quick     # n = 100,000, d = 16, k = 20; a minute or two

What it measures, on the same float32 blobs (``k`` overlapping Gaussian clusters, persisted
on dclust's embedded local cluster):

- ``clara``: ``dclust.KMedoids(method="clara", refine=False)``: FastCLARA alone (5 samples of
  80 + 4k rows, each solved with FasterPAM, every candidate scored on the full data);
- ``clara+refine``: the same run followed by refinement passes on the full data;
- ``fasterpam-sub``: the reference ``kmedoids.fasterpam`` (all cores) on the largest uniform
  subsample whose float64 ``m x m`` dissimilarity matrix fits in the memory budget dclust's
  own ``method="fasterpam"`` uses (half the available memory, or ``--max-memory``); its
  medoids are then scored on the full data with one dclust pass.

Losses are totals of euclidean distances over all ``n`` rows. Printed ratios: each loss to
the refined dclust loss, the refinement's gain over CLARA alone, each time to the refined
dclust fit, and dclust's seconds per pass against this machine's limit for the distance
work of a pass (``2 n k d`` FLOP at the measured float64 GEMM peak, or reading ``n d 4``
bytes, whichever is slower).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

FULL = dict(n=1_000_000, d=32, k=100)
QUICK = dict(n=100_000, d=16, k=20)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def dgemm_peak(threads=None, size=2048, repeats=3):
    """Best FLOP/s of a square float64 GEMM (the kernels compute distances in float64)."""
    from threadpoolctl import threadpool_limits

    threads = threads or os.cpu_count()
    a = np.random.default_rng(0).random((size, size))
    b = np.random.default_rng(1).random((size, size))
    out = np.empty((size, size))
    best = np.inf
    with threadpool_limits(threads, user_api="blas"):
        np.matmul(a, b, out=out)
        for _ in range(repeats):
            t = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def make_data(n, d, k, seed=0):
    """Overlapping blobs (std 2 in a box of side 20), eight row-chunks."""
    from dclust.testing import make_blobs_array

    X, _ = make_blobs_array(n, d, k, cluster_std=2.0, center_box=(-10, 10), seed=seed,
                            chunk_size=-(-n // 8), dtype="float32")
    return X


def run_dclust(Xp, k, seed, refine):
    import dclust

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = dclust.KMedoids(k, method="clara", refine=refine, random_state=seed,
                             progress=False).fit(Xp)
    sec = time.perf_counter() - t0
    return km, sec


def run_fasterpam_subsample(Xp, k, seed, m, metric="euclidean"):
    """kmedoids.fasterpam on m rows drawn uniformly; medoids scored on the full data."""
    import kmedoids

    from dclust.algorithms.kmedoids import cost_aggregation
    from dclust.kernels.metrics import pairwise_distances
    from dclust.reductions.engine import run_pass

    n = Xp.shape[0]
    rows = np.sort(np.random.default_rng([seed, 3]).choice(n, m, replace=False))
    S = np.ascontiguousarray(Xp[rows].compute(), dtype=np.float64)
    t0 = time.perf_counter()
    D = pairwise_distances(S, S, metric)
    t_matrix = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = kmedoids.fasterpam(D, k, init="random", random_state=seed % (2**31 - 1), max_iter=100)
    t_pam = time.perf_counter() - t0
    del D
    gc.collect()
    med = S[np.asarray(res.medoids, dtype=np.int64)]
    t0 = time.perf_counter()
    loss = float(run_pass(Xp, {"c": cost_aggregation([med], metric)})["c"]["cost"][0])
    t_score = time.perf_counter() - t0
    return {"m": m, "matrix_s": t_matrix, "fasterpam_s": t_pam, "score_s": t_score,
            "time_s": t_matrix + t_pam, "sample_loss": float(res.loss), "loss": loss,
            "n_iter": int(res.n_iter)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="n=100,000, d=16, k=20, subsample <= 8,000")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--d", type=int, default=None)
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-memory", type=float, default=None,
                   help="bytes for the subsample's matrix (default: half the available memory)")
    p.add_argument("--max-sub", type=int, default=None,
                   help="cap on the FasterPAM subsample size (default: none; 8,000 with --quick)")
    p.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = p.parse_args(argv)
    spec = dict(QUICK if args.quick else FULL)
    for key in ("n", "d", "k"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    n, d, k = spec["n"], spec["d"], spec["k"]
    max_sub = args.max_sub if args.max_sub is not None else (8_000 if args.quick else None)

    import dclust
    from distributed import wait

    from dclust.runtime.memory import memory_budget

    info = machine.describe()
    peak = dgemm_peak()
    bw = machine.read_bandwidth()
    info.update(dgemm_peak_gflops=peak / 1e9, read_bandwidth_gbs=bw / 1e9)
    log(f"machine: {info['cores']} cores, {info['cpu']}, dgemm peak {peak / 1e9:.0f} GFLOP/s, "
        f"read bandwidth {bw / 1e9:.1f} GB/s")
    client = dclust.get_client()
    log(f"data: {n:,} x {d} float32 blobs, k={k}")
    Xp = client.persist(make_data(n, d, k, seed=args.seed))
    wait(Xp)

    # Warm-up (compiled kernels, thread pools) on a slice, untimed.
    run_dclust(Xp[: min(n, 20_000)], k, args.seed, True)

    alone, t_alone = run_dclust(Xp, k, args.seed, refine=False)
    log(f"  clara          {t_alone:8.2f} s  loss {alone.inertia_:.6g}  ({alone.n_passes_} passes)")
    km, t_ref = run_dclust(Xp, k, args.seed, refine=True)
    assert km.clara_inertia_ == alone.inertia_
    log(f"  clara+refine   {t_ref:8.2f} s  loss {km.inertia_:.6g}  ({km.n_passes_} passes, "
        f"{km.n_iter_} refinement passes)")
    limit = machine.limit_seconds(n, d, k, 4, peak, bw)

    budget = memory_budget(args.max_memory)
    m = int(math.isqrt(budget // 8))
    m = min(m, n, max_sub) if max_sub else min(m, n)
    log(f"  fasterpam on the largest subsample in {budget / 2**30:.1f} GiB: m = {m:,}")
    gc.collect()
    try:
        sub = run_fasterpam_subsample(Xp, k, args.seed, m)
        log(f"  fasterpam-sub  {sub['time_s']:8.2f} s  (matrix {sub['matrix_s']:.2f} s, "
            f"FasterPAM {sub['fasterpam_s']:.2f} s)  full-data loss {sub['loss']:.6g}")
    except MemoryError as e:  # reported, not fatal
        log(f"  fasterpam-sub failed: {e}")
        sub = None

    res = {
        "n": n, "d": d, "k": k, "seed": args.seed, "pass_limit_s": limit,
        "clara": {"time_s": t_alone, "loss": alone.inertia_, "n_passes": alone.n_passes_},
        "clara_refine": {"time_s": t_ref, "loss": km.inertia_, "clara_loss": km.clara_inertia_,
                         "n_passes": km.n_passes_, "n_refine": km.n_iter_,
                         "s_per_pass": t_ref / km.n_passes_},
        "fasterpam_subsample": sub,
    }
    base = km.inertia_
    print()
    print(f"dclust k-medoids benchmark, {dt.date.today()}, {info['cores']} cores ({info['cpu']}), "
          f"dgemm peak {peak / 1e9:.0f} GFLOP/s, read bandwidth {bw / 1e9:.1f} GB/s")
    print(f"data: {n:,} x {d} float32 blobs, k={k}, euclidean; losses on all {n:,} rows")
    print("| method | time (s) | loss | loss / clara+refine | time / clara+refine |")
    print("|---|---:|---:|---:|---:|")
    print(f"| dclust clara+refine | {t_ref:.2f} | {base:.6g} | 1.000 | 1.00 |")
    print(f"| dclust clara alone | {t_alone:.2f} | {alone.inertia_:.6g} | "
          f"{alone.inertia_ / base:.4f} | {t_alone / t_ref:.2f} |")
    if sub is not None:
        print(f"| kmedoids.fasterpam on {sub['m']:,} rows | {sub['time_s']:.2f} | {sub['loss']:.6g} | "
              f"{sub['loss'] / base:.4f} | {sub['time_s'] / t_ref:.2f} |")
    print(f"\nrefinement: {km.n_iter_} passes lower CLARA's loss by "
          f"{100 * (1 - base / alone.inertia_):.2f} %; {km.n_passes_} passes in all, "
          f"{t_ref / km.n_passes_:.3f} s per pass = {t_ref / km.n_passes_ / limit:.1f} x this "
          f"machine's limit for a pass's distances ({limit * 1e3:.0f} ms)")
    if sub is not None:
        print(f"fasterpam subsample: matrix {sub['matrix_s']:.2f} s + FasterPAM {sub['fasterpam_s']:.2f} s "
              f"({sub['n_iter']} iterations); its loss on the subsample scaled to n: "
              f"{sub['sample_loss'] * n / sub['m']:.6g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "date": str(dt.date.today()), "results": res}, f, indent=1)


if __name__ == "__main__":
    main()
