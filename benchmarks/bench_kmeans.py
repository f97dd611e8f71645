"""Seconds per Lloyd iteration: dclust against scikit-learn, FAISS and dask-ml.

Run from the repository root::

    python benchmarks/bench_kmeans.py            # workloads a, b, c, big, init, e, d
    python benchmarks/bench_kmeans.py --quick    # the same at 1/8 size, a few minutes

Every system gets the same float32 data and the same init array and runs a fixed number
of iterations (tol=0). The figure is the *marginal* time of an iteration: a fit with
``2 + m`` iterations minus a fit with 2, divided by ``m``, so start-up, data placement and
the final labelling cancel out. Ratios are to the best peer and to this machine's limit
for the work, ``max(2 n k d / sgemm peak, n d 4 / read bandwidth)``, both measured in
this run. dclust runs on its embedded local cluster with the data persisted;
scikit-learn and FAISS each run in a fresh Python process with the data in memory (as
their users run them: in this process they would share the cores with the cluster's
scheduler); dask-ml runs on the same Dask cluster as dclust.

Workloads (issue 3): a = 4M x 32, k 16 (memory-bound); b = 1M x 64, k 256;
c = 200k x 128, k 4096 (compute-bound); big = a 1 GB Zarr array written in this run
and persisted (issue 2); init = k-means|| on b against Lloyd iterations; e = pass time
against number of chunks and workers; d = a compressed Zarr array >= 8 GB streamed with
cache="none" on workers whose memory limits add up to 2 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

WORKLOADS = {
    "a": dict(n=4_000_000, d=32, k=16),
    "b": dict(n=1_000_000, d=64, k=256),
    "c": dict(n=200_000, d=128, k=4096),
    "big": dict(n=8_388_608, d=32, k=64),
}
SYSTEMS = ("dclust", "sklearn", "faiss", "dask-ml")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_data(n, d, k, seed=0, chunk=None):
    """Overlapping blobs, so that labels keep changing and no run converges early.

    Eight row-chunks by default: four per worker thread on two cores.
    """
    from dclust.testing import make_blobs_array

    X, _ = make_blobs_array(n, d, k, cluster_std=4.0, center_box=(-5, 5), seed=seed,
                            chunk_size=chunk or -(-n // 8), dtype="float32")
    return X


def marginal(fit, m, repeats):
    """Seconds per iteration: median over ``repeats`` of (fit(2 + m) - fit(2)) / m.

    One untimed fit first (thread pools, caches, compiled code), then the two fits
    alternate, so that drifts of a shared machine hit both sides alike.
    """
    fit(2)
    diffs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit(2)
        t2 = time.perf_counter() - t0
        t0 = time.perf_counter()
        fit(2 + m)
        tm = time.perf_counter() - t0
        diffs.append((tm - t2) / m)
    return float(np.median(diffs))


def run_dclust(Xp, C, m, repeats):
    import dclust

    def fit(it):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km = dclust.KMeans(C.shape[0], init=C, max_iter=it, tol=0, progress=False).fit(Xp)
        assert km.n_iter_ == it, (km.n_iter_, it)

    return marginal(fit, m, repeats)


def run_sklearn(Xn, C, m, repeats):
    from sklearn.cluster import KMeans

    def fit(it):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km = KMeans(C.shape[0], init=C, n_init=1, max_iter=it, tol=0, algorithm="lloyd").fit(Xn)
        if km.n_iter_ != it:
            log(f"  sklearn stopped after {km.n_iter_} of {it} iterations")

    return marginal(fit, m, repeats)


def run_faiss(Xn, C, m, repeats):
    import faiss

    faiss.omp_set_num_threads(os.cpu_count())

    def fit(it):
        km = faiss.Kmeans(Xn.shape[1], C.shape[0], niter=it, max_points_per_centroid=1 << 30,
                          min_points_per_centroid=1, seed=1, verbose=False)
        km.train(Xn, init_centroids=C.astype(np.float32))

    return marginal(fit, m, repeats)


OWN_PROCESS_PEERS = ("sklearn", "faiss")


def run_peer_subprocess(system, data, init, m, repeats):
    """Time scikit-learn or FAISS in a fresh Python process, as their users run them.

    ``data`` and ``init`` are .npy files (written once per workload), loaded whole before
    timing. A fresh process also keeps them clear of anything this process has set up
    for the Dask cluster (before dclust restored them, the nannies' OMP_NUM_THREADS=1
    ran scikit-learn on one thread here).
    """
    import subprocess

    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--peer", system, "--peer-data", data,
         "--peer-init", init, "--iters", str(m), "--repeats", str(repeats)],
        check=True, capture_output=True, text=True)
    for line in out.stderr.splitlines():
        log(line)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def peer_main(system, data, init, m, repeats):
    Xn = np.load(data)
    C = np.load(init)
    sec = {"sklearn": run_sklearn, "faiss": run_faiss}[system](Xn, C, m, repeats)
    print(json.dumps({"system": system, "seconds": sec}))


def run_daskml(Xp, C, m, repeats):
    from dask_ml.cluster import KMeans

    def fit(it):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            KMeans(C.shape[0], init=C, max_iter=it, tol=0).fit(Xp)

    return marginal(fit, m, repeats)


def lloyd_workload(name, n, d, k, *, m, repeats, systems, peak, bw, workdir):
    import dclust

    client = dclust.get_client()
    if name == "big":
        path = os.path.join(workdir, "big.zarr")
        t0 = time.perf_counter()
        X = make_data(n, d, k)
        dclust.write_array(X, path)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
        log(f"  wrote {path}: {n:,} x {d} float32, {size / 1e9:.2f} GB on disk in {time.perf_counter() - t0:.1f} s")
        X = dclust.open_array(path)
    else:
        X = make_data(n, d, k)
    Xp = client.persist(X)
    from distributed import wait

    wait(Xp)
    Xn = None
    if {"sklearn", "faiss"} & set(systems):
        Xn = np.ascontiguousarray(Xp.compute())
    pick = np.sort(np.random.default_rng(0).choice(n, k, replace=False))
    C = np.asarray(Xn[pick] if Xn is not None else Xp[pick].compute(), dtype=np.float64)
    limit = machine.limit_seconds(n, d, k, 4, peak, bw)
    out = {"workload": name, "n": n, "d": d, "k": k, "limit_s": limit, "nbytes": n * d * 4, "systems": {}}
    data = os.path.join(workdir, f"peer-{name}-X.npy")
    init = os.path.join(workdir, f"peer-{name}-C.npy")
    if Xn is not None:
        np.save(data, Xn)
        np.save(init, C)
        Xn = None  # the peers read the file; this process keeps only the persisted copy
    runners = {
        "dclust": lambda: run_dclust(Xp, C, m, repeats),
        "sklearn": lambda: run_peer_subprocess("sklearn", data, init, m, repeats),
        "faiss": lambda: run_peer_subprocess("faiss", data, init, m, repeats),
        "dask-ml": lambda: run_daskml(Xp, C, max(2, m // 2), max(1, repeats // 2)),
    }
    for s in systems:
        gc.collect()
        try:
            sec = runners[s]()
        except Exception as e:  # a peer that fails is reported, not fatal
            log(f"  {s}: failed: {type(e).__name__}: {e}")
            continue
        out["systems"][s] = sec
        log(f"  {name} {s:8s} {sec * 1e3:9.1f} ms/iter  ({sec / limit:.2f} x limit)")
    runners.clear()  # drop the data before the next workload
    for f in (data, init):
        if os.path.exists(f):
            os.remove(f)
    gc.collect()
    return out


def init_workload(n, d, k, *, peak, bw, repeats):
    """k-means|| init on workload b against the time of a Lloyd iteration, and its quality."""
    import dclust
    from dclust.algorithms.kmeans import init_centers
    from dclust.algorithms.session import FitSession

    client = dclust.get_client()
    from distributed import wait

    Xp = client.persist(make_data(n, d, k))
    wait(Xp)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        session = FitSession(Xp, algorithm="KMeans", place=False).open(random_state=0)
        C = init_centers(session, k, "k-means||", 0)
        best = min(best, time.perf_counter() - t0)
    C0 = np.asarray(Xp[:k].compute(), dtype=np.float64)
    lloyd = run_dclust(Xp, C0, 3, repeats)
    from sklearn.cluster import kmeans_plusplus

    from dclust.algorithms.kmeans import lloyd_aggregation
    from dclust.reductions.engine import run_pass

    Xn = np.ascontiguousarray(Xp.compute())
    C_pp, _ = kmeans_plusplus(Xn, k, random_state=0)
    inertia_par = float(run_pass(Xp, {"l": lloyd_aggregation(C, 0)})["l"]["inertia"])
    inertia_pp = float(run_pass(Xp, {"l": lloyd_aggregation(C_pp.astype(np.float64), 0)})["l"]["inertia"])
    res = {"workload": "init", "n": n, "d": d, "k": k, "init_s": best, "lloyd_s": lloyd,
           "init_over_lloyd": best / lloyd, "inertia_kmeans_parallel": inertia_par,
           "inertia_sklearn_kmeanspp": inertia_pp, "inertia_ratio": inertia_par / inertia_pp}
    log(f"  init k-means|| {best:.3f} s = {best / lloyd:.2f} Lloyd iterations; "
        f"inertia {inertia_par:.4g} = {inertia_par / inertia_pp:.3f} x sklearn k-means++")
    return res


def many_chunks_workload(n, d, k, counts, workers_list):
    """Pass time against number of chunks and workers; overhead per chunk from the slope."""
    import logging

    from distributed import Client, LocalCluster, wait

    from dclust.algorithms.kmeans import lloyd_aggregation
    from dclust.reductions.engine import run_pass

    rows = []
    X0 = make_data(n, d, k, chunk=n)
    C = np.asarray(X0[:k].compute(), dtype=np.float64)
    for workers in workers_list:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client, client.as_current():
            for count in counts:
                Xp = client.persist(X0.rechunk((max(1, n // count), d)))
                wait(Xp)
                run_pass(Xp, {"l": lloyd_aggregation(C)})
                ts = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    run_pass(Xp, {"l": lloyd_aggregation(C)})
                    ts.append(time.perf_counter() - t0)
                rows.append({"workers": workers, "chunks": Xp.numblocks[0], "pass_s": min(ts)})
                log(f"  e workers={workers} chunks={Xp.numblocks[0]:6d} pass {min(ts) * 1e3:8.1f} ms")
                del Xp
    for workers in workers_list:
        pts = sorted((r["chunks"], r["pass_s"]) for r in rows if r["workers"] == workers)
        (c0, t0), (c1, t1) = pts[-2], pts[-1]
        per = (t1 - t0) / (c1 - c0)
        for r in rows:
            if r["workers"] == workers:
                r["overhead_per_chunk_ms"] = per * 1e3
    return {"workload": "e", "n": n, "d": d, "k": k, "rows": rows}


class _PeakMemory(threading.Thread):
    """Polls every worker's resident memory and keeps the peak."""

    def __init__(self, client, every=0.25):
        super().__init__(daemon=True)
        self.client, self.every = client, every
        self.peak = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                info = self.client.scheduler_info(n_workers=-1)["workers"]
                for addr, w in info.items():
                    mem = w.get("metrics", {}).get("memory", 0)
                    self.peak[addr] = max(self.peak.get(addr, 0), mem)
            except Exception:
                pass
            self.stop.wait(self.every)


