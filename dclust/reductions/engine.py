"""The pass engine: one Dask graph per pass over a row-chunked array.

A pass applies one or more :class:`Aggregation` s to every row-chunk of ``X`` (each chunk
is read once, whatever the number of aggregations), merges the per-chunk statistics with
a tree of ``combine`` tasks of fan-in ``split_every`` and returns the merged statistics.
Besides the sample weights, a pass may read other row-aligned arrays (``aligned``: known
classes, responsibilities...); each chunk function finds their blocks for its rows in
``ctx.aligned``.
The tree's order is fixed by chunk index, so for a given chunking the result does not
depend on the number of workers or on which finished first.

When the data is persisted on the workers the pass is *fused*: one task per worker
thread reads all of that thread's chunks and returns the partial results of the
largest subtrees of that same fixed tree it holds whole; a few tasks complete the tree.
The arithmetic, and so every bit of the result, is the per-chunk graph's; only the
number of tasks changes (see :func:`build_pass`). When every chunk sits on one worker,
:func:`run_pass` and :func:`run_chain` go further: the pass, or the chain, is one task
that runs the threads' work on threads of its own.

Building a pass computes nothing; :func:`run_pass` submits it as exactly one computation.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import types
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from .._xp import to_host
from ..runtime.compute import (chunk_placement, compute_graph, flatten_keys, group_size,
                               persisted_base)

__all__ = ["Aggregation", "ChunkContext", "FUSE_ENV", "align_rows", "build_pass",
           "fusion_enabled", "row_offsets", "run_chain", "run_pass", "state_bytes"]

DEFAULT_SPLIT_EVERY = 8
# ``DCLUST_FUSE=0`` builds the per-chunk graph even for persisted data (to compare them).
FUSE_ENV = "DCLUST_FUSE"
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
    return state.aggs if isinstance(state, (_Inline, _Stepped)) else state


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


def align_rows(a, chunks_rows):
    """``a`` (NumPy or dask, 1-D or more) as a dask array with the row chunks
    ``chunks_rows`` and one chunk along every other axis."""
    if a.shape[0] != sum(chunks_rows):
        raise ValueError(f"a row-aligned array has {a.shape[0]} rows; X has {sum(chunks_rows)}.")
    chunks = (tuple(chunks_rows),) + tuple((int(s),) for s in a.shape[1:])
    if isinstance(a, da.Array):
        return a if a.chunks == chunks else a.rechunk(chunks)
    return da.from_array(np.asarray(a), chunks=chunks)


def fusion_enabled(fuse=None) -> bool:
    """Whether passes over persisted data are fused: ``fuse`` when given, else the
    environment switch ``DCLUST_FUSE`` (anything but ``"0"``, or unset, means yes)."""
    if fuse is not None:
        return bool(fuse)
    return os.environ.get(FUSE_ENV, "1") != "0"


def build_pass(X, aggregations, *, sample_weight=None, aligned=None, split_every=None,
               name="dclust-pass", fuse=None, state_key=None):
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
    fuse : bool, optional
        Fuse the pass when the data is persisted (default: :func:`fusion_enabled`).
    state_key : key, optional
        The key of a task of another layer whose value holds the aggregations with
        their state bound, when that state is computed on the cluster (by the previous
        pass of a :func:`run_chain`); ``aggregations`` then only gives their names and
        functions, and the caller adds that layer as a dependency.

    Returns
    -------
    graph : HighLevelGraph
    key : the key of the merged statistics (a dict keyed like ``aggregations``).

    Notes
    -----
    The per-chunk graph has one task per *leaf* (``group_size`` consecutive chunks,
    merged in chunk order), then levels of ``combine`` tasks of fan-in ``split_every``
    over consecutive nodes. When ``X``, the weights and the aligned arrays are all
    persisted, the fused graph computes that same tree with fewer tasks: each worker
    thread gets one task, pinned to the worker holding its chunks, that computes its
    leaves and, inside the task, every node of the tree all of whose leaves it holds;
    it returns the maximal such nodes. One task per remaining node (a node whose
    leaves sit with several threads) combines its children, in the same order. Every
    node is the same function of the same inputs in the same order as in the per-chunk
    graph, so the result is bit-identical to it, whatever the placement.
    """
    split_every = int(split_every or DEFAULT_SPLIT_EVERY)
    if split_every < 2:
        raise ValueError(f"split_every={split_every!r} must be >= 2.")
    token = uuid.uuid4().hex[:12]
    layer_name = f"{name}-{token}"
    aggregations = dict(aggregations)
    aligned = {k: align_rows(a, X.chunks[0]) for k, a in (aligned or {}).items()}
    row_bytes = X.shape[1] * X.dtype.itemsize
    g = group_size(X.chunks[0], row_bytes)
    if fusion_enabled(fuse):
        plan = _fused_plan(X, sample_weight, aligned, g, split_every)
        if plan is not None:
            return _build_fused(plan, X, sample_weight, aligned, aggregations, layer_name,
                                state_key)
    offsets = row_offsets(X.chunks[0])
    x_keys = [k for k in flatten_keys(X.__dask_keys__())]
    w_keys = None if sample_weight is None else list(flatten_keys(sample_weight.__dask_keys__()))
    aligned_names = tuple(aligned)
    a_keys = [list(flatten_keys(a.__dask_keys__())) for a in aligned.values()]
    n_tasks = -(-len(x_keys) // g)
    state, combine_state, layer = _state(aggregations, n_tasks, layer_name, state_key)
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


def _state(aggregations, n_tasks, layer_name, state_key=None):
    """How the tasks get the aggregations: written into each (small state), as the key
    of one state task, or as ``state_key``; and the state-free copy the combine tasks
    get."""
    if state_key is not None:
        return state_key, state_key, {}
    if n_tasks * _aggs_bytes(aggregations) <= INLINE_STATE_BYTES:
        # Small state (the centres of a few hundred clusters) goes into every task: a
        # separate state task would cost each pass one more worker-scheduler round trip
        # before any chunk can start (~5-10 ms here).
        state = _Inline(aggregations)
        combine_state = _Inline({n: Aggregation(a.name, a.chunk, a.combine, a.finalize)
                                 for n, a in aggregations.items()})
        return state, combine_state, {}
    state = f"{layer_name}-state"
    return state, state, {state: aggregations}


# ---- fused passes over persisted data -----------------------------------------------
class _Tree:
    """The fixed combine tree over ``m`` leaves: level 0 holds the leaves, level ``i``
    node ``j`` combines level ``i - 1`` nodes ``j * s`` ... ``(j + 1) * s - 1``; the
    top level has one node (the root; a lone leaf is its own root)."""

    def __init__(self, m, s):
        sizes = [m]
        while sizes[-1] > 1:
            sizes.append(-(-sizes[-1] // s))
        self.sizes, self.s = tuple(sizes), s
        self.root = (len(sizes) - 1, 0)

    def children(self, i, j):
        return range(j * self.s, min((j + 1) * self.s, self.sizes[i - 1]))


class _Spec:
    """What one fused task computes (an object Dask does not look inside for keys).

    ``ranges``: ``(first_leaf, end_leaf, first_row)`` runs of consecutive leaves whose
    chunks the task's blocks hold in order; ``nodes``: the tree nodes it returns.
    """

    __slots__ = ("tree", "g", "n_chunks", "ranges", "nodes", "direct", "has_weights",
                 "aligned_names", "dtype")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


class _Plan:
    """A fused pass's shape, the same for every pass over the same persisted arrays."""

    __slots__ = ("tree", "g", "threads", "upper", "root_thread", "base", "dtype", "args")


_PLANS: dict = {}
_PLANS_MAX = 32


def _fused_plan(X, w, aligned, g, s):
    """The fused pass's plan when every array the pass reads is persisted, else ``None``.

    Cached per persisted arrays, grouping and fan-in: the placement it follows is fixed
    once the arrays are placed, so each pass pins its tasks to the same workers.
    """
    base = persisted_base(X)
    if base is None or X.ndim != 2 or X.numblocks[1] != 1:
        return None
    others = ([] if w is None else [w]) + list(aligned.values())
    if any(persisted_base(a) is None or persisted_base(a)[1] is not None for a in others):
        return None
    placement = chunk_placement(X)
    if placement is None or len(placement.owner) != len(X.chunks[0]):
        return None
    key = (base[0], base[1], tuple(a.name for a in others), g, s, id(placement))
    plan = _PLANS.get(key)
    if plan is None:
        plan = _make_plan(placement, X.chunks[0], g, s)
        plan.base, plan.dtype = base
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = plan
    return plan


def _make_plan(placement, chunks_rows, g, s):
    n = len(chunks_rows)
    m = -(-n // g)
    tree = _Tree(m, s)
    owner = placement.owner
    if g == 1:
        leaf_owner = owner.copy()
    else:  # a leaf goes to the worker holding most of its chunks
        leaf_owner = np.array([np.bincount(owner[j * g:(j + 1) * g]).argmax() for j in range(m)])
    # Each worker's leaves, cut into one run per thread at subtree boundaries.
    units = [s**k for k in range(len(tree.sizes) - 1, 0, -1)]
    threads = []  # (worker index, sorted leaf ids)
    for wi, nt in enumerate(placement.nthreads):
        leaves = np.flatnonzero(leaf_owner == wi)
        if not len(leaves):
            continue
        nt = max(1, min(int(nt), len(leaves)))
        cuts = [0]
        for q in range(1, nt):
            pos = q * len(leaves) // nt
            cut = pos
            for u in units:
                a = int(np.searchsorted(leaves, int(round(leaves[pos] / u)) * u))
                if abs(a - pos) <= len(leaves) / (4 * nt) and cuts[-1] < a < len(leaves):
                    cut = a
                    break
            cuts.append(max(cut, cuts[-1]))
        cuts.append(len(leaves))
        for q in range(nt):
            if cuts[q + 1] > cuts[q]:
                threads.append((wi, leaves[cuts[q]:cuts[q + 1]]))
    # owner thread of every node, -1 where its leaves sit with several threads.
    tid = np.full(m, -1, dtype=np.int64)
    for t, (_, leaves) in enumerate(threads):
        tid[leaves] = t
    levels = [tid]
    for i in range(1, len(tree.sizes)):
        prev = levels[-1]
        pad = (-len(prev)) % s
        block = np.concatenate([prev, np.full(pad, prev[-1])]).reshape(-1, s) if pad else \
            prev.reshape(-1, s)
        # A short last node only has real children; padding with its last child keeps it.
        same = (block == block[:, :1]).all(axis=1)
        levels.append(np.where(same, block[:, 0], -1))
    plan = _Plan()
    plan.tree, plan.g, plan.args = tree, g, {}
    top = len(tree.sizes) - 1
    maximal = [[] for _ in threads]
    for i in range(top + 1):
        cur = levels[i]
        parent = levels[i + 1] if i < top else None
        for j in np.flatnonzero(cur >= 0):
            if parent is None or parent[j // s] < 0:
                maximal[cur[j]].append((i, int(j)))
    plan.root_thread = int(levels[top][0]) if levels[top][0] >= 0 else None
    offsets = row_offsets(chunks_rows)
    plan.threads = []
    for t, (wi, leaves) in enumerate(threads):
        breaks = np.flatnonzero(np.diff(leaves) != 1) + 1
        ranges = []
        for run in np.split(leaves, breaks):
            first, end = int(run[0]), int(run[-1]) + 1
            ranges.append((first, end, int(offsets[first * g])))
        chunk_ids = [c for a, b, _ in ranges for c in range(a * g, min(b * g, n))]
        nodes = tuple(sorted(maximal[t], key=lambda nd: nd[1] * s ** nd[0]))
        plan.threads.append((placement.workers[wi], tuple(ranges), chunk_ids, nodes))
    # The nodes no thread holds whole, bottom-up: (node, children as (thread, node) or
    # (None, node) for another such node).
    plan.upper = []
    for i in range(1, top + 1):
        for j in np.flatnonzero(levels[i] < 0):
            kids = []
            for c in tree.children(i, int(j)):
                t = levels[i - 1][c]
                kids.append((int(t), (i - 1, c)) if t >= 0 else (None, (i - 1, c)))
            plan.upper.append(((i, int(j)), tuple(kids)))
    return plan


def _input_layers(plan, X, w, aligned):
    """The graph layers a fused pass reads (the persisted arrays), their dependencies,
    and their names."""
    layers, deps = {}, {}
    for coll in ([] if w is None else [w]) + list(aligned.values()):
        g_ = coll.__dask_graph__()
        layers.update(g_.layers)
        deps.update(g_.dependencies)
    layers[plan.base] = X.__dask_graph__().layers[plan.base]
    deps[plan.base] = set()
    reads = {plan.base, *([] if w is None else [w.name]), *(a.name for a in aligned.values())}
    return layers, deps, reads


def _thread_tasks(plan, X, w, aligned):
    """``(worker, spec, argument keys)`` of each worker thread's fused task; the keys of
    the other arrays' chunks are ``(name, chunk, 0, ...)``, a zero per axis past rows."""
    others = ([] if w is None else [w.name]) + [a.name for a in aligned.values()]
    tails = [(0,) * (coll.ndim - 1) for coll in ([] if w is None else [w]) + list(aligned.values())]
    n_chunks = len(X.chunks[0])
    out = []
    for t, (worker, ranges, chunk_ids, nodes) in enumerate(plan.threads):
        spec = _Spec(tree=plan.tree, g=plan.g, n_chunks=n_chunks, ranges=ranges, nodes=nodes,
                     direct=plan.root_thread == t, has_weights=w is not None,
                     aligned_names=tuple(aligned), dtype=plan.dtype)
        args = plan.args.get((t, tuple(others)))
        if args is None:  # the same keys every pass: made once (50,000 keys cost ~10 ms)
            args = [(plan.base, c, 0) for c in chunk_ids]
            for nm, tail in zip(others, tails):
                args += [(nm, c, *tail) for c in chunk_ids]
            plan.args[(t, tuple(others))] = args = tuple(args)
        out.append((worker, spec, args))
    return out


def _build_fused(plan, X, w, aligned, aggregations, layer_name, state_key=None):
    from dask.highlevelgraph import MaterializedLayer

    state, combine_state, state_layer = _state(aggregations, len(plan.threads), layer_name,
                                               state_key)
    layers, deps, reads = _input_layers(plan, X, w, aligned)
    if state_layer:
        layers[state] = MaterializedLayer(state_layer)
        deps[state] = set()
        reads.add(state)
    by_worker = {}
    thread_keys = []
    for t, (worker, spec, args) in enumerate(_thread_tasks(plan, X, w, aligned)):
        key = (f"{layer_name}-fused", t)
        by_worker.setdefault(worker, {})[key] = (_fused_task, state, spec, *args)
        thread_keys.append(key)
    for i, (worker, tasks) in enumerate(by_worker.items()):
        lname = f"{layer_name}-w{i}"
        # Pinned to the worker holding the chunks; another may take over if it is lost.
        layers[lname] = MaterializedLayer(
            tasks, annotations={"workers": [worker], "allow_other_workers": True})
        deps[lname] = set(reads)
    upper = {}
    for (i, j), kids in plan.upper:
        picks, args = [], []
        for t, node in kids:
            if t is None:
                args.append((layer_name, node[0], node[1]))
                picks.append(None)
            else:
                args.append(thread_keys[t])
                picks.append(node)
        upper[(layer_name, i, j)] = (_upper_task, combine_state, _Picks(tuple(picks)), *args)
    if plan.root_thread is not None:
        root = thread_keys[plan.root_thread]
    else:
        root = (layer_name, *plan.tree.root)
    layers[layer_name] = MaterializedLayer(upper)
    deps[layer_name] = {f"{layer_name}-w{i}" for i in range(len(by_worker))} | \
        ({state} if state_layer else set())
    return HighLevelGraph(layers, deps), root


def _fused_task(aggs, spec, *blocks):
    """One worker thread's share of a pass: its leaves, and the tree nodes it holds
    whole, each computed exactly as the per-chunk graph computes it."""
    aggs = _aggs(aggs)
    tree, n_chunks, g = spec.tree, spec.n_chunks, spec.g
    n = len(blocks) // (1 + spec.has_weights + len(spec.aligned_names))
    xs = blocks[:n]
    ws = blocks[n:2 * n] if spec.has_weights else None
    start = 2 * n if spec.has_weights else n
    side = {nm: blocks[start + i * n:start + (i + 1) * n]
            for i, nm in enumerate(spec.aligned_names)}
    # Local position and first row of every chunk of this task.
    where = {}
    pos = 0
    for first, end, row in spec.ranges:
        for c in range(first * g, min(end * g, n_chunks)):
            where[c] = (pos, row)
            row += xs[pos].shape[0]
            pos += 1

    def leaf(j):
        parts = []
        for c in range(j * g, min((j + 1) * g, n_chunks)):
            p, row = where[c]
            block = xs[p] if spec.dtype is None else xs[p].astype(spec.dtype)
            parts.append(_run_chunk(block, None if ws is None else ws[p], c, row, aggs,
                                    {nm: side[nm][p] for nm in spec.aligned_names}))
        return parts[0] if len(parts) == 1 else _combine_task(aggs, *parts)

    def node(i, j):
        if i == 0:
            return leaf(j)
        return _combine_task(aggs, *[node(i - 1, c) for c in tree.children(i, j)])

    if spec.direct:
        return node(*tree.root)
    return {nd: node(*nd) for nd in spec.nodes}


class _Picks:
    """Which node each argument of an upper task is (``None``: the argument itself)."""

    __slots__ = ("picks",)

    def __init__(self, picks):
        self.picks = picks


def _upper_task(aggs, picks, *parts):
    """A tree node whose leaves sit with several threads: its children, picked from the
    fused tasks' results, combined in order."""
    return _combine_task(aggs, *[p if k is None else p[k] for p, k in zip(parts, picks.picks)])


def state_bytes(agg: Aggregation) -> int:
    """Bytes of an aggregation's per-pass state, wherever it is held: the bound ``args``
    and the arguments of ``functools.partial`` chunk and combine callables."""
    return _state_bytes(agg.args) + _callable_bytes(agg.chunk) + _callable_bytes(agg.combine)


def _aggs_bytes(aggregations) -> int:
    return sum(state_bytes(a) for a in aggregations.values())


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



class _Value:
    """A value written into a task as it is (an object Dask does not look inside)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class _Stepped:
    """A chain's state after one pass, and the next pass's aggregations bound to it
    (``None`` after the last pass): what the next pass's tasks read."""

    __slots__ = ("state", "aggs")

    def __init__(self, state, aggs):
        self.state, self.aggs = state, aggs


def _chain_step(step, finalizers, make_aggs, last, state, root_fn, *root_args):
    """Combine a pass's root, update the state and bind the next pass's aggregations,
    in one task: each task between two passes is a scheduler round trip (~5 ms)."""
    state = state.value if isinstance(state, _Value) else state.state
    stats = root_fn(*root_args)
    res = {name: (fin(stats[name]) if fin is not None else stats[name])
           for name, fin in finalizers.items()}
    state = step(state, res)
    return _Stepped(state, None if last else make_aggs(state))


def _identity(x):
    return x


def _chain_collect(*states):
    return [s.state for s in states]


def _take_root(graph, root):
    """The root's task, taken out of ``graph`` when it is a combine node (it then runs
    inside the step task); ``(_identity, root)`` when the root is a chunk or fused task."""
    from dask.highlevelgraph import MaterializedLayer

    for lname, layer in graph.layers.items():
        if isinstance(layer, MaterializedLayer) and root in layer.mapping:
            task = layer.mapping[root]
            if isinstance(task, tuple) and task and task[0] in (_combine_task, _upper_task):
                rest = {k: v for k, v in layer.mapping.items() if k != root}
                graph.layers[lname] = MaterializedLayer(rest, annotations=layer.annotations)
                return task
            break
    return (_identity, root)


class _Local:
    """What one task running a pass or a chain needs of a fused plan: each thread's spec
    and how many of the task's arguments are its blocks, the upper nodes, and the root."""

    __slots__ = ("specs", "counts", "upper", "root_thread", "root")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


def _local_pool(n):
    """A process-wide pool of ``n`` threads for the one-task passes."""
    with _POOLS_LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="dclust-pass")
    return pool


def _local_parts(layout, blocks):
    parts, pos = [], 0
    for c in layout.counts:
        parts.append(blocks[pos:pos + c])
        pos += c
    return parts, (_local_pool(len(parts)) if len(parts) > 1 else None)


def _local_stats(aggs, layout, parts, pool):
    """One pass's merged statistics on one worker: the fused tasks' work on a thread
    each, then the upper nodes, in the order the fused graph runs them (same bits)."""
    if pool is None:
        results = [_fused_task(aggs, layout.specs[0], *parts[0])]
    else:
        results = list(pool.map(lambda t: _fused_task(aggs, layout.specs[t], *parts[t]),
                                range(len(parts))))
    nodes = {}
    for node, kids in layout.upper:
        nodes[node] = _combine_task(
            aggs, *[nodes[nd] if t is None else results[t][nd] for t, nd in kids])
    return results[layout.root_thread] if layout.root_thread is not None else \
        nodes[layout.root]


def _local_pass(aggs, layout, *blocks):
    """A fused pass in one task, on the worker holding every chunk."""
    parts, pool = _local_parts(layout, blocks)
    return _local_stats(_aggs(aggs), layout, parts, pool)


def _local_chain(step, make_aggs, state, n_passes, layout, *blocks):
    """A chain of passes in one task, on the worker holding every chunk: each pass as
    :func:`_local_pass`, then the step, as the chained graph runs them (same bits)."""
    state = state.value
    parts, pool = _local_parts(layout, blocks)
    out = []
    for _ in range(n_passes):
        aggs = make_aggs(state)
        stats = _local_stats(aggs, layout, parts, pool)
        res = {n: (a.finalize(stats[n]) if a.finalize is not None else stats[n])
               for n, a in aggs.items()}
        state = step(state, res)
        out.append(state)
    return out


def _one_worker_plan(X, w, aligned, split_every, fuse):
    """The fused plan of a pass over ``X`` when every thread of it sits on one worker
    (the embedded cluster's case), else ``None``."""
    from ..runtime.switches import one_task_enabled

    if not (fusion_enabled(fuse) and one_task_enabled()):
        return None
    g = group_size(X.chunks[0], X.shape[1] * X.dtype.itemsize)
    plan = _fused_plan(X, w, aligned, g, split_every)
    if plan is None or len({worker for worker, *_ in plan.threads}) != 1:
        return None
    return plan


def _run_local(plan, X, w, aligned, name, head, state_nbytes):
    """Compute the one task ``head + (layout, *chunk keys)`` on the plan's worker;
    ``state_nbytes``: bytes of pass state ``head`` carries (:func:`compute_graph`)."""
    from dask.highlevelgraph import MaterializedLayer

    layers, deps, reads = _input_layers(plan, X, w, aligned)
    tasks = _thread_tasks(plan, X, w, aligned)
    layout = _Local(specs=tuple(spec for _, spec, _ in tasks),
                    counts=tuple(len(args) for *_, args in tasks), upper=tuple(plan.upper),
                    root_thread=plan.root_thread, root=plan.tree.root)
    key = f"{name}-local-{uuid.uuid4().hex[:12]}"
    layers[key] = MaterializedLayer(
        {key: (*head, layout, *[k for *_, args in tasks for k in args])},
        annotations={"workers": [tasks[0][0]], "allow_other_workers": True})
    deps[key] = set(reads)
    return compute_graph(HighLevelGraph(layers, deps), key, state_nbytes)


def _local_inputs(X, sample_weight, aligned, split_every, fuse):
    """``(plan, aligned rows)``: the one-worker plan (or ``None``) of a pass."""
    s = int(split_every or DEFAULT_SPLIT_EVERY)
    if s < 2:
        raise ValueError(f"split_every={split_every!r} must be >= 2.")
    rows = {k: align_rows(a, X.chunks[0]) for k, a in (aligned or {}).items()}
    return _one_worker_plan(X, sample_weight, rows, s, fuse), rows


def run_chain(X, make_aggs, step, state, n_passes, *, sample_weight=None, aligned=None,
              split_every=None, name="dclust-chain", fuse=None):
    """Several passes in one computation, each pass's state made on the cluster from the
    previous pass's results: the client waits once for ``n_passes`` passes.

    Pass ``j`` computes the aggregations ``make_aggs(state_j)`` and a task on a worker
    then makes ``state_{j+1} = step(state_j, results_j)`` (``results`` finalized and
    keyed as in :func:`run_pass`); the next pass's chunk tasks read that state. Every
    pass is :func:`build_pass`'s graph and ``step`` is the same function the client
    would run, so the states are bit-identical to ``n_passes`` calls of :func:`run_pass`
    followed by ``step``.

    Parameters
    ----------
    X : dask.array.Array
    make_aggs : callable
        ``make_aggs(state) -> dict of Aggregation`` with their state bound; the same
        names and functions for every state.
    step : callable
        ``step(state, results) -> state``.
    state : dict
        The state before the first pass.
    n_passes : int
    sample_weight, aligned, split_every, name, fuse
        As in :func:`run_pass`.

    Returns
    -------
    list of the ``n_passes`` states after each pass.

    Notes
    -----
    When the pass is fused and all its threads sit on one worker (the embedded local
    cluster), the whole chain is one task on that worker, which runs each pass's
    fused tasks on threads of its own and the combines and steps between them: no
    scheduler round trip between passes (each cost 5-10 ms). ``DCLUST_ONE_TASK=0``
    turns that off. The states are the same bits either way.
    """
    from dask.highlevelgraph import MaterializedLayer

    if X.shape[0] == 0:
        raise ValueError("run_chain needs at least one row")
    plan, rows = _local_inputs(X, sample_weight, aligned, split_every, fuse)
    if plan is not None:
        return _run_local(plan, X, sample_weight, rows, name,
                          (_local_chain, step, make_aggs, _Value(state), int(n_passes)),
                          _state_bytes(state))
    token = uuid.uuid4().hex[:12]
    step_name = f"{name}-step-{token}"
    first = make_aggs(state)
    finalizers = {n: a.finalize for n, a in first.items()}
    template = {n: Aggregation(a.name, a.chunk, a.combine, a.finalize) for n, a in first.items()}
    layers, deps = {}, {}
    prev = _Value(state)
    prev_layer = None
    n_passes = int(n_passes)
    for j in range(n_passes):
        kw = dict(sample_weight=sample_weight, aligned=rows, split_every=split_every,
                  name=f"{name}-{j}", fuse=fuse)
        if j == 0:
            graph, root = build_pass(X, first, **kw)
        else:
            graph, root = build_pass(X, template, state_key=prev, **kw)
        root_task = _take_root(graph, root)
        own = set(graph.layers) - set(layers)
        for lname in own:
            layers[lname] = graph.layers[lname]
            # Over-approximated: every layer of pass j may wait on the step before it
            # (its tasks read it); a missing dependency would let culling drop it.
            deps[lname] = set(graph.dependencies.get(lname, ())) | (
                {prev_layer} if prev_layer else set())
        for lname in set(graph.layers) - own:
            deps.setdefault(lname, set(graph.dependencies.get(lname, ())))
        key = (step_name, j)
        lname = f"{step_name}-{j}"
        layers[lname] = MaterializedLayer(
            {key: (_chain_step, step, finalizers, make_aggs, j == n_passes - 1, prev,
                   *root_task)})
        deps[lname] = own | ({prev_layer} if prev_layer else set())
        prev, prev_layer = key, lname
    steps = [(step_name, j) for j in range(n_passes)]
    layers[step_name] = MaterializedLayer({step_name: (_chain_collect, *steps)})
    deps[step_name] = {f"{step_name}-{j}" for j in range(n_passes)}
    # The first state twice (the step's input and the first pass's bound aggregations).
    return compute_graph(HighLevelGraph(layers, deps), step_name,
                         _state_bytes(state) + _aggs_bytes(first))


def run_pass(X, aggregations, *, sample_weight=None, aligned=None, split_every=None,
             name="dclust-pass", fuse=None):
    """Run one pass and return each aggregation's finalized result.

    Exactly one computation is submitted. Returns a dict keyed like ``aggregations``.
    ``aligned``: row-aligned arrays the chunk functions read, and ``fuse``, as in
    :func:`build_pass`. A fused pass whose threads all sit on one worker is one task
    there (as in :func:`run_chain`; ``DCLUST_ONE_TASK=0`` turns that off), with the
    same bits as the fused graph.
    """
    if X.shape[0] == 0:
        raise ValueError("run_pass needs at least one row")
    plan, rows = _local_inputs(X, sample_weight, aligned, split_every, fuse)
    if plan is not None:
        stats = _run_local(plan, X, sample_weight, rows, name,
                           (_local_pass, _Inline(dict(aggregations))), _aggs_bytes(aggregations))
    else:
        graph, key = build_pass(
            X, aggregations, sample_weight=sample_weight, aligned=rows,
            split_every=split_every, name=name, fuse=fuse
        )
        stats = compute_graph(graph, key, _aggs_bytes(aggregations))
    out = {}
    for agg_name, agg in aggregations.items():
        s = stats[agg_name]
        out[agg_name] = agg.finalize(s) if agg.finalize is not None else s
    return out
