"""Two-level k-means for large k (KMeans(algorithm="hierarchical")) and tiled exact Lloyd."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

import dclust
from dclust.exceptions import DclustValueError
from dclust.algorithms.hierarchical import (HIERARCHICAL_MIN_K, allocate_centres,
                                            coarse_clusters, resolve_algorithm)
from dclust.kernels.lloyd import lloyd_partial, nearest_center
from dclust.kernels.probe import probe_lloyd_partial, probe_nearest
from dclust.testing import interrupt_after


def _fit(X, k, **kw):
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dclust.KMeans(k, algorithm="hierarchical", **kw).fit(X)


@pytest.fixture(scope="module")
def blobs():
    X, _ = make_blobs(12_000, n_features=8, centers=60, cluster_std=0.6, center_box=(-20, 20),
                      random_state=3)
    return X


# ---- the parts --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_allocate_centres_sums_to_k_within_caps(seed):
    rng = np.random.default_rng(seed)
    kc = int(rng.integers(1, 40))
    count = rng.integers(0, 50, size=kc)
    weight = count * rng.uniform(0.5, 2.0, size=kc)
    k = int(rng.integers(1, max(count.sum(), 1) + 1)) if count.sum() else 0
    if k == 0:
        return
    alloc = allocate_centres(k, weight, count)
    assert alloc.sum() == k
    assert (alloc <= count).all()
    live = count > 0
    if k >= live.sum():
        assert (alloc[live] >= 1).all()
    assert (alloc[~live] == 0).all()


def test_allocate_centres_is_proportional():
    alloc = allocate_centres(100, [10.0, 30.0, 60.0], [1000, 1000, 1000])
    np.testing.assert_array_equal(alloc, [10, 30, 60])
    # Capped by the rows a cell has; the rest goes to the others.
    alloc = allocate_centres(100, [10.0, 30.0, 60.0], [5, 1000, 1000])
    assert alloc[0] == 5 and alloc.sum() == 100


def test_allocate_centres_refuses_too_few_weighted_rows():
    with pytest.raises(DclustValueError, match="fewer than n_clusters=10"):
        allocate_centres(10, [1.0, 0.0], [4, 100])


def _cells(k, kc, rng, d=5):
    fine = rng.normal(size=(k, d))
    coarse = rng.normal(size=(kc, d))
    lab = nearest_center(fine, coarse)[0]
    order = np.argsort(lab, kind="stable")
    cells = np.searchsorted(lab[order], np.arange(kc + 1))
    return coarse, fine[order], cells


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probing_every_cell_is_exact_nearest(dtype):
    rng = np.random.default_rng(0)
    coarse, fine, cells = _cells(300, 17, rng)
    X = rng.normal(size=(1000, 5)).astype(dtype)
    lab, dist = probe_nearest(X, coarse, fine, cells, n_probe=17)
    ref_lab, ref_dist = nearest_center(X, fine)
    np.testing.assert_array_equal(lab, ref_lab)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-12)


def test_probe_limited_search_stays_in_probed_cells():
    rng = np.random.default_rng(1)
    coarse, fine, cells = _cells(400, 20, rng)
    X = rng.normal(size=(500, 5))
    lab, dist = probe_nearest(X, coarse, fine, cells, n_probe=2)
    cell_of = np.searchsorted(cells, lab, side="right") - 1
    d2 = ((X[:, None, :] - coarse[None]) ** 2).sum(-1)
    probes = np.argsort(d2, axis=1)[:, :2]
    assert (cell_of[:, None] == probes).any(axis=1).all()
    # ... and is the nearest centre among those cells' centres.
    for i in range(0, 500, 37):
        cand = np.concatenate([np.arange(cells[c], cells[c + 1]) for c in probes[i]])
        best = cand[np.argmin(((fine[cand] - X[i]) ** 2).sum(-1))]
        assert lab[i] == best
        np.testing.assert_allclose(dist[i], ((fine[best] - X[i]) ** 2).sum(), rtol=1e-12)


def test_probe_statistics_match_exact_lloyd_when_every_cell_is_probed():
    rng = np.random.default_rng(2)
    coarse, fine, cells = _cells(64, 8, rng)
    X = rng.normal(size=(3000, 5)).astype(np.float32)
    w = rng.uniform(0.1, 2.0, size=3000)
    got = probe_lloyd_partial(X, coarse, fine, cells, 8, w, n_far=5, row_offset=100)
    ref = lloyd_partial(X, fine, w, n_far=5, row_offset=100)
    for key in ("sums", "weights", "inertia", "far_dist", "far_x", "far_weight"):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-10, err_msg=key)
    for key in ("far_row", "far_label"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)


def test_exact_lloyd_with_large_k_never_builds_a_rows_by_k_matrix():
    """k=65,536 centres against 20,000 rows: a rows x k float32 matrix would be 5 GiB;
    the kernels take the centres in cache-sized groups and stay within a small budget
    beyond their inputs and the k x d statistics."""
    rng = np.random.default_rng(0)
    k, d = 65_536, 8
    X = rng.normal(size=(20_000, d)).astype(np.float32)
    C = rng.normal(size=(k, d))
    budget = 64 * 2**20
    tracemalloc.start()
    try:
        nearest_center(X, C)
        lloyd_partial(X, C, None, n_far=32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < budget, f"peak {peak / 2**20:.0f} MiB"


def test_auto_switches_to_hierarchical_for_large_k():
    assert resolve_algorithm("auto", HIERARCHICAL_MIN_K) == "hierarchical"
    assert resolve_algorithm("auto", HIERARCHICAL_MIN_K - 1) == "lloyd"
    assert resolve_algorithm("lloyd", 10**6) == "lloyd"
    assert coarse_clusters(16_384) == 128 and coarse_clusters(262_144) == 512


# ---- the estimator ------------------------------------------------------------------


def test_hierarchical_close_to_exact_lloyd(blobs):
    X = blobs
    k = 240
    km = _fit(X, k, random_state=0, max_iter=30)
    ref = SKKMeans(k, n_init=1, random_state=0, max_iter=30).fit(X)
    assert km.inertia_ <= 1.02 * ref.inertia_
    assert km.cluster_centers_.shape == (k, X.shape[1])
    cells = km.coarse_cells_
    assert cells[0] == 0 and cells[-1] == k and (np.diff(cells) >= 0).all()
    assert km.coarse_centers_.shape == (coarse_clusters(k), X.shape[1])
    # labels_, predict, score and inertia_ all use the same probes.
    np.testing.assert_array_equal(km.labels_, km.predict(X))
    np.testing.assert_allclose(-km.score(X), km.inertia_, rtol=1e-9)


def test_hierarchical_is_reproducible_and_weighted(blobs):
    X = blobs
    a = _fit(X, 100, random_state=5, max_iter=5, tol=0)
    b = _fit(X, 100, random_state=5, max_iter=5, tol=0)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    w = np.ones(X.shape[0])
    w[::2] = 0.0  # zero weights: those rows count for nothing
    c = dclust.KMeans(100, algorithm="hierarchical", random_state=5, max_iter=5, tol=0,
                      progress=False).fit(X, sample_weight=w)
    inertia_odd = -c.score(X[1::2])
    np.testing.assert_allclose(inertia_odd, c.inertia_, rtol=1e-9)


def test_hierarchical_array_init_groups_the_given_centres(blobs):
    X = blobs
    rng = np.random.default_rng(0)
    init = X[rng.choice(X.shape[0], 64, replace=False)]
    km = _fit(X, 64, init=init, max_iter=1, tol=0)
    assert km.n_iter_ == 1
    assert km.coarse_cells_[-1] == 64


def test_hierarchical_resume_is_bit_identical(blobs, tmp_path):
    X = blobs
    ck = str(tmp_path / "h.npz")
    full = _fit(X, 80, random_state=2, max_iter=6, tol=0)
    with interrupt_after(3), pytest.raises(KeyboardInterrupt):
        _fit(X, 80, random_state=2, max_iter=6, tol=0, checkpoint=ck)
    resumed = _fit(X, 80, random_state=2, max_iter=6, tol=0, checkpoint=ck, resume=True)
    np.testing.assert_array_equal(resumed.cluster_centers_, full.cluster_centers_)
    assert resumed.inertia_ == full.inertia_
    # A checkpoint of the exact algorithm is not one of the two-level fit.
    with pytest.raises(DclustValueError, match="algorithm"):
        dclust.KMeans(80, random_state=2, max_iter=6, tol=0, checkpoint=ck, resume=True,
                      progress=False).fit(X)


def test_hierarchical_model_round_trip(blobs, tmp_path):
    X = blobs
    km = _fit(X, 50, random_state=1, max_iter=3)
    path = str(tmp_path / "m.zarr")
    km.save(path)
    back = dclust.load(path)
    np.testing.assert_array_equal(back.coarse_cells_, km.coarse_cells_)
    np.testing.assert_array_equal(back.predict(X), km.predict(X))


@pytest.mark.parametrize("kw, match", [
    (dict(metric="cosine"), "metric='euclidean' only"),
    (dict(init=lambda X, k, rs: X[:k]), "not a callable"),
    (dict(algorithm="full"), "algorithm='full' is not valid"),
])
def test_hierarchical_refuses_what_it_cannot_do(blobs, kw, match):
    kw = {"algorithm": "hierarchical", **kw}
    with pytest.raises(DclustValueError, match=match):
        dclust.KMeans(10, progress=False, **kw).fit(blobs)


def test_hierarchical_refuses_known_classes(blobs):
    y = np.full(blobs.shape[0], -1)
    y[:10] = 0
    with pytest.raises(DclustValueError, match="known classes"):
        dclust.KMeans(10, algorithm="hierarchical", progress=False).fit(blobs, y)


# ---- probe recall ------------------------------------------------------------------


def test_probe_recall_matches_a_direct_count():
    from dclust.algorithms.hierarchical import group_by_cell, probe_recall

    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 16))
    coarse, fine, cells = group_by_cell(X[:256], 16, 0)
    miss, excess = probe_recall(X, coarse, fine, cells, 2)
    lab_p, d_p = probe_nearest(X, coarse, fine, cells, 2)
    lab_e, d_e = nearest_center(X, fine)
    assert miss == pytest.approx(np.mean(lab_p != lab_e))
    assert excess == pytest.approx(d_p.sum() / d_e.sum() - 1)
    assert 0 < miss < 1 and excess > 0
    assert probe_recall(X, coarse, fine, cells, 16) == (0.0, 0.0)  # every cell probed


def test_clustered_data_fits_without_a_probe_warning(blobs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", dclust.ProbeRecallWarning)
        km = dclust.KMeans(240, algorithm="hierarchical", random_state=0, max_iter=5,
                           progress=False).fit(blobs)
    assert km.probe_excess_ < 0.005
    assert 0 <= km.probe_miss_rate_ < 0.05


def test_near_uniform_data_warns_that_probes_lose():
    # 32 features, no structure: a coarse cell says little about where the nearest
    # fine centre is.
    X = np.random.default_rng(1).uniform(-1, 1, size=(8000, 32)).astype(np.float32)
    with pytest.warns(dclust.ProbeRecallWarning,
                      match=r"n_probe=1: on a sample, the probed cells miss the nearest centre "
                            r"of \d+% of the rows.*raise n_probe"):
        km = dclust.KMeans(400, algorithm="hierarchical", n_probe=1, random_state=0,
                           max_iter=3, progress=False).fit(X)
    assert km.probe_excess_ > 0.01 and km.probe_miss_rate_ > 0.1
    # Probing every cell is the exact search: nothing to warn about.
    with warnings.catch_warnings():
        warnings.simplefilter("error", dclust.ProbeRecallWarning)
        exact = dclust.KMeans(400, algorithm="hierarchical", n_probe=10_000, random_state=0,
                              max_iter=3, progress=False).fit(X)
    assert exact.probe_miss_rate_ == 0.0 and exact.probe_excess_ == 0.0


def test_probe_figures_are_saved_with_the_model(tmp_path, blobs):
    km = _fit(blobs, 240, random_state=0, max_iter=3)
    km.save(tmp_path / "m.dclust")
    back = dclust.load(tmp_path / "m.dclust")
    assert back.probe_excess_ == km.probe_excess_
    assert back.probe_miss_rate_ == km.probe_miss_rate_


@pytest.mark.parametrize("seed", range(4))
def test_coarse_probe_selection_is_the_p_smallest_lowest_column_on_ties(seed):
    from dclust.kernels.probe import _smallest

    rng = np.random.default_rng(seed)
    for _ in range(60):
        kc = int(rng.integers(2, 90))
        p = int(rng.integers(1, kc + 1))
        t = int(rng.integers(1, 20))
        # Small integers: many ties.
        G = rng.integers(-4, 4, size=(t, kc)).astype(np.float32)
        cnorm = rng.integers(0, 3, size=kc).astype(np.float32)
        out = np.full((t, p), -1, dtype=np.int64)
        _smallest(G, cnorm, out)
        v = G + cnorm
        for i in range(t):
            np.testing.assert_array_equal(out[i], np.lexsort((np.arange(kc), v[i]))[:p])


def test_auto_probes_take_the_fewest_that_lose_little():
    from dclust.algorithms.hierarchical import (DEFAULT_N_PROBE, choose_n_probe, group_by_cell,
                                                probe_recall)

    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, size=(4000, 24))
    coarse, fine, cells = group_by_cell(X[:600], 40, 0)
    p = choose_n_probe(X, coarse, fine, cells, probes=(2, 4, 8, 16), target=0.002)
    assert p in (2, 4, 8, 16)
    if p < 16:
        assert probe_recall(X, coarse, fine, cells, p)[1] <= 0.002
    smaller = [q for q in (2, 4, 8, 16) if q < p]
    assert all(probe_recall(X, coarse, fine, cells, q)[1] > 0.002 for q in smaller)
    assert p > 2  # near-uniform in 24 features: two probes lose more than that
    assert choose_n_probe(None, coarse, fine, cells) == DEFAULT_N_PROBE
    assert choose_n_probe(X, coarse, fine, cells, probes=(64,)) == 40  # every cell: exact


def test_auto_probes_on_clustered_and_near_uniform_data(blobs):
    km = dclust.KMeans(240, algorithm="hierarchical", random_state=0, max_iter=5,
                       progress=False).fit(blobs)
    assert km.get_params()["n_probe"] == "auto"
    assert km.n_probe_ == 4  # clustered: the fewest tried
    X = np.random.default_rng(1).uniform(-1, 1, size=(8000, 32)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uni = dclust.KMeans(400, algorithm="hierarchical", random_state=0, max_iter=3,
                            progress=False).fit(X)
    assert uni.n_probe_ > 4
    # predict searches the probes the fit chose; an int set afterwards overrides them.
    lab, _ = probe_nearest(X, uni.coarse_centers_, uni.cluster_centers_, uni.coarse_cells_,
                           uni.n_probe_)
    np.testing.assert_array_equal(uni.predict(X), lab)
    uni.set_params(n_probe=1)
    lab1, _ = probe_nearest(X, uni.coarse_centers_, uni.cluster_centers_, uni.coarse_cells_, 1)
    np.testing.assert_array_equal(uni.predict(X), lab1)
