"""The CuPy paths of the k-medoids and Sinkhorn kernels, run on NumPy.

Those paths are written against the NumPy-compatible module API (``dclust._xp.numpy_like``),
so calling them with ``mod=numpy`` here runs the very code CuPy runs on a GPU; each is
held equal to the compiled / NumPy fast path. ``tests/test_gpu.py`` runs them on CuPy.
"""

from __future__ import annotations

import numpy as np
import pytest

from dclust.kernels import sinkhorn as S
from dclust.kernels.sinkhorn import SinkhornState


def _assert_stats_equal(got, ref, rtol, atol=0.0):
    assert set(got) == set(ref)
    for key, value in ref.items():
        g = np.asarray(got[key])
        if np.asarray(value).dtype.kind == "f":
            np.testing.assert_allclose(g, value, rtol=rtol, atol=atol, err_msg=key)
        else:
            np.testing.assert_array_equal(g, value, err_msg=key)


def _points_state(rng, k, d, eps, virtual=False, want_sums=True):
    C = rng.normal(size=(k, d))
    g = rng.normal(size=k + (1 if virtual else 0))
    return SinkhornState(kind="points", g=g, eps=eps, centers=C, scale=3.0, virtual=virtual,
                         log_mass=-np.log(500.0), want_sums=want_sums)


# ---- Sinkhorn ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 2e-5)])
@pytest.mark.parametrize("eps", [1.0, 1e-4])
@pytest.mark.parametrize("virtual", [False, True])
def test_sinkhorn_dense_equals_fast_path_points(rng, dtype, rtol, eps, virtual):
    X = rng.normal(size=(500, 5)).astype(dtype)
    st = _points_state(rng, 6, 5, eps, virtual)
    w = rng.random(500)
    ref = S.sinkhorn_partial(X, st, w)
    got = S._sinkhorn_dense(np, X, st, w)
    # Columns at -inf (all their terms underflowed) have colsum 0 in both.
    fin = np.isfinite(ref["colmax"])
    np.testing.assert_array_equal(np.isfinite(got["colmax"]), fin)
    lr = S.column_log_sums(ref)[fin]
    lg = S.column_log_sums(got)[fin]
    np.testing.assert_allclose(lg, lr, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(got["mass"], ref["mass"], rtol=1e-12)
    np.testing.assert_allclose(got["sums"], ref["sums"], rtol=max(rtol, 1e-9), atol=1e-7)


def test_sinkhorn_dense_costs_and_empty_chunk(rng):
    M = rng.random((300, 4))
    st = SinkhornState(kind="costs", g=rng.normal(size=5), eps=0.05, scale=2.0, sign=-1.0,
                       virtual=True, log_mass=-np.log(300.0))
    ref = S.sinkhorn_partial(M, st, None)
    got = S._sinkhorn_dense(np, M, st, None)
    np.testing.assert_allclose(S.column_log_sums(got), S.column_log_sums(ref), rtol=1e-11)
    empty = S._sinkhorn_dense(np, np.zeros((0, 4)), st, None)
    _assert_stats_equal(empty, S.sinkhorn_partial(np.zeros((0, 4)), st, None), 0)


@pytest.mark.parametrize("kind", ["points", "costs"])
@pytest.mark.parametrize("what", ["labels", "soft", "plan", "f"])
def test_sinkhorn_assign_dense_equals_fast_path(rng, kind, what):
    if kind == "points":
        X = rng.normal(size=(400, 3)).astype(np.float32)
        st = _points_state(rng, 5, 3, 0.1, virtual=True, want_sums=False)
    else:
        X = rng.random((400, 5))
        st = SinkhornState(kind="costs", g=rng.normal(size=5), eps=0.1, log_mass=-np.log(400.0))
    w = rng.random(400)
    ref = S.sinkhorn_assign_block(X, st, w, what=what)
    got = S._assign_block(np, X, st, w, what, dense=True)
    if what == "labels":
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-300)


