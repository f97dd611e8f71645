"""The fitted tree of :class:`dclust.BisectingKMeans`: arrays, cuts, JSON and Newick."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..exceptions import DclustValueError

__all__ = ["BisectingTree", "write_text_atomic"]


@dataclass(frozen=True)
class BisectingTree:
    """The hierarchy of a fitted :class:`~dclust.BisectingKMeans`, as flat arrays.

    Node ``0`` is the root (all the data, centred at the mean of ``X``); every split adds
    two nodes, so node ids follow the order in which the splits were accepted (the order
    scikit-learn's greedy choice makes them). ``children[i]`` is ``(left, right)`` or
    ``(-1, -1)`` at a leaf; the left child is the first centre of that split's 2-means.

    Attributes
    ----------
    node_id : ndarray of shape (n_nodes,)
    parent : ndarray of shape (n_nodes,)
        ``-1`` for the root.
    children : ndarray of shape (n_nodes, 2)
    depth : ndarray of shape (n_nodes,)
        The root is at depth 0.
    centers : ndarray of shape (n_nodes, n_features)
    size : ndarray of shape (n_nodes,)
        Rows of the training data that go down through the node.
    weight : ndarray of shape (n_nodes,)
        Their total sample weight.
    inertia : ndarray of shape (n_nodes,)
        Weighted sum of their squared distances to the node's centre.
    label : ndarray of shape (n_nodes,)
        The leaf's cluster label (``labels_``, ``cluster_centers_`` row), ``-1`` for
        internal nodes. Leaves are numbered depth-first, left child first, as
        scikit-learn numbers them.
    """

    parent: np.ndarray
    children: np.ndarray
    depth: np.ndarray
    centers: np.ndarray
    size: np.ndarray
    weight: np.ndarray
    inertia: np.ndarray

    @property
    def node_id(self):
        return np.arange(self.parent.shape[0])

    @property
    def n_nodes(self):
        return int(self.parent.shape[0])

    @property
    def max_depth(self):
        return int(self.depth.max(initial=0))

    def dfs(self):
        """Node ids in depth-first order, left child first."""
        out, stack = [], [0]
        while stack:
            node = stack.pop()
            out.append(node)
            if self.children[node, 0] >= 0:
                stack.extend((int(self.children[node, 1]), int(self.children[node, 0])))
        return np.asarray(out, dtype=np.int64)

    @property
    def leaves(self):
        """Leaf node ids in label order (depth-first)."""
        order = self.dfs()
        return order[self.children[order, 0] < 0]

    @property
    def label(self):
        lab = np.full(self.n_nodes, -1, dtype=np.int64)
        lab[self.leaves] = np.arange(self.leaves.size)
        return lab

    def cut(self, level=None):
        """The nodes a cut at depth ``level`` keeps, in depth-first order.

        ``predict(X, level=level)`` returns the position of each row's node in this
        array: the node at depth ``level`` on the row's path, or its leaf where the path
        ends above that depth. ``level=None`` (or any level at or below the deepest
        leaf) gives the leaves, in label order.
        """
        if level is None:
            return self.leaves
        level = check_level(level)
        order = self.dfs()
        keep = (self.depth[order] == level) | ((self.depth[order] < level)
                                                & (self.children[order, 0] < 0))
        return order[keep]

    # ---- export --------------------------------------------------------------------
    def to_dict(self):
        """A JSON-ready description: one entry per node, in node-id order."""
        label = self.label
        nodes = []
        for i in range(self.n_nodes):
            kids = [int(c) for c in self.children[i] if c >= 0]
            nodes.append({
                "id": i, "parent": None if self.parent[i] < 0 else int(self.parent[i]),
                "children": kids, "depth": int(self.depth[i]), "size": int(self.size[i]),
                "weight": float(self.weight[i]), "inertia": float(self.inertia[i]),
                "label": None if label[i] < 0 else int(label[i]),
                "center": [float(v) for v in self.centers[i]],
            })
        return {"format": "dclust-bisecting-tree", "version": 1, "n_nodes": self.n_nodes,
                "n_leaves": int(self.leaves.size), "n_features": int(self.centers.shape[1]),
                "nodes": nodes}

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1)

    def to_newick(self):
        """Newick text: leaves named ``c<label>``, internal nodes ``n<id>``; a branch's
        length is the distance between the child's centre and its parent's."""
        label = self.label

        def name(i):
            return f"c{label[i]}" if label[i] >= 0 else f"n{i}"

        def length(i):
            p = self.parent[i]
            return float(np.sqrt(((self.centers[i] - self.centers[p]) ** 2).sum()))

        # Iterative post-order, so that deep trees do not hit the recursion limit.
        text = {}
        stack = [(0, False)]
        while stack:
            node, seen = stack.pop()
            kids = [int(c) for c in self.children[node] if c >= 0]
            if not kids:
                text[node] = name(node)
            elif seen:
                inner = ",".join(f"{text.pop(c)}:{length(c):.6g}" for c in kids)
                text[node] = f"({inner}){name(node)}"
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(kids))
        return text[0] + ";\n"


def check_level(level):
    import numbers

    if level is None:
        return None
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, numbers.Integral) or level < 0:
        raise DclustValueError(
            f"level={level!r} is not valid; expected an integer >= 0 (a depth of the tree, the "
            "root at 0) or None for the leaves.")
    return int(level)


def tree_format(path, format):
    if format is None:
        ext = os.fspath(path).lower().rsplit(".", 1)[-1]
        format = {"json": "json", "nwk": "newick", "newick": "newick", "tree": "newick"}.get(ext)
        if format is None:
            raise DclustValueError(
                f"Cannot tell the tree format of {os.fspath(path)!r} from its extension; pass "
                "format='json' or format='newick' (or name it .json, .nwk or .newick).")
    if format not in ("json", "newick"):
        raise DclustValueError(f"format={format!r} is not valid; expected 'json' or 'newick'.")
    return format


def write_text_atomic(path, text, *, storage_options=None):
    """Write ``text`` to ``path`` under a temporary name, moved into place when complete."""
    from ..io.paths import atomic_output, is_url

    with atomic_output(path, storage_options=storage_options) as tmp:
        if is_url(tmp):
            import fsspec

            with fsspec.open(tmp, "w", **(storage_options or {})) as f:
                f.write(text)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
