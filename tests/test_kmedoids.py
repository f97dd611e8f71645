"""KMedoids against the kmedoids package (FasterPAM), scipy's cdist and brute force."""

from __future__ import annotations

import warnings

import dask.array as da
import kmedoids
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import parametrize_with_checks

import dclust
from dclust.algorithms.kmedoids import (
    cost_aggregation,
    fasterpam_bytes,
    fpam_seed,
    refine_aggregation,
)
from dclust.exceptions import ConvergenceWarning, DataError, DclustValueError
from dclust.kernels.medoids import (
    medoid_assign,
    medoid_cost_partial,
    medoid_refine_partial,
    per_cluster_top,
    per_cluster_top_combine,
)
from dclust.kernels.metrics import METRICS, pairwise_distances
from dclust.reductions.engine import run_pass
from dclust.runtime.compute import compute_count

SCIPY = {"euclidean": "euclidean", "sqeuclidean": "sqeuclidean", "manhattan": "cityblock",
         "cosine": "cosine"}


def _blobs(n=3000, d=5, centers=10, seed=1, std=1.0):
    X, y = make_blobs(n, n_features=d, centers=centers, cluster_std=std, random_state=seed)
    return X, y


@pytest.fixture(scope="module")
def blobs10():
    return _blobs()


def _brute_loss(X, rows, metric):
    return cdist(X, X[rows], SCIPY[metric]).min(axis=1).sum()


def _fit(X, k, **kw):
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return dclust.KMedoids(k, **kw).fit(X)


# ---- in-memory FasterPAM -------------------------------------------------------------------
@pytest.mark.parametrize("metric", METRICS)
def test_fasterpam_equals_kmedoids_package(metric):
    X, _ = _blobs(n=1200, d=4, centers=6, seed=3, std=2.0)
    km = _fit(X, 6, metric=metric, method="fasterpam", random_state=7)
    # On the very same matrix: the same medoids and loss.
    D = pairwise_distances(X, X, metric)
    ref = kmedoids.fasterpam(D, 6, init="random", random_state=fpam_seed(7), n_cpu=1)
    np.testing.assert_array_equal(km.medoid_indices_, np.asarray(ref.medoids, dtype=np.int64))
    assert km.inertia_ == ref.loss
    # And on scipy's matrix, to rounding.
    ref2 = kmedoids.fasterpam(cdist(X, X, SCIPY[metric]), 6, init="random",
                              random_state=fpam_seed(7), n_cpu=1)
    np.testing.assert_allclose(km.inertia_, ref2.loss, rtol=1e-9)
    np.testing.assert_allclose(km.inertia_, _brute_loss(X, km.medoid_indices_, metric), rtol=1e-9)
    assert km.n_passes_ == 0 and km.n_iter_ == ref.n_iter
    assert not hasattr(km, "clara_inertia_")


def test_fasterpam_on_dask_input_gives_lazy_labels():
    X, _ = _blobs(n=600, centers=4)
    km = _fit(da.from_array(X, chunks=(150, 5)), 4, method="fasterpam", random_state=0)
    assert isinstance(km.labels_, da.Array)
    ref = _fit(X, 4, method="fasterpam", random_state=0)
    np.testing.assert_array_equal(km.medoid_indices_, ref.medoid_indices_)
    np.testing.assert_array_equal(km.labels_.compute(), ref.labels_)


def test_fasterpam_refuses_a_matrix_over_the_budget():
    X = np.random.default_rng(0).normal(size=(2000, 3))
    need = fasterpam_bytes(2000)
    assert need == 32_000_000
    with pytest.raises(DclustValueError, match=r"method='fasterpam' needs the full 2,000 x 2,000 "
                       r"dissimilarity matrix, 30\.5 MiB as float64, more than the memory budget of "
                       r"1\.0 MiB \(max_memory\)\. Use method='clara'"):
        dclust.KMedoids(3, method="fasterpam", max_memory=2**20, progress=False).fit(X)
    # The default budget is half the available memory: no one has 2 ZiB.
    with pytest.raises(DclustValueError, match=r"half the memory available.*method='clara'"):
        dclust.KMedoids(3, method="fasterpam", progress=False).fit(
            da.zeros((2**36, 3), chunks=(2**30, 3)))


