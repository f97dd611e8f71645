"""MiniBatchKMeans against scikit-learn's update rule, reproducibility, partial_fit on
NumPy/dask/Zarr, forgetting (decay), online balanced assignment, CLI and messages."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans as SKMiniBatchKMeans
from sklearn.cluster._kmeans import _mini_batch_step
from sklearn.datasets import make_blobs

import dclust
from dclust.algorithms.minibatch import minibatch_step
from dclust.exceptions import DclustValueError


@pytest.fixture(scope="module")
def data():
    X, y = make_blobs(20_000, 6, centers=8, cluster_std=1.0, random_state=0)
    return X, y


def _inertia(X, C):
    return float((((X[:, None, :] - C[None]) ** 2).sum(-1)).min(1).sum())


def test_step_matches_sklearn_update_rule(data):
    X, _ = data
    rng = np.random.default_rng(1)
    C0 = X[:8].copy()
    counts = np.zeros(8)
    C1, counts1, Cn = C0.copy(), np.zeros(8), np.empty_like(C0)
    for _ in range(15):
        Xb = X[rng.integers(0, len(X), 128)]
        wb = rng.random(128) + 0.5
        ours, _ = minibatch_step(Xb, wb, C0, counts)
        ref = _mini_batch_step(Xb, wb, C1, Cn, counts1, np.random.RandomState(0),
                               random_reassign=False)
        C1 = Cn.copy()
        np.testing.assert_allclose(ours, ref, rtol=1e-12)
        np.testing.assert_allclose(C0, C1, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(counts, counts1, rtol=1e-12)


def test_reassignment_follows_sklearn_rule(data):
    X, _ = data
    C = X[:8].copy()
    C[1] = 1e3  # receives no rows, so its count stays low
    counts = np.array([1000.0, 5, 1000, 1000, 1000, 1000, 1000, 1000])
    Xb = X[:64]
    minibatch_step(Xb, None, C, counts, rng=np.random.default_rng(0), reassign=True,
                   reassignment_ratio=0.01)
    # The low-count centre moved onto a batch row and got the smallest other count.
    assert any(np.array_equal(C[1], r) for r in Xb)
    assert counts[1] == np.min(np.delete(counts, 1))


def test_partial_fit_matches_sklearn_from_same_init(data):
    X, _ = data
    init = X[:8].copy()
    ours = dclust.MiniBatchKMeans(8, init=init, reassignment_ratio=0.0)
    ref = SKMiniBatchKMeans(8, init=init, reassignment_ratio=0.0, n_init=1)
    for i in range(10):
        Xb = X[i * 500:(i + 1) * 500]
        ours.partial_fit(Xb)
        ref.partial_fit(Xb)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)


def test_fit_quality_close_to_sklearn(data):
    X, _ = data
    ours = dclust.MiniBatchKMeans(8, random_state=0, batch_size=512).fit(X)
    ref = SKMiniBatchKMeans(8, random_state=0, batch_size=512).fit(X)
    assert ours.inertia_ <= 1.05 * ref.inertia_
    assert ours.labels_.shape == (len(X),)
    assert ours.n_rows_read_ < 20 * len(X)
    assert ours.n_steps_ >= 1 and ours.n_iter_ >= 1


def test_same_model_for_numpy_and_any_chunking(data):
    X, _ = data
    a = dclust.MiniBatchKMeans(8, random_state=3, compute_labels=False, max_iter=2).fit(X)
    for chunks in (3000, 7001):
        b = dclust.MiniBatchKMeans(8, random_state=3, compute_labels=False, max_iter=2).fit(
            da.from_array(X, chunks=(chunks, 6)))
        np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
        assert b.n_steps_ == a.n_steps_


def test_dask_fit_reads_a_fraction_and_labels_lazily(data):
    X, _ = data
    Xd = da.concatenate([da.from_array(X, chunks=(2000, 6))] * 10)  # 200k rows
    m = dclust.MiniBatchKMeans(8, random_state=0, batch_size=256).fit(Xd)
    # Seeding sample (3 * batch_size) plus the batches, rounds gathered at most 2x ahead.
    assert m.n_steps_ * 256 + 768 <= m.n_rows_read_ <= 2 * m.n_steps_ * 256 + 768
    assert m.n_steps_ < 100 * Xd.shape[0] // 256  # stopped early (no improvement)
    assert isinstance(m.labels_, da.Array)
    assert m.inertia_ == pytest.approx(-m.score(Xd), rel=1e-9)


def test_checkpoint_resume_is_bit_identical(data, tmp_path):
    X, _ = data
    kw = dict(random_state=5, batch_size=64, max_no_improvement=None, max_iter=1,
              compute_labels=False)
    full = dclust.MiniBatchKMeans(8, **kw).fit(X)
    ck = str(tmp_path / "mb.ckpt.npz")
    from dclust.algorithms import minibatch

    class Stop(Exception):
        pass

    orig, calls = minibatch.MiniBatchLloyd.one_iteration, []

    def interrupted(self, session, state):
        if len(calls) == 1:
            raise Stop
        calls.append(1)
        return orig(self, session, state)

    minibatch.MiniBatchLloyd.one_iteration = interrupted
    try:
        with pytest.raises(Stop):
            dclust.MiniBatchKMeans(8, checkpoint=ck, **kw).fit(X)
    finally:
        minibatch.MiniBatchLloyd.one_iteration = orig
    resumed = dclust.MiniBatchKMeans(8, checkpoint=ck, resume=True, **kw).fit(X)
    np.testing.assert_array_equal(full.cluster_centers_, resumed.cluster_centers_)
    assert resumed.n_steps_ == full.n_steps_


def test_partial_fit_accepts_numpy_dask_and_zarr(data, tmp_path):
    X, _ = data
    import zarr

    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(1000, 6),
                          dtype=X.dtype)
    z[:] = X
    ref = dclust.MiniBatchKMeans(8, random_state=0)
    other = dclust.MiniBatchKMeans(8, random_state=0)
    for i, s in enumerate(range(0, 3000, 1000)):
        ref.partial_fit(X[s:s + 1000])
        batch = da.from_array(X, chunks=500)[s:s + 1000] if i == 1 else z[s:s + 1000]
        other.partial_fit(batch)
    other.partial_fit(zarr.open_array(str(tmp_path / "x.zarr"), mode="r"))
    ref.partial_fit(X)
    np.testing.assert_array_equal(ref.cluster_centers_, other.cluster_centers_)
    assert other.n_rows_seen_ == 3000 + len(X)
    np.testing.assert_allclose(other.seen_sum_, X[:3000].sum(0) + X.sum(0))


def test_decay_follows_a_shift():
    rng = np.random.default_rng(0)
    old = np.array([[0.0, 0], [10, 0], [0, 10]])
    new = old + np.array([30.0, 30])

    def batch(centers):
        return centers[rng.integers(0, 3, 300)] + rng.normal(size=(300, 2)) * 0.5

    def run(decay):
        m = dclust.MiniBatchKMeans(3, random_state=0, decay=decay)
        for _ in range(50):
            m.partial_fit(batch(old))
        for _ in range(30):
            m.partial_fit(batch(new))
        d = np.sqrt(((m.cluster_centers_[:, None] - new[None]) ** 2).sum(-1))
        return d.min(axis=0).max()  # every new blob has a centre this close

    assert run(decay=3.0) < 1.0
    assert run(decay=None) > run(decay=3.0)


def test_online_balanced_sizes_within_5_percent():
    X, _ = make_blobs(256 * 30, 5, centers=4, cluster_std=[0.5, 1, 2, 4], random_state=1)
    bk = dclust.BalancedKMeans(8, queue_size=4, random_state=0)
    window, k = [], 8
    for i in range(30):
        bk.partial_fit(X[i * 256:(i + 1) * 256])
        window = (window + [bk.labels_])[-5:]
        sizes = np.bincount(np.concatenate(window), minlength=k)
        target = sum(map(len, window)) / k
        assert np.abs(sizes - target).max() <= 0.05 * target
    assert bk.predict(X).shape == (len(X),)
    assert bk.queue_rows_.tolist() == [256] * 4


def test_sinkhorn_queue_balances_small_batches():
    rng = np.random.default_rng(0)
    q = dclust.SinkhornQueue(16, queue_size=8)
    for _ in range(5):
        scores = rng.normal(size=(64, 16)) + np.linspace(0, 3, 16)  # skewed logits
        labels = q.assign(scores, kind="score")
        assert np.bincount(labels, minlength=16).tolist() == [4] * 16
    assert len(q.queue) == 5


def test_save_load_continues_partial_fit(data, tmp_path):
    X, _ = data
    a = dclust.MiniBatchKMeans(8, random_state=0)
    b = dclust.MiniBatchKMeans(8, random_state=0)
    for i in range(4):
        a.partial_fit(X[i * 500:(i + 1) * 500])
    for i in range(2):
        b.partial_fit(X[i * 500:(i + 1) * 500])
    b.save(tmp_path / "m.npz")
    b = dclust.load(tmp_path / "m.npz")
    for i in range(2, 4):
        b.partial_fit(X[i * 500:(i + 1) * 500])
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), r"batch_size=0 is not valid; expected an integer >= 1"),
    (dict(reassignment_ratio=-1.0), r"reassignment_ratio=-1.0 is not valid"),
    (dict(decay=0.0), r"decay=0.0 is not valid"),
    (dict(decay_unit="days"), r"decay_unit='days' is not valid; expected 'batches' or 'rows'"),
    (dict(init="kmeans++"), r"Unknown init 'kmeans\+\+'"),
])
def test_bad_parameters(kw, match):
    X = np.zeros((50, 2))
    with pytest.raises(DclustValueError, match=match):
        dclust.MiniBatchKMeans(2, **kw).fit(X)


def test_partial_fit_refuses_other_features_and_nan():
    m = dclust.MiniBatchKMeans(2, random_state=0).partial_fit(np.random.rand(20, 3))
    with pytest.raises(DclustValueError, match="X has 4 features, but MiniBatchKMeans is "
                                               "expecting 3"):
        m.partial_fit(np.random.rand(20, 4))
    bad = np.random.rand(20, 3)
    bad[7, 1] = np.nan
    with pytest.raises(dclust.exceptions.DataError, match=r"first in row 7"):
        m.partial_fit(bad)


def test_balanced_partial_fit_refuses_relaxed():
    with pytest.raises(DclustValueError, match="partial_fit supports marginal='balanced' only"):
        dclust.BalancedKMeans(2, marginal="relaxed").partial_fit(np.random.rand(20, 3))


def test_cli_fit_minibatch_kmeans(tmp_path, data):
    from dclust.cli.main import main

    X, _ = data
    dclust.write_array(da.from_array(X.astype(np.float32), chunks=(5000, 6)),
                       str(tmp_path / "x.zarr"))
    rc = main(["fit", "minibatch-kmeans", str(tmp_path / "x.zarr"), "-k", "8", "--seed", "0",
               "--batch-size", "512", "--model", str(tmp_path / "m.npz"), "-q"])
    assert rc == 0
    m = dclust.load(tmp_path / "m.npz")
    assert type(m).__name__ == "MiniBatchKMeans" and m.cluster_centers_.shape == (8, 6)
