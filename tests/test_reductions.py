"""The pass engine: tree reductions, invariance to chunking and workers, compute budget."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dclust.algorithms.datachecks import data_stats_aggregation
from dclust.algorithms.kmeans import lloyd_aggregation
from dclust.reductions.engine import Aggregation, build_pass, group_size, run_pass
from dclust.reductions.monoids import fields_combine, top_combine
from dclust.runtime.compute import compute_count


def _sum_chunk(X, w, ctx):
    return {"s": np.asarray(X, dtype=np.float64).sum(0), "n": np.asarray(X.shape[0]),
            "first": np.asarray([ctx.row_offset]), "bid": np.asarray([ctx.block_id])}


def _sum_combine(parts):
    out = fields_combine(parts, sums=("s", "n"))
    out["first"] = np.concatenate([p["first"] for p in parts])
    out["bid"] = np.concatenate([p["bid"] for p in parts])
    return out


SUM = Aggregation("test-sum", _sum_chunk, _sum_combine)


def test_build_pass_computes_nothing_and_tree_is_log_depth():
    X = da.ones((1000, 3), chunks=(10, 3))
    before = compute_count()
    graph, key = build_pass(X, {"s": SUM}, split_every=4)
    assert compute_count() == before
    layer = [v for k, v in graph.layers.items() if k.startswith("dclust-pass")][0]
    depth = max(k[1] for k in layer if isinstance(k, tuple))
    n_tasks = len([k for k in layer if isinstance(k, tuple) and k[1] == 0])
    # 100 tiny chunks are read several to a task; the tree over those tasks is log-depth.
    assert n_tasks == int(np.ceil(100 / group_size(X.chunks[0], 24)))
    assert 1 < n_tasks < 100
    assert depth == int(np.ceil(np.log(n_tasks) / np.log(4)))
    assert key[1] == depth


def _scaled_chunk(X, w, ctx, scale):
    return {"s": np.asarray(X, dtype=np.float64).sum(0) * scale[: X.shape[1]]}


def _scaled_combine(parts):
    return fields_combine(parts, sums=("s",))


@pytest.mark.parametrize("state_rows", [3, 2_000_000])
def test_pass_state_inline_when_small_else_one_task(state_rows):
    """Small per-pass state (centres) rides in every task, sparing a round trip before
    the chunks start; large state is held once by a task of its own. Same result."""
    X = da.from_array(np.arange(60.0).reshape(20, 3), chunks=(5, 3))
    scale = np.arange(1.0, state_rows + 1.0)
    agg = Aggregation("scaled", _scaled_chunk, _scaled_combine).bind(scale)
    graph, _ = build_pass(X, {"a": agg})
    layer = [v for k, v in graph.layers.items() if k.startswith("dclust-pass")][0]
    state_keys = [k for k in layer if isinstance(k, str) and k.endswith("-state")]
    assert len(state_keys) == (0 if state_rows == 3 else 1)  # 4 tasks x 16 MB > 8 MiB
    out = run_pass(X, {"a": agg})["a"]["s"]
    np.testing.assert_allclose(out, np.arange(60.0).reshape(20, 3).sum(0) * scale[:3])


def test_group_size_depends_on_chunking_only():
    assert group_size((10_000_000,) * 8, 128) == 1
    assert group_size((100,) * 10_000, 64) == 625
    assert group_size((100,) * 10, 64) == 1
    assert group_size((1_000_000,) * 100, 64) == 1


def test_chunk_context_and_order():
    X = da.from_array(np.arange(60.0).reshape(20, 3), chunks=((3, 7, 0, 10), 3))
    out = run_pass(X, {"s": SUM}, split_every=2)["s"]
    np.testing.assert_array_equal(out["first"], [0, 3, 10, 10])
    np.testing.assert_array_equal(out["bid"], [0, 1, 2, 3])
    np.testing.assert_allclose(out["s"], np.arange(60.0).reshape(20, 3).sum(0))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunks=st.lists(st.integers(0, 400), min_size=1, max_size=9).filter(lambda c: sum(c) >= 8),
    split_every=st.integers(2, 5),
)
def test_lloyd_pass_invariant_to_chunking(chunks, split_every):
    rng = np.random.default_rng(0)
    n = sum(chunks)
    Xn = rng.normal(size=(n, 4)).astype(np.float32)
    C = Xn[:5].astype(np.float64) + 1e-3
    X = da.from_array(Xn, chunks=(tuple(chunks), 4))
    res = run_pass(X, {"l": lloyd_aggregation(C, 3), "d": data_stats_aggregation()}, split_every=split_every)
    single = run_pass(da.from_array(Xn, chunks=(n, 4)), {"l": lloyd_aggregation(C, 3)})["l"]
    lloyd = res["l"]
    np.testing.assert_allclose(lloyd["sums"], single["sums"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(lloyd["weights"], single["weights"])
    np.testing.assert_allclose(float(lloyd["inertia"]), float(single["inertia"]), rtol=1e-9)
    np.testing.assert_array_equal(lloyd["far_row"], single["far_row"])
    assert res["d"]["count"] == n
    np.testing.assert_allclose(res["d"]["m2"] / n, Xn.astype(np.float64).var(0), rtol=1e-9)


def test_top_combine_is_associative():
    rng = np.random.default_rng(1)
    parts = [{"v": rng.random(5), "i": rng.permutation(100)[:5]} for _ in range(6)]
    flat = top_combine(parts, 4, "v", ("v", "i"), "i")
    left = top_combine([top_combine(parts[:3], 4, "v", ("v", "i"), "i"), top_combine(parts[3:], 4, "v", ("v", "i"), "i")], 4, "v", ("v", "i"), "i")
    np.testing.assert_array_equal(flat["i"], left["i"])


def test_result_bit_identical_across_worker_counts():
    """Same chunking -> the same bits, with one worker or three."""
    import dclust

    rng = np.random.default_rng(5)
    Xn = rng.normal(size=(6000, 5)).astype(np.float32)
    X = da.from_array(Xn, chunks=(500, 5))
    results = []
    for n_workers in (1, 3):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=False,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            with client.as_current():
                km = dclust.KMeans(4, random_state=7, max_iter=30, progress=False).fit(X)
                results.append((km.cluster_centers_.copy(), km.inertia_, km.n_iter_))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1:] == results[1][1:]


def test_empty_input_refused():
    with pytest.raises(ValueError, match="at least one row"):
        run_pass(da.zeros((0, 3), chunks=(1, 3)), {"s": SUM})


def test_grouped_chunks_keep_order_and_offsets():
    Xn = np.arange(300.0).reshape(100, 3)
    X = da.from_array(Xn, chunks=(2, 3))  # 50 tiny chunks: several per task
    out = run_pass(X, {"s": SUM}, split_every=3)["s"]
    np.testing.assert_array_equal(out["bid"], np.arange(50))
    np.testing.assert_array_equal(out["first"], np.arange(0, 100, 2))
    np.testing.assert_allclose(out["s"], Xn.sum(0))
    w = da.from_array(np.arange(100.0), chunks=2)
    km_w = run_pass(X, {"l": lloyd_aggregation(Xn[:2].astype(float), 0)}, sample_weight=w)["l"]
    ref = run_pass(da.from_array(Xn, chunks=(100, 3)), {"l": lloyd_aggregation(Xn[:2].astype(float), 0)},
                   sample_weight=da.from_array(np.arange(100.0), chunks=100))["l"]
    np.testing.assert_allclose(km_w["sums"], ref["sums"])