# ---- CLARA + refinement --------------------------------------------------------------------
_SLOW = pytest.mark.slow


@pytest.mark.parametrize("metric,seed,chunks", [
    ("euclidean", 0, 700), ("sqeuclidean", 3, 3000), ("manhattan", 1, 450), ("cosine", 2, 1000),
    *[pytest.param(m, s, c, marks=_SLOW) for m in METRICS for s, c in [(4, 3000), (5, 333)]],
])
def test_clara_refined_within_one_percent_of_fasterpam(blobs10, metric, seed, chunks):
    X, _ = blobs10
    D = cdist(X, X, SCIPY[metric])
    full = kmedoids.fasterpam(D, 10, init="build", n_cpu=1).loss
    km = _fit(da.from_array(X, chunks=(chunks, 5)), 10, metric=metric, random_state=seed)
    alone = _fit(da.from_array(X, chunks=(chunks, 5)), 10, metric=metric, random_state=seed,
                 refine=False)
    assert km.inertia_ <= 1.01 * full, (km.inertia_, full)
    # Never worse than CLARA alone, which is the same run stopped before refinement.
    assert km.inertia_ <= km.clara_inertia_
    assert km.clara_inertia_ == alone.inertia_
    # The loss is the brute-force loss of the medoids found; each medoid is a row of X.
    np.testing.assert_allclose(km.inertia_, _brute_loss(X, km.medoid_indices_, metric), rtol=1e-9)
    np.testing.assert_allclose(alone.inertia_, _brute_loss(X, alone.medoid_indices_, metric),
                               rtol=1e-9)
    assert len(set(km.medoid_indices_.tolist())) == 10
    np.testing.assert_array_equal(km.cluster_centers_, X[km.medoid_indices_])
    assert km.converged_


def test_clara_refinement_never_increases_the_loss(blobs10):
    from dclust.algorithms.kmedoids import clara_fit

    X, _ = blobs10
    res = clara_fit(da.from_array(X, chunks=(500, 5)), 12, metric="manhattan", seed=5)
    assert res.losses[0] == res.clara_loss
    assert all(b <= a * (1 + 1e-12) for a, b in zip(res.losses, res.losses[1:])), res.losses
    assert res.loss == min(res.losses)


def test_swaps_repair_a_bad_clara_start(blobs10):
    X, _ = blobs10
    full = kmedoids.fasterpam(cdist(X, X), 10, init="build", n_cpu=1).loss
    # One sample of 12 rows: CLARA alone misses blobs; moves within clusters cannot fix
    # that, swaps can.
    km = _fit(da.from_array(X, chunks=(600, 5)), 10, n_sampling=12, n_sampling_iter=1,
              random_state=0)
    assert km.clara_inertia_ > 1.3 * full
    assert km.inertia_ <= 1.01 * full, (km.inertia_, full)
    np.testing.assert_allclose(km.inertia_, _brute_loss(X, km.medoid_indices_, "euclidean"),
                               rtol=1e-9)


def test_labels_predict_transform_score(blobs10):
    X, _ = blobs10
    Xd = da.from_array(X, chunks=(700, 5))
    km = _fit(Xd, 10, metric="manhattan", random_state=0)
    assert isinstance(km.labels_, da.Array) and km.labels_.chunks == (Xd.chunks[0],)
    D = cdist(X, X[km.medoid_indices_], "cityblock")
    np.testing.assert_array_equal(km.labels_.compute(), D.argmin(axis=1))
    np.testing.assert_array_equal(km.predict(X), D.argmin(axis=1))
    np.testing.assert_allclose(km.transform(Xd).compute(), D, rtol=1e-12)
    np.testing.assert_allclose(km.score(Xd), -km.inertia_, rtol=1e-12)
    kn = _fit(X, 10, metric="manhattan", random_state=0)
    assert isinstance(kn.labels_, np.ndarray) and kn.labels_.dtype == np.int32


