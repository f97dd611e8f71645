"""Environment switches that change how the kernels run.

The kernels never read the environment; they ask :mod:`dclust.kernels._hooks`, and
:func:`install` answers from here. Each switch is read when asked, not once at import, so
that setting the variable in a running process (a test, a notebook) takes effect on the
next call.

``DCLUST_IR_ASSIGN``
    ``0`` turns off the LLVM-IR nearest-centre kernel (:mod:`dclust.kernels._irassign`);
    the kernels then use BLAS GEMM and an argmin. Anything else, or unset, leaves it on.

``DCLUST_GC_FREEZE``
    ``0`` keeps the garbage-collector policy of :mod:`dclust.runtime.gcpolicy` (freeze
    the long-lived objects of the client and the embedded cluster's workers) from being
    installed; read when dclust starts its embedded cluster. Anything else, or unset,
    installs it.

``DCLUST_ROUND``
    How many iterations an algorithm may run per round trip to the cluster
    (:meth:`dclust.algorithms.session.FitSession.round_size`): ``1`` turns chained
    passes off; unset, dclust chains up to 4 (8 for passes under 0.1 s) when a pass is
    short enough for its fixed cost to matter.

``DCLUST_ONE_TASK``
    ``0`` keeps passes and chained passes over data persisted on a single worker as
    graphs of tasks (a fused task per thread, a combine or step task after them);
    unset, or anything else, runs each as one task on that worker, which runs the
    threads' work on threads of its own (:func:`dclust.reductions.engine.run_pass`,
    :func:`~dclust.reductions.engine.run_chain`).
"""

from __future__ import annotations

import os

from ..kernels import _hooks

__all__ = ["GC_FREEZE_ENV", "IR_ASSIGN_ENV", "ONE_TASK_ENV", "ROUND_ENV", "gc_freeze_enabled",
           "install", "ir_assign_enabled", "one_task_enabled", "round_limit"]

IR_ASSIGN_ENV = "DCLUST_IR_ASSIGN"
GC_FREEZE_ENV = "DCLUST_GC_FREEZE"
ROUND_ENV = "DCLUST_ROUND"
ONE_TASK_ENV = "DCLUST_ONE_TASK"


def ir_assign_enabled() -> bool:
    """Whether the IR nearest-centre kernel may be used: ``DCLUST_IR_ASSIGN`` is not ``"0"``."""
    return os.environ.get(IR_ASSIGN_ENV, "1") != "0"


def gc_freeze_enabled() -> bool:
    """Whether the embedded cluster gets dclust's GC policy: ``DCLUST_GC_FREEZE`` is not ``"0"``."""
    return os.environ.get(GC_FREEZE_ENV, "1") != "0"


def one_task_enabled() -> bool:
    """Whether a pass or chain over one worker's data runs as one task: ``DCLUST_ONE_TASK``
    is not ``"0"``."""
    return os.environ.get(ONE_TASK_ENV, "1") != "0"


def round_limit() -> int | None:
    """``DCLUST_ROUND`` as a positive int, or ``None`` when unset (dclust chooses)."""
    value = os.environ.get(ROUND_ENV)
    if value is None or value == "":
        return None
    n = int(value) if value.strip().isdigit() else 0
    if n < 1:
        raise ValueError(f"{ROUND_ENV}={value!r} is not valid; expected a positive integer "
                         "(1 turns chained passes off) or nothing.")
    return n


def install() -> None:
    """Make the kernels of this process follow the switches above."""
    _hooks.set_ir_assign_switch(ir_assign_enabled)
