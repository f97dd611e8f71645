"""Every algorithm on CuPy equals its NumPy fit (marker ``gpu``; skipped without a GPU).

Run on a GPU machine with ``python -m pytest -m gpu tests/test_gpu.py`` (or through
``benchmarks/gpu_check.py``, which also times the passes).
"""

from __future__ import annotations

import numpy as np
import pytest

from dclust.runtime.gpus import gpu_count

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(gpu_count() < 1, reason="needs CuPy and a CUDA GPU"),
]


@pytest.fixture(scope="module")
def gpu_client():
    """A one-worker in-process cluster (one GPU, two threads) for this module."""
    from distributed import Client, LocalCluster

    import dclust

    previous = dclust.get_client()
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    client = Client(cluster, set_as_default=True)
    dclust.connect(cluster.scheduler_address, quiet=True)
    yield client
    client.close()
    cluster.close()
    dclust.connect(previous.scheduler.address, quiet=True)


def _blobs(n, d, k, seed=0):
    from dclust.testing import make_blobs

    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, random_state=seed)
    return X.astype(np.float32)


@pytest.mark.parametrize("k", [8, 300])
def test_lloyd_kernel_cupy_equals_numpy(k):
    import cupy

    from dclust.kernels.lloyd import lloyd_partial, nearest_center

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 16)).astype(np.float32)
    C = rng.normal(size=(k, 16))
    w = rng.random(20000)
    ref = lloyd_partial(X, C, w, n_far=5, row_offset=3)
    got = lloyd_partial(cupy.asarray(X), C, cupy.asarray(w), n_far=5, row_offset=3)
    for key, value in ref.items():
        g = got[key].get() if hasattr(got[key], "get") else np.asarray(got[key])
        np.testing.assert_allclose(g, value, rtol=1e-5, atol=1e-6, err_msg=key)
    lab_ref, _ = nearest_center(X, C)
    lab, _ = nearest_center(cupy.asarray(X), C)
    assert (lab.get() == lab_ref).mean() > 0.999


def test_kmeans_cuda_equals_cpu(gpu_client):
    from dclust import KMeans

    X = _blobs(200_000, 32, 16)
    init = X[:16].astype(np.float64)
    cpu = KMeans(16, init=init, max_iter=20, tol=0, device="cpu", progress=False).fit(X)
    gpu = KMeans(16, init=init, max_iter=20, tol=0, device="cuda", progress=False).fit(X)
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, rtol=1e-4, atol=1e-4)
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-5)
    np.testing.assert_array_equal(np.asarray(gpu.labels_), np.asarray(cpu.labels_))


def test_kmeans_cuda_streamed_from_zarr(gpu_client, tmp_path):
    import dclust

    X = _blobs(100_000, 16, 8)
    dclust.write_array(X, str(tmp_path / "x.zarr"))
    Xz = dclust.open_array(str(tmp_path / "x.zarr"))
    init = X[:8].astype(np.float64)
    cpu = dclust.KMeans(8, init=init, max_iter=10, tol=0, cache="none", device="cpu", progress=False).fit(Xz)
    gpu = dclust.KMeans(8, init=init, max_iter=10, tol=0, cache="none", device="cuda", progress=False).fit(Xz)
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, rtol=1e-4, atol=1e-4)


def test_auto_picks_cuda(gpu_client):
    from dclust.runtime.device import resolve_device

    assert resolve_device("auto", gpu_client) == "cuda"


def test_kmedoids_cuda_equals_cpu(gpu_client):
    import dclust

    X = _blobs(20_000, 8, 5)
    cpu = dclust.KMedoids(5, random_state=0, device="cpu", progress=False).fit(X)
    gpu = dclust.KMedoids(5, random_state=0, device="cuda", progress=False).fit(X)
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-4)
    assert gpu.score(X) == pytest.approx(-gpu.inertia_, rel=1e-4)
    np.testing.assert_allclose(gpu.transform(X[:100]), cpu.transform(X[:100]), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "manhattan", "cosine"])
