"""dclust.testing: synthetic blobs generated per chunk, and label comparison up to renaming."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import zarr

import dclust
from dclust.exceptions import DclustValueError, StorageError
from dclust.runtime.compute import compute_count
from dclust.testing import (
    assert_labels_equivalent,
    best_permutation,
    label_agreement,
    make_blobs,
    make_blobs_array,
)
from dclust.validation import default_row_chunk


# ---- make_blobs_array ------------------------------------------------------------------
def test_shapes_chunks_and_dtype():
    X, C, y = make_blobs_array(10_000, 6, 4, chunk_size=3_000, seed=3, return_labels=True)
    assert X.shape == (10_000, 6) and X.dtype == np.float32
    assert X.chunks == ((3_000, 3_000, 3_000, 1_000), (6,))
    assert y.shape == (10_000,) and y.dtype == np.int32 and y.chunks == (X.chunks[0],)
    assert C.shape == (4, 6) and C.dtype == np.float64
    assert (C >= -10).all() and (C <= 10).all()


def test_default_chunk_size_is_about_64_mib():
    # Nothing is computed, so a large array costs nothing here.
    X, _ = make_blobs_array(5_000, 4096, 2, dtype="float64")
    rows = default_row_chunk(4096, 8)
    assert X.chunks[0][0] == rows == 2048
    assert sum(X.chunks[0]) == 5_000


def test_one_task_per_chunk_and_no_data_in_the_graph():
    X, _, y = make_blobs_array(20_000, 8, 5, chunk_size=2_000, seed=1, return_labels=True)
    graph = dict(X.__dask_graph__())
    assert len(graph) == X.numblocks[0] == 10
    assert len(dict(y.__dask_graph__())) == 10
    # The graph holds parameters only: far smaller than the 640 kB of data it makes.
    assert len(pickle.dumps(graph)) < 20_000


def test_same_seed_same_data_and_labels_match_rows():
    X1, C1, y1 = make_blobs_array(4_000, 5, 3, chunk_size=1_000, seed=7, cluster_std=0.0,
                                  return_labels=True)
    X2, C2 = make_blobs_array(4_000, 5, 3, chunk_size=1_000, seed=7, cluster_std=0.0)
    a, b, y = X1.compute(), X2.compute(), y1.compute()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(C1, C2)
    # With zero spread every row is exactly its label's centre.
    np.testing.assert_array_equal(a, C1[y].astype(np.float32))
    assert set(np.unique(y)) == {0, 1, 2}


def test_other_seed_or_chunking_changes_rows_but_chunking_keeps_centres():
    base, C = make_blobs_array(4_000, 5, 3, chunk_size=1_000, seed=7)
    other_seed, C_seed = make_blobs_array(4_000, 5, 3, chunk_size=1_000, seed=8)
    other_chunks, C_chunks = make_blobs_array(4_000, 5, 3, chunk_size=500, seed=7)
    a = base.compute()
    assert not np.array_equal(a, other_seed.compute())
    assert not np.allclose(C, C_seed)
    # Documented: each block has its own stream, so another chunking gives other rows ...
    assert not np.array_equal(a, other_chunks.compute())
    # ... from the same centres.
    np.testing.assert_array_equal(C, C_chunks)


def test_spread_and_given_centres():
    centers = np.array([[0.0, 0.0], [100.0, 100.0]])
    X, C, y = make_blobs_array(6_000, 2, centers, chunk_size=2_000, cluster_std=[0.5, 2.0],
                               seed=0, dtype="float64", return_labels=True)
    np.testing.assert_array_equal(C, centers)
    x, y = X.compute(), y.compute()
    assert x.dtype == np.float64
    for j, std in enumerate((0.5, 2.0)):
        assert abs((x[y == j] - centers[j]).std() - std) < 0.1 * std


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 0}, r"n_samples=0 must be >= 1"),
        ({"dtype": "int8"}, r"dtype='int8' is not valid"),
        ({"center_box": (5, -5)}, r"center_box=\(5, -5\) must be \(low, high\)"),
        ({"cluster_std": -1.0}, r"cluster_std=-1.0 must be a non-negative number"),
        ({"chunk_size": 0}, r"chunk_size=0 must be >= 1"),
        ({"centers": np.zeros((3, 4))}, r"centers has 4 features but n_features=2"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"n_samples": 100, "n_features": 2, "centers": 3, **kwargs}
    with pytest.raises(DclustValueError, match=match):
        make_blobs_array(args.pop("n_samples"), args.pop("n_features"), args.pop("centers"), **args)


# ---- make_blobs (to Zarr) --------------------------------------------------------------
def test_make_blobs_writes_zarr_in_one_computation(tmp_path):
    path = str(tmp_path / "blobs.zarr")
    before = compute_count()
    assert make_blobs(path, 5_000, 4, 3, chunk_size=1_250, seed=2) == path
    assert compute_count() - before == 1
    z = zarr.open_array(path, mode="r")
    assert z.metadata.zarr_format == 3
    assert z.shape == (5_000, 4) and z.chunks == (1_250, 4) and z.dtype == np.float32
    X, C = make_blobs_array(5_000, 4, 3, chunk_size=1_250, seed=2)
    np.testing.assert_array_equal(z[...], X.compute())
    attrs = z.attrs["dclust"]
    assert attrs["kind"] == "blobs"
    assert attrs["generator"]["seed"] == 2 and attrs["generator"]["chunk_size"] == 1_250
    np.testing.assert_allclose(np.array(attrs["centers"]), C)
    # Written under a temporary name and renamed: nothing else is left in the folder.
    assert os.listdir(tmp_path) == ["blobs.zarr"]
    # The file reads back through dclust as the same data.
    np.testing.assert_array_equal(dclust.open_array(path).compute(), z[...])


def test_make_blobs_respects_overwrite(tmp_path):
    path = str(tmp_path / "b.zarr")
    make_blobs(path, 200, 2, 2, seed=0)
    with pytest.raises(StorageError, match="already exists"):
        make_blobs(path, 200, 2, 2, seed=1, overwrite=False)
    np.testing.assert_array_equal(
        zarr.open_array(path, mode="r")[...], make_blobs_array(200, 2, 2, seed=0)[0].compute()
    )
    make_blobs(path, 300, 2, 2, seed=1)
    assert zarr.open_array(path, mode="r").shape == (300, 2)


# ---- label comparison -----------------------------------------------------------------
def test_equivalent_labels_pass():
    a = np.array([0, 0, 1, 1, 2, 2, 2])
    b = np.array([7, 7, 3, 3, 5, 5, 5])
    assert_labels_equivalent(a, b)
    assert best_permutation(a, b) == {0: 7, 1: 3, 2: 5}
    assert label_agreement(a, b) == 1.0
    import dask.array as da

    assert_labels_equivalent(da.from_array(a, chunks=3), b)


def test_different_partitions_fail_with_a_clear_message():
    a = np.array([0, 0, 1, 1, 2, 2])
    b = np.array([1, 1, 0, 0, 0, 2])
    with pytest.raises(AssertionError, match=r"5 of 6 rows agree \(83\.33%\), 100\.00% required"):
        assert_labels_equivalent(a, b)
    with pytest.raises(AssertionError, match=r"first at row 4: a=2, b=0"):
        assert_labels_equivalent(a, b)
    assert_labels_equivalent(a, b, min_agreement=0.8)


def test_label_comparison_edge_cases():
    # Merged clusters cannot match one to one.
    with pytest.raises(AssertionError, match="a has 2 clusters, b has 1"):
        assert_labels_equivalent([0, 0, 1, 1], [0, 0, 0, 0])
    with pytest.raises(AssertionError, match="differ in length"):
        assert_labels_equivalent([0, 1], [0, 1, 1])
    with pytest.raises(AssertionError, match="must be 1-D"):
        assert_labels_equivalent(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="min_agreement=1.5"):
        assert_labels_equivalent([0], [0], min_agreement=1.5)
    assert best_permutation([0, 0, 1, 2], [1, 1, 0, 0]) in ({0: 1, 1: 0}, {0: 1, 2: 0})
    assert_labels_equivalent([], [])


def test_blob_labels_recovered_by_kmeans():
    X, _, y = make_blobs_array(6_000, 4, 3, chunk_size=1_500, seed=5, return_labels=True)
    km = dclust.KMeans(3, random_state=0, progress=False).fit(X)
    assert_labels_equivalent(km.labels_, y, min_agreement=0.99)