def test_one_compute_per_pass(blobs10):
    X, _ = blobs10
    Xd = da.from_array(X, chunks=(600, 5))
    before = compute_count()
    km = _fit(Xd, 10, random_state=1, cache="none")
    assert compute_count() - before == km.n_passes_
    # sampling + at most 5 CLARA scorings + refinement passes
    assert km.n_passes_ <= 1 + 5 + km.n_iter_
    before = compute_count()
    km.predict(Xd), km.transform(Xd)
    assert compute_count() == before


def test_max_iter_stops_refinement_and_warns(blobs10):
    X, _ = blobs10
    with pytest.warns(ConvergenceWarning, match=r"KMedoids stopped at max_iter=1 while medoids"):
        km = dclust.KMedoids(10, max_iter=1, random_state=0, progress=False).fit(X)
    assert km.n_iter_ == 1 and not km.converged_
    np.testing.assert_allclose(km.inertia_, _brute_loss(X, km.medoid_indices_, "euclidean"),
                               rtol=1e-9)


def test_small_data_is_one_sample_of_everything():
    X, _ = _blobs(n=90, centers=3)
    km = _fit(X, 3, random_state=0)
    ref = kmedoids.fasterpam(cdist(X, X), 3, init="build", n_cpu=1)
    np.testing.assert_allclose(km.inertia_, ref.loss, rtol=1e-12)


# ---- chunk invariance of the passes -------------------------------------------------------
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_passes_do_not_depend_on_chunking(blobs10, metric):
    X, _ = blobs10
    rng = np.random.default_rng(0)
    rows = rng.choice(len(X), 10, replace=False)
    other = rng.choice(len(X), 10, replace=False)
    M, M2 = X[rows], X[other]
    cand_rows = np.stack([rng.choice(len(X), 4, replace=False) for _ in range(10)])
    cand = X[cand_rows]
    ok = np.ones((10, 4), bool)
    ok[3, 2:] = False
    ref_cost = None
    ref = None
    for chunks, split_every in [(3000, 2), (333, 2), (700, 3), (101, 8)]:
        Xd = da.from_array(X, chunks=(chunks, 5))
        res = run_pass(Xd, {
            "cost": cost_aggregation([M, M2], metric),
            "refine": refine_aggregation(M, rows, cand, ok, metric, seed=0, iteration=0),
        }, split_every=split_every)
        cost = res["cost"]["cost"]
        np.testing.assert_allclose(cost, [_brute_loss(X, rows, metric), _brute_loss(X, other, metric)],
                                   rtol=1e-11)
        r = res["refine"]
        if ref is None:
            ref, ref_cost = r, cost
            continue
        np.testing.assert_allclose(cost, ref_cost, rtol=1e-12)
        np.testing.assert_array_equal(r["size"], ref["size"])
        np.testing.assert_allclose(r["own"], ref["own"], rtol=1e-12)
        np.testing.assert_allclose(r["cand_sum"], ref["cand_sum"], rtol=1e-12)
        # The nearest members are chosen by distance and row number: the same for any chunking.
        np.testing.assert_array_equal(r["near"]["row"], ref["near"]["row"])


def test_fit_does_not_depend_on_the_reduction_tree(blobs10):
    X, _ = blobs10
    Xd = da.from_array(X, chunks=(250, 5))
    fits = [_fit(Xd, 10, metric="manhattan", random_state=4, split_every=s) for s in (2, 5, 16)]
    for km in fits[1:]:
        np.testing.assert_array_equal(km.medoid_indices_, fits[0].medoid_indices_)
        np.testing.assert_allclose(km.inertia_, fits[0].inertia_, rtol=1e-12)
        assert km.n_passes_ == fits[0].n_passes_


