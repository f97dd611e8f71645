"""Quality of dclust's default k-means|| against scikit-learn's k-means++, seed by seed.

Run from the repository root::

    python benchmarks/bench_init.py                 # both shapes, 10 seeds (about 20 min)
    python benchmarks/bench_init.py --shapes blobs40 --seeds 3
    python benchmarks/bench_init.py --large-k       # client time of kmeans_parallel, k=4096

For every seed the data are drawn again (``make_blobs`` with ``random_state=seed``) and
four fits run on them: scikit-learn ``KMeans(n_init=20)`` (the reference: the best of
20 k-means++ runs), scikit-learn ``KMeans(n_init=1)``, and dclust ``KMeans`` with its
default parameters (init="k-means||", n_init=1), once with the seeding of this tree
("after") and once with ``dclust/kernels/seeding.py`` as it was at ``--before-rev``
("before": loaded from git and swapped in for the fit, nothing else differs). Every
inertia is recomputed the same way (float64, exact distances) from the final centres,
and each is shown as a ratio to the reference; ``passes`` is dclust's ``n_passes_``. A
fifth fit, "after, no polish", runs this tree's seeding without the Lloyd iterations on
the sample, to show which passes the better init saves and which the polish saves.

Shapes: ``blobs40`` = 100,000 x 16, 40 equal blobs (std 1 in a box of +-10: well
separated); ``unequal100`` = about 100,000 x 32, 100 blobs whose sizes are drawn from a
flat Dirichlet (the smallest have 20 rows, the largest several thousand).

``--large-k`` times ``kmeans_parallel`` before and after on the sample it gets for
k=4096, d=128 (131,072 float32 rows of 4096 blobs), against one Lloyd iteration over the
same rows (``lloyd_partial``, one thread) and against one Lloyd pass of workload (c) of
bench_kmeans.py (200,000 rows, estimated from the former).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import subprocess
import sys
import time
import warnings
from unittest import mock

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The last commit before the multi-run reduce.
BEFORE_REV = "26af2a0"
SHAPES = {
    "blobs40": dict(n=100_000, d=16, k=40, unequal=False),
    "unequal100": dict(n=100_000, d=32, k=100, unequal=True),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_data(shape, seed):
    from sklearn.datasets import make_blobs

    n, d, k = shape["n"], shape["d"], shape["k"]
    if shape["unequal"]:
        sizes = np.random.default_rng(seed).dirichlet(np.ones(k)) * n
        sizes = np.maximum(sizes.astype(int), 20)
        X, _ = make_blobs(list(sizes), d, cluster_std=1.0, random_state=seed)
    else:
        X, _ = make_blobs(n, d, centers=k, cluster_std=1.0, random_state=seed)
    return np.ascontiguousarray(X, dtype=np.float32)


def inertia(X, C):
    from dclust.kernels.lloyd import nearest_center

    return float(nearest_center(X, np.asarray(C, dtype=np.float64))[1].sum())


def load_before(rev):
    """``dclust/kernels/seeding.py`` at ``rev``, as a module of the installed package."""
    src = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:dclust/kernels/seeding.py"],
                         check=True, capture_output=True, text=True).stdout
    name = "dclust.kernels._seeding_before"
    spec = importlib.util.spec_from_loader(name, loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "dclust.kernels"
    exec(compile(src, f"{rev}:dclust/kernels/seeding.py", "exec"), mod.__dict__)
    sys.modules[name] = mod
    return mod


def sklearn_refs(shape, seeds):
    from sklearn.cluster import KMeans

    out = {}
    for seed in seeds:
        X = make_data(shape, seed)
        t0 = time.perf_counter()
        best = KMeans(shape["k"], n_init=20, random_state=1000 + seed).fit(X)
        single = KMeans(shape["k"], n_init=1, random_state=seed).fit(X)
        out[seed] = {"best20": inertia(X, best.cluster_centers_),
                     "sklearn": inertia(X, single.cluster_centers_)}
        log(f"  seed {seed}: scikit-learn done ({time.perf_counter() - t0:.1f} s)")
    return out


def dclust_fit(X, k, seed, seeding=None):
    """dclust KMeans with default parameters; ``seeding`` replaces kmeans_parallel."""
    import dclust
    import dclust.algorithms.kmeans as driver

    km = dclust.KMeans(k, random_state=seed, progress=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if seeding is None:
            km.fit(X)
        else:
            if not hasattr(driver, "kmeans_parallel"):
                raise RuntimeError("dclust.algorithms.kmeans no longer imports kmeans_parallel; "
                                   "update dclust_fit's patch target.")
            with mock.patch.object(driver, "kmeans_parallel", seeding):
                km.fit(X)
    return {"inertia": inertia(X, km.cluster_centers_), "passes": int(km.n_passes_),
            "seconds": time.perf_counter() - t0}


def table(name, shape, rows):
    k, n, d = shape["k"], shape["n"], shape["d"]
    lines = [f"{name}: n={n:,} d={d} k={k}" + (" (unequal sizes)" if shape["unequal"] else ""),
             "",
             "| seed | best of 20 sklearn | sklearn n_init=1 | dclust before | passes | "
             "dclust after | passes | after, no polish | passes |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    runs = ("before", "after", "nopolish")
    for seed, r in rows.items():
        b = r["best20"]
        cells = [f"{seed}", f"{b:.6g}", f"{r['sklearn'] / b:.4f}"]
        for s in runs:
            cells += [f"{r[s]['inertia'] / b:.4f}", f"{r[s]['passes']}"]
        lines.append("| " + " | ".join(cells) + " |")

    def count(get, tol):
        return sum(get(r) / r["best20"] > 1 + tol for r in rows.values())

    for tol in (0.02, 0.01):
        cells = [f"> {tol:.0%}", "", f"{count(lambda r: r['sklearn'], tol)}"]
        for s in runs:
            cells += [f"{count(lambda r: r[s]['inertia'], tol)}", ""]
        lines.append("| " + " | ".join(cells) + " |")
    worst = max(r["after"]["inertia"] / r["best20"] for r in rows.values())
    mean_p = {s: np.mean([r[s]["passes"] for r in rows.values()]) for s in runs}
    lines.append("")
    lines.append(f"worst dclust-after ratio {worst:.4f}; mean passes: before {mean_p['before']:.1f}, "
                 f"after {mean_p['after']:.1f}, after without polish {mean_p['nopolish']:.1f}")
    return "\n".join(lines)


def large_k(before, threads):
    """Client seconds of kmeans_parallel at k=4096, d=128, before and after."""
    from threadpoolctl import threadpool_limits

    from dclust.kernels import seeding
    from dclust.kernels.lloyd import lloyd_partial

    k, d = 4096, 128
    m = max(50_000, 32 * k)
    rng = np.random.default_rng(0)
    means = rng.normal(size=(k, d)) * 3
    X = (means[rng.integers(k, size=m)] + rng.normal(size=(m, d))).astype(np.float32)
    w = np.ones(m)
    C0 = X[:k].astype(np.float64)
    out = {}
    with threadpool_limits(threads, user_api="blas"):
        lloyd_partial(X[:1000], C0)
        t0 = time.perf_counter()
        lloyd_partial(X, C0)
        out["lloyd_iter_s"] = time.perf_counter() - t0
        for label, mod in (("before", before), ("after", seeding)):
            kw = {"return_info": True} if mod is seeding else {}
            t0 = time.perf_counter()
            C, *rest = mod.kmeans_parallel(X, k, w, np.random.default_rng(1), **kw)
            out[label] = {"seconds": time.perf_counter() - t0,
                          "inertia": float(lloyd_partial(X, C)["inertia"]),
                          "info": rest[1] if len(rest) > 1 else None}
            log(f"  {label}: {out[label]['seconds']:.1f} s")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="blobs40,unequal100", help="comma-separated: " + ", ".join(SHAPES))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--before-rev", default=BEFORE_REV)
    p.add_argument("--large-k", action="store_true", help="only the k=4096 client-time section")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads for --large-k (default: all cores, as the client has)")
    args = p.parse_args(argv)

    import numba
    import sklearn

    info = machine.describe()
    log(f"machine: {info['cores']} cores, {info['cpu']}; numpy {np.__version__}, "
        f"scikit-learn {sklearn.__version__}, numba {numba.__version__}")
    before = load_before(args.before_rev)
    if args.large_k:
        threads = args.threads or os.cpu_count()
        res = large_k(before, threads)
        it = res["lloyd_iter_s"]
        # Workload (c): 200,000 rows on the cluster's cores (the pass runs in parallel).
        c_pass = it * 200_000 / 131_072 / os.cpu_count()
        print(f"kmeans_parallel, k=4096, d=128, 131,072 float32 rows ({threads} BLAS threads); "
              f"one Lloyd iteration over them on one core: {it:.2f} s; one Lloyd pass of "
              f"(c), 200,000 rows on {os.cpu_count()} cores: ~{c_pass:.2f} s")
        print()
        print("| | seconds | Lloyd iterations of the sample | passes of (c) | inertia on the sample |")
        print("|---|---:|---:|---:|---:|")
        for label in ("before", "after"):
            r = res[label]
            print(f"| {label} | {r['seconds']:.1f} | {r['seconds'] / it:.1f} | "
                  f"{r['seconds'] / c_pass:.1f} | {r['inertia']:.5g} |")
            if r["info"] is not None:
                for part, sec in r["info"]["seconds"].items():
                    print(f"| - {part} | {sec:.1f} | {sec / it:.1f} | {sec / c_pass:.1f} | |")
        info = res["after"]["info"]
        print()
        print(f"after: {len(info['trial_sse'])} run(s) of greedy k-means++ with "
              f"{info['n_local_trials']} local trial(s), {info['n_swaps']} swap(s), "
              f"{info['polish_iter']} polish iteration(s)")
        return

    import dclust

    seeds = list(range(args.seeds))
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    refs = {}
    for name in shapes:
        log(f"{name}: scikit-learn references")
        refs[name] = sklearn_refs(SHAPES[name], seeds)
    from dclust.kernels import seeding

    nopolish = functools.partial(seeding.kmeans_parallel, polish_max_iter=0)
    dclust.get_client()
    out = []
    for name in shapes:
        shape = SHAPES[name]
        rows = {}
        for seed in seeds:
            X = make_data(shape, seed)
            r = dict(refs[name][seed])
            r["before"] = dclust_fit(X, shape["k"], seed, before.kmeans_parallel)
            r["after"] = dclust_fit(X, shape["k"], seed)
            r["nopolish"] = dclust_fit(X, shape["k"], seed, nopolish)
            log(f"  {name} seed {seed}: before {r['before']['inertia'] / r['best20']:.4f} "
                f"({r['before']['seconds']:.1f} s), after {r['after']['inertia'] / r['best20']:.4f} "
                f"({r['after']['seconds']:.1f} s)")
            rows[seed] = r
        out.append(table(name, shape, rows))
    print(f"machine: {info['cores']} cores, {info['cpu']}; before = seeding.py at "
          f"{args.before_rev}")
    print()
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
