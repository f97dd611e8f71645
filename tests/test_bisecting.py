"""dclust.BisectingKMeans: scikit-learn's bisecting k-means as the oracle, rounds of splits
in the same passes, cuts of the tree, export, persistence, checkpoints and the CLI."""

from __future__ import annotations

import json
import re

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.cluster import BisectingKMeans as SKBisectingKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

import dclust
from dclust.kernels.bisect import descend_path, split_lloyd_partial, tree_directions
from dclust.runtime.compute import compute_count
from dclust.testing import interrupt_after


def bk(**kw):
    kw.setdefault("progress", False)
    kw.setdefault("random_state", 0)
    return dclust.BisectingKMeans(**kw)


@pytest.fixture(scope="module")
def blobs8():
    X, y = make_blobs(4000, n_features=5, centers=8, cluster_std=0.5, random_state=1)
    return X, y


def cube(n_per=250, seed=0):
    """8 equal blobs at the corners of a box of unequal sides: every 2-means splits along
    the longest remaining side, so the hierarchy is unique and balanced."""
    rng = np.random.default_rng(seed)
    corners = np.array([[a, b, c] for a in (-40, 40) for b in (-20, 20) for c in (-10, 10)],
                       dtype=float)
    X = np.concatenate([c + rng.normal(scale=0.5, size=(n_per, 3)) for c in corners])
    return X, np.repeat(np.arange(8), n_per)


def our_node_sets(est, X):
    path = descend_path(X, est.tree_.children, *tree_directions(est.tree_.children,
                                                                est.tree_.centers))
    return {frozenset(np.flatnonzero((path == n).any(axis=1)).tolist())
            for n in range(est.tree_.n_nodes)}


def sk_node_sets(est, X):
    """Row sets of every node of a fitted scikit-learn tree (going down its centres)."""
    out = set()

    def walk(node, rows):
        out.add(frozenset(rows.tolist()))
        if node.left is None:
            return
        C = np.vstack([node.left.center, node.right.center]) + est._X_mean
        d = ((X[rows, None, :] - C[None]) ** 2).sum(axis=2)
        right = d[:, 1] < d[:, 0]
        walk(node.left, rows[~right])
        walk(node.right, rows[right])

    walk(est._bisecting_tree, np.arange(X.shape[0]))
    return out


@pytest.mark.parametrize("strategy", ["biggest_inertia", "largest_cluster"])
def test_matches_sklearn_on_blobs(blobs8, strategy):
    X, y = blobs8
    ours = bk(n_clusters=8, bisecting_strategy=strategy).fit(da.from_array(X, chunks=500))
    ref = SKBisectingKMeans(8, random_state=0, bisecting_strategy=strategy).fit(X)
    labels = np.asarray(ours.labels_.compute())
    assert adjusted_rand_score(labels, ref.labels_) == 1.0
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-3)
    # (The inner nodes depend on the 2-means seeds here, scikit-learn's own too: the
    # trees are compared where the hierarchy is unique, below.)
    # labels_ and cluster_centers_ follow scikit-learn's depth-first leaf numbering.
    np.testing.assert_array_equal(labels, ours.predict(X))
    for j in range(8):
        np.testing.assert_allclose(ours.cluster_centers_[j], X[labels == j].mean(axis=0),
                                   atol=1e-8)
    assert ours.tree_.size[0] == 4000 and ours.converged_


@pytest.mark.parametrize("strategy, k", [("biggest_inertia", 6), ("largest_cluster", 4)])
def test_same_tree_as_sklearn_on_a_box(strategy, k):
    """Where the hierarchy is unique (no ties between leaves, k-means++ seeding: a random
    pair of rows can leave a 2-means, scikit-learn's too, in a poor local optimum)."""
    X, _ = cube()
    ours = bk(n_clusters=k, init="k-means++", bisecting_strategy=strategy).fit(X)
    ref = SKBisectingKMeans(k, init="k-means++", random_state=0,
                            bisecting_strategy=strategy).fit(X)
    assert our_node_sets(ours, X) == sk_node_sets(ref, X)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)


