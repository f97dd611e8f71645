"""Data in and out: open_array over paths and URLs, atomic Zarr outputs."""

from __future__ import annotations

import os
import re
import uuid

import dask.array as da
import numpy as np
import pytest
import zarr

import dclust
from dclust import StorageError
from dclust.exceptions import DclustTypeError, DclustValueError


def _zarr(path, data, chunks=None, **kw):
    z = zarr.create_array(store=str(path), shape=data.shape, dtype=data.dtype,
                          chunks=chunks or data.shape, **kw)
    z[...] = data
    return z


def _siblings(path):
    """Everything in ``path``'s folder other than ``path`` itself (temp leftovers)."""
    folder, name = os.path.split(str(path))
    return sorted(n for n in os.listdir(folder) if n != name)


# ---- open_array ------------------------------------------------------------------

@pytest.fixture
def stored(tmp_path, rng):
    data = rng.normal(size=(1000, 6)).astype(np.float32)
    path = tmp_path / "x.zarr"
    _zarr(path, data, chunks=(100, 6))
    return path, data


def test_open_local_path(stored):
    path, data = stored
    X = dclust.open_array(path)  # os.PathLike
    assert isinstance(X, da.Array)
    assert X.shape == data.shape and X.dtype == np.float32
    np.testing.assert_array_equal(X.compute(), data)
    X2 = dclust.open_array(str(path))
    np.testing.assert_array_equal(X2.compute(), data)


def test_open_file_url(stored):
    path, data = stored
    X = dclust.open_array(f"file://{path}")
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X.compute(), data)


def test_open_memory_url_is_materialised(rng):
    import fsspec

    data = rng.normal(size=(300, 4))
    top = f"dclust-test-{uuid.uuid4().hex}"
    url = f"memory://{top}/x.zarr"
    z = zarr.create_array(store=url, shape=data.shape, dtype=data.dtype, chunks=(50, 4))
    z[...] = data
    X = dclust.open_array(url, chunks=100)
    assert X.chunks == ((100, 100, 100), (4,))
    # The data travels with the graph: no task reads the in-process memory filesystem,
    # which worker processes could not see.
    fsspec.filesystem("memory").rm(f"/{top}", recursive=True)
    np.testing.assert_array_equal(X.compute(), data)


def test_open_file_url_and_write_file_url(tmp_path):
    url = f"file://{tmp_path}/labels.zarr"
    assert dclust.write_labels(np.arange(10, dtype=np.int32), url) == url
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "labels.zarr"), mode="r")[...], np.arange(10))
    assert os.listdir(tmp_path) == ["labels.zarr"]


def test_open_missing_memory_url():
    url = f"memory://dclust-missing-{uuid.uuid4().hex}/x.zarr"
    with pytest.raises(StorageError, match=re.escape(f"No Zarr array at {url!r}: the path does not exist. Check the path")):
        dclust.open_array(url)


