"""dclust.validation: the input checks and their messages."""

from __future__ import annotations

import re

import dask.array as da
import numpy as np
import pytest

from dclust.exceptions import DclustTypeError, DclustValueError
from dclust.validation import (
    as_dask_rows,
    check_n_clusters,
    check_param,
    check_random_state,
    check_sample_weight,
    default_row_chunk,
)


def test_default_row_chunk():
    assert default_row_chunk(16, 4, target_bytes=64 * 2**20) == 2**20
    assert default_row_chunk(10**9, 8) == 1  # one huge row still makes a chunk
    assert default_row_chunk(10, 8, target_bytes=800) == 10


@pytest.mark.parametrize("dtype, expected", [
    (np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float32),
    (np.int32, np.float64), (np.int64, np.float64), (np.uint8, np.float64), (bool, np.float64),
])
def test_float_dtypes(dtype, expected):
    x = np.ones((4, 2), dtype=dtype)
    assert as_dask_rows(x).dtype == expected
    assert as_dask_rows(da.from_array(x, chunks=2)).dtype == expected


def test_numpy_stays_numpy_without_copy():
    x = np.ones((4, 2), np.float32)
    out = as_dask_rows(x)
    assert out is x
    assert isinstance(as_dask_rows([[1, 2], [3, 4]]), np.ndarray)


def test_dask_float_passes_through():
    x = da.ones((10, 3), chunks=(5, 3))
    assert as_dask_rows(x) is x


def test_zarr_array_object(tmp_path):
    import zarr

    z = zarr.create_array(store=str(tmp_path / "z.zarr"), shape=(20, 3), chunks=(5, 3), dtype="i2")
    z[...] = np.arange(60).reshape(20, 3)
    X = as_dask_rows(z)
    assert isinstance(X, da.Array) and X.dtype == np.float64 and X.chunks[1] == (3,)
    np.testing.assert_array_equal(X.compute(), np.arange(60).reshape(20, 3))


def test_ragged_list():
    with pytest.raises(DclustValueError, match=r"X cannot be read as a 2-D numeric array"):
        as_dask_rows([[1, 2], [3]])


def test_scalar():
    with pytest.raises(DclustValueError, match=re.escape("got an array of shape (). Pass a table of samples")):
        as_dask_rows(np.float64(3))


def test_object_with_strings():
    with pytest.raises(DclustTypeError, match=r"X has dtype 'object' holding values that are not numbers \(.*'a'.*\); dclust needs numbers"):
        as_dask_rows(np.array([[1, "a"]], dtype=object))


def test_object_with_none_becomes_nan():
    out = as_dask_rows(np.array([[1.0, None]], dtype=object))
    assert out.dtype == np.float64 and np.isnan(out[0, 1])


def test_complex_rejected():
    with pytest.raises(DclustValueError, match=r"Complex data not supported: X has dtype 'complex128'; .* np\.hstack\(\[X\.real, X\.imag\]\)"):
        as_dask_rows(np.ones((3, 2), complex))


def test_empty_dask_reported_before_chunking():
    with pytest.raises(DclustValueError, match=re.escape("X has 0 sample(s) (shape=(0, 3))")):
        as_dask_rows(da.zeros((0, 3), chunks=1))


@pytest.mark.parametrize("k", [0, -1, 2.5, "3", True, None])
def test_check_n_clusters_type(k):
    with pytest.raises(DclustValueError, match=re.escape(f"n_clusters={k!r} must be a positive integer.")):
        check_n_clusters(k, 10)


def test_check_n_clusters():
    assert check_n_clusters(np.int64(3), 10) == 3
    assert check_n_clusters(10, 10) == 10
    with pytest.raises(DclustValueError, match=re.escape("n_samples=40 must be >= n_clusters=64. Lower n_clusters")):
        check_n_clusters(64, 40)


def test_check_sample_weight():
    assert check_sample_weight(None, 5) is None
    assert check_sample_weight(2.0, 5) is None
    w = check_sample_weight([1, 2, 3], 3)
    assert w.dtype == np.float64
    np.testing.assert_array_equal(w, [1, 2, 3])
    wd = check_sample_weight(da.ones(3, chunks=2, dtype=np.int32), 3)
    assert isinstance(wd, da.Array) and wd.dtype == np.float64


@pytest.mark.parametrize("w", [0, -1.0, np.nan, np.inf])
def test_check_sample_weight_bad_scalar(w):
    with pytest.raises(DclustValueError, match=re.escape(f"sample_weight={w!r} must be a positive number.")):
        check_sample_weight(w, 5)


def test_check_sample_weight_shape_and_dtype():
    with pytest.raises(DclustValueError, match=re.escape("sample_weight has shape (3, 1); expected (3,), one weight per row of X.")):
        check_sample_weight(np.ones((3, 1)), 3)
    with pytest.raises(DclustTypeError, match=re.escape("sample_weight has dtype '<U1'; expected numbers.")):
        check_sample_weight(np.array(["a", "b"]), 2)


def test_check_sample_weight_values():
    w = np.ones(2000)
    w[[1500, 1700]] = -2.0
    with pytest.raises(DclustValueError, match=re.escape(
            "sample_weight has 2 negative or non-finite values (first at row 1,500: -2.0); "
            "weights must be finite and >= 0. Fix those weights")):
        check_sample_weight(w, 2000)
    with pytest.raises(DclustValueError, match="sample_weight is zero everywhere"):
        check_sample_weight(np.zeros(3), 3)


def test_check_random_state():
    assert check_random_state(5) == 5
    assert check_random_state(np.random.default_rng(0)) == check_random_state(np.random.default_rng(0))
    assert isinstance(check_random_state(np.random.RandomState(0)), int)
    assert 0 <= check_random_state(None) < 2**63
    with pytest.raises(DclustValueError, match=re.escape("random_state=-1 must be a non-negative integer.")):
        check_random_state(-1)
    with pytest.raises(DclustValueError, match=re.escape("random_state='x' must be None, an integer")):
        check_random_state("x")


def test_check_param():
    assert check_param("tol", 0.5, kind=float, low=0) == 0.5
    with pytest.raises(DclustValueError, match=re.escape("cache='disk' is not valid; expected one of 'auto', 'none'.")):
        check_param("cache", "disk", options=("auto", "none"))
    with pytest.raises(DclustValueError, match=re.escape("max_iter=True must be of type int.")):
        check_param("max_iter", True, kind=int)
    with pytest.raises(DclustValueError, match=re.escape("tol=-1 must be >= 0.")):
        check_param("tol", -1, low=0)
    with pytest.raises(DclustValueError, match=re.escape("f=0 must be > 0.")):
        check_param("f", 0, low=0, low_inclusive=False)
    with pytest.raises(DclustValueError, match=re.escape("p=5 must be <= 3.")):
        check_param("p", 5, high=3)
