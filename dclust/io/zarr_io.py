"""Zarr v3 arrays in and out: row-chunked dask arrays, and labels written atomically."""

from __future__ import annotations

import numbers
import os
import time

import dask.array as da
import numpy as np

from .._dtypes import check_dtype, float_dtype
from ..exceptions import DclustValueError, StorageError
from .chunking import row_chunk
from .paths import atomic_output, is_url, local_path, make_store, redact

__all__ = ["open_array", "from_zarr_array", "write_array", "auto_row_chunk", "ChunkReader"]

_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


def auto_row_chunk(shape, itemsize, storage_rows, target_bytes=None):
    """Rows per dask chunk: a multiple of the storage chunk rows near ``target_bytes``
    (:func:`dclust.io.chunking.row_chunk` for an array of ``shape``)."""
    return row_chunk(shape[1], itemsize, target_bytes or None, n_rows=shape[0],
                     multiple_of=storage_rows)


def _rows_from_chunks(chunks, shape, itemsize, storage_rows):
    """Rows per dask chunk from the user's ``chunks`` (features are never split)."""
    given = chunks
    if isinstance(chunks, dict):
        chunks = chunks.get(0, "auto")
    elif isinstance(chunks, (tuple, list)):
        chunks = chunks[0] if len(chunks) else "auto"
    if chunks is None or (isinstance(chunks, str) and chunks == "auto"):
        return auto_row_chunk(shape, itemsize, storage_rows)
    if isinstance(chunks, numbers.Integral) and not isinstance(chunks, bool):
        if chunks == -1:
            return max(1, int(shape[0]))
        if chunks >= 1:
            return int(chunks)
    raise DclustValueError(
        f"chunks={given!r} is not valid; expected 'auto', a positive number of rows per chunk, "
        "or -1 for one chunk (features are never split)."
    )


