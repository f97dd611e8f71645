"""Choosing k (select_k, estimate_n_clusters), seeded k-means, and their commands."""

from __future__ import annotations

import json
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import make_blobs

import dclust
from dclust.algorithms.select_k import kneedle, sample_silhouettes
from dclust.cli.main import main
from dclust.kernels.lloyd import lloyd_partial
from dclust.kernels.seeded import seeded_lloyd_partial
from dclust.metrics import accuracy
from dclust.runtime.compute import compute_count


@pytest.fixture(scope="module")
def six_blobs():
    X, t = make_blobs(6000, n_features=5, centers=6, cluster_std=1.0, random_state=0)
    return X, t


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


# ---- the engine's row-aligned arrays ----------------------------------------------------------
def _aligned_chunk(X, w, ctx):
    y, z = ctx.aligned["y"], ctx.aligned["z"]
    assert y.shape[0] == X.shape[0] == z.shape[0] == ctx.n_rows
    return {"s": np.asarray(float((X[:, 0] * y * w).sum() + z.sum()))}


def _sum_s(parts):
    return {"s": np.sum([p["s"] for p in parts])}


def test_pass_reads_row_aligned_arrays():
    """Other arrays ride along with X (any chunking, NumPy or dask, 1-D or 2-D), also
    when tiny chunks are read several to a task."""
    from dclust.reductions.engine import Aggregation, group_size, run_pass

    X = da.from_array(np.arange(2000.0).reshape(1000, 2), chunks=(7, 2))
    assert group_size(X.chunks[0], 16) > 1
    y = np.arange(1000) % 5
    z = da.from_array(np.ones((1000, 3)), chunks=(100, 3))
    w = da.from_array(np.full(1000, 2.0), chunks=(7,))
    agg = Aggregation("aligned-test", _aligned_chunk, _sum_s)
    out = run_pass(X, {"a": agg}, sample_weight=w, aligned={"y": y, "z": z})["a"]["s"]
    assert out == pytest.approx(float((np.arange(0, 2000, 2) * y * 2).sum() + 3000))


# ---- the k-means sweep --------------------------------------------------------------------
def test_sweep_equals_separate_fits_and_reads_like_one(six_blobs, monkeypatch):
    """Ten values of k in the passes of about one fit, each k the same fit as alone."""
    monkeypatch.setenv("DCLUST_ROUND", "1")  # the separate fits' computations are counted
    X, _ = six_blobs
    Xd = da.from_array(X, chunks=(700, 5))
    ks = range(2, 12)
    before = compute_count()
    res = _quiet(dclust.select_k, Xd, ks, random_state=3, progress=False,
                 silhouette_sample_size=1500)
    sweep_computes = compute_count() - before
    assert res.best_k == 6 and res.criterion == "calinski_harabasz" and res.seed == 3
    singles = []
    for k in ks:
        before = compute_count()
        km = _quiet(dclust.KMeans(k, random_state=3, progress=False).fit, Xd)
        singles.append((km.n_passes_, compute_count() - before))
        m = res.models[k]
        # Same seed, same data and chunking: the same fit, bit for bit.
        assert m.inertia_ == km.inertia_
        np.testing.assert_array_equal(m.cluster_centers_, km.cluster_centers_)
        assert m.n_iter_ == km.n_iter_
        lab = np.asarray(m.labels_)
        i = k - 2
        assert res.table["inertia"][i] == km.inertia_
        # Calinski-Harabasz from the Lloyd statistics, Davies-Bouldin from one shared pass.
        assert res.table["calinski_harabasz"][i] == pytest.approx(
            skm.calinski_harabasz_score(X, lab), rel=1e-9)
        assert res.table["davies_bouldin"][i] == pytest.approx(
            skm.davies_bouldin_score(X, lab), rel=1e-9)
    slowest = max(p for p, _ in singles)
    assert res.n_passes <= 1.5 * slowest, (res.n_passes, singles)
    assert sweep_computes <= 1.5 * max(c for _, c in singles), (sweep_computes, singles)
    assert res.n_passes < sum(p for p, _ in singles) / 4
    text = repr(res)
    assert text.startswith("SelectKResult(best_k=6, criterion='calinski_harabasz')")
    assert "\n* " in text and "calinski_harabasz" in text


