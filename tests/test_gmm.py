"""dclust.GaussianMixture: scikit-learn's EM as the oracle, partly labelled data, passes,
checkpoints, persistence, the CLI and the kernels under array-api-strict."""

from __future__ import annotations

import re
import warnings

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.mixture import GaussianMixture as SKGaussianMixture

import dclust
from dclust.algorithms.gmm import kernel_model, m_step
from dclust.kernels.gmm import (COVARIANCE_TYPES, gmm_estep_partial, gmm_hard_partial,
                               gmm_random_partial)
from dclust.runtime.compute import compute_count
from dclust.testing import interrupt_after

K = 3


def _data(n=1500, d=3, k=K, seed=0, dtype=np.float64):
    """Overlapping, correlated blobs: EM iterates a few dozen times on them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d))
    mix = rng.normal(size=(k, d, d)) * 0.6
    truth = rng.integers(0, k, n)
    X = centres[truth] + np.einsum("nd,nde->ne", rng.normal(size=(n, d)), mix[truth])
    return X.astype(dtype), truth


@pytest.fixture(scope="module")
def data():
    return _data()[0]


def sk_start(X, ct, k=K):
    """Initial parameters from a short scikit-learn fit, as ``*_init`` keywords."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SKGaussianMixture(k, covariance_type=ct, max_iter=2, random_state=0).fit(X)
    return {"weights_init": sk.weights_, "means_init": sk.means_, "precisions_init": sk.precisions_}


def gm(k=K, **kw):
    kw.setdefault("progress", False)
    return dclust.GaussianMixture(k, **kw)


def fit_quietly(est, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(*args, **kw)


def assert_same_model(a, b, rtol=1e-6):
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=rtol)
    for attr in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        ref = np.asarray(getattr(b, attr), dtype=np.float64)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(getattr(a, attr), ref, rtol=rtol, atol=rtol * scale,
                                   err_msg=attr)


# ---- scikit-learn as the oracle ---------------------------------------------------------

@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_same_start_same_fit_as_sklearn(data, ct):
    start = sk_start(data, ct)
    sk = SKGaussianMixture(K, covariance_type=ct, tol=1e-6, max_iter=300, **start).fit(data)
    ours = gm(covariance_type=ct, tol=1e-6, max_iter=300, **start).fit(data)
    assert ours.converged_ and sk.converged_
    assert_same_model(ours, sk, rtol=1e-6)
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-9)
    # No initialisation pass: one pass per EM iteration.
    assert ours.n_passes_ == ours.n_iter_


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_float32_input(data, ct):
    X32 = data.astype(np.float32)
    start = sk_start(X32.astype(np.float64), ct)
    sk = SKGaussianMixture(K, covariance_type=ct, **start).fit(X32.astype(np.float64))
    ours = gm(covariance_type=ct, **start).fit(X32)
    assert ours.means_.dtype == np.float32 and ours.covariances_.dtype == np.float32
    # float32 arithmetic, float64 accumulation: as close to scikit-learn's float64 fit
    # as float32 allows (scikit-learn's own float32 fit is further off).
    assert ours.n_iter_ == sk.n_iter_
    assert abs(ours.lower_bound_ - sk.lower_bound_) < 1e-5
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("ct", ["full", "tied", "spherical"])
def test_sample_weight_counts_as_repeated_rows(data, ct):
    w = np.random.default_rng(1).integers(1, 4, data.shape[0])
    start = sk_start(data, ct)
    sk = SKGaussianMixture(K, covariance_type=ct, tol=1e-5, **start).fit(np.repeat(data, w, axis=0))
    ours = gm(covariance_type=ct, tol=1e-5, **start).fit(data, sample_weight=w)
    assert_same_model(ours, sk, rtol=1e-7)


