"""Which cluster dclust computes on: the active client, an address from the environment,
or an embedded LocalCluster; and how that embedded cluster is laid out."""

from __future__ import annotations

import logging
import os
import re

import dask
import numpy as np
import pytest

import dclust
import dclust.runtime.client as rc
from dclust.exceptions import ClusterConnectionError, DclustValueError
from dclust.runtime.client import local_cluster_layout
from dclust.runtime.threads import usable_cores
from dclust.runtime.compute import compute_count, compute_graph


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


def _worker_env(key):
    import os

    return os.environ.get(key)


def test_embedded_cluster_leaves_this_process_threads_alone(no_client, monkeypatch):
    """Dask's nannies set OMP/MKL/OPENBLAS_NUM_THREADS=1 for the workers; the user's
    process keeps its own setting (else NumPy or scikit-learn here would run on one
    thread)."""
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.setattr(rc, "local_cluster_layout", lambda *a: (1, 1))
    client = dclust.get_client(quiet=True)
    try:
        assert "OMP_NUM_THREADS" not in os.environ
        assert os.environ["OPENBLAS_NUM_THREADS"] == "2"
        assert set(client.run(_worker_env, "OMP_NUM_THREADS").values()) == {"1"}
    finally:
        dclust.shutdown()


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
    assert workers * threads == usable_cores()


def test_local_cluster_layout_follows_the_cpu_affinity(monkeypatch):
    # A container or taskset that gives this process 2 of the host's 64 cores: the
    # embedded cluster runs 2 threads, not 64.
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5})
    assert local_cluster_layout() == (1, 2)


@pytest.mark.parametrize("bad", [0, -4, 2.5, "8"])
def test_local_cluster_layout_bad(bad):
    with pytest.raises(DclustValueError, match=re.escape(f"n_cores={bad!r} must be a positive integer")):
        local_cluster_layout(bad)


# ---- connecting: addresses, scheduler files, the Dask configuration ---------------------
def test_configured_address_from_dask_config(no_client, other_cluster):
    with dask.config.set({"scheduler-address": other_cluster.scheduler_address}):
        assert rc.configured_address() == other_cluster.scheduler_address
        client = dclust.get_client(quiet=True)
    try:
        assert client.scheduler.address == other_cluster.scheduler_address
        assert rc._connected is client
    finally:
        client.close()


def test_env_address_wins_over_dask_config(monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.1:8786")
    with dask.config.set({"scheduler-address": "tcp://10.0.0.2:8786"}):
        assert rc.configured_address() == "tcp://10.0.0.1:8786"


@pytest.mark.parametrize("address, match", [
    ("http://head:8787", "Unknown protocol 'http' in the scheduler address 'http://head:8787'; use "
                         "'tcp://host:port' or 'tls://host:port' (known: "),
    ("udp://head:8786", "Unknown protocol 'udp' in the scheduler address 'udp://head:8786'"),
    (8786, "address=8786 is not a scheduler address; pass a string such as 'tcp://host:8786'"),
    ("  ", "address='  ' is not a scheduler address"),
])
def test_connect_rejects_bad_addresses(no_client, address, match):
    with pytest.raises(DclustValueError, match=re.escape(match)):
        dclust.connect(address)


def test_dashboard_url_hint(no_client):
    with pytest.raises(DclustValueError, match="That looks like the dashboard's URL; the scheduler "
                                               r"listens on its own port \(8786 by default\)"):
        dclust.connect("https://head:8787/status")


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_unreachable_is_a_clear_error(no_client):
    port = _free_port()
    with pytest.raises(ClusterConnectionError, match=re.escape(
            f"Cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}' within 1 s (") + r".*\)\. "
            r"Check that `dask scheduler` is running there and that host and port are right\. If "
            r"the scheduler requires TLS, connect to its tls:// address with certificates\."):
        dclust.connect(f"tcp://127.0.0.1:{port}", timeout=1)
    assert rc._connected is None


def test_tls_address_without_certificates(no_client):
    with pytest.raises(ClusterConnectionError, match=re.escape(
            "The scheduler at 'tls://127.0.0.1:1' requires TLS, but no client certificate was given.")):
        dclust.connect("tls://127.0.0.1:1")


def test_scheduler_file_problems(no_client, tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ClusterConnectionError, match=re.escape(
            f"Scheduler file {missing!r} does not exist. Start the scheduler with "
            f"`dask scheduler --scheduler-file {missing}` or pass its address.")):
        dclust.connect(scheduler_file=missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ClusterConnectionError, match=re.escape(
            f"Scheduler file {str(bad)!r} has no scheduler address (JSONDecodeError: ")):
        dclust.connect(scheduler_file=str(bad))
    bad.write_text('{"type": "Scheduler"}')
    with pytest.raises(ClusterConnectionError, match=re.escape(
            f"Scheduler file {str(bad)!r} has no scheduler address (KeyError: 'address')")):
        dclust.connect(scheduler_file=str(bad))


def test_connect_rejects_a_non_security(no_client):
    with pytest.raises(DclustValueError, match=re.escape(
            "security={'tls_ca_file': 'ca.pem'} is not a distributed.Security; pass for example")):
        dclust.connect("tcp://127.0.0.1:1", security={"tls_ca_file": "ca.pem"})


# ---- a lost connection in the compute path ----------------------------------------------
class _FakeClient:
    def __init__(self, exc, status):
        self.exc, self.status = exc, status
        self.scheduler = type("S", (), {"address": "tcp://10.1.2.3:8786"})()

    def get(self, graph, key, sync=True):
        raise self.exc


def test_compute_graph_turns_a_lost_connection_into_a_clear_error(monkeypatch):
    import dclust.runtime.compute as comp
    from distributed.client import FutureCancelledError

    lost = FutureCancelledError("k", "scheduler-connection-lost",
                                "Client lost the connection to the scheduler.")
    monkeypatch.setattr(comp, "get_client", lambda: _FakeClient(lost, "connecting"))
    with pytest.raises(ClusterConnectionError, match=re.escape(
            "Lost the connection to the Dask scheduler at 'tcp://10.1.2.3:8786' while a pass was "
            "running (client status 'connecting': FutureCancelledError). The scheduler stopped or "
            "the network between it and this machine failed")):
        compute_graph({}, "k")
    from distributed.comm import CommClosedError

    monkeypatch.setattr(comp, "get_client", lambda: _FakeClient(CommClosedError("gone"), "closed"))
    with pytest.raises(ClusterConnectionError, match="client status 'closed': CommClosedError"):
        compute_graph({}, "k")


@pytest.mark.parametrize("exc", [OSError("disk full on a worker"), ValueError("bad chunk"),
                                 dclust.StorageError("chunk 3 of 's3://b/x.zarr' is missing")])
def test_compute_graph_passes_task_errors_through(monkeypatch, exc):
    import dclust.runtime.compute as comp

    monkeypatch.setattr(comp, "get_client", lambda: _FakeClient(exc, "running"))
    with pytest.raises(type(exc)) as info:
        compute_graph({}, "k")
    assert info.value is exc
