"""One command that checks dclust on an NVIDIA GPU and times its passes (issue 8).

Run from the repository root on a machine with a GPU, CuPy and dclust's dependencies::

    python benchmarks/gpu_check.py REPORT_DIR

It finishes in under 5 minutes on one GPU and writes ``REPORT_DIR/gpu_check.json``,
``REPORT_DIR/gpu_check.md`` and ``REPORT_DIR/gpu_tests.log``. It prints:

1. the result of the ``gpu`` tests (``tests/test_gpu.py``: every algorithm on CuPy
   against its NumPy fit);
2. the cuBLAS SGEMM peak measured in this run;
3. seconds per Lloyd iteration for n=10,000,000, d=64, k=256 and n=2,000,000, d=128,
   k=4,096: the bare kernel on one device array, and a dclust pass (``KMeans(device=
   "cuda")`` on a one-worker in-process cluster, data persisted on the GPU), each as
   achieved TFLOP/s (2nkd per iteration) and as a fraction of the SGEMM peak (target: at
   least 60% at k=4,096);
4. the same fit on the CPU path (all cores) and the speed-up of the GPU over it.

Iteration times are marginal: a fit with ``2 + m`` iterations minus one with 2, from the
same init, so start-up and data placement cancel. ``--device cpu --quick`` dry-runs the
whole script on a machine without a GPU (small sizes, NumPy in place of CuPy).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = [dict(n=10_000_000, d=64, k=256), dict(n=2_000_000, d=128, k=4096)]
QUICK = [dict(n=200_000, d=64, k=256), dict(n=40_000, d=128, k=1024)]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Backend:
    """NumPy or CuPy, with a synchronising timer."""

    def __init__(self, device):
        self.device = device
        if device == "cuda":
            import cupy

            self.xp = cupy
        else:
            self.xp = np

    def sync(self):
        if self.device == "cuda":
            self.xp.cuda.Device().synchronize()

    def timed(self, f, repeats=3):
        f()
        self.sync()
        best = np.inf
        for _ in range(repeats):
            t = time.perf_counter()
            f()
            self.sync()
            best = min(best, time.perf_counter() - t)
        return best

    def describe(self):
        if self.device != "cuda":
            return {"device": "cpu (dry run)", "cores": os.cpu_count()}
        cp = self.xp
        props = cp.cuda.runtime.getDeviceProperties(0)
        free, total = cp.cuda.Device().mem_info
        return {"device": props["name"].decode(), "memory_gib": round(total / 2**30, 1),
                "cupy": cp.__version__, "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
                "cores": os.cpu_count()}


def sgemm_peak(be, size):
    xp = be.xp
    a = xp.asarray(np.random.default_rng(0).random((size, size), dtype=np.float32))
    b = xp.asarray(np.random.default_rng(1).random((size, size), dtype=np.float32))
    out = xp.empty((size, size), dtype=xp.float32)
    t = be.timed(lambda: xp.matmul(a, b, out=out), repeats=5)
    return 2.0 * size**3 / t


def run_gpu_tests(out_dir, device):
    if device != "cuda":
        return {"result": "not run (dry run without a GPU)"}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q",
           "-p", "no:cacheprovider", "-o", "addopts="]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    with open(os.path.join(out_dir, "gpu_tests.log"), "w") as f:
        f.write(proc.stdout + proc.stderr)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    return {"result": lines[-1] if lines else f"exit {proc.returncode}",
            "exit_code": proc.returncode, "seconds": round(time.perf_counter() - t, 1)}


def make_data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-5, 5, size=(k, d)).astype(np.float32)
    X = np.empty((n, d), dtype=np.float32)
    step = 1_000_000
    for s in range(0, n, step):
        e = min(s + step, n)
        lab = rng.integers(0, k, e - s)
        X[s:e] = centers[lab] + 4.0 * rng.standard_normal((e - s, d), dtype=np.float32)
    return X


def kernel_seconds(be, X, init):
    """One Lloyd kernel call on the whole array held on the device."""
    from dclust.kernels.lloyd import lloyd_partial

    Xd = be.xp.asarray(X)
    t = be.timed(lambda: lloyd_partial(Xd, init, None, n_far=0), repeats=3)
    del Xd
    return t


def fit_marginal(X, init, device, m, threads):
    """Marginal seconds per Lloyd iteration of ``KMeans(device=...)`` on an in-process cluster."""
    from distributed import Client, LocalCluster

    import dclust

    cluster = LocalCluster(n_workers=1, threads_per_worker=threads, processes=False,
                           dashboard_address=None)
    client = Client(cluster, set_as_default=True)
    dclust.connect(cluster.scheduler_address, quiet=True)
    try:
        k = init.shape[0]
        # Place the data once (persisted on the device for "cuda"), as a user's fit
        # over a dataset that fits does, then time fits over the placed array.
        from dclust.estimators.base import prepare_fit_data

        X_work, _, _ = prepare_fit_data(X, None, "memory", device=device)

        def fit(iters):
            warnings.simplefilter("ignore", dclust.ConvergenceWarning)  # tol=0 on purpose
            est = dclust.KMeans(k, init=init, max_iter=iters, tol=0, device=device, progress=False,
                                cache="none")
            t = time.perf_counter()
            est.fit(X_work)
            return time.perf_counter() - t, est

        fit(2)
        t2, _ = fit(2)
        tm, est = fit(2 + m)
        return max(tm - t2, 1e-9) / m, float(est.inertia_), est.cluster_centers_
    finally:
        dclust.shutdown()
        client.close()
        cluster.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder for the report (created if missing)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: dry run of the script on a machine without a GPU")
    p.add_argument("--quick", action="store_true", help="small sizes (for a dry run)")
    p.add_argument("--iters", type=int, default=5, help="marginal iterations on the GPU")
    p.add_argument("--cpu-iters", type=int, default=2, help="marginal iterations on the CPU")
    p.add_argument("--skip-tests", action="store_true")
    args = p.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    sys.path.insert(0, ROOT)
    t_start = time.perf_counter()
    be = Backend(args.device)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": be.describe(), "workloads": []}
    log("machine:", report["machine"])
    report["gpu_tests"] = {"result": "skipped"} if args.skip_tests else run_gpu_tests(args.out_dir, args.device)
    log("gpu tests:", report["gpu_tests"]["result"])
    peak = sgemm_peak(be, 2048 if args.quick else 8192)
    report["sgemm_peak_tflops"] = peak / 1e12
    log(f"sgemm peak: {peak / 1e12:.1f} TFLOP/s")
    for w in (QUICK if args.quick else WORKLOADS):
        n, d, k = w["n"], w["d"], w["k"]
        log(f"workload n={n:,} d={d} k={k}: generating data")
        X = make_data(n, d, k)
        init = X[np.random.default_rng(1).choice(n, k, replace=False)].astype(np.float64)
        flops = 2.0 * n * k * d
        row = dict(w)
        tk = kernel_seconds(be, X, init)
        row.update(kernel_s=tk, kernel_tflops=flops / tk / 1e12, kernel_of_peak=flops / tk / peak)
        log(f"  kernel: {tk * 1e3:.1f} ms/iter, {flops / tk / 1e12:.2f} TFLOP/s "
            f"({100 * flops / tk / peak:.0f}% of sgemm peak)")
        tg, inertia_g, centers_g = fit_marginal(X, init, args.device, args.iters, 2)
        row.update(device_fit_s=tg, device_fit_tflops=flops / tg / 1e12, device_fit_of_peak=flops / tg / peak)
        log(f"  dclust {args.device}: {tg * 1e3:.1f} ms/iter, {flops / tg / 1e12:.2f} TFLOP/s "
            f"({100 * flops / tg / peak:.0f}% of peak)")
        tc, inertia_c, centers_c = fit_marginal(X, init, "cpu", args.cpu_iters, os.cpu_count())
        row.update(cpu_fit_s=tc, speedup_vs_cpu=tc / tg,
                   centres_max_abs_diff=float(np.abs(centers_g - centers_c).max()) if args.iters == args.cpu_iters else None,
                   inertia_rel_diff=abs(inertia_g - inertia_c) / inertia_c if args.iters == args.cpu_iters else None)
        log(f"  dclust cpu ({os.cpu_count()} threads): {tc * 1e3:.1f} ms/iter; speed-up {tc / tg:.1f}x")
        report["workloads"].append(row)
        del X
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    with open(os.path.join(args.out_dir, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=2)
    md = [f"# dclust GPU check ({report['date']})", "", f"machine: {report['machine']}",
          f"gpu tests: {report['gpu_tests']['result']}",
          f"cuBLAS sgemm peak: {report['sgemm_peak_tflops']:.1f} TFLOP/s", "",
          "| n | d | k | kernel ms/iter | kernel % peak | dclust ms/iter | TFLOP/s | % peak | CPU ms/iter | speed-up |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["workloads"]:
        md.append(f"| {r['n']:,} | {r['d']} | {r['k']} | {r['kernel_s'] * 1e3:.1f} | "
                  f"{100 * r['kernel_of_peak']:.0f}% | {r['device_fit_s'] * 1e3:.1f} | "
                  f"{r['device_fit_tflops']:.2f} | {100 * r['device_fit_of_peak']:.0f}% | "
                  f"{r['cpu_fit_s'] * 1e3:.1f} | {r['speedup_vs_cpu']:.1f}x |")
    md.append("")
    md.append(f"total {report['seconds']} s")
    with open(os.path.join(args.out_dir, "gpu_check.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if report["gpu_tests"].get("exit_code", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
