"""dclust.metrics against scikit-learn, over NumPy, dask and Zarr inputs, with pass counts."""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
import sklearn.metrics as skm
import zarr
from scipy.spatial.distance import cdist

import dclust.metrics as dm
import dclust.metrics._silhouette as sil_module
from dclust.exceptions import DataError, DclustTypeError, DclustValueError, StorageError
from dclust.kernels.cluster_metrics import (
    cluster_stats_combine,
    cluster_stats_partial,
    pair_counts_combine,
    pair_counts_partial,
    silhouette_rows,
    silhouette_tile_partial,
)
from dclust.runtime.compute import compute_count

PAIR_METRICS = ["adjusted_rand_score", "normalized_mutual_info_score",
                "adjusted_mutual_info_score", "homogeneity_completeness_v_measure"]


class Passes:
    """How many computations dclust submitted inside the ``with`` block."""

    def __enter__(self):
        self.start = compute_count()
        return self

    def __exit__(self, *exc):
        self.n = compute_count() - self.start


def _as_input(a, kind, tmp_path, chunks, name):
    if kind == "numpy":
        return a
    if kind == "dask":
        return da.from_array(a, chunks=(chunks,) + a.shape[1:])
    path = str(tmp_path / f"{name}.zarr")
    zarr.create_array(store=path, data=a, chunks=(chunks,) + a.shape[1:])
    return path


def _close(a, b, rtol=1e-12, atol=1e-15):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rtol,
                               atol=atol)


@pytest.fixture(scope="module")
def labelings():
    rng = np.random.default_rng(7)
    n = 1000
    y = rng.integers(0, 5, n)
    # Non-contiguous and negative labels, -1 an ordinary label, agreeing with y in part.
    codes = np.where(rng.random(n) < 0.6, y, rng.integers(0, 6, n))
    pred = np.array([-7, -1, 3, 40, 1_000_000_000_000, 12])[codes]
    return y, pred


# -- against known classes --------------------------------------------------------------


@pytest.mark.parametrize("kind_true,kind_pred", [("numpy", "numpy"), ("dask", "numpy"),
                                                 ("dask", "dask"), ("zarr", "dask")])
def test_pair_metrics_equal_sklearn(labelings, kind_true, kind_pred, tmp_path):
    y, pred = labelings
    lt = _as_input(y, kind_true, tmp_path, 130, "t")
    lp = _as_input(pred, kind_pred, tmp_path, 77, "p")  # chunked differently on purpose
    for name in PAIR_METRICS:
        with Passes() as p:
            got = getattr(dm, name)(lt, lp)
        assert p.n == (0 if kind_true == kind_pred == "numpy" else 1), name
        _close(got, getattr(skm, name)(y, pred))
    for method in ("min", "geometric", "max"):
        _close(dm.normalized_mutual_info_score(lt, lp, average_method=method),
               skm.normalized_mutual_info_score(y, pred, average_method=method))
        _close(dm.adjusted_mutual_info_score(lt, lp, average_method=method),
               skm.adjusted_mutual_info_score(y, pred, average_method=method))
    _close(dm.homogeneity_completeness_v_measure(lt, lp, beta=0.5),
           skm.homogeneity_completeness_v_measure(y, pred, beta=0.5))


@pytest.mark.parametrize("case", ["one_cluster", "singletons", "one_vs_singletons", "identical",
                                  "permuted", "two_rows", "strings"])
def test_pair_metrics_edge_cases(case):
    n = 12
    a = {
        "one_cluster": (np.zeros(n, int), np.zeros(n, int)),
        "singletons": (np.arange(n), np.arange(n)[::-1]),
        "one_vs_singletons": (np.zeros(n, int), np.arange(n)),
        "identical": (np.arange(n) % 3, np.arange(n) % 3),
        "permuted": (np.arange(n) % 3, (np.arange(n) + 1) % 3 * 5 - 4),
        "two_rows": (np.array([0, 1]), np.array([5, 5])),
        "strings": (np.array(list("aabbccaabbcc")), np.array(list("xyxyxyzzzzxy"))),
    }[case]
    y, pred = a
    for name in PAIR_METRICS:
        _close(getattr(dm, name)(y, pred), getattr(skm, name)(y, pred))
        if case != "strings":
            _close(getattr(dm, name)(da.from_array(y, chunks=5), pred),
                   getattr(skm, name)(y, pred))