def test_shared_sample_seeds_every_k_as_its_own_fit():
    """Sample sizes that differ by k (init_size below k), several runs, iterations
    stopped early: still the separate fits, and criteria of the final labels."""
    X, _ = make_blobs(1500, n_features=3, centers=4, cluster_std=2.0, random_state=1)
    X = X.astype(np.float32)
    kw = dict(init="k-means++", init_size=5, n_init=2, max_iter=2, progress=False)
    res = _quiet(dclust.select_k, X, [2, 4, 7, 9], random_state=11, criteria=["elbow"], **kw)
    for k in (2, 4, 7, 9):
        km = _quiet(dclust.KMeans(k, random_state=11, **kw).fit, X)
        m = res.models[k]
        assert m.inertia_ == km.inertia_
        np.testing.assert_array_equal(m.cluster_centers_, km.cluster_centers_)
        lab = km.labels_
        # The centres moved in the last iteration: means and centres differ.
        assert res.table["calinski_harabasz"][[2, 4, 7, 9].index(k)] == pytest.approx(
            skm.calinski_harabasz_score(X.astype(np.float64), lab), rel=1e-7)
    assert "davies_bouldin" not in res.table and "silhouette" not in res.table
    assert res.choices["elbow"] == res.table["k"][int(np.nanargmax(res.table["elbow"]))]


def test_weighted_criteria_count_rows_w_times(six_blobs):
    X, _ = six_blobs
    w = np.random.default_rng(2).integers(1, 3, len(X))
    res = _quiet(dclust.select_k, X, [3, 6], sample_weight=w.astype(float), random_state=0,
                 criteria=["calinski_harabasz", "davies_bouldin"], progress=False)
    for i, k in enumerate([3, 6]):
        lab = np.repeat(np.asarray(res.models[k].labels_), w)
        Xr = np.repeat(X, w, axis=0)
        assert res.table["calinski_harabasz"][i] == pytest.approx(
            skm.calinski_harabasz_score(Xr, lab), rel=1e-9)
        assert res.table["davies_bouldin"][i] == pytest.approx(
            skm.davies_bouldin_score(Xr, lab), rel=1e-9)


def test_sweep_checkpoint_resume(tmp_path, six_blobs):
    X, _ = six_blobs
    ck = str(tmp_path / "sweep.ckpt.npz")
    kw = dict(random_state=1, checkpoint=ck, progress=False, silhouette_sample_size=500)
    a = _quiet(dclust.select_k, X, [2, 3, 5], **kw)
    b = _quiet(dclust.select_k, X, [2, 3, 5], resume=True, **kw)
    assert a.best_k == b.best_k
    for column in a.table:
        np.testing.assert_array_equal(a.table[column], b.table[column])
    np.testing.assert_array_equal(a.models[5].cluster_centers_, b.models[5].cluster_centers_)
    with pytest.raises(dclust.DclustError, match="n_clusters"):
        dclust.select_k(X, [2, 3, 4], resume=True, **kw)


def test_sample_silhouettes_equal_sklearn(rng):
    S = rng.normal(size=(300, 4))
    labelings = [rng.integers(0, 3, 300), (S[:, 0] > 0).astype(int), np.r_[np.zeros(299), 1]]
    got = sample_silhouettes(S, labelings, tile=64)
    for lab, g in zip(labelings, got):
        assert g == pytest.approx(skm.silhouette_score(S, lab), abs=1e-12)
    assert np.isnan(sample_silhouettes(S, [np.zeros(300)])[0])


def test_kneedle_finds_the_knee():
    ks = [1, 2, 3, 4, 5, 6, 8]
    inertia = [1000, 400, 120, 100, 90, 85, 80]
    d = kneedle(ks, inertia)
    assert ks[int(np.argmax(d))] == 3
    assert np.isnan(kneedle([2, 3], [5.0, 1.0])).all()


