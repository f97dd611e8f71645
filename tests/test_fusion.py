"""Fused passes over persisted data: one task per worker thread, the same bits as the
per-chunk graph whatever the number of workers, the chunking or the placement, and no
chunk moves between workers once placed."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

import dclust
from dclust.reductions.engine import Aggregation, build_pass, run_pass
from dclust.reductions.monoids import fields_combine
from dclust.runtime.compute import cache_array, chunk_placement, compute_count, scatter_array


def _sum_chunk(X, w, ctx):
    X = np.asarray(X, dtype=np.float64)
    ww = np.ones(X.shape[0]) if w is None else np.asarray(w, dtype=np.float64)
    y = ctx.aligned.get("y")
    return {"s": (X * ww[:, None]).sum(0), "n": np.asarray(X.shape[0]),
            "y": np.asarray(0.0 if y is None else float(np.asarray(y, dtype=np.float64).sum())),
            "first": np.asarray([ctx.row_offset]), "bid": np.asarray([ctx.block_id])}


def _sum_combine(parts):
    out = fields_combine(parts, sums=("s", "n", "y"))
    out["first"] = np.concatenate([p["first"] for p in parts])
    out["bid"] = np.concatenate([p["bid"] for p in parts])
    return out


SUM = Aggregation("test-fused-sum", _sum_chunk, _sum_combine)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def _n_tasks(graph, prefix="dclust-pass"):
    return sum(len(layer) for name, layer in graph.layers.items() if name.startswith(prefix))


@pytest.mark.parametrize("rows", [7, 130, 1500])
@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_fused_pass_is_bit_identical_to_per_chunk_graph(rows, split_every):
    rng = np.random.default_rng(rows)
    Xn = (rng.normal(size=(4000, 5)) * 1e3).astype(np.float32)
    wn = rng.random(4000)
    yn = rng.normal(size=4000)
    X = scatter_array(Xn, rows)
    w = scatter_array(wn, rows, like=X)
    y = scatter_array(yn, rows, like=X)
    kw = dict(sample_weight=w, aligned={"y": y}, split_every=split_every)
    per_chunk = run_pass(X, {"a": SUM}, fuse=False, **kw)["a"]
    fused = run_pass(X, {"a": SUM}, fuse=True, **kw)["a"]
    _same(per_chunk, fused)
    np.testing.assert_array_equal(fused["bid"], np.arange(len(X.chunks[0])))
    np.testing.assert_array_equal(fused["first"], np.r_[0, np.cumsum(X.chunks[0])[:-1]])
    # The float64 re-run reads the same persisted chunks, cast in the task.
    _same(run_pass(X.astype(np.float64), {"a": SUM}, fuse=False, **kw)["a"],
          run_pass(X.astype(np.float64), {"a": SUM}, fuse=True, **kw)["a"])


def test_fused_graph_has_a_task_per_thread_pinned_to_its_worker(dask_client):
    Xn = np.arange(4000.0 * 3).reshape(4000, 3)
    X = scatter_array(Xn, 10)  # 400 chunks
    g_chunk, _ = build_pass(X, {"a": SUM}, fuse=False)
    g_fused, _ = build_pass(X, {"a": SUM}, fuse=True)
    assert _n_tasks(g_fused) < _n_tasks(g_chunk)
    pinned = [layer for name, layer in g_fused.layers.items()
              if name.startswith("dclust-pass") and layer.annotations]
    workers = set(dask_client.nthreads())
    assert {layer.annotations["workers"][0] for layer in pinned} <= workers
    assert all(layer.annotations["allow_other_workers"] for layer in pinned)
    assert sum(len(layer) for layer in pinned) == sum(dask_client.nthreads().values())


def test_persisting_places_contiguous_ranges_and_passes_move_no_chunk(dask_client):
    Xn = np.random.default_rng(2).normal(size=(6000, 4))
    X, (w,), persisted = cache_array(da.from_array(Xn, chunks=(50, 4)), "memory",
                                     also=(da.from_array(np.ones(6000), chunks=50),))
    assert persisted
    owner = chunk_placement(X).owner
    assert np.all(np.diff(owner) >= 0)  # one contiguous range per worker
    assert len(set(owner)) == len(dask_client.nthreads())
    for _ in range(3):
        run_pass(X, {"a": SUM}, sample_weight=w, fuse=True)
    who = dask_client.who_has(X)
    assert all(len(holders) == 1 for holders in who.values())  # no replica anywhere


def test_data_persisted_by_the_user_is_fused_where_it_lies(dask_client):
    Xn = np.random.default_rng(3).normal(size=(3000, 4))
    X = dask_client.persist(da.from_array(Xn, chunks=(37, 4)))
    graph, _ = build_pass(X, {"a": SUM}, fuse=True)
    assert any("-fused" in str(k) for k in graph.to_dict())
    _same(run_pass(X, {"a": SUM}, fuse=False, split_every=3)["a"],
          run_pass(X, {"a": SUM}, fuse=True, split_every=3)["a"])


def test_streamed_data_and_switch_keep_the_per_chunk_graph(monkeypatch):
    X = da.from_array(np.arange(300.0).reshape(100, 3), chunks=(10, 3))
    graph, _ = build_pass(X, {"a": SUM})
    assert not any("-fused" in str(k) for k in graph.to_dict())
    Xp = scatter_array(np.arange(300.0).reshape(100, 3), 10)
    monkeypatch.setenv("DCLUST_FUSE", "0")
    graph, key = build_pass(Xp, {"a": SUM})
    assert not any("-fused" in str(k) for k in graph.to_dict())
    monkeypatch.setenv("DCLUST_FUSE", "1")
    graph, key = build_pass(Xp, {"a": SUM})
    assert any("-fused" in str(k) for k in graph.to_dict())


def test_kmeans_fit_counts_one_computation_per_pass_fused_or_not(monkeypatch):
    from dclust.reductions import engine

    monkeypatch.setenv("DCLUST_ROUND", "1")  # one computation per pass
    fused_builds = []  # a fused graph, or the one task it becomes on one worker
    build, local = engine._build_fused, engine._run_local
    monkeypatch.setattr(engine, "_build_fused",
                        lambda *a, **k: fused_builds.append(1) or build(*a, **k))
    monkeypatch.setattr(engine, "_run_local", lambda *a: fused_builds.append(1) or local(*a))
    Xn = np.random.default_rng(4).normal(size=(5000, 3)).astype(np.float32)
    X = da.from_array(Xn, chunks=(400, 3))
    fits = []
    for fuse in ("0", "1"):
        monkeypatch.setenv("DCLUST_FUSE", fuse)
        before = compute_count()
        km = dclust.KMeans(3, random_state=1, max_iter=20, n_init=1, cache="memory",
                           progress=False).fit(X)
        fits.append((km, compute_count() - before))
    (a, na), (b, nb) = fits
    assert len(fused_builds) == nb - 1  # every pass fused (one computation persisted X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_
    assert na == nb


def test_kmeans_bit_identical_across_workers_chunkings_and_fusion():
    """1, 2 or 3 workers (1 or 2 threads), fused or per-chunk: the same bits for a given
    chunking; also with sample weights from NumPy."""
    rng = np.random.default_rng(9)
    Xn = (rng.normal(size=(8000, 4)) + rng.integers(0, 4, 8000)[:, None] * 3).astype(np.float32)
    wn = rng.random(8000)
    for rows in (300, 1111):
        results = []
        for n_workers, threads in ((1, 1), (2, 1), (3, 2)):
            with LocalCluster(n_workers=n_workers, threads_per_worker=threads, processes=False,
                              dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
                    Client(cluster) as client, client.as_current():
                for fuse in (False, True):
                    with pytest.MonkeyPatch.context() as mp:
                        mp.setenv("DCLUST_FUSE", "1" if fuse else "0")
                        X = da.from_array(Xn, chunks=(rows, 4))
                        w = da.from_array(wn, chunks=rows)
                        km = dclust.KMeans(4, random_state=3, max_iter=15, n_init=1,
                                           cache="memory", progress=False).fit(X, sample_weight=w)
                    results.append((km.cluster_centers_.copy(), km.inertia_, km.n_iter_))
        for other in results[1:]:
            np.testing.assert_array_equal(results[0][0], other[0])
            assert results[0][1:] == other[1:]


@pytest.mark.parametrize("fuse", [True, False])
def test_chained_passes_equal_passes_one_at_a_time(fuse):
    """run_chain: n passes in one computation, each state made on a worker by the same
    step the client would run, bit for bit."""
    from dclust.algorithms.kmeans import lloyd_aggregation, lloyd_update
    from dclust.reductions.engine import run_chain, run_pass

    def make_aggs(state):
        return {"lloyd": lloyd_aggregation(state["centers"])}

    def step(state, res):
        return {**state, **lloyd_update(state, res["lloyd"], 0.0)}

    X = da.from_array(np.random.default_rng(0).normal(size=(6000, 4)), chunks=(500, 4))
    X = X.persist()
    state = {"centers": X[:6].compute(), "n_iter": 0, "init_inertia": np.nan,
             "n_empty_total": 0}
    one_by_one = [state]
    for _ in range(4):
        one_by_one.append(step(one_by_one[-1], run_pass(X, make_aggs(one_by_one[-1]),
                                                         fuse=fuse)))
    before = compute_count()
    chained = run_chain(X, make_aggs, step, state, 4, fuse=fuse)
    assert compute_count() - before == 1
    for a, b in zip(chained, one_by_one[1:]):
        np.testing.assert_array_equal(a["centers"], b["centers"])
        assert a["inertia"] == b["inertia"] and a["n_iter"] == b["n_iter"]


def test_round_switch_refuses_bad_values(monkeypatch):
    from dclust.runtime.switches import round_limit

    monkeypatch.setenv("DCLUST_ROUND", "0")
    with pytest.raises(ValueError, match="DCLUST_ROUND='0' is not valid; expected a positive"):
        round_limit()
    monkeypatch.setenv("DCLUST_ROUND", "3")
    assert round_limit() == 3


def test_pass_and_chain_on_one_worker_are_one_task_with_the_same_bits(monkeypatch):
    """On one worker (the embedded cluster's case) a pass, or a chain of passes, is one
    task that runs the fused tasks' work on threads of its own: the same bits as the
    graph of fused tasks, combines and steps, with sample weights; on two workers, the
    graph."""
    from dclust.algorithms.kmeans import lloyd_aggregation, lloyd_update
    from dclust.reductions import engine

    calls = []
    local = engine._run_local
    monkeypatch.setattr(engine, "_run_local",
                        lambda *a: calls.append(a[5][0].__name__) or local(*a))

    def make_aggs(state):
        return {"lloyd": lloyd_aggregation(state["centers"])}

    def step(state, res):
        return {**state, **lloyd_update(state, res["lloyd"], 0.0)}

    rng = np.random.default_rng(5)
    Xn = rng.normal(size=(7000, 3)) + rng.integers(0, 3, 7000)[:, None] * 2.0
    wn = rng.random(7000)
    runs, passes = {}, {}
    for n_workers, switch in ((1, "1"), (1, "0"), (2, "1")):
        with LocalCluster(n_workers=n_workers, threads_per_worker=2, processes=False,
                          dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client, client.as_current():
            monkeypatch.setenv("DCLUST_ONE_TASK", switch)
            X = scatter_array(Xn, 600)  # a range of chunks per worker
            w = scatter_array(wn, 600, like=X)
            assert len(set(chunk_placement(X).owner)) == n_workers
            state = {"centers": Xn[:4].copy(), "n_iter": 0, "init_inertia": np.nan,
                     "n_empty_total": 0}
            before = compute_count()
            runs[(n_workers, switch)] = engine.run_chain(X, make_aggs, step, state, 5,
                                                         sample_weight=w)
            assert compute_count() - before == 1
            local_here = (n_workers, switch) == (1, "1")
            assert calls == (["_local_chain"] if local_here else []), (n_workers, switch)
            calls.clear()
            one = engine.run_pass(X, make_aggs(state), sample_weight=w)
            assert calls == (["_local_pass"] if local_here else []), (n_workers, switch)
            passes[(n_workers, switch)] = one["lloyd"]
            calls.clear()
    ref = runs[(1, "0")]
    for other in (runs[(1, "1")], runs[(2, "1")]):
        for a, b in zip(ref, other):
            np.testing.assert_array_equal(a["centers"], b["centers"])
            assert a["inertia"] == b["inertia"] and a["n_iter"] == b["n_iter"]
    for other in (passes[(1, "1")], passes[(2, "1")]):
        _same(passes[(1, "0")], other)


def test_one_task_switch(monkeypatch):
    from dclust.runtime.switches import one_task_enabled

    monkeypatch.setenv("DCLUST_ONE_TASK", "0")
    assert not one_task_enabled()
    monkeypatch.delenv("DCLUST_ONE_TASK")
    assert one_task_enabled()


def _big_state_chunk(X, w, ctx, table):
    return {"s": np.asarray(float(np.asarray(X, dtype=np.float64).sum()) + table[0])}


def _big_state_combine(parts):
    return fields_combine(parts, sums=("s",))


@pytest.mark.parametrize("one_task", ["1", "0"])
def test_large_pass_state_draws_no_large_graph_warning_but_large_data_still_does(
        monkeypatch, one_task):
    """Centres of a very large k are written into the graph on purpose (a lost worker's
    tasks are recomputed from it), so Dask's "Sending large graph" advice is not the
    user's to act on; a NumPy array written into the user's own Dask array still is."""
    import functools
    import warnings

    from dclust.reductions.engine import run_chain

    table = np.zeros(12 * 2**20 // 8)  # 12 MiB of state, over Dask's 10 MiB threshold
    agg = Aggregation("test-big-state", functools.partial(_big_state_chunk, table=table),
                      _big_state_combine)
    Xn = np.arange(4000.0).reshape(1000, 4)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client, client.as_current():
        monkeypatch.setenv("DCLUST_ONE_TASK", one_task)
        X = scatter_array(Xn, 250)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = run_pass(X, {"a": agg})["a"]["s"]
            states = run_chain(X, lambda s: {"a": agg}, lambda s, r: {"n": s["n"] + 1},
                               {"n": 0, "table": table}, 2)
        assert float(got) == Xn.sum() and states[-1]["n"] == 2
        assert not [w for w in caught if "large graph" in str(w.message)]
        big = da.from_array(np.ones((3 * 2**20 // 2, 2)), chunks=(2**18, 2))  # 24 MiB
        with pytest.warns(UserWarning, match="Sending large graph"):
            run_pass(big, {"a": SUM}, fuse=False)