def test_pair_metrics_empty():
    e = np.zeros(0, dtype=int)
    for name in PAIR_METRICS:
        _close(getattr(dm, name)(e, e), getattr(skm, name)(e, e))
    assert dm.accuracy(e, e) == 1.0
    assert dm.contingency_matrix(e, e).shape == (0, 0)


def test_contingency_matrix(labelings, tmp_path):
    y, pred = labelings
    yd = da.from_array(y, chunks=333)
    with Passes() as p:
        C, classes, clusters = dm.contingency_matrix(yd, pred, return_labels=True)
    assert p.n == 1
    np.testing.assert_array_equal(C, skm.cluster.contingency_matrix(y, pred))
    np.testing.assert_array_equal(classes, np.unique(y))
    np.testing.assert_array_equal(clusters, np.unique(pred))
    path = str(tmp_path / "pred.zarr")
    zarr.create_array(store=path, data=pred, chunks=(101,))
    np.testing.assert_array_equal(dm.contingency_matrix(y, zarr.open_array(path, mode="r")), C)
    S = dm.contingency_matrix(yd, pred, sparse=True)
    R = skm.cluster.contingency_matrix(y, pred, sparse=True)
    assert type(S) is type(R)
    np.testing.assert_array_equal(S.toarray(), R.toarray())
    np.testing.assert_array_equal(dm.contingency_matrix(y, pred, eps=0.5),
                                  skm.cluster.contingency_matrix(y, pred, eps=0.5))
    with pytest.raises(DclustValueError, match=r"eps=0.5 cannot be used with sparse=True"):
        dm.contingency_matrix(y, pred, eps=0.5, sparse=True)


def _brute_accuracy(y, pred):
    C = skm.cluster.contingency_matrix(y, pred)
    k = max(C.shape)
    P = np.zeros((k, k), dtype=int)
    P[: C.shape[0], : C.shape[1]] = C
    return max(P[np.arange(k), list(perm)].sum() for perm in itertools.permutations(range(k))) / len(y)


@pytest.mark.parametrize("k_true,k_pred", [(3, 3), (3, 5), (5, 2)])
def test_accuracy_is_best_matching(k_true, k_pred):
    rng = np.random.default_rng(k_true * 10 + k_pred)
    y = rng.integers(0, k_true, 300)
    pred = np.where(rng.random(300) < 0.7, (y * 3 + 1) % k_pred, rng.integers(0, k_pred, 300)) - 2
    got, mapping = dm.accuracy(da.from_array(y, chunks=70), pred, return_mapping=True)
    assert got == pytest.approx(_brute_accuracy(y, pred), abs=1e-15)
    assert len(mapping) == min(k_true, k_pred)
    assert sum(np.sum((pred == c) & (y == t)) for c, t in mapping.items()) == round(got * 300)


def test_accuracy_of_a_relabelling_is_one():
    y = np.repeat(np.arange(4), 25)
    assert dm.accuracy(y, np.array([9, -1, 3, 0])[y]) == 1.0


# -- from the data ----------------------------------------------------------------------


def _blobs(n, d, k, dtype, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.normal(size=(n, d)) + offset).astype(dtype)
    labels = np.array([-5, 0, 2, 17, 1_000, -1, 8, 3])[y]  # any integers
    return X, labels


