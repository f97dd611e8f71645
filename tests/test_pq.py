"""dclust.ProductQuantizer / IVFQuantizer: one pass per iteration for all sub-quantizers,
each sub-quantizer equal to a NumPy Lloyd, encode/decode, OPQ, FAISS export, IVF lists,
persistence, the CLI, messages and checkpoint resume."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

import dclust
from dclust.algorithms.pq import procrustes
from dclust.estimators.quantizers import IVFQuantizer, ProductQuantizer, _code_bytes, add_to_faiss
from dclust.kernels.pq import pq_decode, pq_encode, pq_lloyd_partial
from dclust.runtime.compute import compute_count
from dclust.testing import interrupt_after

N, D, M, BITS = 3000, 16, 4, 4  # 16 centres per sub-quantizer
CHUNK = 750


def _data(n=N, d=D, seed=0, correlated=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if correlated:
        X = X @ rng.normal(size=(d, d))
    else:
        X += rng.normal(scale=3.0, size=(6, d))[rng.integers(0, 6, n)]
    return X.astype(np.float32)


@pytest.fixture(scope="module")
def X():
    return _data()


@pytest.fixture(scope="module")
def Xd(X):
    return da.from_array(X, chunks=CHUNK)


@pytest.fixture(scope="module")
def X_zarr(X, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pq") / "x.zarr")
    z = zarr.create_array(store=path, shape=X.shape, chunks=(CHUNK, D), dtype=X.dtype)
    z[...] = X
    return path


def pq(**kw):
    kw = {"random_state": 0, "progress": False, **kw}
    return ProductQuantizer(kw.pop("n_subquantizers", M), kw.pop("n_bits", BITS), **kw)


@pytest.fixture(scope="module")
def fitted(Xd):
    return pq(tol=0.0, max_iter=6).fit(Xd)


def numpy_lloyd(X, C, n_iter):
    """Plain Lloyd in NumPy (float64), the reference for each sub-quantizer."""
    X = X.astype(np.float64)
    C = C.copy()
    for _ in range(n_iter):
        d2 = ((X[:, None, :] - C[None]) ** 2).sum(-1)
        lab = d2.argmin(1)
        for j in range(C.shape[0]):
            if (lab == j).any():
                C[j] = X[lab == j].mean(0)
    return C


# ---- training -------------------------------------------------------------------------------
def test_one_pass_per_iteration_for_all_subquantizers(Xd):
    before = compute_count()
    est = pq(tol=0.0, max_iter=5, cache="none").fit(Xd)  # (persisting X is a computation)
    # seeding sample + 5 Lloyd passes + the final error pass, whatever M is
    assert est.n_passes_ == 7
    assert compute_count() - before == 7
    est8 = pq(n_subquantizers=8, tol=0.0, max_iter=5).fit(Xd)
    assert est8.n_passes_ == 7


def test_each_subquantizer_is_numpy_lloyd_from_the_same_init(X, Xd):
    rng = np.random.default_rng(1)
    dsub = D // M
    init = np.stack([X[rng.choice(N, 2**BITS, replace=False), m * dsub:(m + 1) * dsub]
                     for m in range(M)]).astype(np.float64)
    est = pq(init=init, tol=0.0, max_iter=4).fit(Xd)
    for m in range(M):
        ref = numpy_lloyd(X[:, m * dsub:(m + 1) * dsub], init[m], 4)
        np.testing.assert_allclose(est.codebooks_[m], ref, rtol=1e-5, atol=1e-5)


def test_kernel_is_lloyd_partial_of_each_slice(X):
    books = np.stack([X[:16, m * 4:(m + 1) * 4] for m in range(M)]).astype(np.float64)
    parts = pq_lloyd_partial(X[:500], books)
    assert len(parts) == M
    codes, err = pq_encode(X[:500], books, return_error=True)
    assert codes.dtype == np.uint8
    for m in range(M):
        np.testing.assert_array_equal(np.bincount(codes[:, m], minlength=16), parts[m]["weights"])
    np.testing.assert_allclose(sum(float(p["inertia"]) for p in parts), err.sum(), rtol=1e-10)


def test_encode_decode_and_reconstruction_error(X, Xd, fitted):
    codes = fitted.encode(Xd)
    assert isinstance(codes, da.Array) and codes.dtype == np.uint8
    assert codes.chunks[0] == Xd.chunks[0] and codes.shape == (N, M)
    codes = codes.compute()
    np.testing.assert_array_equal(codes, fitted.encode(X))
    rec = fitted.decode(codes)
    assert rec.shape == X.shape and rec.dtype == np.float32
    mse = float(((X.astype(np.float64) - rec) ** 2).sum(1).mean())
    assert fitted.reconstruction_error(Xd) == pytest.approx(mse, rel=1e-5)
    assert fitted.mse_ == pytest.approx(mse, rel=1e-5)
    lazy = fitted.decode(da.from_array(codes, chunks=CHUNK))
    np.testing.assert_array_equal(lazy.compute(), rec)


def test_codes_are_uint16_beyond_8_bits():
    X = _data(n=600, d=4)
    books = np.random.default_rng(0).normal(size=(2, 512, 2))
    codes = pq_encode(X, books)
    assert codes.dtype == np.uint16 and codes.max() >= 256
    assert pq_decode(codes, books).shape == X.shape


def test_encode_writes_zarr_chunk_aligned(Xd, fitted, tmp_path):
    out = tmp_path / "codes.zarr"
    fitted.encode(Xd, out)
    z = zarr.open_array(str(out), mode="r")
    assert z.dtype == np.uint8 and z.chunks == (CHUNK, M)
    np.testing.assert_array_equal(z[...], fitted.encode(Xd).compute())


def test_opq_lowers_the_error_on_correlated_data():
    Xc = _data(n=4000, correlated=True, seed=3)
    Xcd = da.from_array(Xc, chunks=1000)
    plain = pq(max_iter=10).fit(Xcd)
    opq = pq(opq=True, n_opq_iter=4, opq_pq_iter=2, max_iter=10).fit(Xcd)
    R = opq.rotation_
    np.testing.assert_allclose(R @ R.T, np.eye(D), atol=1e-10)
    assert opq.mse_ < 0.9 * plain.mse_
    # decode rotates back: the reconstruction error is in the original space
    rec = opq.decode(opq.encode(Xc))
    assert opq.reconstruction_error(Xc) == pytest.approx(
        float(((Xc.astype(np.float64) - rec) ** 2).sum(1).mean()), rel=1e-5)


def test_procrustes_recovers_a_rotation():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    X = rng.normal(size=(100, 5))
    np.testing.assert_allclose(procrustes(X.T @ (X @ Q)), Q, atol=1e-10)


# ---- FAISS ------------------------------------------------------------------------------------
def test_to_faiss_search_equals_dclust_adc(X, Xd, fitted):
    faiss = pytest.importorskip("faiss")
    index = fitted.to_faiss()
    assert isinstance(index, faiss.IndexPQ) and index.is_trained and index.ntotal == 0
    codes = fitted.encode(X)
    # FAISS packs 4-bit codes two to a byte; add_to_faiss packs dclust's as it does.
    np.testing.assert_array_equal(index.sa_encode(X), _code_bytes(codes, BITS))
    add_to_faiss(index, Xd, fitted)
    assert index.ntotal == N
    D_f, I_f = index.search(X[:20], 10)
    D_d, I_d = fitted.search(X[:20], codes, 10)
    np.testing.assert_allclose(D_f, D_d, rtol=1e-4, atol=1e-3)
    assert (I_f == I_d).mean() > 0.98  # ties may order differently
    # FAISS's own encoding of the chunks gives the same index.
    other = add_to_faiss(fitted.to_faiss(), Xd)
    np.testing.assert_array_equal(other.search(X[:20], 10)[1], I_f)


def test_opq_to_faiss_encodes_as_dclust(X, Xd):
    faiss = pytest.importorskip("faiss")
    opq = pq(opq=True, n_opq_iter=2, opq_pq_iter=1, max_iter=3).fit(Xd)
    index = opq.to_faiss()
    assert isinstance(index, faiss.IndexPreTransform)
    np.testing.assert_array_equal(index.sa_encode(X), _code_bytes(opq.encode(X), BITS))
    add_to_faiss(index, Xd, opq)
    assert index.ntotal == N


def test_ivf_lists_codes_and_faiss(X, Xd):
    faiss = pytest.importorskip("faiss")
    ivf = IVFQuantizer(8, pq=pq(max_iter=4), random_state=0, progress=False).fit(Xd)
    lists = ivf.predict(Xd)
    assert lists.dtype == np.int32 and lists.chunks[0] == Xd.chunks[0]
    C = ivf.coarse_centers_.astype(np.float64)
    ref = ((X[:, None, :].astype(np.float64) - C[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(lists.compute(), ref)
    codes = ivf.encode(Xd).compute()
    rec = ivf.decode(lists, codes)
    assert ivf.mse_ == pytest.approx(float(((X - rec.astype(np.float64)) ** 2).sum(1).mean()),
                                     rel=1e-4)
    index = ivf.to_faiss()
    assert isinstance(index, faiss.IndexIVFPQ) and index.nlist == 8
    add_to_faiss(index, Xd, ivf)
    other = add_to_faiss(ivf.to_faiss(), Xd)
    index.nprobe = other.nprobe = 8
    np.testing.assert_array_equal(index.search(X[:20], 5)[1], other.search(X[:20], 5)[1])


def test_ivf_with_balanced_coarse_quantizer(Xd):
    ivf = IVFQuantizer(4, pq=pq(max_iter=2), coarse=dclust.BalancedKMeans(max_iter=2),
                       random_state=0, progress=False).fit(Xd[:1000])
    assert type(ivf.coarse_).__name__ == "BalancedKMeans"
    sizes = np.bincount(ivf.labels_.compute(), minlength=4)
    assert sizes.min() > 0.15 * 1000


def test_missing_faiss_is_a_clear_error(fitted, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"pip install 'dclust\[faiss\]'"):
        fitted.to_faiss()


# ---- persistence, CLI, messages, resume ----------------------------------------------------------
def test_save_load_round_trip(X, Xd, fitted, tmp_path):
    fitted.save(tmp_path / "pq.npz")
    back = dclust.load(tmp_path / "pq.npz")
    assert isinstance(back, ProductQuantizer) and back.n_bits == BITS
    np.testing.assert_array_equal(back.codebooks_, fitted.codebooks_)
    np.testing.assert_array_equal(back.encode(X), fitted.encode(X))
    opq = pq(opq=True, n_opq_iter=1, opq_pq_iter=1, max_iter=2).fit(Xd)
    opq.save(tmp_path / "opq.npz")
    np.testing.assert_array_equal(dclust.load(tmp_path / "opq.npz").rotation_, opq.rotation_)
    ivf = IVFQuantizer(4, pq=pq(max_iter=2), random_state=0, progress=False).fit(Xd)
    ivf.save(tmp_path / "ivf.npz")
    ivf2 = dclust.load(tmp_path / "ivf.npz")
    np.testing.assert_array_equal(ivf2.encode(X), ivf.encode(X))
    np.testing.assert_array_equal(ivf2.predict(X), ivf.predict(X))
    assert ivf2.pq["params"]["n_bits"] == BITS


def test_cli_fit_pq_and_encode(X_zarr, tmp_path, capsys):
    from dclust.cli.main import main

    assert main(["fit", "pq", "--help"]) == 0
    text = capsys.readouterr().out
    assert "-m M" in text and "--bits BITS" in text and "--opq" in text
    model, codes = tmp_path / "pq.npz", tmp_path / "codes.zarr"
    assert main(["fit", "pq", X_zarr, "-m", str(M), "--bits", str(BITS), "--max-iter", "3",
                 "--seed", "0", "--model", str(model), "--quiet"]) == 0
    assert "ProductQuantizer" in capsys.readouterr().out
    est = dclust.load(model)
    assert est.n_subquantizers == M and est.codebooks_.shape == (M, 2**BITS, D // M)
    assert main(["encode", str(model), X_zarr, "--codes", str(codes), "--quiet"]) == 0
    np.testing.assert_array_equal(zarr.open_array(str(codes), mode="r")[...],
                                  est.encode(dclust.open_array(X_zarr)).compute())
    assert main(["encode", str(model), X_zarr, "--codes", str(tmp_path / "c2.zarr"),
                 "--lists", str(tmp_path / "l.zarr")]) == 2
    assert "--lists needs an IVFQuantizer model" in capsys.readouterr().err


@pytest.mark.parametrize("kw, message", [
    ({"n_subquantizers": 5}, r"n_subquantizers=5 does not divide n_features=16.*\(1, 2, 4, 8, 16\)"),
    ({"n_bits": 17}, r"n_bits=17 is not valid; expected an integer >= 1 and <= 16"),
    ({"n_bits": 12}, r"n_samples=3000 must be >= 2\*\*n_bits=4096"),
    ({"init": "kmeans++"}, r"Unknown init 'kmeans\+\+'"),
    ({"init": np.zeros((4, 16, 3))}, r"init has shape \(4, 16, 3\); initial codebooks must have "
                                     r"shape .* = \(4, 16, 4\)"),
])
def test_error_messages(Xd, kw, message):
    with pytest.raises(dclust.exceptions.DclustValueError, match=message):
        pq(**kw).fit(Xd)


def test_not_fitted_and_wrong_width(fitted):
    with pytest.raises(dclust.NotFittedError, match="not fitted yet"):
        pq().encode(np.zeros((2, D)))
    with pytest.raises(dclust.exceptions.DclustValueError, match="X has 3 features"):
        fitted.encode(np.zeros((2, 3)))
    with pytest.raises(dclust.exceptions.DclustValueError, match=r"codes has shape \(2, 3\)"):
        fitted.decode(np.zeros((2, 3), np.uint8))


@pytest.mark.parametrize("opq", [False, True])
def test_checkpoint_interrupt_and_resume_is_bit_identical(X_zarr, tmp_path, opq):
    kw = dict(opq=opq, n_opq_iter=2, opq_pq_iter=1, max_iter=4, tol=0.0)
    ref = pq(**kw).fit(dclust.open_array(X_zarr, chunks=CHUNK))
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(4), pytest.raises(KeyboardInterrupt):
        pq(checkpoint=ck, progress=True, **kw).fit(dclust.open_array(X_zarr, chunks=CHUNK))
    before = compute_count()
    res = pq(checkpoint=ck, resume=True, **kw).fit(dclust.open_array(X_zarr, chunks=CHUNK))
    np.testing.assert_array_equal(res.codebooks_, ref.codebooks_)
    if opq:
        np.testing.assert_array_equal(res.rotation_, ref.rotation_)
    assert res.mse_ == ref.mse_
    assert compute_count() - before < ref.n_passes_
