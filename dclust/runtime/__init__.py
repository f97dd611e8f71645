"""Process and cluster concerns: client bring-up, graph submission, devices, thread
limits, environment switches and memory budgets.

:func:`install_policies` hands this process's policies to the kernels, which never
import the runtime (see :mod:`dclust.kernels._hooks`); ``import dclust`` calls it.
"""

from . import switches, threads

__all__ = ["install_policies"]


def install_policies() -> None:
    """Install the runtime's kernel policies in this process: BLAS limited to one thread
    inside tile kernels (:mod:`.threads`) and the environment switches (:mod:`.switches`)."""
    threads.install()
    switches.install()
