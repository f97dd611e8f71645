"""Checkpoints of iterative fits: save the state after every pass, resume after a crash.

A fit over a terabyte runs for hours on machines that come and go. A driver that takes a
:class:`Checkpoint` saves its small state (centres, counters, the best run so far) after
every iteration, and a later fit with ``resume=True`` continues from the last saved
iteration. Because every pass is a deterministic function of the state and the data
(fixed reduction order, randomness seeded by ``(seed, chunk)``), the resumed fit gives
the same result, bit for bit, as one that was never interrupted.

A checkpoint is refused when it was written for other data or other parameters; the
error says which differ. The data are identified by a *fingerprint*: shape, dtype, the
row chunking (it fixes the reduction order, hence the last bits of the result) and
whether there are sample weights; on resume, the statistics the first pass computes
anyway (count, per-feature mean and sum of squared deviations, largest magnitude) are
compared with the saved ones, which catches data rewritten in place at no extra cost.

File format: a dclust model file (:mod:`dclust.io.model`: an NPZ archive holding JSON
metadata and arrays, no pickle) whose metadata has ``"kind": "checkpoint"``. It is
written under a temporary name and renamed into place, so a crash while saving leaves
the previous checkpoint. The metadata's ``attributes`` hold::

    {"checkpoint": {"algorithm": "KMeans", "version": 1,
                    "data": {"shape": [n, d], "dtype": "float32",
                             "row_chunks": "40 chunks of 25000 rows", "weighted": false},
                    "state": {...JSON scalars of the algorithm's state...}}}

and the arrays are the algorithm's state arrays plus ``stats:<name>`` for the data
statistics. This module knows nothing about k-means: other drivers (k-medoids,
Sinkhorn) save their own state the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os

import numpy as np

from ..exceptions import DclustValueError, ModelFormatError

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointState",
    "data_fingerprint",
    "describe_chunks",
    "CHECKPOINT_VERSION",
    "STATS_RTOL",
    "array_digest",
]

CHECKPOINT_VERSION = 1
_STATS = "stats:"
# Data statistics agree to the last bits when the data and chunking are the same;
# the tolerance only keeps a different BLAS or device from refusing a valid checkpoint.
STATS_RTOL = 1e-9


class CheckpointError(DclustValueError):
    """A checkpoint does not belong to this fit (other data, parameters or algorithm)."""


def data_fingerprint(X, sample_weight=None) -> dict:
    """What identifies the data of a fit before any pass: shape, dtype, chunking, weights.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features), row-chunked
    sample_weight : dask.array.Array or None

    Returns
    -------
    dict (JSON-serialisable)
    """
    return {
        "shape": [int(s) for s in X.shape],
        "dtype": str(np.dtype(X.dtype)),
        "row_chunks": describe_chunks(X.chunks[0]) if hasattr(X, "chunks") else "in memory",
        "weighted": sample_weight is not None,
    }


def describe_chunks(rows) -> str:
    """Row chunks in a few words: ``"8 chunks of 2500 rows"``, or a digest when irregular."""
    rows = tuple(int(c) for c in rows)
    if len(rows) == 1:
        return f"1 chunk of {rows[0]} rows"
    if len(set(rows[:-1])) == 1 and rows[-1] <= rows[0]:
        last = "" if rows[-1] == rows[0] else f", the last of {rows[-1]}"
        return f"{len(rows)} chunks of {rows[0]} rows{last}"
    digest = hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:16]
    return f"{len(rows)} irregular chunks (sha1 {digest})"


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        v = float(v)
        return v if math.isfinite(v) else repr(v)  # JSON has no inf/nan
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    return v


def _unjson(v):
    if isinstance(v, dict):
        return {k: _unjson(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unjson(x) for x in v]
    if v in ("inf", "-inf", "nan"):
        return float(v)
    return v


def _shown(v):
    if isinstance(v, float):
        return repr(v)
    return json.dumps(v) if isinstance(v, (list, dict)) else repr(v)


def _differences(saved: dict, now: dict) -> list:
    """``"name=<saved> in the checkpoint, <now> now"`` for every key that differs."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key, "<not set>"), now.get(key, "<not set>")
        if a != b and not (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
            out.append(f"{key}={_shown(a)} in the checkpoint, {_shown(b)} now")
    return out


class CheckpointState:
    """The last saved state of a fit, as read back from a checkpoint.

    Attributes
    ----------
    state : dict
        The algorithm's JSON scalars.
    arrays : dict of str to ndarray
        The algorithm's state arrays.
    stats : dict of str to ndarray
        The data statistics of the interrupted fit (see :meth:`Checkpoint.check_stats`).
    params : dict
        The parameters it was written with.
    """

    def __init__(self, state, arrays, stats, params):
        self.state = state
        self.arrays = arrays
        self.stats = stats
        self.params = params

    def __repr__(self):
        return f"CheckpointState(state={self.state!r}, arrays={sorted(self.arrays)})"


class Checkpoint:
    """Where a fit saves its state after every iteration, and reads it back to resume.

    Parameters
    ----------
    path : str or os.PathLike
        Local path or fsspec URL of the checkpoint file (``.npz``).
    algorithm : str
        The estimator's name (``"KMeans"``); a checkpoint of another algorithm is refused.
    params : dict
        The parameters that determine the result (JSON scalars, strings, or
        ``"sha1:..."`` digests of arrays); any difference refuses the checkpoint.
    data : dict
        :func:`data_fingerprint` of the data the fit runs on.
    storage_options : dict, optional
        For fsspec URLs.

    Examples
    --------
    >>> ck = Checkpoint("fit.ckpt.npz", "KMeans", {"n_clusters": 8}, data_fingerprint(X))  # doctest: +SKIP
    >>> saved = ck.load()          # None when there is no checkpoint yet  # doctest: +SKIP
    >>> ck.save({"n_iter": 3}, {"centers": C}, stats={"mean": mu})          # doctest: +SKIP
    """

    def __init__(self, path, algorithm, params, data, *, storage_options=None):
        self.path = os.fspath(path)
        self.algorithm = algorithm
        self.params = _jsonable(dict(params))
        self.data = _jsonable(dict(data))
        self.storage_options = storage_options

    def __repr__(self):
        return f"Checkpoint({self.path!r}, {self.algorithm!r})"

    # ---- writing -----------------------------------------------------------------
    def save(self, state: dict, arrays: dict, *, stats: dict | None = None) -> None:
        """Replace the checkpoint with this state, atomically (write new, then rename).

        Parameters
        ----------
        state : dict
            JSON scalars (ints, floats, strings, bools, None, lists, dicts).
        arrays : dict of str to ndarray
        stats : dict of str to ndarray or float, optional
            The data statistics to check a resumed fit's data against.
        """
        from .model import save_model

        stored = {k: np.asarray(v) for k, v in arrays.items()}
        for k, v in (stats or {}).items():
            stored[_STATS + k] = np.asarray(v, dtype=np.float64)
        attributes = {"checkpoint": {
            "algorithm": self.algorithm,
            "version": CHECKPOINT_VERSION,
            "data": self.data,
            "state": _jsonable(state),
        }}
        save_model(self.path, self.algorithm, self.params, attributes, stored,
                   storage_options=self.storage_options, kind="checkpoint")

    # ---- reading -----------------------------------------------------------------
    def exists(self) -> bool:
        from .paths import exists

        return exists(self.path, self.storage_options)

    def saved_seed(self, key="random_state"):
        """The seed recorded in the checkpoint (``None`` without a readable checkpoint).

        A fit started with ``random_state=None`` drew its seed; resuming it with
        ``random_state=None`` again must use that seed, not a new one.
        """
        from .model import read_model

        if not self.exists():
            return None
        try:
            meta, _ = read_model(self.path, storage_options=self.storage_options)
        except Exception:  # load() reports what is wrong with the file
            return None
        seed = meta.get("params", {}).get(key)
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    def load(self, *, params=None) -> CheckpointState | None:
        """The saved state, or ``None`` when there is no checkpoint at ``path`` yet.

        Parameters
        ----------
        params : dict, optional
            Parameters to compare with instead of ``self.params`` (for example with a
            seed taken from the checkpoint).

        Raises
        ------
        CheckpointError
            The file is a checkpoint of another algorithm, or for other data or
            parameters (the message lists what differs).
        ModelFormatError
            The file is not a dclust checkpoint.
        """
        from .model import read_model

        if not self.exists():
            return None
        shown = repr(self.path)
        meta, arrays = read_model(self.path, storage_options=self.storage_options)
        if meta.get("kind") != "checkpoint":
            raise ModelFormatError(
                f"{shown} is a dclust model, not a checkpoint; pass the checkpoint file of an "
                "interrupted fit (checkpoint=PATH), or another path to start a new one."
            )
        info = meta.get("attributes", {}).get("checkpoint")
        if not isinstance(info, dict) or not isinstance(info.get("state"), dict):
            raise ModelFormatError(f"{shown} is a damaged dclust checkpoint (its state is missing); "
                                   "delete it and start the fit again.")
        version = info.get("version")
        if not isinstance(version, int) or version > CHECKPOINT_VERSION:
            raise ModelFormatError(
                f"{shown} is a dclust checkpoint of version {version!r}, which this dclust cannot "
                f"resume (it reads versions 1 to {CHECKPOINT_VERSION}). Resume with the dclust "
                "that wrote it, or start afresh."
            )
        if info.get("algorithm") != self.algorithm:
            raise CheckpointError(
                f"{shown} is a checkpoint of {info.get('algorithm')!r}, not of {self.algorithm!r}; "
                "pass the checkpoint of this fit, or another path to start a new one."
            )
        fix = ("Resume with the data and parameters it was written for, or start afresh "
               "with resume=False (CLI: without --resume, with --overwrite).")
        diff = _differences(_unjson(info.get("data", {})), _unjson(self.data))
        if diff:
            raise CheckpointError(
                f"The checkpoint {shown} was written for different data: {'; '.join(diff)}. {fix}"
            )
        now = self.params if params is None else _jsonable(dict(params))
        diff = _differences(_unjson(meta.get("params", {})), _unjson(now))
        if diff:
            raise CheckpointError(
                f"The checkpoint {shown} was written with different parameters: {'; '.join(diff)}. "
                f"{fix}"
            )
        stats = {k[len(_STATS):]: v for k, v in arrays.items() if k.startswith(_STATS)}
        rest = {k: v for k, v in arrays.items() if not k.startswith(_STATS)}
        return CheckpointState(_unjson(info["state"]), rest, stats, _unjson(meta.get("params", {})))

    def check_stats(self, saved: dict, now: dict) -> None:
        """Refuse to go on when the data statistics differ from the checkpoint's.

        Parameters
        ----------
        saved : dict of str to ndarray
            ``CheckpointState.stats``.
        now : dict of str to array-like
            The same statistics from the resumed fit's first pass.

        Raises
        ------
        CheckpointError
            Naming the statistics that differ.
        """
        diff = []
        for key in sorted(saved):
            if key not in now:
                continue
            a = np.asarray(saved[key], dtype=np.float64)
            b = np.asarray(now[key], dtype=np.float64)
            if a.shape != b.shape or not np.allclose(a, b, rtol=STATS_RTOL, atol=0.0, equal_nan=True):
                diff.append(key)
        if diff:
            raise CheckpointError(
                f"The checkpoint {self.path!r} was written for different data: the data's "
                f"statistics ({', '.join(diff)}) differ from those the interrupted fit computed, "
                "although shape, dtype and chunking agree (was the data rewritten?). Start afresh "
                "with resume=False (CLI: without --resume, with --overwrite)."
            )


def array_digest(a) -> str:
    """A short, stable digest of an array parameter (an init array), for fingerprints."""
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
    h = hashlib.sha1(str(a.shape).encode())
    h.update(a.tobytes())
    return "sha1:" + h.hexdigest()