@pytest.mark.parametrize("kw, match", [
    (dict(ks=[]), "ks is empty"),
    (dict(ks=5), r"ks=5 must be a sequence"),
    (dict(ks=[2, 0]), r"ks holds 0; every k must be an integer >= 1"),
    (dict(ks=[2, 5000]), r"ks holds k=5000, more than n_samples=300"),
    (dict(ks=[2, 3], criterion="gap"), r"Unknown criterion 'gap'"),
    (dict(ks=[2, 3], estimator="dbscan"), r"Unknown estimator 'dbscan'"),
    (dict(ks=[2, 3], criterion="bic"), r"criterion 'bic' needs a likelihood; KMeans has none"),
    (dict(ks=[2, 3], criterion="elbow"), r"the elbow needs at least 3 values of k"),
    (dict(ks=[2, 3], init=np.zeros((2, 2))), r"An init array fixes the number of clusters"),
    (dict(ks=[2, 3], n_clusterz=3), r"KMeans has no parameter 'n_clusterz'"),
    (dict(ks=[2, 3], criterion="accuracy"), r"criterion 'accuracy' needs known classes"),
    (dict(ks=[2, 3], silhouette_sample_size=1), r"silhouette_sample_size=1 must be an integer"),
])
def test_select_k_errors(kw, match, rng):
    X = rng.normal(size=(300, 2))
    with pytest.raises(dclust.DclustError, match=match):
        dclust.select_k(X, progress=False, **kw)


def test_sweep_checks_the_data_in_its_first_pass(rng):
    X = rng.normal(size=(500, 3))
    X[123, 1] = np.nan
    before = compute_count()
    with pytest.raises(dclust.DataError, match=r"non-finite values.*row 123"):
        dclust.select_k(X, [2, 3], progress=False)
    assert compute_count() - before == 1  # found by the sample pass itself


def test_kmedoids_per_k(rng):
    X, _ = make_blobs(400, n_features=2, centers=3, cluster_std=0.5, random_state=2)
    res = _quiet(dclust.select_k, X, [2, 3, 4], "kmedoids", random_state=0,
                 silhouette_sample_size=200, progress=False)
    assert res.best_k == 3 and res.choices["silhouette"] == 3
    assert res.table["inertia"][1] == res.models[3].inertia_


def test_gmm_by_bic():
    gmm = pytest.importorskip("dclust.estimators.gmm")
    if not hasattr(gmm, "GaussianMixture"):
        pytest.skip("dclust.GaussianMixture is not there yet")
    X, _ = make_blobs(1500, centers=[[0, 0], [6, 0], [0, 6]], cluster_std=0.7, random_state=5)
    res = _quiet(dclust.select_k, X, [2, 3, 4, 5], "gmm", random_state=0,
                 criteria=["bic", "calinski_harabasz"], progress=False)
    assert res.criterion == "bic" and res.best_k == 3
    assert np.argmin(res.table["bic"]) == 1 and "aic" not in res.table


# ---- seeded k-means ------------------------------------------------------------------------
def _reference_seeded(X, y, C, classes, w):
    """Constrained k-means statistics the plain way: every row's cluster, then sums."""
    w = np.ones(len(X)) if w is None else w
    d2 = ((X[:, None, :].astype(np.float64) - C[None]) ** 2).sum(-1)
    lab = d2.argmin(1)
    known = y >= 0
    lab[known] = np.searchsorted(classes, y[known])
    k = C.shape[0]
    sums = np.zeros_like(C)
    np.add.at(sums, lab, X * w[:, None])
    weights = np.bincount(lab, weights=w, minlength=k)
    inertia = float((w * d2[np.arange(len(X)), lab]).sum())
    return sums, weights, inertia


