"""KMeans on bad input: every error names the value and the fix, and costs no extra pass."""

from __future__ import annotations

import re
import socket
import time
import warnings

import dask.array as da
import numpy as np
import pytest
import zarr

import dclust
from dclust import ClusterConnectionError, DataError, StorageError
from dclust.exceptions import DclustTypeError, DclustValueError
from dclust.runtime.compute import compute_count


def km(k=3, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("random_state", 0)
    return dclust.KMeans(k, **kw)


@pytest.fixture
def X(rng):
    return rng.normal(size=(4000, 3))


# ---- shape, dtype, chunking ----------------------------------------------------

@pytest.mark.parametrize("make", [np.zeros, lambda s: da.zeros(s, chunks=5)], ids=["numpy", "dask"])
def test_one_dimensional(make):
    with pytest.raises(DclustValueError, match=re.escape(
            "X must be 2-D of shape (n_samples, n_features); got an array of shape (10,). "
            "Reshape your data: X.reshape(-1, 1) if it has one feature, X.reshape(1, -1) if it is one sample.")):
        km().fit(make((10,)))


@pytest.mark.parametrize("make", [np.zeros, lambda s: da.zeros(s, chunks=5)], ids=["numpy", "dask"])
def test_three_dimensional(make):
    with pytest.raises(DclustValueError, match=re.escape(
            "X must be 2-D of shape (n_samples, n_features); got an array of shape (10, 5, 2). "
            "Flatten the trailing axes into features with X.reshape(X.shape[0], -1).")):
        km().fit(make((10, 5, 2)))


def test_features_chunked():
    X = da.zeros((100, 128), chunks=(50, 64))
    with pytest.raises(DclustValueError, match=re.escape(
            "X is chunked along features (chunks[1]=(64, 64)); dclust needs whole rows per chunk. "
            "Rechunk with X.rechunk({1: -1}).")):
        km().fit(X)


def test_unknown_chunk_sizes(X):
    Xd = da.from_array(X, chunks=1000)
    Xd = Xd[Xd[:, 0] > 0]
    with pytest.raises(DclustValueError, match=re.escape("X has unknown chunk sizes along rows; call X.compute_chunk_sizes() first.")):
        km().fit(Xd)


@pytest.mark.parametrize("data", [
    np.array([["a", "b"], ["c", "d"]]),
    np.array([["a", 1.0], [2.0, 3.0]], dtype=object),
], ids=["str", "object-str"])
def test_non_numeric(data):
    with pytest.raises(DclustTypeError, match=r"X has dtype '(<U1|object)'.*dclust needs numbers.*astype\('float32'\)"):
        km(2).fit(data)


def test_non_numeric_dask():
    X = da.from_array(np.array([["a", "b"], ["c", "d"]]), chunks=1)
    with pytest.raises(DclustTypeError, match=r"X has dtype '<U1'; dclust needs numbers"):
        km(1).fit(X)


@pytest.mark.parametrize("fmt", ["csr", "coo"])
def test_sparse(fmt):
    import scipy.sparse as sp

    X = sp.random(20, 4, density=0.3, format=fmt, random_state=0)
    with pytest.raises(DclustTypeError, match=re.escape(
            f"X is a sparse '{fmt}' matrix of shape (20, 4); dclust works on dense data (sparse input "
            "is not supported). Densify it with X.toarray()")):
        km(2).fit(X)


def test_object_array_of_numbers_is_accepted():
    X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]], dtype=object)
    m = km(2, init=np.array([[0.0, 0.0], [10.0, 10.0]])).fit(X)
    np.testing.assert_allclose(m.cluster_centers_, [[0.0, 0.5], [10.0, 10.5]])


@pytest.mark.parametrize("shape", [(0, 3), (10, 0)])
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_empty(shape, kind):
    data = np.zeros(shape) if kind == "numpy" else da.zeros(shape, chunks=(5, -1))
    n = "0 sample(s)" if shape[0] == 0 else "0 feature(s)"
    with pytest.raises(DclustValueError, match=re.escape(f"X has {n} (shape={shape}) while a minimum of 1 is required: ") + ".* Check that the data was read"):
        km(1).fit(data)