def test_refine_statistics_against_brute_force(blobs10):
    X, _ = blobs10
    rng = np.random.default_rng(1)
    rows = rng.choice(len(X), 6, replace=False)
    cand_rows = rng.choice(len(X), (6, 3), replace=False)
    ok = np.ones((6, 3), bool)
    ok[0, 1] = False
    st = medoid_refine_partial(X, X[rows], rows, X[cand_rows], ok, "manhattan", n_near=4,
                               n_random=2, seed=0)
    lab = cdist(X, X[rows], "cityblock").argmin(axis=1)
    dist = cdist(X, X[rows], "cityblock").min(axis=1)
    np.testing.assert_array_equal(st["size"], np.bincount(lab, minlength=6))
    np.testing.assert_allclose(st["loss"], dist.sum(), rtol=1e-12)
    for c in range(6):
        members = X[lab == c]
        want = cdist(members, X[cand_rows[c]], "cityblock").sum(axis=0) * ok[c]
        np.testing.assert_allclose(st["cand_sum"][c], want, rtol=1e-12)
        mem_rows = np.flatnonzero(lab == c)
        mem_rows = mem_rows[~np.isin(mem_rows, rows)]
        nearest = mem_rows[np.lexsort((mem_rows, dist[mem_rows]))][:4]
        np.testing.assert_array_equal(st["near"]["row"][c], nearest)
        np.testing.assert_array_equal(st["near"]["x"][c], X[nearest])
        assert not np.isin(st["random"]["row"][c], rows).any()
    # A chunk of no rows gives the identity.
    empty = medoid_refine_partial(X[:0], X[rows], rows, X[cand_rows], ok, "manhattan")
    assert empty["loss"] == 0 and not empty["size"].any() and (empty["near"]["row"] == -1).all()


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
def test_swap_gains_against_brute_force(blobs10, metric):
    X, _ = blobs10
    X = X[:700]
    rng = np.random.default_rng(2)
    rows = rng.choice(len(X), 5, replace=False)
    cand_rows = rng.choice(np.setdiff1d(np.arange(len(X)), rows), 7, replace=False)
    ok = np.zeros((5, 1), bool)
    parts = [medoid_refine_partial(X[s:s + 250], X[rows], rows, np.zeros((5, 1, 5)), ok, metric,
                                   swap_candidates=X[cand_rows], n_swap=4, row_offset=s, block_id=b)
             for b, s in enumerate(range(0, 700, 250))]
    shared = sum(p["swap_shared"] for p in parts)
    accum = sum(p["swap_accum"] for p in parts)
    base = _brute_loss(X, rows, metric)
    for i in range(5):
        for j in range(7):
            swapped = rows.copy()
            swapped[i] = cand_rows[j]
            want = _brute_loss(X, swapped, metric) - base
            np.testing.assert_allclose(shared[j] + accum[i, j], want, rtol=1e-9, atol=1e-9 * base)
    nxt = per_cluster_top_combine([p["swap_next"] for p in parts], 4)
    assert (nxt["row"] >= 0).all() and not np.isin(nxt["row"], rows).any()


def test_per_cluster_top_combine_is_associative(rng):
    parts = []
    for i in range(4):
        n = int(rng.integers(0, 30))
        lab = rng.integers(0, 5, n)
        key = rng.integers(0, 4, n).astype(float)  # many ties
        rows = rng.permutation(1000)[:n] + 1000 * i
        parts.append(per_cluster_top(lab, key, rows, rng.normal(size=(n, 2)), 5, 3))
    a = per_cluster_top_combine(parts, 3)
    b = per_cluster_top_combine([per_cluster_top_combine(parts[:2], 3),
                                 per_cluster_top_combine(parts[2:], 3)], 3)
    c = per_cluster_top_combine(parts[::-1], 3)
    for r in (b, c):
        for key in ("key", "row", "x"):
            np.testing.assert_array_equal(a[key], r[key])


