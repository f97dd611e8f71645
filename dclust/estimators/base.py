"""What every dclust estimator shares: parameters, repr, save/load, data placement."""

from __future__ import annotations

import os

import numpy as np

from sklearn.base import BaseEstimator

from ..exceptions import DclustValueError, NotFittedError
from ..io.model import read_model, save_model
from ..runtime.placement import prepare_fit_data
from ..validation import as_dask_rows

__all__ = ["DclustEstimator", "load", "register", "map_rows", "known_classes_given", "prepare_fit_data", "require_finite_block"]

_REGISTRY: dict[str, type] = {}
# Modules whose estimators load() must know even when the user has not imported them
# (dclust imports its estimators lazily).
_ESTIMATOR_MODULES = ("dclust.estimators.kmeans", "dclust.estimators.kmedoids",
                      "dclust.estimators.balanced_kmeans", "dclust.estimators.gmm",
                      "dclust.estimators.minibatch_kmeans",
                      "dclust.estimators.bisecting_kmeans",
                      "dclust.estimators.quantizers")


def require_finite_block(X, block_info=None):
    """Refuse NaN or inf rows of a block being labelled or transformed (``map_blocks``):
    a label or distance computed from them would be noise."""
    from ..exceptions import DataError
    from ..kernels.datastats import count_nonfinite

    n_bad, row = count_nonfinite(X)
    if n_bad:
        where = f"row {row:,}"
        if block_info and 0 in block_info:
            loc = block_info[0]
            where = f"chunk {loc['chunk-location'][0]}, row {loc['array-location'][0][0] + row:,}"
        raise DataError(
            f"X contains {n_bad:,} non-finite values, NaN or inf (first in {where}). "
            "Clean the data before predicting."
        )


def map_rows(X, fn, *args, n_out=None, dtype=np.int32):
    """Apply a per-block function to the rows of ``X``: directly on a NumPy array, lazily
    (``map_blocks``) on a dask array.

    ``fn(block, *args, block_info=None)`` returns one value per row (``n_out=None``) or
    ``n_out`` values per row.
    """
    if isinstance(X, np.ndarray):
        return fn(X, *args)
    if n_out is None:
        return X.map_blocks(fn, *args, drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype))
    return X.map_blocks(fn, *args, chunks=(X.chunks[0], (n_out,)), dtype=dtype,
                        meta=np.empty((0, 0), dtype))


SEMI_SUPERVISED_DOC = (
    "use fit's y as known classes (-1: unknown row): True always; 'auto' when y is a lazy "
    "(dask or Zarr) array or marks unknown rows with -1; False never")


def known_classes_given(mode, y):
    """Whether ``fit``'s ``y`` holds known classes to respect (``semi_supervised=mode``).

    ``"auto"`` reads a NumPy ``y`` as known classes only when it marks some rows unknown
    (-1): scikit-learn's pipelines and model selection pass a fully labelled target to
    every step's ``fit``, which a clusterer must ignore, as scikit-learn's do. A lazy
    (dask or Zarr) ``y`` is never such a target, so it is used.
    """
    if y is None or mode is False:
        return False
    if mode is True:
        return True
    if hasattr(y, "dask") or type(y).__module__.startswith("zarr") or isinstance(y, (str, os.PathLike)):
        return True
    try:
        arr = np.asarray(y)
    except Exception:
        return True  # let the label checks say what is wrong with it
    return arr.dtype.kind in "iuf" and bool((arr == -1).any())


def _feature_names(X):
    """Column names of a DataFrame whose columns are all strings, else ``None``."""
    cols = getattr(X, "columns", None)
    if cols is None or not hasattr(X, "iloc"):
        return None
    names = np.asarray(list(cols), dtype=object)
    if len(names) and all(isinstance(n, str) for n in names):
        return names
    return None


