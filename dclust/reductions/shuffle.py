"""Group-by passes: rows of every chunk sent to one of ``n_groups`` groups, and a
function applied to each group's rows on the workers.

A reduction pass (:mod:`.engine`) merges statistics of fixed size; some steps instead
need the rows themselves, brought together by a key (the rows of each coarse cell, to
fit that cell's centres). One graph does it: a ``split`` task per chunk cuts the chunk's
rows into ``n_groups`` pieces, each group's ``apply`` task receives its piece of every
chunk, in chunk order (so its input, and its result, do not depend on the number of
workers or on which chunk finished first), and one task collects the groups' results.
Only the groups' results come back to the client.
"""

from __future__ import annotations

import operator
import uuid

from dask.highlevelgraph import HighLevelGraph

from ..runtime.compute import compute_graph, flatten_keys
from .engine import row_offsets

__all__ = ["run_groupby"]


def _collect(*results):
    return list(results)


def run_groupby(X, split, apply, n_groups, *, sample_weight=None, name="dclust-groupby"):
    """Cut every chunk's rows into groups and apply a function to each group's rows.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features), one chunk along features.
    split : callable
        ``split(X_block, w_block, row_offset) -> sequence of n_groups pieces`` (any
        objects; ``w_block`` is ``None`` without weights).
    apply : callable
        ``apply(group, *pieces) -> result``, the group's piece of every chunk in chunk
        order.
    n_groups : int
    sample_weight : dask.array.Array of shape (n_samples,), optional
        Chunked like ``X``'s rows.
    name : str
        Prefix of the graph's layer name.

    Returns
    -------
    list of the ``n_groups`` results, in group order (one computation).
    """
    token = uuid.uuid4().hex[:12]
    layer_name = f"{name}-{token}"
    offsets = row_offsets(X.chunks[0])
    x_keys = list(flatten_keys(X.__dask_keys__()))
    w_keys = None if sample_weight is None else list(flatten_keys(sample_weight.__dask_keys__()))
    layer = {}
    for i, xk in enumerate(x_keys):
        layer[(layer_name, "split", i)] = (split, xk, None if w_keys is None else w_keys[i],
                                           int(offsets[i]))
        for j in range(n_groups):
            layer[(layer_name, "piece", i, j)] = (operator.getitem, (layer_name, "split", i), j)
    groups = []
    for j in range(n_groups):
        key = (layer_name, "apply", j)
        layer[key] = (apply, j, *[(layer_name, "piece", i, j) for i in range(len(x_keys))])
        groups.append(key)
    layer[layer_name] = (_collect, *groups)
    deps = [X] if sample_weight is None else [X, sample_weight]
    graph = HighLevelGraph.from_collections(layer_name, layer, dependencies=deps)
    return compute_graph(graph, layer_name)