@pytest.mark.parametrize("metric", METRICS)
def test_medoid_kernels_portable(metric, rng):
    xp = pytest.importorskip("array_api_strict")
    X = rng.normal(size=(300, 4)) + 2
    M = X[[3, 50, 200]]
    lab, dist = medoid_assign(X, M, metric)
    lab2, dist2 = medoid_assign(xp.asarray(X), xp.asarray(M), metric)
    np.testing.assert_array_equal(lab, lab2)
    np.testing.assert_allclose(dist, dist2, rtol=1e-10, atol=1e-13)
    c1 = medoid_cost_partial(X, M, np.array([[0, 1, 2], [0, 0, 1]]), metric)["cost"]
    c2 = medoid_cost_partial(xp.asarray(X), xp.asarray(M), np.array([[0, 1, 2], [0, 0, 1]]),
                             metric)["cost"]
    np.testing.assert_allclose(c1, c2, rtol=1e-10)
    cand = np.stack([X[[1, 2]], X[[4, 5]], X[[6, 7]]])
    ok = np.ones((3, 2), bool)
    s1 = medoid_refine_partial(X, M, np.array([3, 50, 200]), cand, ok, metric, row_offset=10)
    s2 = medoid_refine_partial(xp.asarray(X), xp.asarray(M), np.array([3, 50, 200]),
                               xp.asarray(cand), ok, metric, row_offset=10)
    np.testing.assert_allclose(s1["cand_sum"], s2["cand_sum"], rtol=1e-10)
    np.testing.assert_array_equal(s1["random"]["row"], s2["random"]["row"])
    swaps = X[[8, 9, 120]]
    s1 = medoid_refine_partial(X, M, np.array([3, 50, 200]), cand, ok, metric,
                               swap_candidates=swaps, n_swap=4)
    s2 = medoid_refine_partial(xp.asarray(X), xp.asarray(M), np.array([3, 50, 200]),
                               xp.asarray(cand), ok, metric, swap_candidates=xp.asarray(swaps),
                               n_swap=4)
    for key in ("swap_shared", "swap_accum", "own", "loss"):
        np.testing.assert_allclose(s1[key], s2[key], rtol=1e-10, atol=1e-10, err_msg=key)
    np.testing.assert_array_equal(s1["swap_next"]["row"], s2["swap_next"]["row"])


# ---- degenerate data ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ["clara", "fasterpam"])
def test_constant_data(method):
    X = np.full((200, 3), 2.5, dtype=np.float32)
    km = _fit(X, 5, method=method, random_state=0)
    assert len(set(km.medoid_indices_.tolist())) == 5
    assert km.inertia_ == 0.0
    assert km.cluster_centers_.dtype == np.float32


@pytest.mark.parametrize("metric", METRICS)
def test_duplicate_points(metric):
    X, _ = _blobs(n=400, centers=3, seed=2)
    X = np.repeat(X[:4], 100, axis=0) + 0.0  # 4 distinct points, 100 copies each
    km = _fit(da.from_array(X, chunks=(90, 5)), 8, metric=metric, random_state=0)
    assert len(set(km.medoid_indices_.tolist())) == 8
    assert km.inertia_ == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(km.cluster_centers_, X[km.medoid_indices_])


def test_nan_is_refused():
    X, _ = _blobs(n=300, centers=3)
    X[123, 2] = np.nan
    with pytest.raises(DataError, match=r"X contains 1 non-finite values.*row 123"):
        dclust.KMedoids(3, progress=False).fit(da.from_array(X, chunks=(100, 5)))
    with pytest.raises(DataError, match=r"X contains 1 non-finite values.*row 123"):
        dclust.KMedoids(3, method="fasterpam", progress=False).fit(X)
    km = _fit(X[:100], 3, random_state=0)
    with pytest.raises(DataError, match=r"X contains 1 non-finite values.*row 123"):
        km.score(X)
    with pytest.raises(DataError, match=r"X contains 1 non-finite values.*row 123"):
        km.predict(X)


# ---- bad parameters ----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(metric="minkowski"), r"Unknown metric 'minkowski'; expected one of 'euclidean', "
                               r"'sqeuclidean', 'manhattan', 'cosine'\."),
    (dict(metric="cityblock"), r"Unknown metric 'cityblock' \(scipy's 'cityblock'\).*Use "
                               r"metric='manhattan'"),
    (dict(method="pam"), r"method='pam' is not valid; expected one of 'clara', 'fasterpam'"),
    (dict(n_clusters=51), r"n_samples=50 must be >= n_clusters=51"),
    (dict(n_sampling=4), r"n_sampling=4 must be >= n_clusters=5: each CLARA sample must hold "
                         r"at least one row per medoid.*80 \+ 4 k = 100"),
    (dict(n_sampling_iter=0), r"n_sampling_iter=0 is not valid; expected an integer >= 1"),
    (dict(max_iter=0), r"max_iter=0 is not valid; expected an integer >= 1"),
])
def test_bad_parameters(kwargs, match):
    X = np.random.default_rng(0).normal(size=(50, 2))
    params = dict(n_clusters=5, progress=False)
    params.update(kwargs)
    with pytest.raises(DclustValueError, match=match):
        dclust.KMedoids(**params).fit(X)


