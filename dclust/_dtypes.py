"""Which dtypes dclust takes, and the float dtype it computes them in.

Shared by the input checks (:mod:`dclust.validation`) and the Zarr reader
(:mod:`dclust.io.zarr_io`), so that an array gets the same answer however it arrives.
"""

from __future__ import annotations

import numpy as np

from .exceptions import DclustTypeError, DclustValueError

__all__ = ["check_dtype", "float_dtype"]


def check_dtype(dtype) -> None:
    """Raise unless ``dtype`` holds real numbers (bool, integers or floats).

    Raises
    ------
    DclustValueError
        For complex numbers (a ValueError, as scikit-learn raises).
    DclustTypeError
        For anything else that is not a number (strings, objects, dates).
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "biuf":
        return
    if dtype.kind == "c":
        # A ValueError with scikit-learn's wording, so its estimator checks recognise it.
        raise DclustValueError(
            f"Complex data not supported: X has dtype {str(dtype)!r}; dclust clusters real "
            "numbers. Split it into real features first, for example "
            "np.hstack([X.real, X.imag])."
        )
    raise DclustTypeError(
        f"X has dtype {str(dtype)!r}; dclust needs numbers (float32, float64, integers or bool). "
        "Convert it first, for example X.astype('float32')."
    )


def float_dtype(dtype) -> np.dtype:
    """The dtype data of ``dtype`` is clustered in.

    float32 and float64 stay as they are (float32 halves the memory and the bandwidth);
    float16 becomes float32, which every backend computes in; integers and bool become
    float64, which holds them exactly up to 2**53.
    """
    dtype = np.dtype(dtype)
    if dtype == np.float32 or dtype == np.float64:
        return dtype
    if dtype == np.float16:
        return np.dtype(np.float32)
    return np.dtype(np.float64)
