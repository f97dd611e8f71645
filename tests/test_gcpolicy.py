"""dclust's garbage-collector policy: installed on the embedded cluster's workers and in
the client, not installed when switched off, and what it does to a process."""

from __future__ import annotations

import subprocess
import sys

import dclust
import dclust.runtime.client as rc
from dclust.runtime import gcpolicy


def _worker_plugins(dask_worker):
    return sorted(dask_worker.plugins)


def test_policy_installed_on_embedded_workers_and_client(no_client, monkeypatch):
    monkeypatch.delenv("DCLUST_GC_FREEZE", raising=False)
    monkeypatch.setattr(rc, "local_cluster_layout", lambda *a: (1, 1))
    client = dclust.get_client(quiet=True)
    try:
        states = client.run(gcpolicy.state)
        assert len(states) == 1
        for st in states.values():  # a worker process of its own
            assert st["installs"] >= 1 and st["frozen"] > 0 and st["callback"]
        assert set(client.run(_worker_plugins).popitem()[1]) >= {gcpolicy.GCPolicyPlugin.name}
        here = gcpolicy.state()
        assert here["installs"] >= 1 and here["frozen"] > 0 and here["callback"]
    finally:
        dclust.shutdown()
    assert not gcpolicy.state()["callback"]  # released with the cluster


def test_policy_switched_off(no_client, monkeypatch):
    import distributed

    real = distributed.LocalCluster

    def thread_cluster(**kw):
        kw.update(processes=False, n_workers=1, threads_per_worker=1)
        return real(**kw)

    monkeypatch.setenv("DCLUST_GC_FREEZE", "0")
    monkeypatch.setattr(distributed, "LocalCluster", thread_cluster)
    client = dclust.get_client(quiet=True)
    try:
        for plugins in client.run(_worker_plugins).values():
            assert gcpolicy.GCPolicyPlugin.name not in plugins
    finally:
        dclust.shutdown()


_PROBE = """
import gc
from dclust.runtime import gcpolicy
gcpolicy.install()
st = gcpolicy.state()
gcpolicy.install(warm=False)  # again: one callback
assert gc.callbacks.count(gcpolicy._after_collection) == 1
assert st["installs"] == 1 and st["callback"] and st["frozen"] > 10000, st
import sys
assert "numba" in sys.modules and "dask.array" in sys.modules  # warmed before freezing
before = st["frozen"]
import json, decimal, fractions, email.parser  # new modules, then a full collection
gc.collect()
st = gcpolicy.state()
assert st["refreezes"] == 1 and st["frozen"] > before, st
gc.collect()  # no new modules: no new freeze
assert gcpolicy.state()["refreezes"] == 1
gcpolicy.uninstall()
st = gcpolicy.state()
assert st["frozen"] == 0 and not st["callback"] and st["installs"] == 0, st
print("ok")
"""


def test_install_freezes_and_refreezes_after_imports():
    # In a fresh interpreter: freezing is process-wide and the test process is shared.
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")

