"""Large k: two-level k-means (algorithm="hierarchical") against exact Lloyd and FAISS.

Run from the repository root::

    python benchmarks/bench_hierarchical.py              # h (n=1M d=64 k=16,384) and big
    python benchmarks/bench_hierarchical.py --only h     # one workload
    python benchmarks/bench_hierarchical.py --quick      # h at 1/8 of n and k, big at 1/16

Workload h (issue 18): n=1M, d=64, k=16,384, float32, on two datasets: "overlapping"
(k Gaussian blobs, std 4 in a box of +-5: nearly uniform, the hard case for any
probe-limited search) and "structured" (1,000 blobs, std 1: clusters at several
scales, as embeddings have). Each system runs ``--iters`` iterations (tol=0) from its own
default init with the same seed: dclust exact Lloyd (k-means|| init), dclust
hierarchical at each ``--probes`` value, and FAISS ``Kmeans`` (in its own process, all
cores, its own random init, no subsampling). The figures are whole-fit seconds and the
inertia each fit reports; for the hierarchical fits also the inertia of its centres under
exact assignment, so the two sources of the gap (centre quality, probe-limited
assignment) can be told apart.

Workload big: k=262,144 on n=4M x 32 read from a Zarr array, on a local cluster of
2 worker processes with 8 GiB each (16 GiB in all); time, peak worker memory, and
predict for the model (tasks and graphs it takes).
"""

from __future__ import annotations

