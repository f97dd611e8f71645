"""A fit over a Zarr array several times larger than the workers' memory (cache="auto").

    python benchmarks/bench_outofcore.py                          # 2 x 512 MiB, 4.2x the limits
    python benchmarks/bench_outofcore.py --workers 2 --memory-limit 512MiB --ratio 4.2 --max-iter 3

Starts real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1 with a memory
limit each, writes a float32 blob dataset of ``ratio`` times their total limit to Zarr
(uncompressed, chunk by chunk from two threads), fits k-means on it with
``cache="auto"`` (which streams it from Zarr on every pass, since it cannot be kept in
memory) and prints:

- data size, per-worker limits and their total;
- each worker's peak resident memory: the kernel's high-water mark (``ru_maxrss``) of the
  worker process at the end, and the largest RSS seen by a sampler every 0.2 s;
- time per pass (the sampling pass of k-means||, every Lloyd iteration, the final one;
  the first pass of each kind includes compiling the kernels on the workers);
- whether any worker was paused, restarted or lost (worker status sampled with the
  memory, worker process ids before and after, and the workers' logs).

The slow test ``tests/test_reliability.py::test_fit_larger_than_memory`` runs this with
its defaults and asserts the last point.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

MiB = 2**20


def parse_bytes(text) -> int:
    from dask.utils import parse_bytes as pb

    return int(pb(text))


def write_blobs(path, n_rows, n_features, chunk_rows, n_centers=8, threads=2, seed=0, n_bases=4):
    """Write float32 blobs to a new uncompressed Zarr array, chunks in parallel.

    Drawing gigabytes of normal numbers would take longer than the fit on a small
    machine: ``n_bases`` blocks of blobs are drawn once (seeded) and chunk ``i`` is block
    ``i % n_bases`` shifted by a small per-chunk offset, so writing costs little more than
    the I/O and every chunk still differs.
    """
    import zarr

    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10, 10, size=(n_centers, n_features)).astype(np.float32)
    bases = []
    for _ in range(n_bases):
        block = rng.standard_normal((chunk_rows, n_features), dtype=np.float32)
        block += centers[rng.integers(n_centers, size=chunk_rows)]
        bases.append(block)
    z = zarr.create_array(store=path, shape=(n_rows, n_features), chunks=(chunk_rows, n_features),
                          dtype="float32", compressors=None, overwrite=True)

    def one(i):
        s = i * chunk_rows
        e = min(s + chunk_rows, n_rows)
        z[s:e] = bases[i % n_bases][: e - s] + np.float32(1e-3 * (i % 997))

    n_chunks = -(-n_rows // chunk_rows)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n_chunks)))
    return z


def warm_kernels(n_features):
    """Compile the fit's kernels here, so that the workers load them from numba's cache.

    Compiling a kernel the first time on a machine takes LLVM about 100 MiB for a few
    seconds; in a worker limited to a few hundred MiB that alone can cross the nanny's
    95 % line and get the worker restarted, which is not what this run measures.
    """
    from dclust.kernels.datastats import data_stats_partial
    from dclust.kernels.lloyd import lloyd_partial, nearest_center

    X = np.random.default_rng(0).random((64, n_features), dtype=np.float32)
    C = X[:4].astype(np.float64)
    read_only = X.copy()
    read_only.setflags(write=False)  # chunks read from Zarr are read-only: a numba type of their own
    for A in (X, read_only):
        data_stats_partial(A)
        lloyd_partial(A, C, n_far=4)
        nearest_center(A, C)


def _rss():
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class Sampler:
    """Polls every worker's RSS and status from a thread."""

    def __init__(self, client, every=0.2):
        self.client, self.every = client, every
        self.peak = {}
        self.statuses = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                for addr, rss in self.client.run(_rss).items():
                    self.peak[addr] = max(self.peak.get(addr, 0), rss)
                for addr, info in self.client.scheduler_info(n_workers=-1)["workers"].items():
                    self.statuses.setdefault(addr, set()).add(str(info.get("status", "running")))
            except Exception:  # a worker going away must not end the sampling
                pass
            self.stop.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


_TROUBLE = re.compile(r"Pausing worker|paused|Restarting worker|exceeded \d+% memory|"
                      r"Worker process \d+ was killed|Nanny .* restart", re.IGNORECASE)


