"""The runtime's policies for the kernels: BLAS thread limit, environment switches, memory.

The kernels never import the runtime (tests/test_layers.py); these tests check that the
policies still reach them, in this process and in a fresh one that imports only a kernel
module, as a worker unpickling a task does.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dclust.kernels import _hooks
from dclust.kernels.sinkhorn import SinkhornState, sinkhorn_partial
from dclust.runtime import memory, switches, threads


def test_import_dclust_installs_the_policies():
    assert _hooks._blas_scope is threads.single_thread_blas
    assert _hooks._ir_assign_switch is switches.ir_assign_enabled


def test_a_worker_importing_only_a_kernel_gets_the_policies():
    code = textwrap.dedent("""
        import sys
        import dclust.kernels.sinkhorn
        from dclust.kernels import _hooks
        from dclust.runtime.switches import ir_assign_enabled
        from dclust.runtime.threads import single_thread_blas
        assert _hooks._blas_scope is single_thread_blas, _hooks._blas_scope
        assert _hooks._ir_assign_switch is ir_assign_enabled, _hooks._ir_assign_switch
        # Kernels and their policies come without Dask.
        assert "dask" not in sys.modules and "distributed" not in sys.modules
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_sinkhorn_tile_kernels_run_inside_the_blas_scope(monkeypatch, rng):
    entered = []

    @contextlib.contextmanager
    def recording():
        entered.append(True)
        yield

    monkeypatch.setattr(_hooks, "_blas_scope", recording)
    X = rng.normal(size=(50, 3))
    st = SinkhornState(kind="points", g=np.zeros(4), eps=1.0, centers=rng.normal(size=(4, 3)),
                       log_mass=-np.log(50))
    sinkhorn_partial(X, st)
    assert entered == [True]


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_single_thread_blas_limits_nests_and_restores():
    pytest.importorskip("threadpoolctl")
    np.ones((8, 8)) @ np.ones((8, 8))  # BLAS loaded
    before = _blas_threads()
    with threads.single_thread_blas():
        with threads.single_thread_blas():
            assert all(n == 1 for n in _blas_threads())
        # The outer scope still holds the limit after the inner one left.
        assert all(n == 1 for n in _blas_threads())
    assert _blas_threads() == before

    @threads.single_thread_blas()
    def inside():
        return _blas_threads()

    assert all(n == 1 for n in inside())
    assert _blas_threads() == before


def test_ir_assign_switch_reads_the_environment_on_each_call(monkeypatch):
    monkeypatch.delenv(switches.IR_ASSIGN_ENV, raising=False)
    assert switches.ir_assign_enabled() and _hooks.ir_assign_enabled()
    monkeypatch.setenv("DCLUST_IR_ASSIGN", "0")
    assert not switches.ir_assign_enabled() and not _hooks.ir_assign_enabled()
    monkeypatch.setenv("DCLUST_IR_ASSIGN", "1")
    assert _hooks.ir_assign_enabled()


def test_hooks_default_to_no_policy():
    saved = (_hooks._blas_scope, _hooks._ir_assign_switch)
    try:
        _hooks.set_blas_scope(None)
        _hooks.set_ir_assign_switch(None)
        assert _hooks._blas_scope is contextlib.nullcontext
        assert _hooks.ir_assign_enabled()
    finally:
        threads.install()
        switches.install()
    assert (_hooks._blas_scope, _hooks._ir_assign_switch) == saved


def test_memory_budget(monkeypatch):
    assert memory.available_memory() > 0
    assert memory.memory_budget(12345) == 12345
    monkeypatch.setattr(memory, "available_memory", lambda: 1001)
    assert memory.memory_budget() == 500
