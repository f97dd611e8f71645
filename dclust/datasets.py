"""Synthetic datasets generated in parallel, one row-chunk per task.

Used by the ``dclust make-blobs`` command, the tests and the benchmarks; also public as
:mod:`dclust.testing` (``make_blobs``, ``make_blobs_array``).

The cluster centres are drawn on the client from ``seed``; every row-chunk is then drawn
inside its own task by a generator seeded from ``(seed, block index)``. Nothing is ever
held whole in memory, and a recomputed task (a lost worker, a second pass) gives back
exactly the same rows.

Reproducibility: the same arguments, including ``chunk_size``, give bit-identical data
on any number of workers. A different ``chunk_size`` gives the same centres but other
rows, because each block draws its rows from its own stream.
"""

from __future__ import annotations

import numbers

import dask.array as da
import numpy as np
from dask.base import tokenize

from .exceptions import DclustValueError
from .io.chunking import row_chunk
from .validation import check_param

__all__ = ["make_blobs_array", "make_blobs"]

_DTYPES = ("float32", "float64")


def _block_rng(seed, block):
    # Entropy (seed, block + 1) gives every block its own independent stream, whatever the
    # order tasks run in; (seed, 0) is kept for the centres.
    return np.random.default_rng([int(seed), int(block) + 1])


def _block_labels(rng, size, n_centers):
    return rng.integers(0, n_centers, size=size, dtype=np.int64)


def _blobs_block(block_id=None, *, sizes, centers, std, seed, out_dtype):
    """Rows of block ``block_id[0]``: a label per row, then Gaussian noise around its centre."""
    i = block_id[0]
    m = sizes[i]
    rng = _block_rng(seed, i)
    labels = _block_labels(rng, m, centers.shape[0])
    # Noise is drawn in the output dtype: float32 data costs half the memory and time.
    X = rng.standard_normal((m, centers.shape[1]), dtype=out_dtype)
    X *= std[labels, None].astype(out_dtype, copy=False)
    X += centers[labels].astype(out_dtype, copy=False)
    return X


def _labels_block(block_id=None, *, sizes, n_centers, seed):
    # Labels are the first draw of each block's stream, so they can be recomputed
    # without generating the rows.
    i = block_id[0]
    return _block_labels(_block_rng(seed, i), sizes[i], n_centers).astype(np.int32)


def _check_args(n_samples, n_features, centers, cluster_std, center_box, seed, dtype, chunk_size):
    check_param("n_samples", n_samples, kind=numbers.Integral, low=1)
    check_param("dtype", str(np.dtype(dtype)) if _is_dtype(dtype) else dtype, options=_DTYPES)
    check_param("seed", seed, kind=numbers.Integral, low=0)
    if isinstance(centers, numbers.Integral) and not isinstance(centers, bool):
        check_param("centers", centers, kind=numbers.Integral, low=1)
        check_param("n_features", n_features, kind=numbers.Integral, low=1)
        lo, hi = (float(v) for v in center_box)
        if not lo < hi:
            raise DclustValueError(
                f"center_box={tuple(center_box)!r} must be (low, high) with low < high."
            )
        C = np.random.default_rng([int(seed), 0]).uniform(lo, hi, size=(int(centers), int(n_features)))
    else:
        C = np.asarray(centers, dtype=np.float64)
        if C.ndim != 2 or C.shape[0] < 1:
            raise DclustValueError(
                f"centers has shape {C.shape}; pass a number of centres or an array of shape "
                "(n_centers, n_features)."
            )
        if n_features is not None and C.shape[1] != n_features:
            raise DclustValueError(
                f"centers has {C.shape[1]} features but n_features={n_features!r}; they must agree "
                "(or pass n_features=None)."
            )
        if not np.isfinite(C).all():
            raise DclustValueError("centers contains non-finite values.")
    k = C.shape[0]
    std = np.asarray(cluster_std, dtype=np.float64)
    if std.ndim == 0:
        std = np.full(k, float(std))
    if std.shape != (k,) or not (np.isfinite(std).all() and (std >= 0).all()):
        raise DclustValueError(
            f"cluster_std={cluster_std!r} must be a non-negative number or one per centre "
            f"({k} values)."
        )
    if chunk_size is not None:
        check_param("chunk_size", chunk_size, kind=numbers.Integral, low=1)
    return C, std


def _is_dtype(dtype):
    try:
        np.dtype(dtype)
        return True
    except TypeError:
        return False


