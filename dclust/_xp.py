"""Array-namespace helpers shared by the kernels (NumPy, CuPy, array-api-strict)."""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, is_numpy_array

__all__ = ["array_namespace", "is_numpy_namespace", "to_numpy"]


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