@pytest.mark.parametrize("weighted", [False, True])
def test_seeded_kernel_matches_numpy_reference(rng, weighted):
    X = rng.normal(size=(500, 3))
    C = rng.normal(size=(5, 3)) * 2
    classes = np.array([3, 7])
    y = np.where(rng.random(500) < 0.2, rng.choice(classes, 500), -1)
    w = rng.uniform(0.5, 2, 500) if weighted else None
    got = seeded_lloyd_partial(X, y, C, classes, w, n_far=16, row_offset=1000)
    sums, weights, inertia = _reference_seeded(X, y, C, classes, w)
    np.testing.assert_allclose(got["sums"], sums, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["weights"], weights, rtol=1e-12)
    assert float(got["inertia"]) == pytest.approx(inertia, rel=1e-12)
    # No labelled row is ever offered to an empty cluster.
    assert got["far_row"].size and not (y[got["far_row"] - 1000] >= 0).any()
    # Without labelled rows it is the plain kernel.
    plain = seeded_lloyd_partial(X, np.full(500, -1), C, classes, w)
    ref = lloyd_partial(X, C, w)
    np.testing.assert_array_equal(plain["sums"], ref["sums"])


def _overlapping_blobs(seed):
    """Overlapping blobs of very unequal sizes, where plain k-means cuts classes wrongly."""
    sizes = [6000, 6000, 6000, 600, 600, 600, 6000, 600]
    X, t = make_blobs(sizes, n_features=2, cluster_std=1.5, random_state=seed, center_box=(-8, 8))
    rng = np.random.default_rng(seed)
    y = np.full(len(X), -1)
    rows = rng.choice(np.flatnonzero(np.isin(t, [0, 2, 4, 6])), int(0.05 * len(X)), replace=False)
    y[rows] = t[rows]  # half the classes labelled, on 5% of the rows
    return X, t, y


@pytest.mark.parametrize("seed", [1, 2])
def test_seeded_kmeans_beats_unseeded_and_keeps_labelled_rows(seed):
    X, t, y = _overlapping_blobs(seed)
    plain = _quiet(dclust.KMeans(8, random_state=seed, progress=False).fit, X)
    seeded = _quiet(dclust.KMeans(8, random_state=seed, progress=False,
                                  semi_supervised=True).fit, X, y)
    # With semi_supervised=False, y is ignored (as scikit-learn's clusterers ignore it); so is
    # a fully labelled NumPy y under the default "auto" (a pipeline's target).
    ignored = _quiet(dclust.KMeans(8, random_state=seed, progress=False,
                                   semi_supervised=False).fit, X, y)
    np.testing.assert_array_equal(ignored.cluster_centers_, plain.cluster_centers_)
    target = _quiet(dclust.KMeans(8, random_state=seed, progress=False).fit, X, t)
    np.testing.assert_array_equal(target.cluster_centers_, plain.cluster_centers_)
    auto = _quiet(dclust.KMeans(8, random_state=seed, progress=False).fit, X, y)
    np.testing.assert_array_equal(auto.cluster_centers_, seeded.cluster_centers_)
    free = y < 0
    assert accuracy(t[free], seeded.labels_[free]) > accuracy(t[free], plain.labels_[free]) + 0.02
    np.testing.assert_array_equal(seeded.known_classes_, [0, 2, 4, 6])
    known = ~free
    np.testing.assert_array_equal(seeded.labels_[known],
                                  np.searchsorted(seeded.known_classes_, y[known]))
    assert not hasattr(plain, "known_classes_")


def test_seeded_dask_inputs_any_class_values(rng):
    X, t = make_blobs(3000, n_features=3, centers=4, cluster_std=1.0, random_state=7)
    y = np.where(rng.random(3000) < 0.1, t * 10 + 5, -1)
    y[t == 3] = -1  # class 35 never labelled
    km = _quiet(dclust.KMeans(4, random_state=0, progress=False, semi_supervised=True).fit,
                da.from_array(X, chunks=(400, 3)), da.from_array(y, chunks=(1000,)))
    np.testing.assert_array_equal(km.known_classes_, [5, 15, 25])
    lab = km.labels_.compute()
    np.testing.assert_array_equal(lab[y >= 0], np.searchsorted(km.known_classes_, y[y >= 0]))
    assert accuracy(t, lab) > 0.99
    # y of no labelled row is plain k-means, bit for bit.
    a = dclust.KMeans(4, random_state=0, progress=False).fit(X)
    b = dclust.KMeans(4, random_state=0, progress=False, semi_supervised=True).fit(
        X, np.full(3000, -1))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


