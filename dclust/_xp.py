"""Array-namespace helpers shared by the kernels (NumPy, CuPy, array-api-strict)."""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, is_cupy_namespace, is_numpy_array

__all__ = ["array_namespace", "is_numpy_namespace", "is_cupy_namespace", "to_numpy",
           "to_host", "numpy_like"]


def is_numpy_namespace(xp) -> bool:
    """True when ``xp`` is NumPy itself or array-api-compat's NumPy wrapper."""
    return xp is np or getattr(xp, "__name__", "") in {"numpy", "array_api_compat.numpy"}


def to_numpy(a):
    """Return ``a`` as a NumPy array, copying from the device when it lives on a GPU."""
    if a is None or isinstance(a, (int, float)):
        return a
    if is_numpy_array(a):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)



def to_host(tree):
    """``tree`` (dicts, lists, tuples of arrays and scalars) with every array on the host.

    The pass engine applies it to each chunk's statistics, so that only small NumPy
    results travel between workers and to the client, whatever device ran the kernel.
    """
    if isinstance(tree, dict):
        return {k: to_host(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_host(v) for v in tree)
    if type(tree).__module__.startswith("cupy"):
        return tree.get()
    return tree


def numpy_like(xp):
    """The NumPy-compatible module behind ``xp`` and its unbuffered scatter-add.

    Returns ``(module, scatter_add)``: ``(numpy, numpy.add.at)`` for NumPy and
    ``(cupy, cupyx.scatter_add)`` for CuPy, or ``(None, None)`` for any other namespace.
    Kernels with a device fast path are written against this pair, so the same code runs
    (and is tested) on NumPy where no GPU exists.
    """
    if is_numpy_namespace(xp):
        return np, np.add.at
    if is_cupy_namespace(xp):
        import cupy
        import cupyx

        return cupy, cupyx.scatter_add
    return None, None
