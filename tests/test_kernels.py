"""Kernels against plain NumPy references, and the portable path under array_api_strict."""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest

from dclust.kernels.datastats import data_stats_combine, data_stats_partial
from dclust.kernels.distances import euclidean_distances
from dclust.kernels.lloyd import lloyd_partial, nearest_center
from dclust.kernels.sampling import reservoir_partial
from dclust.kernels.seeding import kmeans_parallel, kmeans_plusplus


def _reference_lloyd(X, C, w):
    X64 = X.astype(np.float64)
    d = ((X64[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    lab = d.argmin(1)
    k = C.shape[0]
    sums = np.zeros_like(C)
    np.add.at(sums, lab, w[:, None] * X64)
    wsum = np.bincount(lab, weights=w, minlength=k)
    inertia = (w * d[np.arange(len(X)), lab]).sum()
    return lab, d[np.arange(len(X)), lab], sums, wsum, inertia


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 3, 70, 300])
@pytest.mark.parametrize("weighted", [False, True])
def test_lloyd_partial_matches_reference(rng, dtype, k, weighted):
    n, d = 5000, 9
    centers_true = rng.normal(scale=8, size=(k, d))
    X = (centers_true[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(dtype)
    C = X[rng.choice(n, k, replace=False)].astype(np.float64) + 0.01
    w = rng.random(n) if weighted else np.ones(n)
    lab, dist, sums, wsum, inertia = _reference_lloyd(X, C, w)
    out = lloyd_partial(X, C, w if weighted else None, n_far=4, row_offset=100)
    np.testing.assert_allclose(out["sums"], sums, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["weights"], wsum, rtol=1e-12)
    np.testing.assert_allclose(float(out["inertia"]), inertia, rtol=1e-9)
    top = np.lexsort((np.arange(n), -dist))[:4]
    np.testing.assert_array_equal(out["far_row"], top + 100)
    np.testing.assert_allclose(out["far_dist"], dist[top], rtol=1e-9)
    np.testing.assert_array_equal(out["far_label"], lab[top])
    np.testing.assert_allclose(out["far_x"], X[top].astype(np.float64))
    labels, sq = nearest_center(X, C)
    np.testing.assert_array_equal(labels, lab)
    np.testing.assert_allclose(sq, dist, rtol=1e-9)


def test_lloyd_partial_portable_equals_numpy(rng):
    n, d, k = 4100, 5, 12
    X = rng.normal(size=(n, d)).astype(np.float32)
    C = rng.normal(size=(k, d))
    w = rng.random(n)
    fast = lloyd_partial(X, C, w, n_far=6, row_offset=7)
    port = lloyd_partial(xps.asarray(X), xps.asarray(C), xps.asarray(w), n_far=6, row_offset=7)
    for key, value in fast.items():
        np.testing.assert_allclose(np.asarray(port[key]), value, rtol=1e-6, atol=1e-6, err_msg=key)
    lab_f, d_f = nearest_center(X, C)
    lab_p, d_p = nearest_center(xps.asarray(X), xps.asarray(C))
    np.testing.assert_array_equal(np.asarray(lab_p), lab_f)
    np.testing.assert_allclose(np.asarray(d_p), d_f, rtol=1e-6)


def test_lloyd_partial_zero_rows_is_identity():
    X = np.zeros((0, 4), np.float32)
    C = np.ones((3, 4))
    out = lloyd_partial(X, C, None, n_far=2)
    assert out["sums"].shape == (3, 4) and not out["sums"].any()
    assert float(out["inertia"]) == 0.0
    assert out["far_row"].shape == (0,)
    port = lloyd_partial(xps.asarray(X), xps.asarray(C), None, n_far=2)
    assert float(port["inertia"]) == 0.0


def test_lloyd_partial_fortran_and_integer_blocks(rng):
    X = rng.integers(-5, 5, size=(300, 4))
    C = rng.normal(size=(3, 4))
    ref = lloyd_partial(X.astype(np.float64), C)
    np.testing.assert_allclose(lloyd_partial(X, C)["sums"], ref["sums"])
    XF = np.asfortranarray(X.astype(np.float32))
    np.testing.assert_allclose(lloyd_partial(XF, C)["sums"], lloyd_partial(np.ascontiguousarray(XF), C)["sums"])


def test_data_stats_partial_and_combine(rng):
    X = rng.normal(loc=3, size=(1000, 3))
    X[17, 1] = np.nan
    X[900, 0] = np.inf
    parts = [data_stats_partial(X[s : s + 250], row_offset=s) for s in range(0, 1000, 250)]
    out = data_stats_combine(parts)
    assert out["n_nonfinite"] == 2 and out["first_nonfinite"] == 17
    clean = np.where(np.isfinite(X), X, 0)
    np.testing.assert_allclose(out["m2"] / out["count"], clean.var(axis=0), rtol=1e-10)
    port = data_stats_partial(xps.asarray(X), row_offset=0)
    assert port["n_nonfinite"] == 2 and port["first_nonfinite"] == 17
    w = np.ones(1000)
    w[400] = -1
    assert data_stats_partial(X, w)["first_bad_weight"] == 400


def test_reservoir_is_seeded_and_weighted(rng):
    X = np.arange(2000, dtype=np.float64).reshape(1000, 2)
    a = reservoir_partial(X, None, 50, seed=3, block_id=2, row_offset=0)
    b = reservoir_partial(X, None, 50, seed=3, block_id=2, row_offset=0)
    np.testing.assert_array_equal(a["row"], b["row"])
    c = reservoir_partial(X, None, 50, seed=4, block_id=2, row_offset=0)
    assert not np.array_equal(a["row"], c["row"])
    w = np.zeros(1000)
    w[:10] = 1.0
    s = reservoir_partial(X, w, 50, seed=1, block_id=0, row_offset=0)
    assert set(s["row"][np.isfinite(s["key"])]) == set(range(10))


def test_euclidean_distances(rng):
    X = rng.normal(size=(50, 3))
    C = rng.normal(size=(4, 3))
    ref = np.sqrt(((X[:, None] - C[None]) ** 2).sum(-1))
    np.testing.assert_allclose(euclidean_distances(X, C), ref, atol=1e-10)
    np.testing.assert_allclose(np.asarray(euclidean_distances(xps.asarray(X), xps.asarray(C))), ref, atol=1e-10)


def test_seeding_beats_random_and_handles_duplicates(rng):
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(4000, n_features=4, centers=10, random_state=0)
    w = np.ones(len(X))
    C_pp, idx = kmeans_plusplus(X, 10, w, np.random.default_rng(0))
    np.testing.assert_array_equal(C_pp, X[idx])
    C_par, n_cand = kmeans_parallel(X, 10, w, np.random.default_rng(0))
    assert n_cand > 10

    def inertia(C):
        return nearest_center(X, C)[1].sum()

    rand = X[np.random.default_rng(0).choice(len(X), 10, replace=False)]
    assert inertia(C_par) < inertia(rand)
    assert inertia(C_pp) < inertia(rand)
    dup = np.repeat(X[:3], 100, axis=0)
    C_dup, _ = kmeans_parallel(dup, 3, np.ones(300), np.random.default_rng(1))
    assert len({tuple(r) for r in C_dup.round(9)}) == 3
