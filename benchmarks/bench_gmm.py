"""Seconds per EM iteration of a Gaussian mixture: dclust against scikit-learn.

Run from the repository root::

    python benchmarks/bench_gmm.py                      # n=1M d=32 k=16, full and diag
    python benchmarks/bench_gmm.py --scale 50 --iters 2 --repeats 1   # a dry run, < 1 min
    python benchmarks/bench_gmm.py --workloads outofcore               # 10M x 32, k=16, diag

Workloads ``full`` and ``diag``: the same float32 data (overlapping blobs) for both
systems, the same initial parameters (``weights_init``, ``means_init``,
``precisions_init`` from a short scikit-learn fit on a sample), a fixed number of
iterations (``tol=0``). The figure is the *marginal* time of an iteration: a fit with
``2 + m`` iterations minus a fit with 2, divided by ``m`` (median over repeats, fits
alternating), so start-up, data placement and the last labelling cancel out. dclust
runs on its embedded local cluster with the data persisted; scikit-learn runs in a fresh
Python process with the data in memory (as bench_kmeans.py explains, a process that
started a Dask cluster is no fair place for it). The limit of an iteration is
``max(GEMM flops / sgemm peak, n d 4 / read bandwidth)``, measured in the same run;
the flops are ``4 n k d^2`` for full covariances (whitening and moments, one GEMM each
per component) and ``8 n k d`` for diagonal ones (densities and moments, two GEMMs each).

Workload ``outofcore``: ``n`` rows (default 10M x 32 float32, 1.3 GB) written to Zarr,
fitted (``covariance_type="diag"``, k=16) with ``cache="none"`` by real worker processes
whose memory limits add up to less than the data; prints the time of every pass, the
workers' peak memory and whether any was paused or restarted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

WORKLOADS = {"full": dict(n=1_000_000, d=32, k=16), "diag": dict(n=1_000_000, d=32, k=16)}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_data(n, d, k, seed=0, chunk=None):
    """Overlapping blobs in eight row-chunks (EM keeps moving on them)."""
    from dclust.testing import make_blobs_array

    X, _ = make_blobs_array(n, d, k, cluster_std=3.0, center_box=(-5, 5), seed=seed,
                            chunk_size=chunk or -(-n // 8), dtype="float32")
    return X


def start_params(Xn, k, covariance_type, seed=0):
    """Initial weights, means and precisions: a 3-iteration scikit-learn fit on a sample."""
    from sklearn.mixture import GaussianMixture

    rows = np.random.default_rng(seed).choice(Xn.shape[0], min(Xn.shape[0], 20_000), replace=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = GaussianMixture(k, covariance_type=covariance_type, max_iter=3, random_state=seed)
        sk.fit(Xn[np.sort(rows)].astype(np.float64))
    return {"weights_init": sk.weights_, "means_init": sk.means_,
            "precisions_init": sk.precisions_}


def marginal(fit, m, repeats):
    """Seconds per iteration: median over ``repeats`` of (fit(2 + m) - fit(2)) / m."""
    fit(2)  # warm-up: thread pools, compiled code, caches
    diffs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit(2)
        t2 = time.perf_counter() - t0
        t0 = time.perf_counter()
        fit(2 + m)
        diffs.append((time.perf_counter() - t0 - t2) / m)
    return float(np.median(diffs))


def run_dclust(Xp, covariance_type, start, m, repeats):
    import dclust

    k = start["means_init"].shape[0]

    def fit(it):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = dclust.GaussianMixture(k, covariance_type=covariance_type, max_iter=it, tol=0,
                                        progress=False, **start).fit(Xp)
        assert gm.n_iter_ == it and gm.n_passes_ == it, (gm.n_iter_, gm.n_passes_, it)

    return marginal(fit, m, repeats)


def run_sklearn(Xn, covariance_type, start, m, repeats):
    from sklearn.mixture import GaussianMixture

    k = start["means_init"].shape[0]
    start = {key: v.astype(Xn.dtype) for key, v in start.items()}

    def fit(it):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = GaussianMixture(k, covariance_type=covariance_type, max_iter=it, tol=0,
                                 **start).fit(Xn)
        assert gm.n_iter_ == it, (gm.n_iter_, it)

    return marginal(fit, m, repeats)


def peer_main(data, init, covariance_type, m, repeats):
    Xn = np.load(data)
    with np.load(init) as f:
        start = dict(f)
    sec = run_sklearn(Xn, covariance_type, start, m, repeats)
    print(json.dumps({"system": "sklearn", "seconds": sec}))


def run_sklearn_subprocess(data, init, covariance_type, m, repeats):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--peer-data", data, "--peer-init", init,
         "--peer-covariance-type", covariance_type, "--iters", str(m), "--repeats", str(repeats)],
        check=True, capture_output=True, text=True)
    for line in out.stderr.splitlines():
        log(line)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def flops(n, d, k, covariance_type):
    return 4.0 * n * k * d * d if covariance_type == "full" else 8.0 * n * k * d


def em_workload(name, n, d, k, *, m, repeats, peak, bw, workdir, systems):
    import dclust
    from distributed import wait

    client = dclust.get_client()
    Xp = client.persist(make_data(n, d, k))
    wait(Xp)
    Xn = np.ascontiguousarray(Xp.compute())
    start = start_params(Xn, k, name)
    limit = max(flops(n, d, k, name) / peak, n * d * 4 / bw)
    out = {"workload": name, "n": n, "d": d, "k": k, "limit_s": limit, "systems": {}}
    data = os.path.join(workdir, f"gmm-{name}-X.npy")
    init = os.path.join(workdir, f"gmm-{name}-init.npz")
    np.save(data, Xn)
    np.savez(init, **start)
    del Xn
    runners = {"dclust": lambda: run_dclust(Xp, name, start, m, repeats),
               "sklearn": lambda: run_sklearn_subprocess(data, init, name, m, repeats)}
    for s in systems:
        sec = runners[s]()
        out["systems"][s] = sec
        log(f"  {name} {s:8s} {sec * 1e3:9.1f} ms/iter  ({sec / limit:.2f} x limit)")
    for f in (data, init):
        os.remove(f)
    return out


def outofcore_workload(n, d, k, *, workers, memory_limit, max_iter, workdir):
    """A diag fit streamed from a Zarr array larger than the workers' memory limits."""
    import importlib.util

    import dclust
    from dclust.runtime.progress import Progress
    from dclust.testing.processes import process_cluster

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("bench_outofcore",
                                                  os.path.join(here, "bench_outofcore.py"))
    ooc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ooc)
    path = os.path.join(workdir, "gmm-ooc.zarr")
    chunk_rows = max(1, 16 * 2**20 // (4 * d))
    t0 = time.perf_counter()
    ooc.write_blobs(path, n, d, chunk_rows, n_centers=k)
    log(f"  wrote {n:,} x {d} float32 ({n * d * 4 / 2**30:.2f} GiB) in "
        f"{time.perf_counter() - t0:.1f} s")
    limit = ooc.parse_bytes(memory_limit)
    ooc.warm_kernels(d)  # compiled here, loaded from numba's cache by the workers
    cluster = process_cluster(workers, nthreads=1, memory_limit=memory_limit,
                              directory=os.path.join(workdir, "procs"))
    marks, orig, client = [], Progress.update, None

    def update(self, phase, iteration, **kw):
        marks.append((f"{phase} {iteration}", time.perf_counter()))
        return orig(self, phase, iteration, **kw)

    try:
        client = dclust.connect(cluster.address, quiet=True)
        pids = client.run(os.getpid)
        X = dclust.open_array(path, chunks=chunk_rows)
        Progress.update = update
        with ooc.Sampler(client) as sampler, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t1 = time.perf_counter()
            marks.append(("start", t1))
            gm = dclust.GaussianMixture(k, covariance_type="diag", max_iter=max_iter, tol=0,
                                        cache="none", random_state=0, progress=False).fit(X)
            t_fit = time.perf_counter() - t1
        Progress.update = orig
        restarted = client.run(os.getpid) != pids
        peak = client.run(ooc._peak_rss)
    finally:
        Progress.update = orig
        if client is not None:
            client.close()
        cluster.close()
    paused = {a: sorted(s) for a, s in sampler.statuses.items() if s - {"running"}}
    steps = [(name, t - marks[j][1]) for j, (name, t) in enumerate(marks[1:])]
    for name, sec in steps:
        log(f"    {name:>12}: {sec:6.2f} s")
    log(f"  fit {t_fit:.1f} s, {gm.n_passes_} passes; peak worker RSS "
        f"{', '.join(f'{v / 2**20:.0f}' for v in peak.values())} MiB of {limit / 2**20:.0f} MiB; "
        f"paused {paused or 'no'}, restarted {'yes' if restarted else 'no'}")
    shutil.rmtree(path, ignore_errors=True)
    return {"workload": "outofcore", "n": n, "d": d, "k": k, "fit_s": t_fit,
            "n_passes": gm.n_passes_, "steps": steps, "peak": list(peak.values()),
            "limit": limit, "workers": workers, "paused": paused, "restarted": restarted,
            "lower_bound": gm.lower_bound_}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="full,diag", help="full, diag, outofcore")
    p.add_argument("--systems", default="dclust,sklearn")
    p.add_argument("--scale", type=int, default=1, help="divide every n by this (dry runs)")
    p.add_argument("--iters", type=int, default=4, help="m: marginal iterations (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="timed pairs of fits (median)")
    p.add_argument("--ooc-rows", type=int, default=10_000_000)
    p.add_argument("--ooc-workers", type=int, default=2)
    p.add_argument("--ooc-memory-limit", default="512MiB")
    p.add_argument("--ooc-max-iter", type=int, default=3)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    p.add_argument("--peer-data", help=argparse.SUPPRESS)
    p.add_argument("--peer-init", help=argparse.SUPPRESS)
    p.add_argument("--peer-covariance-type", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.peer_data:
        return peer_main(args.peer_data, args.peer_init, args.peer_covariance_type, args.iters,
                         args.repeats)
    wanted = args.workloads.split(",")
    systems = [s for s in args.systems.split(",") if s]
    workdir = args.workdir or tempfile.mkdtemp(prefix="dclust-bench-gmm-")
    os.makedirs(workdir, exist_ok=True)
    info = machine.describe()
    peak, bw = machine.sgemm_peak(), machine.read_bandwidth()
    log(f"machine: {info['cores']} cores, {info['cpu']}, sgemm peak {peak / 1e9:.0f} GFLOP/s, "
        f"read bandwidth {bw / 1e9:.1f} GB/s")
    results = []
    if any(w in WORKLOADS for w in wanted):
        import dclust

        dclust.get_client()
        for w in ("full", "diag"):
            if w in wanted:
                spec = dict(WORKLOADS[w])
                spec["n"] //= args.scale
                log(f"workload {w}: {spec}")
                results.append(em_workload(w, **spec, m=args.iters, repeats=args.repeats,
                                           peak=peak, bw=bw, workdir=workdir, systems=systems))
        dclust.shutdown()
    if "outofcore" in wanted:
        n = args.ooc_rows // args.scale
        log(f"workload outofcore: {n:,} x 32, k=16, diag, {args.ooc_workers} x "
            f"{args.ooc_memory_limit} workers")
        results.append(outofcore_workload(n, 32, 16, workers=args.ooc_workers,
                                          memory_limit=args.ooc_memory_limit,
                                          max_iter=args.ooc_max_iter, workdir=workdir))
    print(f"\ndclust GaussianMixture benchmark, {dt.date.today()}, {info['cores']} cores "
          f"({info['cpu']}), sgemm peak {peak / 1e9:.0f} GFLOP/s, read bandwidth "
          f"{bw / 1e9:.1f} GB/s")
    rows = [r for r in results if r["workload"] in WORKLOADS]
    if rows:
        print("| covariance | n x d, k | limit (ms) | system | ms / EM iteration | x sklearn "
              "| x limit |")
        print("|---|---|---:|---|---:|---:|---:|")
        for r in rows:
            ref = r["systems"].get("sklearn")
            for s, v in r["systems"].items():
                vs = f"{v / ref:.2f}" if ref else "-"
                print(f"| {r['workload']} | {r['n']:,} x {r['d']}, {r['k']} | "
                      f"{r['limit_s'] * 1e3:.0f} | {s} | {v * 1e3:.1f} | {vs} | "
                      f"{v / r['limit_s']:.2f} |")
    for r in results:
        if r["workload"] == "outofcore":
            gib = r["n"] * r["d"] * 4 / 2**30
            print(f"\nout-of-core diag, {r['n']:,} x {r['d']} float32 ({gib:.2f} GiB) on "
                  f"{r['workers']} workers x {r['limit'] / 2**20:.0f} MiB: {r['n_passes']} passes "
                  f"in {r['fit_s']:.1f} s; peak worker RSS "
                  f"{', '.join(f'{v / 2**20:.0f}' for v in r['peak'])} MiB; paused "
                  f"{r['paused'] or 'no'}; restarted {'yes' if r['restarted'] else 'no'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "date": str(dt.date.today()), "results": results}, f,
                      indent=1, default=str)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
