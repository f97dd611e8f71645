"""Seeded k-means: k-means where some rows' classes are known ("constrained" seeding).

``y`` gives each row's class, or ``-1`` where it is unknown. Each known class has a
cluster of its own (the first ``n_known`` clusters, in sorted class order): it starts at
the mean of the class's labelled rows, and the labelled rows stay in it whatever the
centres do; the unlabelled rows go to their nearest centre, as in Lloyd's algorithm
(Basu, Banerjee and Mooney, 2002, "Constrained-KMeans"). The other
``n_clusters - n_known`` centres are seeded by k-means|| on a sample of the unlabelled
rows, starting from the known classes' centres.

Passes: one initialisation pass (the classes' means over the labelled rows and the
sample of unlabelled rows, with the data checks folded in), then one fused pass per
iteration, as plain k-means. The passes read ``y`` next to ``X`` (the engine's
row-aligned arrays).
"""

from __future__ import annotations


import math
from dataclasses import dataclass
from functools import partial

import numpy as np

from .._xp import array_namespace, to_numpy
from ..exceptions import DclustValueError
from ..kernels.cluster_metrics import cluster_stats_combine, cluster_stats_partial
from ..kernels.sampling import reservoir_partial
from ..kernels.seeded import (
    class_codes,
    seeded_kmeans_parallel,
    seeded_kmeans_plusplus,
    seeded_lloyd_partial,
)
from ..reductions.engine import Aggregation
from ..reductions.monoids import fields_combine, top_combine
from .kmeans import (
    _FAR_KEYS,
    _LLOYD_SUMS,
    N_FAR,
    Lloyd,
    check_init_array,
    init_sample_size,
    seed_centers,
)

__all__ = ["SeededLloyd", "seeded_lloyd_aggregation", "class_stats_aggregation"]

_SAMPLE_KEYS = ("key", "row", "x", "weight")


# ---- the iteration pass ----------------------------------------------------------------
@dataclass(frozen=True)
class _SeededLloydChunk:
    n_far: int

    def __call__(self, X, w, ctx, centers, classes):
        return seeded_lloyd_partial(X, ctx.aligned["y"], centers, classes, w, n_far=self.n_far,
                                    row_offset=ctx.row_offset)


@dataclass(frozen=True)
class _LloydCombine:
    n_far: int

    def __call__(self, parts):
        return fields_combine(parts, sums=_LLOYD_SUMS,
                              top=(self.n_far, "far_dist", _FAR_KEYS, "far_row"))


def seeded_lloyd_aggregation(centers, classes, n_far=N_FAR):
    """Lloyd statistics of one pass where labelled rows (``ctx.aligned["y"]``) count for
    their class's cluster (``classes[j]`` is cluster ``j``'s)."""
    n_far = int(min(n_far, centers.shape[0]))
    return Aggregation("kmeans-seeded-lloyd", _SeededLloydChunk(n_far), _LloydCombine(n_far)).bind(
        np.ascontiguousarray(centers, dtype=np.float64), np.asarray(classes, dtype=np.int64))


# ---- the initialisation pass ------------------------------------------------------------
def _labelled(X, w, y):
    """The labelled rows of a chunk, their classes and weights (NumPy, float64)."""
    y = np.asarray(to_numpy(y), dtype=np.int64).reshape(-1)
    idx = np.flatnonzero(y >= 0)
    xp = array_namespace(X)
    Xl = np.asarray(to_numpy(xp.take(X, xp.asarray(idx), axis=0)), dtype=np.float64)
    wl = None if w is None else np.asarray(to_numpy(w), dtype=np.float64)[idx]
    return Xl, y[idx], wl


def _class_chunk(X, w, ctx):
    y = np.asarray(to_numpy(ctx.aligned["y"]), dtype=np.int64).reshape(-1)
    Xl, yl, wl = _labelled(X, w, y)
    out = cluster_stats_partial(Xl, yl, wl, moments=True)
    bad = np.flatnonzero(y < -1)
    out["n_bad_y"] = np.int64(bad.size)
    out["first_bad_y"] = np.int64(bad[0] + ctx.row_offset if bad.size else -1)
    out["bad_y_value"] = np.int64(y[bad[0]] if bad.size else 0)
    return out


