"""Submitting graphs, placing data on the workers, and counting what was computed."""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np

from ..exceptions import ClusterConnectionError
from .client import get_client

__all__ = ["compute_graph", "compute_count", "cache_array", "scatter_array", "worker_memory"]

_counter = itertools.count()
_count = 0


def compute_count() -> int:
    """How many graphs dclust has submitted in this process (for tests and logs)."""
    return _count


def compute_graph(graph, key):
    """Compute ``key`` of ``graph`` on the cluster and return its value (one submission).

    Raises
    ------
    ClusterConnectionError
        The connection to the scheduler was lost while the graph ran (the scheduler
        stopped, or the network between it and this client failed). Distributed cancels
        the client's futures when that happens; this turns that into an error that says
        so, instead of a bare ``CancelledError`` or a wait for results that never come.
    """
    global _count
    client = get_client()
    _count += 1
    try:
        return client.get(graph, key, sync=True)
    except BaseException as e:
        lost = _connection_lost(client, e)
        if lost is None:
            raise
        raise ClusterConnectionError(lost) from None


def _scheduler_address(client) -> str:
    try:
        return str(client.scheduler.address)
    except Exception:  # pragma: no cover - a client that never connected
        return "?"


def _connection_lost(client, exc):
    """The message for ``exc`` if it means the scheduler connection was lost, else ``None``."""
    from concurrent.futures import CancelledError

    from distributed.client import ClosedClientError
    from distributed.comm import CommClosedError

    from ..exceptions import DclustError

    if isinstance(exc, DclustError):
        return None  # raised by dclust's own code inside a task: already says what is wrong
    reason = getattr(exc, "reason", None)
    status = getattr(client, "status", "closed")
    lost = (
        (isinstance(exc, CancelledError)
         and (reason == "scheduler-connection-lost" or status != "running"))
        or isinstance(exc, ClosedClientError)
        or (isinstance(exc, (CommClosedError, OSError, TimeoutError)) and status != "running")
    )
    if not lost:
        return None
    return (
        f"Lost the connection to the Dask scheduler at {_scheduler_address(client)!r} while a "
        f"pass was running (client status {status!r}: {type(exc).__name__}). The scheduler "
        "stopped or the network between it and this machine failed; the results of this pass "
        "are lost and outputs being written were not moved into place. Check the scheduler "
        "(its log, `dask scheduler` still running, the network), then run the fit again."
    )


def worker_memory(client=None) -> int:
    """Sum of the workers' memory limits in bytes (0 when unknown or unlimited)."""
    client = client or get_client()
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    limits = [w.get("memory_limit") or 0 for w in workers]
    return int(sum(limits))


def scatter_array(X: np.ndarray, row_chunk: int):
    """Place an in-memory array on the workers as a row-chunked, persisted dask array.

    Each chunk is a task whose value is embedded in the graph, so the scheduler keeps
    what it needs to send the chunk again: when a worker holding chunks dies, the
    scheduler re-creates them on the others and the fit goes on. (Data placed with
    ``client.scatter`` would live only in the workers' memory and be lost with them.)
    The price is one copy of ``X`` in the scheduler's memory for the array's lifetime.
    """
    import warnings

    client = get_client()
    n = X.shape[0]
    bounds = list(range(0, n, row_chunk)) or [0]
    chunks = (tuple(min(row_chunk, n - s) for s in bounds),) + tuple((s,) for s in X.shape[1:])
    name = f"dclust-numpy-{next(_counter)}-{id(X):x}"  # named: no hashing of the whole array
    arr = da.from_array(X, chunks=chunks, name=name)
    with warnings.catch_warnings():
        # The data travels with this one graph on purpose (see above).
        warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
        return client.persist(arr)


def cache_array(X, cache: str, *, also=()):
    """Persist ``X`` (and aligned arrays in ``also``) on the workers when ``cache`` asks.

    ``cache="auto"`` persists when ``X`` takes at most half the workers' memory, and
    otherwise leaves it to be streamed from its source on every pass.

    Returns
    -------
    X, also, persisted : the (possibly persisted) arrays and whether they were persisted.
    """
    if cache == "none" or _is_persisted(X):
        return X, tuple(also), _is_persisted(X)
    if cache == "auto":
        budget = worker_memory()
        if budget and X.nbytes > budget / 2:
            return X, tuple(also), False
    global _count
    client = get_client()
    _count += 1
    out = client.persist([X, *[a for a in also if a is not None]])
    X_p = out[0]
    rest = iter(out[1:])
    also_p = tuple(next(rest) if a is not None else None for a in also)
    return X_p, also_p, True


def _is_persisted(X) -> bool:
    from distributed import Future

    graph = X.__dask_graph__()
    if hasattr(X, "_dclust_futures"):
        return True
    try:
        layers = graph.layers if hasattr(graph, "layers") else {None: graph}
        if len(layers) != 1:
            return False
        layer = next(iter(layers.values()))
        first = next(iter(layer.values()), None)
        return isinstance(first, Future)
    except Exception:  # pragma: no cover - exotic graphs count as not persisted
        return False

