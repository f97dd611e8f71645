"""The register-blocked nearest-centre kernel (LLVM IR) against exact argmins and the GEMM path."""

from __future__ import annotations

import numpy as np
import pytest

from dclust.kernels import _irassign
from dclust.kernels.lloyd import lloyd_partial, nearest_center


@pytest.fixture
def gemm_path(monkeypatch):
    """Run the kernels with the IR kernel switched off (the BLAS GEMM path)."""
    monkeypatch.setenv("DCLUST_IR_ASSIGN", "0")


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
@pytest.mark.parametrize("k", [1, 2, 7, 8, 9, 16, 17, 24, 31, 32, 33, 100, 257])
@pytest.mark.parametrize("d", [1, 3, 32, 67])
def test_nearest_center_ir_kernel_matches_exact(rng, dtype, k, d):
    # Row counts that leave remainders after the row blocks (R = 4..8); k past 24 spans
    # several centre blocks with padding in the last.
    n = 1000 + 7
    X = rng.normal(scale=3, size=(n, d)).astype(dtype)
    C = rng.normal(scale=3, size=(k, d))
    assert _irassign.try_kernel_address(dtype, k, d) is not None
    labels, sq = nearest_center(X, C)
    _check_labels(X, C, labels)
    lab, dist = _exact(X, C)
    np.testing.assert_allclose(sq, dist[np.arange(n), labels], rtol=1e-12)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 9])
def test_ir_kernel_few_rows(rng, n):
    X = rng.normal(size=(n, 4)).astype(np.float32)
    C = rng.normal(size=(5, 4))
    labels, _ = nearest_center(X, C)
    np.testing.assert_array_equal(labels, _exact(X, C)[0] if n else np.zeros(0, int))


@pytest.mark.parametrize("k, first, copies", [(12, 2, [9, 11]), (200, 3, [11, 64, 199]),
                                              (200, 130, [131, 138, 180])])
def test_ir_kernel_ties_go_to_the_lowest_index(rng, k, first, copies):
    """Duplicate centres, in the same lane, other lanes and other centre blocks: the
    lowest index wins, as with numpy.argmin."""
    X = rng.normal(size=(301, 6)).astype(np.float32)
    C = rng.normal(size=(k, 6))
    C[copies] = C[first]
    X[:20] = C[first] + rng.normal(scale=1e-3, size=(20, 6))  # rows that pick the copies
    labels, _ = nearest_center(X, C)
    assert not np.isin(labels, copies).any()
    assert (labels == first).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [20, 150])