class ChunkReader:
    """A ``zarr.Array`` whose reads name the damaged chunk when decoding fails.

    dask reads a Zarr array by slicing it, one slice per dask chunk. A truncated or
    corrupted chunk file makes zarr raise from deep inside a codec (``zstd``, ``bytes``,
    ``crc32c``) with nothing saying which file; this wrapper re-reads the slice one
    stored chunk at a time to find the first chunk that fails, and raises
    :class:`~dclust.exceptions.StorageError` naming the array and that chunk.

    Parameters
    ----------
    z : zarr.Array
    where : str, optional
        The array's path or URL as the user gave it (for messages).
    """

    def __init__(self, z, where=None):
        self.z = z
        self.where = where
        self.shape = tuple(z.shape)
        self.dtype = z.dtype
        self.ndim = z.ndim

    def __getitem__(self, index):
        try:
            return self.z[index]
        except Exception as e:
            raise self._damaged(index, e) from None

    def _damaged(self, index, error):
        rows = index[0] if isinstance(index, tuple) else index
        start, stop = (rows.start or 0, rows.stop) if isinstance(rows, slice) else (0, None)
        stop = self.shape[0] if stop is None else min(stop, self.shape[0])
        grid = tuple(getattr(self.z, "shards", None) or self.z.chunks)
        step = max(1, int(grid[0]))
        chunk, cause = None, error
        for c in range(start // step, max(start // step + 1, -(-stop // step))):
            try:
                self.z[c * step : min((c + 1) * step, self.shape[0])]
            except Exception as e:  # the first stored chunk that cannot be decoded
                chunk, cause = c, e
                break
        shown = repr(self.where) if self.where is not None else repr(str(self.z.store_path))
        if chunk is None:
            what = f"rows {start:,} to {stop:,}"
        else:
            coords = (chunk,) + (0,) * (self.ndim - 1)
            try:
                key = self.z.metadata.encode_chunk_key(coords)
            except Exception:  # pragma: no cover - metadata without a key encoding
                key = None
            what = f"chunk {coords}" + (f" (stored as {key!r})" if key else "")
            what += f", rows {chunk * step:,} to {min((chunk + 1) * step, self.shape[0]):,}"
        from ..exceptions import StorageError

        return StorageError(
            f"Cannot read {what} of the Zarr array at {shown}: {type(cause).__name__}: {cause}. "
            "The chunk file is damaged or truncated; restore it from a copy or write the "
            "array again."
        )


def _dask_from_zarr(z, chunks, where):
    """``da.from_zarr`` through :class:`ChunkReader` (same task names as dask's)."""
    from dask.base import tokenize

    name = "from-zarr-" + tokenize(z, chunks)
    return da.from_array(ChunkReader(z, where), chunks=chunks, name=name, asarray=True,
                         fancy=False, meta=np.empty((0,) * z.ndim, dtype=z.dtype))


def from_zarr_array(z, chunks="auto", *, where=None):
    """A row-chunked float dask array over an open ``zarr.Array``.

    float32 (and float64) data keep their dtype; integers and booleans become float64,
    float16 becomes float32.
    """
    shown = f" at {where!r}" if where is not None else ""
    if z.ndim != 2:
        hint = ""
        if z.ndim == 1:
            hint = " For one feature, open it with zarr and pass da.from_zarr(z).reshape(-1, 1)."
        elif z.ndim > 2:
            hint = (" Flatten the trailing axes into features, for example "
                    "da.from_zarr(z).reshape(z.shape[0], -1).")
        raise StorageError(
            f"The Zarr array{shown} has shape {tuple(z.shape)}; dclust needs 2-D data of shape "
            f"(n_samples, n_features).{hint}"
        )
    check_dtype(z.dtype)
    storage_rows = (getattr(z, "shards", None) or z.chunks)[0]
    rows = _rows_from_chunks(chunks, z.shape, z.dtype.itemsize, storage_rows)
    X = _dask_from_zarr(z, (rows, max(1, z.shape[1])), where)
    target = float_dtype(z.dtype)
    return X if X.dtype == target else X.astype(target)


def _has_zarr_marker(path, storage_options=None) -> bool:
    if is_url(path):
        from .paths import _fs

        fs, root = _fs(path, storage_options)
        return any(fs.exists(f"{root.rstrip('/')}/{m}") for m in _ZARR_MARKERS)
    p = local_path(path)
    return any(os.path.exists(os.path.join(p, m)) for m in _ZARR_MARKERS)


def open_array(path_or_url, *, storage_options=None, chunks="auto"):
    """Open a Zarr array as a row-chunked dask array.

    Parameters
    ----------
    path_or_url : str or os.PathLike
        A local path, ``file://`` URL, or any fsspec URL (``s3://``, ``gs://``,
        ``memory://``, ...) of a Zarr v3 (or v2) array of shape (n_samples, n_features).
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoint, ...).
    chunks : "auto", int, tuple or dict, default="auto"
        Rows per dask chunk: ``"auto"`` picks a multiple of the stored chunk (or shard)
        rows near 64 MiB (``dclust.io.chunking.DEFAULT_CHUNK_BYTES``); an int is a number
        of rows, ``-1`` one chunk; of a tuple or dict only the first axis is used.
        Features are never split.

    Returns
    -------
    X : dask.array.Array
        float32 data stays float32; integer and boolean data become float64.

    Raises
    ------
    StorageError
        Nothing exists at the path, it is a Zarr group or not Zarr at all, or the array
        is not 2-D.
    """
    import zarr

    from .paths import exists

    path = os.fspath(path_or_url)
    shown = repr(path)
    try:
        store = make_store(path, storage_options=storage_options, read_only=True)
        z = zarr.open_array(store=store, mode="r")
    except zarr.errors.NodeTypeValidationError:
        members = ""
        try:
            names = sorted(zarr.open_group(store=store, mode="r").array_keys())
            if names:
                members = f" (it holds the arrays {', '.join(repr(n) for n in names[:10])})"
        except Exception:  # listing is a courtesy
            pass
        raise StorageError(
            f"{shown} is a Zarr group, not an array{members}; pass the path of an array inside "
            "it, for example f'{path}/<name>'."
        ) from None
    except (FileNotFoundError, NotADirectoryError, zarr.errors.NodeNotFoundError):
        # zarr's ArrayNotFoundError is a FileNotFoundError: tell a missing path from a
        # path that holds something else.
        try:
            there = exists(path, storage_options)
        except Exception:
            there = True
        if not there:
            raise StorageError(
                f"No Zarr array at {shown}: the path does not exist. Check the path (for a URL, "
                "also the bucket and storage_options)."
            ) from None
        raise StorageError(
            f"{shown} is not a Zarr array: no Zarr metadata (zarr.json or .zarray) found there. "
            "Pass the folder of a Zarr array, or convert the data first, for example "
            "zarr.create_array(store=..., data=X)."
        ) from None
    except StorageError:
        raise
    except Exception as e:
        raise StorageError(
            f"Cannot open {shown} as a Zarr array ({type(e).__name__}: "
            f"{redact(e, storage_options)}). Check that it is a "
            "complete Zarr v2 or v3 array."
        ) from None
    if is_url(path) and path.startswith("memory://"):
        # fsspec's memory filesystem lives in this process only; worker processes
        # cannot see it, so the data travels with the graph instead.
        arr = from_zarr_array(z, chunks, where=path)
        return da.from_array(np.asarray(z[...], dtype=arr.dtype), chunks=arr.chunks)
    return from_zarr_array(z, chunks, where=path)


def _key_name(key):
    return key[0] if isinstance(key, tuple) else key


_DONE_WORKER = ("memory", "error", "released", "forgotten")
_DONE_SCHEDULER = ("memory", "erred", "released", "forgotten")


def _pending_on_worker(prefix, dask_worker=None):
    """Tasks of the layer ``prefix`` that run or may still start on this worker.

    Cancelled tasks that are still running count too: a thread cannot be stopped.
    """
    tasks = list(dask_worker.state.tasks.items())
    return sum(1 for key, ts in tasks
               if str(_key_name(key)).startswith(prefix) and ts.state not in _DONE_WORKER)


def _pending_on_scheduler(prefix, dask_scheduler=None):
    tasks = list(dask_scheduler.tasks.items())
    return sum(1 for key, ts in tasks
               if str(_key_name(key)).startswith(prefix) and ts.state not in _DONE_SCHEDULER)


def _wait_for_writers(prefix, timeout=60.0):
    """After a failed write, wait until no task of ``prefix`` can still write a chunk.

    A failed computation does not stop its other tasks: running ones finish, and ones a
    worker is about to start may start before the release reaches it. A chunk written
    after the temporary store was removed would create it again, so the clean-up waits
    until the scheduler has forgotten the layer and no worker holds a task of it that
    is not finished. Best effort: gives up after ``timeout`` seconds or when the
    cluster cannot be asked.
    """
    from ..runtime.client import get_client

    deadline = time.monotonic() + timeout
    try:
        client = get_client(quiet=True)
        while time.monotonic() < deadline:
            pending = client.run_on_scheduler(_pending_on_scheduler, prefix)
            if not pending:
                pending = sum(client.run(_pending_on_worker, prefix).values())
            if not pending:
                return
            time.sleep(0.01)
    except Exception:  # pragma: no cover - cluster gone; nothing more to wait for
        return


def _check_target(path, storage_options):
    """Refuse to replace something that is not a Zarr store (a file, a data folder)."""
    from .paths import exists

    if not exists(path, storage_options):
        return
    if is_url(path):
        from .paths import _fs

        fs, root = _fs(path, storage_options)
        is_dir = fs.isdir(root)
    else:
        is_dir = os.path.isdir(local_path(path))
    if not is_dir:
        raise StorageError(
            f"{path!r} is a file, not a Zarr store; dclust will not replace it with one. "
            "Choose another path or remove the file first."
        )
    if not _has_zarr_marker(path, storage_options):
        raise StorageError(
            f"{path!r} is a folder that is not a Zarr store; dclust will not replace it "
            "(overwrite=True only replaces earlier Zarr output). Choose another path or "
            "remove the folder first."
        )


def write_array(x, path, *, storage_options=None, overwrite=True, attributes=None, fill_value=None):
    """Write an array to a new Zarr v3 array at ``path``, atomically.

    The array is created under a temporary name with chunks equal to ``x``'s (regular)
    chunks along the first axis and whole along the others, filled by one computation
    in which each task writes its own chunk, and moved to ``path`` when complete. A
    failed computation leaves whatever was at ``path`` untouched.

    Parameters
    ----------
    x : dask.array.Array or array-like
    path : str or os.PathLike
        Local path or fsspec URL.
    overwrite : bool, default=True
        Replace an existing Zarr store at ``path``; ``False`` raises ``StorageError``.
    """
    import zarr

    from ..runtime.compute import compute_graph

    path = os.fspath(path)
    if not isinstance(x, da.Array):
        x = np.asarray(x)
        if x.ndim == 0:
            raise DclustValueError(f"write_array needs an array with at least one axis; got {x!r}.")
        row_items = int(np.prod(x.shape[1:], dtype=np.int64)) if x.ndim > 1 else 1
        rows = row_chunk(max(1, row_items), x.dtype.itemsize, n_rows=x.shape[0])
        x = da.from_array(x, chunks=(rows,) + tuple(x.shape[1:]))
    if x.ndim == 0:
        raise DclustValueError(f"write_array needs an array with at least one axis; got shape {x.shape}.")
    if any(np.isnan(c) for c in x.chunks[0]):
        raise DclustValueError("x has unknown chunk sizes along rows; call x.compute_chunk_sizes() first.")
    if x.ndim > 1 and any(len(c) > 1 for c in x.chunks[1:]):
        # Two tasks writing parts of one Zarr chunk would race; keep other axes whole.
        x = x.rechunk({i: -1 for i in range(1, x.ndim)})
    rows = x.chunks[0]
    if len(set(rows[:-1])) > 1 or rows[-1] > rows[0]:
        x = x.rechunk({0: max(rows)})
    chunk_rows = max(1, x.chunks[0][0])
    if overwrite:
        _check_target(path, storage_options)
    with atomic_output(path, storage_options=storage_options, overwrite=overwrite) as tmp:
        store = make_store(tmp, storage_options=storage_options, read_only=False)
        z = zarr.create_array(
            store=store,
            shape=x.shape,
            chunks=(chunk_rows,) + tuple(max(1, s) for s in x.shape[1:]),
            dtype=x.dtype,
            fill_value=fill_value,
            attributes=attributes or {},
            zarr_format=3,
            overwrite=True,
        )
        stored = da.store(x, z, lock=False, compute=False)
        keys = stored.__dask_keys__()
        flat = keys
        while isinstance(flat, list) and flat:
            flat = flat[0]
        prefix = str(_key_name(flat))
        try:
            compute_graph(stored.__dask_graph__(), keys)
        except BaseException:
            _wait_for_writers(prefix)
            raise
    return path