def out_of_core_workload(target_gb, workdir, k=16, d=64):
    """Stream a compressed Zarr array much larger than the workers' memory."""
    import logging

    import dask.array as da
    from distributed import Client, LocalCluster

    import dclust
    from dclust.algorithms.kmeans import lloyd_aggregation
    from dclust.reductions.engine import run_pass

    path = os.path.join(workdir, "ooc.zarr")
    raw_per_row = d * 4
    # Gaussian floats compress to about 90 %: write enough rows for target_gb on disk.
    n = int(target_gb * 1e9 / raw_per_row / 0.9)
    t0 = time.perf_counter()
    dclust.write_array(make_data(n, d, k, chunk=1 << 18), path)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    log(f"  d wrote {n:,} x {d} ({n * raw_per_row / 1e9:.1f} GB raw, {size / 1e9:.2f} GB on disk) "
        f"in {time.perf_counter() - t0:.0f} s")
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GB", processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client, client.as_current():
        workers_before = set(client.scheduler_info()["workers"])
        X = dclust.open_array(path)
        C = np.asarray(X[:k].compute(), dtype=np.float64)
        mon = _PeakMemory(client)
        mon.start()
        t0 = time.perf_counter()
        float(da.sum(X).compute())
        t_sum = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_pass(X, {"l": lloyd_aggregation(C)})
        t_pass = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km = dclust.KMeans(k, init=C, max_iter=2, tol=0, cache="auto", progress=False).fit(X)
        t_fit = time.perf_counter() - t0
        mon.stop.set()
        mon.join()
        workers_after = set(client.scheduler_info()["workers"])
        paused = [a for a, w in client.scheduler_info()["workers"].items() if w.get("status") == "paused"]
    res = {"workload": "d", "n": n, "d": d, "k": k, "raw_gb": n * raw_per_row / 1e9, "disk_gb": size / 1e9,
           "worker_memory_limit_total_gb": 2.0, "sum_pass_s": t_sum, "lloyd_pass_s": t_pass,
           "pass_over_sum": t_pass / t_sum, "fit_2iter_auto_s": t_fit, "n_passes_fit": km.n_passes_,
           "peak_worker_memory_gb": {a: v / 1e9 for a, v in mon.peak.items()},
           "workers_lost": len(workers_before - workers_after), "workers_paused": len(paused)}
    log(f"  d sum pass {t_sum:.1f} s, Lloyd pass {t_pass:.1f} s ({t_pass / t_sum:.2f} x), "
        f"peak worker memory {max(mon.peak.values()) / 1e9:.2f} GB, lost {res['workers_lost']}")
    shutil.rmtree(path, ignore_errors=True)
    return res