def test_medoid_kernels_cupy_equal_numpy(metric):
    import cupy

    from dclust.kernels.medoids import medoid_assign, medoid_cost_partial, medoid_refine_partial
    from dclust.kernels.metrics import pairwise_distances

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 8)) + 3
    M = X[[3, 50, 200, 999]]
    cand = np.stack([X[[1, 2]], X[[4, 5]], X[[6, 7]], X[[8, 9]]])
    ok = np.ones((4, 2), bool)
    swaps = X[[10, 11, 12]]
    g = cupy.asarray
    np.testing.assert_allclose(pairwise_distances(g(X), g(M), metric).get(),
                               pairwise_distances(X, M, metric), rtol=1e-10, atol=1e-12)
    lab, dist = medoid_assign(g(X), g(M), metric)
    lab_ref, dist_ref = medoid_assign(X, M, metric)
    np.testing.assert_array_equal(lab, lab_ref)
    sets = np.array([[0, 1, 2, 3], [0, 0, 1, 2]])
    np.testing.assert_allclose(medoid_cost_partial(g(X), g(M), sets, metric)["cost"],
                               medoid_cost_partial(X, M, sets, metric)["cost"], rtol=1e-10)
    args = (np.array([3, 50, 200, 999]),)
    s1 = medoid_refine_partial(X, M, *args, cand, ok, metric, swap_candidates=swaps, n_swap=4)
    s2 = medoid_refine_partial(g(X), g(M), *args, g(cand), ok, metric, swap_candidates=g(swaps),
                               n_swap=4)
    for key in ("loss", "size", "own", "cand_sum", "swap_shared", "swap_accum"):
        np.testing.assert_allclose(np.asarray(s2[key]), s1[key], rtol=1e-9, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sinkhorn_kernels_cupy_equal_numpy(dtype):
    import cupy

    from dclust.kernels import sinkhorn as S

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 16)).astype(dtype)
    st = S.SinkhornState(kind="points", g=rng.normal(size=33), eps=0.05, centers=rng.normal(size=(32, 16)),
                         scale=3.0, virtual=True, log_mass=-np.log(20_000.0), want_sums=True)
    w = rng.random(20_000)
    ref = S.sinkhorn_partial(X, st, w)
    got = S.sinkhorn_partial(cupy.asarray(X), st, cupy.asarray(w))
    rtol = 2e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(S.column_log_sums(got), S.column_log_sums(ref), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(got["sums"], ref["sums"], rtol=10 * rtol, atol=1e-6)
    lab = S.sinkhorn_assign_block(cupy.asarray(X), st, None, what="labels").get()
    assert (lab == S.sinkhorn_assign_block(X, st, None, what="labels")).mean() > 0.999


def test_balanced_kmeans_cuda_equals_cpu(gpu_client):
    import dclust

    X = _blobs(20_000, 8, 4)
    kw = dict(random_state=0, progress=False, size_tolerance=0)
    cpu = dclust.BalancedKMeans(4, device="cpu", **kw).fit(X)
    gpu = dclust.BalancedKMeans(4, device="cuda", **kw).fit(X)
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, rtol=1e-3, atol=1e-3)
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-3)
    np.testing.assert_array_equal(np.bincount(np.asarray(gpu.labels_), minlength=4),
                                  np.bincount(np.asarray(cpu.labels_), minlength=4))


def test_sinkhorn_assign_cuda_equals_cpu(gpu_client):
    import dclust

    C = np.random.default_rng(0).random((50_000, 16))
    cpu = dclust.sinkhorn_assign(C, reg=0.05, chunks=10_000, device="cpu")
    gpu = dclust.sinkhorn_assign(C, reg=0.05, chunks=10_000, device="cuda")
    np.testing.assert_allclose(gpu.potentials, cpu.potentials, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(gpu.labels.compute(), cpu.labels.compute())
