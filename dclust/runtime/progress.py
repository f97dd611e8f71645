"""A live progress line for long fits.

Silent for the first ``delay`` seconds (short fits print nothing). On a terminal it
rewrites one line in place; elsewhere (logs, CI) it prints a line at most every
``every`` seconds and a last line at the end.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Report iterations of an iterative fit.

    Parameters
    ----------
    label : str
        What is running (``"KMeans(k=256)"``).
    enabled : bool
        ``False`` prints nothing.
    delay : float
        Seconds before the first line appears.
    every : float
        Seconds between lines when not writing to a terminal.
    stream : file, default=sys.stderr
    """

    def __init__(self, label, enabled=True, *, delay=2.0, every=10.0, stream=None):
        self.label = label
        self.enabled = enabled
        self.delay = delay
        self.every = every
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.last_print = None
        self.last_pass = self.start
        self.shown = False
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._line = ""

    def update(self, phase, iteration, **figures):
        """Record that ``iteration`` of ``phase`` finished, with figures to show."""
        now = time.perf_counter()
        per_pass = now - self.last_pass
        self.last_pass = now
        if not self.enabled or now - self.start < self.delay:
            return
        parts = [f"{self.label} {phase} {iteration}"]
        for name, value in figures.items():
            parts.append(f"{name} {value:.6g}" if isinstance(value, float) else f"{name} {value}")
        parts.append(f"{per_pass:.3f} s/pass")
        parts.append(f"{now - self.start:.1f} s")
        self._line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r\033[K" + self._line)
            self.stream.flush()
            self.shown = True
        elif self.last_print is None or now - self.last_print >= self.every:
            self.stream.write(self._line + "\n")
            self.stream.flush()
            self.last_print = now
            self.shown = True

    def close(self, summary=None):
        """End the line; print ``summary`` if anything was shown."""
        if not self.enabled or not self.shown:
            return
        if self.tty:
            self.stream.write("\r\033[K" + (summary or self._line) + "\n")
        elif summary:
            self.stream.write(summary + "\n")
        self.stream.flush()