def table(results, peak, bw):
    lines = ["| workload | n x d, k | limit (ms) | system | ms / iter | x best peer | x limit |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in results:
        if "systems" not in r:
            continue
        peers = {s: v for s, v in r["systems"].items() if s != "dclust"}
        best_peer = min(peers.values()) if peers else np.nan
        for s, v in sorted(r["systems"].items(), key=lambda kv: kv[1]):
            lines.append(
                f"| {r['workload']} | {r['n']:,} x {r['d']}, {r['k']} | {r['limit_s'] * 1e3:.0f} | {s} | "
                f"{v * 1e3:.1f} | {v / best_peer:.2f} | {v / r['limit_s']:.2f} |"
            )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1/8 of the sizes; skips d; a few minutes")
    p.add_argument("--scale", type=int, default=None, help="divide every n by this (dry runs)")
    p.add_argument("--workloads", default="a,b,c,big,init,e,d")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--iters", type=int, default=6, help="m: marginal iterations (default 6)")
    p.add_argument("--repeats", type=int, default=3, help="timed pairs of fits per system (median)")
    p.add_argument("--ooc-gb", type=float, default=8.0, help="size on disk of workload d")
    p.add_argument("--workdir", default=None, help="where datasets are written (default: a temp dir)")
    p.add_argument("--json", default=None, help="write all figures to this JSON file")
    p.add_argument("--peer", choices=OWN_PROCESS_PEERS, help=argparse.SUPPRESS)
    p.add_argument("--peer-data", help=argparse.SUPPRESS)
    p.add_argument("--peer-init", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.peer:
        return peer_main(args.peer, args.peer_data, args.peer_init, args.iters, args.repeats)
    scale = args.scale or (8 if args.quick else 1)
    wanted = args.workloads.split(",")
    systems = [s for s in args.systems.split(",") if s]
    workdir = args.workdir or tempfile.mkdtemp(prefix="dclust-bench-")
    os.makedirs(workdir, exist_ok=True)

    import dclust

    info = machine.describe()
    peak = machine.sgemm_peak()
    bw = machine.read_bandwidth()
    info.update(sgemm_peak_gflops=peak / 1e9, read_bandwidth_gbs=bw / 1e9)
    log(f"machine: {info['cores']} cores, {info['label']}, sgemm peak {peak / 1e9:.0f} GFLOP/s, "
        f"read bandwidth {bw / 1e9:.1f} GB/s")
    dclust.get_client()
    results = []
    for w in ("a", "b", "c", "big"):
        if w in wanted:
            spec = dict(WORKLOADS[w])
            spec["n"] //= scale
            spec["k"] = min(spec["k"], spec["n"] // 4)
            log(f"workload {w}: {spec}")
            results.append(lloyd_workload(w, **spec, m=args.iters, repeats=args.repeats,
                                          systems=systems, peak=peak, bw=bw, workdir=workdir))
    if "init" in wanted:
        spec = dict(WORKLOADS["b"])
        spec["n"] //= scale
        results.append(init_workload(**spec, peak=peak, bw=bw, repeats=args.repeats))
    if "e" in wanted:
        dclust.shutdown()
        n = 1_000_000 // scale
        results.append(many_chunks_workload(n, 16, 16, (100, 1000, 10000 // (1 if scale == 1 else 2)), (1, 2)))
    if "d" in wanted and not args.quick:
        dclust.shutdown()
        results.append(out_of_core_workload(args.ooc_gb, workdir))
    print()
    print(f"dclust benchmark, {dt.date.today()}, {info['cores']} cores, {info['label']}, "
          f"sgemm peak {peak / 1e9:.0f} GFLOP/s, read bandwidth {bw / 1e9:.1f} GB/s")
    print(table(results, peak, bw))
    for r in results:
        if r["workload"] == "init":
            print(f"\ninit (k-means|| on {r['n']:,} x {r['d']}, k={r['k']}): {r['init_s']:.3f} s = "
                  f"{r['init_over_lloyd']:.2f} Lloyd iterations; inertia after init "
                  f"{r['inertia_ratio']:.3f} x scikit-learn's k-means++")
        if r["workload"] == "e":
            print("\n| workers | chunks | pass (ms) | overhead / chunk (ms) |\n|---:|---:|---:|---:|")
            for row in r["rows"]:
                print(f"| {row['workers']} | {row['chunks']:,} | {row['pass_s'] * 1e3:.1f} | "
                      f"{row['overhead_per_chunk_ms']:.3f} |")
        if r["workload"] == "d":
            peaks = ", ".join(f"{v:.2f}" for v in r["peak_worker_memory_gb"].values())
            print(f"\nout-of-core: {r['disk_gb']:.1f} GB on disk ({r['raw_gb']:.1f} GB raw), workers' "
                  f"memory limits {r['worker_memory_limit_total_gb']:.0f} GB in all: Lloyd pass "
                  f"{r['lloyd_pass_s']:.1f} s vs plain read+sum {r['sum_pass_s']:.1f} s = "
                  f"{r['pass_over_sum']:.2f} x; peak worker memory (GB) {peaks}; workers lost "
                  f"{r['workers_lost']}, paused {r['workers_paused']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "date": str(dt.date.today()), "results": results}, f, indent=1)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
