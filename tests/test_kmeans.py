"""KMeans against scikit-learn, the compute budget, and the estimator contract."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

import dclust
from dclust.exceptions import EmptyClusterWarning
from dclust.runtime.compute import compute_count


def _perm_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    mapping = {}
    for x, y in zip(a, b):
        if mapping.setdefault(x, y) != y:
            return False
    return len(set(mapping.values())) == len(mapping)


CASES = [
    dict(n=3000, d=6, k=5, std=1.0, dtype=np.float32, chunks=500, seed=0),
    dict(n=4000, d=3, k=12, std=2.5, dtype=np.float64, chunks=333, seed=1),
    dict(n=2500, d=20, k=30, std=4.0, dtype=np.float32, chunks=2500, seed=2),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"n{c['n']}-k{c['k']}-{np.dtype(c['dtype']).name}")
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_sklearn_from_same_init(case, weighted):
    X, _ = make_blobs(case["n"], n_features=case["d"], centers=case["k"], cluster_std=case["std"],
                      random_state=case["seed"])
    X = X.astype(case["dtype"])
    rng = np.random.default_rng(case["seed"])
    init = X[rng.choice(len(X), case["k"], replace=False)].astype(np.float64)
    w = rng.uniform(0.5, 2.0, len(X)) if weighted else None
    sk = SKKMeans(case["k"], init=init, n_init=1, max_iter=300, tol=1e-4).fit(X, sample_weight=w)
    Xd = da.from_array(X, chunks=(case["chunks"], case["d"]))
    wd = None if w is None else da.from_array(w, chunks=(case["chunks"],))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = dclust.KMeans(case["k"], init=init, max_iter=300, tol=1e-4, progress=False).fit(Xd, sample_weight=wd)
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-5, atol=1e-5 * np.abs(X).max())
    assert km.n_iter_ == sk.n_iter_
    assert _perm_equal(km.labels_.compute(), sk.labels_)
    np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=1e-4)
    assert km.cluster_centers_.dtype == X.dtype


def test_numpy_input_gives_numpy_outputs(blobs):
    X, y, _ = blobs
    km = dclust.KMeans(5, random_state=0, progress=False).fit(X)
    assert isinstance(km.labels_, np.ndarray) and km.labels_.dtype == np.int32
    assert isinstance(km.predict(X), np.ndarray)
    assert km.transform(X).shape == (len(X), 5)
    assert _perm_equal(km.labels_, y)
    np.testing.assert_allclose(km.score(X), -km.inertia_, rtol=1e-9)


def test_dask_input_gives_lazy_outputs(blobs):
    X, y, _ = blobs
    Xd = da.from_array(X, chunks=(700, X.shape[1]))
    km = dclust.KMeans(5, random_state=0, progress=False).fit(Xd)
    assert isinstance(km.labels_, da.Array) and km.labels_.chunks == (Xd.chunks[0],)
    assert isinstance(km.transform(Xd), da.Array)
    np.testing.assert_allclose(km.transform(Xd).compute(), km.transform(X), rtol=1e-6)
    np.testing.assert_array_equal(km.predict(Xd).compute(), km.labels_.compute())


def test_one_compute_per_iteration(blobs, monkeypatch):
    monkeypatch.setenv("DCLUST_ROUND", "1")  # no chained iterations (see below)
    X, _, _ = blobs
    Xd = da.from_array(X, chunks=(400, X.shape[1]))
    init = X[:5].astype(np.float64)
    for max_iter in (1, 3, 6):
        before = compute_count()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km = dclust.KMeans(5, init=init, max_iter=max_iter, tol=0, progress=False).fit(Xd)
        used = compute_count() - before
        # persist + one pass per iteration + the final inertia pass
        assert km.n_iter_ == max_iter
        assert km.n_passes_ == max_iter + 1
        assert used == 1 + max_iter + 1
    # Building the lazy outputs computes nothing.
    before = compute_count()
    km.predict(Xd)
    km.transform(Xd)
    assert compute_count() == before


def test_submissions_counted_at_the_client(blobs, monkeypatch):
    """Every graph reaches the scheduler through Client._graph_to_futures: count there."""
    from distributed import Client

    monkeypatch.setenv("DCLUST_ROUND", "1")  # one pass per submission
    X, _, _ = blobs
    Xd = da.from_array(X, chunks=(400, X.shape[1])).persist()
    calls = []
    orig = Client._graph_to_futures

    def counting(self, *a, **kw):
        calls.append(1)
        return orig(self, *a, **kw)

    monkeypatch.setattr(Client, "_graph_to_futures", counting)
    km = dclust.KMeans(5, init=X[:5], max_iter=4, tol=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km.fit(Xd)
    assert len(calls) == km.n_passes_ == 4 + 1


def test_chunk_invariance(blobs):
    X, _, _ = blobs
    init = X[10:15].astype(np.float64)
    ref = None
    for chunks, split_every in [(3000, 2), (1000, 2), (333, 3), (97, 8)]:
        Xd = da.from_array(X, chunks=(chunks, X.shape[1]))
        km = dclust.KMeans(5, init=init, split_every=split_every, progress=False).fit(Xd)
        if ref is None:
            ref = km
            continue
        np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-6)
        assert km.n_iter_ == ref.n_iter_
        np.testing.assert_allclose(km.inertia_, ref.inertia_, rtol=1e-9)


def test_empty_cluster_relocated_like_sklearn():
    X, _ = make_blobs(2000, n_features=2, centers=3, random_state=4)
    init = np.array([X[0], X[1], [1e4, 1e4]], dtype=np.float64)
    sk = SKKMeans(3, init=init, n_init=1).fit(X)
    with pytest.warns(EmptyClusterWarning, match="empty cluster"):
        km = dclust.KMeans(3, init=init, progress=False).fit(da.from_array(X, chunks=(300, 2)))
    assert np.abs(km.cluster_centers_).max() < 1e3  # never left far away or at the origin
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-6)


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_inits_reach_a_good_solution(init, blobs):
    X, y, _ = blobs
    km = dclust.KMeans(5, init=init, n_init=10 if init == "random" else 1, random_state=1,
                       progress=False).fit(X)
    best = SKKMeans(5, n_init=10, random_state=0).fit(X)
    assert km.inertia_ <= best.inertia_ * 1.01


def test_kmeans_parallel_init_quality():
    X, _ = make_blobs(20000, n_features=8, centers=40, cluster_std=3.0, random_state=2)
    X = X.astype(np.float32)
    km = dclust.KMeans(40, init="k-means||", max_iter=1, random_state=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km.fit(X)
    from sklearn.cluster import kmeans_plusplus

    ratios = []
    for seed in range(3):
        C, _ = kmeans_plusplus(X, 40, random_state=seed)
        ratios.append(km._init_inertia / ((X[:, None] - C[None]) ** 2).sum(-1).min(1).sum())
    assert np.median(ratios) <= 1.1


def test_same_seed_same_result_and_n_init_keeps_best(blobs):
    X, _, _ = blobs
    a = dclust.KMeans(5, init="random", random_state=3, progress=False).fit(X)
    b = dclust.KMeans(5, init="random", random_state=3, progress=False).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    singles = [dclust.KMeans(5, init="random", n_init=1, random_state=3 + i, progress=False).fit(X).inertia_ for i in range(3)]
    multi = dclust.KMeans(5, init="random", n_init=3, random_state=3, progress=False).fit(X)
    assert multi.inertia_ == pytest.approx(min(singles))


def test_fewer_distinct_points_than_clusters_warns():
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 50, axis=0)
    with pytest.warns(dclust.ConvergenceWarning, match="distinct clusters"):
        km = dclust.KMeans(3, random_state=0, progress=False).fit(X)
    assert np.isfinite(km.cluster_centers_).all()


def test_get_set_params_and_clone():
    from sklearn.base import clone

    km = dclust.KMeans(7, tol=1e-3)
    assert km.get_params()["n_clusters"] == 7
    c = clone(km)
    assert c.get_params() == km.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        km.set_params(nope=1)
    assert "n_clusters=7" in repr(km)


def test_not_fitted():
    with pytest.raises(dclust.NotFittedError, match="not fitted yet"):
        dclust.KMeans().predict(np.zeros((3, 2)))


def test_all_zero_dask_weights_refused_in_first_pass(blobs):
    X, _, _ = blobs
    Xd = da.from_array(X, chunks=(500, X.shape[1]))
    w = da.zeros(len(X), chunks=500)
    for init in ("k-means||", X[:5]):
        before = compute_count()
        with pytest.raises(ValueError, match="sample_weight is zero everywhere"):
            dclust.KMeans(5, init=init, progress=False).fit(Xd, sample_weight=w)
        assert compute_count() - before <= 2  # persist + the first pass, nothing more


def test_saved_model_keeps_init_array(tmp_path, blobs):
    X, _, _ = blobs
    init = X[:5].astype(np.float64)
    km = dclust.KMeans(5, init=init, progress=False).fit(X)
    km.save(tmp_path / "m.npz")
    back = dclust.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.init, init)
    np.testing.assert_array_equal(back.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(back.predict(X), km.predict(X))


def test_load_in_a_fresh_process(tmp_path, blobs):
    """dclust imports estimators lazily; load() must still know every model type."""
    import subprocess
    import sys

    X, _, _ = blobs
    km = dclust.KMeans(5, random_state=0, progress=False).fit(X)
    km.save(tmp_path / "m.npz")
    code = f"import dclust; m = dclust.load({str(tmp_path / 'm.npz')!r}); print(type(m).__name__, m.n_clusters)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["KMeans", "5"]


def test_chained_iterations_are_bit_identical_and_save_round_trips(blobs, monkeypatch):
    """Several iterations per round trip (DCLUST_ROUND): the same fit, bit for bit,
    with fewer computations; a fit converging inside a round drops the passes after."""
    X, _, _ = blobs
    Xd = da.from_array(X, chunks=(400, X.shape[1]))
    init = X[:5].astype(np.float64)
    fits = {}
    for rounds in ("1", "4"):
        monkeypatch.setenv("DCLUST_ROUND", rounds)
        for tol, max_iter in ((0, 6), (1e-9, 300)):
            before = compute_count()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                km = dclust.KMeans(5, init=init, max_iter=max_iter, tol=tol,
                                   progress=False).fit(Xd)
            fits[rounds, tol] = (km, compute_count() - before)
    for tol in (0, 1e-9):
        (a, used_a), (b, used_b) = fits["1", tol], fits["4", tol]
        np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
        assert (a.inertia_, a.n_iter_, a.converged_) == (b.inertia_, b.n_iter_, b.converged_)
        assert used_b < used_a, (a.n_iter_, used_a, used_b)
    # tol=0, max_iter=6: iteration 1 alone (it folds the data checks in), 2-5 chained,
    # 6 alone, then the final inertia: persist + 4 computations; no pass wasted.
    km, used = fits["4", 0]
    assert used == 1 + 4 and km.n_passes_ == 6 + 1
