"""Placing a fit's data on the workers: row chunks for NumPy input, persisting, devices."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from ..io.chunking import row_chunk
from ..validation import as_dask_rows, check_sample_weight
from .client import get_client
from .compute import cache_array, scatter_array

__all__ = ["prepare_fit_data"]


def _numpy_row_chunk(X: np.ndarray) -> int:
    n, d = X.shape
    by_bytes = row_chunk(d, X.itemsize)
    try:
        threads = sum(get_client().nthreads().values())
    except Exception:  # pragma: no cover
        threads = 1
    # At least one chunk per worker thread once there is enough work to share.
    by_threads = max(1, math.ceil(n / max(1, min(threads, n // 20_000 or 1))))
    return int(min(by_bytes, by_threads, max(n, 1)))


def prepare_fit_data(X, sample_weight, cache, device="cpu"):
    """Validate and place ``X`` and its weights for a fit.

    ``device`` (``"cpu"``, ``"cuda"`` or ``"auto"``) says where the kernels run; on
    ``"cuda"`` the chunks move to the workers' GPUs, and stay there when ``cache`` says
    to keep the data in memory and it fits in half the GPUs' free memory.

    Returns
    -------
    X_work : dask.array.Array
        What the passes read (persisted on the workers when ``cache`` says so).
    w_work : dask.array.Array or None
    X_source : the lazily-defined array labels are computed from later, or the
        NumPy input itself.
    """
    X = as_dask_rows(X)
    n = X.shape[0]
    w = check_sample_weight(sample_weight, n)
    if isinstance(X, np.ndarray):
        rows = _numpy_row_chunk(X)
        X_work = scatter_array(X, rows)
        w_work = None if w is None else (
            scatter_array(w, rows, like=X_work) if isinstance(w, np.ndarray) else w.rechunk((X_work.chunks[0],))
        )
        return _on_device(X_work, w_work, cache, device) + (X,)
    if w is not None:
        w = da.from_array(w, chunks=(X.chunks[0],)) if isinstance(w, np.ndarray) else w.rechunk((X.chunks[0],))
    X_work, (w_work,), _ = cache_array(X, cache, also=(w,))
    return _on_device(X_work, w_work, cache, device) + (X,)


def _on_device(X, w, cache, device):
    from .device import gpu_memory, resolve_device, to_device

    if resolve_device(device) != "cuda":
        return X, w
    X_dev, w_dev = to_device(X, "cuda"), to_device(w, "cuda")
    if cache == "memory" or (cache == "auto" and 2 * X.nbytes <= gpu_memory()):
        from distributed import wait

        X_dev, w_dev = get_client().persist([X_dev, w_dev]) if w is not None else \
            (get_client().persist(X_dev), None)
        wait([X_dev] if w_dev is None else [X_dev, w_dev])
    return X_dev, w_dev
