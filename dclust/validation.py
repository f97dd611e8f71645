"""Input checks with messages that name the value and the fix."""

from __future__ import annotations

import numbers
import os

import dask.array as da
import numpy as np

from ._dtypes import check_dtype, float_dtype
from .exceptions import DclustTypeError, DclustValueError
from .io.chunking import DEFAULT_CHUNK_BYTES, row_chunk

__all__ = [
    "as_dask_rows",
    "check_n_clusters",
    "check_sample_weight",
    "check_random_state",
    "check_param",
    "check_known_classes",
    "default_row_chunk",
    "DEFAULT_CHUNK_BYTES",
]

# Kept under the name this module has always exported; the rule itself lives in
# dclust.io.chunking, shared with the Zarr reader and writer.
default_row_chunk = row_chunk


def _shape_error(shape):
    hint = ""
    if len(shape) == 1:
        hint = (" Reshape your data: X.reshape(-1, 1) if it has one feature, X.reshape(1, -1) if "
                "it is one sample.")
    elif len(shape) == 0:
        hint = " Pass a table of samples, one row each."
    elif len(shape) > 2:
        hint = " Flatten the trailing axes into features with X.reshape(X.shape[0], -1)."
    return DclustValueError(
        f"X must be 2-D of shape (n_samples, n_features); got an array of shape {tuple(shape)}.{hint}"
    )


def _object_to_float(arr):
    """NumPy object arrays holding numbers (pandas often makes them) become float64."""
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise DclustTypeError(
            f"X has dtype 'object' holding values that are not numbers ({e}); dclust needs "
            "numbers. Convert or drop those columns first, for example X.astype('float32')."
        ) from None


def as_dask_rows(X, *, name="X"):
    """Return ``X`` as a row-chunked float dask array, or ``(ndarray, False)`` untouched.

    Parameters
    ----------
    X : array-like, dask array, zarr array, or path/URL of a Zarr array

    Returns
    -------
    X : numpy.ndarray or dask.array.Array
        NumPy input comes back as a float NumPy array (the caller decides where to put
        it); everything else as a dask array with whole rows in each chunk.
    """
    from .io.zarr_io import from_zarr_array, open_array

    if isinstance(X, (str, os.PathLike)):
        X = open_array(X)
    elif type(X).__module__.startswith("zarr"):
        X = from_zarr_array(X)
    if isinstance(X, da.Array):
        if X.ndim != 2:
            raise _shape_error(X.shape)
        check_dtype(X.dtype)
        if not any(np.isnan(c) for c in X.chunks[0]):
            _check_size(X.shape)
        if any(np.isnan(c) for c in X.chunks[0]):
            raise DclustValueError(
                f"{name} has unknown chunk sizes along rows; call {name}.compute_chunk_sizes() first."
            )
        if len(X.chunks[1]) > 1:
            raise DclustValueError(
                f"{name} is chunked along features (chunks[1]={X.chunks[1]}); dclust needs whole "
                f"rows per chunk. Rechunk with {name}.rechunk({{1: -1}})."
            )
        target = float_dtype(X.dtype)
        return X if X.dtype == target else X.astype(target)
    module = type(X).__module__
    if module.startswith("scipy.sparse") or module.split(".")[0] == "sparse":
        fmt = getattr(X, "format", None)
        kind = f"a sparse {fmt!r} matrix" if fmt else "a sparse array"
        raise DclustTypeError(
            f"X is {kind} of shape {tuple(X.shape)}; dclust works on dense data (sparse input is "
            "not supported). Densify it with X.toarray() if it fits in memory, or write it "
            "densely to a Zarr array."
        )
    if hasattr(X, "__cuda_array_interface__") or module.startswith("cupy"):
        raise DclustTypeError(
            "X is a CuPy array; pass a dask array of CuPy chunks or a NumPy array instead."
        )
    try:
        arr = np.asarray(X)
    except Exception as e:  # ragged lists and the like
        raise DclustValueError(f"X cannot be read as a 2-D numeric array: {e}") from None
    if arr.ndim != 2:
        raise _shape_error(arr.shape)
    if arr.dtype == object:
        arr = _object_to_float(arr)
    check_dtype(arr.dtype)
    _check_size(arr.shape)
    return arr.astype(float_dtype(arr.dtype), copy=False)


def _check_size(shape):
    if shape[0] == 0:
        raise DclustValueError(
            f"X has 0 sample(s) (shape={tuple(shape)}) while a minimum of 1 is required: clustering "
            "needs at least one row. Check that the data was read or filtered as intended."
        )
    if shape[1] == 0:
        raise DclustValueError(
            f"X has 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is required: each row "
            "needs at least one value. Check that the data was read as intended (a table of "
            "shape (n_samples, n_features))."
        )


def check_n_clusters(n_clusters, n_samples):
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral) or n_clusters < 1:
        raise DclustValueError(f"n_clusters={n_clusters!r} must be a positive integer.")
    if n_clusters > n_samples:
        raise DclustValueError(f"n_samples={n_samples} must be >= n_clusters={n_clusters}. "
                               "Lower n_clusters or pass more rows.")
    return int(n_clusters)