# ---- non-finite values, found by the first pass -----------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("init", ["k-means||", "array"])
def test_nonfinite_found_in_first_pass_with_chunk_and_row(X, bad, init):
    Xb = X.copy()
    Xb[1234, 1] = bad
    Xb[3001, 0] = bad
    Xd = da.from_array(Xb, chunks=(1000, 3))
    before = compute_count()
    with pytest.raises(DataError, match=r"X contains 2 non-finite values\b.*\(first in chunk 1, row 1,234\)\. Clean the data"):
        km(init=X[:3] if init == "array" else init, cache="none").fit(Xd)
    assert compute_count() - before == 1  # the very first pass found it


def test_nonfinite_numpy(X):
    Xb = X.copy()
    Xb[1234, 2] = np.nan
    with pytest.raises(DataError, match=r"X contains 1 non-finite values?\b.*\(first in chunk \d+, row 1,234\)\. Clean the data"):
        km().fit(Xb)


def test_nonfinite_in_zarr(tmp_path, X):
    Xb = X.copy()
    Xb[2500, 0] = np.nan
    z = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=Xb.shape, dtype=Xb.dtype, chunks=(500, 3))
    z[...] = Xb
    with pytest.raises(DataError, match=r"first in chunk \d+, row 2,500\)"):
        km(cache="none").fit(str(tmp_path / "x.zarr"))


@pytest.mark.parametrize("data", ["numpy", "persisted"])
@pytest.mark.parametrize("max_iter", [1, 4, 100])
def test_no_extra_pass_for_checks(X, data, max_iter, monkeypatch):
    """The finiteness check rides on the first Lloyd pass: passes = iterations (+ final E-step)."""
    monkeypatch.setenv("DCLUST_ROUND", "1")  # one computation per pass, counted below
    Xs = X if data == "numpy" else da.from_array(X, chunks=(1000, 3)).persist()
    init = X[[0, 1, 2]]
    before = compute_count()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dclust.ConvergenceWarning)
        m = km(init=init, max_iter=max_iter).fit(Xs)
    spent = compute_count() - before
    assert spent == m.n_passes_
    if not m.converged_:
        assert m.n_iter_ == max_iter
        assert spent == max_iter + 1  # iterations + the inertia of the final centres
    else:
        assert spent in (m.n_iter_, m.n_iter_ + 1)


# ---- parameters against the data ------------------------------------------------

def test_more_clusters_than_samples(X):
    with pytest.raises(DclustValueError, match=re.escape("n_samples=40 must be >= n_clusters=64.")):
        km(64).fit(X[:40])


def test_init_wrong_shape(X):
    with pytest.raises(DclustValueError, match=re.escape(
            "init has shape (4, 3); an init array must have shape (n_clusters, n_features) = (3, 3).")):
        km(init=X[:4]).fit(X)
    with pytest.raises(DclustValueError, match=re.escape("init has shape (3, 2)")):
        km(init=X[:3, :2]).fit(X)


def test_init_nonfinite(X):
    init = X[:3].copy()
    init[1, 1] = np.nan
    with pytest.raises(DclustValueError, match="init contains NaN or infinite values; every initial centre must be finite"):
        km(init=init).fit(X)


def test_unknown_init(X):
    with pytest.raises(DclustValueError, match=re.escape(
            "Unknown init 'kmeans++'; expected one of 'k-means||', 'k-means++', 'random', a "
            "callable or an array of shape (n_clusters, n_features).")):
        km(init="kmeans++").fit(X)


def test_sample_weight_wrong_length(X):
    with pytest.raises(DclustValueError, match=re.escape(
            "sample_weight has shape (5,); expected (4000,), one weight per row of X.")):
        km().fit(X, sample_weight=np.ones(5))


