"""Behaving like scikit-learn where users rely on it: feature names, set_output, its
KMeans parameters and warnings, its toy results, and code ported from it."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sklearn
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

import dclust

pd = pytest.importorskip("pandas")


def _make(name, k=3):
    kw = dict(random_state=0, progress=False)
    if name == "KMeans":
        return dclust.KMeans(k, **kw)
    if name == "KMedoids":
        return dclust.KMedoids(k, **kw)
    return dclust.BalancedKMeans(k, max_iter=10, sinkhorn_max_iter=30, **kw)


ESTIMATORS = ["KMeans", "KMedoids", "BalancedKMeans"]


@pytest.fixture(scope="module")
def frame():
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(300, n_features=3, centers=3, random_state=0)
    return pd.DataFrame(X, columns=["a", "b", "c"])


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        return fn(*args, **kw)


# ---- feature names ------------------------------------------------------------------

@pytest.mark.parametrize("name", ESTIMATORS)
def test_reordered_columns_are_refused_not_mislabelled(frame, name):
    est = quiet(_make(name).fit, frame)
    np.testing.assert_array_equal(est.feature_names_in_, np.array(["a", "b", "c"], dtype=object))
    np.testing.assert_array_equal(est.predict(frame), np.asarray(est.labels_))
    with pytest.raises(ValueError, match=r"(?s)The feature names should match those that were "
                                         r"passed during fit.*same order as they were in fit"):
        est.predict(frame[["c", "a", "b"]])
    with pytest.raises(ValueError, match=r"(?s)Feature names unseen at fit time:\n- d"):
        est.predict(frame.rename(columns={"c": "d"}))
    with pytest.warns(UserWarning, match="X does not have valid feature names, but "
                                         f"{name} was fitted with feature names"):
        est.predict(frame.to_numpy())


def test_feature_names_survive_save_and_load(frame, tmp_path):
    est = quiet(_make("KMeans").fit, frame)
    est.save(tmp_path / "m.npz")
    back = dclust.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.feature_names_in_, est.feature_names_in_)
    with pytest.raises(ValueError, match="same order"):
        back.predict(frame[["b", "a", "c"]])


@pytest.mark.parametrize("name", ESTIMATORS)
def test_set_output_pandas_in_a_pipeline(frame, name):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), _make(name)).set_output(transform="pandas")
    out = quiet(pipe.fit_transform, frame)
    prefix = name.lower()
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == [f"{prefix}0", f"{prefix}1", f"{prefix}2"]
    assert list(pipe.get_feature_names_out()) == list(out.columns)
    np.testing.assert_allclose(out.to_numpy(), pipe.transform(frame).to_numpy())


# ---- KMeans's parameters as scikit-learn spells them ---------------------------------

def test_sklearn_spellings_are_accepted(frame):
    X = frame.to_numpy()
    ref = dclust.KMeans(3, random_state=1, progress=False).fit(X)
    for kw in (dict(algorithm="lloyd"), dict(algorithm="auto"), dict(copy_x=False),
               dict(n_init="auto"), dict(verbose=0)):
        km = dclust.KMeans(3, random_state=1, progress=False, **kw).fit(X)
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(X, frame.to_numpy())  # copy_x=False never touches X


def test_elkan_is_refused_with_the_way_out():
    with pytest.raises(ValueError, match=re.escape("algorithm='elkan' is not available")
                       + ".*pass algorithm='lloyd'"):
        dclust.KMeans(2, algorithm="elkan").fit(np.zeros((10, 2)))


def test_n_init_auto_follows_sklearn(frame):
    X = frame.to_numpy()
    # k-means|| and arrays: one run; random and callables: ten runs (scikit-learn's rule).
    one = dclust.KMeans(3, init="random", n_init=1, random_state=0, progress=False).fit(X)
    auto = dclust.KMeans(3, init="random", random_state=0, progress=False).fit(X)
    assert auto.n_passes_ >= 5 * one.n_passes_
    single = dclust.KMeans(3, random_state=0, progress=False, n_init=1).fit(X)
    default = dclust.KMeans(3, random_state=0, progress=False).fit(X)
    assert default.n_passes_ == single.n_passes_


def test_verbose_prints_sklearns_lines(frame, capsys):
    dclust.KMeans(3, verbose=1, random_state=0, progress=False).fit(frame.to_numpy())
    out = capsys.readouterr().out
    assert out.startswith("Initialization complete\nIteration 0, inertia ")
    assert re.search(r"Converged at iteration \d+: (strict convergence|center shift .* within "
                     r"tolerance .*)\.", out), out


def test_convergence_warning_is_sklearns(frame):
    assert issubclass(dclust.ConvergenceWarning, SklearnConvergenceWarning)
    with pytest.warns(SklearnConvergenceWarning, match="stopped at max_iter=1"):
        dclust.KMeans(3, max_iter=1, tol=0, random_state=0, progress=False).fit(frame.to_numpy())


def test_callable_init_and_the_explicit_init_warning(frame):
    X = frame.to_numpy()
    seen = {}

    def first_rows(sample, n_clusters, random_state):
        seen["shape"] = sample.shape
        assert isinstance(random_state, np.random.RandomState)
        return sample[:n_clusters]

    km = dclust.KMeans(3, init=first_rows, n_init=1, random_state=0, progress=False).fit(X)
    assert seen["shape"] == X.shape and km.n_iter_ >= 1
    with pytest.raises(ValueError, match=re.escape("the init callable's result has shape (2, 3)")):
        dclust.KMeans(3, init=lambda s, k, r: s[:2], n_init=1, progress=False).fit(X)
    with pytest.warns(RuntimeWarning, match="Explicit initial center position passed: performing "
                                            "only one init in KMeans instead of n_init=10"):
        km = dclust.KMeans(3, init=X[:3], n_init=10, progress=False).fit(X)
    assert km.n_passes_ < 100


# ---- scikit-learn's KMeans test ideas -----------------------------------------------

def test_toy_results_match_sklearns():
    # scikit-learn's test_kmeans_results, with its expected values.
    X = np.array([[0, 0], [0.5, 0], [0.5, 1], [1, 1]], dtype=np.float64)
    w = [3, 1, 1, 3]
    km = dclust.KMeans(2, init=np.array([[0.0, 0], [1, 1]]), n_init=1, progress=False)
    km.fit(X, sample_weight=w)
    np.testing.assert_array_equal(km.labels_, [0, 0, 1, 1])
    assert km.inertia_ == pytest.approx(0.375)
    np.testing.assert_allclose(km.cluster_centers_, [[0.125, 0], [0.875, 1]])
    assert km.n_iter_ == sklearn.cluster.KMeans(2, init=np.array([[0.0, 0], [1, 1]]), n_init=1) \
        .fit(X, sample_weight=w).n_iter_


def test_relocated_clusters_match_sklearns():
    # scikit-learn's test_kmeans_relocated_clusters: the empty cluster takes the far row.
    X = np.array([[0, 0], [0.5, 0], [0.5, 1], [1, 1]], dtype=np.float64)
    init = np.array([[0.5, 0.5], [3, 3]])
    km = dclust.KMeans(2, init=init, n_init=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km.fit(X)
    ref = sklearn.cluster.KMeans(2, init=init, n_init=1).fit(X)
    assert sorted(map(tuple, np.asarray(km.cluster_centers_).round(12))) == \
        sorted(map(tuple, ref.cluster_centers_.round(12)))
    assert km.inertia_ == pytest.approx(ref.inertia_) == pytest.approx(0.25)


def test_duplicate_points_leave_a_cluster_empty_not_a_duplicated_centre():
    # scikit-learn's test_kmeans_warns_less_centers_than_unique_points.
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float64)
    init = np.array([[0, 0], [0, 1], [1, 0], [0.4, 0.3]])
    with pytest.warns(SklearnConvergenceWarning, match=re.escape(
            "Number of distinct clusters (3) found smaller than n_clusters (4)")):
        km = dclust.KMeans(4, init=init, n_init=1, progress=False).fit(X)
    ref = sklearn.cluster.KMeans(4, init=init, n_init=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X)
    assert km.n_iter_ <= ref.n_iter_
    # No relocation onto a row that sits on a centre already: at most one centre per point.
    distinct = {tuple(c) for c in np.asarray(km.cluster_centers_).round(9)}
    assert len(distinct) == 4 or km.inertia_ == pytest.approx(0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_as_sklearn(frame, dtype):
    X = frame.to_numpy().astype(dtype)
    km = dclust.KMeans(3, random_state=0, progress=False).fit(X)
    assert km.cluster_centers_.dtype == dtype and km.transform(X).dtype == dtype


# ---- scripts without an importable __main__ -----------------------------------------

def test_a_script_piped_into_python_falls_back_to_threads(tmp_path):
    script = ("import dclust, numpy as np\n"
              "km = dclust.KMeans(3, random_state=0, progress=False)"
              ".fit(np.random.default_rng(0).random((500, 2)))\n"
              "print('inertia', round(km.inertia_, 6))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                          timeout=180, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "inertia" in done.stdout
    assert "running the local cluster in threads of this process instead" in done.stderr
