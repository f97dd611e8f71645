"""Where the kernels run: ``device="cpu" | "cuda" | "auto"``.

On ``"cuda"`` every chunk is moved to its worker's GPU (once per pass when streamed,
once per fit when persisted there), the kernels run on CuPy arrays and only the small
reduced statistics come back to the host (see :func:`dclust._xp.to_host`). CuPy is
needed on the workers; the client never touches GPU memory.
"""

from __future__ import annotations

import numpy as np

from ..exceptions import DclustValueError
from .gpus import gpu_count, gpu_free_bytes

__all__ = ["DEVICES", "check_device", "resolve_device", "predict_device", "to_device",
           "to_device_block", "gpu_memory", "cupy_or_error"]

DEVICES = ("auto", "cpu", "cuda")

_INSTALL = ("Install CuPy with `pip install 'dclust[gpu]'` (CuPy for CUDA 12) on every worker, "
            "or use device='cpu'.")


def check_device(device) -> str:
    """Validate a ``device`` parameter value and return it normalised."""
    if isinstance(device, str) and device.lower() in DEVICES:
        return device.lower()
    if isinstance(device, str) and device.lower().startswith("cuda:"):
        raise DclustValueError(
            f"device={device!r}: dclust uses each worker's own GPU; pass device='cuda' and "
            "choose GPUs per worker with CUDA_VISIBLE_DEVICES (or dask-cuda)."
        )
    raise DclustValueError(f"device={device!r} is not one of 'auto', 'cpu' or 'cuda'.")


def cupy_or_error():
    """Import CuPy, or fail with what to install."""
    try:
        import cupy
    except ImportError:
        raise DclustValueError(f"device='cuda' needs CuPy, which is not installed here. {_INSTALL}") from None
    return cupy


_cache: dict = {}


def _worker_gpus(client) -> dict:
    workers = tuple(sorted(client.scheduler_info(n_workers=-1)["workers"]))
    key = (id(client), workers)
    if key not in _cache:
        _cache.clear()
        _cache[key] = client.run(gpu_count) if workers else {}
    return _cache[key]


def resolve_device(device, client=None) -> str:
    """``"cpu"`` or ``"cuda"`` for this fit.

    ``"auto"`` picks ``"cuda"`` when every worker has a GPU and CuPy, ``"cpu"``
    otherwise; ``"cuda"`` fails with a clear message when a worker lacks either.
    """
    device = check_device(device)
    if device == "cpu":
        return "cpu"
    if client is None:
        from .client import get_client

        client = get_client()
    counts = _worker_gpus(client)
    without = sorted(addr for addr, n in counts.items() if n < 1)
    if device == "auto":
        return "cuda" if counts and not without else "cpu"
    if not counts:
        raise DclustValueError("device='cuda' but the Dask cluster has no workers yet.")
    if without:
        shown = ", ".join(without[:3]) + (f" and {len(without) - 3} more" if len(without) > 3 else "")
        raise DclustValueError(
            f"device='cuda' but {len(without)} of {len(counts)} workers have no usable GPU "
            f"(CuPy missing or no CUDA device): {shown}. {_INSTALL}"
        )
    return "cuda"


def gpu_memory(client=None) -> int:
    """Free GPU memory summed over the workers, in bytes (0 without GPUs)."""
    if client is None:
        from .client import get_client

        client = get_client()
    return int(sum(client.run(gpu_free_bytes).values()))


def _to_cupy(block):
    import cupy

    return cupy.asarray(block)


def to_device(X, device: str):
    """``X`` (a dask array) with its blocks on ``device`` when read.

    The meta stays NumPy so that the client needs no CuPy; only the workers' tasks see
    device arrays, and the pass engine brings their statistics back to the host.
    """
    if X is None or device != "cuda":
        return X
    return X.map_blocks(_to_cupy, dtype=X.dtype, meta=np.empty((0,) * X.ndim, dtype=X.dtype),
                        name=f"to-cuda-{X.name}")


def predict_device(device, X) -> str:
    """The device for labelling ``X`` after a fit.

    A NumPy array is labelled here, on this process's GPU only when ``device="cuda"``
    (``"auto"`` never starts a cluster or looks for GPUs just to label in memory); a
    dask array goes to the cluster and resolves ``device`` there.
    """
    device = check_device(device)
    if isinstance(X, np.ndarray):
        if device == "cuda":
            cupy_or_error()
            return "cuda"
        return "cpu"
    return resolve_device(device)


def to_device_block(block, device: str):
    """One block on ``device`` (a no-op on ``"cpu"`` and for blocks already there)."""
    if device != "cuda":
        return block
    return _to_cupy(block)
