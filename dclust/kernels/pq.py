"""Per-chunk product-quantization kernels: sub-space Lloyd statistics, encoding, decoding.

A product quantizer splits the ``d`` features into ``M`` contiguous sub-spaces of
``d / M`` features and quantizes each with its own codebook of ``K = 2**n_bits``
centres; a row's code is its ``M`` nearest-centre indices. Everything here is the
k-means machinery of :mod:`.lloyd` applied to column slices of the chunk, so the
compiled nearest-centre kernel does the work and the chunk is read once for all ``M``
sub-quantizers.

An optional orthogonal rotation ``R`` (OPQ) is applied first: the quantized vector is
``x @ R``, and the reconstruction in the original space is ``decode(code) @ R.T``.
"""

from __future__ import annotations

import numpy as np

from .lloyd import lloyd_partial, nearest_center

__all__ = [
    "subspace_slices",
    "code_dtype",
    "rotate",
    "pq_lloyd_partial",
    "pq_encode",
    "pq_decode",
    "pq_error_partial",
    "opq_crosscov_partial",
]


def subspace_slices(n_features, n_subquantizers):
    """The column slice of each sub-space (contiguous, of equal width)."""
    dsub = n_features // n_subquantizers
    return [slice(m * dsub, (m + 1) * dsub) for m in range(n_subquantizers)]


def code_dtype(n_bits):
    """The smallest unsigned integer holding codes of ``n_bits`` bits (uint8 or uint16)."""
    return np.dtype(np.uint8) if n_bits <= 8 else np.dtype(np.uint16)


def rotate(X, rotation):
    """``X @ rotation`` in ``X``'s precision (no rotation: ``X`` itself)."""
    if rotation is None:
        return X
    return X @ np.asarray(rotation, dtype=X.dtype)


def pq_lloyd_partial(X, codebooks, sample_weight=None, *, rotation=None, n_far=0, row_offset=0):
    """Lloyd statistics of every sub-quantizer on one chunk.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    codebooks : ndarray of shape (M, K, d / M)
    sample_weight : ndarray of shape (n,), optional
    rotation : ndarray of shape (d, d), optional
        Quantize ``X @ rotation`` (OPQ).
    n_far : int, default=0
        Far rows kept per sub-space for relocating its empty clusters.
    row_offset : int, default=0

    Returns
    -------
    list of dict
        One :func:`~dclust.kernels.lloyd.lloyd_partial` result per sub-quantizer, for
        the sub-vectors (``far_x`` holds sub-vectors too).
    """
    Xr = rotate(X, rotation)
    M = codebooks.shape[0]
    return [lloyd_partial(Xr[:, sl], codebooks[m], sample_weight, n_far=n_far,
                          row_offset=row_offset)
            for m, sl in enumerate(subspace_slices(X.shape[1], M))]


def _encode_rotated(Xr, codebooks):
    n = Xr.shape[0]
    M, K, _ = codebooks.shape
    codes = np.empty((n, M), dtype=code_dtype(int(np.ceil(np.log2(max(K, 2))))))
    err = np.zeros(n)
    for m, sl in enumerate(subspace_slices(Xr.shape[1], M)):
        labels, dist = nearest_center(Xr[:, sl], codebooks[m])
        codes[:, m] = np.asarray(labels)
        err += np.asarray(dist)
    return codes, err


def pq_encode(X, codebooks, rotation=None, *, return_error=False):
    """The code of each row: the nearest centre of each sub-quantizer.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    codebooks : ndarray of shape (M, K, d / M)
    rotation : ndarray of shape (d, d), optional
    return_error : bool, default=False
        Also return each row's squared reconstruction error (float64; a rotation is
        orthogonal, so it is the same in the rotated space).

    Returns
    -------
    codes : ndarray of shape (n, M), uint8 for K <= 256, else uint16
    error : ndarray of shape (n,), only with ``return_error``
    """
    codes, err = _encode_rotated(rotate(X, rotation), codebooks)
    return (codes, err) if return_error else codes


def pq_decode(codes, codebooks, rotation=None, dtype=np.float32):
    """The reconstruction of each code: its sub-centres side by side (rotated back)."""
    codes = np.asarray(codes)
    M, _, dsub = codebooks.shape
    out = np.empty((codes.shape[0], M * dsub), dtype=np.float64)
    for m in range(M):
        out[:, m * dsub:(m + 1) * dsub] = codebooks[m][codes[:, m].astype(np.intp)]
    if rotation is not None:
        out = out @ np.asarray(rotation, dtype=np.float64).T
    return out.astype(dtype, copy=False)


def pq_error_partial(X, codebooks, sample_weight=None, *, rotation=None):
    """``{"sse": sum of w * ||x - decode(encode(x))||^2, "weight": sum of w}`` (float64)."""
    _, err = pq_encode(X, codebooks, rotation, return_error=True)
    if sample_weight is None:
        return {"sse": np.asarray(err.sum()), "weight": np.asarray(float(X.shape[0]))}
    w = np.asarray(sample_weight, dtype=np.float64)
    return {"sse": np.asarray(err @ w), "weight": np.asarray(w.sum())}


def opq_crosscov_partial(X, codebooks, rotation, sample_weight=None):
    """OPQ's rotation statistics: ``X^T W decode(encode(X R))`` (d x d), and the error.

    With the codes fixed, the rotation minimising ``||X R - Y||`` over orthogonal ``R``
    is ``U V^T`` from the SVD of ``X^T Y`` (orthogonal Procrustes), so this sum over
    chunks is all the rotation step needs.
    """
    Xr = rotate(X, rotation)
    codes, err = _encode_rotated(Xr, codebooks)
    Y = pq_decode(codes, codebooks, None, dtype=np.float64)
    X64 = np.asarray(X, dtype=np.float64)
    if sample_weight is None:
        return {"cross": X64.T @ Y, "sse": np.asarray(err.sum()),
                "weight": np.asarray(float(X.shape[0]))}
    w = np.asarray(sample_weight, dtype=np.float64)
    return {"cross": (X64 * w[:, None]).T @ Y, "sse": np.asarray(err @ w),
            "weight": np.asarray(w.sum())}