def _db_reference(X, labels):
    """scikit-learn's Davies-Bouldin with exact (difference-based) distances."""
    values = np.unique(labels)
    C = np.stack([X[labels == v].mean(0) for v in values])
    s = np.array([np.linalg.norm(X[labels == v] - C[j], axis=1).mean() for j, v in enumerate(values)])
    D = cdist(C, C)
    D[D == 0] = np.inf
    return np.mean(np.max((s[:, None] + s) / D, axis=1))


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,d,k,offset", [(500, 3, 4, 0.0), (301, 12, 7, 1e4)])
def test_ch_db_inertia_equal_sklearn(kind, dtype, n, d, k, offset, tmp_path):
    X, labels = _blobs(n, d, k, dtype, offset)
    Xin = _as_input(X, kind, tmp_path, 97, "X")
    lab = da.from_array(labels, chunks=64) if kind != "numpy" else labels
    X64 = X.astype(np.float64)  # scikit-learn's reference in float64 (CH casts, DB does not)
    with Passes() as p:
        ch = dm.calinski_harabasz_score(Xin, lab)
    assert p.n == 1
    _close(ch, skm.calinski_harabasz_score(X64, labels), rtol=1e-10)
    with Passes() as p:
        db = dm.davies_bouldin_score(Xin, lab)
    assert p.n == 2
    _close(db, _db_reference(X64, labels), rtol=1e-12)
    # scikit-learn forms distances as ||x||^2 + ||c||^2 - 2 x.c, which loses digits far
    # from the origin: close to it, not to the last bits, there.
    _close(db, skm.davies_bouldin_score(X64, labels), rtol=1e-12 if offset == 0 else 1e-7)
    if dtype == np.float32:
        _close(db, skm.davies_bouldin_score(X, labels), rtol=1e-4)
    ref = sum(((X64[labels == v] - X64[labels == v].mean(0)) ** 2).sum() for v in np.unique(labels))
    with Passes() as p:
        got = dm.inertia(Xin, lab)
    assert p.n == 1
    _close(got, ref, rtol=1e-10)


def test_ch_db_edge_cases():
    X = np.repeat(np.arange(4.0), 3)[:, None] * np.ones((1, 2))
    labels = np.repeat(np.arange(4), 3)  # each cluster one repeated point: no dispersion
    assert dm.calinski_harabasz_score(X, labels) == skm.calinski_harabasz_score(X, labels) == 1.0
    assert dm.davies_bouldin_score(X, labels) == skm.davies_bouldin_score(X, labels) == 0.0
    X2 = np.random.default_rng(0).normal(size=(30, 2))
    l2 = np.arange(30) % 2
    X2[l2 == 1] = X2[l2 == 0]  # coincident centroids
    _close(dm.davies_bouldin_score(X2, l2), skm.davies_bouldin_score(X2, l2))


def test_inertia_with_centers_and_weights():
    X, labels = _blobs(400, 5, 3, np.float64)
    _, codes = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(1)
    C = rng.normal(size=(3, 5))
    w = rng.random(400) + 0.1
    Xd = da.from_array(X, chunks=90)
    sq = ((X[:, None, :] - C[None]) ** 2).sum(-1)
    with Passes() as p:
        got = dm.inertia(Xd, da.from_array(codes, chunks=55), centers=C, sample_weight=w)
    assert p.n == 1
    _close(got, np.sum(w * sq[np.arange(400), codes]), rtol=1e-12)
    with Passes() as p:
        got = dm.inertia(Xd, centers=C, sample_weight=da.from_array(w, chunks=33))
    assert p.n == 1
    _close(got, np.sum(w * sq.min(1)), rtol=1e-12)
    # Labels only: the weighted means are the centres.
    ref = 0.0
    for v in np.unique(codes):
        m = codes == v
        c = np.average(X[m], axis=0, weights=w[m])
        ref += np.sum(w[m] * ((X[m] - c) ** 2).sum(1))
    _close(dm.inertia(Xd, codes, sample_weight=w), ref, rtol=1e-12)


