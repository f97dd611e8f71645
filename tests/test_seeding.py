"""Seeding on the client: greedy k-means++, the k-means|| reduce and its budget."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

import dclust
from dclust.kernels.lloyd import nearest_center
from dclust.kernels.seeding import (
    kmeans_parallel,
    kmeans_plusplus,
    reduce_budget,
    reduce_candidates,
)

PLAIN = dict(n_reduce_trials=1, local_search=False, polish_max_iter=0)


def _winertia(P, w, C):
    return float(w @ nearest_center(np.asarray(P, dtype=np.float64), C)[1])


def _reference_kpp(X, k, w, rng, trials):
    """Greedy weighted k-means++ written plainly (exact distances, no GEMM), same draws."""
    n = len(X)
    first = int(rng.choice(n, p=w / w.sum()))
    idx = [first]
    closest = ((X - X[first]) ** 2).sum(1)
    for _ in range(1, k):
        wd = w * closest
        if not wd.sum() > 0:
            idx.append(int(rng.integers(n)))
            continue
        cum = np.cumsum(wd)
        cand = np.minimum(np.searchsorted(cum, rng.random(trials) * cum[-1], side="right"), n - 1)
        D = np.minimum(((X[cand][:, None, :] - X[None]) ** 2).sum(-1), closest[None])
        best = int(np.argmax((w[None] * (closest[None] - D)).sum(1))) if trials > 1 else 0
        closest = D[best]
        idx.append(int(cand[best]))
    return np.array(idx)


def _candidates(seed, n=6000, d=8, k=40):
    """A weighted point set like the k-means|| candidates of well-separated blobs."""
    X, _ = make_blobs(n, d, centers=k, cluster_std=1.0, random_state=seed)
    rng = np.random.default_rng(seed)
    pick = rng.choice(n, 12 * k, replace=False)
    lab, _ = nearest_center(X, X[pick])
    w = np.bincount(lab, minlength=len(pick)).astype(float)
    return X[pick], w


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,d,k", [(3000, 5, 30), (1500, 3, 200), (800, 40, 50)])
def test_kmeans_plusplus_matches_plain_greedy(n, d, k, dtype):
    X, _ = make_blobs(n, d, centers=max(2, k // 2), cluster_std=2.0, random_state=1)
    X = (X + 50.0).astype(dtype)  # away from the origin: the GEMM form must cope
    w = np.random.default_rng(0).random(n)
    w[:40] = 0.0
    trials = 2 + int(math.log(k))
    C, idx = kmeans_plusplus(X, k, w, np.random.default_rng(5), n_local_trials=trials)
    ref = _reference_kpp(X.astype(np.float64), k, w, np.random.default_rng(5), trials)
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(C, X[idx].astype(np.float64))
    assert w[idx].min() > 0


def test_kmeans_parallel_is_deterministic():
    X, _ = make_blobs(5000, 6, centers=12, random_state=0)
    w = np.ones(len(X))
    a, na = kmeans_parallel(X, 12, w, np.random.default_rng(3))
    b, nb = kmeans_parallel(X, 12, w, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert na == nb
    c, _ = kmeans_parallel(X, 12, w, np.random.default_rng(4))
    assert not np.array_equal(a, c)


def test_reduce_keeps_the_best_run():
    improved = 0
    for seed in range(4):
        P, w = _candidates(seed)
        one, i1 = reduce_candidates(P, w, 40, np.random.default_rng(seed), n_trials=1,
                                    local_search=False)
        many, im = reduce_candidates(P, w, 40, np.random.default_rng(seed), n_trials=8,
                                     local_search=False)
        # The first run draws the same numbers as the single run.
        assert im["trial_sse"][0] == pytest.approx(i1["trial_sse"][0], rel=1e-12)
        assert len(im["trial_sse"]) == 8
        assert im["sse"] == min(im["trial_sse"])
        assert im["best_trial"] == int(np.argmin(im["trial_sse"]))
        # The reported inertia is that of the centres returned (at a fixed point).
        assert _winertia(P, w, many) == pytest.approx(im["sse"], rel=1e-6)
        assert _winertia(P, w, many) <= _winertia(P, w, one) * (1 + 1e-9)
        improved += im["sse"] < 0.98 * i1["sse"]
    # The case is hard enough for a single run to miss on some seed.
    assert improved >= 1


def test_swaps_only_lower_the_inertia_and_repair_misses():
    repaired = 0
    for seed in range(4):
        P, w = _candidates(seed)
        plain, ip = reduce_candidates(P, w, 40, np.random.default_rng(seed), n_trials=1,
                                      local_search=False)
        swapped, isw = reduce_candidates(P, w, 40, np.random.default_rng(seed), n_trials=1)
        assert isw["trial_sse"] == ip["trial_sse"]
        assert isw["sse"] <= ip["sse"]
        assert _winertia(P, w, swapped) <= _winertia(P, w, plain) * (1 + 1e-9)
        repaired += isw["n_swaps"] > 0 and isw["sse"] < 0.98 * ip["sse"]
    assert repaired >= 1


def test_reduce_thins_to_one_run_within_the_budget():
    P, w = _candidates(0)
    C, info = reduce_candidates(P, w, 40, np.random.default_rng(0), budget=0.0)
    assert len(info["trial_sse"]) == 1 and info["n_swaps"] == 0
    assert info["n_local_trials"] == 1
    assert C.shape == (40, 8) and np.isfinite(C).all()
    _, info = reduce_candidates(P, w, 40, np.random.default_rng(0))
    assert len(info["trial_sse"]) == 10
    assert info["n_local_trials"] == 2 + int(math.log(40))
    assert reduce_budget(131072, 4096, 128) == 4 * 131072 * 4096 * 128
    assert reduce_budget(100, 3, 2) == 5e9


def test_k_equals_number_of_candidates():
    P = np.random.default_rng(0).normal(size=(7, 3))
    w = np.arange(1.0, 8.0)
    C, info = reduce_candidates(P, w, 7, np.random.default_rng(0))
    assert info["sse"] == 0.0
    assert len(info["trial_sse"]) == 1  # nothing left to improve
    np.testing.assert_allclose(np.sort(C, axis=0), np.sort(P, axis=0))
    # Through k-means|| with as many rows as clusters.
    C, _ = kmeans_parallel(P, 7, np.ones(7), np.random.default_rng(1))
    assert sorted(map(tuple, C.round(12))) == sorted(map(tuple, P.round(12)))


def test_duplicates_and_fewer_distinct_points_than_clusters():
    base = np.random.default_rng(0).normal(size=(3, 2)) * 10
    X = np.repeat(base, 100, axis=0)
    C, _ = kmeans_parallel(X, 3, np.ones(300), np.random.default_rng(1))
    assert sorted(map(tuple, C.round(9))) == sorted(map(tuple, base.round(9)))
    C, _ = kmeans_parallel(X, 5, np.ones(300), np.random.default_rng(1))
    assert C.shape == (5, 2) and np.isfinite(C).all()
    assert {tuple(r) for r in C.round(9)} == {tuple(r) for r in base.round(9)}
    C, idx = kmeans_plusplus(X, 5, np.ones(300), np.random.default_rng(2))
    assert {tuple(r) for r in C.round(9)} == {tuple(r) for r in base.round(9)}


def test_zero_weights_are_never_centres():
    rng = np.random.default_rng(0)
    near = rng.normal(size=(400, 2))
    far = rng.normal(size=(400, 2)) + 100.0
    X = np.vstack([near, far])
    w = np.r_[np.ones(400), np.zeros(400)]
    for seed in range(3):
        C, _ = kmeans_parallel(X, 4, w, np.random.default_rng(seed))
        assert np.abs(C).max() < 10
    # Zero-weight candidates are kept only when too few have weight.
    P = np.r_[near[:3], far[:3]]
    C, info = reduce_candidates(P, np.r_[np.ones(3), np.zeros(3)], 4, np.random.default_rng(0))
    assert np.isfinite(C).all() and C.shape == (4, 2)


def test_single_cluster():
    X = np.random.default_rng(0).normal(size=(500, 3))
    C, _ = kmeans_parallel(X, 1, np.ones(500), np.random.default_rng(0))
    np.testing.assert_allclose(C[0], X.mean(0), atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 4])
def test_kmeans_parallel_within_one_percent_of_best_of_20(seed):
    X, _ = make_blobs(6000, 8, centers=40, cluster_std=1.0, random_state=seed)
    X = X.astype(np.float32)
    best = SKKMeans(40, n_init=20, random_state=seed).fit(X).inertia_

    def lloyd_from(C):
        return SKKMeans(40, init=C, n_init=1).fit(X).inertia_

    C, _ = kmeans_parallel(X, 40, np.ones(len(X)), np.random.default_rng(seed))
    assert lloyd_from(C) <= 1.01 * best
    # The plain reduce (one k-means++ run) misses on these seeds: the check has teeth.
    C1, _ = kmeans_parallel(X, 40, np.ones(len(X)), np.random.default_rng(seed), **PLAIN)
    assert lloyd_from(C1) > 1.02 * best


def test_estimator_default_init_quality():
    X, _ = make_blobs(20000, 8, centers=40, cluster_std=1.0, random_state=1)
    X = X.astype(np.float32)
    best = SKKMeans(40, n_init=20, random_state=1).fit(X).inertia_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = dclust.KMeans(40, random_state=1, progress=False).fit(X)
    assert km.inertia_ <= 1.01 * best


def test_reduce_adds_no_pass():
    # Uniform data: Lloyd cannot reach a fixed point in three iterations, so both fits
    # run all three and differ only in what the init does on the client.
    X = np.random.default_rng(0).uniform(size=(30000, 4)).astype(np.float32)
    passes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for init in ("k-means||", "k-means++"):
            km = dclust.KMeans(20, init=init, max_iter=3, tol=0, random_state=0,
                               progress=False).fit(X)
            assert km.n_iter_ == 3
            passes[init] = km.n_passes_
    assert passes["k-means||"] == passes["k-means++"]


def test_kmeans_parallel_rounds_on_threads_give_the_same_centres():
    # The rounds' nearest-candidate searches split the rows over threads; each row's
    # label and distance depend on that row alone, so the centres keep their bits.
    from dclust.kernels import seeding

    rng = np.random.default_rng(3)
    X = (rng.normal(size=(3 * seeding._BLOCK_ROWS + 77, 6)) * 3).astype(np.float32)
    w = np.ones(X.shape[0])
    ref, n_ref = seeding.kmeans_parallel(X, 40, w, np.random.default_rng([1, 7]))
    for threads in (2, 3):
        got, n_got = seeding.kmeans_parallel(X, 40, w, np.random.default_rng([1, 7]),
                                             n_threads=threads)
        assert n_got == n_ref
        np.testing.assert_array_equal(got, ref)
    with seeding._thread_pool(2, X.shape[0]) as pool:
        lab, dist = seeding._nearest_rows(X, X[:50].astype(np.float64), pool)
    ref_lab, ref_dist = seeding.nearest_center(X, X[:50].astype(np.float64))
    np.testing.assert_array_equal(lab, ref_lab)
    np.testing.assert_array_equal(dist, ref_dist)


def test_greedy_kmeans_plusplus_on_threads_gives_the_same_centres(monkeypatch):
    # Blocks of rows, their gains added in block order: the same choice at every step
    # however many threads run the blocks (small blocks, so that there are several).
    from dclust.kernels import seeding

    monkeypatch.setattr(seeding, "_BLOCK_ROWS", 700)
    rng = np.random.default_rng(4)
    X = (rng.normal(size=(5000, 5)) * 2).astype(np.float32)
    w = rng.random(5000) + 0.5
    ref, ref_idx = seeding.kmeans_plusplus(X, 30, w, np.random.default_rng(9))
    for threads in (2, 4):
        got, idx = seeding.kmeans_plusplus(X, 30, w, np.random.default_rng(9), n_threads=threads)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(got, ref)
    assert len(set(ref_idx.tolist())) == 30
