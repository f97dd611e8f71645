"""``dclust.BalancedKMeans`` (issue 5): sizes, priors, partial transport, persistence, CLI."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr
from sklearn.utils.estimator_checks import parametrize_with_checks

import dclust
from dclust.cli.main import main
from dclust.exceptions import DclustValueError
from dclust.testing import make_blobs

FAST = dict(max_iter=8, sinkhorn_max_iter=60, sinkhorn_tol=1e-3, reg=0.1, progress=False)


@pytest.fixture(scope="module")
def unequal_blobs():
    """Three blobs of very different sizes (1200, 600, 203 rows) in 4 features."""
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc, s, size=(m, 4)) for loc, s, m in ((0, 1.0, 1200), (6, 0.7, 600),
                                                               (-6, 0.5, 203))]
    return np.vstack(parts).astype(np.float32)


def _quiet_fit(est, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dclust.ConvergenceWarning)
        return est.fit(X, **kw)


def test_size_tolerance_zero_gives_exact_sizes(unequal_blobs):
    X = unequal_blobs
    n, k = X.shape[0], 5
    bk = _quiet_fit(dclust.BalancedKMeans(k, size_tolerance=0, random_state=0, **FAST), X)
    sizes = np.bincount(bk.labels_, minlength=k)
    assert sizes.sum() == n
    assert np.all(np.abs(sizes - n / k) <= 1), sizes
    assert bk.n_repair_rounds_ >= 1
    # The plan itself is balanced to the Sinkhorn tolerance.
    np.testing.assert_allclose(bk.cluster_mass_, 1 / k, atol=2e-3)
    # predict uses the repaired prices: the same labels but for the few rows moved last.
    assert np.mean(bk.predict(X) == bk.labels_) > 0.95


def test_size_prior_is_followed(unequal_blobs):
    X = unequal_blobs
    n = X.shape[0]
    w = np.array([0.6, 0.3, 0.1])
    bk = _quiet_fit(dclust.BalancedKMeans(3, cluster_weights=w, size_tolerance=0,
                                          random_state=1, **FAST), X)
    np.testing.assert_allclose(np.sort(bk.cluster_mass_), np.sort(w), atol=2e-3)
    sizes = np.bincount(bk.labels_, minlength=3)
    order = np.argsort(w)
    assert np.all(np.abs(np.sort(sizes) - np.sort(n * w)) <= 1)
    np.testing.assert_array_equal(np.argsort(sizes), order)


def test_size_tolerance_caps_sizes(unequal_blobs):
    X = unequal_blobs
    n, k = X.shape[0], 4
    bk = _quiet_fit(dclust.BalancedKMeans(k, size_tolerance=0.1, random_state=0, **FAST), X)
    sizes = np.bincount(bk.labels_, minlength=k)
    assert sizes.max() <= np.floor(n / k * 1.1)


def test_partial_puts_one_minus_rho_on_the_virtual_cluster(unequal_blobs):
    X = unequal_blobs
    bk = _quiet_fit(dclust.BalancedKMeans(3, marginal="partial", rho=0.8, random_state=0, **FAST), X)
    assert bk.virtual_mass_ == pytest.approx(0.2, abs=2e-3)
    np.testing.assert_allclose(bk.cluster_mass_.sum(), 0.8, atol=2e-3)
    labels = np.asarray(bk.labels_)
    assert (labels == -1).any() and labels.max() == 2
    # The progressive schedule ends at the same mass.
    bk2 = _quiet_fit(dclust.BalancedKMeans(3, marginal="partial", rho=0.8, rho_schedule="linear",
                                           rho0=0.2, random_state=0, **dict(FAST, max_iter=3)), X)
    assert bk2.virtual_mass_ == pytest.approx(0.2, abs=2e-3)


def test_relaxed_sizes_move_between_data_and_prior(unequal_blobs):
    X = unequal_blobs
    # Blob sizes are about 0.6 / 0.3 / 0.1; a uniform prior with a weak KL penalty
    # leaves the sizes near the data's, a strong one pulls them to uniform.
    kw = dict(FAST, max_iter=3, init=np.array([[0.0] * 4, [6.0] * 4, [-6.0] * 4]))
    weak = _quiet_fit(dclust.BalancedKMeans(3, marginal="relaxed", reg_m=0.01, **kw), X)
    strong = _quiet_fit(dclust.BalancedKMeans(3, marginal="relaxed", reg_m=100.0, **kw), X)
    assert weak.cluster_mass_[0] > 0.5
    assert abs(strong.cluster_mass_[0] - 1 / 3) < 0.05
    assert weak.cluster_mass_.sum() == pytest.approx(1.0, abs=1e-5)


def test_chunk_invariance(unequal_blobs):
    import dask.array as da

    X = unequal_blobs
    init = X[[0, 700, 1300, 1900]].astype(np.float64)
    fits = [_quiet_fit(dclust.BalancedKMeans(4, init=init, **dict(FAST, max_iter=3, reg=0.3)),
                       da.from_array(X, chunks=(c, -1)))
            for c in (2003, 400)]
    np.testing.assert_allclose(fits[0].cluster_centers_, fits[1].cluster_centers_, rtol=1e-4,
                               atol=1e-4)
    assert fits[0].n_sinkhorn_iter_ == fits[1].n_sinkhorn_iter_


def test_save_load_predict(unequal_blobs, tmp_path):
    X = unequal_blobs
    bk = _quiet_fit(dclust.BalancedKMeans(3, size_tolerance=0, random_state=0, **FAST), X)
    path = tmp_path / "bk.npz"
    bk.save(path)
    back = dclust.load(path)
    assert type(back) is dclust.BalancedKMeans
    np.testing.assert_array_equal(back.predict(X), bk.predict(X))
    np.testing.assert_allclose(back.predict_proba(X[:10]), bk.predict_proba(X[:10]), rtol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(cluster_weights=[0.5, 0.5]), r"cluster_weights has shape \(2,\); expected \(3,\)"),
    (dict(cluster_weights=[0.5, 0.3, 0.3]), r"cluster_weights sums to 1.1.*off by \+0.1"),
    (dict(cluster_weights=[0.5, 0.6, -0.1]), r"cluster_weights has 1 weight\(s\) <= 0"),
    (dict(reg=0.0), r"reg=0.0 is not valid; expected a number > 0 \(entropic regularisation"),
    (dict(marginal="partial", rho=2.0), r"rho=2.0 is not valid; expected a number > 0 and <= 1 or None"),
    (dict(marginal="relaxed", size_tolerance=0), r"size_tolerance=0 makes the sizes exact"),
    (dict(rho_schedule="linear"), r"rho_schedule='linear' needs marginal='partial'"),
    (dict(size_tolerance=-1), r"size_tolerance=-1 is not valid; expected a number >= 0 or None"),
])
def test_bad_parameters(unequal_blobs, kwargs, match):
    with pytest.raises(DclustValueError, match=match):
        dclust.BalancedKMeans(3, progress=False, **kwargs).fit(unequal_blobs)


def test_cli_fit_balanced_kmeans(tmp_path, capsys):
    data = str(tmp_path / "b.zarr")
    make_blobs(data, 3_001, 4, 3, chunk_size=1_000, seed=2)
    model, labels = str(tmp_path / "bk.npz"), str(tmp_path / "labels.zarr")
    status = main(["fit", "balanced-kmeans", data, "-k", "4", "--size-tolerance", "0",
                   "--reg", "0.1", "--sinkhorn-tol", "1e-3", "--max-iter", "5", "--seed", "0",
                   "--model", model, "--labels", labels, "--quiet"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.startswith("BalancedKMeans k=4 on 3,001 x 4 float32") and "Sinkhorn iterations" in out
    sizes = np.bincount(zarr.open_array(labels, mode="r")[:], minlength=4)
    assert np.all(np.abs(sizes - 3_001 / 4) <= 1), sizes
    status = main(["fit", "balanced-kmeans", data, "-k", "3", "--cluster-weights", "0.5,0.6,0.1",
                   "--model", str(tmp_path / "x.npz"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "dclust: error: cluster_weights sums to 1.2" in err


def _hard_inertia(X, C, labels, w=None):
    X64, ok = X.astype(np.float64), labels >= 0
    d2 = ((X64[ok] - C[labels[ok]]) ** 2).sum(axis=1)
    return float(d2.sum() if w is None else (d2 * w[ok]).sum())


def test_transform_score_and_inertia_against_numpy(unequal_blobs):
    import dask.array as da
    from scipy.spatial.distance import cdist

    X = unequal_blobs
    rng = np.random.default_rng(3)
    w = rng.random(X.shape[0]) + 0.5
    bk = _quiet_fit(dclust.BalancedKMeans(3, size_tolerance=0, random_state=0, **FAST), X,
                    sample_weight=w)
    C = bk._state().centers  # the float64 centres the passes use
    np.testing.assert_allclose(C, bk.cluster_centers_, rtol=1e-6)
    labels = np.asarray(bk.labels_)
    # inertia_ is that of labels_ (repair moves included), weighted like the fit.
    assert bk.inertia_ == pytest.approx(_hard_inertia(X, C, labels, w), rel=1e-9)
    # transform: Euclidean distances to the centres, X's dtype, lazy for dask input.
    D = cdist(X.astype(np.float64), C)
    T = bk.transform(X)
    assert T.dtype == np.float32 and T.shape == (X.shape[0], 3)
    np.testing.assert_allclose(T, D, rtol=1e-5, atol=1e-5)
    Xd = da.from_array(X, chunks=(500, -1))
    Td = bk.transform(Xd)
    assert isinstance(Td, da.Array)
    np.testing.assert_allclose(Td.compute(), D, rtol=1e-5, atol=1e-5)
    # score: minus the inertia under predict's labels, optionally weighted.
    pred = np.asarray(bk.predict(X))
    assert bk.score(Xd) == pytest.approx(-_hard_inertia(X, C, pred), rel=1e-9)
    assert bk.score(X, sample_weight=w) == pytest.approx(-_hard_inertia(X, C, pred, w), rel=1e-9)


def test_score_ignores_the_virtual_cluster(unequal_blobs):
    X = unequal_blobs
    bk = _quiet_fit(dclust.BalancedKMeans(3, marginal="partial", rho=0.8, random_state=0, **FAST), X)
    C = bk._state().centers
    labels = np.asarray(bk.labels_)
    assert (labels == -1).any()
    assert bk.inertia_ == pytest.approx(_hard_inertia(X, C, labels), rel=1e-9)
    assert bk.score(X) == pytest.approx(-bk.inertia_, rel=1e-9)


def test_device_cuda_without_gpu_is_a_clear_error(unequal_blobs):
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here; tests/test_gpu.py covers this machine")
    X = unequal_blobs
    with pytest.raises(DclustValueError, match=r"device='cuda' but 2 of 2 workers have no usable "
                                               r"GPU.*pip install 'dclust\[gpu\]'"):
        dclust.BalancedKMeans(3, device="cuda", **FAST).fit(X)
    with pytest.raises(DclustValueError, match=r"device='gpu' is not one of 'auto', 'cpu'"):
        dclust.BalancedKMeans(3, device="gpu", **FAST).fit(X)
    quick = dict(FAST, max_iter=1, sinkhorn_max_iter=10)
    bk = _quiet_fit(dclust.BalancedKMeans(3, random_state=0, **quick), X)
    ref = _quiet_fit(dclust.BalancedKMeans(3, random_state=0, device="cpu", **quick), X)
    np.testing.assert_array_equal(bk.cluster_centers_, ref.cluster_centers_)
    bk.set_params(device="cuda")
    with pytest.raises(DclustValueError, match=r"needs CuPy, which is not installed here"):
        bk.predict(X)


# ---- scikit-learn's estimator checks -------------------------------------------------------
def _estimators():
    return [dclust.BalancedKMeans(n_clusters=3, random_state=0, progress=False, max_iter=3,
                                  sinkhorn_max_iter=30, sinkhorn_tol=1e-2, reg=0.2)]


EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data": (
        "sample_weight is not equivalent to removing/repeating samples (the seeding draws "
        "per row, as sklearn.cluster.KMeans)."
    ),
}


@pytest.mark.slow
@parametrize_with_checks(_estimators(), expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@pytest.mark.parametrize("marginal", ["balanced", "partial"])
def test_chained_sinkhorn_passes_give_the_same_bits(unequal_blobs, marginal, monkeypatch):
    """Several Sinkhorn passes per round trip (run on the cluster, across the end of a
    solve and the centres' move) end where one pass per round trip does, in fewer
    computations."""
    from dclust.runtime.compute import compute_count

    X = unequal_blobs
    kw = dict(marginal=marginal, rho=0.9) if marginal == "partial" else {}
    fits = {}
    for round_ in ("1", "8"):
        monkeypatch.setenv("DCLUST_ROUND", round_)
        before = compute_count()
        est = _quiet_fit(dclust.BalancedKMeans(3, random_state=0, max_iter=4,
                                               sinkhorn_max_iter=25, progress=False, **kw), X)
        fits[round_] = (est, compute_count() - before)
    (a, na), (b, nb) = fits["1"], fits["8"]
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_
    assert nb < na