import argparse
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


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make(kind, n, d, k, seed=0):
    from dclust.testing import make_blobs_array

    if kind == "overlapping":
        blobs, std, box = k, 4.0, (-5, 5)
    else:
        blobs, std, box = 1000, 1.0, (-5, 5)
    X, _ = make_blobs_array(n, d, blobs, cluster_std=std, center_box=box, seed=seed,
                            chunk_size=-(-n // 8), dtype="float32")
    return X


def exact_inertia(Xn, C):
    from dclust.kernels.lloyd import nearest_center

    total = 0.0
    for s in range(0, Xn.shape[0], 1 << 17):
        total += float(nearest_center(Xn[s : s + (1 << 17)], C)[1].sum())
    return total


def fit_dclust(X, k, iters, **kw):
    import dclust

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = dclust.KMeans(k, max_iter=iters, tol=0, random_state=0, progress=False, **kw).fit(X)
    return km, time.perf_counter() - t


def faiss_main(data, k, iters):
    import faiss

    X = np.load(data)
    faiss.omp_set_num_threads(os.cpu_count())
    km = faiss.Kmeans(X.shape[1], k, niter=iters, seed=0, max_points_per_centroid=1 << 30,
                      min_points_per_centroid=1, verbose=False)
    t = time.perf_counter()
    km.train(X)
    sec = time.perf_counter() - t
    print(json.dumps({"seconds": sec, "inertia": float(km.obj[-1]) if len(km.obj) else None,
                      "centroids": os.path.abspath(data) + ".centroids.npy"}))
    np.save(data + ".centroids.npy", km.centroids)


def run_faiss(Xn, k, iters, workdir):
    path = os.path.join(workdir, "h.npy")
    np.save(path, Xn)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--faiss", path,
                          "--k", str(k), "--iters", str(iters)],
                         check=True, capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    C = np.load(res["centroids"])
    return res["seconds"], C


def workload_h(n, d, k, iters, probes, kinds, workdir):
    rows = []
    for kind in kinds:
        X = make(kind, n, d, k).persist()
        Xn = X.compute()
        log(f"h/{kind}: n={n} d={d} k={k}, {iters} iterations")
        ex, t_ex = fit_dclust(X, k, iters, algorithm="lloyd")
        row = {"data": kind, "n": n, "d": d, "k": k, "iters": iters,
               "lloyd_s": t_ex, "lloyd_inertia": ex.inertia_}
        log(f"  exact Lloyd {t_ex:.1f} s, inertia {ex.inertia_:.6g}")
        for p in probes:
            h, t_h = fit_dclust(X, k, iters, algorithm="hierarchical", n_probe=p)
            exact = exact_inertia(Xn, h.cluster_centers_.astype(np.float64))
            row[f"hier{p}_s"] = t_h
            row[f"hier{p}_inertia"] = h.inertia_
            row[f"hier{p}_exact_inertia"] = exact
            took = f" (took {h.n_probe_})" if p == "auto" and hasattr(h, "n_probe_") else ""
            log(f"  hierarchical n_probe={p}{took}: {t_h:.1f} s ({t_ex / t_h:.1f}x faster), inertia "
                f"{h.inertia_:.6g} ({h.inertia_ / ex.inertia_:.4f} x exact Lloyd; its centres "
                f"under exact assignment {exact / ex.inertia_:.4f})")
        try:
            t_f, C = run_faiss(Xn, k, iters, workdir)
            row["faiss_s"] = t_f
            row["faiss_inertia"] = exact_inertia(Xn, C.astype(np.float64))
            log(f"  FAISS Kmeans {t_f:.1f} s, inertia {row['faiss_inertia']:.6g}")
        except Exception as e:  # pragma: no cover - FAISS missing
            log(f"  FAISS skipped: {e}")
        rows.append(row)
        del X, Xn
    return rows


class PeakRSS:
    """Peak resident memory of the given processes, polled."""

    def __init__(self, pids, every=0.2):
        import threading

        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.peak = {p.pid: 0 for p in self.procs}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.every = every

    def _run(self):
        while not self.stop.is_set():
            for p in self.procs:
                try:
                    self.peak[p.pid] = max(self.peak[p.pid], p.memory_info().rss)
                except Exception:
                    pass
            self.stop.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def workload_big(n, d, k, iters, workdir):
    import logging

    import dask.array as da
    import zarr
    from distributed import Client, LocalCluster

    import dclust
    from dclust.runtime.compute import compute_count

    logging.getLogger("distributed").setLevel(logging.ERROR)
    path = os.path.join(workdir, "big.zarr")
    X = make("structured", n, d, 1000)
    rows_per_chunk = 1 << 17
    z = zarr.create_array(path, shape=(n, d), chunks=(rows_per_chunk, d), dtype="float32")
    da.store(X.rechunk((rows_per_chunk, d)), z, lock=False)
    log(f"big: wrote {n} x {d} float32 to Zarr ({n * d * 4 / 2**30:.2f} GiB, "
        f"{-(-n // rows_per_chunk)} chunks)")
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="8GiB",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        # dclust uses the active client as it is.
        pids = list(client.run(os.getpid).values())
        Xz = dclust.open_array(path)
        with PeakRSS(pids) as mem:
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                km = dclust.KMeans(k, algorithm="hierarchical", max_iter=iters, tol=0,
                                   random_state=0, progress=False).fit(Xz)
            t_fit = time.perf_counter() - t
            before = compute_count()
            t = time.perf_counter()
            labels = km.predict(Xz)
            n_tasks = len(labels.__dask_graph__())
            lab = labels.compute()
            t_pred = time.perf_counter() - t
        lost = len(cluster.workers) != 2 or len(client.scheduler_info()["workers"]) != 2
        row = {"n": n, "d": d, "k": k, "iters": iters, "fit_s": t_fit,
               "inertia": km.inertia_, "passes": km.n_passes_, "n_probe": km.n_probe_,
               "probe_excess": getattr(km, "probe_excess_", None),
               "peak_worker_rss_gib": [v / 2**30 for v in mem.peak.values()],
               "predict_s": t_pred, "predict_graph_tasks": n_tasks,
               "predict_chunks": int(Xz.numblocks[0]),
               "predict_dclust_graphs": compute_count() - before,
               "labels_ok": bool(lab.shape == (n,) and lab.min() >= 0 and lab.max() < k),
               "workers_lost": bool(lost)}
        log(f"  fit {t_fit:.1f} s ({km.n_passes_} passes, n_probe {km.n_probe_}), inertia "
            f"{km.inertia_:.6g}, peak "
            f"worker RSS {', '.join(f'{v:.2f}' for v in row['peak_worker_rss_gib'])} GiB; "
            f"predict {t_pred:.1f} s, {n_tasks} tasks over {row['predict_chunks']} chunks")
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("h", "big"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--probes", default="4,8", help="comma-separated n_probe values; 'auto' too")
    p.add_argument("--kinds", default="overlapping,structured")
    p.add_argument("--faiss")
    p.add_argument("--k", type=int)
    a = p.parse_args()
    if a.faiss:
        return faiss_main(a.faiss, a.k, a.iters)
    info = machine.describe()
    log(f"machine: {info['cores']} cores, {info['label']}")
    workdir = tempfile.mkdtemp(prefix="dclust-bench-h-")
    out = {"machine": info}
    try:
        if a.only in (None, "h"):
            n, k = (125_000, 2048) if a.quick else (1_000_000, 16_384)
            out["h"] = workload_h(n, 64, k, a.iters, [x if x == "auto" else int(x) for x in a.probes.split(",")],
                                  a.kinds.split(","), workdir)
        if a.only in (None, "big"):
            import dclust

            dclust.shutdown()
            n, k = (250_000, 16_384) if a.quick else (4_000_000, 262_144)
            out["big"] = workload_big(n, 32, k, 5, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
