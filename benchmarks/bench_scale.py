"""The scale model's inputs: scheduler cost per chunk and per worker, measured.

Run from the repository root::

    python benchmarks/bench_scale.py                 # 100 ... 50,000 chunks, 1-4 workers
    python benchmarks/bench_scale.py --quick         # 100 and 1,000 chunks, 1-2 workers
    python benchmarks/bench_scale.py --per-worker 2,4,8  # what a worker adds to a pass

Passes run over persisted float32 data cut into small chunks (``--rows`` x ``--d``,
64 x 16 by default: the work per chunk is negligible, so the time is the scheduler's),
on a ``LocalCluster`` of 1-4 worker processes (``--threads`` each). Each pass is timed
for

* ``dask-sum``: a plain Dask tree-sum, ``X.sum(axis=0, split_every=8).compute()`` (the
  floor of Dask's own per-task cost);
* ``chunk-sum`` / ``chunk-lloyd``: dclust's per-chunk graph (``fuse=False``), for a column
  sum with row count and for a k-means Lloyd pass at ``--k`` clusters;
* ``fused-sum`` / ``fused-lloyd``: dclust's fused graph (one task per worker thread).

dclust groups tiny chunks several to a task (``group_size``); this benchmark turns that
off (``MIN_TASK_BYTES = 1``) so each chunk is a task, as the 64 MiB chunks of a
terabyte-scale fit are. Variants alternate within each repeat (medians are reported), so
a noisy machine slows all alike. Each variant's pass times are fitted by least squares to
``t = a + b * chunks + c * workers``.

Also measured, as the other inputs of docs/scaling.md: read bandwidth (one core, all
cores), the Lloyd kernel's throughput per core at ``k=1000, d=128`` float32 (and the
float32 GEMM peak on one core), the latency and bandwidth of moving a result between two
worker processes and the time to combine ``split_every`` ``k x d`` partials, and the
in-task work per chunk of the two passes (serial, in this process), which splits a
pass's time into work and scheduling.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def _sum_chunk(X, w, ctx):
    return {"s": np.asarray(X).sum(0, dtype=np.float64), "n": np.asarray(X.shape[0])}


def _sum_combine(parts):
    return {"s": np.sum([p["s"] for p in parts], axis=0), "n": sum(p["n"] for p in parts)}


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def pass_times(chunks_list, workers_list, threads, rows, d, k, repeats, unfused_max, seed=0):
    """Median seconds per pass for every variant, chunk count and worker count."""
    from distributed import Client, LocalCluster, wait

    import dclust.runtime.compute as compute
    from dclust.algorithms.kmeans import lloyd_aggregation
    from dclust.reductions.engine import Aggregation, run_pass

    compute.MIN_TASK_BYTES = 1  # one task per chunk, as with 64 MiB chunks
    SUM = Aggregation("bench-sum", _sum_chunk, _sum_combine)
    rng = np.random.default_rng(seed)
    out = []
    for workers in workers_list:
        with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client, client.as_current():
            for chunks in chunks_list:
                Xn = rng.normal(size=(chunks * rows, d)).astype(np.float32)
                C = np.asarray(Xn[:k], dtype=np.float64)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    X = compute.scatter_array(Xn, rows)
                    wait(X)
                variants = {
                    "fused-sum": lambda: run_pass(X, {"s": SUM}, fuse=True),
                    "fused-lloyd": lambda: run_pass(X, {"l": lloyd_aggregation(C)}, fuse=True),
                }
                if chunks <= unfused_max:
                    variants.update({
                        "dask-sum": lambda: X.sum(axis=0, split_every=8).compute(),
                        "chunk-sum": lambda: run_pass(X, {"s": SUM}, fuse=False),
                        "chunk-lloyd": lambda: run_pass(X, {"l": lloyd_aggregation(C)},
                                                        fuse=False),
                    })
                for fn in variants.values():  # warm: placement, plans, imports
                    fn()
                times = {v: [] for v in variants}
                reps = repeats if chunks <= 10_000 else max(1, repeats // 2)
                for _ in range(reps):
                    for v, fn in variants.items():
                        times[v].append(_timed(fn))
                who = client.who_has(X)
                replicas = sum(len(h) - 1 for h in who.values())
                for v, ts in times.items():
                    med = statistics.median(ts)
                    out.append({"variant": v, "workers": workers, "threads": threads,
                                "chunks": chunks, "pass_s": med, "repeats": len(ts)})
                    log(f"  workers={workers} chunks={chunks:6d} {v:12s} "
                        f"{med * 1e3:9.1f} ms  ({med / chunks * 1e3:.3f} ms/chunk)")
                log(f"  workers={workers} chunks={chunks:6d} chunk replicas after passes: "
                    f"{replicas}")
                X = variants = None  # release the chunks before the next count
    return out


def worker_times(workers_list, chunks=64, rows=64, d=16, repeats=21, seed=0):
    """Median seconds of a fused column-sum pass over a fixed ``chunks`` chunks on
    ``workers_list`` worker processes of one thread: with the chunk count fixed and the
    work negligible, the slope over workers is what each worker adds to a pass
    (its task's submission, result and share of the combine tree). Worker counts that
    divide ``chunks / split_every`` (2, 4, 8) give every worker whole subtrees, so the
    tree above the workers has the same depth for each and the slope holds no extra
    hop; with more workers than cores the workers share them, so on a small machine the
    slope is an upper bound."""
    from distributed import Client, LocalCluster, wait

    import dclust.runtime.compute as compute
    from dclust.reductions.engine import Aggregation, run_pass

    compute.MIN_TASK_BYTES = 1
    SUM = Aggregation("bench-sum", _sum_chunk, _sum_combine)
    Xn = np.random.default_rng(seed).normal(size=(chunks * rows, d)).astype(np.float32)
    out = []
    for workers in workers_list:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client, client.as_current():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                X = compute.scatter_array(Xn, rows)
                wait(X)
            holders = len({h for hs in client.who_has(X).values() for h in hs})
            for _ in range(3):
                run_pass(X, {"s": SUM}, fuse=True)
            ts = [_timed(lambda: run_pass(X, {"s": SUM}, fuse=True)) for _ in range(repeats)]
            med = statistics.median(ts)
            out.append({"workers": workers, "chunks": chunks, "pass_s": med,
                        "workers_holding_chunks": holders, "repeats": repeats})
            log(f"  workers={workers} chunks={chunks} fused-sum {med * 1e3:8.2f} ms "
                f"(chunks on {holders} workers)")
            X = None
    A = np.array([[1.0, r["workers"]] for r in out])
    coef, *_ = np.linalg.lstsq(A, np.array([r["pass_s"] for r in out]), rcond=None)
    return out, {"a_ms": coef[0] * 1e3, "per_worker_ms": coef[1] * 1e3}


def fit(rows):
    """Least squares ``t = a + b chunks + c workers`` per variant (seconds)."""
    fits = {}
    for v in sorted({r["variant"] for r in rows}):
        pts = [r for r in rows if r["variant"] == v]
        A = np.array([[1.0, r["chunks"], r["workers"]] for r in pts])
        t = np.array([r["pass_s"] for r in pts])
        coef, *_ = np.linalg.lstsq(A, t, rcond=None)
        fits[v] = {"a_ms": coef[0] * 1e3, "per_chunk_ms": coef[1] * 1e3,
                   "per_worker_ms": coef[2] * 1e3, "points": len(pts)}
    return fits


def kernel_inputs(k=1000, d=128, rows=32768):
    """Read bandwidth, GEMM peak and Lloyd kernel throughput per core."""
    from threadpoolctl import threadpool_limits

    from dclust.kernels.lloyd import lloyd_partial

    rng = np.random.default_rng(1)
    X = rng.normal(size=(rows, d)).astype(np.float32)
    C = rng.normal(size=(k, d))
    with threadpool_limits(1, user_api="blas"):
        lloyd_partial(X, C)
        best = min(_timed(lambda: lloyd_partial(X, C)) for _ in range(3))
    return {
        "read_bw_core_GBs": machine.read_bandwidth(threads=1, nbytes=1 << 28) / 1e9,
        "read_bw_all_GBs": machine.read_bandwidth(nbytes=1 << 28) / 1e9,
        "sgemm_core_GFLOPs": machine.sgemm_peak(threads=1, size=2048) / 1e9,
        "lloyd_k": k, "lloyd_d": d, "lloyd_rows": rows,
        "lloyd_core_s_per_chunk": best,
        "lloyd_core_GFLOPs": 2.0 * rows * k * d / best / 1e9,
        "lloyd_core_GBs": rows * d * 4 / best / 1e9,
    }


def work_inputs(chunks=10_000, rows=64, d=16, k=16, split_every=8):
    """Seconds of in-task work per chunk, serial in this process: the fused task's body
    (chunk function, host copy, combines in tree order) over ``chunks`` chunks. A pass's
    time less this work (over the threads that share it) is the scheduler's."""
    from dclust.algorithms.kmeans import lloyd_aggregation
    from dclust.reductions import engine

    rng = np.random.default_rng(3)
    blocks = [rng.normal(size=(rows, d)).astype(np.float32) for _ in range(chunks)]
    C = np.asarray(blocks[0][:k], dtype=np.float64)
    tree = engine._Tree(chunks, split_every)
    spec = engine._Spec(tree=tree, g=1, n_chunks=chunks, ranges=((0, chunks, 0),),
                        nodes=(tree.root,), direct=True, has_weights=False, aligned_names=(),
                        dtype=None)
    out = {}
    for v, agg in (("sum", engine.Aggregation("bench-sum", _sum_chunk, _sum_combine)),
                   ("lloyd", lloyd_aggregation(C))):
        state = engine._Inline({"a": agg})
        out[f"work_{v}_ms_per_chunk"] = min(
            _timed(lambda: engine._fused_task(state, spec, *blocks)) for _ in range(4)
        ) / chunks * 1e3
    return out


def _make(shape):
    return np.zeros(shape)


def _take(x):
    return x.shape


def reduction_inputs(k=1000, d=128, split_every=8, repeats=7, big=64 * 2**20):
    """What one level of the combine tree costs between worker processes: the latency of
    a task reading another worker's small result (``hop_small_s``: scheduling and a
    message each way), the bandwidth of moving a large one (``big`` bytes, less the
    small hop), the time to move one ``k x d`` float64 partial at that bandwidth, and to
    combine ``split_every`` Lloyd partials."""
    from distributed import Client, LocalCluster

    from dclust.algorithms.kmeans import _lloyd_combine
    from dclust.kernels.lloyd import lloyd_partial

    rng = np.random.default_rng(2)
    C = rng.normal(size=(k, d))
    parts = [lloyd_partial(rng.normal(size=(256, d)).astype(np.float32), C)
             for _ in range(split_every)]
    combine = min(_timed(lambda: _lloyd_combine(parts, 0)) for _ in range(5))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        a, b = sorted(client.nthreads())

        def hop(shape):
            x = client.submit(_make, shape, workers=[a], pure=False)
            x.result()
            t = time.perf_counter()
            client.submit(_take, x, workers=[b], pure=False).result()
            return time.perf_counter() - t

        hop((big // 8,))
        large = statistics.median(hop((big // 8,)) for _ in range(repeats))
        small = statistics.median(hop((1,)) for _ in range(repeats))
    bw = big / max(large - small, 1e-9)
    return {"partial_bytes": k * d * 8, "hop_small_s": small, "transfer_GBs": bw / 1e9,
            "transfer_s": k * d * 8 / bw, "combine_s": combine, "split_every": split_every}


def table(rows, fits):
    variants = ["dask-sum", "chunk-sum", "fused-sum", "chunk-lloyd", "fused-lloyd"]
    keys = sorted({(r["workers"], r["chunks"]) for r in rows})
    by = {(r["variant"], r["workers"], r["chunks"]): r["pass_s"] for r in rows}
    lines = ["| workers | chunks | " + " | ".join(f"{v} ms" for v in variants) + " |",
             "|---:|---:|" + "---:|" * len(variants)]
    for w, c in keys:
        cells = [f"{by[(v, w, c)] * 1e3:.1f}" if (v, w, c) in by else "-" for v in variants]
        lines.append(f"| {w} | {c:,} | " + " | ".join(cells) + " |")
    lines += ["", "| variant | a (ms) | per chunk (ms) | per worker (ms) | points |",
              "|---|---:|---:|---:|---:|"]
    for v in variants:
        if v in fits:
            f = fits[v]
            lines.append(f"| {v} | {f['a_ms']:.1f} | {f['per_chunk_ms']:.4f} | "
                         f"{f['per_worker_ms']:.1f} | {f['points']} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", default="100,1000,10000,50000")
    p.add_argument("--workers", default="1,2,3,4")
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.add_argument("--rows", type=int, default=64, help="rows per chunk")
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--k", type=int, default=16, help="clusters of the Lloyd pass")
    p.add_argument("--repeats", type=int, default=3, help="(halved above 10,000 chunks)")
    p.add_argument("--unfused-max", type=int, default=10_000,
                   help="largest chunk count the dask-sum and per-chunk variants run at "
                        "(each of their passes costs ~1 ms per chunk)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--inputs-only", action="store_true",
                   help="only the per-core, per-chunk work and reduction inputs")
    p.add_argument("--per-worker", default=None, metavar="W1,W2,...",
                   help="only the per-worker cost: a fused pass over 64 chunks on each of "
                        "these worker counts (one thread each), 21 passes each, and the "
                        "slope of a least-squares line through the medians")
    p.add_argument("--json", help="write every figure to this file")
    args = p.parse_args(argv)
    if args.per_worker:
        info = machine.describe()
        log(f"machine: {info['label']}, {info['cores']} cores")
        rows, line = worker_times([int(w) for w in args.per_worker.split(",")])
        print("| workers | chunks on | fused pass over 64 chunks (ms) |\n|---:|---:|---:|")
        for r in rows:
            print(f"| {r['workers']} | {r['workers_holding_chunks']} | {r['pass_s'] * 1e3:.2f} |")
        print(f"\nper worker: {line['per_worker_ms']:.2f} ms, intercept {line['a_ms']:.2f} ms")
        print(json.dumps({"machine": info, "rows": rows, "line": line}, default=float))
        return
    if args.quick:
        args.chunks, args.workers, args.repeats = "100,1000", "1,2", 1
    chunks = [int(c) for c in args.chunks.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    info = machine.describe()
    log(f"machine: {info['label']}, {info['cores']} cores")
    rows = [] if args.inputs_only else pass_times(chunks, workers, args.threads, args.rows,
                                                  args.d, args.k, args.repeats, args.unfused_max)
    fits = fit(rows)
    log("kernel and reduction inputs ...")
    inputs = {**kernel_inputs(), **reduction_inputs(),
              **work_inputs(rows=args.rows, d=args.d, k=args.k)}
    result = {"machine": info, "command": " ".join(["python", "benchmarks/bench_scale.py",
                                                    *(argv if argv is not None else sys.argv[1:])]),
              "config": vars(args), "rows": rows, "fits": fits, "inputs": inputs}
    print(table(rows, fits))
    print()
    print("inputs: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in inputs.items()))
    print(json.dumps(result, indent=1, default=float))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)


if __name__ == "__main__":
    main()
