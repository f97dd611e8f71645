"""What every dclust estimator shares: parameters, repr, save/load, data placement."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from sklearn.base import BaseEstimator

from ..exceptions import DclustValueError, NotFittedError
from ..io.model import read_model, save_model
from ..runtime.client import get_client
from ..runtime.compute import cache_array, scatter_array
from ..validation import DEFAULT_CHUNK_BYTES, as_dask_rows, check_sample_weight

__all__ = ["DclustEstimator", "load", "register", "prepare_fit_data", "require_finite_block"]

_REGISTRY: dict[str, type] = {}
# Modules whose estimators load() must know even when the user has not imported them
# (dclust imports its estimators lazily).
_ESTIMATOR_MODULES = ("dclust.estimators.kmeans", "dclust.estimators.kmedoids",
                      "dclust.estimators.balanced_kmeans")


def require_finite_block(X, block_info=None):
    """Refuse NaN or inf rows of a block being labelled or transformed (``map_blocks``):
    a label or distance computed from them would be noise."""
    from ..exceptions import DataError
    from ..kernels.datastats import count_nonfinite

    n_bad, row = count_nonfinite(X)
    if n_bad:
        where = f"row {row:,}"
        if block_info and None not in block_info:
            loc = block_info[0]
            where = f"chunk {loc['chunk-location'][0]}, row {loc['array-location'][0][0] + row:,}"
        raise DataError(
            f"X contains {n_bad:,} non-finite values, NaN or inf (first in {where}). "
            "Clean the data before predicting."
        )


def register(cls):
    """Make ``cls`` loadable by :func:`load` under its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


class DclustEstimator(BaseEstimator):
    """What every dclust estimator shares on top of scikit-learn's ``BaseEstimator``.

    Parameters are the keyword arguments of ``__init__``, stored unchanged and validated
    in ``fit``, so ``clone``, pipelines and grid searches work as with scikit-learn.
    """

    _fitted_arrays: tuple = ()
    _fitted_scalars: tuple = ()

    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X) first."
            )

    def _check_X(self, X):
        """``X`` as a row-chunked array with the fitted number of features."""
        self._check_fitted()
        X = as_dask_rows(X)
        if X.shape[1] != self.cluster_centers_.shape[1]:
            raise DclustValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.cluster_centers_.shape[1]} features as input (the number it was fitted on)."
            )
        return X

    # ---- persistence -------------------------------------------------------------
    def save(self, path, *, storage_options=None):
        """Save the fitted model to ``path`` (NPZ with JSON metadata; no pickle).

        The file is written under a temporary name and moved into place when complete.
        """
        self._check_fitted()
        params = {}
        array_params = {}
        for k, v in self.get_params().items():
            if isinstance(v, np.ndarray):
                array_params[f"param:{k}"] = v  # e.g. an init array: kept with the arrays
                continue
            if isinstance(v, (np.random.Generator, np.random.RandomState)):
                v = None
            params[k] = v
        attributes = {k: getattr(self, k) for k in self._fitted_scalars if hasattr(self, k)}
        arrays = {k: getattr(self, k) for k in self._fitted_arrays if hasattr(self, k)}
        arrays.update(array_params)
        return save_model(path, type(self).__name__, params, attributes, arrays,
                          storage_options=storage_options)


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

    import importlib

    meta, arrays = read_model(path, storage_options=storage_options)
    if meta.get("kind", "model") != "model":
        raise ModelFormatError(
            f"{str(path)!r} is a dclust {meta.get('kind')!r} file, not a fitted model: a checkpoint "
            "holds the state of an unfinished fit. Resume the fit with checkpoint=PATH, "
            "resume=True (CLI: --checkpoint PATH --resume), then load the model it saves."
        )
    for module in _ESTIMATOR_MODULES:
        importlib.import_module(module)
    name = meta.get("estimator")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ModelFormatError(
            f"{str(path)!r} holds a model of type {name!r}, which this dclust does not know; "
            f"known types: {', '.join(sorted(_REGISTRY))}."
        )
    valid = set(cls._get_param_names())
    params = {k: v for k, v in meta["params"].items() if k in valid}
    params.update({k[len("param:"):]: v for k, v in arrays.items()
                   if k.startswith("param:") and k[len("param:"):] in valid})
    est = cls(**params)
    for k, v in meta.get("attributes", {}).items():
        setattr(est, k, v)
    for k, v in arrays.items():
        if not k.startswith("param:"):
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
            scatter_array(w, rows) if isinstance(w, np.ndarray) else w.rechunk((X_work.chunks[0],))
        )
        return _on_device(X_work, w_work, cache, device) + (X,)
    if w is not None:
        w = da.from_array(w, chunks=(X.chunks[0],)) if isinstance(w, np.ndarray) else w.rechunk((X.chunks[0],))
    X_work, (w_work,), _ = cache_array(X, cache, also=(w,))
    return _on_device(X_work, w_work, cache, device) + (X,)


def _on_device(X, w, cache, device):
    from ..runtime.device import gpu_memory, resolve_device, to_device

    if resolve_device(device) != "cuda":
        return X, w
    X_dev, w_dev = to_device(X, "cuda"), to_device(w, "cuda")
    if cache == "memory" or (cache == "auto" and 2 * X.nbytes <= gpu_memory()):
        from distributed import wait

        X_dev, w_dev = get_client().persist([X_dev, w_dev]) if w is not None else \
            (get_client().persist(X_dev), None)
        wait([X_dev] if w_dev is None else [X_dev, w_dev])
    return X_dev, w_dev