def test_empty_component_is_handled_as_sklearn(data):
    """A component that starts far from every row gets nothing: its mean goes to the
    origin and its covariance to reg_covar, exactly as in scikit-learn."""
    start = sk_start(data, "diag")
    start["means_init"] = start["means_init"].copy()
    start["means_init"][1] = 1e3
    sk = SKGaussianMixture(K, covariance_type="diag", max_iter=5, **start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(data)
    ours = fit_quietly(gm(covariance_type="diag", max_iter=5, **start), data)
    assert_same_model(ours, sk, rtol=1e-9)
    np.testing.assert_allclose(ours.covariances_[1], 1e-6)


def test_collapsed_component_error_names_it():
    X = np.vstack([np.zeros((100, 2)), np.random.default_rng(0).normal(size=(100, 2)) + 10])
    with pytest.raises(dclust.DclustError, match=r"covariance of component \d .*not positive "
                       r"definite.*increase reg_covar \(now 0\.0\)"):
        gm(2, reg_covar=0.0, random_state=0).fit(X)
    # With scikit-learn's reg_covar the collapsed component fits, as in scikit-learn.
    ours = gm(2, random_state=0).fit(X)
    sk = SKGaussianMixture(2, random_state=0).fit(X)
    np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=1e-9)


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_predict_proba_score_bic_aic_sample_match_sklearn(data, ct):
    ours = gm(covariance_type=ct, random_state=0).fit(data)
    sk = SKGaussianMixture(K, covariance_type=ct, random_state=0)
    sk.fit(data[:50])  # then its parameters replaced by ours
    for attr in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        setattr(sk, attr, getattr(ours, attr))
    Xd = da.from_array(data, chunks=400)
    np.testing.assert_array_equal(ours.predict(data), sk.predict(data))
    np.testing.assert_allclose(ours.predict_proba(data), sk.predict_proba(data), atol=1e-10)
    np.testing.assert_allclose(ours.score_samples(data), sk.score_samples(data), rtol=1e-10)
    # Lazy for dask input, the same values.
    lazy = ours.score_samples(Xd)
    assert isinstance(lazy, da.Array) and isinstance(ours.predict_proba(Xd), da.Array)
    np.testing.assert_allclose(lazy.compute(), sk.score_samples(data), rtol=1e-10)
    np.testing.assert_array_equal(ours.predict(Xd).compute(), sk.predict(data))
    before = compute_count()
    assert ours.score(Xd) == pytest.approx(sk.score(data), rel=1e-12)
    assert compute_count() - before == 1  # one pass
    assert ours.score(data) == pytest.approx(sk.score(data), rel=1e-12)
    assert ours.bic(data) == pytest.approx(sk.bic(data), rel=1e-12)
    assert ours.aic(Xd) == pytest.approx(sk.aic(data), rel=1e-12)
    # The training labels follow the model.
    np.testing.assert_array_equal(ours.labels_, sk.predict(data))
    # Sampling: scikit-learn's draws for the same seed and parameters.
    Xs, ys = ours.sample(500)
    Xk, yk = sk.sample(500)
    np.testing.assert_allclose(Xs, Xk)
    np.testing.assert_array_equal(ys, yk)


def test_initialisations_reach_sklearns_fit(data):
    """Every init_params converges near scikit-learn's own k-means-initialised fit."""
    sk = SKGaussianMixture(K, random_state=0).fit(data)
    for init, passes in [("k-means||", 2), ("kmeans", None), ("k-means++", 1), ("random", 1),
                         ("random_from_data", 1)]:
        ours = fit_quietly(gm(init_params=init, random_state=0), data)
        assert ours.lower_bound_ > sk.lower_bound_ - 0.02, init
        if passes is not None:
            assert ours.n_passes_ == ours.n_iter_ + passes, init


def test_init_pass_counts_and_one_pass_per_iteration(data):
    Xd = da.from_array(data, chunks=300)
    before = compute_count()
    ours = fit_quietly(gm(random_state=0, cache="none"), Xd)
    # k-means|| on a sample (1 pass), the nearest-centre assignment (1), then one pass
    # per EM iteration; nothing else is computed (labels_ stays lazy).
    assert ours.n_passes_ == ours.n_iter_ + 2
    assert compute_count() - before == ours.n_passes_
    assert isinstance(ours.labels_, da.Array)


