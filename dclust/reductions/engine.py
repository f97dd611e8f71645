"""The pass engine: one Dask graph per pass over a row-chunked array.

A pass applies one or more :class:`Aggregation` s to every row-chunk of ``X`` (each chunk
is read once, whatever the number of aggregations), merges the per-chunk statistics with
a tree of ``combine`` tasks of fan-in ``split_every`` and returns the merged statistics.
Besides the sample weights, a pass may read other row-aligned arrays (``aligned``: known
classes, responsibilities...); each chunk function finds their blocks for its rows in
``ctx.aligned``.
The tree's order is fixed by chunk index, so for a given chunking the result does not
depend on the number of workers or on which finished first.

Building a pass computes nothing; :func:`run_pass` submits it as exactly one computation.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from .._xp import to_host
from ..runtime.compute import compute_graph

__all__ = ["Aggregation", "ChunkContext", "align_rows", "build_pass", "run_pass", "row_offsets",
           "state_bytes"]

DEFAULT_SPLIT_EVERY = 8
# Chunks smaller than this are processed several to a task: a task costs the scheduler
# about a millisecond, so thousands of tiny chunks would otherwise cost more than the work.
MIN_TASK_BYTES = 16 * 2**20
# ... but never fewer tasks than this (when there are that many chunks), to keep workers busy.
MIN_TASKS = 16
# Aggregation state is written into each chunk task rather than held by a task of its own
# (see build_pass) while all those copies together stay under this many bytes.
INLINE_STATE_BYTES = 8 * 2**20


@dataclass(frozen=True)
class ChunkContext:
    """Where a chunk sits in ``X``: its index, first global row and number of rows.

    ``aligned`` maps the name of each row-aligned array the pass was given
    (``run_pass(..., aligned={"y": y})``) to its block for this chunk's rows.
    """

    block_id: int
    row_offset: int
    n_rows: int
    aligned: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregation:
    """A statistic as a monoid over row-chunks.

    Parameters
    ----------
    name : str
        Graph-layer name (``kmeans-lloyd``); keys are ``name-<token>``.
    chunk : callable
        ``chunk(X_block, w_block, ctx, *args) -> stats``. ``w_block`` is ``None`` without
        sample weights; ``ctx`` is a :class:`ChunkContext`. Must accept zero-row blocks
        (returning the identity).
    combine : callable
        ``combine(list_of_stats) -> stats``, associative.
    finalize : callable, optional
        ``finalize(stats) -> result``, run on the client.
    """

    name: str
    chunk: Callable[..., Any]
    combine: Callable[[list], Any]
    finalize: Callable[[Any], Any] | None = None
    args: tuple = field(default=())

    def bind(self, *args) -> "Aggregation":
        """The same aggregation with its per-pass state (centres, ...) attached."""
        return Aggregation(self.name, self.chunk, self.combine, self.finalize, args)


def row_offsets(chunks_rows) -> np.ndarray:
    """First global row of each chunk."""
    return np.concatenate([[0], np.cumsum(chunks_rows)[:-1]]).astype(np.int64)


def _run_chunk(block, w_block, block_id, row_offset, aggs, aligned=None):
    ctx = ChunkContext(block_id, row_offset, block.shape[0], aligned or {})
    # Statistics leave the device as soon as they are made: combines and the client then
    # only ever see small NumPy arrays, whichever device ran the kernel.
    return to_host({name: agg.chunk(block, w_block, ctx, *agg.args) for name, agg in aggs.items()})


class _Inline:
    """The pass's aggregations written into each task that needs them (an object Dask
    does not look inside for keys)."""

    __slots__ = ("aggs",)

    def __init__(self, aggs):
        self.aggs = aggs


def _aggs(state):
    return state.aggs if isinstance(state, _Inline) else state


def _combine_task(aggs, *parts):
    aggs = _aggs(aggs)
    return {name: agg.combine([p[name] for p in parts]) for name, agg in aggs.items()}


def _group_task(aggs, block_ids, offsets, has_weights, aligned_names, *blocks):
    """Run the kernels on consecutive chunks and merge them in chunk order.

    ``blocks`` holds the ``n`` chunks of ``X``, then (``has_weights``) their ``n`` weight
    blocks, then ``n`` blocks of each array named in ``aligned_names``, in that order.
    """
    aggs = _aggs(aggs)
    n = len(block_ids)
    weights = blocks[n : 2 * n] if has_weights else (None,) * n
    start = 2 * n if has_weights else n
    side = {name: blocks[start + i * n : start + (i + 1) * n]
            for i, name in enumerate(aligned_names)}
    parts = [
        _run_chunk(blocks[j], weights[j], block_ids[j], offsets[j], aggs,
                   {name: side[name][j] for name in aligned_names})
        for j in range(n)
    ]
    return parts[0] if n == 1 else _combine_task(aggs, *parts)


def group_size(chunks_rows, row_bytes) -> int:
    """Chunks per task: 1 for ordinary chunks, more for tiny ones (data-dependent only).

    The grouping depends on the chunking alone, never on the cluster, so results stay
    bit-identical whatever the number of workers.
    """
    n_chunks = len(chunks_rows)
    if n_chunks <= MIN_TASKS:
        return 1
    typical = float(np.median(chunks_rows)) * row_bytes
    by_bytes = int(np.ceil(MIN_TASK_BYTES / max(typical, 1.0)))
    by_tasks = int(np.ceil(n_chunks / MIN_TASKS))
    return max(1, min(by_bytes, by_tasks))


def align_rows(a, chunks_rows):
    """``a`` (NumPy or dask, 1-D or more) as a dask array with the row chunks
    ``chunks_rows`` and one chunk along every other axis."""
    if a.shape[0] != sum(chunks_rows):
        raise ValueError(f"a row-aligned array has {a.shape[0]} rows; X has {sum(chunks_rows)}.")
    chunks = (tuple(chunks_rows),) + tuple((int(s),) for s in a.shape[1:])
    if isinstance(a, da.Array):
        return a if a.chunks == chunks else a.rechunk(chunks)
    return da.from_array(np.asarray(a), chunks=chunks)


def build_pass(X, aggregations, *, sample_weight=None, aligned=None, split_every=None,
               name="dclust-pass"):
    """Build (and do not compute) the graph of one pass.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features), one chunk along features.
    aggregations : dict of str to Aggregation
        The statistics to compute in this pass, with their state bound.
    sample_weight : dask.array.Array of shape (n_samples,), optional
        Chunked like ``X``'s rows.
    aligned : dict of str to array, optional
        Other arrays with one row per row of ``X`` (NumPy or dask; rechunked to ``X``'s
        rows when they differ). Each chunk function gets its rows' blocks in
        ``ctx.aligned``, keyed like this dict.
    split_every : int, optional
        Fan-in of the combine tree (default 8).
    name : str
        Prefix of the graph's layer names.

    Returns
    -------
    graph : HighLevelGraph
    key : the key of the merged statistics (a dict keyed like ``aggregations``).
    """
    split_every = int(split_every or DEFAULT_SPLIT_EVERY)
    if split_every < 2:
        raise ValueError(f"split_every={split_every!r} must be >= 2.")
    token = uuid.uuid4().hex[:12]
    layer_name = f"{name}-{token}"
    aggregations = dict(aggregations)
    offsets = row_offsets(X.chunks[0])
    x_keys = [k for k in _flatten(X.__dask_keys__())]
    w_keys = None if sample_weight is None else list(_flatten(sample_weight.__dask_keys__()))
    aligned = {k: align_rows(a, X.chunks[0]) for k, a in (aligned or {}).items()}
    aligned_names = tuple(aligned)
    a_keys = [list(_flatten(a.__dask_keys__())) for a in aligned.values()]
    row_bytes = X.shape[1] * X.dtype.itemsize
    g = group_size(X.chunks[0], row_bytes)
    n_tasks = -(-len(x_keys) // g)
    if n_tasks * sum(state_bytes(a) for a in aggregations.values()) <= INLINE_STATE_BYTES:
        # Small state (the centres of a few hundred clusters) goes into every task: a
        # separate state task would cost each pass one more worker-scheduler round trip
        # before any chunk can start (~5-10 ms here).
        state = _Inline(aggregations)
        combine_state = _Inline({n: Aggregation(a.name, a.chunk, a.combine, a.finalize)
                                 for n, a in aggregations.items()})
        layer = {}
    else:
        state = combine_state = f"{layer_name}-state"
        layer = {state: aggregations}
    level = []
    for j, s in enumerate(range(0, len(x_keys), g)):
        ids = tuple(range(s, min(s + g, len(x_keys))))
        key = (layer_name, 0, j)
        deps = [x_keys[i] for i in ids]
        if w_keys is not None:
            deps += [w_keys[i] for i in ids]
        for keys in a_keys:
            deps += [keys[i] for i in ids]
        layer[key] = (_group_task, state, ids, tuple(int(offsets[i]) for i in ids),
                      w_keys is not None, aligned_names, *deps)
        level.append(key)
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for j in range(0, len(level), split_every):
            key = (layer_name, depth, j // split_every)
            layer[key] = (_combine_task, combine_state, *level[j : j + split_every])
            nxt.append(key)
        level = nxt
    deps = [X] if sample_weight is None else [X, sample_weight]
    deps += list(aligned.values())
    graph = HighLevelGraph.from_collections(layer_name, layer, dependencies=deps)
    return graph, level[0]


def state_bytes(agg: Aggregation) -> int:
    """Bytes of an aggregation's per-pass state, wherever it is held: the bound ``args``
    and the arguments of ``functools.partial`` chunk and combine callables."""
    return _state_bytes(agg.args) + _callable_bytes(agg.chunk) + _callable_bytes(agg.combine)


def _callable_bytes(fn) -> int:
    if isinstance(fn, functools.partial):
        return _state_bytes(fn.args) + _state_bytes(fn.keywords) + _callable_bytes(fn.func)
    if isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type)):
        return 0
    return _state_bytes(fn)  # a callable object: its fields are state


def _state_bytes(obj, depth=0) -> int:
    """Bytes of the arrays in ``obj`` (nested tuples, lists, dicts, dataclasses); unknown
    objects count as large, so that only state known to be small is inlined."""
    if obj is None or isinstance(obj, (bool, int, float, str, np.generic)):
        return 8
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if depth < 4 and isinstance(obj, (tuple, list)):
        return sum(_state_bytes(o, depth + 1) for o in obj)
    if depth < 4 and isinstance(obj, dict):
        return sum(_state_bytes(o, depth + 1) for o in obj.values())
    if depth < 4 and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(_state_bytes(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj))
    return INLINE_STATE_BYTES + 1


def _flatten(keys):
    for k in keys:
        if isinstance(k, list):
            yield from _flatten(k)
        else:
            yield k


def run_pass(X, aggregations, *, sample_weight=None, aligned=None, split_every=None,
             name="dclust-pass"):
    """Run one pass and return each aggregation's finalized result.

    Exactly one computation is submitted. Returns a dict keyed like ``aggregations``.
    ``aligned``: row-aligned arrays the chunk functions read, as in :func:`build_pass`.
    """
    if X.shape[0] == 0:
        raise ValueError("run_pass needs at least one row")
    graph, key = build_pass(
        X, aggregations, sample_weight=sample_weight, aligned=aligned, split_every=split_every,
        name=name
    )
    stats = compute_graph(graph, key)
    out = {}
    for agg_name, agg in aggregations.items():
        s = stats[agg_name]
        out[agg_name] = agg.finalize(s) if agg.finalize is not None else s
    return out
