"""k-means for many values of k at once: one pass per iteration for the whole sweep.

:class:`LloydSweep` is an :class:`~dclust.algorithms.session.Algorithm` whose state holds
the centres of every candidate (each ``k``, and each of ``n_init`` runs per ``k``). A
pass binds one :func:`~dclust.algorithms.kmeans.lloyd_aggregation` per candidate still
running, and the pass engine reads each chunk once for all of them; a candidate that has
converged drops out of the later passes. A sweep over ten values of ``k`` therefore
reads the data about as often as the slowest of its fits alone.

Same seeds, same fits
    Run ``r`` of every ``k`` is seeded with ``seed + r``, as run ``r`` of a separate
    ``KMeans(n_clusters=k, random_state=seed)``. The initialisation pass draws, for each
    run, ONE sample of the largest size any ``k`` seeds on, and seeds each ``k`` on its
    first ``init_sample_size(n, k)`` rows with its own generator
    (``default_rng([seed + r, 7])``): those rows are the sample a separate fit with that
    seed draws (:func:`~dclust.algorithms.kmeans.seed_centers`). Each candidate's
    iterations are then :func:`~dclust.algorithms.kmeans.lloyd_update` on the same
    statistics as a separate fit's (same kernel, chunks and reduction tree), so every
    ``k`` ends with the same centres, iterations and inertia, bit for bit, as the
    separate fit with the same ``random_state``, data and chunking.

Criteria, at little or no cost in passes (:meth:`LloydSweep.finalize`):

* inertia and Calinski-Harabasz from the final Lloyd statistics (the per-cluster sums
  and weights of the last pass; no pass of their own);
* Davies-Bouldin and, with known classes ``y``, the accuracy on the labelled rows: one
  pass for every ``k`` together, after the final centres;
* the silhouette on a uniform sample of rows: the first rows of the initialisation's
  sample (no pass of its own), scored on the client for every ``k`` from one set of
  pairwise distances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._xp import to_numpy
from ..kernels.cluster_metrics import pair_counts_combine, pair_counts_partial, silhouette_rows
from ..kernels.lloyd import nearest_center
from ..kernels.metrics import pairwise_distances
from ..reductions.engine import Aggregation
from .kmeans import _tolerance, init_sample_size, lloyd_aggregation, lloyd_update, seed_centers
from .sampling import sample_aggregation
from .session import Algorithm

__all__ = ["LloydSweep", "calinski_harabasz_from_stats", "davies_bouldin_from_spreads",
           "sample_silhouettes", "accuracy_from_pairs", "kneedle"]


def _key(k, run):
    return f"k{k}-run{run}"


# ---- criteria from statistics ------------------------------------------------------------
def calinski_harabasz_from_stats(sums, weights, inertia, centers):
    """Calinski-Harabasz score of the labelling a Lloyd pass made, from its statistics.

    ``sums`` and ``weights`` are the per-cluster (weighted) sums and weights of the rows
    nearest each of ``centers``, and ``inertia`` their squared distances to them. The
    clusters' means are ``m_j = sums_j / weights_j``; the within dispersion is
    ``inertia - sum_j weights_j ||m_j - c_j||^2`` (the rows' squares around ``m_j``
    rather than ``c_j``; the two agree once the centres are the means), and the between
    dispersion ``sum_j weights_j ||m_j - mean||^2``. Equal to
    ``sklearn.metrics.calinski_harabasz_score`` of those labels (without weights; with
    them, each row counts ``w`` times). NaN with fewer than 2 non-empty clusters.
    """
    sums = np.asarray(sums, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    nz = w > 0
    n_labels = int(nz.sum())
    n = float(w.sum())
    if n_labels < 2 or n_labels >= n:
        return math.nan
    means = sums[nz] / w[nz, None]
    mean = sums.sum(axis=0) / n
    diff = means - mean
    extra = float(np.sum(w[nz] * np.einsum("ij,ij->i", diff, diff)))
    off = means - np.asarray(centers, dtype=np.float64)[nz]
    intra = float(inertia) - float(np.sum(w[nz] * np.einsum("ij,ij->i", off, off)))
    if intra <= 0.0:
        return 1.0  # scikit-learn's value for zero within-cluster dispersion
    return float(extra * (n - n_labels) / (intra * (n_labels - 1.0)))


def davies_bouldin_from_spreads(spreads, weights, means):
    """Davies-Bouldin score from each cluster's summed distances of its rows to its mean.

    scikit-learn's rules, in its order (:func:`dclust.metrics.davies_bouldin_score`);
    empty clusters are left out. NaN with fewer than 2 non-empty clusters.
    """
    w = np.asarray(weights, dtype=np.float64)
    nz = w > 0
    if int(nz.sum()) < 2:
        return math.nan
    intra = np.asarray(spreads, dtype=np.float64)[nz] / w[nz]
    centroids = np.asarray(means, dtype=np.float64)[nz]
    dist = pairwise_distances(centroids, centroids, "euclidean")
    if np.all(np.isclose(intra, 0.0)) or np.all(np.isclose(dist, 0.0)):
        return 0.0
    dist[dist == 0] = np.inf
    return float(np.mean(np.max((intra[:, None] + intra) / dist, axis=1)))


def accuracy_from_pairs(pairs):
    """Clustering accuracy (best one-to-one matching) from a pair-count table, as
    :func:`dclust.metrics.accuracy`; NaN for no rows."""
    from scipy.optimize import linear_sum_assignment

    n = int(np.sum(pairs["count"]))
    if n == 0:
        return math.nan
    classes, row = np.unique(pairs["true"], return_inverse=True)
    clusters, col = np.unique(pairs["pred"], return_inverse=True)
    C = np.zeros((classes.shape[0], clusters.shape[0]), dtype=np.int64)
    C[row, col] = pairs["count"]
    r, c = linear_sum_assignment(C, maximize=True)
    return float(C[r, c].sum() / n)


def sample_silhouettes(S, labelings, *, metric="euclidean", tile=1024):
    """Mean silhouette of the rows ``S`` under each labelling, from one set of distances.

    Each tile of the ``m x m`` distance matrix is formed once and summed per cluster for
    every labelling; the rows' silhouettes follow scikit-learn's rules
    (:func:`~dclust.kernels.cluster_metrics.silhouette_rows`), so each value equals
    ``sklearn.metrics.silhouette_score(S, labels)``. NaN where a labelling has fewer
    than 2 or as many labels as rows.

    Parameters
    ----------
    S : ndarray of shape (m, n_features)
    labelings : list of int arrays of shape (m,)
    metric : str, default="euclidean"
    tile : int, default=1024
        Rows of distances formed at once (``tile x m`` float64).

    Returns
    -------
    scores : list of float
    """
    S = np.ascontiguousarray(S, dtype=np.float64)
    m = S.shape[0]
    coded = []
    for lab in labelings:
        values, codes = np.unique(np.asarray(lab), return_inverse=True)
        ok = 2 <= values.shape[0] <= m - 1
        onehot = np.zeros((m, values.shape[0])) if ok else None
        if ok:
            onehot[np.arange(m), codes] = 1.0
        coded.append((codes, np.bincount(codes, minlength=values.shape[0]), onehot,
                      np.zeros((m, values.shape[0])) if ok else None))
    if any(c[2] is not None for c in coded):
        for r0 in range(0, m, tile):
            D = pairwise_distances(S[r0 : r0 + tile], S, metric)
            for _, _, onehot, sums in coded:
                if onehot is not None:
                    sums[r0 : r0 + tile] = D @ onehot
    return [math.nan if onehot is None else float(np.mean(silhouette_rows(sums, codes, freqs)))
            for codes, freqs, onehot, sums in coded]


def kneedle(ks, values, *, decreasing=True):
    """The elbow of a convex curve by the "kneedle" rule (Satopaa et al., 2011).

    ``ks`` and ``values`` are scaled to [0, 1]; for a decreasing convex curve (inertia
    against ``k``) the elbow is the ``k`` where ``(1 - value) - k`` is largest, the point
    farthest above the chord from the first to the last point. Works for unevenly
    spaced ``ks``.

    Returns
    -------
    scores : ndarray of shape (len(ks),)
        The difference curve; its argmax is the elbow. NaN with fewer than 3 points or
        no finite spread.
    """
    k = np.asarray(ks, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    out = np.full(k.shape[0], math.nan)
    ok = np.isfinite(v)
    if ok.sum() < 3:
        return out
    kk, vv = k[ok], v[ok]
    span_k, span_v = kk.max() - kk.min(), vv.max() - vv.min()
    if span_k <= 0 or span_v <= 0:
        return out
    xn = (kk - kk.min()) / span_k
    yn = (vv - vv.min()) / span_v
    out[ok] = ((1.0 - yn) if decreasing else yn) - xn
    return out


# ---- the criteria pass -------------------------------------------------------------------
@dataclass(frozen=True)
class _CriteriaChunk:
    spreads: bool
    pairs: bool

    def __call__(self, X, w, ctx, centers, means):
        labels, _ = nearest_center(X, centers)
        labels = np.asarray(to_numpy(labels), dtype=np.int64)
        out = {}
        if self.spreads:
            Xh = np.asarray(to_numpy(X), dtype=np.float64)
            diff = Xh - means[labels]
            dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
            if w is not None:
                dist = dist * np.asarray(to_numpy(w), dtype=np.float64)
            out["spread"] = np.bincount(labels, weights=dist, minlength=centers.shape[0])
        if self.pairs:
            y = np.asarray(to_numpy(ctx.aligned["y"]), dtype=np.int64).reshape(-1)
            lab = y >= 0
            out["pairs"] = pair_counts_partial(y[lab], labels[lab])
        return out


def _criteria_combine(parts):
    out = {}
    if "spread" in parts[0]:
        out["spread"] = np.sum([p["spread"] for p in parts], axis=0)
    if "pairs" in parts[0]:
        out["pairs"] = pair_counts_combine([p["pairs"] for p in parts])
    return out


def criteria_aggregation(centers, means, *, spreads, pairs):
    """Per cluster of the nearest ``centers``: summed distances to ``means`` (for
    Davies-Bouldin) and the (class, cluster) counts of the labelled rows."""
    return Aggregation("select-k-criteria", _CriteriaChunk(bool(spreads), bool(pairs)),
                       _criteria_combine).bind(
        np.ascontiguousarray(centers, dtype=np.float64),
        np.ascontiguousarray(means, dtype=np.float64))


def _means(c):
    """Cluster means of the last statistics (the centre where a cluster is empty)."""
    w = np.asarray(c["weights"])
    means = np.array(c["centers"], dtype=np.float64)
    nz = w > 0
    means[nz] = np.asarray(c["sums"])[nz] / w[nz, None]
    return means


# ---- the sweep -----------------------------------------------------------------------------
class LloydSweep(Algorithm):
    """k-means for every ``k`` of ``ks`` (``n_init`` runs each) in shared passes.

    Parameters
    ----------
    ks : sequence of int
    init : {"k-means||", "k-means++", "random"} or callable
    n_init : int
        Runs per ``k``; run ``r`` is seeded with ``seed + r`` and the lowest inertia wins
        (the first on ties), as ``KMeans(n_init=...)``.
    max_iter, tol, init_size, oversampling_factor, n_init_rounds
        As :class:`~dclust.algorithms.kmeans.Lloyd`.
    seed : int
    davies_bouldin : bool
        Compute Davies-Bouldin (one more pass, shared by every ``k``).
    silhouette_size : int or None
        Rows of the silhouette's sample (``None``: no silhouette).
    y : dask array or None
        Known classes (``-1`` unknown), placed like ``X``: the accuracy of each ``k`` on
        the labelled rows (in the Davies-Bouldin pass).

    The result maps ``str(k)`` to the best run's ``centers``, ``inertia``, ``n_iter``,
    ``converged``, ``n_nonempty``, ``n_empty_total``, ``init_inertia``,
    ``calinski_harabasz`` and, as asked, ``davies_bouldin``, ``silhouette`` and
    ``accuracy`` (NaN where undefined, as for ``k=1``).
    """

    name = "SelectK"
    init_label = "k-means sample"

    def __init__(self, ks, *, init="k-means||", n_init=1, max_iter=300, tol=1e-4, seed=0,
                 init_size=None, oversampling_factor=2.0, n_init_rounds=5,
                 davies_bouldin=True, silhouette_size=None, y=None):
        self.ks = [int(k) for k in ks]
        self.init = init
        self.n_init = int(n_init)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.seed = int(seed)
        self.init_size = init_size
        self.oversampling_factor = oversampling_factor
        self.n_init_rounds = n_init_rounds
        self.davies_bouldin = bool(davies_bouldin)
        self.silhouette_size = None if silhouette_size is None else int(silhouette_size)
        self.y = y

    def _done(self, c):
        return bool(c["converged"]) or c["n_iter"] >= self.max_iter

    def init_state(self, session):
        n, d = session.n_samples, session.n_features
        sizes = {k: init_sample_size(n, k, self.init, self.init_size) for k in self.ks}
        m = max(sizes.values())
        m0 = m if self.silhouette_size is None else max(m, min(self.silhouette_size, n))
        # One sample per run, all in one pass; run 0's also serves the silhouette.
        aggs = {f"run{r}": sample_aggregation(m0 if r == 0 else m, self.seed + r, n)
                for r in range(self.n_init)}
        samples = session.run_pass(aggs, name="select-k-sample", precision_sensitive=False)
        cands = {}
        for k in self.ks:
            for r in range(self.n_init):
                C = seed_centers(samples[f"run{r}"], sizes[k], n, k, self.init, self.seed + r,
                                 dtype=session.work_dtype, n_features=d,
                                 oversampling_factor=self.oversampling_factor,
                                 n_rounds=self.n_init_rounds)
                cands[_key(k, r)] = {
                    "k": k, "run": r, "centers": C, "n_iter": 0, "init_inertia": math.nan,
                    "n_empty_total": 0, "converged": False, "shift": math.inf,
                    "inertia": math.nan, "n_nonempty": 0,
                    "sums": np.zeros((k, d)), "weights": np.zeros(k)}
        state = {"n_iter": 0, "cands": cands}
        if self.silhouette_size is not None:
            s = samples["run0"]
            take = min(self.silhouette_size, s["x"].shape[0])
            state["silhouette_x"] = np.ascontiguousarray(s["x"][:take])
        return state

    def one_iteration(self, session, state):
        cands = dict(state["cands"])
        running = [key for key, c in cands.items() if not self._done(c)]
        res = session.run_pass({key: lloyd_aggregation(cands[key]["centers"]) for key in running},
                               name="select-k-lloyd")
        tol_abs = _tolerance(session.data_stats, self.tol)
        for key in running:
            c = cands[key]
            cands[key] = {**c, **lloyd_update(c, res[key], tol_abs),
                          "sums": np.asarray(res[key]["sums"]),
                          "weights": np.asarray(res[key]["weights"])}
        return {**state, "n_iter": state["n_iter"] + 1, "cands": cands}

    def converged(self, state):
        return all(self._done(c) for c in state["cands"].values())

    def report(self, state):
        running = sum(not self._done(c) for c in state["cands"].values())
        return "iter", state["n_iter"], {"running": running}

    def finalize(self, session, state):
        cands = {key: dict(c) for key, c in state["cands"].items()}
        # Inertia and statistics of the final centres, where the last pass's were of the
        # centres before them (one pass for all; a separate fit makes the same one).
        need = [key for key, c in cands.items()
                if c["n_iter"] == 0 or not (c["converged"] and c["shift"] == 0.0)]
        if need:
            res = session.run_pass({key: lloyd_aggregation(cands[key]["centers"], 0)
                                    for key in need}, name="select-k-inertia")
            for key in need:
                r = res[key]
                cands[key].update(inertia=float(r["inertia"]),
                                  n_nonempty=int((r["weights"] > 0).sum()),
                                  sums=np.asarray(r["sums"]), weights=np.asarray(r["weights"]))
        best = {}
        for k in self.ks:
            for r in range(self.n_init):
                c = cands[_key(k, r)]
                if k not in best or c["inertia"] < best[k]["inertia"]:
                    best[k] = c
        out = {}
        for k, c in best.items():
            out[str(k)] = {
                "k": k, "centers": c["centers"], "inertia": float(c["inertia"]),
                "n_iter": int(c["n_iter"]), "converged": bool(c["converged"]),
                "n_nonempty": int(c["n_nonempty"]), "n_empty_total": int(c["n_empty_total"]),
                "init_inertia": float(c["init_inertia"]),
                "calinski_harabasz": calinski_harabasz_from_stats(
                    c["sums"], c["weights"], c["inertia"], c["centers"]),
            }
        if self.davies_bouldin or self.y is not None:
            aggs = {str(k): criteria_aggregation(c["centers"], _means(c),
                                                 spreads=self.davies_bouldin,
                                                 pairs=self.y is not None)
                    for k, c in best.items()}
            res = session.run_pass(aggs, name="select-k-criteria",
                                   aligned=None if self.y is None else {"y": self.y})
            for k, c in best.items():
                r = res[str(k)]
                if self.davies_bouldin:
                    out[str(k)]["davies_bouldin"] = davies_bouldin_from_spreads(
                        r["spread"], c["weights"], _means(c))
                if self.y is not None:
                    out[str(k)]["accuracy"] = accuracy_from_pairs(r["pairs"])
        if self.silhouette_size is not None:
            S = state["silhouette_x"]
            labelings = [np.asarray(nearest_center(np.asarray(S), best[k]["centers"])[0])
                         for k in self.ks]
            for k, score in zip(self.ks, sample_silhouettes(S, labelings)):
                out[str(k)]["silhouette"] = score
        return {"per_k": out, "n_iter": state["n_iter"]}
