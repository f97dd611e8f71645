"""The IR nearest-centre kernel at 256- and 512-bit vector widths: same labels, same bests."""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest

from dclust.kernels import _irassign
from dclust.kernels.lloyd import lloyd_partial, nearest_center

_CHOICES = [(256, 16), (256, 32), (512, 32)]


def _run_kernel(X, C, bits, regs):
    """Labels and best values (``||c||^2 - 2 x.c``) straight from the compiled kernel."""
    n, d = X.shape
    k = C.shape[0]
    block, R, single, per_block, _ = _irassign.kernel_address(X.dtype, k, d, bits=bits, regs=regs)
    C64 = C.astype(np.float64)
    Cm = np.ascontiguousarray((-2.0 * C64).astype(X.dtype))
    cnorm = np.einsum("ij,ij->i", C64, C64).astype(X.dtype)
    CT, cn = _irassign.centre_layout(Cm, cnorm, per_block)
    lab = np.full(n, -1, dtype=np.int32)
    best = np.full(n, np.nan, dtype=X.dtype)
    sig = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                           ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p)
    tb = (n // R) * R
    sig(block)(X.ctypes.data, tb, d, CT.ctypes.data, cn.ctypes.data, lab.ctypes.data,
               CT.shape[0], best.ctypes.data)
    if tb < n:
        sig(single)(X[tb:].ctypes.data, n - tb, d, CT.ctypes.data, cn.ctypes.data,
                    lab[tb:].ctypes.data, CT.shape[0], best[tb:].ctypes.data)
    return lab, best


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 5, 8, 16, 17, 33, 100, 257])
@pytest.mark.parametrize("d", [1, 3, 32])
def test_widths_give_identical_labels_and_bests(rng, dtype, k, d):
    # n leaves a remainder after every row block (R = 4..8); k not a multiple of the lanes.
    n = 613
    X = rng.normal(scale=3, size=(n, d)).astype(dtype)
    C = rng.normal(scale=3, size=(k, d))
    if k > 4:
        # Ties: duplicate centres in the same and in other lanes and blocks, and rows on them.
        C[[k // 2, k - 1]] = C[1]
        X[:9] = C[1]
    if d == 1:
        # Exact ties between centres mirrored about a row: small integers are exact.
        X = np.round(X).astype(dtype)
        C = np.round(C)
    ref_lab, ref_best = _run_kernel(X, C, 256, 16)
    assert (ref_lab >= 0).all() and np.isfinite(ref_best).all()
    for bits, regs in _CHOICES[1:]:
        lab, best = _run_kernel(X, C, bits, regs)
        np.testing.assert_array_equal(lab, ref_lab)
        np.testing.assert_array_equal(best, ref_best)
    if k > 4:
        assert not np.isin(ref_lab, [k // 2, k - 1]).any()


@pytest.mark.parametrize("forced", _CHOICES)
def test_lloyd_partial_same_under_every_width(rng, monkeypatch, forced):
    n, d, k = 3001, 12, 40
    X = rng.normal(scale=3, size=(n, d)).astype(np.float32)
    C = rng.normal(scale=3, size=(k, d))
    ref = lloyd_partial(X, C, None, n_far=8)
    ref_labels = nearest_center(X, C)[0]
    monkeypatch.setattr(_irassign, "_forced", forced)
    got = lloyd_partial(X, C, None, n_far=8)
    np.testing.assert_array_equal(nearest_center(X, C)[0], ref_labels)
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key])


def test_host_choice():
    bits = _irassign.vector_bits()
    assert bits in (256, 512)
    for dt in (np.float32, np.float64):
        for k in (4, 16, 32, 33, 4096):
            b, regs = _irassign._bits_for(np.dtype(dt), k)
            assert b <= bits
            assert regs == (32 if bits == 512 else 16)
    if bits == 512:
        assert _irassign._bits_for(np.dtype(np.float32), 256) == (512, 32)
        assert _irassign._bits_for(np.dtype(np.float32), 8) == (256, 32)
        assert _irassign._bits_for(np.dtype(np.float64), 8) == (512 - 256 * _irassign._halved_512(), 32)


@pytest.mark.parametrize("halved, k, bits", [(True, 16, 256), (True, 32, 256), (True, 33, 512),
                                             (False, 15, 256), (False, 16, 512)])
def test_width_bound_follows_how_the_cpu_runs_512_bits(monkeypatch, halved, k, bits):
    monkeypatch.setattr(_irassign, "_host_bits", 512)
    monkeypatch.setattr(_irassign, "_host_halved", halved)
    assert _irassign._bits_for(np.dtype(np.float32), k) == (bits, 32)


def test_kernel_address_rejects_other_widths():
    with pytest.raises(ValueError, match="256- or 512-bit"):
        _irassign.kernel_address(np.float32, 4, 4, bits=128)


def test_512_bit_form_compiles_to_zmm():
    """The 512-bit kernel keeps whole 512-bit operations, also for a CPU model on which
    LLVM prefers 256-bit vectors (skylake-avx512)."""
    import llvmlite.binding as llvm

    try:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
    except Exception:  # newer llvmlite initialises on import
        pass
    text = _irassign._generate("float", "f32", 16, 4, 4, "block")
    assert '"prefer-vector-width"="512"' in text
    target = llvm.Target.from_triple("x86_64-unknown-linux-gnu")
    tm = target.create_target_machine(cpu="skylake-avx512", features="", opt=3)
    asm = tm.emit_assembly(llvm.parse_assembly(text))
    fmas = re.findall(r"vfmadd\w+\s+(%\w+)", asm)
    assert fmas and all(r.startswith("%zmm") for r in fmas)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [3, 16, 24, 40, 100, 300])
@pytest.mark.parametrize("d", [2, 5, 32])
@pytest.mark.parametrize("form", _CHOICES)
def test_labels_are_the_lexicographic_minimum_under_many_ties(rng, dtype, k, d, form):
    # Small integers make every product and sum exact, so the kernel's values equal
    # NumPy's, and ties are everywhere: each row must get the smallest value, then the
    # smallest centre index among equal values, whatever lanes, blocks and row blocks
    # the tied centres fall in.
    n = 517
    X = rng.integers(-2, 3, size=(n, d)).astype(dtype)
    C = rng.integers(-2, 3, size=(k, d)).astype(np.float64)
    lab, best = _run_kernel(X, C, *form)
    vals = (C * C).sum(1)[None, :] - 2.0 * X.astype(np.float64) @ C.T
    np.testing.assert_array_equal(lab, vals.argmin(axis=1))  # argmin: first of the minima
    np.testing.assert_array_equal(best, vals.min(axis=1).astype(dtype))
