"""The device layer on a machine without a GPU.

The CuPy fast path of the kernels is written against the NumPy-compatible API, so it is
run here on NumPy and held equal to the compiled CPU path; what needs a real GPU lives in
``tests/test_gpu.py`` (marker ``gpu``).
"""

from __future__ import annotations

import importlib.util

import dask.array as da
import numpy as np
import pytest

from dclust import DclustError
from dclust._xp import numpy_like, to_host
from dclust.kernels import lloyd as L
from dclust.runtime.device import check_device, resolve_device, to_device

HAS_CUPY = importlib.util.find_spec("cupy") is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [3, 40, 300, 1100])
@pytest.mark.parametrize("weighted", [False, True])
def test_device_path_equals_compiled_path(rng, dtype, k, weighted):
    X = rng.normal(size=(2500, 9)).astype(dtype)
    X[10] = X[11]  # a tie among the far rows must be ordered the same way
    C = rng.normal(size=(k, 9))
    w = rng.random(2500) if weighted else None
    ref = L._lloyd_numpy(X, C, w, 12, 1000)
    got = L._lloyd_dense(np, np.add.at, X, C, w, 12, 1000, tile=600)
    assert set(got) == set(ref)
    for key, value in ref.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(got[key], value, rtol=1e-10, atol=1e-10, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    lab_ref, d_ref = L._nearest_numpy(X, C)
    lab, d = L._nearest_dense(np, X, C, tile=700)
    np.testing.assert_array_equal(lab, lab_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-12)


def test_device_path_handles_empty_chunks_and_integer_data(rng):
    C = rng.normal(size=(4, 3))
    empty = L._lloyd_dense(np, np.add.at, np.zeros((0, 3), np.float32), C, None, 5, 0)
    assert empty["weights"].shape == (4,) and empty["weights"].sum() == 0
    assert empty["far_row"].shape == (0,)
    Xi = rng.integers(-5, 5, size=(100, 3))
    ref = L._lloyd_numpy(Xi, C, None, 3, 0)
    got = L._lloyd_dense(np, np.add.at, Xi, C, None, 3, 0)
    np.testing.assert_allclose(got["sums"], ref["sums"])
    np.testing.assert_array_equal(got["far_row"], ref["far_row"])


def test_device_tile_is_bounded():
    rows = L.device_tile_rows(4096, 128)
    assert rows * (4 * 4096 + 8 * 128) <= L.DEVICE_TILE_BYTES
    assert L.device_tile_rows(10**9, 10**6) == 1024


def test_numpy_like_and_to_host():
    import array_api_strict as xps

    mod, add = numpy_like(np)
    assert mod is np and add == np.add.at
    assert numpy_like(xps) == (None, None)
    tree = {"a": np.ones(2), "b": [np.zeros(1), (3, 4.0)]}
    assert to_host(tree)["b"][1] == (3, 4.0)


@pytest.mark.parametrize("bad", ["gpu", "cuda:1", 0, None])
def test_bad_device_values(bad):
    with pytest.raises(DclustError, match="device="):
        check_device(bad)


def test_auto_is_cpu_without_gpus(dask_client):
    assert check_device("CUDA") == "cuda"
    assert resolve_device("cpu") == "cpu"
    if HAS_CUPY:
        pytest.skip("CuPy is installed here; the GPU tests cover this machine")
    assert resolve_device("auto", dask_client) == "cpu"
    with pytest.raises(DclustError, match=r"device='cuda' but 2 of 2 workers have no usable GPU.*pip install 'dclust\[gpu\]'"):
        resolve_device("cuda", dask_client)


def test_to_device_is_identity_on_cpu():
    X = da.ones((10, 2), chunks=5)
    assert to_device(X, "cpu") is X
    assert to_device(None, "cuda") is None


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_kmeans_device_cuda_without_gpu_is_a_clear_error(blobs):
    from dclust import KMeans

    X, _, _ = blobs
    with pytest.raises(DclustError, match=r"device='cuda' but 2 of 2 workers have no usable GPU"):
        KMeans(3, device="cuda", random_state=0, progress=False).fit(X)
    km = KMeans(3, device="auto", random_state=0, progress=False).fit(X)
    km.set_params(device="cuda")
    with pytest.raises(DclustError, match=r"needs CuPy, which is not installed here.*dclust\[gpu\]"):
        km.predict(X)
    with pytest.raises(DclustError, match=r"device='gpu' is not one of"):
        KMeans(3, device="gpu").fit(X)
