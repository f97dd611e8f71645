"""Zarr v3 arrays in and out: row-chunked dask arrays, and labels written atomically."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np

from ..exceptions import StorageError
from .paths import atomic_output, is_url, make_store

__all__ = ["open_array", "from_zarr_array", "write_array", "auto_row_chunk"]


def auto_row_chunk(shape, itemsize, storage_rows, target_bytes=None):
    """Rows per dask chunk: a multiple of the storage chunk rows near ``target_bytes``."""
    from ..validation import DEFAULT_CHUNK_BYTES

    target = target_bytes or DEFAULT_CHUNK_BYTES
    row_bytes = max(1, shape[1] * itemsize)
    want = max(1, target // row_bytes)
    storage_rows = max(1, int(storage_rows or 1))
    rows = max(storage_rows, (want // storage_rows) * storage_rows)
    return int(min(rows, max(shape[0], 1)))


def from_zarr_array(z, chunks="auto"):
    """A row-chunked dask array over an open ``zarr.Array``."""
    if z.ndim != 2:
        raise StorageError(
            f"The Zarr array has shape {tuple(z.shape)}; dclust needs 2-D data of shape "
            "(n_samples, n_features)."
        )
    storage_rows = (getattr(z, "shards", None) or z.chunks)[0]
    if chunks == "auto":
        rows = auto_row_chunk(z.shape, z.dtype.itemsize, storage_rows)
    elif isinstance(chunks, (int, np.integer)):
        rows = int(chunks)
    else:
        rows = chunks[0] if isinstance(chunks, (tuple, list)) else chunks
    return da.from_zarr(z, chunks=(rows, z.shape[1]))


def open_array(path_or_url, *, storage_options=None, chunks="auto"):
    """Open a Zarr array as a row-chunked dask array.

    Parameters
    ----------
    path_or_url : str or os.PathLike
        A local path, ``file://`` URL, or any fsspec URL (``s3://``, ``gs://``,
        ``memory://``, ...) of a Zarr v3 (or v2) array of shape (n_samples, n_features).
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoint, ...).
    chunks : "auto", int or tuple, default="auto"
        Rows per dask chunk. ``"auto"`` picks a multiple of the stored chunk (or shard)
        near 64 MiB. Features are never split.

    Returns
    -------
    X : dask.array.Array
        float32 data stays float32.
    """
    import zarr

    path = os.fspath(path_or_url)
    shown = repr(path)
    try:
        store = make_store(path, storage_options=storage_options, read_only=True)
        z = zarr.open_array(store=store, mode="r")
    except FileNotFoundError:
        raise StorageError(f"No Zarr array at {shown}: the path does not exist.") from None
    except zarr.errors.NodeTypeValidationError:
        raise StorageError(
            f"{shown} is a Zarr group, not an array; pass the path of an array inside it."
        ) from None
    except (zarr.errors.ArrayNotFoundError, zarr.errors.NodeNotFoundError, NotADirectoryError):
        raise StorageError(f"{shown} is not a Zarr array (no array metadata found there).") from None
    except StorageError:
        raise
    except Exception as e:
        raise StorageError(f"Cannot open {shown} as a Zarr array: {type(e).__name__}: {e}") from None
    if is_url(path) and path.startswith("memory://"):
        # fsspec's memory filesystem lives in this process only; worker processes
        # cannot see it, so the data travels with the graph instead.
        arr = from_zarr_array(z, chunks)
        return da.from_array(z[...], chunks=arr.chunks)
    return from_zarr_array(z, chunks)


def write_array(x, path, *, storage_options=None, overwrite=True, attributes=None, fill_value=None):
    """Write a dask array to a new Zarr v3 array at ``path``, atomically.

    The array is created under a temporary name with chunks equal to ``x``'s (regular)
    chunks along the first axis, filled by one computation in which each task writes its
    own chunk, and moved to ``path`` when complete.
    """
    import zarr

    from ..runtime.compute import compute_graph

    rows = x.chunks[0]
    if len(set(rows[:-1])) > 1 or rows[-1] > rows[0]:
        x = x.rechunk({0: max(rows)})
    chunk_rows = max(1, x.chunks[0][0])
    with atomic_output(path, storage_options=storage_options, overwrite=overwrite) as tmp:
        store = make_store(tmp, storage_options=storage_options, read_only=False)
        z = zarr.create_array(
            store=store,
            shape=x.shape,
            chunks=(chunk_rows,) + tuple(x.shape[1:]),
            dtype=x.dtype,
            fill_value=fill_value,
            attributes=attributes or {},
            zarr_format=3,
            overwrite=True,
        )
        stored = da.store(x, z, lock=False, compute=False)
        compute_graph(stored.__dask_graph__(), stored.__dask_keys__())
    return path

