"""Model files: one NPZ archive holding JSON metadata and the fitted arrays, no pickle.

Layout: ``__dclust__`` is a 0-d unicode array holding the JSON document
``{"format": "dclust-model", "format_version": 1, "kind": "model", "estimator": "KMeans", "params": {...},
"attributes": {...}, "arrays": [...], "dclust_version": "..."}``; every other member is a
fitted array named after its attribute (``cluster_centers_``). ``kind`` is ``"model"`` or
``"checkpoint"`` (the state of an unfinished fit); files without it are models. Files are loaded with
``allow_pickle=False`` and written atomically.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from .._version import __version__
from ..exceptions import ModelFormatError, StorageError
from .paths import atomic_output, is_url, local_path, redact

__all__ = ["save_model", "read_model", "FORMAT_VERSION"]

FORMAT = "dclust-model"
FORMAT_VERSION = 1
_META = "__dclust__"


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    return v


def _is_storage_options(name) -> bool:
    # Storage options hold credentials (keys, secrets, tokens): a model file, which is
    # shared and kept, never records them. Loading gives such a parameter its default
    # (None); pass storage options again where they are needed.
    return name == "storage_options" or str(name).endswith("_storage_options")


def save_model(path, estimator, params, attributes, arrays, *, storage_options=None, kind="model"):
    """Write a model file atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL.
    estimator : str
        Class name (``"KMeans"``).
    params : dict
        Constructor parameters (JSON-serialisable). A ``storage_options`` parameter is
        saved as ``None``: credentials are never written into a model file.
    attributes : dict
        Scalar fitted attributes.
    arrays : dict of str to ndarray
        Fitted arrays.
    kind : {"model", "checkpoint"}, default="model"
        What the file holds: a fitted model, or the state of an unfinished fit
        (:mod:`dclust.algorithms.checkpoint`), which ``dclust.load`` refuses.
    """
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "estimator": estimator,
        "dclust_version": __version__,
        "params": {k: _jsonable(None if _is_storage_options(k) else v) for k, v in params.items()},
        "attributes": {k: _jsonable(v) for k, v in attributes.items()},
        "arrays": sorted(arrays),
    }
    path = os.fspath(path)
    if not is_url(path) and os.path.isdir(local_path(path)):
        raise StorageError(
            f"Cannot save the model to {os.fspath(path)!r}: it is a folder. Pass a file path, "
            "for example 'model.npz'."
        )
    buf = io.BytesIO()
    np.savez(buf, **{_META: np.array(json.dumps(meta))}, **{k: np.asarray(v) for k, v in arrays.items()})
    data = buf.getvalue()
    with atomic_output(path, storage_options=storage_options) as tmp:
        if is_url(tmp):
            import fsspec

            with fsspec.open(tmp, "wb", **(storage_options or {})) as f:
                f.write(data)
        else:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    return path


def _folder_msg(shown):
    return (f"{shown} is a folder, not a dclust model file. Pass the path of the file "
            "written by est.save(path), for example 'model.npz'.")


def read_model(path, *, storage_options=None):
    """Read a model file; returns ``(meta, arrays)``.

    Raises
    ------
    StorageError
        The file does not exist or cannot be read.
    ModelFormatError
        The file is not a dclust model, or its format version is newer than this dclust.
    """
    path = os.fspath(path)
    shown = repr(path)
    try:
        if is_url(path):
            import fsspec

            with fsspec.open(path, "rb", **(storage_options or {})) as f:
                data = f.read()
        else:
            p = local_path(path)
            if os.path.isdir(p):
                raise ModelFormatError(_folder_msg(shown))
            with open(p, "rb") as f:
                data = f.read()
    except FileNotFoundError:
        raise StorageError(
            f"No model file at {shown}: the path does not exist. Check the path; models are "
            "written by est.save(path)."
        ) from None
    except PermissionError as e:
        raise StorageError(
            f"Cannot read the model file {shown}: {redact(e, storage_options)}."
        ) from None
    except IsADirectoryError:
        raise ModelFormatError(_folder_msg(shown)) from None
    not_model = ModelFormatError(
        f"{shown} is not a dclust model file (expected an NPZ archive with dclust metadata, "
        "as written by est.save(path)); was it written by another tool? Pass the path of a "
        "model saved by dclust."
    )
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):  # a lone .npy array
            raise not_model
        names = set(npz.files)
    except ModelFormatError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError, TypeError):
        raise not_model from None
    if _META not in names:
        raise not_model
    try:
        raw = npz[_META]
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise not_model
        meta = json.loads(str(raw))
    except ModelFormatError:
        raise
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile):
        raise not_model from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise not_model
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFormatError(
            f"{shown} has an invalid dclust model format version {version!r} (expected an "
            f"integer from 1 to {FORMAT_VERSION}); the file is damaged. Save the model again."
        )
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{shown} is a dclust model of format version {version!r}, which this dclust "
            f"({__version__}) cannot read (it reads versions 1 to {FORMAT_VERSION}). "
            "Upgrade dclust to load it."
        )
    damaged = (f"{shown} is a damaged dclust model file ({{}}); save the model again from a "
               "fitted estimator.")
    names_listed = meta.get("arrays", [])
    if (
        not isinstance(meta.get("estimator"), str)
        or not isinstance(meta.get("params", {}), dict)
        or not isinstance(meta.get("attributes", {}), dict)
        or not isinstance(names_listed, list)
        or not all(isinstance(n, str) for n in names_listed)
    ):
        raise ModelFormatError(damaged.format("its metadata is incomplete"))
    meta.setdefault("params", {})
    meta.setdefault("attributes", {})
    try:
        arrays = {name: npz[name] for name in names_listed}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ModelFormatError(damaged.format(f"{type(e).__name__}: {e}")) from None
    return meta, arrays