@pytest.mark.parametrize("y, match", [
    (np.zeros(10), r"y has shape \(10,\); expected \(3000,\)"),
    (np.full(3000, -2), r"y has 3,000 value\(s\) below -1 \(first at row 0: -2\)"),
    (np.array(["a"] * 3000), r"y has dtype '<U1'; expected integers"),
    (np.full(3000, 0.5), r"y holds values that are not whole numbers"),
    (np.arange(3000) % 5, r"y holds 5 known classes, more than n_clusters=4"),
    (da.from_array(np.full(3000, -3), chunks=500), r"y has 3,000 value\(s\) below -1"),
])
def test_seeded_errors(y, match, rng):
    X = rng.normal(size=(3000, 2))
    with pytest.raises(dclust.DclustError, match=match):
        dclust.KMeans(4, random_state=0, progress=False, semi_supervised=True).fit(X, y)


# ---- estimate_n_clusters ------------------------------------------------------------------
@pytest.mark.parametrize("std", [1.0, 2.0])
def test_estimate_n_clusters_finds_the_true_k(std):
    X, t = make_blobs(6000, n_features=4, centers=6, cluster_std=std, random_state=4)
    rng = np.random.default_rng(0)
    y = np.where(np.isin(t, [0, 1, 2]) & (rng.random(6000) < 0.2), t, -1)  # 3 of 6 classes known
    res = _quiet(dclust.estimate_n_clusters, X, y, range(2, 11), random_state=0,
                 progress=False, silhouette_sample_size=1000)
    assert res.best_k == 6 and res.criterion == "accuracy"
    acc = res.table["accuracy"]
    assert acc[4] == max(acc) > 0.99
    # The accuracy on the labelled rows, as dclust.metrics.accuracy computes it.
    lab = np.asarray(res.models[6].labels_)
    assert acc[4] == accuracy(y[y >= 0], lab[y >= 0])
    with pytest.raises(dclust.DclustError, match="y labels no row"):
        dclust.estimate_n_clusters(X, np.full(6000, -1), [2, 3], progress=False)
    with pytest.raises(dclust.DclustError, match="tie_break='accuracy' would not break ties"):
        dclust.estimate_n_clusters(X, y, [2, 3], tie_break="accuracy")


# ---- the commands --------------------------------------------------------------------------
def test_cli_select_k_and_score(tmp_path, capsys):
    X, t = make_blobs(3000, n_features=3, centers=3, cluster_std=0.8, random_state=3)
    data, model = str(tmp_path / "x.zarr"), str(tmp_path / "m.npz")
    dclust.write_array(da.from_array(X.astype(np.float32), chunks=(1000, 3)), data)
    status = main(["select-k", data, "--k", "2:5", "--seed", "0", "--model", model,
                   "--labels", str(tmp_path / "l.zarr"), "--json", str(tmp_path / "t.json"),
                   "--silhouette-sample-size", "500", "--quiet"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "best k=3 (calinski_harabasz)" in out and "SelectKResult(best_k=3" in out
    doc = json.load(open(tmp_path / "t.json"))
    assert doc["best_k"] == 3 and doc["table"]["k"] == [2, 3, 4, 5]
    assert dclust.load(model).n_clusters == 3
    dclust.write_labels(da.from_array(t.astype(np.int64), chunks=1000), str(tmp_path / "t.zarr"))
    status = main(["score", data, str(tmp_path / "l.zarr"), "--true", str(tmp_path / "t.zarr"),
                   "--metrics", "calinski_harabasz,accuracy,ari", "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert status == 0, err
    scores = json.loads(out)
    assert scores["accuracy"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)
    assert scores["calinski_harabasz"] == pytest.approx(
        skm.calinski_harabasz_score(X.astype(np.float32), t), rel=1e-4)
    status = main(["select-k", data, "--k", "5:2", "--quiet"])
    assert status == 2 and "ks is empty" in capsys.readouterr().err
    status = main(["select-k", data, "--k", "two:5"])
    assert status == 2 and "START:STOP" in capsys.readouterr().err
    status = main(["score", data, str(tmp_path / "l.zarr"), "--metrics", "ari"])
    assert status == 2 and "pass --true CLASSES.zarr" in capsys.readouterr().err
