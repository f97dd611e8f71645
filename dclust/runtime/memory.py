"""Memory of this machine, and the budgets derived from it."""

from __future__ import annotations

__all__ = ["available_memory", "memory_budget"]


def available_memory() -> int:
    """Bytes of memory available to new allocations on this machine (psutil's view)."""
    import psutil  # imported on use: only budgeted steps need it

    return int(psutil.virtual_memory().available)


def memory_budget(max_memory=None) -> int:
    """Bytes an in-memory step may use.

    Parameters
    ----------
    max_memory : int, optional
        An explicit budget in bytes, returned as it is.

    Returns
    -------
    int
        ``max_memory``, or half the available memory: the other half is left to the
        rest of the process and the machine (workers, the OS page cache).
    """
    if max_memory is not None:
        return int(max_memory)
    return available_memory() // 2
