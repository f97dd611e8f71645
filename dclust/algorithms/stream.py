"""Following a Zarr array that grows along its first axis, and appending to one.

A writer process appends rows (:func:`append_rows`); :func:`stream_fit` polls the
array, hands every new row once to the estimator's ``partial_fit`` in batches, and
saves the model after every update. The model file carries ``stream_position_``, the
rows consumed, so a restarted ``stream_fit`` continues exactly where the last saved
update ended: every row is used once, whether the follower was killed before or
after saving (an update not saved is redone, from the same model).

Which rows have landed. zarr resizes an array before writing the new chunks, so a
reader that trusts the shape can read rows not written yet (the fill value).
:func:`append_rows` therefore records the rows fully written in the attribute
``dclust_committed_rows`` after writing them, and :func:`stream_fit` reads no further.
For arrays written by other tools (no such attribute) it takes the rows whose shape
has stayed the same for one poll.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..exceptions import DclustValueError

__all__ = ["stream_fit", "append_rows", "COMMITTED_ATTR"]

COMMITTED_ATTR = "dclust_committed_rows"


def _open(path, storage_options=None, mode="r"):
    import zarr

    from ..io.paths import make_store

    store = make_store(path, storage_options=storage_options, read_only=(mode == "r"))
    return zarr.open_array(store, mode=mode)


def append_rows(path, rows, *, chunk_rows=None, storage_options=None):
    """Append ``rows`` to the 2-D Zarr array at ``path`` (created if missing) and mark
    them committed for :func:`stream_fit`.

    Parameters
    ----------
    path : str or os.PathLike
    rows : ndarray of shape (n_rows, n_features)
    chunk_rows : int, optional
        Rows per stored chunk when the array is created (default ``len(rows)``).

    Returns
    -------
    int
        The array's rows after the append.
    """
    import zarr

    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise DclustValueError(f"rows must be 2-D; got shape {rows.shape}.")
    if not os.path.exists(os.path.join(str(path), "zarr.json")):
        z = zarr.create_array(str(path), shape=(0, rows.shape[1]),
                              chunks=(int(chunk_rows or max(len(rows), 1)), rows.shape[1]),
                              dtype=rows.dtype)
    else:
        z = zarr.open_array(str(path), mode="r+")
    z.append(rows, axis=0)
    n = int(z.shape[0])
    z.attrs[COMMITTED_ATTR] = n  # after the chunks are written
    return n


def _landed(path, storage_options, last_shape):
    """``(rows that can be read, shape seen)``; a half-written metadata file reads as
    nothing new."""
    try:
        z = _open(path, storage_options)
        shape = int(z.shape[0])
        committed = z.attrs.get(COMMITTED_ATTR)
    except Exception:  # metadata being rewritten by the writer: try at the next poll
        return None, last_shape
    if committed is not None:
        return min(int(committed), shape), shape
    return min(shape, last_shape), shape


def stream_fit(estimator, path, *, poll=1.0, checkpoint=None, batch_size=None, idle_timeout=None,
               max_rows=None, storage_options=None, on_update=None):
    """Update ``estimator`` with the rows appended to a Zarr array as they land.

    Parameters
    ----------
    estimator : MiniBatchKMeans or BalancedKMeans (anything with ``partial_fit``)
        Fitted or not; replaced by the model in ``checkpoint`` when that file exists.
    path : str or os.PathLike
        The Zarr array (rows along the first axis) another process appends to.
    poll : float, default=1.0
        Seconds between looks at the array's length.
    checkpoint : str or os.PathLike, optional
        Model file saved (atomically) after every update, with the rows consumed; when it
        exists at the start, the fit continues from it.
    batch_size : int, optional
        Rows per update (default: the estimator's ``batch_size``, else 1024).
    idle_timeout : float, optional
        Return after this many seconds without new rows (default: follow forever).
    max_rows : int, optional
        Return once the model has consumed this many rows of the array.
    storage_options : dict, optional
    on_update : callable, optional
        ``on_update(estimator, start, stop)`` after each update (rows ``start:stop``).

    Returns
    -------
    estimator
        The updated model; ``stream_position_`` is the rows consumed.

    Examples
    --------
    >>> mbk = dclust.MiniBatchKMeans(16, random_state=0)                    # doctest: +SKIP
    >>> dclust.stream_fit(mbk, "events.zarr", poll=5, checkpoint="m.npz")  # doctest: +SKIP
    """
    if not (isinstance(poll, (int, float)) and poll >= 0):
        raise DclustValueError(f"poll={poll!r} must be a number of seconds >= 0.")
    if batch_size is None:
        batch_size = getattr(estimator, "batch_size", 1024)
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise DclustValueError(f"batch_size={batch_size!r} must be a positive integer.")
    if checkpoint is not None and os.path.exists(str(checkpoint)):
        from ..estimators.base import load

        saved = load(checkpoint)
        if type(saved) is not type(estimator):
            raise DclustValueError(
                f"checkpoint {str(checkpoint)!r} holds a {type(saved).__name__}, not a "
                f"{type(estimator).__name__}; pass another checkpoint path or the same "
                "estimator type.")
        estimator = saved
    position = int(getattr(estimator, "stream_position_", 0) or 0)
    last_shape, idle_since = 0, time.monotonic()
    while max_rows is None or position < max_rows:
        avail, last_shape = _landed(path, storage_options, last_shape)
        if avail is not None and max_rows is not None:
            avail = min(avail, int(max_rows))
        if avail is None or avail <= position:
            if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                break
            time.sleep(poll)
            continue
        z = _open(path, storage_options)
        while position < avail:
            stop = min(position + int(batch_size), avail)
            estimator.partial_fit(np.asarray(z[position:stop]))
            estimator.stream_position_ = stop
            if checkpoint is not None:
                estimator.save(checkpoint)
            if on_update is not None:
                on_update(estimator, position, stop)
            position = stop
        idle_since = time.monotonic()
    return estimator