def make_blobs_array(n_samples, n_features, centers, *, chunk_size=None, cluster_std=1.0,
                     center_box=(-10.0, 10.0), seed=0, dtype="float32", return_labels=False):
    """Isotropic Gaussian blobs as a lazy, row-chunked dask array.

    Parameters
    ----------
    n_samples : int
        Number of rows.
    n_features : int or None
        Number of columns (``None`` takes it from a ``centers`` array).
    centers : int or array-like of shape (n_centers, n_features)
        Number of centres, drawn uniformly in ``center_box`` from ``seed``, or the
        centres themselves.
    chunk_size : int, optional
        Rows per chunk; default about 64 MiB of rows
        (:func:`dclust.io.chunking.row_chunk`). Part of the data's identity: see
        Notes.
    cluster_std : float or array-like of shape (n_centers,), default=1.0
        Standard deviation of each blob.
    center_box : (float, float), default=(-10, 10)
        Bounds of the random centres.
    seed : int, default=0
    dtype : {"float32", "float64"}, default="float32"
    return_labels : bool, default=False
        Also return the lazy array of true labels (int32, same row chunks).

    Returns
    -------
    X : dask.array.Array of shape (n_samples, n_features)
        One generating task per chunk; nothing is computed here.
    centers : ndarray of shape (n_centers, n_features), float64
    labels : dask.array.Array of shape (n_samples,), only if ``return_labels``

    Notes
    -----
    Each row picks its centre uniformly at random, so cluster sizes vary slightly
    (unlike scikit-learn's ``make_blobs``, which balances them exactly). The same
    arguments give identical data on any cluster; another ``chunk_size`` gives the same
    centres but different rows.

    Examples
    --------
    >>> from dclust.datasets import make_blobs_array
    >>> X, C = make_blobs_array(10_000, 8, 4, chunk_size=2_500, seed=1)
    >>> X.chunks[0], C.shape
    ((2500, 2500, 2500, 2500), (4, 8))
    """
    C, std = _check_args(n_samples, n_features, centers, cluster_std, center_box, seed, dtype,
                         chunk_size)
    n, d = int(n_samples), C.shape[1]
    dtype = np.dtype(dtype)
    rows = int(chunk_size) if chunk_size is not None else row_chunk(d, dtype.itemsize)
    rows = min(rows, n)
    sizes = (rows,) * (n // rows) + ((n % rows,) if n % rows else ())
    token = tokenize(n, C, std, int(seed), str(dtype), sizes)
    X = da.map_blocks(
        _blobs_block, chunks=(sizes, (d,)), dtype=dtype, meta=np.empty((0, 0), dtype),
        name=f"make-blobs-{token}", sizes=sizes, centers=C, std=std, seed=int(seed),
        out_dtype=dtype,
    )
    if not return_labels:
        return X, C
    y = da.map_blocks(
        _labels_block, chunks=(sizes,), dtype=np.int32, meta=np.empty((0,), np.int32),
        name=f"make-blobs-labels-{token}", sizes=sizes, n_centers=C.shape[0], seed=int(seed),
    )
    return X, C, y


def make_blobs(path, n_samples, n_features, centers, *, chunk_size=None, cluster_std=1.0,
               center_box=(-10.0, 10.0), seed=0, dtype="float32", storage_options=None,
               overwrite=True):
    """Generate blobs on the Dask cluster and write them to a Zarr v3 array.

    Each task generates and writes its own chunk; the Zarr chunks equal the generated
    row chunks, and the array appears under ``path`` only once complete (written under
    a temporary name, then renamed).

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL of the array to create.
    n_samples, n_features, centers, chunk_size, cluster_std, center_box, seed, dtype
        As in :func:`make_blobs_array`.
    storage_options : dict, optional
        Passed to fsspec.
    overwrite : bool, default=True
        Replace an existing array at ``path``; ``False`` raises ``StorageError`` instead.

    Returns
    -------
    path : the ``path`` given.

    Notes
    -----
    The array's attributes hold ``{"dclust": {"kind": "blobs", "generator": {...},
    "centers": [[...], ...]}}``: the generator's parameters and the true centres.
    """
    from .io.zarr_io import write_array

    X, C = make_blobs_array(n_samples, n_features, centers, chunk_size=chunk_size,
                            cluster_std=cluster_std, center_box=center_box, seed=seed, dtype=dtype)
    std = np.asarray(cluster_std, dtype=np.float64)
    generator = {
        # The public name the generator has always been recorded under (dclust.testing
        # re-exports it), so that arrays written before and after compare equal.
        "name": "dclust.testing.make_blobs",
        "n_samples": int(n_samples),
        "n_features": int(C.shape[1]),
        "centers": int(C.shape[0]),
        "cluster_std": float(std) if std.ndim == 0 else std.tolist(),
        "center_box": [float(v) for v in center_box],
        "seed": int(seed),
        "dtype": str(X.dtype),
        "chunk_size": int(X.chunks[0][0]),
    }
    attributes = {"dclust": {"kind": "blobs", "generator": generator, "centers": C.tolist()}}
    return write_array(X, path, storage_options=storage_options, overwrite=overwrite,
                       attributes=attributes)
