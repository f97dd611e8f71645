"""Every algorithm on CuPy equals its NumPy fit (marker ``gpu``; skipped without a GPU).

Run on a GPU machine with ``python -m pytest -m gpu tests/test_gpu.py`` (or through
``benchmarks/gpu_check.py``, which also times the passes).
"""

from __future__ import annotations

import numpy as np
import pytest

from dclust.runtime.device import _gpu_count

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_gpu_count() < 1, reason="needs CuPy and a CUDA GPU"),
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
    dclust = pytest.importorskip("dclust")
    KMedoids = dclust.KMedoids
    X = _blobs(20_000, 8, 5)
    cpu = KMedoids(5, random_state=0, device="cpu").fit(X)
    gpu = KMedoids(5, random_state=0, device="cuda").fit(X)
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-4)


def test_balanced_kmeans_cuda_equals_cpu(gpu_client):
    import dclust

    X = _blobs(20_000, 8, 4)
    cpu = dclust.BalancedKMeans(4, random_state=0, device="cpu").fit(X)
    gpu = dclust.BalancedKMeans(4, random_state=0, device="cuda").fit(X)
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, rtol=1e-3, atol=1e-3)