def test_n_init_keeps_the_highest_lower_bound(data):
    runs = [fit_quietly(gm(init_params="random_from_data", random_state=s), data).lower_bound_
            for s in (5, 6)]
    best = fit_quietly(gm(init_params="random_from_data", random_state=5, n_init=2), data)
    assert best.lower_bound_ == pytest.approx(max(runs), rel=1e-12)


def test_warm_start_continues_as_sklearn(data):
    start = sk_start(data, "full")
    sk = SKGaussianMixture(K, warm_start=True, max_iter=3, **start)
    ours = gm(warm_start=True, max_iter=3, **start)
    for _ in range(2):
        fit_quietly(sk, data)
        fit_quietly(ours, data)
        assert_same_model(ours, sk, rtol=1e-9)


def test_max_iter_zero_gives_the_initial_parameters(data):
    start = sk_start(data, "tied")
    ours = gm(covariance_type="tied", max_iter=0, **start).fit(data)
    assert ours.n_iter_ == 0 and not ours.converged_ and ours.n_passes_ == 0
    np.testing.assert_allclose(ours.precisions_, start["precisions_init"], rtol=1e-12)
    np.testing.assert_allclose(ours.means_, start["means_init"])


# ---- partly labelled data -----------------------------------------------------------------

def _labelled_problem(n=12000, seed=5):
    """5 classes; 3 of them labelled on 10 % of their rows."""
    X, truth = _data(n=n, d=4, k=5, seed=seed)
    rng = np.random.default_rng(seed)
    y = np.full(n, -1)
    known = (truth < 3) & (rng.random(n) < 0.1)
    y[known] = truth[known]
    return X, truth, y, known


def test_partly_labelled_recovers_the_novel_classes(tmp_path):
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.metrics import adjusted_rand_score

    X, truth, y, known = _labelled_problem()
    oracle = adjusted_rand_score(truth, QuadraticDiscriminantAnalysis().fit(X, truth).predict(X))
    # y lazily from Zarr, chunked unlike X.
    z = zarr.create_array(store=str(tmp_path / "y.zarr"), shape=y.shape, chunks=(2500,),
                          dtype="int64")
    z[...] = y
    y_lazy = da.from_zarr(str(tmp_path / "y.zarr"))
    ours = fit_quietly(gm(5, random_state=0), da.from_array(X, chunks=3000), y_lazy)
    labels = ours.labels_.compute()
    assert adjusted_rand_score(truth, labels) >= oracle - 0.02
    np.testing.assert_array_equal(labels[known], y[known])  # labelled rows kept
    # Components 0..2 are the known classes, 3 and 4 the novel ones.
    pred = ours.predict(X)
    for c in range(3):
        assert np.mean(pred[truth == c] == c) > 0.9
    assert {int(np.bincount(pred[truth == c]).argmax()) for c in (3, 4)} == {3, 4}
    # Whatever the seed (the novel classes' seeding is the fragile part).
    for seed in range(1, 6):
        labels = np.asarray(fit_quietly(gm(5, random_state=seed), X, y).labels_)
        assert adjusted_rand_score(truth, labels) >= oracle - 0.02, seed


def test_labelled_rows_keep_their_component_in_every_pass(data):
    """With every row labelled, EM is one M-step: the class-conditional Gaussians."""
    _, truth = _data()
    ours = fit_quietly(gm(covariance_type="full", random_state=0, semi_supervised=True), data,
                       truth)
    for c in range(K):
        rows = data[truth == c]
        np.testing.assert_allclose(ours.means_[c], rows.mean(0), rtol=1e-10)
        np.testing.assert_allclose(ours.covariances_[c],
                                   np.cov(rows.T, bias=True) + 1e-6 * np.eye(3), rtol=1e-8)
    np.testing.assert_allclose(ours.weights_, np.bincount(truth) / len(truth), rtol=1e-10)
    np.testing.assert_array_equal(ours.labels_, truth)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_partly_labelled_other_initialisations(init):
    X, truth, y, known = _labelled_problem(n=3000)
    ours = fit_quietly(gm(5, init_params=init, random_state=0), X, y)
    np.testing.assert_array_equal(np.asarray(ours.labels_)[known], y[known])
    assert np.isfinite(ours.lower_bound_)