def test_uneven_tree_follows_sklearns_greedy_choice():
    """1 blob against 3: splitting every leaf of a depth would halve the lone tight blob;
    the greedy replay splits the 3-blob side twice instead, as scikit-learn does."""
    rng = np.random.default_rng(0)
    centres = np.array([[-80.0, 0], [20, 0], [40, 25], [40, -50]])
    X = np.concatenate([c + rng.normal(scale=1.0, size=(300, 2)) for c in centres])
    ours = bk(n_clusters=4, init="k-means++").fit(X)
    ref = SKBisectingKMeans(4, init="k-means++", random_state=0).fit(X)
    assert our_node_sets(ours, X) == sk_node_sets(ref, X)
    assert adjusted_rand_score(ours.predict(X), np.repeat(np.arange(4), 300)) == 1.0
    # Round 2 split both leaves; only the 3-blob side was accepted, its 2-blob child
    # followed in round 3 (the lone blob's split stays computed but unused).
    assert ours.n_rounds_ == 3 and ours.tree_.n_nodes == 7


def test_balanced_tree_one_round_per_depth_and_passes():
    """2^3 balanced blobs: 3 rounds; every Lloyd pass moves all the splits of its round."""
    X, truth = cube()
    Xd = da.from_array(X, chunks=400)
    before = compute_count()
    est = bk(n_clusters=8, init="k-means++", bisecting_strategy="largest_cluster",
             cache="none").fit(Xd)
    n_computes = compute_count() - before
    assert est.n_rounds_ == 3 and est.tree_.max_depth == 3
    assert (est.tree_.depth[est.tree_.leaves] == 3).all()
    # One sampling pass per round, one pass per Lloyd iteration of the round (all its
    # splits together), and one pass for the final node statistics.
    assert est.n_passes_ == est.n_rounds_ + est.n_iter_ + 1 == n_computes
    assert est.n_iter_ <= 3 * 4  # sklearn's 7 one-at-a-time bisections take >= 14
    ref = SKBisectingKMeans(8, init="k-means++", random_state=0,
                            bisecting_strategy="largest_cluster").fit(X)
    assert our_node_sets(est, X) == sk_node_sets(ref, X)
    assert adjusted_rand_score(est.predict(X), truth) == 1.0


def test_predict_at_levels():
    X, truth = cube()
    est = bk(n_clusters=8).fit(X)
    tree = est.tree_
    np.testing.assert_array_equal(est.predict(X, level=0), np.zeros(len(X)))
    for level in (1, 2):
        lab = est.predict(X, level=level)
        cut = tree.cut(level)
        assert lab.max() + 1 == cut.size == 2 ** level
        # Each label is the node at that depth on the row's leaf's path.
        leaf_nodes = tree.leaves[est.predict(X)]
        anc = leaf_nodes.copy()
        while True:
            up = tree.depth[anc] > level
            if not up.any():
                break
            anc[up] = tree.parent[anc[up]]
        np.testing.assert_array_equal(cut[lab], anc)
        np.testing.assert_array_equal(np.bincount(lab), tree.size[cut])
    np.testing.assert_array_equal(est.predict(X, level=10), est.predict(X))
    lazy = est.predict(da.from_array(X, chunks=700), level=1)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), est.predict(X, level=1))
    with pytest.raises(ValueError, match=r"level=-1 is not valid; expected an integer >= 0"):
        est.predict(X, level=-1)


def test_export_tree_json_and_newick(tmp_path):
    X, _ = cube()
    est = bk(n_clusters=5).fit(X)
    tree = est.tree_
    est.export_tree(tmp_path / "t.json")
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["n_nodes"] == tree.n_nodes == 9 and doc["n_leaves"] == 5
    nodes = doc["nodes"]
    assert nodes[0]["parent"] is None and nodes[0]["size"] == len(X)
    for node in nodes:
        assert set(node) >= {"id", "parent", "children", "size", "inertia", "center", "depth"}
        if node["children"]:
            kids = [nodes[c] for c in node["children"]]
            assert all(k["parent"] == node["id"] for k in kids)
            assert sum(k["size"] for k in kids) == node["size"]
            assert node["label"] is None
        else:
            np.testing.assert_allclose(node["center"], est.cluster_centers_[node["label"]])
    assert sum(n["inertia"] for n in nodes if not n["children"]) == pytest.approx(est.inertia_)
    est.export_tree(tmp_path / "t.nwk")
    text = (tmp_path / "t.nwk").read_text()
    assert text.endswith(";\n") and text.count("(") == text.count(")") == 4
    assert sorted(re.findall(r"c\d+", text)) == [f"c{j}" for j in range(5)]
    assert text.rstrip(";\n").endswith("n0")
    est.export_tree(tmp_path / "tree.txt", format="newick")
    assert (tmp_path / "tree.txt").read_text() == text
    with pytest.raises(ValueError, match=r"Cannot tell the tree format of .*tree\.bin"):
        est.export_tree(tmp_path / "tree.bin")
    with pytest.raises(ValueError, match=r"format='xml' is not valid; expected 'json' or 'newick'"):
        est.export_tree(tmp_path / "t.json", format="xml")


