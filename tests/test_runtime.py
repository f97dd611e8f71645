"""Which cluster dclust computes on: the active client, an address from the environment,
or an embedded LocalCluster; and how that embedded cluster is laid out."""

from __future__ import annotations

import logging
import os
import re
import weakref

import dask
import numpy as np
import pytest

import dclust
import dclust.runtime.client as rc
from dclust.exceptions import DclustValueError
from dclust.runtime.client import local_cluster_layout
from dclust.runtime.compute import compute_count, compute_graph


@pytest.fixture
def no_client(monkeypatch, dask_client):
    """As if no Client existed in this process; the session client is the default again after."""
    import distributed.client as dcl
    from distributed import Client

    monkeypatch.setattr(dcl, "_global_clients", weakref.WeakValueDictionary())
    monkeypatch.setattr(rc, "_connected", None)
    monkeypatch.setattr(rc, "_embedded", None)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    scheduler = dask.config.get("scheduler", None)
    with pytest.raises(ValueError):
        Client.current()
    yield
    monkeypatch.undo()
    dask.config.set(scheduler=scheduler)
    assert Client.current() is dask_client
    assert dclust.get_client() is dask_client


@pytest.fixture
def other_cluster():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    yield cluster
    cluster.close()


def test_active_client_is_used(dask_client):
    assert dclust.get_client() is dask_client
    assert dclust.get_client(quiet=True) is dask_client
    before = compute_count()
    assert compute_graph({"dclust-test-add": (sum, [1, 2, 3])}, "dclust-test-add") == 6
    assert compute_count() == before + 1


def test_env_address_is_connected(no_client, other_cluster, monkeypatch, capsys):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", other_cluster.scheduler_address)
    client = dclust.get_client()
    try:
        assert client.scheduler.address == other_cluster.scheduler_address
        assert rc._connected is client
        assert dclust.get_client() is client  # connected once, reused
        assert f"dclust: connected to {other_cluster.scheduler_address}" in capsys.readouterr().err
        assert compute_graph({"dclust-test-mul": (max, [4, 9])}, "dclust-test-mul") == 9
        assert other_cluster.scheduler.tasks or other_cluster.scheduler.task_prefixes  # ran there
    finally:
        client.close()


@pytest.mark.filterwarnings("ignore::dclust.ConvergenceWarning")
def test_connect_makes_the_dclust_client(no_client, other_cluster):
    client = dclust.connect(other_cluster.scheduler_address, quiet=True)
    try:
        assert rc._connected is client
        assert dclust.get_client() is client
        X = np.random.default_rng(0).normal(size=(200, 2))
        km = dclust.KMeans(2, init=X[:2], max_iter=2, progress=False).fit(X)
        assert km.cluster_centers_.shape == (2, 2)
    finally:
        client.close()
    # Once closed it is not used any more.
    assert not rc._usable(rc._connected)


def test_connect_needs_an_address(no_client):
    with pytest.raises(DclustValueError, match=re.escape(
            "connect() needs an address ('tcp://host:8786') or scheduler_file=...; neither was given "
            "and DASK_SCHEDULER_ADDRESS is not set.")):
        dclust.connect()


def test_connect_scheduler_file(no_client, other_cluster, tmp_path):
    import json

    f = tmp_path / "scheduler.json"
    f.write_text(json.dumps({"address": other_cluster.scheduler_address, "type": "Scheduler"}))
    client = dclust.connect(scheduler_file=str(f), quiet=True)
    try:
        assert client.scheduler.address == other_cluster.scheduler_address
    finally:
        client.close()


def test_embedded_cluster_started_once_and_shut_down(no_client, monkeypatch, capsys):
    import distributed

    started = []
    real = distributed.LocalCluster

    def small_cluster(**kw):
        # Threads instead of processes keep the test fast; the layout is dclust's.
        started.append(dict(kw))
        kw.update(processes=False)
        return real(**kw)

    monkeypatch.setattr(distributed, "LocalCluster", small_cluster)
    client = dclust.get_client()
    try:
        assert len(started) == 1
        workers, threads = local_cluster_layout()
        assert started[0]["n_workers"] == workers and started[0]["threads_per_worker"] == threads
        assert started[0]["processes"] is True  # as asked by dclust, before the test's override
        assert "dclust: started a local Dask cluster" in capsys.readouterr().err
        assert dclust.get_client() is client
        assert len(started) == 1
        assert rc._embedded[1] is client
    finally:
        dclust.shutdown()
    assert rc._embedded is None
    assert client.status == "closed"


@pytest.mark.parametrize("cores, layout", [(1, (1, 1)), (2, (1, 2)), (8, (2, 4)), (16, (4, 4))])
def test_local_cluster_layout(cores, layout):
    assert local_cluster_layout(cores) == layout


@pytest.mark.parametrize("cores", range(1, 97))
def test_local_cluster_layout_uses_every_core(cores):
    workers, threads = local_cluster_layout(cores)
    assert workers >= 1 and threads >= 1
    assert workers * threads == cores
    assert workers <= max(1, cores // 4)  # processes only on larger machines


def test_local_cluster_layout_default():
    workers, threads = local_cluster_layout()
    assert workers * threads == (os.cpu_count() or 1)


@pytest.mark.parametrize("bad", [0, -4, 2.5, "8"])
def test_local_cluster_layout_bad(bad):
    with pytest.raises(DclustValueError, match=re.escape(f"n_cores={bad!r} must be a positive integer")):
        local_cluster_layout(bad)