def test_label_errors(data):
    n = data.shape[0]
    bad = np.zeros(n, dtype=int)
    bad[7] = 3
    with pytest.raises(dclust.DclustError, match=r"y has 1 values outside -1\.\.2 \(first at row "
                       r"7: 3\).*raise n_components"):
        gm(semi_supervised=True).fit(data, bad)
    # A lazy y is checked in the first pass, with the same message.
    with pytest.raises(dclust.DclustError, match=r"outside -1\.\.2 \(first at row 7: 3\)"):
        fit_quietly(gm(random_state=0), da.from_array(data, chunks=500),
                    da.from_array(bad, chunks=500))
    with pytest.raises(dclust.DclustError, match=r"y has shape \(10,\); expected \(1500,\)"):
        gm(semi_supervised=True).fit(data, np.zeros(10, dtype=int))
    with pytest.raises(dclust.DclustError, match=r"y holds values that are not whole numbers \(first at row 0: "):
        gm(semi_supervised=True).fit(data, np.full(n, 0.5))


# ---- parameters and their messages -----------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    ({"covariance_type": "diagonal"}, "covariance_type='diagonal' is not valid; expected one of "
     "'full', 'tied', 'diag', 'spherical'"),
    ({"init_params": "kmeans+"}, "init_params='kmeans+' is not valid; expected one of 'k-means||'"),
    ({"reg_covar": -1.0}, "reg_covar=-1.0 is not valid; expected a number >= 0"),
    ({"max_iter": -1}, "max_iter=-1 is not valid; expected an integer >= 0"),
    ({"weights_init": [0.5, 0.6, 0.1]}, "weights_init must sum to 1; it sums to 1.2"),
    ({"weights_init": [0.5, 0.5]}, r"weights_init has shape (2,); it must have shape "
     "(n_components,) = (3,)"),
    ({"means_init": np.zeros((3, 2))}, "means_init has shape (3, 2); it must have shape "
     "(n_components, n_features) = (3, 3)"),
    ({"precisions_init": -np.ones((3, 3))}, "precisions_init must be positive for "
     "covariance_type='diag'"),
    ({"covariance_type": "full", "precisions_init": np.stack([np.eye(3), -np.eye(3), np.eye(3)])},
     "The precision matrix of component 1 in precisions_init is not symmetric positive definite"),
    ({"covariance_type": "tied", "precisions_init": np.ones(3)}, "precisions_init has shape (3,); "
     "with covariance_type='tied' it must have shape (n_features, n_features) = (3, 3)"),
])
def test_parameter_messages(data, kw, message):
    kw.setdefault("covariance_type", "diag")
    with pytest.raises(dclust.DclustError, match=re.escape(message)):
        gm(**kw).fit(data)


def test_data_messages(data):
    with pytest.raises(dclust.DclustError, match=r"n_samples=2 must be >= n_components=3"):
        gm().fit(data[:2])
    est = gm(random_state=0).fit(data)
    with pytest.raises(dclust.DclustError, match="X has 2 features, but GaussianMixture is "
                       "expecting 3 features"):
        est.predict(data[:, :2])
    with pytest.raises(dclust.NotFittedError, match="not fitted yet"):
        gm().predict(data)
    with pytest.raises(dclust.DclustError, match=r"n_samples=0 must be an integer >= 1"):
        est.sample(0)


# ---- checkpoints, persistence, CLI ----------------------------------------------------

CHUNK = 500


@pytest.fixture(scope="module")
def data_zarr(tmp_path_factory, data):
    path = str(tmp_path_factory.mktemp("gmm") / "x.zarr")
    z = zarr.create_array(store=path, shape=data.shape, chunks=(CHUNK, data.shape[1]),
                          dtype=data.dtype)
    z[...] = data
    return path


@pytest.mark.parametrize("init, labelled, stop_at", [
    ("k-means||", False, 2), ("k-means||", True, 4), ("kmeans", False, 3)])