def _class_combine(parts):
    out = cluster_stats_combine(parts)
    out["n_bad_y"] = np.int64(sum(int(p["n_bad_y"]) for p in parts))
    bad = [p for p in parts if int(p["first_bad_y"]) >= 0]
    first = min(bad, key=lambda p: int(p["first_bad_y"])) if bad else parts[0]
    out["first_bad_y"], out["bad_y_value"] = first["first_bad_y"], first["bad_y_value"]
    return out


def class_stats_aggregation():
    """Per known class (``y >= 0``): rows, weight and mean; and the values below -1."""
    return Aggregation("kmeans-classes", _class_chunk, _class_combine)


@dataclass(frozen=True)
class _UnlabelledSampleChunk:
    m: int
    seed: int
    n_total: int

    def __call__(self, X, w, ctx):
        y = np.asarray(to_numpy(ctx.aligned["y"]), dtype=np.int64).reshape(-1)
        free = (y < 0).astype(np.float64)
        if w is not None:
            free *= np.asarray(to_numpy(w), dtype=np.float64)
        # As sampling.sample_aggregation: a few times the chunk's expected share.
        cap = min(self.m, int(2 * self.m * ctx.n_rows / max(self.n_total, 1)) + 64 + self.m // 64)
        return reservoir_partial(X, free, self.m, self.seed, block_id=ctx.block_id,
                                 row_offset=ctx.row_offset, cap=cap)


@dataclass(frozen=True)
class _SampleCombine:
    m: int

    def __call__(self, parts):
        return top_combine(parts, self.m, "key", _SAMPLE_KEYS, "row")


def unlabelled_sample_aggregation(m, seed, n_total):
    """A weighted sample of ``m`` unlabelled rows (labelled rows weigh nothing)."""
    return Aggregation("kmeans-unlabelled-sample", _UnlabelledSampleChunk(int(m), int(seed),
                                                                         int(n_total)),
                       _SampleCombine(int(m)))


def _check_classes(stats, n_clusters):
    if int(stats["n_bad_y"]):
        raise DclustValueError(
            f"y has {int(stats['n_bad_y']):,} value(s) below -1 (first at row "
            f"{int(stats['first_bad_y']):,}: {int(stats['bad_y_value'])}); y holds the class of "
            "each row (an integer >= 0), or -1 where it is unknown."
        )
    classes = np.asarray(stats["label"], dtype=np.int64)
    if classes.shape[0] > n_clusters:
        raise DclustValueError(
            f"y holds {classes.shape[0]} known classes, more than n_clusters={n_clusters}; each "
            f"known class needs a cluster of its own. Pass n_clusters >= {classes.shape[0]}."
        )
    light = np.flatnonzero(np.asarray(stats["weight"]) <= 0)
    if light.size:
        raise DclustValueError(
            f"The labelled rows of class {int(classes[light[0]])} all have sample_weight 0, so "
            "that class has no centre to start from; give them a positive weight or mark them "
            "-1 (unknown)."
        )
    return classes


def _new_centers(init, rows, weights, fixed, n_new, seed, d, oversampling_factor, n_rounds):
    """The ``n_new`` centres of the unknown classes, seeded on unlabelled sample rows."""
    if rows.shape[0] < n_new:
        raise DclustValueError(
            f"Only {rows.shape[0]} unlabelled rows have a positive sample_weight, fewer than the "
            f"{n_new} clusters left after the known classes'."
        )
    rng = np.random.default_rng([seed, 7])
    if callable(init):
        return check_init_array(init(rows, n_new, np.random.RandomState(seed % 2**32)), n_new, d,
                                what="the init callable's result")
    if init == "random":
        return rows[:n_new].astype(np.float64)
    if init == "k-means++":
        return seeded_kmeans_plusplus(rows, weights, fixed, n_new, rng)
    return seeded_kmeans_parallel(rows, weights, fixed, n_new, rng,
                                  oversampling_factor=oversampling_factor, n_rounds=n_rounds)


class SeededLloyd(Lloyd):
    """One seeded k-means run: known classes' centres from their labelled rows, the
    other centres seeded on the unlabelled rows, then Lloyd iterations in which the
    labelled rows stay in their classes' clusters.

    Parameters
    ----------
    y : dask array of shape (n_samples,)
        Class of each row or -1, chunked like the session's ``X``
        (:meth:`~dclust.algorithms.session.FitSession.place_rows`).
    n_clusters, init, max_iter, tol, seed, init_size, oversampling_factor, n_init_rounds
        As :class:`~dclust.algorithms.kmeans.Lloyd`. An init array is used as given;
        its first ``n_known`` rows are the known classes' centres, in sorted class order.

    The state and result add ``classes``: the known classes, sorted (cluster ``j`` is
    class ``classes[j]``'s).
    """

    name = "KMeans"

    def __init__(self, n_clusters, y, **kw):
        super().__init__(n_clusters, **kw)
        self.y = y
        self.aligned = {"y": y}
        self.chainable = False  # its aggregation pins the known rows (aligned y)

    def aggregation(self, state, n_far=N_FAR):
        return seeded_lloyd_aggregation(state["centers"], state["classes"], n_far)

    def init_state(self, session):
        n, d, k = session.n_samples, session.n_features, self.n_clusters
        aggs = {"classes": class_stats_aggregation()}
        m = 0
        if not isinstance(self.init, np.ndarray):
            m = init_sample_size(n, k, self.init, self.init_size)
            aggs["sample"] = unlabelled_sample_aggregation(m, self.seed, n)
        res = session.run_pass(aggs, name="kmeans-seeded-init", precision_sensitive=False,
                               aligned=self.aligned)
        classes = _check_classes(res["classes"], k)
        fixed = np.asarray(res["classes"]["mean"], dtype=np.float64).reshape(-1, d)
        n_new = k - classes.shape[0]
        if isinstance(self.init, np.ndarray):
            centers = check_init_array(self.init, k, d)
        elif n_new == 0:
            centers = fixed
        elif classes.shape[0] == 0:
            # No row is labelled: the sample is the one plain k-means draws, and so is
            # the seeding.
            centers = seed_centers(res["sample"], m, n, k, self.init, self.seed,
                                   dtype=session.work_dtype, n_features=d,
                                   oversampling_factor=self.oversampling_factor,
                                   n_rounds=self.n_init_rounds)
        else:
            sample = res["sample"]
            keep = np.asarray(sample["weight"]) > 0  # labelled rows came with weight 0
            rows = np.ascontiguousarray(np.asarray(sample["x"])[keep], dtype=session.work_dtype)
            # As init_centers: a sample smaller than X is drawn by weight (its rows count
            # once each); all of X keeps its weights.
            weights = np.asarray(sample["weight"])[keep] if m >= n else np.ones(rows.shape[0])
            new = _new_centers(self.init, rows, weights, fixed, n_new, self.seed, d,
                               self.oversampling_factor, self.n_init_rounds)
            centers = np.vstack([fixed, new])
        return {"centers": np.ascontiguousarray(centers, dtype=np.float64), "n_iter": 0,
                "init_inertia": math.nan, "n_empty_total": 0, "converged": False,
                "shift": math.inf, "inertia": math.nan, "n_nonempty": 0, "classes": classes}

    def finalize(self, session, state):
        return {**super().finalize(session, state), "classes": state["classes"]}


def seeded_labels(labels, y, classes):
    """``labels`` (nearest centres) with every labelled row put in its class's cluster."""
    codes = class_codes(y, classes)
    labels = np.asarray(labels)
    return np.where(codes >= 0, codes, labels).astype(labels.dtype, copy=False)


def _seeded_labels_block(labels, y, *, classes):
    return seeded_labels(labels, y, classes)


def seeded_labels_like(labels, y, classes):
    """:func:`seeded_labels` for NumPy or (lazily) dask ``labels`` and ``y``."""
    import dask.array as da

    classes = np.asarray(classes, dtype=np.int64)
    if isinstance(labels, np.ndarray):
        return seeded_labels(labels, np.asarray(y.compute() if isinstance(y, da.Array) else y),
                             classes)
    y = da.asarray(y).rechunk((labels.chunks[0],))
    return da.map_blocks(partial(_seeded_labels_block, classes=classes), labels, y,
                         dtype=labels.dtype)
