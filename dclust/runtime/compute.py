"""Submitting graphs, placing data on the workers, and counting what was computed."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import dask.array as da
import numpy as np

from ..exceptions import ClusterConnectionError
from .client import get_client

__all__ = ["compute_graph", "compute_count", "cache_array", "scatter_array", "worker_memory",
           "group_size", "chunk_placement", "persist_like", "persisted_base", "aligned_cuts",
           "flatten_keys"]

_counter = itertools.count()
_count = 0

# Chunks smaller than this are processed several to a task: a task costs the scheduler
# about a millisecond, so thousands of tiny chunks would otherwise cost more than the work.
MIN_TASK_BYTES = 16 * 2**20
# ... but never fewer tasks than this (when there are that many chunks), to keep workers busy.
MIN_TASKS = 16
# The fan-in the placement aligns worker ranges to (the passes' default combine fan-in).
_PLACEMENT_FAN_IN = 8
# Where the chunks of each persisted array live: name -> Placement. Bounded: an entry is
# a few bytes per chunk, and arrays of finished fits are not asked for again.
_PLACEMENTS: OrderedDict = OrderedDict()
_PLACEMENTS_MAX = 64


def group_size(chunks_rows, row_bytes) -> int:
    """Chunks per task: 1 for ordinary chunks, more for tiny ones (data-dependent only).

    The grouping depends on the chunking alone, never on the cluster, so results stay
    bit-identical whatever the number of workers. It lives here, beside the placement,
    because persisting lines worker ranges up with these groups.
    """
    n_chunks = len(chunks_rows)
    if n_chunks <= MIN_TASKS:
        return 1
    typical = float(np.median(chunks_rows)) * row_bytes
    by_bytes = int(np.ceil(MIN_TASK_BYTES / max(typical, 1.0)))
    by_tasks = int(np.ceil(n_chunks / MIN_TASKS))
    return max(1, min(by_bytes, by_tasks))


def compute_count() -> int:
    """How many graphs dclust has submitted in this process (for tests and logs)."""
    return _count


# Dask's setting for the size above which a submitted graph draws a UserWarning.
_LARGE_GRAPH = "distributed.admin.large-graph-warning-threshold"


def compute_graph(graph, key, state_bytes=0):
    """Compute ``key`` of ``graph`` on the cluster and return its value (one submission).

    ``state_bytes``: bytes of pass state (centres and the like) the graph carries on
    purpose. They are written into the graph rather than scattered, so that a lost
    worker's tasks can be recomputed from the graph (scattered data cannot), and
    Dask's "Sending large graph" warning is raised by that much: at k=262,144 the
    centres alone are 64 MiB a pass, which is not the user's to fix. Anything else that
    makes the graph large (a NumPy array written into the user's own Dask array) still
    draws the warning.

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
        if state_bytes > 0:
            import dask
            from dask.utils import parse_bytes

            limit = parse_bytes(dask.config.get(_LARGE_GRAPH, "10MiB")) + int(state_bytes)
            with dask.config.set({_LARGE_GRAPH: limit}):
                return client.get(graph, key, sync=True)
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


def scatter_array(X: np.ndarray, row_chunk: int, *, like=None):
    """Place an in-memory array on the workers as a row-chunked, persisted dask array.

    Each chunk is a task whose value is embedded in the graph, so the scheduler keeps
    what it needs to send the chunk again: when a worker holding chunks dies, the
    scheduler re-creates them on the others and the fit goes on. (Data placed with
    ``client.scatter`` would live only in the workers' memory and be lost with them.)
    The price is one copy of ``X`` in the scheduler's memory for the array's lifetime.

    Each worker gets one contiguous range of chunks (see :func:`_place`), so that the
    passes can read a worker's chunks in a few tasks; ``like`` (a persisted array with
    the same row chunks) gives the ranges of that array instead, so that weights sit
    with their rows.
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
        return _persist_placed(client, [arr], like=like)[0]


class Placement:
    """Which worker holds each row chunk of a persisted array, and the workers' threads.

    ``owner[i]`` indexes ``workers``; ``nthreads[j]`` is worker ``j``'s thread count.
    """

    __slots__ = ("owner", "workers", "nthreads")

    def __init__(self, owner, workers, nthreads):
        self.owner = np.asarray(owner, dtype=np.int64)
        self.workers = tuple(workers)
        self.nthreads = tuple(int(t) for t in nthreads)


def _remember(name, placement):
    _PLACEMENTS[name] = placement
    _PLACEMENTS.move_to_end(name)
    while len(_PLACEMENTS) > _PLACEMENTS_MAX:
        _PLACEMENTS.popitem(last=False)


def aligned_cuts(n, weights, units=()):
    """Cut ``range(n)`` into ``len(weights)`` contiguous pieces sized like ``weights``.

    Each cut moves to the nearest multiple of the largest of ``units`` it can reach
    within a quarter of a piece, so that the pieces are made of whole groups and whole
    subtrees of the combine tree (fewer partial results per piece). Returns the
    ``len(weights) + 1`` bounds.
    """
    weights = np.asarray(weights, dtype=float)
    ideal = n * np.cumsum(weights) / weights.sum()
    bounds = [0]
    for q, c in enumerate(ideal[:-1]):
        slack = 0.25 * n * weights[q] / weights.sum()
        cut = int(round(c))
        for u in sorted((int(u) for u in units if u > 1), reverse=True):
            a = int(round(c / u)) * u
            if abs(a - c) <= slack and bounds[-1] < a < n:
                cut = a
                break
        bounds.append(min(max(cut, bounds[-1]), n))
    bounds.append(n)
    return bounds


def _place(n_chunks, row_bytes, chunks_rows, workers, nthreads):
    """Chunk -> worker index: contiguous ranges, one per worker, sized by its threads and
    aligned to the passes' task groups and subtrees."""
    g = group_size(chunks_rows, row_bytes)
    units = [g * _PLACEMENT_FAN_IN**k for k in range(8, -1, -1)]
    bounds = aligned_cuts(n_chunks, nthreads, units)
    owner = np.zeros(n_chunks, dtype=np.int64)
    for j in range(len(workers)):
        owner[bounds[j]:bounds[j + 1]] = j
    return owner


def _row_keys(arr):
    """One key per row chunk (the arrays dclust persists have one chunk along the rest)."""
    keys = list(flatten_keys(arr.__dask_keys__()))
    if len(keys) != len(arr.chunks[0]):
        return None
    return keys


def flatten_keys(keys):
    """The keys of a dask collection's nested ``__dask_keys__()`` lists, in order."""
    for k in keys:
        if isinstance(k, list):
            yield from flatten_keys(k)
        else:
            yield k


def _persist_placed(client, arrays, *, like=None):
    """Persist row-aligned arrays (same row chunks; ``None`` entries pass through) with
    each worker holding one contiguous range of their chunks.

    Each worker's chunks are submitted with a ``workers`` restriction that other workers
    may take over (``allow_other_workers``), so that the chunks of a lost worker are
    still recomputed elsewhere. The result is a persisted array like
    ``client.persist``'s (same keys, one layer of futures), and its placement is
    remembered for the passes (:func:`chunk_placement`).
    """
    from dask.highlevelgraph import HighLevelGraph

    real = [a for a in arrays if a is not None]
    if not real:
        return list(arrays)
    X = real[0]
    placement = None if like is None else chunk_placement(like)
    if placement is None or len(placement.owner) != len(X.chunks[0]):
        nthreads = client.nthreads()
        workers = sorted(nthreads)
        if not workers:  # pragma: no cover - no worker yet: the scheduler places them
            return [None if a is None else client.persist(a) for a in arrays]
        threads = [nthreads[w] for w in workers]
        row_bytes = int(np.prod(X.shape[1:], dtype=np.int64)) * X.dtype.itemsize
        placement = Placement(_place(len(X.chunks[0]), row_bytes, X.chunks[0], workers, threads),
                              workers, threads)
    out = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        keys = _row_keys(a)
        if keys is None:  # pragma: no cover - several chunks across columns
            out.append(client.persist(a))
            continue
        futures = {}
        for j, w in enumerate(placement.workers):
            mine = [keys[i] for i in np.flatnonzero(placement.owner == j)]
            if not mine:
                continue
            sub = a.__dask_graph__().cull(set(mine))
            futures.update(zip(mine, client.get(sub, mine, sync=False, workers=[w],
                                                 allow_other_workers=True)))
        layer = {k: futures[k] for k in keys}
        graph = HighLevelGraph.from_collections(a.name, layer, dependencies=())
        arr = da.Array(graph, a.name, a.chunks, meta=a._meta)
        _remember(a.name, placement)
        out.append(arr)
    return out


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
    # Aligned arrays go where X's rows go (one contiguous range of chunks per worker).
    out = _persist_placed(client, [X, *also])
    return out[0], tuple(out[1:]), True


def persist_like(a, X):
    """Persist ``a`` (row chunks like ``X``'s) with each chunk on the worker that holds
    ``X``'s (``X`` persisted, possibly cast with ``astype``), so that a pass reads both
    in the same task without moving either."""
    base = persisted_base(X)
    return _persist_placed(get_client(), [a], like=None if base is None else X)[0]


def persisted_base(X):
    """``(name, dtype)`` when ``X`` is a persisted array, or a persisted array cast with
    ``astype`` (a fit switched to float64): the chunks the passes read are then
    ``(name, i, ...)`` on the workers, to be cast to ``dtype``. ``None`` otherwise."""
    if _is_persisted(X):
        return X.name, None
    try:
        graph = X.__dask_graph__()
        layers = graph.layers
        if len(layers) != 2 or not X.name.startswith("astype-"):
            return None
        (base,) = graph.dependencies[X.name]
        layer = layers[base]
        first = next(iter(layer.values()), None)
        from distributed import Future

        if isinstance(first, Future) and len(layer) == len(X.chunks[0]):
            return base, np.dtype(X.dtype)
    except Exception:  # pragma: no cover - exotic graphs are read as they are
        return None
    return None


def chunk_placement(X):
    """Where each row chunk of the persisted array ``X`` lives (a :class:`Placement`),
    or ``None`` when ``X`` is not persisted.

    Asked of the scheduler once per array (after its chunks are in memory) and
    remembered: the passes then pin their tasks to the same workers every time, so no
    chunk moves after it is placed. Arrays persisted by dclust are known from the start.
    """
    base = persisted_base(X)
    if base is None:
        return None
    name = base[0]
    if name in _PLACEMENTS:
        _PLACEMENTS.move_to_end(name)
        return _PLACEMENTS[name]
    from distributed import wait

    client = get_client()
    layer = X.__dask_graph__().layers[name]
    keys = [k for k in flatten_keys(X.__dask_keys__())]
    keys = [(name,) + tuple(k[1:]) for k in keys]
    futures = [layer[k] for k in keys]
    wait(futures)
    who = client.who_has(futures)
    nthreads = client.nthreads()
    workers = sorted(nthreads)
    index = {w: j for j, w in enumerate(workers)}
    owner = []
    for k in keys:
        holders = sorted(who.get(k) or who.get(str(k)) or [])
        owner.append(index.get(holders[0], 0) if holders else 0)
    placement = Placement(owner, workers, [nthreads[w] for w in workers])
    _remember(name, placement)
    return placement


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