def test_wrong_number_of_features(blobs10):
    X, _ = blobs10
    km = _fit(X[:300], 3, random_state=0)
    with pytest.raises(DclustValueError, match=r"X has 4 features, but KMedoids is expecting 5"):
        km.predict(X[:10, :4])


def test_device_cuda_without_gpu_is_a_clear_error(blobs10):
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here; tests/test_gpu.py covers this machine")
    X, _ = blobs10
    X = X[:400]
    for method in ("clara", "fasterpam"):
        with pytest.raises(DclustValueError, match=r"device='cuda' but 2 of 2 workers have no "
                                                   r"usable GPU.*pip install 'dclust\[gpu\]'"):
            dclust.KMedoids(3, method=method, device="cuda", progress=False).fit(da.from_array(X))
    with pytest.raises(DclustValueError, match=r"device='cuda:0'.*pass device='cuda'"):
        dclust.KMedoids(3, device="cuda:0", progress=False).fit(X)
    auto = _fit(X, 3, random_state=0, max_iter=3)
    cpu = _fit(X, 3, random_state=0, max_iter=3, device="cpu")
    np.testing.assert_array_equal(auto.medoid_indices_, cpu.medoid_indices_)
    auto.set_params(device="cuda")
    for call in (auto.predict, auto.transform):
        with pytest.raises(DclustValueError, match=r"needs CuPy, which is not installed here"):
            call(X)


# ---- persistence and CLI -----------------------------------------------------------------
def test_save_load_round_trip(blobs10, tmp_path):
    X, _ = blobs10
    km = _fit(X, 10, metric="cosine", random_state=0)
    path = tmp_path / "kmed.npz"
    km.save(path)
    back = dclust.load(path)
    assert isinstance(back, dclust.KMedoids) and back.metric == "cosine"
    np.testing.assert_array_equal(back.medoid_indices_, km.medoid_indices_)
    np.testing.assert_array_equal(back.cluster_centers_, km.cluster_centers_)
    assert back.inertia_ == km.inertia_ and back.clara_inertia_ == km.clara_inertia_
    np.testing.assert_array_equal(back.predict(X), km.labels_)


def test_cli_fit_kmedoids(tmp_path, capsys):
    from dclust.cli.main import main

    X, _ = _blobs(n=2000, d=4, centers=4, seed=5)
    data = str(tmp_path / "x.zarr")
    dclust.write_array(da.from_array(X.astype(np.float32), chunks=(500, 4)), data)
    model, labels = tmp_path / "m.npz", str(tmp_path / "labels.zarr")
    status = main(["fit", "kmedoids", data, "-k", "4", "--metric", "manhattan", "--model",
                   str(model), "--labels", labels, "--seed", "3", "-q"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "KMedoids k=4 on 2,000 x 4 float32" in out and "CLARA alone" in out and "seed 3" in out
    km = dclust.load(model)
    assert km.metric == "manhattan" and km.random_state == 3
    import zarr

    got = zarr.open_array(labels, mode="r")[:]
    np.testing.assert_array_equal(got, km.predict(X.astype(np.float32)))
    # `dclust predict` knows the model too.
    labels2 = str(tmp_path / "labels2.zarr")
    assert main(["predict", str(model), data, "--labels", labels2, "-q"]) == 0, capsys.readouterr()
    np.testing.assert_array_equal(zarr.open_array(labels2, mode="r")[:], got)
    status = main(["fit", "kmedoids", data, "-k", "3", "--metric", "minkowski", "--model",
                   str(tmp_path / "m2.npz")])
    assert status == 2
    assert "invalid choice: 'minkowski'" in capsys.readouterr().err


# ---- scikit-learn's estimator checks -----------------------------------------------------
@parametrize_with_checks([dclust.KMedoids(n_clusters=3, random_state=0, progress=False)])
def test_sklearn_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)
