"""Cosine (spherical) k-means: dclust's objective and speed against FAISS's (issue 18).

Run from the repository root::

    python benchmarks/bench_cosine.py            # n=500k, d=64, k=256, 10 iterations
    python benchmarks/bench_cosine.py --quick    # n=100k, d=32, k=64, 5 iterations

Both systems get the same unit-normalised float32 data and the same init array (``k``
rows of it) and run a fixed number of iterations: dclust
``KMeans(metric="cosine", tol=0, max_iter=m)`` (which normalises each chunk's rows again
as it reads them: that cost is part of its figure) and FAISS
``Kmeans(d, k, niter=m, spherical=True)``, without its subsampling. The objective
``sum(1 - cos)`` of each final centre set (each row to its most similar centre) is
computed by the same NumPy function on the same data; the ratio dclust / FAISS says
whether dclust's iterations reach as good a solution (1.00 is the same). Seconds per
iteration are *marginal*: a fit of ``2 + m`` iterations minus a fit of 2, divided by
``m``, so start-up and data placement cancel out. dclust runs on its embedded local
cluster with the data persisted; FAISS runs in a fresh Python process on all cores.
One JSON line and one Markdown row are printed on stdout, the progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_kmeans  # noqa: E402
import machine  # noqa: E402

SIZES = {"full": dict(n=500_000, d=64, k=256, m=10), "quick": dict(n=100_000, d=32, k=64, m=5)}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_unit_data(n, d, k, seed=0):
    """Rows around ``k`` random directions with spread, scaled to unit norm (float32)."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(k, d)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    X = dirs[rng.integers(0, k, n)] + rng.normal(scale=0.5 / np.sqrt(d), size=(n, d)).astype(
        np.float32) * 4.0
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X, dtype=np.float32)


def cosine_objective(U, C, block=65536):
    """``sum(1 - max_j cos(u, c_j))`` over the rows of ``U``, in float64, the centres
    scaled to unit norm first (the same function judges both systems)."""
    C = np.asarray(C, dtype=np.float64)
    C = C / np.linalg.norm(C, axis=1, keepdims=True)
    total = 0.0
    for s in range(0, U.shape[0], block):
        cos = U[s:s + block].astype(np.float64) @ C.T
        total += float((1.0 - cos.max(axis=1)).sum())
    return total


def marginal(fit, m, repeats):
    """bench_kmeans' marginal seconds per iteration, and the centres of a fit of ``m``
    iterations."""
    return bench_kmeans.marginal(fit, m, repeats), fit(m)


def run_dclust(Xp, C, m, repeats):
    import dclust

    def fit(it):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km = dclust.KMeans(C.shape[0], init=C, max_iter=it, tol=0, metric="cosine",
                               progress=False).fit(Xp)
        assert km.n_iter_ == it, (km.n_iter_, it)
        return np.asarray(km.cluster_centers_, dtype=np.float64)

    return marginal(fit, m, repeats)


def run_faiss(U, C, m, repeats):
    import faiss

    faiss.omp_set_num_threads(os.cpu_count())
    d, k = U.shape[1], C.shape[0]

    def fit(it):
        km = faiss.Kmeans(d, k, niter=it, spherical=True, max_points_per_centroid=1 << 30,
                          min_points_per_centroid=1, seed=1, verbose=False)
        km.train(U, init_centroids=C.astype(np.float32))
        return np.asarray(km.centroids, dtype=np.float64)

    return marginal(fit, m, repeats)


def peer_main(data, init, m, repeats, out):
    sec, centres = run_faiss(np.load(data), np.load(init), m, repeats)
    np.save(out, centres)
    print(json.dumps({"system": "faiss", "seconds": sec}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the small size (a minute or two)")
    ap.add_argument("--iters", type=int, help="iterations (default 10, --quick 5)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--peer-data", help=argparse.SUPPRESS)
    ap.add_argument("--peer-init", help=argparse.SUPPRESS)
    ap.add_argument("--peer-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    size = dict(SIZES["quick" if args.quick else "full"])
    m = args.iters or size.pop("m")
    size.pop("m", None)
    if args.peer:
        return peer_main(args.peer_data, args.peer_init, m, args.repeats, args.peer_out)

    import dask.array as da
    from distributed import wait

    import dclust

    n, d, k = size["n"], size["d"], size["k"]
    desc = machine.describe()
    log(f"machine: {desc['label']}, {desc['cores']} cores")
    U = make_unit_data(n, d, k)
    C = U[np.sort(np.random.default_rng(0).choice(n, k, replace=False))].astype(np.float64)
    client = dclust.get_client()
    Xp = client.persist(da.from_array(U, chunks=(-(-n // 8), d)))
    wait(Xp)
    with tempfile.TemporaryDirectory() as tmp:
        data, init, out = (os.path.join(tmp, f) for f in ("X.npy", "C.npy", "faiss.npy"))
        np.save(data, U)
        np.save(init, C)
        log(f"dclust: n={n:,} d={d} k={k}, {m} iterations")
        sec_d, cen_d = run_dclust(Xp, C, m, args.repeats)
        log("faiss (own process)")
        res = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--peer", "--peer-data", data,
             "--peer-init", init, "--peer-out", out, "--iters", str(m),
             "--repeats", str(args.repeats)] + (["--quick"] if args.quick else []),
            check=True, capture_output=True, text=True)
        sec_f = float(json.loads(res.stdout.strip().splitlines()[-1])["seconds"])
        cen_f = np.load(out)
    obj_d, obj_f = cosine_objective(U, cen_d), cosine_objective(U, cen_f)
    peak, bw = machine.sgemm_peak(), machine.read_bandwidth()
    limit = machine.limit_seconds(n, d, k, 4, peak, bw)
    row = {"bench": "cosine-kmeans", "n": n, "d": d, "k": k, "iters": m,
           "dclust_s_per_iter": sec_d, "faiss_s_per_iter": sec_f,
           "time_ratio_dclust_faiss": sec_d / sec_f, "limit_s_per_iter": limit,
           "dclust_objective": obj_d, "faiss_objective": obj_f,
           "objective_ratio_dclust_faiss": obj_d / obj_f, "machine": desc["label"],
           "cores": desc["cores"]}
    print(json.dumps(row))
    print(f"| {n:,} x {d}, k={k} | {m} | {sec_d:.4f} | {sec_f:.4f} | {sec_d / sec_f:.2f} | "
          f"{limit:.4f} | {obj_d:.6g} | {obj_f:.6g} | {obj_d / obj_f:.4f} |")


if __name__ == "__main__":
    main()
