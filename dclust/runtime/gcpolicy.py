"""Garbage-collector policy for the client and the embedded cluster's workers.

Why: a pass allocates a few thousand objects that outlive a young collection (the
scheduler's and worker's task states, futures, messages, event-loop handles). CPython
runs a full (generation-2) collection once the objects promoted since the last one reach
a quarter of the long-lived ones, and a full collection traverses every tracked object:
about 170,000 in a client or worker that has imported dask, distributed, NumPy, numba
and llvmlite, nearly all of them module-level objects that live as long as the process.
Measured on workload a (n=4M, d=32, k=16, 2 cores): 80-300 ms per full collection, two
in each of the client (which also runs the scheduler's event loop) and the worker during
a process's first fit, then one about every 40 iterations in the client.

:func:`install` collects once and then freezes the survivors (``gc.freeze``): they move
to a permanent generation that later collections do not traverse, so a full collection
costs in proportion to the objects made since (milliseconds). Frozen objects are still
freed by reference counting; only a reference cycle among them would stay, and at
start-up they are the imported modules, which stay anyway.

Objects made after the freeze (a worker imports dclust's kernels, numba and llvmlite
with its first task) are frozen at the first full collection after they were imported
(:func:`_after_collection`). That also freezes whatever else was alive then (a pass's
task states): a reference cycle among those is not freed later, a bounded cost, once per
wave of imports.

The client installs it after bringing up the embedded cluster
(:func:`dclust.runtime.client.get_client`), and the embedded cluster's workers through
:class:`GCPolicyPlugin`. A cluster dclust did not start is left as its owner set it up.
``DCLUST_GC_FREEZE=0`` turns the policy off (:func:`dclust.runtime.switches.gc_freeze_enabled`).
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["GCPolicyPlugin", "install", "release", "state", "uninstall"]

# Imported before the first freeze: the packages every pass uses, which leave about
# 40,000 of the objects (dclust's own modules add about 3,000). A worker that has not run
# a task yet has not imported them.
_WARM = ("numpy", "dask.array", "numba", "llvmlite.binding")

_lock = threading.Lock()
_installs = 0  # times install() ran in this process
_refreezes = 0  # freezes after imports (see _after_collection)
_modules_frozen = 0  # len(sys.modules) at the last freeze


def _freeze() -> None:
    global _modules_frozen
    gc.freeze()
    _modules_frozen = len(sys.modules)


def _after_collection(phase, info) -> None:
    """After a full collection: if modules were imported since the last freeze, freeze.

    A worker imports dclust's kernels, numba and llvmlite with its first task, and a
    client the modules of each new algorithm: tens of thousands of long-lived objects
    made after :func:`install` froze the others. The survivors of a full collection are
    live (its garbage is gone), so freezing them there costs one such collection per
    wave of imports, instead of one per collection from then on.
    """
    global _refreezes
    if phase == "stop" and info.get("generation") == 2 and len(sys.modules) != _modules_frozen:
        _freeze()
        _refreezes += 1


def install(warm: bool = True) -> int:
    """Apply the policy in this process: collect, freeze the survivors, and freeze again
    after the first full collection that follows new imports.

    Parameters
    ----------
    warm : bool, default=True
        Import the packages of :data:`_WARM` first, so that their objects are frozen now.

    Returns
    -------
    int
        Objects frozen so far in this process (``gc.get_freeze_count()``).

    Notes
    -----
    Safe to call again: a second call freezes what was made since the first (the
    embedded cluster started after dclust was imported, say); the collector callback
    is added once.
    """
    global _installs
    if warm:
        for name in _WARM:
            try:
                importlib.import_module(name)
            except ImportError:  # pragma: no cover - dclust's dependencies, all required
                pass
    with _lock:
        gc.collect()
        _freeze()
        if _after_collection not in gc.callbacks:
            gc.callbacks.append(_after_collection)
        _installs += 1
    return gc.get_freeze_count()


def release() -> None:
    """Stop freezing after imports in this process (the embedded cluster is closed).

    What is frozen stays frozen: unfreezing would only bring back the full collections
    over the imported modules, which stay loaded.
    """
    with _lock:
        if _after_collection in gc.callbacks:
            gc.callbacks.remove(_after_collection)


def uninstall() -> None:
    """Undo :func:`install` in this process: unfreeze and drop the callback (tests and
    benchmarks compare the two)."""
    global _installs
    with _lock:
        if _after_collection in gc.callbacks:
            gc.callbacks.remove(_after_collection)
        gc.unfreeze()
        _installs = 0


def state() -> dict:
    """This process's policy state: ``installs`` (times :func:`install` ran since the
    last :func:`uninstall`), ``refreezes`` (freezes after imports), ``frozen`` (objects
    in the permanent generation) and ``callback`` (whether the collector callback is in
    place)."""
    return {"installs": _installs, "refreezes": _refreezes, "frozen": gc.get_freeze_count(),
            "callback": _after_collection in gc.callbacks}


class GCPolicyPlugin(WorkerPlugin):
    """Run :func:`install` on every worker of a cluster, including workers that join or
    restart later."""

    name = "dclust-gc-policy"

    def setup(self, worker):
        install()
