"""Inputs of the metrics: data and labels as row-aligned dask arrays, with clear errors.

Labels may be NumPy arrays (any dtype: non-integer labels are encoded on the client, as
scikit-learn accepts strings), dask arrays or Zarr arrays (integers or booleans: they
are never loaded whole), or the path or URL of a 1-D Zarr array. Arrays chunked
differently from each other or from ``X`` are rechunked to ``X``'s rows.
"""

from __future__ import annotations

import os
import uuid
from typing import NamedTuple

import dask.array as da
import numpy as np

from ..exceptions import DataError, DclustTypeError, DclustValueError, StorageError
from ..validation import as_dask_rows, default_row_chunk

__all__ = ["Labels", "as_labels", "as_data", "align", "check_same_length",
           "check_number_of_labels", "raise_nonfinite", "label_chunk"]

# Rows per chunk of labels given as NumPy (8 MiB of int64).
_LABEL_CHUNK = 1 << 20


class Labels(NamedTuple):
    """Labels as int64 (NumPy or dask), and the original values of encoded labels."""

    data: object
    classes: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    def values(self, codes):
        """Original label values of ``codes`` (int64 labels are their own values)."""
        return codes if self.classes is None else self.classes[codes]


def _shape_message(name, shape):
    hint = ""
    if len(shape) == 2 and 1 in shape:
        hint = f" Flatten it with {name}.ravel() (or {name}.reshape(-1))."
    elif len(shape) == 0:
        hint = " Pass one label per row."
    return DclustValueError(
        f"{name} must be 1-D of shape (n_samples,), one label per row; got an array of shape "
        f"{tuple(shape)}.{hint}"
    )


def _open_zarr_labels(path, name):
    import zarr

    from ..io.paths import exists, is_url, make_store

    path = os.fspath(path)
    try:
        z = zarr.open_array(store=make_store(path, read_only=True), mode="r")
    except Exception as e:
        try:
            there = exists(path)
        except Exception:
            there = True
        why = "the path does not exist" if not there else f"{type(e).__name__}: {e}"
        raise StorageError(
            f"Cannot open {name}={path!r} as a Zarr array ({why}). Pass the path of a 1-D Zarr "
            "array of labels (such as one written by dclust.write_labels), or the labels themselves."
        ) from None
    if is_url(path) and path.startswith("memory://"):
        # fsspec's memory filesystem lives in this process only: load it here.
        return np.asarray(z[...])
    return z


def _zarr_to_dask(z, name):
    if z.ndim != 1:
        raise _shape_message(name, z.shape)
    return da.from_zarr(z, chunks=(max(1, min(int(z.shape[0]), _LABEL_CHUNK)),))


def _check_label_dtype(dtype, name):
    if dtype.kind not in "biu":
        raise DclustTypeError(
            f"{name} has dtype {str(dtype)!r}; labels given as a dask or Zarr array must be "
            f"integers (or booleans). Convert them first, for example {name}.astype('int64') "
            "for whole numbers, or pass them as a NumPy array (any dtype is then encoded)."
        )


def as_labels(labels, *, name="labels") -> Labels:
    """Labels as a 1-D int64 array (NumPy stays NumPy, the rest becomes dask).

    Raises
    ------
    DclustValueError
        The labels are not 1-D, or hold NaN.
    DclustTypeError
        A dask or Zarr array of labels is not of an integer dtype.
    StorageError
        A path does not lead to a Zarr array.
    """
    if labels is None:
        raise DclustValueError(f"{name} is None; pass one label per row.")
    if isinstance(labels, (str, os.PathLike)):
        labels = _open_zarr_labels(labels, name)
    if type(labels).__module__.startswith("zarr"):
        labels = _zarr_to_dask(labels, name)
    if isinstance(labels, da.Array):
        if labels.ndim != 1:
            raise _shape_message(name, labels.shape)
        if any(np.isnan(c) for c in labels.chunks[0]):
            raise DclustValueError(
                f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first."
            )
        _check_label_dtype(labels.dtype, name)
        return Labels(labels if labels.dtype == np.int64 else labels.astype(np.int64))
    try:
        arr = np.asarray(labels)
    except Exception as e:  # ragged lists and the like
        raise DclustValueError(f"{name} cannot be read as a 1-D array of labels: {e}") from None
    if arr.ndim != 1:
        raise _shape_message(name, arr.shape)
    if arr.dtype.kind in "biu":
        return Labels(arr.astype(np.int64, copy=False))
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr))
        raise DataError(
            f"{name} contains {bad.size:,} NaN or infinite values (first at row {int(bad[0]):,}); "
            "every row needs a label. Drop those rows, or give them a label of their own "
            "(for example -1)."
        )
    # Strings, floats, objects: encode on the client, as scikit-learn accepts any labels.
    classes, codes = np.unique(arr, return_inverse=True)
    return Labels(codes.astype(np.int64).reshape(-1), classes)


def label_chunk(n: int) -> int:
    return max(1, min(int(n), _LABEL_CHUNK))


def _from_numpy(arr, chunks):
    # Named, so that dask does not hash the whole array to make a name.
    return da.from_array(arr, chunks=chunks, name=f"dclust-metrics-{uuid.uuid4().hex}")


def align(labels: Labels, row_chunks) -> da.Array:
    """``labels`` as a dask array with the given row chunks."""
    data = labels.data
    if isinstance(data, np.ndarray):
        return _from_numpy(data, (tuple(row_chunks),))
    if tuple(data.chunks[0]) != tuple(row_chunks):
        data = data.rechunk({0: tuple(row_chunks)})
    return data


def as_data(X) -> da.Array:
    """``X`` as a row-chunked float dask array (NumPy data is chunked here)."""
    X = as_dask_rows(X)
    if isinstance(X, np.ndarray):
        rows = default_row_chunk(X.shape[1], X.dtype.itemsize)
        X = _from_numpy(X, (rows, X.shape[1]))
    return X


def check_same_length(n_a, n_b, name_a, name_b, what="rows"):
    if n_a != n_b:
        raise DclustValueError(
            f"{name_b} has {n_b:,} entries but {name_a} has {n_a:,} {what}; pass one label per "
            f"row of {name_a}, in the same order."
        )


def check_number_of_labels(n_labels, n_samples, func):
    """scikit-learn's rule (and message prefix): ``2 <= n_labels <= n_samples - 1``."""
    if not 1 < n_labels < n_samples:
        raise DclustValueError(
            f"Number of labels is {n_labels}. Valid values are 2 to n_samples - 1 (inclusive); "
            f"got n_samples={n_samples:,}. {func} compares clusters with each other, so the "
            "labels must split the rows into at least two groups and leave at least one group "
            "with two or more rows."
        )


def raise_nonfinite(stats, X, name="X"):
    """Raise :class:`DataError` when a pass found NaN or infinite values in ``X``."""
    n_bad = int(stats["n_nonfinite"])
    if not n_bad:
        return
    from ..reductions.engine import row_offsets

    row = int(stats["first_nonfinite"])
    where = ""
    if row >= 0:
        chunk = int(np.searchsorted(row_offsets(X.chunks[0]), row, side="right") - 1)
        where = f" (first in chunk {chunk}, row {row:,})"
    raise DataError(
        f"{name} contains {n_bad:,} non-finite values, NaN or inf{where}; clustering metrics "
        "need finite data. Clean the data first, for example keep the rows where "
        "da.isfinite(X).all(axis=1)."
    )