def check_sample_weight(sample_weight, n_samples):
    """Validate sample weights: ``None``, a scalar, or an array of ``n_samples``.

    NumPy weights are checked here; dask weights are checked inside the first pass.
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        if not np.isfinite(sample_weight) or sample_weight <= 0:
            raise DclustValueError(f"sample_weight={sample_weight!r} must be a positive number.")
        return None  # a constant weight does not change k-means
    if isinstance(sample_weight, da.Array):
        w = sample_weight
    else:
        w = np.asarray(sample_weight)
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise DclustValueError(
            f"sample_weight has shape {tuple(w.shape)}; expected ({n_samples},), one weight per row of X."
        )
    if w.dtype.kind not in "biuf":
        raise DclustTypeError(f"sample_weight has dtype {str(w.dtype)!r}; expected numbers.")
    if isinstance(w, np.ndarray):
        w = w.astype(np.float64)
        bad = ~(np.isfinite(w) & (w >= 0))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DclustValueError(
                f"sample_weight has {int(bad.sum()):,} negative or non-finite values (first at row "
                f"{first:,}: {float(w[first])!r}); weights must be finite and >= 0. Fix those "
                "weights, or drop their rows from X and sample_weight."
            )
        if not w.any():
            raise DclustValueError(
                "sample_weight is zero everywhere; at least one row needs a positive weight. "
                "Pass sample_weight=None to weigh every row equally."
            )
    else:
        w = w.astype(np.float64)
    return w


def check_random_state(random_state) -> int:
    """A 63-bit seed from ``None``, an int, a Generator or a RandomState."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**63 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise DclustValueError(f"random_state={random_state!r} must be a non-negative integer.")
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    raise DclustValueError(
        f"random_state={random_state!r} must be None, an integer, a numpy Generator or a RandomState."
    )


def check_param(name, value, *, kind=None, low=None, high=None, low_inclusive=True, options=None):
    """Check one hyper-parameter and return it, raising a uniform message otherwise."""
    if options is not None:
        if value not in options:
            listed = ", ".join(repr(o) for o in options)
            raise DclustValueError(f"{name}={value!r} is not valid; expected one of {listed}.")
        return value
    if kind is not None:
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise DclustValueError(f"{name}={value!r} must be of type {getattr(kind, '__name__', kind)}.")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        op = ">=" if low_inclusive else ">"
        raise DclustValueError(f"{name}={value!r} must be {op} {low}.")
    if high is not None and value > high:
        raise DclustValueError(f"{name}={value!r} must be <= {high}.")
    return value


def check_known_classes(y, n_samples, *, what="class", none_if_unlabelled=True):
    """Known classes per row (``-1``: unknown) as int64: NumPy (checked here) or a lazy
    dask array (a Zarr array or path is read lazily; its values are checked by the pass
    that reads it). ``None`` when it labels no row and ``none_if_unlabelled``.

    ``what`` names a value in messages ("class" for seeded k-means, "component" for a
    mixture).

    Raises
    ------
    DclustValueError
        ``y`` is not 1-D of ``n_samples`` values, not whole numbers, or holds values
        below -1 (NumPy input; dask input is checked by the first pass).
    """
    import dask.array as da

    if y is None:
        return None
    if isinstance(y, (str, os.PathLike)) or type(y).__module__.startswith("zarr"):
        y = da.from_zarr(y)
    if not isinstance(y, da.Array):
        y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n_samples:
        raise DclustValueError(
            f"y has shape {tuple(y.shape)}; expected ({n_samples},): the {what} of each row of X "
            "(an integer >= 0), or -1 where it is unknown."
        )
    if y.dtype.kind not in "biuf":
        raise DclustValueError(
            f"y has dtype {str(y.dtype)!r}; expected integers: the {what} of each row (>= 0), or "
            "-1 where it is unknown. Encode other class labels as integers first."
        )
    if isinstance(y, da.Array):
        if y.dtype.kind == "f":
            raise DclustValueError(
                f"y has dtype {str(y.dtype)!r}; a dask y must hold integers (the {what} of each "
                "row, or -1 where it is unknown). Convert it with y.astype('int64')."
            )
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            first = int(np.flatnonzero(~whole)[0])
            raise DclustValueError(
                f"y holds values that are not whole numbers (first at row {first:,}: "
                f"{y[first]!r}); y is the {what} of each row (>= 0), or -1 where it is unknown."
            )
    y = y.astype(np.int64)
    bad = np.flatnonzero(y < -1)
    if bad.size:
        raise DclustValueError(
            f"y has {bad.size:,} value(s) below -1 (first at row {int(bad[0]):,}: "
            f"{int(y[bad[0]])}); y holds the {what} of each row (an integer >= 0), or -1 where "
            "it is unknown."
        )
    return y if (y >= 0).any() or not none_if_unlabelled else None