def test_save_load_round_trip(tmp_path):
    X, _ = cube()
    est = bk(n_clusters=6, bisecting_strategy="largest_cluster").fit(X)
    est.save(tmp_path / "bk.npz")
    back = dclust.load(tmp_path / "bk.npz")
    assert isinstance(back, dclust.BisectingKMeans) and back.get_params() == est.get_params()
    for a in ("parent", "children", "depth", "centers", "size", "weight", "inertia"):
        np.testing.assert_array_equal(getattr(back.tree_, a), getattr(est.tree_, a))
    np.testing.assert_array_equal(back.cluster_centers_, est.cluster_centers_)
    assert (back.inertia_, back.n_rounds_) == (est.inertia_, est.n_rounds_)
    for level in (None, 1, 2):
        np.testing.assert_array_equal(back.predict(X, level=level), est.predict(X, level=level))


def test_checkpoint_resume_is_bit_identical(tmp_path):
    X, _ = make_blobs(3000, n_features=4, centers=6, cluster_std=2.0, random_state=5)
    Xd = da.from_array(X, chunks=500)
    full = bk(n_clusters=6, n_init=2, init="k-means++").fit(Xd)
    ck = tmp_path / "bk.ckpt.npz"
    for stop_at in (2, 5):
        with interrupt_after(stop_at), pytest.raises(KeyboardInterrupt):
            bk(n_clusters=6, n_init=2, init="k-means++", checkpoint=ck).fit(Xd)
        resumed = bk(n_clusters=6, n_init=2, init="k-means++", checkpoint=ck,
                     resume=True).fit(Xd)
        np.testing.assert_array_equal(resumed.tree_.centers, full.tree_.centers)
        np.testing.assert_array_equal(resumed.tree_.children, full.tree_.children)
        assert resumed.inertia_ == full.inertia_ and resumed.n_passes_ == full.n_passes_


def test_weights_inits_and_small_k():
    X, truth = cube(n_per=100)
    w = np.random.default_rng(1).integers(1, 4, len(X)).astype(float)
    weighted = bk(n_clusters=8, init="k-means++").fit(X, sample_weight=w)
    repeated = bk(n_clusters=8, init="k-means++").fit(np.repeat(X, w.astype(int), axis=0))
    assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-9)
    assert adjusted_rand_score(weighted.labels_, truth) == 1.0
    for init in ("k-means||", lambda x, k, rs: x[rs.choice(len(x), k, replace=False)]):
        est = bk(n_clusters=8, init=init, n_init=3).fit(X)
        assert adjusted_rand_score(est.labels_, truth) == 1.0
    one = bk(n_clusters=1).fit(X)
    np.testing.assert_allclose(one.cluster_centers_[0], X.mean(axis=0))
    assert one.inertia_ == pytest.approx(((X - X.mean(axis=0)) ** 2).sum())
    assert one.score(X) == pytest.approx(-one.inertia_)
    assert one.transform(X[:3]).shape == (3, 1)


def test_split_kernel_matches_reference():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3)).astype(np.float32)
    w = rng.uniform(0.5, 2, 500)
    # A root split at x0 = 0 with two leaves (1, 2); leaf 2 is split by two runs.
    children = np.array([[1, 2], [-1, -1], [-1, -1]])
    centers = np.array([[0, 0, 0], [-1, 0, 0], [1, 0, 0]], dtype=float)
    pairs = np.array([[[[1, 1, 0], [1, -1, 0]], [[0.5, 0, 1], [1.5, 0, -1]]]])
    slot = np.array([-1, -1, 0])
    out = split_lloyd_partial(X, w, children, *tree_directions(children, centers), slot, pairs,
                              np.array([[True, True]]))
    X64 = X.astype(float)
    in_leaf = X64[:, 0] > 0
    for r in range(2):
        d = ((X64[:, None, :] - pairs[0, r][None]) ** 2).sum(axis=2)
        side = (d[:, 1] < d[:, 0]).astype(int)
        for c in (0, 1):
            m = in_leaf & (side == c)
            np.testing.assert_allclose(out["sums"][0, r, c], (X64[m] * w[m, None]).sum(axis=0))
            assert out["weights"][0, r, c] == pytest.approx(w[m].sum())
            assert out["counts"][0, r, c] == m.sum()
            assert out["inertia"][0, r, c] == pytest.approx((w[m] * d[m, c]).sum())
            far = np.flatnonzero(m)[np.argmax(d[m, c])]
            assert out["far_row"][0, r, c] == far


