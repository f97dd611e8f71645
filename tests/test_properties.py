"""Property tests (hypothesis): any shape, chunking, dtype and values end in a correct
result or a clear dclust error, never a wrong answer.

"Correct" is checked against a float64 NumPy oracle on the same centres, which holds
whatever the tie-breaking between equally near centres: every label is a nearest centre,
the inertia is the oracle's, and a converged fit's centres are the means of their points.
"""

from __future__ import annotations

import io
import warnings
import zipfile

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dclust
from dclust.exceptions import DataError, DclustError, ModelFormatError

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DTYPES = ["float64", "float32", "int64", "int8", "uint16", "bool"]


@st.composite
def datasets(draw, max_rows=40, max_features=4):
    n = draw(st.integers(1, max_rows))
    d = draw(st.integers(1, max_features))
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["palette", "spread", "identical"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "identical":
        X = np.tile(rng.integers(-3, 4, size=(1, d)), (n, 1)).astype(np.float64)
    elif kind == "palette":  # few distinct values: many duplicate points
        X = rng.choice(np.array([-2.0, 0.0, 1.0, 3.0]), size=(n, d))
    else:
        X = rng.normal(scale=draw(st.sampled_from([1e-3, 1.0, 1e3])), size=(n, d))
    if dtype == "bool":
        X = X > 0
    elif dtype in ("int64", "int8", "uint16"):
        X = np.clip(np.round(X), 0 if dtype == "uint16" else -100, 100).astype(dtype)
    else:
        X = X.astype(dtype)
    k = draw(st.one_of(st.just(1), st.just(n), st.integers(1, n)))
    return X, k


@st.composite
def row_chunks(draw, n):
    """Row chunks summing to ``n``, zero-row chunks included."""
    sizes = []
    left = n
    while left > 0:
        s = draw(st.integers(0, left))
        sizes.append(s)
        left -= s
        if len(sizes) > 12:
            sizes.append(left)
            break
    if draw(st.booleans()):
        sizes.insert(draw(st.integers(0, len(sizes))), 0)
    return tuple(sizes)


def as_input(draw, X):
    layout = draw(st.sampled_from(["numpy", "numpy-fortran", "dask", "dask-fortran-blocks"]))
    if layout == "numpy":
        return X, layout
    if layout == "numpy-fortran":
        return np.asfortranarray(X), layout
    chunks = draw(row_chunks(X.shape[0]))
    Xd = da.from_array(X, chunks=(chunks, X.shape[1]))
    if layout == "dask-fortran-blocks":
        Xd = Xd.map_blocks(np.asfortranarray, dtype=Xd.dtype)
    return Xd, layout


def oracle_check(X, km, converged_means=True):
    """Compare a fitted KMeans with a float64 NumPy oracle on its own centres."""
    X64 = np.asarray(X, dtype=np.float64)
    C = np.asarray(km.cluster_centers_, dtype=np.float64)
    k = C.shape[0]
    assert C.shape == (k, X64.shape[1]) and np.isfinite(C).all()
    D = ((X64[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
    best = D.min(axis=1)
    labels = np.asarray(km.labels_.compute() if hasattr(km.labels_, "compute") else km.labels_)
    assert labels.shape == (X64.shape[0],) and labels.min() >= 0 and labels.max() < k
    scale = max(1.0, float(np.abs(X64).max())) ** 2 * X64.shape[1]
    # float32 data is assigned in float32: distances agree to its precision.
    eps = (1e-5 if km.cluster_centers_.dtype == np.float32 else 1e-12) * scale
    picked = D[np.arange(len(labels)), labels]
    assert np.all(picked <= best + eps), "a label is not a nearest centre"
    np.testing.assert_allclose(km.inertia_, best.sum(), rtol=1e-5, atol=eps * len(best))
    if km.converged_ and converged_means:
        for j in np.unique(labels):
            mean = X64[labels == j].mean(axis=0)
            np.testing.assert_allclose(C[j], mean, rtol=1e-5, atol=1e-5 * np.sqrt(scale))


@SETTINGS
@given(data=st.data())
def test_any_shape_chunking_dtype_and_values(data):
    X, k = data.draw(datasets())
    Xin, layout = as_input(data.draw, X)
    init = data.draw(st.sampled_from(["k-means||", "k-means++", "random", "array"]))
    if init == "array":
        init = np.asarray(X[:k], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty clusters and fewer distinct points than k warn
        km = dclust.KMeans(k, init=init, tol=0.0, max_iter=100, random_state=0,
                           progress=False).fit(Xin)
    assert km.cluster_centers_.dtype == (np.float32 if X.dtype == np.float32 else np.float64)
    oracle_check(X, km)
    pred = km.predict(Xin)
    pred = np.asarray(pred.compute() if hasattr(pred, "compute") else pred)
    lab = np.asarray(km.labels_.compute() if hasattr(km.labels_, "compute") else km.labels_)
    np.testing.assert_array_equal(pred, lab)


@SETTINGS
@given(exponent=st.integers(15, 37), n=st.integers(2, 60), d=st.integers(1, 4),
       k=st.integers(1, 4), seed=st.integers(0, 2**16), chunk=st.integers(1, 60))
def test_float32_values_near_the_overflow_of_their_squares(exponent, n, d, k, seed, chunk):
    """float32 values whose squares overflow float32 are clustered right (in float64)."""
    assume(k <= n)
    rng = np.random.default_rng(seed)
    big = np.float32(np.finfo(np.float32).max) / np.float32(4 * max(d, 1) ** 0.5)
    X = (rng.uniform(-1, 1, size=(n, d)) * min(10.0 ** exponent, float(big))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = dclust.KMeans(k, tol=0.0, max_iter=50, random_state=0, progress=False).fit(
            da.from_array(X, chunks=(chunk, d)))
    assert km.cluster_centers_.dtype == np.float32
    oracle_check(X, km, converged_means=False)
    dist = km.transform(X)
    assert np.isfinite(dist).all() and dist.dtype == np.float32


@SETTINGS
@given(exponent=st.integers(155, 300), d=st.integers(1, 3))
def test_float64_squares_that_overflow_are_refused(exponent, d):
    X = np.random.default_rng(0).normal(size=(30, d)) * 10.0 ** exponent
    assume(np.abs(X).max() > np.sqrt(np.finfo(np.float64).max / (8 * d)))
    with pytest.raises(DataError, match=r"X holds values as large as .* squared distances overflow "
                                        r"float64 beyond about .* Rescale the data first"):
        dclust.KMeans(2, random_state=0, progress=False).fit(X)


# ---- model files: any damage is refused, never misread -------------------------------

@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    X = np.random.default_rng(1).normal(size=(200, 3))
    path = tmp_path_factory.mktemp("m") / "km.npz"
    km = dclust.KMeans(3, random_state=0, progress=False).fit(X)
    km.save(path)
    return path.read_bytes(), km.cluster_centers_


@SETTINGS
@given(data=st.data())
def test_damaged_model_files_are_refused_or_read_exactly(model_bytes, tmp_path_factory, data):
    raw, centers = model_bytes
    how = data.draw(st.sampled_from(["truncate", "flip", "garbage-tail", "zero-run"]))
    b = bytearray(raw)
    if how == "truncate":
        b = b[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "garbage-tail":
        b += bytes(data.draw(st.binary(min_size=1, max_size=64)))
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        b[i : i + data.draw(st.integers(1, 64))] = bytes(min(64, len(raw) - i))
    path = tmp_path_factory.mktemp("bad") / "km.npz"
    path.write_bytes(bytes(b))
    try:
        km = dclust.load(path)
    except (ModelFormatError, DclustError) as e:
        assert str(path) in str(e)
        return
    # Loaded: then it is the model that was saved (the damage hit bytes that do not matter).
    np.testing.assert_array_equal(km.cluster_centers_, centers)


def test_zip_of_arrays_from_another_tool_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("weights.npy", b"\x93NUMPY not really")
    p = tmp_path / "other.npz"
    p.write_bytes(buf.getvalue())
    with pytest.raises(ModelFormatError, match="is not a dclust model file"):
        dclust.load(p)