def test_repair_and_candidates_dense_equal_fast_path(rng):
    X = rng.normal(size=(600, 4))
    st = SinkhornState(kind="points", g=rng.normal(size=4) * 0.1, eps=1.0,
                       centers=rng.normal(size=(4, 4)), scale=1.0)
    _, _, dense = S._backend(X)
    assert not dense
    _assert_stats_equal(S._repair(np, X, st, 20, True), S.repair_partial(X, st, 20), 1e-12)
    counts = S.repair_partial(X, st, 20)["counts"]
    want = np.maximum(counts - 150, 0)
    under = np.flatnonzero(counts < 150)
    ref = S.candidates_partial(X, st, under, want, row_offset=7)
    got = S._candidates(np, X, st, under, want, 7, True)
    _assert_stats_equal(got, ref, 1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_hard_inertia_against_numpy(rng, weighted):
    X = rng.normal(size=(300, 3)).astype(np.float32)
    st = _points_state(rng, 4, 3, 0.2, virtual=True, want_sums=False)
    w = rng.random(300) if weighted else None
    lab = S.sinkhorn_assign_block(X, st, None, what="labels").astype(np.int64)
    rows, moved = np.array([10, 20, 400]), np.array([1, 2, 3])  # 400 is another chunk's row
    lab[[15, 25]] = [1, 2]  # global rows 10 and 20 of a chunk starting at row -5
    ok = lab >= 0
    d2 = ((X.astype(np.float64) - st.centers[np.where(ok, lab, 0)]) ** 2).sum(axis=1) * ok
    ref = float((d2 if w is None else d2 * w).sum())
    for dense in (False, True):
        out = S._hard_inertia(np, X, st, w, rows, moved, -5, dense)
        assert float(out["inertia"]) == pytest.approx(ref, rel=1e-12)
        wsum = ok.sum() if w is None else w[ok].sum()
        assert float(out["weight"]) == pytest.approx(wsum, rel=1e-12)
    out = S.hard_inertia_partial(X, st, w, rows=rows, labels=moved, row_offset=-5)
    assert float(out["inertia"]) == pytest.approx(ref, rel=1e-12)
    assert float(S.hard_inertia_partial(X[:0], st)["inertia"]) == 0.0


def test_cost_stats_generic(rng):
    M = rng.random((50, 3))
    M[7, 1] = np.nan
    out = S.cost_stats_partial(M, np.ones(50), row_offset=100)
    assert out["n_nonfinite"] == 1 and out["first_nonfinite"] == 107


def test_strict_arrays_get_a_clear_error():
    xp = pytest.importorskip("array_api_strict")
    st = SinkhornState(kind="costs", g=np.zeros(2), eps=1.0)
    with pytest.raises(TypeError, match="NumPy or CuPy chunks"):
        S.sinkhorn_partial(xp.asarray(np.ones((3, 2))), st)


# ---- dissimilarities and k-medoids ------------------------------------------------------
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "manhattan", "cosine"])
def test_pairwise_dense_equals_fast_path(rng, metric):
    from dclust.kernels.metrics import pairwise_distances, pairwise_distances_dense

    X = rng.normal(size=(400, 6)) * 10 + 1e4  # far from the origin: the centring matters
    Y = np.vstack([X[[3, 17, 250]], X[[3]] + 1e-7, rng.normal(size=(5, 6)) + 1e4])
    X[5] = 0.0
    Y[-1] = 0.0  # cosine's zero rows
    ref = pairwise_distances(X, Y, metric)
    got = pairwise_distances_dense(np, X, Y, metric)
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-12)
    if metric in ("euclidean", "sqeuclidean", "manhattan"):
        assert np.all(got[[3, 17, 250], [0, 1, 2]] == 0.0)  # a point is at 0 from itself
    empty = pairwise_distances_dense(np, X[:0], Y, metric)
    assert empty.shape == (0, Y.shape[0])


def test_pairwise_dense_constant_data_recomputes_every_pair():
    from dclust.kernels import metrics as Mt

    X = np.full((300, 4), 7.5)
    got = Mt.pairwise_distances_dense(np, X, X[:50], "euclidean")
    assert got.shape == (300, 50) and not got.any()


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
def test_swap_sums_dense_equals_fast_path(rng, metric):
    from dclust.kernels import medoids as Md

    X = rng.normal(size=(700, 4))
    M = X[[1, 100, 300]]
    cand = X[[5, 6, 50, 400]]
    lab, dn, ds = Md._assign_xp(np, X, M, metric, second=True)
    ref = Md._swap_sums(np, X, lab, dn, ds, cand, 3, metric)
    got = Md._swap_sums_dense(np, np.add.at, X, lab, dn, ds, cand, 3, metric)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-9)
    empty = Md._swap_sums_dense(np, np.add.at, X[:0], lab[:0], dn[:0], ds[:0], cand, 3, metric)
    assert not empty[0].any() and empty[1].shape == (3, 4)


def test_second_nearest_by_partition_equals_sorting(rng):
    from dclust.kernels import medoids as Md

    X = rng.normal(size=(200, 3))
    M = X[[0, 9, 20, 33]]
    lab, dn, ds = Md._assign_xp(np, X, M, "euclidean", second=True)
    D = np.sort(pairwise(X, M), axis=1)
    np.testing.assert_allclose(ds, D[:, 1], rtol=1e-12)
    np.testing.assert_array_equal(lab, pairwise(X, M).argmin(axis=1))


def pairwise(X, M):
    from scipy.spatial.distance import cdist

    return cdist(X, M)
