"""Thread limits for native libraries inside Dask tasks.

Dask already runs one task per core. A multi-threaded BLAS inside each task only
oversubscribes the cores: the tile GEMMs of the kernels are small (measured: a
1024 x 33 x 256 SGEMM takes 8x longer with two BLAS threads on a busy two-core machine).
:class:`single_thread_blas` limits BLAS to one thread while any code under it runs in the
process, and :func:`install` makes it the BLAS policy of the kernels
(:func:`dclust.kernels._hooks.blas_scope`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from ..kernels import _hooks

__all__ = ["single_thread_blas", "install", "usable_cores"]


class _BlasLimit:
    """Process-wide BLAS limit, counted: concurrent tasks (threads of one worker) enter
    and leave in any order, and only the last one out restores the original limits, so
    that no task lifts the limit under another."""

    _lock = threading.Lock()
    _depth = 0
    _limiter = None
    _controller = None
    _modules_seen = -1

    @classmethod
    def enter(cls) -> None:
        with cls._lock:
            if cls._depth == 0:
                try:
                    if cls._controller is None or cls._modules_seen != len(sys.modules):
                        # Built on first use, and again after new imports (which may have
                        # loaded another BLAS, SciPy's say): scanning the loaded native
                        # libraries takes milliseconds, and most processes never need it.
                        from threadpoolctl import ThreadpoolController

                        # Counted before the scan: a module another thread imports while
                        # it runs (loading a BLAS the scan missed) must make the next
                        # entry scan again.
                        seen = len(sys.modules)
                        cls._controller = ThreadpoolController()
                        cls._modules_seen = seen
                    cls._limiter = cls._controller.limit(limits=1, user_api="blas")
                except Exception:  # pragma: no cover - threadpoolctl missing or failing
                    # A speed measure only: without it the kernels are still correct.
                    cls._limiter = None
            cls._depth += 1

    @classmethod
    def exit(cls) -> None:
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0 and cls._limiter is not None:
                cls._limiter.restore_original_limits()
                cls._limiter = None


class single_thread_blas(contextlib.ContextDecorator):
    """Run BLAS single-threaded while the block (or decorated function) runs.

    Usable as ``with single_thread_blas(): ...`` or ``@single_thread_blas()``. Nested and
    concurrent uses (several task threads in one worker) share one process-wide limit,
    lifted when the last of them leaves. Without threadpoolctl it does nothing.

    Examples
    --------
    >>> import numpy as np
    >>> with single_thread_blas():
    ...     _ = np.ones((4, 4)) @ np.ones((4, 4))
    """

    def __enter__(self):
        _BlasLimit.enter()
        return self

    def __exit__(self, *exc):
        _BlasLimit.exit()
        return False


def install() -> None:
    """Make :class:`single_thread_blas` the BLAS policy of the kernels in this process."""
    _hooks.set_blas_scope(single_thread_blas)


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS has one (a
    container or ``taskset`` limits it), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)
