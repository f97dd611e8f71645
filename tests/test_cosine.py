"""Cosine (spherical) k-means: ``dclust.KMeans(metric="cosine")`` against a plain NumPy
spherical k-means, its invariances and errors, prediction, persistence, the CLI,
checkpoints and FAISS's spherical k-means."""

from __future__ import annotations

import re
import warnings

import dask.array as da
import numpy as np
import pytest
import zarr

import dclust
from dclust.exceptions import DataError, DclustValueError
from dclust.io.checkpoint import CheckpointError
from dclust.kernels.rownorm import cosine_distances, row_norms, row_normalize
from dclust.testing import interrupt_after

CHUNK = 500


def directional_blobs(n=2000, d=8, k=5, seed=0, dtype=np.float64):
    """Blobs around ``k`` directions with rows of very different lengths: cosine
    clusters by direction, where euclidean k-means would cut by length too."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(k, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    y = rng.integers(0, k, n)
    X = (dirs[y] + 0.15 * rng.normal(size=(n, d))) * rng.uniform(0.2, 20.0, n)[:, None]
    return X.astype(dtype), y


def unit_as_dclust(X):
    """Rows at unit norm as dclust's passes see them: scaled in float64, rounded once to
    X's dtype; returned as float64 for the oracle's arithmetic."""
    X64 = X.astype(np.float64)
    return (X64 / np.linalg.norm(X64, axis=1, keepdims=True)).astype(X.dtype).astype(np.float64)


def spherical_kmeans(X, C0, n_iter, w=None):
    """The oracle: plain NumPy spherical k-means, ``n_iter`` updates from ``C0``.

    Returns the centres, the labels under them and ``sum w (1 - cos)``.
    """
    Xn = unit_as_dclust(X)
    w = np.ones(len(X)) if w is None else np.asarray(w, dtype=np.float64)
    C = C0 / np.linalg.norm(C0, axis=1, keepdims=True)
    for _ in range(n_iter):
        lab = np.argmax(Xn @ C.T, axis=1)
        for j in range(C.shape[0]):
            s = (w[lab == j, None] * Xn[lab == j]).sum(axis=0)
            if np.linalg.norm(s) > 0:
                C[j] = s / np.linalg.norm(s)
    cos = Xn @ C.T
    lab = np.argmax(cos, axis=1)
    return C, lab, float((w * (1.0 - cos[np.arange(len(X)), lab])).sum())


def km(**kw):
    kw.setdefault("progress", False)
    kw.setdefault("random_state", 0)
    kw.setdefault("metric", "cosine")
    return dclust.KMeans(**kw)


def quiet_fit(est, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached on purpose
        return est.fit(X, **kw)


# ---- the kernel --------------------------------------------------------------------------
def test_row_normalize_kernel():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 7))
    for dtype in (np.float32, np.float64):
        U = row_normalize(X.astype(dtype))
        assert U.dtype == dtype
        np.testing.assert_allclose(U, X / np.linalg.norm(X, axis=1, keepdims=True),
                                   rtol=1e-6 if dtype == np.float32 else 1e-14)
    assert row_normalize(np.array([[3, 4]])).dtype == np.float64
    # Squares that overflow or underflow float64 are rescaled, not refused.
    big = np.array([[1e200, 1e200], [3e-200, 4e-200]])
    np.testing.assert_allclose(row_norms(big), [np.sqrt(2) * 1e200, 5e-200])
    np.testing.assert_allclose(row_normalize(big), [[2**-0.5, 2**-0.5], [0.6, 0.8]])
    U = row_normalize(X)
    np.testing.assert_allclose(cosine_distances(U, U[:3]), 1 - U @ U[:3].T, atol=1e-15)


def test_row_normalize_portable_path():
    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 5)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(row_normalize(xp.asarray(X))), row_normalize(X),
                               rtol=1e-6)
    Z = np.ones((5, 3))
    Z[3] = 0
    with pytest.raises(DataError, match=r"Row 13 of X \(chunk 4\) is all zeros"):
        row_normalize(xp.asarray(Z), row_offset=10, block_id=4)


def test_cosine_lloyd_chunk_on_every_path():
    """The Lloyd chunk function for cosine: the same statistics from NumPy's compiled
    path and the portable one (array-api-strict), and half the squared distances of unit
    rows as its inertia."""
    xp = pytest.importorskip("array_api_strict")
    from dclust.algorithms.kmeans import lloyd_aggregation
    from dclust.reductions.engine import ChunkContext

    X, _ = directional_blobs(n=300, dtype=np.float32)
    C = row_normalize(X[:4].astype(np.float64))
    agg = lloyd_aggregation(C, 4, "cosine")
    ctx = ChunkContext(3, 600, 300, {})
    ref = agg.chunk(X, None, ctx, *agg.args)
    port = agg.chunk(xp.asarray(X), None, ctx, *agg.args)
    U = unit_as_dclust(X)
    cos = U @ C.T
    assert float(ref["inertia"]) == pytest.approx((1 - cos.max(axis=1)).sum(), rel=1e-6)
    for key in ("sums", "weights", "inertia", "far_row", "far_label"):
        np.testing.assert_allclose(np.asarray(port[key]), ref[key], rtol=1e-6, err_msg=key)
    assert ref["far_row"].min() >= 600


def test_row_normalize_errors():
    X = np.ones((6, 3))
    X[[2, 4]] = 0
    with pytest.raises(DataError, match=r"^Row 102 of X \(chunk 7\) is all zeros \(and 1 more in "
                                        r"this chunk\); metric='cosine' needs rows of non-zero norm"
                                        r".*Drop or fix such rows, or use metric='euclidean'\.$"):
        row_normalize(X, row_offset=100, block_id=7)
    X[2] = [1, np.nan, 1]
    with pytest.raises(DataError, match=r"Row 2 of X holds NaN or infinite values \(and 1 more"):
        row_normalize(X)


# ---- (a) the oracle ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_numpy_spherical_kmeans(dtype, weighted):
    X, _ = directional_blobs(dtype=dtype)
    rng = np.random.default_rng(5)
    C0 = X[rng.choice(len(X), 5, replace=False)].astype(np.float64)  # not unit: normalised
    w = rng.uniform(0.1, 3.0, len(X)) if weighted else None
    n_iter = 6
    C_ref, lab_ref, inertia_ref = spherical_kmeans(X, C0, n_iter, w)
    est = quiet_fit(km(n_clusters=5, init=C0, tol=0, max_iter=n_iter),
                    da.from_array(X, chunks=CHUNK), sample_weight=w)
    np.testing.assert_array_equal(np.asarray(est.labels_), lab_ref)
    assert est.inertia_ == pytest.approx(inertia_ref, rel=1e-6)
    np.testing.assert_allclose(est.cluster_centers_, C_ref, rtol=1e-5, atol=1e-6)
    assert est.cluster_centers_.dtype == dtype
    # (b) unit centres.
    np.testing.assert_allclose(np.linalg.norm(est.cluster_centers_.astype(float), axis=1), 1.0,
                               rtol=1e-6)


def test_cosine_is_not_euclidean_and_finds_the_directions():
    X, y = directional_blobs()
    labels = np.asarray(km(n_clusters=5).fit(X).labels_)
    dclust.testing.assert_labels_equivalent(labels, y, min_agreement=0.98)
    eu = np.asarray(km(n_clusters=5, metric="euclidean").fit(X).labels_)
    with pytest.raises(AssertionError):
        dclust.testing.assert_labels_equivalent(eu, y, min_agreement=0.98)


# ---- (c) invariance to the rows' lengths --------------------------------------------------
@pytest.mark.parametrize("init", ["array", "k-means||"])
def test_scaling_rows_changes_nothing(init):
    X, _ = directional_blobs()
    s = np.random.default_rng(2).uniform(0.01, 100.0, len(X))[:, None]
    kw = dict(n_clusters=5, init=X[:5] if init == "array" else init)
    a = km(**kw).fit(da.from_array(X, chunks=CHUNK))
    b = km(**kw).fit(da.from_array(X * s, chunks=CHUNK))
    np.testing.assert_array_equal(np.asarray(a.labels_), np.asarray(b.labels_))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-9, atol=1e-12)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-9)


# ---- (d) errors ---------------------------------------------------------------------------
def test_a_zero_row_is_refused_naming_it():
    X, _ = directional_blobs()
    X[1234] = 0
    with pytest.raises(DataError, match=r"Row 1,234 of X \(chunk 2\) is all zeros; "
                                        r"metric='cosine' needs rows of non-zero norm"):
        km(n_clusters=5, init=X[:5]).fit(da.from_array(X, chunks=CHUNK))
    # Drawn into the seeding sample (all rows here): named by its global row number too.
    with pytest.raises(DataError, match=r"Row 1,234 of X is all zeros"):
        km(n_clusters=5, init="k-means++").fit(da.from_array(X, chunks=CHUNK))
    fitted = km(n_clusters=5).fit(X[:1000])
    with pytest.raises(DataError, match=r"Row 1,234 of X \(chunk 2\) is all zeros"):
        fitted.predict(da.from_array(X, chunks=CHUNK)).compute()
    # Euclidean k-means has no quarrel with it.
    km(n_clusters=5, metric="euclidean").fit(X)


def test_parameter_errors():
    X, _ = directional_blobs(n=300)
    C = X[:3].copy()
    C[1] = 0
    with pytest.raises(DataError, match=r"Row 1 of the init array is all zeros; "
                                        r"metric='cosine' needs"):
        km(n_clusters=3, init=C).fit(X)
    with pytest.raises(DclustValueError, match=r"metric='manhattan' is not valid; expected one "
                                               r"of 'euclidean', 'cosine'"):
        km(n_clusters=3, metric="manhattan").fit(X)
    y = np.full(len(X), -1)
    y[:10] = 0
    with pytest.raises(DclustValueError, match=r"metric='cosine' cannot be combined with known "
                                               r"classes y \(seeded k-means\)"):
        km(n_clusters=3).fit(X, y)


# ---- (e) predict, transform, score ---------------------------------------------------------
def test_predict_transform_score_match_the_oracle():
    X, _ = directional_blobs()
    Xt, _ = directional_blobs(n=700, seed=9)
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(Xt))
    est = km(n_clusters=5).fit(da.from_array(X, chunks=CHUNK))
    C = est.cluster_centers_.astype(np.float64)
    Un = Xt / np.linalg.norm(Xt, axis=1, keepdims=True)
    cos = Un @ C.T
    lazy = da.from_array(Xt, chunks=200)
    np.testing.assert_array_equal(est.predict(lazy).compute(), np.argmax(cos, axis=1))
    np.testing.assert_array_equal(est.predict(Xt), np.argmax(cos, axis=1))
    D = est.transform(lazy).compute()
    assert D.shape == (700, 5) and D.dtype == Xt.dtype
    np.testing.assert_allclose(D, 1 - cos, atol=1e-12)
    np.testing.assert_allclose(est.transform(Xt), 1 - cos, atol=1e-12)
    assert est.score(lazy, sample_weight=w) == pytest.approx(-(w * (1 - cos.max(axis=1))).sum(),
                                                             rel=1e-9)
    # The fit's own inertia is the score of its data.
    assert est.score(X) == pytest.approx(-est.inertia_, rel=1e-12)
    np.testing.assert_array_equal(np.asarray(est.labels_), est.predict(X))
    again = km(n_clusters=5).fit_predict(da.from_array(X, chunks=CHUNK))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(est.labels_))


# ---- (f) persistence ---------------------------------------------------------------------
def test_model_round_trip_keeps_the_metric(tmp_path):
    X, _ = directional_blobs()
    est = km(n_clusters=5).fit(X)
    est.save(tmp_path / "m.npz")
    back = dclust.load(tmp_path / "m.npz")
    assert back.metric == "cosine"
    np.testing.assert_array_equal(back.predict(X), np.asarray(est.labels_))
    np.testing.assert_array_equal(back.transform(X[:50]), est.transform(X[:50]))
    assert back.score(X) == est.score(X)


# ---- (g) the command line ------------------------------------------------------------------
def test_cli_fit_kmeans_metric_cosine(tmp_path, capsys):
    from dclust.cli.main import main

    X, y = directional_blobs(dtype=np.float32)
    path = str(tmp_path / "x.zarr")
    dclust.write_array(da.from_array(X, chunks=CHUNK), path)
    assert main(["fit", "kmeans", "--help"]) == 0
    assert re.search(r"--metric \{euclidean,cosine\}", capsys.readouterr().out)
    model, labels, pred = tmp_path / "km.npz", tmp_path / "l.zarr", tmp_path / "p.zarr"
    assert main(["fit", "kmeans", path, "-k", "5", "--metric", "cosine", "--seed", "0",
                 "--model", str(model), "--labels", str(labels), "--quiet"]) == 0
    assert "KMeans k=5 on 2,000 x 8 float32" in capsys.readouterr().out
    est = dclust.load(model)
    assert est.metric == "cosine"
    np.testing.assert_allclose(np.linalg.norm(est.cluster_centers_, axis=1), 1.0, rtol=1e-6)
    fitted = zarr.open_array(str(labels), mode="r")[...]
    dclust.testing.assert_labels_equivalent(fitted, y, min_agreement=0.98)
    ref = quiet_fit(km(n_clusters=5, random_state=0), dclust.open_array(path))
    np.testing.assert_array_equal(est.cluster_centers_, ref.cluster_centers_)
    assert main(["predict", str(model), path, "--labels", str(pred), "--quiet"]) == 0
    np.testing.assert_array_equal(zarr.open_array(str(pred), mode="r")[...], fitted)
    assert main(["fit", "kmeans", path, "-k", "5", "--metric", "angular", "--model",
                 str(tmp_path / "x.npz")]) == 2
    assert "invalid choice: 'angular'" in capsys.readouterr().err


# ---- (h) checkpoints -----------------------------------------------------------------------
@pytest.mark.parametrize("stop_at", [2, 5])
def test_interrupted_and_resumed_is_bit_identical(tmp_path, stop_at):
    X, _ = directional_blobs(dtype=np.float32)
    Xd = da.from_array(X, chunks=CHUNK)

    def make(**kw):
        return km(n_clusters=6, tol=0.0, max_iter=8, n_init=2, random_state=3, **kw)

    ref = quiet_fit(make(), Xd)
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(stop_at), pytest.raises(KeyboardInterrupt):
        quiet_fit(make(checkpoint=ck), Xd)
    resumed = quiet_fit(make(checkpoint=ck, resume=True), Xd)
    np.testing.assert_array_equal(resumed.cluster_centers_, ref.cluster_centers_)
    assert resumed.inertia_ == ref.inertia_ and resumed.n_iter_ == ref.n_iter_
    np.testing.assert_array_equal(np.asarray(resumed.labels_), np.asarray(ref.labels_))
    # A checkpoint of a euclidean fit does not continue as a cosine one.
    ck2 = str(tmp_path / "ck2.npz")
    with interrupt_after(2), pytest.raises(KeyboardInterrupt):
        quiet_fit(make(checkpoint=ck2, metric="euclidean"), Xd)
    with pytest.raises(CheckpointError, match=re.escape(
            "metric='euclidean' in the checkpoint, 'cosine' now")):
        quiet_fit(make(checkpoint=ck2, resume=True), Xd)


def test_verbose_reports_cosine_inertia(capsys):
    X, _ = directional_blobs(n=500)
    est = km(n_clusters=3, verbose=1, init=X[:3]).fit(X)
    out = capsys.readouterr().out
    assert "Iteration 0, inertia" in out and "Converged at iteration" in out
    assert est.converged_ and est.inertia_ < 500  # sum of 1 - cos, at most 2 a row


# ---- (i) FAISS -----------------------------------------------------------------------------
def test_objective_close_to_faiss_spherical():
    faiss = pytest.importorskip("faiss")
    X, _ = directional_blobs(n=3000, d=16, k=8, seed=4, dtype=np.float32)
    U = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    C0 = U[np.random.default_rng(0).choice(len(U), 8, replace=False)]
    n_iter = 10

    def objective(C):
        C = C.astype(np.float64) / np.linalg.norm(C, axis=1, keepdims=True)
        return float((1.0 - (U.astype(np.float64) @ C.T).max(axis=1)).sum())

    est = quiet_fit(km(n_clusters=8, init=C0, tol=0, max_iter=n_iter),
                    da.from_array(U, chunks=CHUNK))
    fk = faiss.Kmeans(16, 8, niter=n_iter, spherical=True, seed=0,
                      max_points_per_centroid=1 << 30, min_points_per_centroid=1)
    fk.train(U, init_centroids=C0.copy())
    ours, theirs = objective(est.cluster_centers_), objective(fk.centroids)
    assert ours == pytest.approx(est.inertia_, rel=1e-5)
    assert ours <= theirs * 1.01