def test_killed_and_resumed_fit_is_bit_identical(data_zarr, tmp_path, init, labelled, stop_at):
    X = dclust.open_array(data_zarr, chunks=CHUNK)
    y = None
    if labelled:
        y = np.full(X.shape[0], -1)
        y[::10] = _data()[1][::10]

    def make(**kw):
        return gm(init_params=init, tol=1e-5, random_state=3, n_init=2, **kw)

    ref = fit_quietly(make(), X, y)
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(stop_at), pytest.raises(KeyboardInterrupt):
        fit_quietly(make(checkpoint=ck), X, y)
    resumed = fit_quietly(make(checkpoint=ck, resume=True), X, y)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(resumed, attr), getattr(ref, attr), err_msg=attr)
    assert (resumed.lower_bound_, resumed.n_iter_, resumed.n_passes_) == \
        (ref.lower_bound_, ref.n_iter_, ref.n_passes_)
    # Other labels are other data: an unfinished fit's checkpoint is refused.
    if labelled:
        with interrupt_after(stop_at), pytest.raises(KeyboardInterrupt):
            fit_quietly(make(checkpoint=ck), X, y)
        y2 = y.copy()
        y2[[10, 11]] = y2[[11, 10]]
        with pytest.raises(dclust.DclustError, match="different data.*label_rowsum"):
            fit_quietly(make(checkpoint=ck, resume=True), X, y2)


def test_save_load_round_trip(data, tmp_path):
    est = gm(covariance_type="spherical", random_state=0).fit(data)
    est.save(tmp_path / "gmm.npz")
    back = dclust.load(tmp_path / "gmm.npz")
    assert isinstance(back, dclust.GaussianMixture) and back.get_params() == est.get_params()
    for attr in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(est, attr))
    assert (back.lower_bound_, back.n_iter_, back.converged_) == \
        (est.lower_bound_, est.n_iter_, est.converged_)
    np.testing.assert_array_equal(back.predict(data), est.predict(data))
    np.testing.assert_array_equal(back.score_samples(data), est.score_samples(data))
    # Initial arrays travel with the model, without pickle.
    start = sk_start(data, "diag")
    gm(covariance_type="diag", **start).fit(data).save(tmp_path / "g2.npz")
    np.testing.assert_array_equal(dclust.load(tmp_path / "g2.npz").means_init, start["means_init"])


