"""The dissimilarity kernels against scipy's cdist, and the portable path against the fast one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from dclust.kernels.metrics import METRICS, pairwise_distances, pairwise_distances_portable

SCIPY = {"euclidean": "euclidean", "sqeuclidean": "sqeuclidean", "manhattan": "cityblock",
         "cosine": "cosine"}


def _data(rng, n, m, d, offset=0.0, scale=1.0, dtype=np.float64):
    X = (rng.normal(size=(n, d)) * scale + offset).astype(dtype)
    Y = np.vstack([X[: min(3, n)], (rng.normal(size=(m, d)) * scale + offset).astype(dtype)])
    return X, Y


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (1e3, 1.0), (-50.0, 1e-3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_equal_to_cdist(metric, offset, scale, dtype, rng):
    X, Y = _data(rng, 257, 19, 7, offset, scale, dtype)
    D = pairwise_distances(X, Y, metric)
    R = cdist(X.astype(np.float64), Y.astype(np.float64), SCIPY[metric])
    assert D.dtype == np.float64 and D.shape == (257, 22)
    # The GEMM forms keep ~11 digits relative, and cosine 1e-15 absolute.
    np.testing.assert_allclose(D, R, rtol=1e-10, atol=1e-13 if metric == "cosine" else 0)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "manhattan"])
def test_a_point_is_at_exactly_zero_from_itself(metric, rng):
    X = rng.normal(size=(50, 9)) * 1e4 + 1e6
    D = pairwise_distances(X, X, metric)
    assert (np.diag(D) == 0).all()
    assert (D[~np.eye(50, dtype=bool)] > 0).all()


def test_close_points_keep_their_digits():
    # Two points 1e-6 apart at a norm of 1e4: the expanded form alone would give noise.
    X = np.array([[1e4, 2e4, 3e4], [1e4, 2e4, 3e4 + 1e-6]])
    D = pairwise_distances(X, X[:1], "euclidean")
    exact = abs(X[1, 2] - X[0, 2])  # 1e-6 as the stored floats have it
    np.testing.assert_allclose(D[:, 0], [0.0, exact], rtol=1e-12, atol=0)
    np.testing.assert_allclose(D, cdist(X, X[:1]), rtol=1e-12, atol=0)


def test_cosine_zero_rows_are_defined():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    D = pairwise_distances(X, X, "cosine")
    np.testing.assert_allclose(D, [[0, 1, 1], [1, 0, 1], [1, 1, 0]], atol=1e-15)
    assert np.isfinite(D).all()


@pytest.mark.parametrize("metric", METRICS)
def test_portable_path_equals_fast_path(metric, rng):
    xp = pytest.importorskip("array_api_strict")
    X, Y = _data(rng, 120, 11, 5, 3.0)
    fast = pairwise_distances(X, Y, metric)
    port = np.asarray(pairwise_distances(xp.asarray(X), xp.asarray(Y), metric))
    np.testing.assert_allclose(port, fast, rtol=1e-10, atol=1e-13)
    port2 = np.asarray(pairwise_distances_portable(xp.asarray(X), xp.asarray(Y), metric))
    np.testing.assert_array_equal(port, port2)


def test_empty_inputs():
    assert pairwise_distances(np.zeros((0, 3)), np.ones((4, 3))).shape == (0, 4)
    assert pairwise_distances(np.zeros((2, 3)), np.ones((0, 3)), "manhattan").shape == (2, 0)


def test_unknown_metric():
    with pytest.raises(ValueError, match=r"Unknown metric 'minkowski'; expected one of 'euclidean'"):
        pairwise_distances(np.zeros((2, 2)), np.zeros((2, 2)), "minkowski")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(1, 8), d=st.integers(1, 6),
       metric=st.sampled_from(METRICS), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_cdist_property(n, m, d, metric, seed, scale):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * scale
    Y = np.vstack([X[:1], rng.normal(size=(m, d)) * scale])
    R = cdist(X, Y, SCIPY[metric])
    D = pairwise_distances(X, Y, metric)
    np.testing.assert_allclose(D, R, rtol=1e-9, atol=1e-12 if metric == "cosine" else 0)
