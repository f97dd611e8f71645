"""This process's GPUs, probed without a cluster.

The probes run where they are called: on the client when sizing the embedded cluster
(:mod:`.client`), on each worker through ``client.run`` (:mod:`.device`). They never fail:
without CuPy or a CUDA device they report nothing there.
"""

from __future__ import annotations

__all__ = ["gpu_count", "gpu_free_bytes"]


def gpu_count() -> int:
    """CUDA devices visible to this process; 0 when CuPy or a CUDA device is missing."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def gpu_free_bytes() -> int:
    """Free memory of this process's current GPU in bytes; 0 without one."""
    try:
        import cupy

        free, _total = cupy.cuda.Device().mem_info
        return int(free)
    except Exception:
        return 0