def test_cli_fit_gmm(data_zarr, tmp_path, capsys):
    from dclust.cli.main import main

    assert main(["fit", "gmm", "--help"]) == 0
    help_text = capsys.readouterr().out
    for p in dclust.GaussianMixture._params:
        if p.option() is not None:
            assert p.option() in help_text
    assert {p.name for p in dclust.GaussianMixture._params} == \
        set(dclust.GaussianMixture._get_param_names())
    model, labels = tmp_path / "gmm.npz", tmp_path / "labels.zarr"
    assert main(["fit", "gmm", data_zarr, "-k", "3", "--covariance-type", "diag", "--seed", "0",
                 "--model", str(model), "--labels", str(labels), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "GaussianMixture k=3" in out and "lower bound" in out
    est = dclust.load(model)
    assert est.covariance_type == "diag" and est.n_components == 3
    ref = gm(covariance_type="diag", random_state=0).fit(dclust.open_array(data_zarr))
    np.testing.assert_array_equal(est.means_, ref.means_)
    np.testing.assert_array_equal(zarr.open_array(str(labels), mode="r")[...],
                                  est.predict(dclust.open_array(data_zarr)).compute())


# ---- kernels --------------------------------------------------------------------------------

@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_estep_kernel_is_sklearns_e_and_m_step(data, ct):
    """One chunk's statistics, through the M-step, equal scikit-learn's E- and M-step with
    weights and pinned labels; the portable path (array-api-strict) agrees."""
    import array_api_strict as xps
    from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

    rng = np.random.default_rng(2)
    X = data[:700]
    w = rng.random(X.shape[0]) + 0.5
    y = np.where(rng.random(X.shape[0]) < 0.2, rng.integers(0, K, X.shape[0]), -1)
    sk = SKGaussianMixture(K, covariance_type=ct, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X)
    log_prob = sk._estimate_weighted_log_prob(X)
    _, log_resp = sk._estimate_log_prob_resp(X)
    resp = np.exp(log_resp)
    resp[y >= 0] = np.eye(K)[y[y >= 0]]
    nk_ref, means_ref, cov_ref = _estimate_gaussian_parameters(X, resp * w[:, None], 1e-6, ct)
    if ct == "tied":  # scikit-learn's formula takes sum_k resp = 1: weigh X^T X here
        cov_ref = ((X * w[:, None]).T @ X - (nk_ref * means_ref.T) @ means_ref) / nk_ref.sum()
        cov_ref += 1e-6 * np.eye(X.shape[1])
    ll = np.where(y >= 0, log_prob[np.arange(len(y)), np.maximum(y, 0)],
                  np.log(np.exp(log_prob).sum(1)))
    model = kernel_model(sk.weights_, sk.means_, sk.precisions_cholesky_, ct)
    stats = gmm_estep_partial(X, w, y, model, ct, tile=128)
    nk, means, cov = m_step(stats, model["shift"], ct, 1e-6, np.finfo(np.float64).eps,
                            P=model.get("P") if ct == "full" else None)
    np.testing.assert_allclose(nk, nk_ref, rtol=1e-12)
    np.testing.assert_allclose(means, means_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-9, atol=1e-12)
    assert float(stats["loglik"]) == pytest.approx(float((w * ll).sum()), rel=1e-12)
    portable = gmm_estep_partial(xps.asarray(X), xps.asarray(w), xps.asarray(y), model, ct,
                                 tile=128)
    for key in stats:
        np.testing.assert_allclose(np.asarray(portable[key]), stats[key], rtol=1e-12, atol=1e-12)
    # The initialisations' kernels: nearest-centre and random responsibilities.
    shift = {"shift": sk.means_ if ct == "full" else sk.means_.mean(0)}
    for run in (lambda A, W, Y: gmm_hard_partial(A, W, Y, shift, ct, sk.means_, tile=128),
                lambda A, W, Y: gmm_random_partial(A, W, Y, shift, ct, K, 7, block_id=3, tile=128)):
        ref = run(X, w, y)
        got = run(xps.asarray(X), xps.asarray(w), xps.asarray(y))
        for key in ref:
            np.testing.assert_allclose(np.asarray(got[key]), ref[key], rtol=1e-12, atol=1e-12)
        assert np.asarray(ref["nk"]).sum() == pytest.approx(w.sum(), rel=1e-12)


# ---- scikit-learn's estimator checks ----------------------------------------------------

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

# With semi_supervised="auto", the fully labelled targets scikit-learn's checks pass to
# fit are ignored, as its own GaussianMixture ignores them: every check must pass.
@parametrize_with_checks([gm(random_state=0, max_iter=20)], expected_failed_checks=lambda est: {
    # As for KMeans (and scikit-learn's own KMeans): the seeding draws a sample row by row,
    # so repeating a row is not the same draw as doubling its weight.
    "check_sample_weight_equivalence_on_dense_data":
        "sample_weight is not equivalent to repeating rows in the seeding sample"})
def test_sklearn_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


# ---- out of core (slow) -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.distributed
def test_ten_million_rows_diag_streamed_on_workers_smaller_than_the_data(tmp_path):
    """n=10M, d=32 (1.2 GiB float32 Zarr), k=16 diag, cache="none", 2 workers x 512 MiB:
    the k-means|| sample, the assignment and two EM iterations stream the data; no worker
    is paused or restarted."""
    import importlib.util
    import os

    here = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_gmm.py")
    spec = importlib.util.spec_from_file_location("bench_gmm", here)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.outofcore_workload(10_000_000, 32, 16, workers=2, memory_limit="512MiB",
                                   max_iter=2, workdir=str(tmp_path))
    assert res["n"] * res["d"] * 4 > res["workers"] * res["limit"]
    assert not res["paused"] and not res["restarted"], res
    assert res["n_passes"] == 2 + 2 and np.isfinite(res["lower_bound"])
    assert all(v < 0.95 * res["limit"] for v in res["peak"]), res["peak"]