def test_open_group_instead_of_array(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("points", shape=(10, 2), dtype="f8")
    with pytest.raises(StorageError, match=r"g\.zarr' is a Zarr group, not an array \(it holds the arrays 'points'\); pass the path of an array inside it"):
        dclust.open_array(tmp_path / "g.zarr")
    # ... and the array inside opens
    assert dclust.open_array(tmp_path / "g.zarr" / "points").shape == (10, 2)


def test_open_non_zarr_file(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("1,2\n3,4\n")
    with pytest.raises(StorageError, match=r"data\.csv' is not a Zarr array: no Zarr metadata .* found there\. Pass the folder of a Zarr array"):
        dclust.open_array(p)


def test_open_non_zarr_folder(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(StorageError, match=r"folder' is not a Zarr array: no Zarr metadata"):
        dclust.open_array(tmp_path / "folder")


def test_open_damaged_metadata(tmp_path):
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(StorageError, match=r"Cannot open .*bad\.zarr' as a Zarr array \(.*\)\. Check that it is a complete"):
        dclust.open_array(tmp_path / "bad.zarr")


def test_open_missing_path(tmp_path):
    p = tmp_path / "nope.zarr"
    with pytest.raises(StorageError, match=re.escape(f"No Zarr array at {str(p)!r}: the path does not exist. Check the path")):
        dclust.open_array(p)


@pytest.mark.parametrize("shape, hint", [
    ((10,), r"reshape\(-1, 1\)"),
    ((10, 2, 3), r"reshape\(z\.shape\[0\], -1\)"),
])
def test_open_wrong_ndim(tmp_path, shape, hint):
    p = tmp_path / "a.zarr"
    _zarr(p, np.zeros(shape))
    with pytest.raises(StorageError, match=re.escape(f"has shape {shape}; dclust needs 2-D data of shape (n_samples, n_features).") + ".*" + hint):
        dclust.open_array(p)


def test_open_non_numeric_zarr(tmp_path):
    p = tmp_path / "s.zarr"
    zarr.create_array(store=str(p), shape=(4, 2), dtype=str)
    with pytest.raises(DclustTypeError, match=r"X has dtype .*; dclust needs numbers .* X\.astype\('float32'\)"):
        dclust.open_array(p)


def test_auto_chunks_multiple_of_storage_and_near_target(tmp_path, monkeypatch):
    n, d = 10_000, 8
    p = tmp_path / "a.zarr"
    _zarr(p, np.ones((n, d), np.float32), chunks=(64, d))
    monkeypatch.setattr("dclust.io.chunking.DEFAULT_CHUNK_BYTES", 64 * 1024)  # 2048 rows of 32 B
    X = dclust.open_array(p)
    rows = X.chunks[0]
    assert rows[0] % 64 == 0
    assert rows[0] == 2048  # 64 KiB / (8 * 4 B), a multiple of 64
    assert all(r == rows[0] for r in rows[:-1]) and sum(rows) == n
    assert X.chunks[1] == (d,)
    # With the default target (64 MiB) a small array is one chunk.
    monkeypatch.undo()
    assert dclust.open_array(p).chunks == ((n,), (d,))


def test_auto_chunks_round_down_to_storage_chunks(tmp_path, monkeypatch):
    p = tmp_path / "a.zarr"
    _zarr(p, np.ones((5000, 10), np.float64), chunks=(300, 10))
    monkeypatch.setattr("dclust.io.chunking.DEFAULT_CHUNK_BYTES", 100_000)  # 1250 rows
    X = dclust.open_array(p)
    assert X.chunks[0][0] == 1200  # 4 storage chunks, the largest multiple below the target
    # A target below one storage chunk still reads whole storage chunks.
    monkeypatch.setattr("dclust.io.chunking.DEFAULT_CHUNK_BYTES", 1000)
    assert dclust.open_array(p).chunks[0][0] == 300


def test_auto_row_chunk_explicit_sizes():
    from dclust.io.zarr_io import auto_row_chunk

    assert auto_row_chunk((10**9, 128), 4, 1000) % 1000 == 0
    rows = auto_row_chunk((10**9, 128), 4, 1000)
    assert abs(rows * 128 * 4 - 64 * 2**20) <= 1000 * 128 * 4
    assert auto_row_chunk((10**9, 128), 4, 1000, target_bytes=2**20) == 2000
    assert auto_row_chunk((500, 128), 4, 1000) == 500  # never more than the rows there are


def test_auto_chunks_follow_shards(tmp_path, monkeypatch):
    p = tmp_path / "s.zarr"
    _zarr(p, np.ones((4000, 4), np.float32), chunks=(10, 4), shards=(500, 4))
    monkeypatch.setattr("dclust.io.chunking.DEFAULT_CHUNK_BYTES", 1200 * 16)
    assert dclust.open_array(p).chunks[0][0] == 1000


def test_features_never_chunked(tmp_path, rng):
    data = rng.normal(size=(400, 12))
    p = tmp_path / "a.zarr"
    _zarr(p, data, chunks=(50, 5))  # storage splits features
    for chunks in ("auto", 100, (100, 5), {0: 100, 1: 3}, -1):
        X = dclust.open_array(p, chunks=chunks)
        assert X.chunks[1] == (12,), chunks
        np.testing.assert_array_equal(X.compute(), data)
    assert dclust.open_array(p, chunks=100).chunks[0] == (100,) * 4


@pytest.mark.parametrize("bad", [0, -5, "big", 2.5])
def test_bad_chunks(stored, bad):
    path, _ = stored
    with pytest.raises(DclustValueError, match=re.escape(f"chunks={bad!r} is not valid; expected 'auto', a positive number")):
        dclust.open_array(path, chunks=bad)


def test_float32_stays_float32_and_ints_become_float64(tmp_path):
    _zarr(tmp_path / "f.zarr", np.ones((10, 2), np.float32))
    _zarr(tmp_path / "i.zarr", np.arange(20, dtype=np.int32).reshape(10, 2))
    _zarr(tmp_path / "u.zarr", np.arange(20, dtype=np.uint8).reshape(10, 2))
    _zarr(tmp_path / "b.zarr", np.ones((10, 2), bool))
    assert dclust.open_array(tmp_path / "f.zarr").dtype == np.float32
    Xi = dclust.open_array(tmp_path / "i.zarr")
    assert Xi.dtype == np.float64
    np.testing.assert_array_equal(Xi.compute(), np.arange(20).reshape(10, 2))
    assert dclust.open_array(tmp_path / "u.zarr").dtype == np.float64
    assert dclust.open_array(tmp_path / "b.zarr").dtype == np.float64


@pytest.mark.filterwarnings("ignore::dclust.ConvergenceWarning")
def test_kmeans_fits_a_path(stored):
    path, data = stored
    km = dclust.KMeans(3, init=data[:3], max_iter=5, progress=False).fit(str(path))
    assert km.cluster_centers_.dtype == np.float32
    assert km.cluster_centers_.shape == (3, 6)


# ---- atomic outputs --------------------------------------------------------------

def test_write_labels_round_trip_and_chunks(tmp_path):
    labels = da.arange(3500, chunks=1000).astype(np.int32) % 7
    out = tmp_path / "labels.zarr"
    assert dclust.write_labels(labels, str(out)) == str(out)
    z = zarr.open_array(str(out), mode="r")
    assert z.chunks == (1000,)
    assert z.dtype == np.int32
    np.testing.assert_array_equal(z[...], labels.compute())
    assert _siblings(out) == []


def test_write_labels_numpy(tmp_path):
    labels = np.arange(50, dtype=np.int32)
    dclust.write_labels(labels, tmp_path / "l.zarr")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "l.zarr"), mode="r")[...], labels)


