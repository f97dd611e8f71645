"""The register-blocked small-k kernel (LLVM IR) against exact argmins and the GEMM path."""

from __future__ import annotations

import numpy as np
import pytest

from dclust.kernels import _smallk
from dclust.kernels.lloyd import lloyd_partial, nearest_center


@pytest.fixture
def gemm_path(monkeypatch):
    """Run the kernels with the small-k kernel switched off (the BLAS GEMM path)."""
    monkeypatch.setenv("DCLUST_SMALLK", "0")


def _exact(X, C):
    d = ((X.astype(np.float64)[:, None, :] - C[None]) ** 2).sum(-1)
    return d.argmin(1), d


def _check_labels(X, C, labels):
    """Labels equal the exact argmin wherever the best two centres are not a near tie."""
    lab, d = _exact(X, C)
    chosen = d[np.arange(len(X)), labels]
    best = d[np.arange(len(X)), lab]
    # A float32 dot product may swap centres whose distances agree to rounding.
    scale = (X.astype(np.float64) ** 2).sum(1) + (C**2).sum(1).max() + 1.0
    tol = 64 * np.finfo(X.dtype).eps * scale
    assert np.all(chosen - best <= tol)
    clear = np.sort(d, axis=1)[:, 1] - best > tol if C.shape[0] > 1 else np.ones(len(X), bool)
    np.testing.assert_array_equal(labels[clear], lab[clear])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 7, 8, 9, 16, 17, 31, 32])
@pytest.mark.parametrize("d", [1, 3, 32, 67])
def test_nearest_center_small_k_matches_exact(rng, dtype, k, d):
    if k > _smallk.max_centres(dtype):
        pytest.skip("beyond the small-k kernel for this dtype")
    # Row counts that leave remainders after the row blocks (R = 2..8).
    n = 1000 + 7
    X = rng.normal(scale=3, size=(n, d)).astype(dtype)
    C = rng.normal(scale=3, size=(k, d))
    assert _smallk.try_kernel_address(dtype, k) is not None
    labels, sq = nearest_center(X, C)
    _check_labels(X, C, labels)
    lab, dist = _exact(X, C)
    np.testing.assert_allclose(sq, dist[np.arange(n), labels], rtol=1e-12)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 9])
def test_small_k_few_rows(rng, n):
    X = rng.normal(size=(n, 4)).astype(np.float32)
    C = rng.normal(size=(5, 4))
    labels, _ = nearest_center(X, C)
    np.testing.assert_array_equal(labels, _exact(X, C)[0] if n else np.zeros(0, int))


def test_small_k_ties_go_to_the_lowest_index(rng):
    X = rng.normal(size=(301, 6)).astype(np.float32)
    C = rng.normal(size=(12, 6))
    C[9] = C[2]  # duplicate centre: never chosen over centre 2
    C[11] = C[2]
    labels, _ = nearest_center(X, C)
    assert not np.isin(labels, [9, 11]).any()
    assert (labels == 2).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_lloyd_partial_small_k_equals_gemm_path(rng, dtype, weighted, monkeypatch):
    n, d, k = 9000, 24, 20
    centres = rng.normal(scale=10, size=(k, d))
    X = (centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(dtype)
    C = X[rng.choice(n, k, replace=False)].astype(np.float64)
    w = rng.random(n) if weighted else None
    fast = lloyd_partial(X, C, w, n_far=5, row_offset=3)
    monkeypatch.setenv("DCLUST_SMALLK", "0")
    gemm = lloyd_partial(X, C, w, n_far=5, row_offset=3)
    for key, value in gemm.items():
        np.testing.assert_allclose(fast[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_small_k_switch_selects_the_path(monkeypatch):
    assert _smallk.try_kernel_address(np.float32, 16) is not None
    assert _smallk.try_kernel_address(np.float32, 33) is None  # past 4 vectors of 8
    assert _smallk.try_kernel_address(np.float64, 17) is None  # past 4 vectors of 4
    assert _smallk.try_kernel_address(np.int32, 4) is None
    monkeypatch.setenv("DCLUST_SMALLK", "0")
    assert _smallk.try_kernel_address(np.float32, 16) is None


def test_kernel_address_rejects_too_many_centres():
    with pytest.raises(ValueError, match="small-k kernel takes 1..32 centres, got 40"):
        _smallk.kernel_address(np.float32, 40)


def test_generated_ir_spells_pointers_for_the_llvm_in_use(monkeypatch):
    """LLVMs before 17 (older llvmlite) take typed pointers, newer ones opaque ``ptr``."""
    monkeypatch.setattr(_smallk, "_opaque_pointers", lambda: False)
    text = _smallk._generate("float", "f32", 8, 2, 4, "block")
    assert "float* noalias" in text and " ptr " not in text
    monkeypatch.undo()
    if _smallk._opaque_pointers():
        assert " ptr " in _smallk._generate("float", "f32", 8, 2, 4, "block")
