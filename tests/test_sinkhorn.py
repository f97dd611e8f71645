"""Distributed log-domain Sinkhorn (issue 5): kernels, driver and ``sinkhorn_assign``.

Oracles: POT's ``ot.bregman.sinkhorn_log`` and ``ot.unbalanced.sinkhorn_unbalanced``, and
plain NumPy / SciPy log-sum-exps.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import ot
import pytest
import zarr
from scipy.special import logsumexp

import dclust
from dclust.algorithms.size_repair import integer_targets
from dclust.cli.main import main
from dclust.exceptions import ConvergenceWarning, DataError, DclustValueError
from dclust.kernels.sinkhorn import (
    SinkhornState,
    column_log_sums,
    logsumexp_combine,
    sinkhorn_assign_block,
    sinkhorn_combine,
    sinkhorn_partial,
)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    n, k = 240, 7
    M = rng.random((n, k))
    a = np.full(n, 1.0 / n)
    b = rng.random(k) + 0.2
    return M, a, b / b.sum()


def _pot_log(M, a, b, reg, n_iter):
    """POT's log-domain Sinkhorn started where dclust starts (g = 0, then the row update).

    POT updates ``v`` then ``u``; dclust's pass updates ``f`` (from ``g``) then ``g``. With
    ``u0`` the row update of ``v = 0`` as POT's warm start, the sequences coincide.
    """
    u0 = np.log(a) - logsumexp(-M / reg, axis=1)
    return ot.bregman.sinkhorn_log(a, b, M, reg, numItermax=n_iter, stopThr=0.0, log=True,
                                   warmstart=(u0, np.zeros(M.shape[1])))


# ---- kernels ---------------------------------------------------------------------------
def _reference_log_colsum(Z, log_a):
    lse = logsumexp(Z, axis=1)
    return logsumexp(Z - lse[:, None] + log_a[:, None], axis=0)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("eps", [1.0, 1e-2, 1e-5])
def test_points_kernel_matches_numpy_logsumexp(dtype, rtol, eps):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(700, 5)).astype(dtype)
    C = rng.normal(size=(6, 5)) * 2
    g = rng.normal(size=6) * 0.1
    st = SinkhornState(kind="points", g=g, eps=eps, centers=C, scale=3.0, log_mass=-np.log(700))
    out = sinkhorn_partial(X, st)
    X64 = X.astype(np.float64)
    D = ((X64[:, None, :] - C[None]) ** 2).sum(-1) / 3.0
    Z = (g[None, :] - D) / eps
    ref = _reference_log_colsum(Z, np.full(700, -np.log(700)))
    got = column_log_sums(out)
    # With eps = 1e-5 most columns underflow in exp and go through the exact log path.
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol)


def test_costs_kernel_virtual_column_and_weights():
    rng = np.random.default_rng(2)
    Cst = rng.random((300, 4))
    w = rng.random(300)
    g = np.array([0.1, -0.2, 0.3, 0.0, 0.05])
    st = SinkhornState(kind="costs", g=g, eps=0.05, scale=2.0, virtual=True, log_mass=-1.0)
    got = column_log_sums(sinkhorn_partial(Cst, st, w))
    full = np.hstack([Cst / 2.0, np.zeros((300, 1))])
    ref = _reference_log_colsum((g[None, :] - full) / 0.05, np.log(w) - 1.0)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_centre_sums_are_the_plan_times_x():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 3))
    C = rng.normal(size=(5, 3))
    g = rng.normal(size=5) * 0.2
    st = SinkhornState(kind="points", g=g, eps=0.3, centers=C, scale=1.0, log_mass=-np.log(400),
                       want_sums=True)
    out = sinkhorn_partial(X, st)
    D = ((X[:, None, :] - C[None]) ** 2).sum(-1)
    Z = (g - D) / 0.3
    P = np.exp(Z - logsumexp(Z, axis=1)[:, None]) / 400
    np.testing.assert_allclose(out["sums"], P.T @ X, rtol=1e-10, atol=1e-14)


def test_logsumexp_combine_is_associative_with_identity():
    rng = np.random.default_rng(4)
    parts = [(rng.normal(size=5) * 300, rng.random(5) + 0.5) for _ in range(4)]
    parts.append((np.full(5, -np.inf), np.zeros(5)))  # identity (an empty chunk)
    m_all, s_all = logsumexp_combine([p[0] for p in parts], [p[1] for p in parts])
    m1, s1 = logsumexp_combine([parts[0][0], parts[1][0]], [parts[0][1], parts[1][1]])
    m2, s2 = logsumexp_combine([m1, parts[2][0], parts[3][0], parts[4][0]],
                               [s1, parts[2][1], parts[3][1], parts[4][1]])
    np.testing.assert_allclose(m_all + np.log(s_all), m2 + np.log(s2), rtol=1e-14)
    ref = logsumexp(np.stack([p[0] for p in parts]), b=np.stack([p[1] for p in parts]), axis=0)
    np.testing.assert_allclose(m_all + np.log(s_all), ref, rtol=1e-14)


def test_empty_chunk_is_the_identity():
    st = SinkhornState(kind="costs", g=np.zeros(3), eps=0.1)
    out = sinkhorn_partial(np.zeros((0, 3)), st)
    other = sinkhorn_partial(np.ones((4, 3)), st)
    merged = sinkhorn_combine([out, other])
    np.testing.assert_allclose(column_log_sums(merged), column_log_sums(other))


def test_labels_block_is_argmax_of_the_plan():
    rng = np.random.default_rng(5)
    Cst = rng.random((50, 4))
    g = rng.normal(size=4) * 0.1
    st = SinkhornState(kind="costs", g=g, eps=0.1)
    lab = sinkhorn_assign_block(Cst, st, what="labels")
    np.testing.assert_array_equal(lab, np.argmax(g - Cst, axis=1))
    soft = sinkhorn_assign_block(Cst, st, what="soft")
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)


# ---- against POT -----------------------------------------------------------------------
@pytest.mark.parametrize("chunks", [240, 50])
def test_balanced_equals_pot_sinkhorn_log(problem, chunks):
    M, a, b = problem
    reg, n_iter = 0.1, 40
    P_ref, log = _pot_log(M, a, b, reg, n_iter)
    with pytest.warns(ConvergenceWarning, match="marginal error"):
        res = dclust.sinkhorn_assign(M, b=b, reg=reg, normalize=False, anneal=False,
                                     max_iter=n_iter, tol=0.0, chunks=chunks)
    assert res.n_iter == n_iter and res.reg == reg and res.scale == 1.0
    np.testing.assert_allclose(res.potentials / reg, log["log_v"], atol=1e-6)
    f = res.row_potentials.compute()
    np.testing.assert_allclose(f / reg, log["log_u"], atol=1e-6)
    np.testing.assert_allclose(res.plan.compute(), P_ref, atol=1e-6)


def test_converged_plan_equals_pot_with_annealing_and_weights(problem):
    M, _, b = problem
    a = np.random.default_rng(6).random(M.shape[0])
    a /= a.sum()
    reg = 0.1
    P_ref, log = ot.bregman.sinkhorn_log(a, b, M, reg, numItermax=5000, stopThr=1e-12, log=True)
    res = dclust.sinkhorn_assign(M, a=a, b=b, reg=reg, normalize=False, tol=1e-10, chunks=120)
    assert res.converged
    np.testing.assert_allclose(res.plan.compute(), P_ref, atol=1e-6)
    # The duals are defined up to (f + c, g - c): compare after fixing the gauge.
    g = res.potentials / reg
    shift = np.mean(log["log_v"] - g)
    np.testing.assert_allclose(g + shift, log["log_v"], atol=1e-6)
    np.testing.assert_allclose(res.soft_assignments.compute().sum(axis=1), 1.0)


def test_normalised_costs_equal_pot_on_the_scaled_matrix(problem):
    M, a, b = problem
    res = dclust.sinkhorn_assign(M, b=b, reg=0.5, tol=1e-10, chunks=120)
    scale = np.sqrt(M.var(axis=1).mean())
    assert res.scale == pytest.approx(scale, rel=1e-12)
    assert res.reg == pytest.approx(0.5 * scale)
    P_ref = ot.bregman.sinkhorn_log(a, b, M / scale, 0.5, numItermax=5000, stopThr=1e-12)
    np.testing.assert_allclose(res.plan.compute(), P_ref, atol=1e-6)


def test_relaxed_equals_pot_unbalanced_kl_on_columns(problem):
    M, a, b = problem
    reg, reg_m, n_iter = 0.2, 0.5, 20
    _, log = ot.unbalanced.sinkhorn_unbalanced(a, b, M, reg, (np.inf, reg_m), reg_type="entropy",
                                               numItermax=n_iter, stopThr=0.0, log=True)
    with pytest.warns(ConvergenceWarning):
        res = dclust.sinkhorn_assign(M, b=b, reg=reg, marginal="relaxed", reg_m=reg_m,
                                     normalize=False, anneal=False, max_iter=n_iter, tol=0.0,
                                     chunks=70)
    np.testing.assert_allclose(res.potentials / reg, log["logv"], atol=1e-6)
    # Converged, the plans agree too.
    P_ref = ot.unbalanced.sinkhorn_unbalanced(a, b, M, reg, (np.inf, reg_m), reg_type="entropy",
                                              numItermax=5000, stopThr=1e-13)
    res = dclust.sinkhorn_assign(M, b=b, reg=reg, marginal="relaxed", reg_m=reg_m,
                                 normalize=False, tol=1e-9, chunks=120)
    assert res.converged
    np.testing.assert_allclose(res.plan.compute(), P_ref, atol=1e-6)
    # The rows keep their mass; the column masses moved towards b but are not b.
    assert res.column_mass.sum() == pytest.approx(1.0)


def test_scores_are_negated_costs(problem):
    M, _, b = problem
    r1 = dclust.sinkhorn_assign(M, b=b, reg=0.5, tol=1e-8, chunks=120)
    r2 = dclust.sinkhorn_assign(-M, b=b, reg=0.5, kind="score", tol=1e-8, chunks=120)
    assert r1.n_iter == r2.n_iter
    np.testing.assert_allclose(r1.potentials, r2.potentials, rtol=1e-12)
    np.testing.assert_array_equal(r1.labels.compute(), r2.labels.compute())
    np.testing.assert_allclose(r1.plan.compute(), r2.plan.compute(), atol=1e-12)


def test_partial_sends_one_minus_rho_to_the_virtual_cluster(problem):
    M, _, b = problem
    res = dclust.sinkhorn_assign(M, b=b, reg=0.1, marginal="partial", rho=0.7, tol=1e-9,
                                 normalize=False, chunks=120)
    assert res.converged
    assert res.virtual_mass == pytest.approx(0.3, abs=1e-8)
    np.testing.assert_allclose(res.column_mass, 0.7 * b, atol=1e-8)
    plan = res.plan.compute()
    assert plan.sum() == pytest.approx(0.7, abs=1e-8)
    labels = res.labels.compute()
    assert (labels == -1).any() and labels.max() < M.shape[1]


def test_chunk_invariance(problem):
    M, _, b = problem
    runs = [dclust.sinkhorn_assign(da.from_array(M, chunks=(c, -1)), b=b, reg=0.5, tol=1e-8,
                                   split_every=s)
            for c, s in ((240, None), (30, 2), (64, 3))]
    for r in runs[1:]:
        assert r.n_iter == runs[0].n_iter
        np.testing.assert_allclose(r.potentials, runs[0].potentials, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(r.labels.compute(), runs[0].labels.compute())


def test_tiny_reg_stays_finite_in_the_log_domain(problem):
    M, _, _ = problem
    # eps = 1e-6 of the cost scale: every exp(-C/eps) underflows; the log domain does not care.
    with pytest.warns(ConvergenceWarning, match=r"marginal error [0-9.e+-]+ > tol"):
        res = dclust.sinkhorn_assign(M, reg=1e-6, anneal=False, max_iter=15, chunks=60)
    assert np.isfinite(res.potentials).all()
    assert np.isfinite(res.marginal_error)
    labels = res.labels.compute()
    assert labels.min() >= 0
    soft = res.soft_assignments.compute()
    assert np.isfinite(soft).all()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)


def test_outputs_are_lazy_and_shaped(problem):
    M, _, _ = problem
    res = dclust.sinkhorn_assign(M, reg=0.5, tol=1e-6, chunks=50)
    assert isinstance(res.labels, da.Array) and res.labels.shape == (M.shape[0],)
    assert isinstance(res.soft_assignments, da.Array)
    assert res.soft_assignments.shape == M.shape
    assert res.n_passes == res.n_iter + 1


def test_zarr_path_and_dask_row_masses(problem, tmp_path):
    M, a, b = problem
    path = str(tmp_path / "costs.zarr")
    z = zarr.create_array(path, shape=M.shape, chunks=(60, M.shape[1]), dtype="float64")
    z[:] = M
    r1 = dclust.sinkhorn_assign(path, a=da.from_array(a, chunks=33), b=b, reg=0.5, tol=1e-8)
    r2 = dclust.sinkhorn_assign(M, a=a, b=b, reg=0.5, tol=1e-8, chunks=60)
    np.testing.assert_allclose(r1.potentials, r2.potentials, rtol=1e-9)


def test_integer_targets_sum_to_n_within_one():
    b = np.array([0.5, 0.3, 0.15, 0.05])
    for n in (7, 100, 1001):
        T = integer_targets(n, b)
        assert T.sum() == n and np.all(np.abs(T - n * b) < 1)


# ---- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(reg=0), r"reg=0 must be a positive finite number"),
    (dict(reg=-1.0), r"reg=-1.0 must be a positive"),
    (dict(b=[0.5, 0.5]), r"b has shape \(2,\); expected \(7,\)"),
    (dict(b=[-0.1, 0.3, 0.2, 0.2, 0.2, 0.1, 0.1]), r"b has 1 weight\(s\) <= 0 \(first: b\[0\]=-0.1\)"),
    (dict(b=[0.2] * 7), r"b sums to 1.4.*off by \+0.4 from 1"),
    (dict(marginal="partial", rho=0), r"rho=0 must be in \(0, 1\]"),
    (dict(marginal="partial", rho=1.5), r"rho=1.5 must be in \(0, 1\]"),
    (dict(marginal="partial"), r"marginal='partial' needs rho"),
    (dict(marginal="exact"), r"marginal='exact' is not valid"),
    (dict(marginal="relaxed", reg_m=-1), r"reg_m=-1 must be a positive number"),
    (dict(a=np.full(240, 1 / 200)), r"a sums to 1.2.*off by \+0.2 from 1"),
    (dict(a=np.ones(3)), r"a has shape \(3,\); expected \(240,\)"),
    (dict(kind="logits"), r"kind='logits' is not valid"),
    (dict(device="gpu"), r"device='gpu' is not one of 'auto', 'cpu' or 'cuda'"),
])
def test_bad_parameters(problem, kwargs, match):
    M, _, _ = problem
    with pytest.raises(DclustValueError, match=match):
        dclust.sinkhorn_assign(M, **kwargs)


def test_nonfinite_costs_name_chunk_and_row(problem):
    M, _, _ = problem
    M = M.copy()
    M[130, 2] = np.nan
    M[200, 1] = np.inf
    with pytest.raises(DataError, match=r"2 non-finite values, NaN or inf \(first in chunk 2, row 130\)"):
        dclust.sinkhorn_assign(M, chunks=60)


# ---- command line ----------------------------------------------------------------------
def test_cli_sinkhorn_assign(tmp_path, capsys):
    rng = np.random.default_rng(8)
    S = rng.normal(size=(600, 4))
    path = str(tmp_path / "logits.zarr")
    z = zarr.create_array(path, shape=S.shape, chunks=(150, 4), dtype="float64")
    z[:] = S
    out = str(tmp_path / "labels.zarr")
    soft = str(tmp_path / "soft.zarr")
    status = main(["sinkhorn-assign", path, "--scores", "--reg", "0.05", "--tol", "1e-3",
                   "--labels", out, "--soft", soft, "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "sinkhorn k=4 on 600 x 4" in captured.out and "converged" in captured.out
    labels = zarr.open_array(out, mode="r")[:]
    assert np.abs(np.bincount(labels, minlength=4) - 150).max() <= 15
    assert zarr.open_array(soft, mode="r").shape == (600, 4)
    status = main(["sinkhorn-assign", path, "--reg", "0", "--labels", str(tmp_path / "x.zarr")])
    err = capsys.readouterr().err
    assert status == 2 and "dclust: error: reg=0.0 must be a positive" in err


def test_device_cuda_without_gpu_is_a_clear_error(problem):
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here; tests/test_gpu.py covers this machine")
    M, _, _ = problem
    with pytest.raises(DclustValueError, match=r"device='cuda' but 2 of 2 workers have no usable "
                                               r"GPU.*pip install 'dclust\[gpu\]'"):
        dclust.sinkhorn_assign(M, device="cuda")
    kw = dict(reg=0.5, tol=1e-3, anneal=False, chunks=100)
    auto = dclust.sinkhorn_assign(M, **kw)
    cpu = dclust.sinkhorn_assign(M, device="cpu", **kw)
    np.testing.assert_array_equal(auto.potentials, cpu.potentials)


@pytest.mark.parametrize("marginal", ["balanced", "relaxed"])
def test_chained_passes_give_the_same_assignment(marginal, monkeypatch):
    """sinkhorn_assign runs several passes per round trip on the cluster: the same
    potentials, labels and pass count as one pass per round trip, in fewer computations."""
    from dclust.runtime.compute import compute_count

    C = np.random.default_rng(11).random((3000, 6))
    kw = dict(reg_m=0.5) if marginal == "relaxed" else {}
    out = {}
    for round_ in ("1", "8"):
        monkeypatch.setenv("DCLUST_ROUND", round_)
        before = compute_count()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = dclust.sinkhorn_assign(da.from_array(C, chunks=(500, 6)), reg=0.05,
                                         marginal=marginal, tol=1e-9, max_iter=60, **kw)
        out[round_] = (res, res.labels.compute(), compute_count() - before)
    (a, la, na), (b, lb, nb) = out["1"], out["8"]
    np.testing.assert_array_equal(a.potentials, b.potentials)
    np.testing.assert_array_equal(la, lb)
    assert a.n_iter == b.n_iter and a.n_passes == b.n_passes and nb < na