@pytest.mark.filterwarnings("ignore::dclust.ConvergenceWarning")
def test_write_labels_of_a_fit_follow_x_chunks(tmp_path, rng):
    X = da.from_array(rng.normal(size=(2500, 3)), chunks=(1000, 3))
    km = dclust.KMeans(2, init=np.zeros((2, 3)) + [[-1], [1]], max_iter=3, progress=False).fit(X)
    dclust.write_labels(km.labels_, tmp_path / "l.zarr")
    z = zarr.open_array(str(tmp_path / "l.zarr"), mode="r")
    assert z.chunks == (X.chunks[0][0],)
    np.testing.assert_array_equal(z[...], km.labels_.compute())


def test_write_array_irregular_and_feature_chunks(tmp_path, rng):
    data = rng.normal(size=(100, 6))
    x = da.from_array(data, chunks=((30, 20, 50), (3, 3)))
    dclust.write_array(x, tmp_path / "a.zarr")
    z = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    assert z.chunks[1] == 6  # whole rows in each Zarr chunk
    np.testing.assert_array_equal(z[...], data)


def test_write_array_numpy_input(tmp_path):
    data = np.arange(12.0).reshape(6, 2)
    dclust.write_array(data, tmp_path / "a.zarr")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[...], data)


def _watcher(log, look):
    """A map_blocks function appending ``look()`` to the file ``log`` for each real block.

    Tasks are serialised even on in-process workers, so results go through a file.
    """
    def watch(block):
        if block.size:  # not dask's meta probe
            with open(log, "a") as f:
                f.write(f"{look()}\n")
        return block
    return watch


def _seen(log):
    with open(log) as f:
        return [line.strip() for line in f]


def test_new_store_appears_only_complete(tmp_path):
    out = str(tmp_path / "sub" / "labels.zarr")
    os.mkdir(tmp_path / "sub")
    log = str(tmp_path / "log.txt")
    x = da.arange(400, chunks=100).map_blocks(_watcher(log, lambda: os.path.exists(out)), dtype=np.int64)
    dclust.write_array(x, out)
    assert _seen(log) == ["False"] * 4  # nothing at the final path while chunks were written
    np.testing.assert_array_equal(zarr.open_array(out, mode="r")[...], np.arange(400))
    assert _siblings(out) == []


def test_overwrite_replaces_and_old_version_stays_readable_until_done(tmp_path):
    out = str(tmp_path / "sub" / "labels.zarr")
    os.mkdir(tmp_path / "sub")
    log = str(tmp_path / "log.txt")
    dclust.write_array(da.arange(400, chunks=100, dtype=np.int32), out)
    look = _watcher(log, lambda: int(zarr.open_array(out, mode="r")[...].sum()))
    dclust.write_array(da.ones(400, chunks=100, dtype=np.int32).map_blocks(look, dtype=np.int32), out)
    assert _seen(log) == [str(sum(range(400)))] * 4  # the old version, whole, during the write
    np.testing.assert_array_equal(zarr.open_array(out, mode="r")[...], np.ones(400))
    assert _siblings(out) == []