def register(cls):
    """Make ``cls`` loadable by :func:`load` under its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


class DclustEstimator(BaseEstimator):
    """What every dclust estimator shares on top of scikit-learn's ``BaseEstimator``.

    Parameters are the keyword arguments of ``__init__``, stored unchanged and validated
    in ``fit`` against the class's declarations (``_params``, a tuple of
    :class:`dclust.params.Param`), so ``clone``, pipelines and grid searches work as
    with scikit-learn, and the CLI's options come from the same declarations.
    """

    _params: tuple = ()
    _fitted_arrays: tuple = ()
    _fitted_scalars: tuple = ()

    def _check_params(self):
        """Validate the declared parameters (and ``device``) before any work."""
        from ..params import check_params
        from ..runtime.device import check_device

        check_params(self)
        if "device" in self._get_param_names():
            check_device(self.device)

    def _session(self, X, sample_weight=None, **kw):
        """A :class:`~dclust.algorithms.session.FitSession` with this estimator's runtime
        parameters (cache, device, split_every, progress, checkpoint, resume)."""
        from ..algorithms.session import FitSession

        self._remember_feature_names(X)
        get = self.get_params(deep=False)
        opts = dict(algorithm=type(self).__name__, cache=get.get("cache", "auto"),
                    device=get.get("device", "cpu"), split_every=get.get("split_every"),
                    progress=bool(get.get("progress", False)) or bool(get.get("verbose", 0)),
                    checkpoint=get.get("checkpoint"), resume=bool(get.get("resume", False)),
                    storage_options=get.get("storage_options"))
        opts.update(kw)
        return FitSession(X, sample_weight, **opts)

    def _scoring_session(self, X, sample_weight=None):
        """A session over new data for ``score``: streamed (not persisted), its NaN and
        inf found in the scoring pass itself, no checkpoint."""
        from ..algorithms.session import FitSession

        X = self._check_X(X)
        get = self.get_params(deep=False)
        session = FitSession(X, sample_weight, algorithm=type(self).__name__, cache="none",
                             device=get.get("device", "cpu"), split_every=get.get("split_every"))
        return session.open(random_state=0)

    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X) first."
            )

    # ---- feature names (pandas input) ----------------------------------------------
    def _remember_feature_names(self, X):
        names = _feature_names(X)
        if names is None:
            self.__dict__.pop("feature_names_in_", None)
        else:
            self.feature_names_in_ = names

    def _check_feature_names(self, X):
        """Refuse columns other than, or in another order than, those seen in ``fit``:
        predicting on reordered columns would give wrong labels without a word."""
        import warnings

        fitted = getattr(self, "feature_names_in_", None)
        names = _feature_names(X)
        name = type(self).__name__
        if fitted is None and names is None:
            return
        if fitted is None:
            warnings.warn(f"X has feature names, but {name} was fitted without feature names",
                          UserWarning, stacklevel=4)
            return
        if names is None:
            warnings.warn(f"X does not have valid feature names, but {name} was fitted with "
                          "feature names", UserWarning, stacklevel=4)
            return
        if len(fitted) == len(names) and (fitted == names).all():
            return
        unseen = [n for n in names if n not in set(fitted)]
        missing = [n for n in fitted if n not in set(names)]
        msg = "The feature names should match those that were passed during fit.\n"
        if unseen:
            msg += "Feature names unseen at fit time:\n" + "".join(f"- {n}\n" for n in unseen[:5])
        if missing:
            msg += "Feature names seen at fit time, yet now missing:\n" + \
                "".join(f"- {n}\n" for n in missing[:5])
        if not unseen and not missing:
            msg += ("Feature names must be in the same order as they were in fit: select them "
                    "in that order, for example X[est.feature_names_in_].\n")
        raise DclustValueError(msg)

    def _check_X(self, X):
        """``X`` as a row-chunked array with the fitted number of features."""
        self._check_fitted()
        self._check_feature_names(X)
        X = as_dask_rows(X)
        n_fitted = self.cluster_centers_.shape[1]
        if X.shape[1] != n_fitted:
            raise DclustValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{n_fitted} features as input (the number it was fitted on)."
            )
        return X

    # ---- output names (set_output) -------------------------------------------------
    @property
    def _n_features_out(self):
        return self.cluster_centers_.shape[0]

    def get_feature_names_out(self, input_features=None):
        """Names of the ``transform`` outputs: ``"<estimator>0"``, ``"<estimator>1"``, ...

        Parameters
        ----------
        input_features : array-like of str or None
            Ignored, as in scikit-learn's clusterers (checked against
            ``feature_names_in_`` when given).

        Returns
        -------
        ndarray of str objects, one per cluster.
        """
        self._check_fitted()
        if input_features is not None:
            fitted = getattr(self, "feature_names_in_", None)
            given = np.asarray(input_features, dtype=object)
            if fitted is not None and (len(given) != len(fitted) or (given != fitted).any()):
                raise DclustValueError("input_features is not equal to feature_names_in_.")
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self._n_features_out)], dtype=object)

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
        if getattr(self, "feature_names_in_", None) is not None:
            attributes["feature_names_in_"] = [str(n) for n in self.feature_names_in_]
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
        if k == "feature_names_in_":
            v = np.asarray(v, dtype=object)
        setattr(est, k, v)
    for k, v in arrays.items():
        if not k.startswith("param:"):
            setattr(est, k, v)
    return est
