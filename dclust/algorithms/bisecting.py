"""Bisecting k-means as an algorithm of the fit session: many 2-means splits per pass.

scikit-learn's ``BisectingKMeans`` splits one leaf at a time: the leaf of biggest inertia
(or most rows), into two by a 2-means. Over data read in passes, one split per pass
round would make ``k - 1`` rounds of passes. Here a **round** speculates on several
leaves at once and splits all of them in the same passes:

1. *Choose*: the ``M = min(k - n_leaves, n_candidates)`` leaves of highest score
   (inertia or size; ties in depth-first order, as scikit-learn's leaf scan).
2. *Sample* (one pass): each row goes down the tree to its leaf; each chosen leaf keeps a
   weighted sample of its rows, from which its 2-means is seeded (``n_init`` runs).
3. *Lloyd* (one pass per iteration): each row goes down the tree and, if its leaf is
   being split, is assigned to the nearer centre of every run of that split; the pass
   returns per-child sums, weights, sizes and inertia for all splits at once. A run stops
   when its centres move less than the tolerance, or at ``max_iter``.
4. *Accept*: scikit-learn's one-at-a-time choice is replayed on the leaves: repeatedly
   take the leaf of highest score (first in depth-first order); if it was split in this
   or an earlier round, accept that split (its children enter with their scores) and
   go on; stop at the first leaf whose split is not known yet (a child just made, say)
   or at ``k`` leaves. Splits computed but not accepted are kept and reused by a later
   round (a leaf's rows do not change when other leaves split), so no work is lost.

The tree therefore grows exactly as scikit-learn's greedy choice would grow it, given the
same 2-means results, while every round splits as many leaves as that choice allows: for
``k = 2^L`` balanced clusters, each depth is one round. Scores of fresh children are
those of the last Lloyd pass (sizes as assigned there; inertia moved to the final
centres), which equal scikit-learn's exact scores once a split has converged. A final
pass computes every node's exact size, weight and inertia.

No per-row state is kept between passes: each pass recomputes a row's leaf by going down
the tree so far (:mod:`dclust.kernels.bisect`).
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np

from ..exceptions import EmptyClusterWarning
from ..kernels.bisect import (far_combine, leaf_sample_partial, node_stats_partial,
                              slot_top_combine, split_lloyd_partial, tree_directions)
from ..kernels.seeding import kmeans_parallel, kmeans_plusplus
from ..reductions.engine import Aggregation
from ..reductions.monoids import sum_combine
from .kmeans import check_init_array
from .session import Algorithm

__all__ = ["Bisecting", "STRATEGIES", "INITS", "dfs_leaves", "node_stats_aggregation",
           "split_lloyd_aggregation", "leaf_sample_aggregation", "default_leaf_sample_size"]

STRATEGIES = ("biggest_inertia", "largest_cluster")
INITS = ("random", "k-means++", "k-means||")
# The per-leaf samples of one round stay under this many floats (64 MiB of float64).
_SAMPLE_FLOATS = 8 * 2**20


# ---- aggregations ------------------------------------------------------------------------
def _tree_state(tree):
    children = np.ascontiguousarray(tree["children"], dtype=np.int64)
    direction, threshold = tree_directions(children, tree["centers"])
    return children, direction, threshold


def _stats_chunk(X, w, ctx, children, centers, direction, threshold):
    return node_stats_partial(X, w, children, centers, direction, threshold)


def node_stats_aggregation(tree):
    """Size, weight and inertia of every node (each row counts in its whole path)."""
    children, direction, threshold = _tree_state(tree)
    return Aggregation("bisect-node-stats", _stats_chunk,
                       partial(sum_combine, keys=("count", "weight", "inertia"))).bind(
        children, np.ascontiguousarray(tree["centers"], dtype=np.float64), direction, threshold)


def _split_chunk(X, w, ctx, children, direction, threshold, leaf_slot, pairs, active):
    return split_lloyd_partial(X, w, children, direction, threshold, leaf_slot, pairs, active,
                               row_offset=ctx.row_offset)


def _split_combine(parts):
    out = sum_combine(parts, ("sums", "weights", "counts", "inertia"))
    out.update(far_combine(parts))
    return out


def split_lloyd_aggregation(tree, split_nodes, pair_centers, active):
    """One Lloyd iteration of every run of every split of a round."""
    children, direction, threshold = _tree_state(tree)
    slot = np.full(children.shape[0], -1, dtype=np.int64)
    slot[np.asarray(split_nodes, dtype=np.int64)] = np.arange(len(split_nodes))
    return Aggregation("bisect-lloyd", _split_chunk, _split_combine).bind(
        children, direction, threshold, slot, np.ascontiguousarray(pair_centers, np.float64),
        np.asarray(active, dtype=bool))


def _sample_chunk(X, w, ctx, children, direction, threshold, leaf_slot, size, seed, stream):
    return leaf_sample_partial(X, w, children, direction, threshold, leaf_slot, size, seed,
                               block_id=ctx.block_id, row_offset=ctx.row_offset, stream=stream)


def leaf_sample_aggregation(tree, split_nodes, size, seed, stream):
    """Up to ``size`` rows of each leaf in ``split_nodes`` (weighted, without replacement)."""
    children, direction, threshold = _tree_state(tree)
    slot = np.full(children.shape[0], -1, dtype=np.int64)
    slot[np.asarray(split_nodes, dtype=np.int64)] = np.arange(len(split_nodes))
    return Aggregation("bisect-sample", _sample_chunk,
                       partial(slot_top_combine, size=int(size))).bind(
        children, direction, threshold, slot, int(size), int(seed), int(stream))


def default_leaf_sample_size(init, n_init, n_splits, n_features, init_size=None):
    """Rows sampled from each leaf being split.

    ``2 * n_init`` for ``"random"`` (two rows per run, as scikit-learn draws); else
    ``init_size`` or ``min(1024, max(64, 8M / (n_splits * n_features)))`` so that one
    round's samples stay within about 64 MiB.
    """
    if isinstance(init, str) and init == "random":
        return 2 * int(n_init)
    if init_size is not None:
        return max(int(init_size), 2 * int(n_init))
    per = _SAMPLE_FLOATS // max(1, int(n_splits) * int(n_features))
    return int(min(1024, max(64, per)))


# ---- the tree ----------------------------------------------------------------------------
def dfs_leaves(children):
    """Leaf node ids in depth-first order, left child first (scikit-learn's label order)."""
    children = np.asarray(children).reshape(-1, 2)
    out, stack = [], [0]
    while stack:
        node = stack.pop()
        if children[node, 0] < 0:
            out.append(node)
        else:
            stack.append(int(children[node, 1]))
            stack.append(int(children[node, 0]))
    return np.asarray(out, dtype=np.int64)


def _root_tree(d):
    return {"children": np.full((1, 2), -1, dtype=np.int64),
            "parent": np.full(1, -1, dtype=np.int64), "depth": np.zeros(1, dtype=np.int64),
            "centers": np.zeros((1, d)), "score": np.zeros(1), "count": np.zeros(1),
            "weight": np.zeros(1), "inertia": np.zeros(1), "tol": np.zeros(1),
            "splittable": np.ones(1, dtype=bool), "round": np.zeros(1, dtype=np.int64)}


def _add_children(tree, node, centers, count, weight, inertia, score, tol, rnd):
    m = tree["children"].shape[0]
    t = dict(tree)
    t["children"] = np.vstack([tree["children"], np.full((2, 2), -1, dtype=np.int64)])
    t["children"][node] = (m, m + 1)
    t["parent"] = np.r_[tree["parent"], node, node]
    t["depth"] = np.r_[tree["depth"], [tree["depth"][node] + 1] * 2]
    t["centers"] = np.vstack([tree["centers"], centers])
    t["count"] = np.r_[tree["count"], count]
    t["weight"] = np.r_[tree["weight"], weight]
    t["inertia"] = np.r_[tree["inertia"], inertia]
    t["score"] = np.r_[tree["score"], score]
    t["tol"] = np.r_[tree["tol"], tol]
    t["splittable"] = np.r_[tree["splittable"], True, True]
    t["round"] = np.r_[tree["round"], rnd, rnd]
    return t


def _empty_pending(d):
    return {"node": np.zeros(0, dtype=np.int64), "centers": np.zeros((0, 2, d)),
            "count": np.zeros((0, 2)), "weight": np.zeros((0, 2)), "inertia": np.zeros((0, 2)),
            "converged": np.zeros(0, dtype=bool)}


class Bisecting(Algorithm):
    """Bisecting k-means: rounds of simultaneous 2-means splits (see the module's text).

    The state holds the tree so far (``tree``: children, parent, depth, centres and the
    score estimates of every node), the splits computed but not yet accepted
    (``pending``), the phase (``"sample"``, ``"lloyd"``, ``"final"``, ``"done"``) and, during
    a round, the runs' centres and progress. Every step is one pass and is checkpointed.
    """

    name = "BisectingKMeans"
    init_label = "root"

    def __init__(self, n_clusters, *, init="random", n_init=1, max_iter=300, tol=1e-4,
                 strategy="biggest_inertia", seed=0, init_size=None):
        self.n_clusters = int(n_clusters)
        self.init = init
        self.n_init = int(n_init)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.strategy = strategy
        self.seed = int(seed)
        self.init_size = init_size

    # ---- the loop ------------------------------------------------------------------
    def init_state(self, session):
        d = session.n_features
        state = {"tree": _root_tree(d), "pending": _empty_pending(d), "phase": "sample",
                 "round": 0, "n_iter": 0, "round_iter": 0, "n_empty_total": 0,
                 "n_unconverged": 0, "n_splits": 0, "inertia": math.nan,
                 "split_nodes": np.zeros(0, dtype=np.int64)}
        if self.n_clusters == 1:
            self._set_root(session, state["tree"])
            state["phase"] = "final"
        else:
            state["split_nodes"] = np.zeros(1, dtype=np.int64)
        return state

    def _set_root(self, session, tree):
        stats = session.ensure_data_stats(name="bisect-data-stats")
        tree["centers"][0] = stats["mean"]  # scikit-learn: the unweighted mean of X
        tree["count"][0] = stats["count"]
        tree["weight"][0] = stats.get("weight_sum", stats["count"])
        var = np.asarray(stats["m2"]) / max(stats["count"], 1)
        tree["inertia"][0] = float(np.sum(stats["m2"]))
        tree["tol"][0] = float(np.mean(var)) * self.tol  # KMeans's tolerance on the root

    def one_iteration(self, session, state):
        phase = state["phase"]
        if phase == "sample":
            return self._sample(session, state)
        if phase == "lloyd":
            return self._lloyd(session, state)
        if phase == "final":
            return self._final(session, state)
        raise AssertionError(f"unknown phase {phase!r}")

    def converged(self, state):
        return state["phase"] == "done"

    def report(self, state):
        return "round", state["round"], {"splits": int(len(state["split_nodes"])),
                                         "iter": state["round_iter"],
                                         "leaves": int(len(dfs_leaves(state["tree"]["children"])))}

    def describe(self, state):
        leaves = len(dfs_leaves(state["tree"]["children"]))
        if state["phase"] == "done":
            return f"Tree complete: {leaves} leaves, inertia {state['inertia']}."
        return (f"Round {state['round']}, iteration {state['round_iter']}: "
                f"{len(state['split_nodes'])} split(s), {leaves} leaves.")

    # ---- phases --------------------------------------------------------------------
    def _sample(self, session, state):
        tree = {k: v.copy() for k, v in state["tree"].items()}
        pending = set(state["pending"]["node"].tolist())
        todo = np.asarray([n for n in state["split_nodes"].tolist() if n not in pending],
                          dtype=np.int64)
        R, d = self.n_init, session.n_features
        size = default_leaf_sample_size(self.init, R, len(todo), d, self.init_size)
        res = session.run_pass({"sample": leaf_sample_aggregation(
            tree, todo, size, self.seed, stream=1000 + state["round"])},
            name="bisect-sample", precision_sensitive=False)["sample"]
        if state["round"] == 0:
            self._set_root(session, tree)
        pairs = np.zeros((len(todo), R, 2, d))
        ok = np.ones(len(todo), dtype=bool)
        for i, node in enumerate(todo.tolist()):
            mine = res["slot"] == i
            rows, wts = res["x"][mine], res["weight"][mine]
            if rows.shape[0] < 2:
                ok[i] = False  # fewer than two rows that weigh anything: cannot be split
                continue
            for r in range(R):
                pairs[i, r] = self._seed_pair(rows, wts, size, node, r, state["round"])
        if not ok.all():
            tree["splittable"][todo[~ok]] = False
            todo, pairs = todo[ok], pairs[ok]
        new = {**state, "tree": tree, "split_nodes": todo, "pairs": pairs,
               "active": np.ones((len(todo), R), dtype=bool),
               "pair_iter": np.zeros((len(todo), R), dtype=np.int64),
               "pair_converged": np.zeros((len(todo), R), dtype=bool),
               "pair_count": np.zeros((len(todo), R, 2)),
               "pair_weight": np.zeros((len(todo), R, 2)),
               "pair_inertia": np.full((len(todo), R, 2), np.inf),
               "round_iter": 0, "phase": "lloyd"}
        if len(todo) == 0:
            return self._advance(session, new)
        return new

    def _seed_pair(self, rows, wts, size, node, run, rnd):
        rng = np.random.default_rng([self.seed, 11, rnd, node, run])
        m = rows.shape[0]
        # A sample smaller than asked holds every weighted row of the leaf: weigh them;
        # otherwise it was drawn in proportion to the weights, so its rows count once.
        w = wts if m < size else np.ones(m)
        init = self.init
        if callable(init):
            C = check_init_array(init(rows, 2, np.random.RandomState(
                int(rng.integers(2**31)))), 2, rows.shape[1], what="the init callable's result")
        elif init == "random":
            # Rows 2r, 2r+1 of the leaf's weighted sample: a weighted draw of two rows
            # without replacement (scikit-learn's random init for one bisection).
            idx = [2 * run, 2 * run + 1] if m >= 2 * run + 2 else rng.choice(m, 2, replace=False)
            C = rows[idx]
        elif init == "k-means++":
            C, _ = kmeans_plusplus(rows, 2, w, rng)
        else:
            C, _ = kmeans_parallel(rows, 2, w, rng)
        return np.asarray(C, dtype=np.float64)

    def _lloyd(self, session, state):
        tree, nodes = state["tree"], state["split_nodes"]
        res = session.run_pass({"split": split_lloyd_aggregation(
            tree, nodes, state["pairs"], state["active"])}, name="bisect-lloyd")["split"]
        pairs = state["pairs"].copy()
        active = state["active"].copy()
        it = state["pair_iter"].copy()
        conv = state["pair_converged"].copy()
        pcount, pweight = state["pair_count"].copy(), state["pair_weight"].copy()
        pinertia = state["pair_inertia"].copy()
        n_empty = 0
        for i, j in zip(*np.nonzero(active)):
            sums, wsum = res["sums"][i, j].copy(), res["weights"][i, j].copy()
            count, inertia = res["counts"][i, j].copy(), res["inertia"][i, j].copy()
            old = pairs[i, j]
            new = old.copy()
            for c in (0, 1):
                o = 1 - c
                if wsum[c] <= 0:
                    n_empty += 1
                    fd, fx, fw = res["far_dist"][i, j, o], res["far_x"][i, j, o], \
                        res["far_weight"][i, j, o]
                    # The sibling's farthest row starts this child, as scikit-learn
                    # relocates empty clusters (a row on its centre would only copy it).
                    if fd > 0 and fw > 0 and wsum[o] > fw:
                        sums[o] -= fx * fw
                        wsum[o] -= fw
                        count[o] -= 1
                        inertia[o] -= fw * fd
                        sums[c], wsum[c], count[c], inertia[c] = fx * fw, fw, 1, 0.0
            nz = wsum > 0
            new[nz] = sums[nz] / wsum[nz, None]
            # Inertia of the rows as assigned, moved to the new centres (exact for the
            # centres of means): sum w |x - c'|^2 = sum w |x - c|^2 - W |c' - c|^2.
            moved = wsum * ((new - old) ** 2).sum(axis=1)
            pinertia[i, j] = np.maximum(inertia - moved, 0.0)
            pcount[i, j], pweight[i, j] = count, wsum
            shift = float(((new - old) ** 2).sum())
            pairs[i, j] = new
            it[i, j] += 1
            conv[i, j] = shift <= tree["tol"][nodes[i]]
            active[i, j] = not conv[i, j] and it[i, j] < self.max_iter
        state = {**state, "pairs": pairs, "active": active, "pair_iter": it,
                 "pair_converged": conv, "pair_count": pcount, "pair_weight": pweight,
                 "pair_inertia": pinertia, "round_iter": state["round_iter"] + 1,
                 "n_iter": state["n_iter"] + 1,
                 "n_empty_total": state["n_empty_total"] + n_empty}
        if active.any():
            return state
        return self._advance(session, self._keep_pending(state))

    def _keep_pending(self, state):
        """The best run of each split of the round (lowest inertia), added to ``pending``."""
        best = state["pair_inertia"].sum(axis=2).argmin(axis=1)
        S = len(state["split_nodes"])
        pick = (np.arange(S), best)
        p = state["pending"]
        pending = {
            "node": np.r_[p["node"], state["split_nodes"]].astype(np.int64),
            "centers": np.concatenate([p["centers"], state["pairs"][pick]]),
            "count": np.concatenate([p["count"], state["pair_count"][pick]]),
            "weight": np.concatenate([p["weight"], state["pair_weight"][pick]]),
            "inertia": np.concatenate([p["inertia"], state["pair_inertia"][pick]]),
            "converged": np.r_[p["converged"], state["pair_converged"][pick]].astype(bool),
        }
        return {**state, "pending": pending}

    def _score(self, count, inertia):
        return inertia if self.strategy == "biggest_inertia" else count

    def _advance(self, session, state):
        """Accept the splits scikit-learn's greedy choice takes, then choose the next round."""
        tree = {k: v.copy() for k, v in state["tree"].items()}
        pend = {k: v.copy() for k, v in state["pending"].items()}
        d = session.n_features
        k = self.n_clusters
        unconverged = state["n_unconverged"]
        n_splits = state["n_splits"]
        while True:
            leaves = dfs_leaves(tree["children"]).tolist()
            accepted = False
            while len(leaves) < k:
                scores = [tree["score"][n] if tree["splittable"][n] else -np.inf for n in leaves]
                pos = int(np.argmax(scores))  # first maximum in depth-first order
                node = leaves[pos]
                if not np.isfinite(scores[pos]) or node not in pend["node"]:
                    break
                q = int(np.flatnonzero(pend["node"] == node)[0])
                C = pend["centers"][q]
                var = pend["inertia"][q] / np.maximum(pend["weight"][q], 1e-300) / d
                tree = _add_children(tree, node, C, pend["count"][q], pend["weight"][q],
                                     pend["inertia"][q],
                                     self._score(pend["count"][q], pend["inertia"][q]),
                                     var * self.tol, state["round"])
                unconverged += int(not pend["converged"][q])
                n_splits += 1
                keep = np.arange(len(pend["node"])) != q
                pend = {key: v[keep] for key, v in pend.items()}
                m = tree["children"].shape[0]
                leaves[pos:pos + 1] = [m - 2, m - 1]
                accepted = True
            if len(leaves) >= k:
                nxt = np.zeros(0, dtype=np.int64)
                break
            scores = np.asarray([tree["score"][n] if tree["splittable"][n] and
                                 tree["count"][n] >= 2 else -np.inf for n in leaves])
            order = np.lexsort((np.arange(len(leaves)), -scores))
            n_cand = int(np.isfinite(scores).sum())
            nxt = np.asarray([leaves[i] for i in order[:min(k - len(leaves), n_cand)]],
                             dtype=np.int64)
            if len(nxt) == 0 or not np.isin(nxt, pend["node"]).all() or not accepted:
                break
        done = len(nxt) == 0 or np.isin(nxt, pend["node"]).all()
        return {**state, "tree": tree, "pending": pend, "split_nodes": nxt,
                "n_unconverged": unconverged, "n_splits": n_splits,
                "phase": "final" if done else "sample",
                "round": state["round"] + (0 if done else 1), "round_iter": 0}

    def _final(self, session, state):
        tree = {k: v.copy() for k, v in state["tree"].items()}
        res = session.run_pass({"stats": node_stats_aggregation(tree)},
                               name="bisect-node-stats")["stats"]
        tree["count"], tree["weight"], tree["inertia"] = res["count"], res["weight"], \
            res["inertia"]
        leaves = dfs_leaves(tree["children"])
        return {**state, "tree": tree, "phase": "done",
                "inertia": float(tree["inertia"][leaves].sum())}

    def finalize(self, session, state):
        tree = state["tree"]
        leaves = dfs_leaves(tree["children"])
        n_leaves = len(leaves)
        if state["n_empty_total"]:
            warnings.warn(
                f"{state['n_empty_total']} empty cluster(s) over the bisections were moved to "
                "the points farthest from their sibling's centre.",
                EmptyClusterWarning, stacklevel=5)
        return {"children": tree["children"], "parent": tree["parent"], "depth": tree["depth"],
                "centers": tree["centers"], "count": tree["count"], "weight": tree["weight"],
                "inertia_nodes": tree["inertia"], "round": tree["round"],
                "leaves": leaves, "inertia": state["inertia"], "n_iter": state["n_iter"],
                "n_rounds": state["round"] + 1, "n_splits": state["n_splits"],
                "converged": state["n_unconverged"] == 0, "n_leaves": n_leaves,
                "n_nonempty": int((tree["count"][leaves] > 0).sum())}
