"""dclust against a real multi-process Dask cluster: a ``dask scheduler`` and three
``dask worker`` processes on 127.0.0.1 (port 0, scheduler file, memory limits), driven
by the CLI (``--scheduler``, ``--scheduler-file``) and by the Python API, giving the same
centres as a local cluster from the same seed and chunking; and a scheduler killed in
the middle of a fit, which must end the fit with a clear error rather than a hang."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import dclust
import dclust.runtime.client as rc
from dclust.exceptions import ClusterConnectionError
from dclust.runtime.compute import compute_count
from dclust.testing.processes import process_cluster

pytestmark = pytest.mark.distributed

N, D, K, CHUNK, SEED = 60_000, 8, 5, 10_000, 7


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pc = process_cluster(3, nthreads=1, memory_limit="512MiB",
                         directory=str(tmp_path_factory.mktemp("procs")))
    yield pc
    pc.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory, dask_client):
    from dclust.testing.datasets import make_blobs

    path = str(tmp_path_factory.mktemp("data") / "blobs.zarr")
    make_blobs(path, N, D, K, chunk_size=CHUNK, seed=3)
    return path


@pytest.fixture(scope="module")
def local_centers(data, dask_client):
    """The reference: the same fit on the test session's local cluster."""
    assert dclust.get_client() is dask_client
    X = dclust.open_array(data, chunks=CHUNK)
    return dclust.KMeans(K, random_state=SEED, progress=False).fit(X).cluster_centers_


@pytest.fixture
def restore_client(dask_client):
    """Whatever a test connects to, dclust computes on the session cluster afterwards."""
    yield
    if rc._connected is not None:
        rc._connected.close()
    rc._connected = None
    assert dclust.get_client() is dask_client


def _cli(*args, env=None, timeout=300):
    env = {k: v for k, v in (env or os.environ).items() if k != "DASK_SCHEDULER_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "dclust", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_with_scheduler_address_matches_local(cluster, data, local_centers, tmp_path, capsys,
                                                  restore_client):
    from dclust.cli.main import main

    model = tmp_path / "km.npz"
    labels = tmp_path / "labels.zarr"
    status = main(["fit", "kmeans", data, "-k", str(K), "--seed", str(SEED), "--chunk-size",
                   str(CHUNK), "--model", str(model), "--labels", str(labels),
                   "--scheduler", cluster.address])
    out = capsys.readouterr()
    assert status == 0, out.err[-3000:] + cluster.logs()
    assert f"dclust: connected to {cluster.address}" in out.err
    assert "KMeans k=5 on 60,000 x 8 float32" in out.out
    km = dclust.load(model)
    # Same seed and chunking: the combine tree has the same shape whatever the number of
    # workers, so the centres are the same to the last bit.
    np.testing.assert_array_equal(km.cluster_centers_, local_centers)
    import zarr

    X = zarr.open_array(data, mode="r")[...]
    np.testing.assert_array_equal(zarr.open_array(str(labels), mode="r")[...], km.predict(X))
    assert rc._connected is None or rc._connected.status == "closed"  # the CLI closed its client


@pytest.mark.slow
def test_cli_process_with_scheduler_file_matches_local(cluster, data, local_centers, tmp_path):
    """The installed entry point in its own process, as a user runs it."""
    model = tmp_path / "km.npz"
    out = _cli("fit", "kmeans", data, "-k", str(K), "--seed", str(SEED), "--chunk-size",
               str(CHUNK), "--model", str(model), "--scheduler-file", cluster.scheduler_file,
               "--quiet")
    assert out.returncode == 0, out.stderr[-3000:] + cluster.logs()
    assert "connected to" not in out.stderr  # --quiet
    np.testing.assert_array_equal(dclust.load(model).cluster_centers_, local_centers)


def test_python_api_matches_local(cluster, data, local_centers, restore_client):
    client = dclust.connect(scheduler_file=cluster.scheduler_file, quiet=True)
    assert client.scheduler.address == cluster.address
    assert dclust.get_client() is client
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    assert len(workers) == 3
    assert all(w["memory_limit"] == 512 * 2**20 for w in workers)
    X = dclust.open_array(data, chunks=CHUNK)
    km = dclust.KMeans(K, random_state=SEED, progress=False).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, local_centers)
    # The work ran on the worker processes (their task counts moved).
    done = client.run(lambda dask_worker: len(dask_worker.state.log))
    assert set(done) == set(client.scheduler_info(n_workers=-1)["workers"]) and all(done.values())


def test_cli_scheduler_file_and_predict(cluster, data, local_centers, tmp_path, capsys,
                                        restore_client):
    from dclust.cli.main import main

    model = tmp_path / "km.npz"
    dclust.KMeans(K, init=local_centers, max_iter=1, progress=False).fit(
        dclust.open_array(data, chunks=CHUNK)).save(model)
    status = main(["predict", str(model), data, "--labels", str(tmp_path / "l.zarr"),
                   "--scheduler-file", cluster.scheduler_file, "--quiet"])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "connected to" not in out.err  # --quiet
    import zarr

    X = zarr.open_array(data, mode="r")[...]
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "l.zarr"), mode="r")[...],
                                  dclust.load(model).predict(X))


def test_cli_scheduler_and_scheduler_file_exclude_each_other(cluster, data, tmp_path, capsys):
    from dclust.cli.main import main

    status = main(["fit", "kmeans", data, "-k", "3", "--model", str(tmp_path / "m.npz"),
                   "--scheduler", cluster.address, "--scheduler-file", cluster.scheduler_file])
    assert status == 2
    assert "argument --scheduler-file: not allowed with argument --scheduler" in capsys.readouterr().err


def test_lost_scheduler_mid_fit_is_a_clear_error(tmp_path, restore_client):
    """SIGKILL the scheduler while Lloyd iterations run: ClusterConnectionError, promptly."""
    # Without a nanny the worker exits at once when stopped, even with its scheduler gone.
    pc = process_cluster(1, nthreads=1, memory_limit="512MiB", directory=str(tmp_path),
                         worker_args=["--no-nanny"])
    try:
        client = dclust.connect(pc.address, quiet=True, timeout=5)
        X = np.random.default_rng(0).uniform(size=(20_000, 2))
        # Uniform data with many clusters and tol=0 takes hundreds of iterations: the
        # scheduler is killed well before the fit could end on its own.
        km = dclust.KMeans(40, init=X[:40], tol=0.0, max_iter=100_000, progress=False)
        start = compute_count()
        killed = {}

        def kill_after_some_passes():
            deadline = time.monotonic() + 120
            while compute_count() < start + 6 and time.monotonic() < deadline:
                time.sleep(0.005)
            killed["at"] = time.monotonic()
            killed["passes"] = compute_count() - start
            pc.kill_scheduler()

        killer = threading.Thread(target=kill_after_some_passes, daemon=True)
        killer.start()
        with pytest.raises(ClusterConnectionError, match=re.escape(
                f"Lost the connection to the Dask scheduler at {pc.address!r} while a pass was "
                "running")) as info:
            km.fit(X)
        raised_at = time.monotonic()
        killer.join(timeout=10)
        assert killed["passes"] >= 6, "the fit ended before the scheduler was killed"
        assert raised_at - killed["at"] < 30, "the lost connection was noticed too late"
        assert "run the fit again" in str(info.value)
        assert not hasattr(km, "cluster_centers_")
        client.close()
    finally:
        pc.close()
