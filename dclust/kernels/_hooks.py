"""Process-wide policies that the runtime hands to the kernels.

Kernels know nothing of the process they run in: they import neither Dask nor
:mod:`dclust.runtime`. A few of them still depend on a process-wide policy: how many
threads BLAS may use inside a tile GEMM, and whether the LLVM-IR nearest-centre kernel is
switched on. They ask this module, and :mod:`dclust.runtime` installs the policies
(:func:`dclust.runtime.threads.install`, :func:`dclust.runtime.switches.install`) when
``dclust`` is imported, which every process that runs a kernel does first. With nothing
installed (a kernel module loaded on its own), kernels run with plain defaults: BLAS as
it is, the IR kernel on.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import ContextManager

__all__ = ["blas_scope", "ir_assign_enabled", "set_blas_scope", "set_ir_assign_switch"]


def _always_on() -> bool:
    return True


_blas_scope: Callable[[], ContextManager] = contextlib.nullcontext
_ir_assign_switch: Callable[[], bool] = _always_on


def set_blas_scope(factory: Callable[[], ContextManager] | None) -> None:
    """Run every :func:`blas_scope` kernel inside ``factory()``.

    Parameters
    ----------
    factory : callable returning a context manager, or None
        Called once per kernel call; ``None`` restores the default (no limit).
    """
    global _blas_scope
    _blas_scope = contextlib.nullcontext if factory is None else factory


def set_ir_assign_switch(switch: Callable[[], bool] | None) -> None:
    """Ask ``switch()`` before each use of the IR nearest-centre kernel.

    Parameters
    ----------
    switch : callable returning bool, or None
        Asked on every call (so a policy that reads the environment follows it);
        ``None`` restores the default (always on).
    """
    global _ir_assign_switch
    _ir_assign_switch = _always_on if switch is None else switch


def ir_assign_enabled() -> bool:
    """Whether the installed policy allows the IR nearest-centre kernel."""
    return bool(_ir_assign_switch())


def blas_scope(fn):
    """Decorate a kernel whose BLAS calls should run under the installed BLAS policy.

    The policy is looked up at call time, not at decoration time, so a kernel module
    imported before the runtime installed its policy still follows it.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _blas_scope():
            return fn(*args, **kwargs)

    return wrapper
