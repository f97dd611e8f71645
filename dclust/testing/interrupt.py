"""Interrupting a fit at a chosen iteration, to test checkpoints and resume."""

from __future__ import annotations

import contextlib

from ..runtime.progress import Progress

__all__ = ["interrupt_after"]


@contextlib.contextmanager
def interrupt_after(n_updates):
    """Make the fit raise ``KeyboardInterrupt`` at its ``n_updates``-th progress report.

    Every fit reports its progress once after an initialisation that read the data and
    once after every iteration, just before it saves its checkpoint; so the checkpoint an
    interrupted fit leaves holds the state of report ``n_updates - 1``.

    Yields
    ------
    calls : dict
        ``calls["n"]`` counts the reports so far.

    Examples
    --------
    >>> with interrupt_after(3), pytest.raises(KeyboardInterrupt):   # doctest: +SKIP
    ...     dclust.KMeans(8, checkpoint="ck.npz").fit(X)
    >>> dclust.KMeans(8, checkpoint="ck.npz", resume=True).fit(X)    # doctest: +SKIP
    """
    orig = Progress.update
    calls = {"n": 0}

    def update(self, phase, iteration, **kw):
        calls["n"] += 1
        if calls["n"] == n_updates:
            raise KeyboardInterrupt(f"{phase} {iteration}")
        return orig(self, phase, iteration, **kw)

    Progress.update = update
    try:
        yield calls
    finally:
        Progress.update = orig
