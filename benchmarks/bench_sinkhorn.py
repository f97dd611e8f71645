"""Seconds per Sinkhorn iteration: dclust's distributed log-domain Sinkhorn against POT.

Run from the repository root::

    python benchmarks/bench_sinkhorn.py            # n=200,000 d=32 k=256, and 1M x 64 (dclust)
    python benchmarks/bench_sinkhorn.py --quick    # the same at 1/8 size, a minute or two
    python benchmarks/bench_sinkhorn.py --json out.json

Workloads (issue 5): ``s`` = 200,000 x 32 float32 rows, k = 256 centres; ``l`` =
1,000,000 x 64, k = 256, dclust alone. Balanced transport, ``reg = 0.05`` of the cost
scale, no annealing, a fixed number of iterations (tol=0).

Systems:

- ``dclust`` (points): every pass recomputes the ``n x k`` costs from X and the centres
  (GEMM) and runs the fused row log-sum-exp / column (max, sum-exp) kernel; nothing
  ``n x k`` is stored. X is persisted on the embedded local cluster.
- ``dclust`` (costs): the same iteration reading the dense ``n x k`` cost matrix.
- POT ``ot.bregman.sinkhorn_log`` (log domain) and ``ot.sinkhorn`` (scaling form,
  ``sinkhorn_knopp``) on the same dense in-memory float64 cost matrix.
- ``read``: one plain pass of dclust over X (sum of the rows), the floor of a pass.

The figure is the marginal time of an iteration: a run of ``2 + m`` iterations minus a
run of 2, divided by ``m`` (start-up, data placement and set-up cancel). Ratios are
printed side by side; absolute times are noise on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

WORKLOADS = {"s": dict(n=200_000, d=32, k=256), "l": dict(n=1_000_000, d=64, k=256)}
REG = 0.05


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def marginal(run, m, repeats):
    """Seconds per iteration: median over ``repeats`` of (run(2 + m) - run(2)) / m."""
    run(2)
    diffs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(2)
        t2 = time.perf_counter() - t0
        t0 = time.perf_counter()
        run(2 + m)
        tm = time.perf_counter() - t0
        diffs.append((tm - t2) / m)
    return float(np.median(diffs))


def make_problem(n, d, k, seed=0, chunks=8):
    """Overlapping float32 blobs (persisted, ``chunks`` row-chunks) and k centres."""
    import dask.array as da

    from dclust.testing import make_blobs_array

    X, _ = make_blobs_array(n, d, k, cluster_std=4.0, center_box=(-5, 5), seed=seed,
                            chunk_size=-(-n // chunks), dtype="float32")
    X = X.persist()
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, k, replace=False))
    C = np.asarray(X[rows].compute(), dtype=np.float64)
    assert isinstance(X, da.Array)
    return X, C


def dense_costs(X, C, scale):
    """The n x k float64 cost matrix ``||x - c||^2 / scale`` (for POT and dclust-costs)."""
    Xn = np.asarray(X.compute(), dtype=np.float64)
    M = (Xn * Xn).sum(1)[:, None] - 2 * Xn @ C.T + (C * C).sum(1)[None, :]
    np.maximum(M, 0, out=M)
    M /= scale
    return M


def run_dclust_points(X, C, scale, m, repeats):
    from dclust.algorithms.sinkhorn import solve_sinkhorn
    from dclust.kernels.sinkhorn import SinkhornState

    n, k = X.shape[0], C.shape[0]
    b = np.full(k, 1.0 / k)
    st = SinkhornState(kind="points", g=np.zeros(k), eps=REG, centers=C, scale=scale,
                       log_mass=-math.log(n))

    def run(it):
        sol = solve_sinkhorn(X, None, st, b, reg=REG, anneal=False, max_iter=it, tol=0.0)
        assert sol.n_iter == it

    return marginal(run, m, repeats)


def run_dclust_costs(Md, m, repeats):
    from dclust.algorithms.sinkhorn import solve_sinkhorn
    from dclust.kernels.sinkhorn import SinkhornState

    n, k = Md.shape
    b = np.full(k, 1.0 / k)
    st = SinkhornState(kind="costs", g=np.zeros(k), eps=REG, log_mass=-math.log(n))

    def run(it):
        solve_sinkhorn(Md, None, st, b, reg=REG, anneal=False, max_iter=it, tol=0.0)

    return marginal(run, m, repeats)


def run_read(X, m, repeats):
    from dclust.reductions.engine import Aggregation, run_pass

    agg = Aggregation("read", lambda Xb, w, ctx: Xb.sum(axis=0, dtype=np.float64),
                      lambda parts: sum(parts))

    def run(it):
        for _ in range(it):
            run_pass(X, {"r": agg}, name="bench-read")

    return marginal(run, m, repeats)


def run_pot(M, method, m, repeats):
    import ot

    n, k = M.shape
    a = np.full(n, 1.0 / n)
    b = np.full(k, 1.0 / k)
    fn = ot.bregman.sinkhorn_log if method == "log" else ot.bregman.sinkhorn_knopp

    def run(it):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(a, b, M, REG, numItermax=it, stopThr=0.0)

    return marginal(run, m, repeats)


def workload(name, n, d, k, *, m, repeats, peers):
    import dask.array as da

    log(f"workload {name}: n={n:,} d={d} k={k}")
    X, C = make_problem(n, d, k)
    Xc = X.compute()
    var = Xc.astype(np.float64).var(axis=0).sum()
    scale = 2.0 * float(var)
    del Xc
    out = {"workload": name, "n": n, "d": d, "k": k, "reg": REG, "m": m}
    out["read_s"] = run_read(X, m, repeats)
    log(f"  read pass       {out['read_s'] * 1e3:9.1f} ms")
    out["dclust_points_s"] = run_dclust_points(X, C, scale, m, repeats)
    log(f"  dclust (points) {out['dclust_points_s'] * 1e3:9.1f} ms / iteration")
    if peers:
        M = dense_costs(X, C, scale)
        Md = da.from_array(M, chunks=(X.chunks[0], k)).persist()
        out["dclust_costs_s"] = run_dclust_costs(Md, m, repeats)
        log(f"  dclust (costs)  {out['dclust_costs_s'] * 1e3:9.1f} ms / iteration")
        del Md
        out["pot_log_s"] = run_pot(M, "log", max(2, m // 2), 1)
        log(f"  POT sinkhorn_log {out['pot_log_s'] * 1e3:8.1f} ms / iteration")
        out["pot_scaling_s"] = run_pot(M, "scaling", m, repeats)
        log(f"  POT sinkhorn    {out['pot_scaling_s'] * 1e3:9.1f} ms / iteration")
        del M
    return out


def table(results):
    lines = ["| workload | n x d, k | read pass (ms) | dclust points (ms/it) | dclust costs (ms/it) "
             "| POT log (ms/it) | POT scaling (ms/it) | POT log / dclust | POT scaling / dclust "
             "| dclust / read |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        dp = r["dclust_points_s"]
        f = lambda key: f"{r[key] * 1e3:.1f}" if key in r else "-"  # noqa: E731
        ratio = lambda key: f"{r[key] / dp:.2f}" if key in r else "-"  # noqa: E731
        lines.append(
            f"| {r['workload']} | {r['n']:,} x {r['d']}, {r['k']} | {f('read_s')} | {f('dclust_points_s')} "
            f"| {f('dclust_costs_s')} | {f('pot_log_s')} | {f('pot_scaling_s')} | {ratio('pot_log_s')} "
            f"| {ratio('pot_scaling_s')} | {dp / r['read_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1/8 of the sizes")
    p.add_argument("--workloads", default="s,l")
    p.add_argument("--iters", type=int, default=6, help="m: marginal iterations (default 6)")
    p.add_argument("--repeats", type=int, default=3, help="timed pairs of runs (median)")
    p.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = p.parse_args(argv)
    scale = 8 if args.quick else 1

    import dclust

    info = machine.describe()
    dclust.get_client()
    results = []
    for w in args.workloads.split(","):
        spec = dict(WORKLOADS[w])
        spec["n"] //= scale
        results.append(workload(w, **spec, m=args.iters, repeats=args.repeats, peers=(w == "s")))
    print()
    print(f"dclust Sinkhorn benchmark, {info['cores']} cores ({info['cpu']}), reg={REG}, "
          f"balanced, float32 X, float64 potentials{' (--quick: n / 8)' if args.quick else ''}")
    print(table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "results": results}, fh, indent=2)
    dclust.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