class Boom(RuntimeError):
    pass


def _fail_on_block(bad):
    def f(block, block_info=None):
        if block_info[0]["chunk-location"][0] == bad:
            raise Boom(f"block {bad} is broken")
        return block
    return f


def test_failed_write_keeps_previous_store(tmp_path):
    out = str(tmp_path / "labels.zarr")
    old = np.arange(800, dtype=np.int32)
    dclust.write_array(da.from_array(old, chunks=100), out)
    x = da.full(800, 5, chunks=100, dtype=np.int32).map_blocks(_fail_on_block(3), dtype=np.int32)
    with pytest.raises(Boom, match="block 3 is broken"):
        dclust.write_array(x, out)
    np.testing.assert_array_equal(zarr.open_array(out, mode="r")[...], old)
    assert _siblings(out) == []


def test_failed_first_write_leaves_nothing(tmp_path):
    out = str(tmp_path / "new.zarr")
    x = da.zeros((800, 2), chunks=(100, 2)).map_blocks(_fail_on_block(5), dtype=float)
    with pytest.raises(Boom):
        dclust.write_array(x, out)
    assert not os.path.exists(out)
    assert os.listdir(tmp_path) == []


def test_overwrite_false_on_existing_path(tmp_path):
    out = str(tmp_path / "labels.zarr")
    dclust.write_labels(np.zeros(10, np.int32), out)
    with pytest.raises(StorageError, match=re.escape(f"{out!r} already exists; pass overwrite=True")):
        dclust.write_labels(np.ones(10, np.int32), out, overwrite=False)
    np.testing.assert_array_equal(zarr.open_array(out, mode="r")[...], 0)


def test_missing_parent_folder(tmp_path):
    out = str(tmp_path / "no" / "such" / "labels.zarr")
    with pytest.raises(StorageError, match=re.escape(f"Cannot write {out!r}: the folder {os.path.dirname(out)!r} does not exist. Create it first")):
        dclust.write_labels(np.zeros(10, np.int32), out)
    assert os.listdir(tmp_path) == []


def test_refuses_to_replace_a_plain_folder_or_file(tmp_path):
    data_dir = tmp_path / "my-data"
    data_dir.mkdir()
    (data_dir / "precious.txt").write_text("keep me")
    with pytest.raises(StorageError, match=r"my-data' is a folder that is not a Zarr store; dclust will not replace it"):
        dclust.write_labels(np.zeros(10, np.int32), data_dir)
    assert (data_dir / "precious.txt").read_text() == "keep me"
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    with pytest.raises(StorageError, match=r"notes\.txt' is a file, not a Zarr store"):
        dclust.write_labels(np.zeros(10, np.int32), f)
    assert f.read_text() == "keep me"


def test_write_to_memory_url_round_trip():
    import fsspec

    top = f"dclust-out-{uuid.uuid4().hex}"
    url = f"memory://{top}/labels.zarr"
    try:
        dclust.write_labels(np.arange(30, dtype=np.int32), url)
        dclust.write_labels(np.arange(30, dtype=np.int32) * 2, url)  # replace
        np.testing.assert_array_equal(zarr.open_array(url, mode="r")[...], np.arange(30) * 2)
        fs = fsspec.filesystem("memory")
        assert [p.rsplit("/", 1)[-1] for p in fs.ls(f"/{top}", detail=False)] == ["labels.zarr"]
        with pytest.raises(StorageError, match="already exists; pass overwrite=True"):
            dclust.write_labels(np.zeros(30, np.int32), url, overwrite=False)
    finally:
        fsspec.filesystem("memory").rm(f"/{top}", recursive=True)


def test_failed_write_waits_for_running_writers(tmp_path, monkeypatch):
    # Two worker threads: the task writing chunk 1 is still writing when the one writing
    # chunk 0 fails; its late write must not recreate the temporary store after the
    # clean-up. (In-process workers share this process's zarr, so patching it reaches them.)
    import asyncio
    import time

    from zarr.storage import LocalStore

    original = LocalStore.set

    async def flaky_set(self, key, value):
        if key.startswith("c/0"):
            raise Boom("chunk 0 cannot be written")
        if key.startswith("c/"):
            await asyncio.sleep(0.3)
        return await original(self, key, value)

    monkeypatch.setattr(LocalStore, "set", flaky_set)
    out = str(tmp_path / "labels.zarr")
    with pytest.raises(Boom):
        dclust.write_array(da.ones(200, chunks=100, dtype=np.int32), out)  # not the fill value
    time.sleep(0.5)
    assert os.listdir(tmp_path) == []
