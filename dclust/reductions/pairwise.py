"""Pairwise passes: a statistic over all pairs of rows, tiled across the workers.

A pairwise pass is the all-pairs counterpart of :func:`dclust.reductions.engine.run_pass`:
``O(n^2)`` work (the exact silhouette) in one Dask computation, with memory of one pair
of row blocks per task. For row blocks ``i <= j`` one *tile* task sees blocks ``i`` and
``j`` and returns a partial result for the rows of each (the metric is symmetric, so
each pair of blocks is visited once). The partials of block ``i`` are merged by a
``combine`` tree of fan-in ``split_every`` in the fixed order of the other block's
index, turned into small per-block statistics by ``rows``, and those are merged by a
second tree into the result. As in the pass engine, the trees' order depends on the
chunking only, so results do not depend on the number of workers.

Graph for ``B`` row blocks: ``B (B + 1) / 2`` tile tasks, ``B`` combine trees, ``B``
row tasks and one reduction tree. Building it computes nothing;
:func:`run_pairwise_pass` submits it as exactly one computation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from dask.highlevelgraph import HighLevelGraph

from ..runtime.compute import compute_graph, flatten_keys
from .engine import DEFAULT_SPLIT_EVERY

__all__ = ["PairwiseAggregation", "build_pairwise_pass", "run_pairwise_pass"]


@dataclass(frozen=True)
class PairwiseAggregation:
    """A statistic over all pairs of rows, as tile, combine, rows and reduce steps.

    Parameters
    ----------
    name : str
        Prefix of the graph's key names (``silhouette``).
    tile : callable
        ``tile(X_i, side_i, X_j, side_j, same, *args) -> (part_i, part_j)``: the
        contribution of the pairs between blocks ``i`` and ``j`` to the rows of each
        block. ``same`` is true on diagonal tiles (``i == j``), where ``part_j`` is
        ignored (return ``None``).
    combine : callable
        ``combine(list_of_parts) -> part``, associative: merges one block's parts.
    rows : callable
        ``rows(part, X_i, side_i, *args) -> stats``: a block's small statistics from
        its merged part.
    reduce : callable
        ``reduce(list_of_stats) -> stats``, associative.
    finalize : callable, optional
        ``finalize(stats) -> result``, run on the client.
    """

    name: str
    tile: Callable[..., Any]
    combine: Callable[[list], Any]
    rows: Callable[..., Any]
    reduce: Callable[[list], Any]
    finalize: Callable[[Any], Any] | None = None
    args: tuple = field(default=())

    def bind(self, *args) -> "PairwiseAggregation":
        """The same aggregation with its per-pass state attached."""
        return PairwiseAggregation(self.name, self.tile, self.combine, self.rows, self.reduce,
                                   self.finalize, args)


class _State:
    """The aggregation, written into each task (an object Dask does not look inside)."""

    __slots__ = ("agg",)

    def __init__(self, agg):
        self.agg = agg


def _tile_task(state, same, xi, si, xj, sj):
    agg = state.agg
    return agg.tile(xi, si, xj, sj, same, *agg.args)


def _pick_task(state, which, *tiles):
    """First level of a block's combine tree: take the block's half of each tile."""
    parts = [t[w] for t, w in zip(tiles, which)]
    return parts[0] if len(parts) == 1 else state.agg.combine(parts)


def _combine_task(state, *parts):
    return state.agg.combine(list(parts))


def _rows_task(state, part, xi, si):
    agg = state.agg
    return agg.rows(part, xi, si, *agg.args)


def _reduce_task(state, *stats):
    return state.agg.reduce(list(stats))


def _tree(layer, name, leaves, split_every, func, state):
    depth = 0
    while len(leaves) > 1:
        depth += 1
        nxt = []
        for j in range(0, len(leaves), split_every):
            key = (name, depth, j // split_every)
            layer[key] = (func, state, *leaves[j : j + split_every])
            nxt.append(key)
        leaves = nxt
    return leaves[0]


def build_pairwise_pass(X, side, agg, *, split_every=None, name="dclust-pairwise"):
    """Build (and do not compute) the graph of one pairwise pass.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features), one chunk along features
        Its row chunks are the blocks of the tiling.
    side : dask.array.Array of shape (n_samples, ...)
        Per-row data (labels) with the same row chunks as ``X``.
    agg : PairwiseAggregation
        With its state bound.
    split_every : int, optional
        Fan-in of the combine trees (default 8).
    name : str
        Prefix of the key names.

    Returns
    -------
    graph : HighLevelGraph
    key : the key of the reduced statistics.
    """
    split_every = int(split_every or DEFAULT_SPLIT_EVERY)
    if split_every < 2:
        raise ValueError(f"split_every={split_every!r} must be >= 2.")
    if tuple(side.chunks[0]) != tuple(X.chunks[0]):
        raise ValueError("side must have the same row chunks as X")
    token = uuid.uuid4().hex[:12]
    layer_name = f"{name}-{token}"
    tile_name, pick_name = f"{name}-tile-{token}", f"{name}-combine-{token}"
    rows_name, reduce_name = f"{name}-rows-{token}", f"{name}-reduce-{token}"
    x_keys = list(flatten_keys(X.__dask_keys__()))
    s_keys = list(flatten_keys(side.__dask_keys__()))
    B = len(x_keys)
    state = _State(agg)
    layer = {}
    for i in range(B):
        for j in range(i, B):
            layer[(tile_name, i, j)] = (_tile_task, state, i == j, x_keys[i], s_keys[i],
                                        x_keys[j], s_keys[j])
    row_keys = []
    for i in range(B):
        # Block i's halves, in the order of the other block: (j, i) for j < i gives
        # block i's rows as the tile's second block, (i, j) for j >= i as its first.
        contrib = [((tile_name, j, i), 1) for j in range(i)]
        contrib += [((tile_name, i, j), 0) for j in range(i, B)]
        first = []
        for g in range(0, B, split_every):
            group = contrib[g : g + split_every]
            key = (pick_name, i, 0, g // split_every)
            layer[key] = (_pick_task, state, tuple(w for _, w in group), *[k for k, _ in group])
            first.append(key)
        root = _tree(layer, f"{pick_name}-{i}", first, split_every, _combine_task, state)
        key = (rows_name, i)
        layer[key] = (_rows_task, state, root, x_keys[i], s_keys[i])
        row_keys.append(key)
    final = _tree(layer, reduce_name, row_keys, split_every, _reduce_task, state)
    graph = HighLevelGraph.from_collections(layer_name, layer, dependencies=[X, side])
    return graph, final


def run_pairwise_pass(X, side, agg, *, split_every=None, name="dclust-pairwise"):
    """Run one pairwise pass and return the finalized result (exactly one computation)."""
    if X.shape[0] == 0:
        raise ValueError("run_pairwise_pass needs at least one row")
    graph, key = build_pairwise_pass(X, side, agg, split_every=split_every, name=name)
    stats = compute_graph(graph, key)
    return agg.finalize(stats) if agg.finalize is not None else stats