@pytest.mark.parametrize("bad, shown", [(-1.0, "-1.0"), (np.nan, "nan"), (np.inf, "inf")])
def test_sample_weight_bad_values(X, bad, shown):
    w = np.ones(len(X))
    w[7] = bad
    with pytest.raises(DclustValueError, match=re.escape(
            f"sample_weight has 1 negative or non-finite values (first at row 7: {shown}); "
            "weights must be finite and >= 0.")):
        km().fit(X, sample_weight=w)


def test_sample_weight_all_zero(X):
    with pytest.raises(DclustValueError, match=re.escape(
            "sample_weight is zero everywhere; at least one row needs a positive weight. Pass sample_weight=None")):
        km().fit(X, sample_weight=np.zeros(len(X)))


@pytest.mark.parametrize("init", ["k-means||", "array"])
def test_sample_weight_negative_in_dask_found_in_first_pass(X, init):
    w = np.ones(len(X))
    w[2500] = -3.0
    before = compute_count()
    with pytest.raises(DclustValueError, match=re.escape(
            "sample_weight has 1 negative or non-finite values (first at row 2,500); weights must be finite and >= 0.")):
        km(init=X[:3] if init == "array" else init, cache="none").fit(
            da.from_array(X, chunks=(1000, 3)), sample_weight=da.from_array(w, chunks=1000))
    assert compute_count() - before == 1


# ---- paths and clusters -----------------------------------------------------------

def test_path_does_not_exist(tmp_path):
    p = str(tmp_path / "missing.zarr")
    with pytest.raises(StorageError, match=re.escape(f"No Zarr array at {p!r}: the path does not exist.")):
        km().fit(p)


def test_path_not_a_zarr_array(tmp_path):
    p = tmp_path / "table.csv"
    p.write_text("1,2\n")
    with pytest.raises(StorageError, match=r"table\.csv' is not a Zarr array"):
        km().fit(str(p))
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("x", shape=(10, 2), dtype="f8")
    with pytest.raises(StorageError, match=r"is a Zarr group, not an array"):
        km().fit(str(tmp_path / "g.zarr"))


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_scheduler_fails_fast():
    from distributed import Client

    session = Client.current()
    address = f"tcp://127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(ClusterConnectionError, match=re.escape(f"Cannot reach the Dask scheduler at {address!r} within 2 s") + r".*Check that `dask scheduler` is running"):
        dclust.connect(address, timeout=2)
    assert time.perf_counter() - t0 < 15
    assert Client.current() is session
    assert dclust.get_client() is session


def test_scheduler_file_missing(tmp_path):
    f = str(tmp_path / "scheduler.json")
    with pytest.raises(ClusterConnectionError, match=re.escape(
            f"Scheduler file {f!r} does not exist. Start the scheduler with `dask scheduler --scheduler-file {f}`")):
        dclust.connect(scheduler_file=f)


@pytest.mark.parametrize("timeout", [0, -1, "soon"])
def test_connect_bad_timeout(timeout):
    with pytest.raises(DclustValueError, match=re.escape(f"timeout={timeout!r} must be a positive number of seconds")):
        dclust.connect("tcp://127.0.0.1:1", timeout=timeout)


# ---- damaged chunk files: the error names the array and the chunk -------------------

def _store(tmp_path, X, **kw):
    path = str(tmp_path / "x.zarr")
    z = zarr.create_array(store=path, shape=X.shape, chunks=(500, X.shape[1]), dtype=X.dtype, **kw)
    z[...] = X
    return path