def test_cli_fit_bisecting(tmp_path, capsys):
    from dclust.cli.main import main

    X, _ = cube(n_per=100)
    path = str(tmp_path / "x.zarr")
    dclust.write_array(da.from_array(X, chunks=200), path)
    assert main(["fit", "bisecting-kmeans", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--bisecting-strategy" in help_text and "--n-init" in help_text
    assert {p.name for p in dclust.BisectingKMeans._params} == \
        set(dclust.BisectingKMeans._get_param_names())
    model, labels = tmp_path / "bk.npz", tmp_path / "labels.zarr"
    assert main(["fit", "bisecting-kmeans", path, "-k", "4", "--bisecting-strategy",
                 "largest_cluster", "--seed", "0", "--model", str(model), "--labels",
                 str(labels), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "BisectingKMeans k=4" in out and "rounds" in out
    est = dclust.load(model)
    assert est.bisecting_strategy == "largest_cluster" and est.cluster_centers_.shape == (4, 3)
    np.testing.assert_array_equal(zarr.open_array(str(labels), mode="r")[...], est.predict(X))


def test_cli_fit_bisecting_exports_the_tree(tmp_path, capsys):
    from dclust.cli.main import main

    X, _ = cube(n_per=100)
    path = str(tmp_path / "x.zarr")
    dclust.write_array(da.from_array(X, chunks=200), path)
    model, tree_json, tree_nwk = tmp_path / "bk.npz", tmp_path / "t.json", tmp_path / "t.nwk"
    assert main(["fit", "bisecting-kmeans", "--help"]) == 0
    assert "--export-tree" in capsys.readouterr().out
    assert main(["fit", "bisecting-kmeans", path, "-k", "5", "--seed", "0", "--model",
                 str(model), "--export-tree", str(tree_json), "--export-tree", str(tree_nwk),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"tree: {tree_json}" in out and f"tree: {tree_nwk}" in out
    est = dclust.load(model)
    doc = json.loads(tree_json.read_text())
    assert doc == json.loads(est.tree_.to_json())
    leaves = [n for n in doc["nodes"] if not n["children"]]
    assert len(leaves) == doc["n_leaves"] == 5
    assert sum(n["size"] for n in leaves) == X.shape[0] == doc["nodes"][0]["size"]
    assert sorted(n["label"] for n in leaves) == list(range(5))
    assert tree_nwk.read_text() == est.tree_.to_newick()
    assert not [p.name for p in tmp_path.iterdir() if "tmp" in p.name]  # moved into place

    # Outputs are checked before the fit: an existing tree, an unknown extension.
    args = ["fit", "bisecting-kmeans", path, "-k", "2", "--model", str(tmp_path / "b2.npz")]
    assert main(args + ["--export-tree", str(tree_json)]) == 2
    assert re.search(r"The tree file '.*t\.json' already exists; pass --overwrite",
                     capsys.readouterr().err)
    assert main(args + ["--export-tree", str(tmp_path / "t.txt")]) == 2
    assert re.search(r"Cannot tell the tree format of --export-tree '.*t\.txt' from its "
                     r"extension; name it \.json, \.nwk or \.newick", capsys.readouterr().err)
    assert not (tmp_path / "b2.npz").exists()


def test_errors():
    X, _ = cube(n_per=10)
    with pytest.raises(ValueError, match=r"Unknown init 'kmeans\+\+'; expected one of 'random'"):
        bk(init="kmeans++").fit(X)
    with pytest.raises(ValueError, match=r"an array of centres cannot seed every bisection"):
        bk(init=np.zeros((8, 3))).fit(X)
    with pytest.raises(ValueError, match=r"bisecting_strategy='largest' is not valid; expected "
                                         r"one of 'biggest_inertia', 'largest_cluster'"):
        bk(bisecting_strategy="largest").fit(X)
    with pytest.raises(ValueError, match=r"algorithm='elkan' is not available"):
        bk(algorithm="elkan").fit(X)
    with pytest.raises(ValueError, match=r"n_samples=80 must be >= n_clusters=100"):
        bk(n_clusters=100).fit(X)
    with pytest.raises(dclust.NotFittedError, match="not fitted yet"):
        bk().predict(X)
    with pytest.raises(dclust.NotFittedError, match="not fitted yet"):
        bk().export_tree("t.json")
