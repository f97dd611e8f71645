"""What every dclust estimator shares: parameters, repr, save/load, data placement."""

from __future__ import annotations

import inspect
import math

import dask.array as da
import numpy as np

from ..exceptions import DclustValueError, NotFittedError
from ..io.model import read_model, save_model
from ..runtime.client import get_client
from ..runtime.compute import cache_array, scatter_array
from ..validation import DEFAULT_CHUNK_BYTES, as_dask_rows, check_sample_weight

__all__ = ["DclustEstimator", "load", "register", "prepare_fit_data"]

_REGISTRY: dict[str, type] = {}


def register(cls):
    """Make ``cls`` loadable by :func:`load` under its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


class DclustEstimator:
    """scikit-learn's parameter protocol without depending on scikit-learn.

    Parameters are the keyword arguments of ``__init__``, stored unchanged as attributes
    of the same name (validated in ``fit``), so ``clone`` and grid searches work.
    """

    _fitted_arrays: tuple = ()
    _fitted_scalars: tuple = ()

    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(
            p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise DclustValueError(
                    f"Invalid parameter {key!r} for {type(self).__name__}; valid parameters are: "
                    f"{', '.join(valid)}."
                )
            setattr(self, key, value)
        return self

    def __repr__(self):
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        shown = []
        for name, value in self.get_params().items():
            default = defaults.get(name, inspect.Parameter.empty)
            same = default is not inspect.Parameter.empty and _same(value, default)
            if not same:
                shown.append(f"{name}={'array' if isinstance(value, np.ndarray) else repr(value)}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so importing it here adds no dependency.
        from sklearn.utils import Tags, TargetTags, TransformerTags

        tags = Tags(estimator_type="clusterer", target_tags=TargetTags(required=False))
        tags.transformer_tags = TransformerTags(preserves_dtype=["float64", "float32"])
        return tags

    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X) first."
            )

    # ---- persistence -------------------------------------------------------------
    def save(self, path, *, storage_options=None):
        """Save the fitted model to ``path`` (NPZ with JSON metadata; no pickle).

        The file is written under a temporary name and moved into place when complete.
        """
        self._check_fitted()
        params = {}
        for k, v in self.get_params().items():
            if isinstance(v, np.ndarray):
                continue  # an init array is not needed to use the model
            if isinstance(v, (np.random.Generator, np.random.RandomState)):
                v = None
            params[k] = v
        attributes = {k: getattr(self, k) for k in self._fitted_scalars if hasattr(self, k)}
        arrays = {k: getattr(self, k) for k in self._fitted_arrays if hasattr(self, k)}
        return save_model(path, type(self).__name__, params, attributes, arrays,
                          storage_options=storage_options)


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


def load(path, *, storage_options=None):
    """Load a model saved with ``save``.

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL of the model file.
    storage_options : dict, optional

    Returns
    -------
    estimator : a fitted dclust estimator (``KMeans``, ...).
    """
    from ..exceptions import ModelFormatError

    meta, arrays = read_model(path, storage_options=storage_options)
    name = meta.get("estimator")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ModelFormatError(
            f"{str(path)!r} holds a model of type {name!r}, which this dclust does not know; "
            f"known types: {', '.join(sorted(_REGISTRY))}."
        )
    valid = set(cls._get_param_names())
    est = cls(**{k: v for k, v in meta["params"].items() if k in valid})
    for k, v in meta.get("attributes", {}).items():
        setattr(est, k, v)
    for k, v in arrays.items():
        setattr(est, k, v)
    return est


def _numpy_row_chunk(X: np.ndarray) -> int:
    n, d = X.shape
    by_bytes = max(1, DEFAULT_CHUNK_BYTES // max(1, d * X.itemsize))
    try:
        threads = sum(get_client().nthreads().values())
    except Exception:  # pragma: no cover
        threads = 1
    # At least one chunk per worker thread once there is enough work to share.
    by_threads = max(1, math.ceil(n / max(1, min(threads, n // 20_000 or 1))))
    return int(min(by_bytes, by_threads, max(n, 1)))


def prepare_fit_data(X, sample_weight, cache):
    """Validate and place ``X`` and its weights for a fit.

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
            scatter_array(w, rows) if isinstance(w, np.ndarray) else w.rechunk((X_work.chunks[0],))
        )
        return X_work, w_work, X
    if w is not None:
        w = da.from_array(w, chunks=(X.chunks[0],)) if isinstance(w, np.ndarray) else w.rechunk((X.chunks[0],))
    X_work, (w_work,), _ = cache_array(X, cache, also=(w,))
    return X_work, w_work, X