@pytest.mark.parametrize("codec", ["none", "zstd", "crc32c"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "bit-flip"])
def test_damaged_chunk_names_the_chunk(tmp_path, X, codec, damage):
    import os

    from zarr.codecs import BytesCodec, Crc32cCodec

    kw = {"compressors": None} if codec == "none" else {}
    if codec == "crc32c":
        kw = {"serializer": BytesCodec(), "compressors": [Crc32cCodec()]}
    path = _store(tmp_path, X.astype(np.float32), **kw)
    f = os.path.join(path, "c", "3", "0")
    raw = bytearray(open(f, "rb").read())
    if damage == "truncated":
        raw = raw[: len(raw) // 3]
    elif damage == "garbage":
        raw = bytearray(b"\x00not a chunk\xff" * 20)
    else:
        raw[len(raw) // 2] ^= 0x10
    open(f, "wb").write(bytes(raw))
    est = km(cache="none")
    if damage == "bit-flip" and codec != "crc32c":
        # Without a checksum a flipped bit may decode to other numbers: nothing can tell
        # (write arrays with a crc32c codec to catch it). The fit still ends cleanly: the
        # damaged value is finite, or found as non-finite, or the codec fails.
        try:
            est.fit(path)
        except (DataError, StorageError) as e:
            assert "chunk 3" in str(e) or "chunk (3, 0)" in str(e)
        return
    with pytest.raises(StorageError, match=re.escape(f"Cannot read chunk (3, 0) (stored as 'c/3/0'), "
                                                     f"rows 1,500 to 2,000 of the Zarr array at {path!r}: ")
                       + r".*The chunk file is damaged or truncated; restore it from a copy"):
        est.fit(path)
    with pytest.raises(StorageError, match=re.escape("Cannot read chunk (3, 0)")):
        dclust.open_array(path, chunks=1000).sum().compute()


def test_damaged_chunk_in_a_persisted_fit_and_in_predict(tmp_path, X):
    import os

    good = _store(tmp_path, X)
    m = km().fit(good)
    f = os.path.join(good, "c", "6", "0")
    open(f, "wb").write(open(f, "rb").read()[:10])
    with pytest.raises(StorageError, match=re.escape("Cannot read chunk (6, 0) (stored as 'c/6/0'), rows 3,000 to 3,500")):
        km(cache="memory").fit(good)
    with pytest.raises(StorageError, match=re.escape("Cannot read chunk (6, 0)")):
        m.predict(dclust.open_array(good)).compute()


# ---- magnitudes: float32 squares overflow, float64 squares overflow --------------------

def test_float32_beyond_square_overflow_is_clustered_in_float64():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(300, 3)) * 1e30).astype(np.float32)
    Xd = da.from_array(X, chunks=(70, 3))
    init = X[:3].astype(np.float64)
    m = km(init=init, max_iter=50, tol=0).fit(Xd)
    ref = km(init=init, max_iter=50, tol=0).fit(X.astype(np.float64))
    # The same answer as on the float64 data (up to float32 rounding of the centres).
    np.testing.assert_allclose(m.cluster_centers_, ref.cluster_centers_, rtol=1e-6)
    np.testing.assert_array_equal(m.labels_.compute(), ref.labels_)
    np.testing.assert_allclose(m.inertia_, ref.inertia_, rtol=1e-6)
    assert m.cluster_centers_.dtype == np.float32


def test_float64_square_overflow_is_refused_in_the_first_pass():
    X = np.random.default_rng(0).normal(size=(100, 2)) * 1e160
    before = compute_count()
    with pytest.raises(DataError, match=re.escape("X holds values as large as ") + r"[0-9.e+]+"
                       + re.escape(" in magnitude; with 2 feature(s) squared distances overflow float64 beyond about ")
                       + r".*Rescale the data first, for example X / 1e\+160\."):
        km(cache="none").fit(da.from_array(X, chunks=50))
    assert compute_count() - before == 1


def test_predict_names_the_chunk_and_global_row_of_a_nan():
    import dask.array as da

    from dclust.exceptions import DataError

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    km = dclust.KMeans(2, random_state=0, progress=False).fit(X)
    bad = X.copy()
    bad[157, 1] = np.nan
    with pytest.raises(DataError, match=r"chunk 1, row 157\b"):
        km.predict(da.from_array(bad, chunks=(100, 3))).compute()