def test_lloyd_partial_ir_kernel_equals_gemm_path(rng, dtype, weighted, k, monkeypatch):
    n, d = 9000, 24
    centres = rng.normal(scale=10, size=(k, d))
    X = (centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(dtype)
    C = X[rng.choice(n, k, replace=False)].astype(np.float64)
    w = rng.random(n) if weighted else None
    fast = lloyd_partial(X, C, w, n_far=5, row_offset=3)
    monkeypatch.setenv("DCLUST_IR_ASSIGN", "0")
    gemm = lloyd_partial(X, C, w, n_far=5, row_offset=3)
    for key, value in gemm.items():
        np.testing.assert_allclose(fast[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_ir_kernel_switch_selects_the_path(monkeypatch):
    assert _irassign.try_kernel_address(np.float32, 16, 32) is not None
    assert _irassign.try_kernel_address(np.float64, 4096, 128) is not None
    assert _irassign.try_kernel_address(np.int32, 4, 4) is None
    monkeypatch.setenv("DCLUST_IR_ASSIGN", "0")
    assert _irassign.try_kernel_address(np.float32, 16, 32) is None


def test_centre_groups_fit_the_cache_budget():
    for dtype, k, d in [(np.float32, 4096, 128), (np.float64, 300, 7), (np.float32, 5, 5000)]:
        _, _, _, per_block, group = _irassign.kernel_address(dtype, k, d)
        itemsize = np.dtype(dtype).itemsize
        assert group >= 1
        assert group == 1 or group * per_block * d * itemsize <= _irassign.GROUP_BYTES


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_several_centre_groups_match_exact_and_keep_first_ties(rng, dtype, monkeypatch):
    """With a tiny group budget the centres run in many groups per tile; the running
    minimum across groups still gives the exact argmin and the lowest index on ties."""
    monkeypatch.setattr(_irassign, "GROUP_BYTES", 1)  # one block of centres per group
    n, d, k = 1003, 9, 150
    X = rng.normal(size=(n, d)).astype(dtype)
    C = rng.normal(size=(k, d))
    C[[77, 149]] = C[5]  # copies in later groups
    X[:10] = C[5] + rng.normal(scale=1e-3, size=(10, d))
    labels, sq = nearest_center(X, C)
    _check_labels(X, C, labels)
    assert not np.isin(labels, [77, 149]).any() and (labels[:10] == 5).all()
    centres = rng.normal(scale=10, size=(k, d))  # separated: both paths agree on every row
    X = (centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(dtype)
    C = X[rng.choice(n, k, replace=False)].astype(np.float64)
    out = lloyd_partial(X, C, None, n_far=3)
    monkeypatch.setenv("DCLUST_IR_ASSIGN", "0")
    ref = lloyd_partial(X, C, None, n_far=3)
    for key, value in ref.items():
        np.testing.assert_allclose(out[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_kernel_address_rejects_what_it_cannot_take():
    with pytest.raises(ValueError, match="needs k >= 1 and d >= 1, got k=0, d=3"):
        _irassign.kernel_address(np.float32, 0, 3)
    with pytest.raises(ValueError, match="takes float32 or float64, not int32"):
        _irassign.kernel_address(np.int32, 4, 4)


def test_centre_layout_blocks_and_pads():
    Cm = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    cn = np.arange(10, dtype=np.float32)
    CT, cnp = _irassign.centre_layout(Cm, cn, 4)
    assert CT.shape == (3, 3, 4) and cnp.shape == (12,)
    np.testing.assert_array_equal(CT[1, :, 2], Cm[6])
    np.testing.assert_array_equal(CT[2, :, 2:], 0)
    assert np.isinf(cnp[10:]).all() and (cnp[:10] == cn).all()


@pytest.mark.parametrize("k, d, dtype", [(10, 3, np.float32), (4096, 128, np.float32),
                                         (37, 5, np.float64)])
def test_centre_layout_starts_every_block_on_a_cache_line(k, d, dtype):
    # Worker processes get mmap-backed buffers 16 bytes into a page (the nanny sets
    # MALLOC_TRIM_THRESHOLD_); vectors loaded across two cache lines cost the kernel
    # a quarter of its speed, so the layout must not depend on where malloc put it.
    Cm = np.ones((k, d), dtype=dtype)
    CT, cn = _irassign.centre_layout(Cm, np.ones(k, dtype=dtype), 16)
    assert CT.ctypes.data % _irassign.ALIGN == 0 and cn.ctypes.data % _irassign.ALIGN == 0
    assert CT.flags.c_contiguous and cn.flags.c_contiguous
    for nbytes in (1, 63, 64, 65, 1 << 20):
        a = _irassign.aligned_empty(nbytes, np.uint8)
        assert a.ctypes.data % _irassign.ALIGN == 0 and a.shape == (nbytes,)


def test_generated_ir_spells_pointers_for_the_llvm_in_use(monkeypatch):
    """LLVMs before 17 (older llvmlite) take typed pointers, newer ones opaque ``ptr``."""
    monkeypatch.setattr(_irassign, "_opaque_pointers", lambda: False)
    text = _irassign._generate("float", "f32", 8, 2, 4, "block")
    assert "float* noalias" in text and " ptr " not in text
    monkeypatch.undo()
    if _irassign._opaque_pointers():
        assert " ptr " in _irassign._generate("float", "f32", 8, 2, 4, "block")