def run(*, workers=2, memory_limit="512MiB", ratio=4.2, n_features=16, chunk_mib=16,
        n_clusters=8, max_iter=3, init="k-means||", directory=None, quiet=False):
    """Write the data, fit, and return the figures as a dict (see the module docstring)."""
    import dclust
    from dclust.runtime.progress import Progress
    from dclust.testing.processes import process_cluster

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    limit = parse_bytes(memory_limit)
    total = workers * limit
    row_bytes = 4 * n_features
    chunk_rows = max(1, chunk_mib * MiB // row_bytes)
    n_rows = -(-int(ratio * total) // row_bytes)
    n_rows = -(-n_rows // chunk_rows) * chunk_rows
    directory = directory or tempfile.mkdtemp(prefix="dclust-outofcore-")
    path = os.path.join(directory, "blobs.zarr")
    t0 = time.perf_counter()
    write_blobs(path, n_rows, n_features, chunk_rows, n_centers=n_clusters)
    t_write = time.perf_counter() - t0
    data_bytes = n_rows * row_bytes
    say(f"data: {n_rows:,} x {n_features} float32 = {data_bytes / MiB:,.0f} MiB in "
        f"{n_rows // chunk_rows} chunks of {chunk_mib} MiB (written in {t_write:.1f} s)")
    say(f"workers: {workers} x {limit / MiB:.0f} MiB = {total / MiB:.0f} MiB; data / limits = "
        f"{data_bytes / total:.2f}")
    warm_kernels(n_features)
    cluster = process_cluster(workers, nthreads=1, memory_limit=memory_limit,
                              directory=os.path.join(directory, "procs"))
    client = None
    marks = []
    orig = Progress.update

    def update(self, phase, iteration, **kw):
        marks.append((phase, iteration, time.perf_counter()))
        return orig(self, phase, iteration, **kw)

    try:
        client = dclust.connect(cluster.address, quiet=True)
        pids_before = client.run(os.getpid)
        X = dclust.open_array(path, chunks=chunk_rows)  # one stored chunk per task
        Progress.update = update
        with Sampler(client) as sampler, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t1 = time.perf_counter()
            marks.append(("start", 0, t1))
            if init == "rows":  # spread rows as the initial centres: no sampling pass
                step = n_rows // n_clusters
                init = np.stack([np.asarray(X[i * step].compute(), np.float64) for i in range(n_clusters)])
            km = dclust.KMeans(n_clusters, init=init, max_iter=max_iter, random_state=0,
                               cache="auto", progress=False).fit(X)
            t_fit = time.perf_counter() - t1
        Progress.update = orig
        pids_after = client.run(os.getpid)
        peak = client.run(_peak_rss)
        names = {a: i.get("name") for a, i in client.scheduler_info(n_workers=-1)["workers"].items()}
        logs = cluster.logs()  # before the teardown, which logs its own terminations
    finally:
        Progress.update = orig
        if client is not None:
            client.close()
        cluster.close()
    trouble = sorted({m.group(0) for m in _TROUBLE.finditer(logs)})
    paused = {names.get(a, a): sorted(s) for a, s in sampler.statuses.items() if s - {"running"}}
    restarted = pids_before != pids_after
    steps = [(f"{p} {i}", t - marks[j][2]) for j, (p, i, t) in enumerate(marks[1:])]
    n_passes = km.n_passes_
    final = t_fit - (marks[-1][2] - t1)
    say(f"fit: {t_fit:.1f} s, {n_passes} passes, {km.n_iter_} iterations "
        f"({data_bytes / MiB * n_passes / t_fit:,.0f} MiB/s read)")
    for name, dt in steps:
        say(f"  {name:>8}: {dt:6.2f} s")
    say(f"  {'final':>8}: {final:6.2f} s (inertia of the final centres)")
    for addr in sorted(peak, key=lambda a: str(names.get(a))):
        say(f"worker {names.get(addr)}: peak RSS {peak[addr] / MiB:.0f} MiB (sampled max "
            f"{sampler.peak.get(addr, 0) / MiB:.0f} MiB) of a {limit / MiB:.0f} MiB limit")
    say(f"paused: {paused or 'no'}; restarted or lost: {'yes' if restarted else 'no'}; "
        f"memory messages in the logs: {trouble or 'none'}")
    return {
        "data_bytes": data_bytes, "limit": limit, "workers": workers, "t_write": t_write,
        "t_fit": t_fit, "n_passes": n_passes, "steps": steps, "final": final,
        "peak": {names.get(a): v for a, v in peak.items()},
        "sampled": {names.get(a): v for a, v in sampler.peak.items()},
        "paused": paused, "restarted": restarted, "trouble": trouble, "logs": logs,
        "inertia": km.inertia_, "centers": km.cluster_centers_,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="512MiB")
    p.add_argument("--ratio", type=float, default=4.2, help="data size / total memory limit")
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--chunk-mib", type=int, default=16)
    p.add_argument("-k", type=int, default=8)
    p.add_argument("--max-iter", type=int, default=3)
    p.add_argument("--init", default="k-means||", choices=("k-means||", "k-means++", "random", "rows"),
                   help="'rows': k rows spread over the data (skips the sampling pass)")
    p.add_argument("--dir", default=None, help="where the data goes (default: a new temporary folder)")
    a = p.parse_args(argv)
    res = run(workers=a.workers, memory_limit=a.memory_limit, ratio=a.ratio, n_features=a.features,
              chunk_mib=a.chunk_mib, n_clusters=a.k, max_iter=a.max_iter, init=a.init,
              directory=a.dir)
    return 1 if (res["paused"] or res["restarted"] or res["trouble"]) else 0


if __name__ == "__main__":
    sys.exit(main())
