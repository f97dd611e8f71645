"""Shared fixtures: one in-process Dask cluster for the whole run.

Tests that need real scheduler and worker processes start their own (marker
``distributed``); everything else shares this cluster, which dclust picks up as the
active client.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba-cache"))


@pytest.fixture(scope="session", autouse=True)
def dask_client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster, set_as_default=True)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def blobs():
    """Small well-separated float32 blobs: (X, true_labels, centers)."""
    from sklearn.datasets import make_blobs

    X, y, centers = make_blobs(
        n_samples=3000, n_features=6, centers=5, cluster_std=1.0, random_state=3, return_centers=True
    )
    return X.astype(np.float32), y, centers


@pytest.fixture
def no_client(monkeypatch, dask_client):
    """As if no Client existed in this process; the session client is the default again after."""
    import weakref

    import dask
    import distributed.client as dcl
    from distributed import Client

    import dclust
    import dclust.runtime.client as rc

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