# -- silhouette -------------------------------------------------------------------------


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiles of a few dozen rows, so that small data spans several (ragged) blocks."""
    monkeypatch.setattr(sil_module, "MIN_BLOCK_ROWS", 1)
    monkeypatch.setattr(sil_module, "TARGET_BLOCKS", 5)


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
def test_silhouette_exact_equals_sklearn(kind, metric, small_blocks, tmp_path):
    X, labels = _blobs(333, 4, 5, np.float64, seed=3)
    labels[:1] = 99  # a singleton cluster: s = 0 there
    Xin = _as_input(X, kind, tmp_path, 80, "X")
    with Passes() as p:
        got = dm.silhouette_score(Xin, labels, metric=metric)
    assert p.n == 2
    _close(got, skm.silhouette_score(X, labels, metric=metric), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("split_every", [2, 8])
def test_silhouette_float32_and_tree_shapes(split_every, small_blocks):
    X, labels = _blobs(250, 6, 3, np.float32, seed=5)
    got = dm.silhouette_score(da.from_array(X, chunks=60), da.from_array(labels, chunks=41),
                              split_every=split_every)
    _close(got, skm.silhouette_score(X.astype(np.float64), labels), rtol=1e-10)


def test_silhouette_sampled(small_blocks):
    X, labels = _blobs(1200, 3, 4, np.float64, seed=11)
    X += np.random.default_rng(0).normal(scale=3.0, size=X.shape)  # overlapping clusters
    Xd = da.from_array(X, chunks=250)
    exact = skm.silhouette_score(X, labels)
    with Passes() as p:
        s, se = dm.silhouette_score(Xd, labels, sample_size=300, random_state=4,
                                    return_std_error=True)
    assert p.n == 2
    assert 0 < se < 0.05
    assert abs(s - exact) < 4 * se
    assert dm.silhouette_score(Xd, labels, sample_size=300, random_state=4) == s  # reproducible
    assert dm.silhouette_score(Xd, labels, sample_size=300, random_state=5) != s
    # A sample of every row is the exact score.
    _close(dm.silhouette_score(Xd, labels, sample_size=5000, random_state=0), exact, rtol=1e-10)
    assert dm.silhouette_score(Xd, labels, return_std_error=True)[1] == 0.0


def test_silhouette_kernels_match_a_dense_reference():
    rng = np.random.default_rng(2)
    Xi, Xj = rng.normal(size=(37, 3)), rng.normal(size=(29, 3))
    ci, cj = rng.integers(0, 4, 37), rng.integers(0, 4, 29)
    Si, Sj = silhouette_tile_partial(Xi, ci, Xj, cj, 4, same=False, tile=8)
    D = np.sqrt(((Xi[:, None] - Xj[None]) ** 2).sum(-1))
    _close(Si, np.stack([D[:, cj == c].sum(1) for c in range(4)], 1))
    _close(Sj, np.stack([D.T[:, ci == c].sum(1) for c in range(4)], 1))
    X = np.vstack([Xi, Xj])
    c = np.concatenate([ci, cj])
    S, none = silhouette_tile_partial(X, c, X, c, 4, same=True, tile=16)
    assert none is None
    _close(silhouette_rows(S, c, np.bincount(c)), skm.silhouette_samples(X, c), rtol=1e-10)


def _simplified_reference(X, C, own=None):
    D = np.sqrt(((X[:, None] - C[None]) ** 2).sum(-1))
    own = D.argmin(1) if own is None else own
    r = np.arange(len(X))
    a = D[r, own]
    D[r, own] = np.inf
    b = D.min(1)
    return np.mean((b - a) / np.maximum(a, b))


def test_simplified_silhouette():
    X, labels = _blobs(400, 3, 4, np.float64, seed=8)
    values, codes = np.unique(labels, return_inverse=True)
    Xd = da.from_array(X, chunks=77)
    C = np.stack([X[codes == j].mean(0) for j in range(len(values))])
    with Passes() as p:
        got = dm.simplified_silhouette_score(Xd, da.from_array(labels, chunks=50))
    assert p.n == 2
    _close(got, _simplified_reference(X, C, codes), rtol=1e-12)
    with Passes() as p:
        got = dm.simplified_silhouette_score(Xd, codes, centers=C)
    assert p.n == 1
    _close(got, _simplified_reference(X, C, codes), rtol=1e-12)
    _close(dm.simplified_silhouette_score(Xd, centers=C), _simplified_reference(X, C), rtol=1e-12)


# -- monoids ----------------------------------------------------------------------------


def test_monoids_do_not_depend_on_the_split(labelings):
    y, pred = labelings
    whole = pair_counts_partial(y, pred)
    parts = [pair_counts_partial(y[s : s + 150], pred[s : s + 150]) for s in range(0, 1000, 150)]
    merged = pair_counts_combine([pair_counts_combine(parts[:3]), pair_counts_combine(parts[3:])])
    for key in whole:
        np.testing.assert_array_equal(whole[key], merged[key])
    X, labels = _blobs(500, 3, 5, np.float32, offset=1e3)
    whole = cluster_stats_partial(X, labels)
    parts = [cluster_stats_partial(X[s : s + 70], labels[s : s + 70]) for s in range(0, 500, 70)]
    merged = cluster_stats_combine([cluster_stats_combine(parts[:4]), cluster_stats_combine(parts[4:])])
    np.testing.assert_array_equal(whole["label"], merged["label"])
    np.testing.assert_array_equal(whole["count"], merged["count"])
    _close(merged["mean"], whole["mean"], rtol=1e-13)
    _close(merged["m2"], whole["m2"], rtol=1e-10)


# -- errors -----------------------------------------------------------------------------


def test_errors_on_labels():
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(DclustValueError, match=r"labels has 19 entries but X has 20 rows"):
        dm.calinski_harabasz_score(X, np.zeros(19, int))
    with pytest.raises(DclustValueError, match=r"labels_pred has 3 entries but labels_true has 4"):
        dm.adjusted_rand_score([0, 1, 1, 0], da.from_array(np.array([0, 1, 1])))
    with pytest.raises(DclustValueError, match=r"must be 1-D .* shape \(20, 1\).*ravel"):
        dm.silhouette_score(X, np.zeros((20, 1), int))
    with pytest.raises(DclustTypeError, match=r"labels_true has dtype 'float64'.*astype\('int64'\)"):
        dm.accuracy(da.zeros(20, chunks=5), np.zeros(20, int))
    with pytest.raises(DataError, match=r"labels contains 1 NaN"):
        dm.davies_bouldin_score(X, np.r_[np.zeros(19), np.nan])
    with pytest.raises(StorageError, match=r"Cannot open labels_pred='/nonexistent/l.zarr'"):
        dm.adjusted_rand_score(np.zeros(3, int), "/nonexistent/l.zarr")


@pytest.mark.parametrize("func", [dm.calinski_harabasz_score, dm.davies_bouldin_score,
                                  dm.silhouette_score])
def test_errors_on_number_of_labels(func):
    X = da.from_array(np.random.default_rng(0).normal(size=(20, 2)), chunks=7)
    with pytest.raises(DclustValueError, match=r"Number of labels is 1\. Valid values are 2 to "
                       r"n_samples - 1 \(inclusive\); got n_samples=20"):
        func(X, np.full(20, 3))
    with pytest.raises(DclustValueError, match=r"Number of labels is 20\."):
        func(X, np.arange(20))


def test_error_on_nonfinite_data():
    X = np.random.default_rng(0).normal(size=(40, 3))
    X[27, 1] = np.nan
    Xd = da.from_array(X, chunks=10)
    labels = np.arange(40) % 2
    for call in (lambda: dm.calinski_harabasz_score(Xd, labels),
                 lambda: dm.silhouette_score(Xd, labels),
                 lambda: dm.silhouette_score(Xd, labels, sample_size=10, random_state=0),
                 lambda: dm.simplified_silhouette_score(Xd, centers=X[:2] * 0)):
        with pytest.raises(DataError, match=r"X contains 1 non-finite values, NaN or inf \(first "
                           r"in chunk 2, row 27\)"):
            call()


def test_errors_on_arguments():
    X = np.random.default_rng(0).normal(size=(20, 2))
    labels = np.arange(20) % 2
    with pytest.raises(DclustValueError, match=r"inertia needs labels, centers or both"):
        dm.inertia(X)
    with pytest.raises(DclustValueError, match=r"centers must be of shape \(n_centers, n_features=2\); "
                       r"got an array of shape \(2, 3\)"):
        dm.inertia(X, centers=np.zeros((2, 3)))
    with pytest.raises(DclustValueError, match=r"labels has 1 value\(s\) that are not row numbers of "
                       r"centers \(first at row 3: 5\)"):
        dm.inertia(X, np.where(np.arange(20) == 3, 5, labels), centers=X[:2])
    with pytest.raises(DclustValueError, match=r"centers has 1 row\(s\); at least 2"):
        dm.simplified_silhouette_score(X, centers=X[:1])
    with pytest.raises(DclustValueError, match=r"metric='precomputed' is not supported"):
        dm.silhouette_score(X, labels, metric="precomputed")
    with pytest.raises(DclustValueError, match=r"sample_size=1 must be None"):
        dm.silhouette_score(X, labels, sample_size=1)
    with pytest.raises(DclustValueError, match=r"average_method='mean' is not valid"):
        dm.normalized_mutual_info_score(labels, labels, average_method="mean")
    with pytest.raises(DclustValueError, match=r"beta=-1 must be a number >= 0"):
        dm.homogeneity_completeness_v_measure(labels, labels, beta=-1)
